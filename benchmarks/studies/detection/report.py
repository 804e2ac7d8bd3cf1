"""The detection study's part of the report: accuracy by size and occlusion, paired differences,
efficiency, two figures, and the ledger's claims on multi-scale and occluded detection.

Rules of the claims, declared before reading any result: *better detection* on a stratum (AP
small / medium / large, partial and heavy occlusion) takes the suite's paired-difference verdict
(:func:`benchmarks.studies.detection.summary.summary`: 95% t interval over seeds, Holm across the
strata, equivalence by two one-sided tests against the suite's region of practical equivalence,
"not testable at this budget" under the suite's floor), with its minimum detectable effect; each
claim is repeated against the control (TSSA against the model without attention, its own Holm
family), and a gain is credited to TSSA's attention only if it shows there too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.core import metrics as M
from benchmarks.core import stats
from benchmarks.core.registry import ReportFigure, ReportPart
from benchmarks.report.claims import NOT_TESTABLE
from benchmarks.report.figures import COLUMN_IN, palette, plt, save, sns, style
from benchmarks.report.render import Col, Table
from benchmarks.report.tables import arm_order, describe_cells, metric_col, provenance
from benchmarks.studies.detection.summary import KIND, summary

SUITE = "cpu"  # the published profile the report reads


SIZE_METRICS = ("map50_95", "map50", "ap_small", "ap_medium", "ap_large")
OCC_METRICS = ("ap_occ_none", "ap_occ_partial", "ap_occ_heavy", "recall_occ_none", "recall_occ_partial",
               "recall_occ_heavy")  # fmt: skip


def diff_metrics(section: dict) -> tuple[str, ...]:
    """The paired differences the report shows: mAP50-95 and the strata the suite's Holm family names."""
    return ("map50_95", *section["holm_family"])


EFFICIENCY_METRICS = ("params", "gflops", "latency_ms", "train_time_s", "train_peak_mib")


def detection_long(df: pd.DataFrame) -> pd.DataFrame:
    """Detection rows as (arm, seed, metric, value)."""
    return stats.long_rows(df, KIND).astype({"value": float})


def detection_accuracy(df: pd.DataFrame, reference: str, which: str) -> Table | None:
    """Per arm: mean +- sd over seeds of the overall and size (``which="size"``) or occlusion metrics."""
    long = detection_long(df)
    if long.empty:
        return None
    mets = [m for m in (SIZE_METRICS if which == "size" else OCC_METRICS) if m in set(long["metric"])]
    cells = describe_cells(long[long["metric"].isin(mets)])
    n = int(cells["n"].max())
    what = "overall and by object size" if which == "size" else "by occlusion level (AP and recall)"
    cap = (f"Detection accuracy per arm, {what}: mean ± sd over n = {n} seeds (COCO evaluator on the "
           f"validation set). Bold: the best arm, only when its 95% t interval is disjoint from the runner-up's. "
           f"{provenance(df[df['kind'] == 'detection'])}.")  # fmt: skip
    return Table(name=f"detection_{which}", caption=cap, label=f"tab:detection-{which}", stub="arm",
                 rows=arm_order(long["arm"], reference), cols=[metric_col(m) for m in mets], cells=cells, wide=True,
                 small=True)  # fmt: skip


def detection_diffs(df: pd.DataFrame, section: dict) -> tuple[Table | None, pd.DataFrame]:
    """Paired differences (arm - reference, by seed) with 95% t intervals and Holm-adjusted p."""
    det = df[df["kind"] == "detection"] if not df.empty else df
    if det.empty or det["error"].isna().sum() == 0:
        return None, pd.DataFrame()
    s = summary(det, section)
    diffs = s["diffs"]
    shown = diff_metrics(section)
    diffs = diffs[diffs["metric"].isin(shown)]
    rows, recs = [], []
    for arm in sorted(set(diffs["arm"])):
        for m in shown:
            r = diffs[(diffs["arm"] == arm) & (diffs["metric"] == m)]
            if r.empty:
                continue
            r = r.iloc[0]
            label = f"{arm}: {M.get(m).label}"
            rows.append(label)
            recs += [dict(row=label, col="diff", mean=r["mean_diff"]),
                     dict(row=label, col="lo", mean=r["ci_low"]), dict(row=label, col="hi", mean=r["ci_high"]),
                     dict(row=label, col="p", mean=r["p_holm"] if pd.notna(r["p_holm"]) else r["p_value"]),
                     dict(row=label, col="n", mean=float(r["n"]))]  # fmt: skip
    cols = [Col("n", "$n$", "n", "value", 0), Col("diff", r"$\Delta$", "difference", "signed", 4),
            Col("lo", "95\\% CI low", "95% CI low", "signed", 4), Col("hi", "95\\% CI high", "95% CI high", "signed", 4),
            Col("p", "$p$ (Holm)", "p (Holm)", "value", 3)]  # fmt: skip
    cap = (f"Paired differences against {s['reference']} (same seed: same data order and initial weights outside "
           f"the changed block): mean difference in AP and its 95% t interval over the paired seeds; p from the "
           f"paired t test, Holm-adjusted across the size and occlusion strata (overall mAP unadjusted). "
           f"Region of practical equivalence ±{s['rope']} AP, declared in the suite before any result. "
           f"{provenance(det)}.")  # fmt: skip
    t = Table(name="detection_diffs", caption=cap, label="tab:detection-diffs", stub="arm: metric", rows=rows,
              cols=cols, cells=pd.DataFrame(recs), wide=True)  # fmt: skip
    return t, s


