"""The report: escaping, booktabs/siunitx structure, the bolding rule, the claims ledger's verdicts,
figures (axes, series, units, no Type 3 fonts), missing kinds, and byte-identical rebuilds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.core.registry import ReportPart
from benchmarks.report import build, claims, figures
from benchmarks.report.render import Col, Table, best_row, escape_latex, to_latex, to_markdown
from benchmarks.studies.classification import report as cls_report
from benchmarks.studies.complexity import report as cx_report
from benchmarks.studies.detection import report as det_report

ROOT = Path(__file__).resolve().parents[1]
HAS_TEX = shutil.which("latexmk") is not None and shutil.which("pdflatex") is not None


def _table(cells, hib=True, rows=("a_1", "b")):
    return Table("t", "A caption with 50% and an_underscore", "tab:t", "arm", list(rows),
                 [Col("ap", r"AP$_S$", "AP small", "pm", 3, higher_is_better=hib)], pd.DataFrame(cells))  # fmt: skip


def _pm(row, mean, sd, lo, hi):
    return dict(row=row, col="ap", mean=mean, sd=sd, n=3, lo=lo, hi=hi)


def test_escape_latex_specials():
    assert escape_latex("a_b & 50% #1 $x {y} ~z") == r"a\_b \& 50\% \#1 \$x \{y\} \ensuremath{\sim}z"
    assert escape_latex("±0.5 ≥ 2") == r"\ensuremath{\pm}0.5 \ensuremath{\geq} 2"


def test_latex_structure_booktabs_siunitx_and_escaped_labels():
    tex = to_latex(_table([_pm("a_1", 0.412, 0.012, 0.40, 0.42), _pm("b", 0.300, 0.010, 0.29, 0.31)]))
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", r"\label{tab:t}",
                  "S[table-format=1.3 +- 1.3]", "0.412 +- 0.012", "separate-uncertainty"):  # fmt: skip
        assert token in tex, token
    assert r"a\_1 &" in tex and "a_1 &" not in tex  # row label escaped
    assert r"50\% and an\_underscore" in tex  # caption escaped
    assert "{AP$_S$}" in tex  # header holding LaTeX kept as LaTeX (braced for the S column)
    md = to_markdown(_table([_pm("a_1", 0.412, 0.012, 0.40, 0.42), _pm("b", 0.300, 0.010, 0.29, 0.31)]))
    assert "| a_1 | **0.412 ± 0.012** |" in md and "| b | 0.300 ± 0.010 |" in md


def test_bold_only_when_intervals_disjoint_never_on_ties_and_follows_direction():
    disjoint = [_pm("a_1", 0.41, 0.01, 0.40, 0.42), _pm("b", 0.30, 0.01, 0.29, 0.31)]
    assert best_row(_table(disjoint), _table(disjoint).cols[0]) == "a_1"
    assert r"\bfseries 0.410 +- 0.010" in to_latex(_table(disjoint))
    lower = _table(disjoint, hib=False)
    assert best_row(lower, lower.cols[0]) == "b"  # lower is better: the other row
    overlap = [_pm("a_1", 0.41, 0.05, 0.33, 0.49), _pm("b", 0.30, 0.05, 0.25, 0.35)]
    assert best_row(_table(overlap), _table(overlap).cols[0]) is None
    assert r"\bfseries" not in to_latex(_table(overlap))
    tie = [dict(row="a_1", col="ap", mean=4.8012), dict(row="b", col="ap", mean=4.8004)]
    t = Table("t", "c", "tab:t", "arm", ["a_1", "b"], [Col("ap", "M", "M", "value", 1, higher_is_better=False)],
              pd.DataFrame(tie))  # fmt: skip
    assert best_row(t, t.cols[0]) is None  # equal at the printed precision: a tie
    bound = _table(disjoint)
    bound.extra["not_ranked"] = ("a_1",)  # a lower bound (the floor) is never the best
    assert best_row(bound, bound.cols[0]) is None
    none_dir = _table(disjoint, hib=None)
    assert best_row(none_dir, none_dir.cols[0]) is None


def _ops(variant, exponent, pass_="fwd", metric="latency_ms"):
    ns = [1024, 2048, 4096, 8192, 16384]
    rng = np.random.default_rng(0)
    return [dict(kind="complexity", error=None, level="operator", variant=variant, tokens=n, metric=metric,
                 value=1e-3 * n**exponent * (1 + 0.01 * rng.standard_normal()), **{"pass": pass_})
            for n in ns]  # fmt: skip


def _yolo(params, gflops, counted=None):
    """yolo11n-tssa count rows: params, Ultralytics' GFLOPs estimate and (given ``counted`` in GFLOPs)
    the project's exact count, stored in FLOPs as the suite's ``flops_torch`` rows are."""
    base = dict(kind="complexity", error=None, variant="yolo11n-tssa", family="yolo", image_size=640)
    rows = [
        {**base, "metric": "params", "value": params},
        {**base, "metric": "gflops_ultralytics", "value": gflops},
    ]
    if counted is not None:
        rows.append({**base, "metric": "flops_torch", "value": counted * 1e9})
    return pd.DataFrame(rows)


def _ledger(ops, yolo, cls) -> pd.DataFrame:
    """The ledger of the complexity and classification studies' claims from constructed rows."""
    o = cx_report.operator_rows(ops)
    parts = [ReportPart(4, 0, claims=[*cx_report._slope_claims(o, 1024), cx_report._speed_16k(o)]),
             ReportPart(2, 1, claims=cx_report._fork_counts(yolo)),
             ReportPart(3, 3, claims=cls_report._classification_claim(cls))]  # fmt: skip
    return claims.ledger(parts)


