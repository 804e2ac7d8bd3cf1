"""The report: rows of the selected runs -> LaTeX tables, figures, a claims ledger, report.tex and
report.pdf, and the README's Markdown from the same frames.

    python -m benchmarks report [--results-dir results] [--out reports] [--readme README.md] [--no-pdf]

Runs are chosen by the store (:func:`benchmarks.store.select_runs`): per suite and machine the
latest complete run that holds rows of the kind a table needs (complexity sweeps and the detection
study of the ``cpu`` suite, the ``yolo-table`` counts, classification rows when any run has them).
Nothing is measured or recomputed from models. A kind without rows is named in one line and its
tables say so; the rest still renders. Outputs are byte-identical on a rebuild from the same rows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmarks.report.render import Table, escape_latex, to_latex, to_markdown

__all__ = ["build", "Report", "to_latex", "to_markdown", "escape_latex", "PREAMBLE"]

SOURCE_DATE_EPOCH = "1764288000"  # 2025-11-28 00:00 UTC: fixed, so the PDF carries no build time
PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage[letterpaper,margin=0.875in]{geometry} % 6.75 in text width
\usepackage{booktabs}  % \toprule, \midrule, \bottomrule
\usepackage{siunitx}   % S columns: decimal-aligned mean +- sd
\usepackage{graphicx}  % \includegraphics of the PDF figures
"""


@dataclass
class Report:
    """What one build wrote and what it could not render."""

    tables: dict[str, Table] = field(default_factory=dict)
    figures: dict[str, tuple[list[Path], str]] = field(default_factory=dict)  # name -> (paths, caption)
    missing: list[str] = field(default_factory=list)
    ledger: pd.DataFrame | None = None
    markdown: dict[str, str] = field(default_factory=dict)
    pdf: Path | None = None


def _rows(results_dir, suite: str | None, kind: str) -> pd.DataFrame:
    from benchmarks.store import load_rows, select_runs

    runs = select_runs(results_dir, suite, None, "all", kind=kind)
    df = load_rows(runs)
    if df.empty or "kind" not in df:
        return df
    return df[df["kind"] == kind].reset_index(drop=True)


def build(results_dir="results", out="reports", readme=None, pdf: bool = True, log=print) -> Report:
    """Render every table and figure that the rows allow into ``out`` (``tables/``, ``figures/``,
    ``report.tex``, ``report.pdf`` when latexmk exists); with ``readme``, write its report blocks."""
    from benchmarks import classification_study, detection_study  # noqa: F401

    classification_study.register_metrics()  # the studies' metrics, for rows of either kind
    from benchmarks.report import claims, figures, tables
    from benchmarks.store import select_runs

    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    rep = Report()
    cx = _rows(results_dir, "cpu", "complexity")
    det = _rows(results_dir, "cpu", "detection")
    yolo = _rows(results_dir, "yolo-table", "complexity")
    cls = _rows(results_dir, None, "classification")
    gpu = [r.id for r in select_runs(results_dir, "gpu", None, "all")]
    if not gpu:
        rep.missing.append("gpu: no complete run of the gpu suite under results/ (no GPU rows); GPU claims are "
                           "marked not testable here")  # fmt: skip

    summary = None
    if det.empty:
        rep.missing.append("detection: no rows of kind 'detection' in the cpu suite's runs")
    else:
        run = select_runs(results_dir, "cpu", None, "all", kind="detection")[-1]
        section = run.record["config"]["detection"]
        ref = section.get("reference", "yolo11n")
        for which in ("size", "occlusion"):
            t = tables.detection_accuracy(det, ref, which)
            if t:
                rep.tables[t.name] = t
        t, summary = tables.detection_diffs(det, section)
        if t:
            rep.tables[t.name] = t
        t = tables.efficiency(det, ref)
        if t:
            rep.tables[t.name] = t
        ok = det[det["error"].isna()]
        prov = tables.provenance(det)
        paths = figures.accuracy_by_stratum(ok, out / "figures", ref)
        rep.figures["detection_strata"] = (paths, "AP50-95 by object size and by occlusion level per arm: mean "
                                           f"over seeds with ±1 sd error bars. {prov}.")  # fmt: skip
        if summary is not None and not summary["diffs"].empty:
            paths = figures.paired_differences(summary["diffs"], out / "figures", summary["rope"], ref,
                                               tables.diff_metrics(section))  # fmt: skip
            rep.figures["detection_diffs"] = (paths, "Paired differences in AP against the stock model (same "
                                              "seed) with 95% t intervals; the shaded band is the region of "
                                              f"practical equivalence ±{summary['rope']} AP. {prov}.")  # fmt: skip
    if yolo.empty:
        rep.missing.append("yolo-table: no complete run of the yolo-table suite (model counts)")
    else:
        t = tables.yolo_models(yolo)
        if t:
            rep.tables[t.name] = t
    t, miss = tables.tost_controls(cls)
    rep.tables[t.name] = t
    if miss:
        rep.missing.append(f"classification: {miss}")
    if cx.empty:
        rep.missing.append("complexity: no rows of kind 'complexity' in the cpu suite's runs")
    else:
        for level in ("core", "layer"):
            t = tables.operator_cost(cx, level)
            if t:
                rep.tables[t.name] = t
        t, _ = tables.slopes(cx)
        if t:
            rep.tables[t.name] = t
        ops = tables.operator_rows(cx)
        prov = tables.provenance(ops)
        paths = figures.complexity(ops, out / "figures", prov)
        rep.figures["complexity"] = (paths, "Operator cost against the number of tokens N on log-log axes, core "
                                     "(left) and layer (right): median forward time, exact forward+backward peak "
                                     "memory and forward FLOPs (2 per multiply-accumulate plus elementwise work); "
                                     "grey guides O(N) dashed and O(N²) dotted, through the reference's first "
                                     f"point. {prov}.")  # fmt: skip
        paths = figures.complexity(ops, out / "figures", prov, width=figures.COLUMN_IN,
                                   quantities=figures.QUANTITIES[:1], name="complexity_time_column")  # fmt: skip
        rep.figures["complexity_time_column"] = (paths, "Median forward time against N (column width), core and "
                                                 f"layer, with O(N) and O(N²) guides. {prov}.")  # fmt: skip
    rep.ledger = claims.ledger(cx, summary, yolo, cls)
    frames = [d for d in (cx, det, yolo, cls) if not d.empty]
    allrows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    rep.tables["claims"] = claims.ledger_table(
        rep.ledger, tables.provenance_short(allrows) if not allrows.empty else "none"
    )

    for name, t in rep.tables.items():
        _write(out / "tables" / f"{name}.tex", to_latex(t))
        rep.markdown[name] = to_markdown(t)
    _write(out / "report.tex", report_tex(rep))
    _write(out / "build-info.txt", build_info())
    for m in rep.missing:
        log(f"report: missing {m}")
    if pdf:
        rep.pdf = compile_pdf(out / "report.tex", log=log)
    if readme:
        write_readme(readme, rep)
        log(f"report: updated {readme}")
    log(f"report: wrote {len(rep.tables)} tables and {len(rep.figures)} figures under {out}")
    return rep


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def report_tex(rep: Report) -> str:
    """``report.tex``: the copyable preamble block, then every table and figure."""
    lines = ["% generated by python -m benchmarks report; rebuild with: tox -e report",
             "% ---- copy this preamble block into your paper (tables need only booktabs and siunitx) ----",
             PREAMBLE.rstrip(), "% ---- end of the preamble block ----",
             r"\title{TSSA benchmark suite: tables, figures and claims}", r"\date{}",
             r"\begin{document}", r"\maketitle", ""]  # fmt: skip
    if rep.missing:
        # plain paragraphs: the itemize bullet comes from a font that Debian's minimal TeX has only as Type 3
        lines += [r"\paragraph{Missing from the rows.}"]
        lines += [rf"\noindent {escape_latex(m)}.\par" for m in rep.missing]
        lines += [""]
    order = ["claims", *[n for n in rep.tables if n != "claims"]]
    for n in order:
        lines.append(rf"\input{{tables/{n}}}")
    for name, (_paths, cap) in rep.figures.items():
        wide = "column" not in name and name != "detection_strata" and name != "detection_diffs"
        env = "figure*" if wide else "figure"
        # natural size: the figures are drawn at 3.25 in (column) or 6.75 in (text width) with 6-7 pt text
        lines += [rf"\begin{{{env}}}[tbp]", r"\centering", rf"\includegraphics{{figures/{name}.pdf}}",
                  rf"\caption{{{escape_latex(cap)}}}", rf"\label{{fig:{name.replace('_', '-')}}}",
                  rf"\end{{{env}}}"]  # fmt: skip
    lines += ["", r"\end{document}", ""]
    return "\n".join(lines)


