"""The classification study's part of the report: ToST against its controls beside the paper's Table 2,
and the ledger's claim that ToST is on par with them.

Rule of the claim, declared before reading any result: *on par with the controls* is
``equivalent`` when the 95% interval of the paired top-1 difference (ToST - control, by seed) lies
within +-``TOP1_ROPE`` points.
"""

from __future__ import annotations

import pandas as pd

from benchmarks.core import metrics as M
from benchmarks.core import paper, stats
from benchmarks.core.registry import ReportPart
from benchmarks.report.claims import NOT_TESTABLE
from benchmarks.report.render import Col, Table
from benchmarks.report.tables import ok_rows, provenance
from benchmarks.studies.classification.summary import KIND

TOP1_ROPE = 1.0  # top-1 points (percent)


def classification_metric(ok: pd.DataFrame) -> str | None:
    """The top-1 metric of classification rows (a registered metric named ``top1...``), or None."""
    names = sorted(m for m in set(ok["metric"]) if m.startswith(("top1", "acc1")))
    return names[0] if names else None


def tost_controls(df: pd.DataFrame) -> tuple[Table, str | None]:
    """ToST against its controls (softmax, XCA) from classification rows, beside the paper's Table 2.

    Returns the table and a one-line message when the classification rows are missing.
    """
    ok = ok_rows(df, KIND)
    recs, rows, missing = [], [], None
    metric = classification_metric(ok) if not ok.empty else None
    if metric is not None:
        long = ok[ok["metric"] == metric][["variant", "seed", "value"]].rename(columns={"variant": "arm"})
        long = long.assign(metric="top1", value=long["value"].astype(float))
        scale = 100.0 if M.get(metric).unit == "1" else 1.0
        d = stats.describe(long)
        for _, r in d.iterrows():
            rows.append(r["arm"])
            recs.append(dict(row=r["arm"], col="top1", mean=r["mean"] * scale, sd=r["sd"] * scale,
                             lo=r["ci_low"] * scale, hi=r["ci_high"] * scale))  # fmt: skip
            recs.append(dict(row=r["arm"], col="source", text=f"measured, n = {int(r['n'])} seeds"))
        prov = provenance(ok)
    else:
        missing = ("no rows of kind 'classification' in the selected runs: the measured ToST-versus-controls "
                   "columns are missing (run the classification study, then re-render)")  # fmt: skip
        prov = "no measured rows"
    for m in paper.TABLE2:
        name = f"{m.name} (paper)"
        rows.append(name)
        recs += [dict(row=name, col="paper_top1", mean=m.top1), dict(row=name, col="params", mean=m.params_m),
                 dict(row=name, col="source", text=paper.TABLE2_SOURCE)]  # fmt: skip
    cols = [Col("top1", "top-1 (measured)", "top-1 measured", "pm", 2, r"\percent", "%", True),
            Col("paper_top1", "top-1 (paper)", "top-1 (paper)", "value", 1, r"\percent", "%"),
            Col("params", "params (paper, M)", "params (paper)", "value", 1, "", "M"),
            Col("source", "source", "source", "text")]  # fmt: skip
    cap = ("ToST against its controls (the same backbone with softmax attention and with XCA). Rows marked "
           "(paper) are the paper's Table 2, ImageNet-1k, copied for reference, not measured here. "
           + (f"Measured: {prov}." if metric else f"Measured: missing — {missing}."))  # fmt: skip
    return Table(name="tost_controls", caption=cap, label="tab:tost-controls", stub="model", rows=rows, cols=cols,
                 cells=pd.DataFrame(recs)), missing  # fmt: skip


def _classification_claim(cls: pd.DataFrame) -> list[dict]:
    claim = "ToST on par with its softmax and XCA controls"
    shown = ", ".join(f"{m.name} {m.top1}" for m in map(paper.table2, ("ToST-S", "XCiT-S", "ViT-S")))
    src = f"paper, Table 2 ({shown} top-1)"
    ok = ok_rows(cls, KIND)
    metric = classification_metric(ok) if not ok.empty else None
    if metric is None:
        return [dict(claim=claim, source=src, measured="no classification rows", interval="", verdict=NOT_TESTABLE,
                     why="missing: no classification rows in the selected runs")]  # fmt: skip
    long = ok[ok["metric"] == metric][["variant", "seed", "value"]].rename(columns={"variant": "arm"})
    long = long.assign(
        metric="top1", value=long["value"].astype(float) * (100.0 if M.get(metric).unit == "1" else 1.0)
    )
    tost = sorted(a for a in set(long["arm"]) if "softmax" not in a and "xca" not in a)
    out = []
    for ctrl in sorted(a for a in set(long["arm"]) if "softmax" in a or "xca" in a):
        for t in tost:
            pair = long[long["arm"].isin([t, ctrl])]
            # unadjusted p (family=[]): each pair is its own claim
            s = stats.summarise(pair, ctrl, family=[], claims=[{"arm": t, "metric": "top1"}], rope=TOP1_ROPE)
            if s["verdicts"].empty:
                continue
            r = s["verdicts"].iloc[0]
            lo, hi, v = r["ci_low"], r["ci_high"], r["verdict"]
            out.append(dict(claim=f"{claim}: {t} vs {ctrl}", source=src,
                            measured=f"paired top-1 difference (points), n = {int(r['n'])} seeds",
                            interval=f"{r['mean_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]", verdict=v,
                            detectable=(f"{r['mde']:.2g} points (alpha {r['alpha_mde']:.2g}, power 0.8, n = "
                                        f"{int(r['n'])})" if r["mde"] == r["mde"] else ""),
                            why=f"on par = equivalent (two one-sided tests) within ±{TOP1_ROPE} points"))  # fmt: skip
    return out or [dict(claim=claim, source=src, measured="no ToST/control pair", interval="", verdict=NOT_TESTABLE,
                        why="the classification rows lack a softmax or XCA control")]  # fmt: skip


def report(ctx) -> list[ReportPart]:
    """The ToST-versus-controls table and claim from the latest complete run (any suite) with classification rows."""
    cls = ctx.rows(None, KIND, latest=True)
    t, miss = tost_controls(cls)
    part = ReportPart(order=3, ledger_order=3, tables=[t], rows=cls, claims=_classification_claim(cls))
    if miss:
        part.missing.append(f"classification: {miss}")
    return [part]