def test_ledger_verdicts_from_constructed_rows():
    ops = pd.DataFrame(_ops("tssa:stream", 1.0) + _ops("layer:tssa", 2.0)
                       + _ops("tssa:stream", 1.0, "fwd+bwd", "peak_mib"))  # fmt: skip
    led = _ledger(ops, _yolo(2_606_000, 6.6, counted=6.62), pd.DataFrame()).set_index("claim")
    assert led.loc["Linear time in N (core)", "verdict"] == "supported"
    assert led.loc["Linear time in N (layer)", "verdict"] == "contradicted"  # quadratic rows
    assert led.loc["Linear memory in N (core)", "verdict"] == "supported"
    assert led.loc["Linear memory in N (layer)", "verdict"] == claims.NOT_TESTABLE  # no rows
    assert led.loc["yolo11n-TSSA has 2.61M parameters", "verdict"] == "supported"
    assert led.loc["yolo11n-TSSA costs 6.6 GFLOPs", "verdict"] == "supported"
    assert led.loc["ToST on par with its softmax and XCA controls", "verdict"] == claims.NOT_TESTABLE
    assert "GPU" in led.loc["16K tokens: ToST ~12 ms vs ViT ~300 ms, ~0.13 GB vs ~17 GB", "why"]
    led2 = _ledger(ops, _yolo(2_700_000, 7.1, counted=7.05), pd.DataFrame()).set_index("claim")
    assert led2.loc["yolo11n-TSSA has 2.61M parameters", "verdict"] == "contradicted"
    assert led2.loc["yolo11n-TSSA costs 6.6 GFLOPs", "verdict"] == "contradicted"
    assert set(led["verdict"]) <= set(claims.VERDICTS)


