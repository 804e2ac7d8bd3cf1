"""The report: rows of the selected runs -> LaTeX tables, figures, a claims ledger, report.tex and
report.pdf, and the README's Markdown from the same frames.

    python -m benchmarks report [--results-dir results] [--out reports] [--readme README.md] [--no-pdf]

Every registered study (:mod:`benchmarks.core.registry`) gives its part: its tables, figures and
claims from the runs it reads (:class:`ReportContext`: per suite and machine the latest complete run
that holds rows of the kind a table needs, chosen by :func:`benchmarks.core.store.select_runs`).
The report imports no study. Nothing is measured or recomputed from models. A kind without rows is named in one line and its
tables say so; the rest still renders. Outputs are byte-identical on a rebuild from the same rows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmarks.core.registry import ReportFigure, ReportPart
from benchmarks.report.render import Table, escape_latex, to_latex, to_markdown

__all__ = [
    "build",
    "Report",
    "ReportContext",
    "ReportPart",
    "ReportFigure",
    "to_latex",
    "to_markdown",
    "escape_latex",
    "PREAMBLE",
]

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
    figures: dict[str, ReportFigure] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    ledger: pd.DataFrame | None = None
    markdown: dict[str, str] = field(default_factory=dict)
    pdf: Path | None = None


@dataclass(frozen=True)
class ReportContext:
    """What a study's report hook reads: the rows and runs of the results folder, and where to draw."""

    results_dir: str
    out: Path

    def runs(self, suite: str | None, kind: str | None) -> list:
        """Per suite and machine, the latest complete run (holding rows of ``kind`` when given)."""
        from benchmarks.core.store import select_runs

        return select_runs(self.results_dir, suite, None, "all", kind=kind)

    def latest(self, suite: str | None, kind: str | None) -> list:
        """The newest of :meth:`runs` (run ids begin with their start time) as a one-element list, or
        ``[]``: a study whose tables pair seeds reads one run, never the runs of several machines pooled."""
        return sorted(self.runs(suite, kind), key=lambda r: r.id)[-1:]

    def rows(self, suite: str | None, kind: str, latest: bool = False) -> pd.DataFrame:
        """The rows of ``kind`` of :meth:`runs` (of :meth:`latest` with ``latest``; an empty frame when
        there are none)."""
        from benchmarks.core.store import load_rows

        df = load_rows(self.latest(suite, kind) if latest else self.runs(suite, kind))
        if df.empty or "kind" not in df:
            return df
        return df[df["kind"] == kind].reset_index(drop=True)


def build(results_dir="results", out="reports", readme=None, pdf: bool = True, log=print) -> Report:
    """Render every table and figure that the rows allow into ``out`` (``tables/``, ``figures/``,
    ``report.tex``, ``report.pdf`` when latexmk exists); with ``readme``, write its report blocks.

    Every registered study with a report hook contributes its parts (:class:`ReportPart`): tables,
    figures and missing lines in the parts' ``order``, claims in their ``ledger_order``."""
    from benchmarks.core.registry import studies
    from benchmarks.report import claims
    from benchmarks.report.tables import provenance_short

    out = Path(out)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    ctx = ReportContext(str(results_dir), out)
    parts = [p for s in studies() if s.report is not None for p in s.report(ctx)]
    if not parts:
        raise ValueError("no registered study has a report part; import benchmarks.studies (or register one)")
    rep = Report()
    for p in sorted(parts, key=lambda p: p.order):
        rep.missing += p.missing
        rep.tables.update({t.name: t for t in p.tables})
        rep.figures.update({f.name: f for f in p.figures})
    rep.ledger = claims.ledger(parts)
    frames = [p.rows for p in parts if p.rows is not None and not p.rows.empty]
    allrows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    rep.tables["claims"] = claims.ledger_table(
        rep.ledger, provenance_short(allrows) if not allrows.empty else "none"
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
    for name, fig in rep.figures.items():
        cap = fig.caption
        env = "figure*" if fig.wide else "figure"
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
    from benchmarks.core.readme import write_block

    cmd = "Written by `python -m benchmarks report --readme README.md` (`tox -e report`) from the committed rows."
    parts = [cmd, ""]
    if rep.missing:
        parts += ["Missing from the rows: " + "; ".join(rep.missing) + ".", ""]
    parts.append(rep.markdown["claims"])
    for fig in rep.figures.values():
        if fig.readme_alt:
            png = next(p for p in fig.paths if str(p).endswith(".png"))
            parts += ["", f"![{fig.readme_alt}](reports/figures/{Path(png).name})", "", fig.caption]
    write_block(readme, "report", "\n".join(parts))
    write_block(readme, "answer", answer_block(rep.ledger))


def answer_block(led) -> str:
    """The README's answer first: each claim tested by a paired comparison (the ledger's rows that
    carry what they could detect, or were not testable at this budget), its verdict, estimate and
    minimum detectable effect."""
    from benchmarks.core.stats import NOT_TESTABLE_FLOOR
    from benchmarks.report.render import markdown_table

    sel = led[(led["detectable"].fillna("") != "") | (led["verdict"] == NOT_TESTABLE_FLOOR)]
    lines = ["Written by `python -m benchmarks report --readme README.md` (`tox -e report`) from the committed "
             "rows: the ledger's paired comparisons (accuracy), each with what it could have detected (its minimum "
             "detectable effect: an effect under it would go undetected at that many seeds). Rules, controls and "
             "every other claim: [the report](#the-report); the studies: [detection](#the-detection-study), "
             "[classification](#the-classification-study).", ""]  # fmt: skip
    if sel.empty:
        return "\n".join([*lines, "No paired comparison in the committed rows yet."])
    rows = [
        [r["claim"], f"**{r['verdict']}**", r["interval"] or "-", r["detectable"] or "-"]
        for _, r in sel.iterrows()
    ]
    heads = [("verdict", "left"), ("estimate [95% CI]", "right"), ("could detect (MDE)", "left")]
    return "\n".join([*lines, markdown_table("claim", heads, rows)])