def _timing_note(df: pd.DataFrame) -> str:
    """Where the timings were taken: alone, or beside other workers (the rows' ``workers_active``)."""
    if "workers_active" not in df:
        return ""  # rows of a run before parallel cells: every cell ran alone
    w = df[df["metric"] == "train_time_s"]["workers_active"].dropna()
    busy = int(w.max()) if not w.empty else 1
    return ("Latency was timed alone on the machine; training time with up to "
            f"{busy} cells training at once (rows record the busy workers and the load average). " if busy > 1
            else "Every timing was taken with no other cell running. ")  # fmt: skip


def efficiency(df: pd.DataFrame, reference: str) -> Table | None:
    """Per detection arm: params, GFLOPs, latency, training time and training-step peak memory."""
    long = detection_long(df)
    long = long[long["metric"].isin(EFFICIENCY_METRICS)]
    if long.empty:
        return None
    cells = describe_cells(long)
    const = cells.groupby("col")["sd"].max().fillna(0) == 0
    cols = [
        metric_col(m, "value" if const.get(m, False) else "pm")
        for m in EFFICIENCY_METRICS
        if m in set(long["metric"])
    ]
    cap = (f"Efficiency per detection arm: parameters, GFLOPs (the project's counter), median inference latency "
           f"(batch 1), training time and training-step peak memory; mean ± sd over n = {int(cells['n'].max())} "
           f"seeds where they vary. {_timing_note(df)}{provenance(df[df['kind'] == 'detection'])}.")  # fmt: skip
    return Table(name="efficiency", caption=cap, label="tab:efficiency", stub="arm",
                 rows=arm_order(long["arm"], reference), cols=cols, cells=cells, wide=True)  # fmt: skip


def accuracy_by_stratum(det: pd.DataFrame, out: Path, reference: str, width: float = COLUMN_IN) -> list[Path]:
    """AP by object size and by occlusion level per arm: mean over seeds with ±1 sd error bars."""
    strata = (("size", ("ap_small", "ap_medium", "ap_large"), ("small", "medium", "large")),
              ("occlusion", ("ap_occ_none", "ap_occ_partial", "ap_occ_heavy"), ("none", "partial", "heavy")))  # fmt: skip
    arms = [reference] + sorted(a for a in set(det["variant"]) if a != reference)
    colour, marker = palette(arms)
    n = det["seed"].nunique()
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(width, 2.1), sharey=True)
        for ax, (title, mets, labels) in zip(axes, strata):
            d = det[det["metric"].isin(mets)].copy()
            d["stratum"] = d["metric"].map(dict(zip(mets, labels)))
            d["value"] = d["value"].astype(float)
            sns.pointplot(data=d, x="stratum", y="value", hue="variant", order=list(labels), hue_order=arms,
                          errorbar="sd", dodge=0.4, markers=[marker[a] for a in arms], linestyles="none",
                          palette=colour, ax=ax, capsize=0.1, err_kws={"linewidth": 0.8}, markersize=3.5)  # fmt: skip
            ax.set_xlabel(f"object {title}")
            ax.set_ylabel("AP50-95 (fraction)")
            ax.get_legend().remove()
        handles, labs = axes[0].get_legend_handles_labels()
        fig.legend(
            handles, labs, loc="lower center", ncol=len(arms), frameon=False, bbox_to_anchor=(0.5, 1.0)
        )
        fig.text(0.5, -0.02, f"mean over n = {n} seeds, error bars ±1 sd", ha="center", va="top", fontsize=6)
        fig.tight_layout()
        return save(fig, out, "detection_strata")