def test_ledger_gflops_claim_rests_on_the_exact_count():
    """The committed run's case: Ultralytics' estimate (the forks' tool) rounds to the claimed 6.6,
    the project's exact count (6.4886) to 6.5. The row shows both; the verdict follows the count."""
    claim = "yolo11n-TSSA costs 6.6 GFLOPs"
    row = (
        _ledger(pd.DataFrame(), _yolo(2_605_650, 6.596, counted=6.488612194), pd.DataFrame())
        .set_index("claim")
        .loc[claim]
    )
    assert row["verdict"] == "contradicted"
    assert row["verdict"] in claims.VERDICTS
    assert "exact count" in row["measured"] and "6.489 GFLOPs" in row["measured"]
    assert "Ultralytics' estimate (the forks' tool): 6.596 GFLOPs" in row["measured"]
    assert row["why"].startswith("on the exact count: 6.49 -> 6.5 vs claimed 6.6: contradicted")
    assert "Ultralytics' estimate 6.596 -> 6.6 (the forks' tool) matches" in row["why"]
    # the estimate alone no longer decides, either way
    agree = (
        _ledger(pd.DataFrame(), _yolo(2_605_650, 7.0, counted=6.61), pd.DataFrame())
        .set_index("claim")
        .loc[claim]
    )
    assert agree["verdict"] == "supported"
    assert "6.61 -> 6.6 vs claimed 6.6: supported" in agree["why"]
    assert "Ultralytics' estimate 7.000 -> 7.0 (the forks' tool) does not match" in agree["why"]
    alone = _ledger(pd.DataFrame(), _yolo(2_605_650, 6.596), pd.DataFrame()).set_index("claim").loc[claim]
    assert alone["verdict"] == claims.NOT_TESTABLE
    assert "6.596" in alone["measured"] and "exact count" in alone["why"]
    # the parameter claim is untouched by the GFLOPs rows
    params = _ledger(pd.DataFrame(), _yolo(2_605_650, 6.596), pd.DataFrame()).set_index("claim")
    assert params.loc["yolo11n-TSSA has 2.61M parameters", "verdict"] == "supported"


def test_ledger_detection_and_classification_verdicts():
    from benchmarks.core.suites import load_suite

    section = load_suite("cpu")["detection"]
    rows = []
    for seed in range(4):
        # tssa - stock per seed: small +0.05 (+-0.001), large -0.05, partial +-0.08 (noise), heavy +-0.0003
        wobble = (-1) ** seed
        diff = {"ap_small": 0.05 + 0.001 * wobble, "ap_large": -0.05 + 0.001 * wobble,
                "ap_occ_partial": 0.08 * wobble, "ap_occ_heavy": 0.0003 * wobble}  # fmt: skip
        for arm in ("yolo11n", "yolo11n-tssa", "yolo11n-noattn"):
            for m, d in diff.items():
                v = 0.3 + 0.01 * seed + (d if arm == "yolo11n-tssa" else 0.0)
                rows.append(dict(kind="detection", error=None, variant=arm, seed=seed, metric=m, value=v))
    from benchmarks.studies.detection import summary as detection_study

    s = detection_study.summary(pd.DataFrame(rows), section)
    det = det_report._detection_claims(s)
    got = {r["claim"]: r["verdict"] for r in det}
    assert got["Better multi-scale detection: AP small"] == "supported"
    assert got["Better multi-scale detection: AP large"] == "contradicted"
    assert got["Better occluded detection: AP, partial occlusion"] == "inconclusive"
    assert got["Better occluded detection: AP, heavy occlusion"] == "equivalent"
    cls = pd.DataFrame([dict(kind="classification", error=None, variant=v, seed=s_, metric="top1", value=x + 0.001 * s_)
                        for s_ in range(3) for v, x in (("tost_tiny", 0.700), ("tost_softmax_tiny", 0.7005))])  # fmt: skip
    from benchmarks.core import metrics

    metrics.register("top1", "1", True, "top-1", "top-1", 4)
    c = cls_report._classification_claim(cls)
    assert [r["verdict"] for r in c] == ["equivalent"]