def build_info() -> str:
    """The versions that decide the bytes of figures and the PDF (a rebuild is byte-identical when they match)."""
    import matplotlib
    import seaborn

    tex = "none"
    if shutil.which("pdflatex"):
        res = subprocess.run(["pdflatex", "--version"], capture_output=True, text=True)
        tex = (res.stdout.splitlines() or ["unknown"])[0]
    return f"matplotlib {matplotlib.__version__}\nseaborn {seaborn.__version__}\npandas {pd.__version__}\ntex {tex}\n"


def compile_pdf(tex: Path, log=print) -> Path | None:
    """latexmk -pdf in the tex file's folder with a fixed SOURCE_DATE_EPOCH; None (one line) without latexmk."""
    exe = shutil.which("latexmk")
    if exe is None or shutil.which("pdflatex") is None:
        log("report: no TeX engine (latexmk/pdflatex) on PATH: wrote the .tex files, skipped report.pdf; install "
            "texlive-latex-recommended texlive-pictures texlive-science latexmk to compile")  # fmt: skip
        return None
    env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, FORCE_SOURCE_DATE="1")
    cmd = [exe, "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-quiet", tex.name]
    res = subprocess.run(cmd, cwd=tex.parent, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stdout + res.stderr).strip().splitlines()[-15:]
        raise RuntimeError("latexmk failed on " + str(tex) + ":\n" + "\n".join(tail))
    subprocess.run([exe, "-c", tex.name], cwd=tex.parent, env=env, capture_output=True)
    return tex.with_suffix(".pdf")


def write_readme(readme, rep: Report) -> None:
    """The README's report blocks: the claims ledger (Markdown from the same frame) and the main figure."""
    from benchmarks.complexity.derive import write_readme_block

    cmd = "Written by `python -m benchmarks report --readme README.md` (`tox -e report`) from the committed rows."
    parts = [cmd, ""]
    if rep.missing:
        parts += ["Missing from the rows: " + "; ".join(rep.missing) + ".", ""]
    parts.append(rep.markdown["claims"])
    if "complexity" in rep.figures:
        parts += ["", "![Operator cost against N, core and layer, log-log, with O(N) and O(N²) guides]"
                  "(reports/figures/complexity.png)", "", rep.figures["complexity"][1]]  # fmt: skip
    write_readme_block(readme, "report", "\n".join(parts))
