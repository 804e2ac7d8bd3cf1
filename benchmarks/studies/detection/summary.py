"""The detection study's summary: rows of one run -> arm x metric, paired differences, verdicts.

:func:`summary` turns the rows of a run into the study's tables through the core's summary
pipeline (:func:`benchmarks.core.stats.summarise`): per arm and metric the mean, sd, n and 95% t
interval over seeds; per arm the paired difference against the reference with its 95% t interval
and Holm-adjusted p across the size and occlusion strata; and the verdict on each claim
(supported, contradicted, equivalent, inconclusive) with the suite's ROPE.
"""

from __future__ import annotations

from typing import Any

from benchmarks.core import metrics as _metrics
from benchmarks.core import stats
from benchmarks.report.render import markdown_table
from benchmarks.studies.detection.section import parse_detection

KIND = "detection"


def summary(df, section: dict[str, Any]) -> dict[str, Any]:
    """The study's tables from detection rows (one run or several): ``describe``, ``diffs``, ``verdicts``.

    Rows of different machines are never pooled: the caller passes the rows of one run.
    """
    sec = parse_detection(section)
    hib = {k: bool(m.higher_is_better) for k, m in _metrics.METRICS.items() if m.higher_is_better is not None}
    return stats.summarise(stats.long_rows(df, KIND), sec.reference, family=sec.holm_family,
                           claims=[c.model_dump() for c in sec.claims], rope=sec.rope, alpha=sec.alpha,
                           higher_is_better=hib)  # fmt: skip


def run_blocks(rdf, section: dict[str, Any], title: str) -> list[str]:
    """Markdown blocks of one run's detection rows, every machine named.

    Rows of one device: one summary (:func:`summary`). Rows of several devices (a cluster sweep
    over nodes with different GPUs): one summary of the device-independent metrics (accuracy,
    counts) over every node, then per device a table of the device-bound metrics (times, memory:
    :func:`benchmarks.core.metrics.device_bound`) of that device's rows only; they are never pooled.
    """
    import pandas as pd

    rdf = rdf[rdf["kind"] == KIND]
    if "prov.device_name" not in rdf.columns:
        rdf = rdf.assign(**{"prov.device_name": None})
    keys = ["machine", "machine_name", "prov.device_name"]
    nodes = rdf[keys].drop_duplicates().fillna("?").values.tolist()
    if len(nodes) <= 1:
        where = f" ({nodes[0][1]})" if nodes else ""
        return [summary_markdown(summary(rdf, section), f"{title}{where}; mean ± sd (n seeds)")]
    bound = rdf["metric"].map(_metrics.device_bound)
    named = "; ".join(f"{n} [{m}], {d}" for m, n, d in nodes)
    blocks = [summary_markdown(summary(rdf[~bound], section),
                               f"{title}, rows of {len(nodes)} machines ({named}); device-independent metrics, "
                               "mean ± sd (n seeds)")]  # fmt: skip
    ok = rdf[bound & rdf["error"].isna()].rename(columns={"variant": "arm"})
    for (m, n, d), g in ok.fillna({"prov.device_name": "?"}).groupby(keys, sort=True):
        s = {"describe": stats.describe(g[["arm", "seed", "metric", "value"]]), "diffs": pd.DataFrame(),
             "verdicts": pd.DataFrame(), "reference": section.get("reference"), "rope": section.get("rope")}  # fmt: skip
        blocks.append(
            summary_markdown(s, f"{title}: times and memory on {d} ({n} [{m}]) only; mean ± sd (n seeds)")
        )
    return blocks


SUMMARY_METRICS = ("map50_95", "map50", "ap_small", "ap_medium", "ap_large", "ap_occ_none", "ap_occ_partial",
                   "ap_occ_heavy", "ul_map50_95", "params", "gflops", "latency_ms", "train_time_s", "train_peak_mib")  # fmt: skip


def _ci(r) -> str:
    return stats.interval_text(r["ci_low"], r["ci_high"], 4)


def _fixed(value: float, metric: str) -> str:
    return f"{value:.{_metrics.get(metric).precision}f}"


def summary_markdown(s: dict[str, Any], title: str) -> str:
    """Markdown: arms x metrics (mean +- sd (n)), paired differences against the reference, verdicts."""
    desc, diffs, ver = s["describe"], s["diffs"], s["verdicts"]
    mets = [m for m in SUMMARY_METRICS if m in set(desc["metric"])]
    arms = list(dict.fromkeys(desc["arm"]))
    heads = [(_metrics.get(m).label, "right") for m in mets]
    rows = [[a, *stats.mean_sd_cells(desc, a, mets, _fixed)] for a in arms]
    lines = [f"**{title}**", "", markdown_table("arm", heads, rows)]
    acc = [m for m in mets if _metrics.get(m).unit == "1"]
    if not diffs.empty:
        rows = [[a, *stats.difference_cells(diffs, a, acc, lambda m: 4)] for a in arms if a != s["reference"]]
        heads = [(_metrics.get(m).label, "right") for m in acc]
        lines += ["", f"Paired differences against {s['reference']} (mean [95% t interval], Holm-adjusted p where the "
                  "metric is a stratum):", "", markdown_table("arm", heads, rows)]  # fmt: skip
    if not ver.empty:
        rows = []
        for _, r in ver.iterrows():
            p_adj = f"{r['p_adj']:.3g}" if r["p_adj"] == r["p_adj"] else "n/a"
            rows.append([r["claim"], r["arm"], r["metric"], str(r["n"]), f"{r['mean_diff']:+.4f} {_ci(r)}", p_adj,
                         f"**{r['verdict']}**"])  # fmt: skip
        heads = [("arm", "left"), ("metric", "left"), ("n", "right"), ("difference [95% CI]", "right"),
                 ("p (Holm)", "right"), ("verdict", "left")]  # fmt: skip
        lines += ["", f"Verdicts (ROPE ±{s['rope']} AP, declared in the suite before any result):", "",
                  markdown_table("claim", heads, rows)]  # fmt: skip
    return "\n".join(lines)