def test_missing_kind_is_named_and_the_rest_renders(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    lines = []
    rep = build(tmp_path / "results", tmp_path / "out", pdf=False, log=lines.append)
    assert any(m.startswith("classification: no rows of kind 'classification'") for m in rep.missing)
    assert any(line.startswith("report: missing classification") for line in lines)
    tost = (tmp_path / "out" / "tables" / "tost_controls.tex").read_text()
    assert "(paper)" in tost and "missing" in tost
    assert (tmp_path / "out" / "tables" / "claims.tex").exists() and (
        tmp_path / "out" / "report.tex"
    ).exists()
    assert set(rep.ledger["verdict"]) == {claims.NOT_TESTABLE}


def test_cli_refuses_a_missing_results_dir(tmp_path, capsys):
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["report", "--results-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "is not a folder" in err


def test_figures_axes_series_units(monkeypatch, tmp_path):
    captured = {}

    def keep(fig, out, name):
        captured[name] = fig
        return []

    monkeypatch.setattr(cx_report, "save", keep)
    ops = pd.DataFrame(_ops("sdpa", 2.0) + _ops("tssa:stream", 1.0) + _ops("layer:tssa", 1.0)
                       + _ops("tssa:stream", 1.0, "fwd+bwd", "peak_mib") + _ops("sdpa", 1.0, "fwd", "flops_analytic"))  # fmt: skip
    cx_report.complexity(ops, tmp_path, "src")
    fig = captured["complexity"]
    axes = fig.axes
    assert len(axes) == 6
    assert all(a.get_xscale() == "log" and a.get_yscale() == "log" for a in axes)
    assert (
        axes[0].get_ylabel() == "median forward time (ms)"
        and axes[2].get_ylabel() == "fwd+bwd peak memory (MiB)"
    )
    core_labels = [line.get_label() for line in axes[0].get_lines() if not line.get_label().startswith("_")]
    assert core_labels == ["sdpa", "tssa:stream"]
    assert {t.get_text() for t in axes[0].texts} == {"O(N)", "O(N²)"}
    assert abs(fig.get_size_inches()[0] - figures.TEXT_IN) < 1e-9
    markers = {line.get_marker() for line in axes[0].get_lines() if not line.get_label().startswith("_")}
    assert len(markers) == 2


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".tex", ".pdf", ".png", ".txt")}  # fmt: skip


def test_rendering_twice_gives_identical_files(tmp_path):
    build(ROOT / "results", tmp_path / "a", pdf=HAS_TEX, log=lambda s: None)
    build(ROOT / "results", tmp_path / "b", pdf=HAS_TEX, log=lambda s: None)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and any(k.endswith(".pdf") for k in a)
    assert [k for k in a if a[k] != b[k]] == []
    assert b"CreationDate" not in a["figures/complexity.pdf"]


@pytest.mark.skipif(not (ROOT / "reports" / "report.tex").exists(), reason="no committed report")
def test_committed_report_is_a_rebuild_of_the_committed_rows(tmp_path):
    """Tables always; figures and the PDF when matplotlib, seaborn, pandas and TeX are the versions that built them."""
    from benchmarks.report import build_info

    build(ROOT / "results", tmp_path, pdf=HAS_TEX, log=lambda s: None)
    committed, new = _files(ROOT / "reports"), _files(tmp_path)
    same_tools = committed.get("build-info.txt", b"").decode() == build_info()
    for name, data in committed.items():
        if (
            name.startswith("tables/")
            or name == "report.tex"
            or (same_tools and (HAS_TEX or name != "report.pdf"))
        ):
            assert new.get(name) == data, (
                f"reports/{name} is not what the committed rows give: run `tox -e report`"
            )


