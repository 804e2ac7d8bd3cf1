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
from benchmarks.core.impl import cores_line
from benchmarks.report.render import markdown_table
from benchmarks.studies.detection.section import parse_arm, parse_detection

KIND = "detection"


def controls(sec) -> list[str]:
    """The section's controls: as declared, else the no-attention arm of the reference's scale when it
    is one of the arms (TSSA against it: a gain credited to TSSA's attention shows there too)."""
    if sec.controls is not None:
        return list(sec.controls)
    noattn = f"yolo11{parse_arm(sec.reference)[1]}-noattn"
    return [noattn] if noattn in sec.arms and noattn != sec.reference else []


def split_trunk(df):
    """``(arm rows, trunk rows)``: a warm start's trunk cells (``role`` ``"trunk"``) have rows of their own."""
    if "role" not in getattr(df, "columns", ()):
        return df, df.iloc[0:0]
    trunk = df["role"].fillna("") == "trunk"
    return df[~trunk], df[trunk]


def summary(df, section: dict[str, Any]) -> dict[str, Any]:
    """The study's tables from detection rows (one run or several): ``describe``, ``diffs``,
    ``verdicts`` (each claim against the reference, and against each control), ``trunk`` (the warm
    start's trunk rows, described), ``warm_start``.

    Rows of different machines are never pooled: the caller passes the rows of one run.
    """
    sec = parse_detection(section)
    hib = {k: bool(m.higher_is_better) for k, m in _metrics.METRICS.items() if m.higher_is_better is not None}
    arms, trunk = split_trunk(df)
    out = stats.summarise(stats.long_rows(arms, KIND), sec.reference, family=sec.holm_family,
                          claims=[c.model_dump() for c in sec.claims], rope=sec.rope, alpha=sec.alpha,
                          higher_is_better=hib, floor=sec.floor, controls=controls(sec))  # fmt: skip
    out["cores"] = cores_line(arms[arms["kind"] == KIND] if "kind" in arms else arms)
    out["trunk"] = stats.describe(stats.long_rows(trunk, KIND))
    out["warm_start"] = sec.warm_start.model_dump() if sec.warm_start is not None else None
    return out


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
    if s.get("cores"):
        lines += ["", s["cores"]]
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
            p_tost = f"{r['p_tost']:.3g}" if r["p_tost"] == r["p_tost"] else "n/a"
            mde = f"{100 * r['mde']:.2f}" if r["mde"] == r["mde"] else "n/a"
            credit = r.get("credited")
            verdict = f"**{r['verdict']}**"
            if credit is not None and credit == credit:
                verdict += (
                    " (shows against every control too)"
                    if credit
                    else " (not against the control: not credited to attention)"
                )
            rows.append([r["claim"], r["arm"], r["reference"], r["metric"], str(r["n"]),
                         f"{r['mean_diff']:+.4f} {_ci(r)}", p_adj, p_tost, mde, verdict])  # fmt: skip
        heads = [("arm", "left"), ("against", "left"), ("metric", "left"), ("n", "right"),
                 ("difference [95% CI]", "right"), ("p (Holm)", "right"), ("TOST p", "right"),
                 ("MDE (AP points)", "right"), ("verdict", "left")]  # fmt: skip
        floor = f"; floor {s['floor']} AP" if s.get("floor") is not None else ""
        ctrl = f"; controls {', '.join(s['controls'])} (own Holm family)" if s.get("controls") else ""
        lines += ["", f"Verdicts (ROPE ±{s['rope']} AP{floor}{ctrl}; declared in the suite before any result; "
                  "equivalence by two one-sided tests at alpha; MDE: the smallest effect a two-sided paired t test "
                  "at the verdict's alpha (Holm's first step, alpha / m) detects with power 0.8):", "",
                  markdown_table("claim", heads, rows)]  # fmt: skip
    trunk = s.get("trunk")
    if trunk is not None and not trunk.empty:
        ws = s.get("warm_start") or {}
        cells = stats.mean_sd_cells(
            trunk,
            trunk["arm"].iloc[0],
            [m for m in ("map50_95", "map50") if m in set(trunk["metric"])],
            _fixed,
        )
        lines += ["", f"Warm start: every arm fine-tuned from one common trunk ({trunk['arm'].iloc[0]}, "
                  f"{ws.get('epochs', '?')} epochs from scratch, mode {ws.get('mode', '?')}), as users fine-tune from "
                  f"one public checkpoint; trunk mAP50-95, mAP50: {', '.join(cells)}."]  # fmt: skip
    kappa = desc[desc["metric"] == "proxy_kappa"]
    if not kappa.empty:
        lines += ["", f"Box proxy against true occlusion (levels set on train, agreement on val): Cohen's kappa "
                  f"{kappa['mean'].iloc[0]:.3f}."]  # fmt: skip
    return "\n".join(lines)