def paired_differences(diffs: pd.DataFrame, out: Path, rope: float, reference: str, metrics_order,
                       width: float = COLUMN_IN) -> list[Path]:  # fmt: skip
    """Paired differences against the reference with 95% t intervals; the equivalence region shaded."""
    d = diffs[diffs["metric"].isin(metrics_order)].copy()
    arms = sorted(set(d["arm"]))
    colour, marker = palette([reference, *arms])
    labels = [M.get(m).label for m in metrics_order if m in set(d["metric"])]
    ypos = {m: i for i, m in enumerate(m for m in metrics_order if m in set(d["metric"]))}
    with style():
        fig, ax = plt.subplots(figsize=(width, 0.3 * len(ypos) + 0.9))
        ax.axvspan(-rope, rope, color="0.88", zorder=0, label=f"equivalence ±{rope}")
        ax.axvline(0, color="0.4", lw=0.6)
        off = np.linspace(-0.15, 0.15, len(arms)) if len(arms) > 1 else [0.0]
        for a, o in zip(arms, off):
            s = d[d["arm"] == a]
            y = np.array([ypos[m] for m in s["metric"]]) + o
            x = s["mean_diff"].to_numpy(float)
            err = np.vstack([x - s["ci_low"].to_numpy(float), s["ci_high"].to_numpy(float) - x])
            ax.errorbar(x, y, xerr=err, fmt=marker[a], color=colour[a], capsize=2, lw=0.8, label=a, ms=3.5)
        ax.set_yticks(range(len(ypos)), labels)
        ax.invert_yaxis()
        ax.set_xlabel(f"AP difference vs {reference} (fraction; 95% t interval)")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
        fig.tight_layout()
        return save(fig, out, "detection_diffs")


def _detectable(r) -> str:
    if r["mde"] != r["mde"]:
        return ""
    return f"{100 * r['mde']:.2g} AP points (alpha {r['alpha_mde']:.2g}, power 0.8, n = {int(r['n'])})"


def _detection_claims(summary: dict | None) -> list[dict]:
    groups = (("Better multi-scale detection", ("ap_small", "ap_medium", "ap_large")),
              ("Better occluded detection", ("ap_occ_partial", "ap_occ_heavy")))  # fmt: skip
    src = "public C2PSA-TSSA forks"
    out = []
    ver = summary["verdicts"] if summary else pd.DataFrame()
    for title, mets in groups:
        sel = ver[ver["metric"].isin(mets)] if not ver.empty else ver
        if sel.empty:
            out.append(dict(claim=title, source=src, measured="no detection verdicts", interval="",
                            verdict=NOT_TESTABLE, why="run the cpu suite's detection study"))  # fmt: skip
            continue
        for _, r in sel.iterrows():
            control = r.get("role") == "control"
            what = f"{title}: {M.get(r['metric']).label}" + (
                f" (control: against {r['reference']})" if control else ""
            )
            rule = f"Holm p = {r['p_adj']:.2g}; TOST p = {r['p_tost']:.2g}; ROPE ±{r['rope']} AP"
            if r["verdict"] == stats.NOT_TESTABLE_FLOOR:
                rule = (
                    f"arm means {r['arm_mean']:.3f} and {r['reference_mean']:.3f} AP, under the floor "
                    f"{summary.get('floor')}"
                    if r["n"]
                    else "no ground truth in this stratum"
                )
            credit = r.get("credited")
            if not control and credit is not None and credit == credit:
                rule += "; " + ("shows against the control too" if credit else
                                "not against the control: not credited to TSSA's attention")  # fmt: skip
            interval = f"{r['mean_diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if r["n"] else ""
            out.append(dict(claim=what, source=src,
                            measured=f"paired AP difference {r['arm']} − {r['reference']}, n = {r['n']} seeds",
                            interval=interval, verdict=r["verdict"], detectable=_detectable(r), why=rule))  # fmt: skip
    return out


def report(ctx) -> list[ReportPart]:
    """The tables, figures and claims of the latest complete cpu run that holds detection rows."""
    det = ctx.rows(SUITE, KIND, latest=True)
    part = ReportPart(order=1, ledger_order=2, rows=det)
    s = None
    if det.empty:
        part.missing.append("detection: no rows of kind 'detection' in the cpu suite's runs")
    else:
        section = ctx.latest(SUITE, KIND)[0].record["config"]["detection"]
        ref = section.get("reference", "yolo11n")
        tables = [detection_accuracy(det, ref, "size"), detection_accuracy(det, ref, "occlusion")]
        t, s = detection_diffs(det, section)
        tables += [t, efficiency(det, ref)]
        part.tables = [t for t in tables if t]
        ok = det[det["error"].isna()]
        prov = provenance(det)
        out = Path(ctx.out) / "figures"
        part.figures.append(ReportFigure("detection_strata", accuracy_by_stratum(ok, out, ref),
                                         "AP50-95 by object size and by occlusion level per arm: mean over seeds "
                                         f"with ±1 sd error bars. {prov}."))  # fmt: skip
        if s is not None and not s["diffs"].empty:
            paths = paired_differences(s["diffs"], out, s["rope"], ref, diff_metrics(section))
            part.figures.append(ReportFigure("detection_diffs", paths, "Paired differences in AP against the stock "
                                             "model (same seed) with 95% t intervals; the shaded band is the region "
                                             f"of practical equivalence ±{s['rope']} AP. {prov}."))  # fmt: skip
    part.claims = _detection_claims(s)
    return [part]