@pytest.mark.skipif(
    not HAS_TEX or shutil.which("pdffonts") is None, reason="needs latexmk, pdflatex and pdffonts"
)
@pytest.mark.parametrize("twocolumn", [False, True])
def test_every_table_compiles_with_only_booktabs_and_siunitx(tmp_path, twocolumn):
    tables = sorted((ROOT / "reports" / "tables").glob("*.tex"))
    assert tables
    doc = [r"\documentclass[twocolumn]{article}" if twocolumn else r"\documentclass{article}",
           r"\usepackage{booktabs}", r"\usepackage{siunitx}", r"\begin{document}"]  # fmt: skip
    doc += [rf"\input{{{p.as_posix()}}}" for p in tables] + [r"\end{document}"]
    (tmp_path / "t.tex").write_text("\n".join(doc))
    res = subprocess.run(["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:]
    fonts = subprocess.run(["pdffonts", "t.pdf"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert "Type 3" not in fonts


@pytest.mark.skipif(shutil.which("pdffonts") is None, reason="needs pdffonts (poppler-utils)")
def test_figures_embed_truetype_no_type3():
    pdfs = sorted((ROOT / "reports" / "figures").glob("*.pdf"))
    assert pdfs
    for p in pdfs:
        fonts = subprocess.run(["pdffonts", str(p)], capture_output=True, text=True).stdout
        assert "Type 3" not in fonts and "TrueType" in fonts, p.name


def test_yolo_table_reproduced_means_the_counted_gflops_match():
    """The YOLO table's check against published figures: the counted GFLOPs decide, the estimate is shown."""
    from benchmarks.studies.complexity import yolo_table

    rows = [
        dict(variant="yolo11", scale="n", params=2_624_080, gflops=6.56523808, gflops_ultralytics=6.6733184),
        dict(
            variant="yolo11-tssa",
            scale="n",
            params=2_605_650,
            gflops=6.488612194,
            gflops_ultralytics=6.5962112,
        ),
    ]
    lines = [x for x in yolo_table.render(rows, 640, "run-x").splitlines() if x.startswith("- ")]
    assert lines == [
        "- Ultralytics yolo11n: 2.62M params / 6.5-6.7 GFLOPs at 640; here `yolo11n` has 2.62M / 6.57 GFLOPs "
        "counted (6.6 at one decimal), 6.7 by Ultralytics' estimate: reproduced.",
        "- public C2PSA-TSSA forks: 2.61M params / 6.6 GFLOPs at 640; here `yolo11n-tssa` has 2.61M / 6.49 "
        "GFLOPs counted (6.5 at one decimal), 6.6 by Ultralytics' estimate: not reproduced (counted 6.5 vs 6.6; "
        "Ultralytics' estimate 6.6 matches).",
    ]
    verdict = yolo_table.public_verdict
    tssa = rows[1]
    assert verdict({**tssa, "gflops": 6.61}, 2.61, (6.6, 6.6)).endswith(": reproduced")  # estimate irrelevant
    assert verdict({**tssa, "gflops": 6.61, "gflops_ultralytics": 9.0}, 2.61, (6.6, 6.6)).endswith(
        ": reproduced"
    )
    assert verdict({**tssa, "params": 2_700_000, "gflops": 6.61}, 2.61, (6.6, 6.6)).endswith(
        ": not reproduced (params 2.70M vs 2.61M)"
    )
    assert verdict({**tssa, "gflops_ultralytics": 7.0}, 2.61, (6.6, 6.6)).endswith(
        "not reproduced (counted 6.5 vs 6.6; Ultralytics' estimate 7.0 does not match)"
    )


def test_runs_of_two_machines_are_never_pooled(tmp_path):
    """The published cpu run copied as a later run of another machine (the committed rows plus a user's
    own run): the report reads the newer run alone, with the same numbers, instead of pairing seeds of
    both (which found two values per arm and seed and stopped the report)."""
    import json
    import shutil

    from benchmarks.report import ReportContext

    published = ReportContext(str(ROOT / "results"), tmp_path / "x")
    src = published.latest("cpu", "detection")[0].path  # the newest published detection run
    shutil.copytree(ROOT / "results", tmp_path / "results")
    dst = tmp_path / "results" / "cpu"
    other = dst / ("29991231T000000Z-0ther0-" + src.name.rsplit("-", 1)[-1])  # newer than every run
    shutil.copytree(src, other)
    rec = json.loads((other / "run.json").read_text())
    mid = rec["machine"]["id"]
    rec["machine"]["id"] = "0ther0machine"
    (other / "run.json").write_text(json.dumps(rec))
    one = build(ROOT / "results", tmp_path / "one", pdf=False, log=lambda s: None)
    two = build(tmp_path / "results", tmp_path / "two", pdf=False, log=lambda s: None)  # pooled: ValueError
    cols = ["claim", "measured", "interval", "verdict"]
    assert one.ledger[cols].equals(two.ledger[cols])  # every verdict and interval as from the one run
    for name in ("detection_size", "detection_occlusion", "detection_diffs", "tost_controls"):
        a = (tmp_path / "one" / "tables" / f"{name}.tex").read_text()
        b = (tmp_path / "two" / "tables" / f"{name}.tex").read_text()
        assert a == b.replace("0ther0machine", mid), name  # one run's numbers, not two runs' pooled
    ctx = ReportContext(str(tmp_path / "results"), tmp_path / "two")
    assert [r.id for r in ctx.latest("cpu", "detection")] == [other.name]  # the newest run
    assert len(ctx.runs("cpu", "detection")) == len(published.runs("cpu", "detection")) + 1
