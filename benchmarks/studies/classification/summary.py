"""The classification study's summary: rows of one run -> per task arm x metric, paired differences
of each control against ToST, top-1 verdicts; and the paper's Table 2 beside them.

:func:`summary` runs the core's summary pipeline (:func:`benchmarks.core.stats.summarise`) per
task: per arm and metric the mean, sd, n and 95% t interval over seeds; per control the paired
difference against the reference arm (ToST) over the seeds both have, with its 95% t interval and
paired t test, Holm-adjusted across the controls; and the verdict on "this control matches ToST on
top-1" with the suite's ROPE (``equivalent`` when the interval lies in +-rope).
:func:`paper_markdown` prints the paper's Table 2 ImageNet-1k figures (:mod:`benchmarks.core.paper`)
as a separate table: they are the paper's, never ours.
"""

from __future__ import annotations

from typing import Any

from benchmarks.core import metrics as _metrics
from benchmarks.core import paper, stats
from benchmarks.core.impl import cores_line
from benchmarks.report.render import markdown_table
from benchmarks.studies.classification.train import parse_classification

KIND = "classification"


def summary(df, section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task: ``describe`` (arm x metric), ``diffs`` (each control - reference, paired by seed,
    Holm across the controls on top-1), ``verdicts`` (top-1 equivalence within the ROPE), the
    ``reference`` and the ``rope``. ``df``: the rows of one run (machines are never pooled)."""
    sec = parse_classification(section)
    out: dict[str, dict[str, Any]] = {}
    rows = df[(df["kind"] == KIND) & df["error"].isna()]
    for name, task in sec.tasks.items():
        ok = rows[rows["task"] == name] if "task" in rows.columns else rows.iloc[0:0]
        if ok.empty:
            continue
        long = stats.long_rows(ok, KIND)
        reference = task.reference or task.arms[0]
        claims = [{"name": f"{a} matches {reference} on top-1", "arm": a, "metric": "top1"}
                  for a in task.arms if a != reference and a in set(long["arm"])]  # fmt: skip
        s = stats.summarise(long, reference, family=["top1"], claims=claims, rope=sec.rope, alpha=sec.alpha)
        out[name] = {**s, "arms": list(task.arms), "cores": cores_line(ok)}
    return out


SUMMARY_METRICS = (
    "top1",
    "top5",
    "val_loss",
    "params",
    "gflops",
    "images_per_s",
    "train_time_s",
    "train_peak_mib",
)
DIFF_METRICS = ("top1", "top5", "val_loss", "images_per_s")
_READING = {
    "equivalent": "matches ToST (90% interval within the ROPE)",
    stats.NOT_TESTABLE_FLOOR: stats.NOT_TESTABLE_FLOOR,
    "supported": "control better",
    "contradicted": "ToST better",
    "inconclusive": "inconclusive",
}


def _fmt(value: float, metric: str) -> str:
    if metric == "params":
        return f"{value / 1e6:.3f}M"
    if metric == "gflops":  # small models: three decimals (the registry's two would print 0.07)
        return f"{value:.4f}"
    return f"{value:.{_metrics.get(metric).precision}f}"


def _ci(lo: float, hi: float, metric: str) -> str:
    return stats.interval_text(lo, hi, _metrics.get(metric).precision)


def summary_markdown(s: dict[str, dict[str, Any]], title: str) -> str:
    """Markdown per task: arms x metrics (mean ± sd (n)), the 95% t intervals of top-1, the paired
    differences of each control against ToST, and the top-1 verdicts."""
    lines = []
    for task, t in s.items():
        desc, diffs, ver = t["describe"], t["diffs"], t["verdicts"]
        mets = [m for m in SUMMARY_METRICS if m in set(desc["metric"])]
        arms = [a for a in t["arms"] if a in set(desc["arm"])]
        rows = []
        for a in arms:
            r = desc[(desc["arm"] == a) & (desc["metric"] == "top1")]
            ci = (
                "-"
                if r.empty
                else _ci(r.iloc[0]["ci_low"], r.iloc[0]["ci_high"], "top1").strip("[]").replace("+", "")
            )
            rows.append([a, *stats.mean_sd_cells(desc, a, mets, _fmt), ci])
        heads = [*((_metrics.get(m).label, "right") for m in mets), ("top-1 95% t interval", "right")]
        lines += [f"**{title}, task {task}**", "", markdown_table("arm", heads, rows)]
        if t.get("cores"):
            lines += ["", t["cores"]]
        if not diffs.empty:
            dm = [m for m in DIFF_METRICS if m in set(diffs["metric"])]
            rows = [[a, *stats.difference_cells(diffs, a, dm, lambda m: _metrics.get(m).precision)]
                    for a in arms if a != t["reference"]]  # fmt: skip
            lines += ["", f"Paired differences, control - {t['reference']} over the same seeds "
                      "(mean [95% t interval]; top-1 with its Holm-adjusted p across the controls):", "",
                      markdown_table("control", [(_metrics.get(m).label, "right") for m in dm], rows)]  # fmt: skip
        if not ver.empty:
            rows = []
            for _, r in ver.iterrows():
                p_adj = f"{r['p_adj']:.3g}" if r["p_adj"] == r["p_adj"] else "n/a"
                p_tost = f"{r['p_tost']:.3g}" if r["p_tost"] == r["p_tost"] else "n/a"
                mde = f"{100 * r['mde']:.2f}" if r["mde"] == r["mde"] else "n/a"
                rows.append([r["arm"], str(r["n"]), f"{r['mean_diff']:+.4f} {_ci(r['ci_low'], r['ci_high'], 'top1')}",
                             p_adj, p_tost, mde, f"**{_READING[r['verdict']]}**"])  # fmt: skip
            heads = [
                ("n", "right"),
                ("difference [95% CI]", "right"),
                ("p (Holm)", "right"),
                ("TOST p", "right"),
                ("MDE (points)", "right"),
                ("verdict", "left"),
            ]
            lines += ["", f"Top-1 verdicts (ROPE ±{t['rope']} top-1, fixed in the suite before any result; "
                      "equivalence by two one-sided tests; MDE: the smallest top-1 difference a two-sided paired t "
                      "test at Holm's first-step alpha detects with power 0.8 at these seeds):", "",
                      markdown_table("control", heads, rows)]  # fmt: skip
        lines += _resolution(desc)
        lines.append("")
    return "\n".join(lines).strip()


def _resolution(desc) -> list[str]:
    """What the validation set can resolve: one image's step, and the binomial sd of a top-1 near the
    measured one (the sampling noise of the val set itself, which no number of seeds removes)."""
    n = desc[desc["metric"] == "val_images"]
    top1 = desc[desc["metric"] == "top1"]
    if n.empty or top1.empty:
        return []
    n_val = int(n["mean"].iloc[0])
    p = float(top1["mean"].mean())
    sd = (p * (1 - p) / n_val) ** 0.5
    return ["", f"What the validation set can resolve: {n_val} images, so top-1 moves in steps of "
            f"{100 / n_val:.2f} points; at the measured top-1 ({100 * p:.1f}%) a second draw of {n_val} images "
            f"would differ by a binomial sd of {100 * sd:.2f} points: the seeds' paired intervals say how the "
            "models compare on these images, not on the population they were drawn from."]  # fmt: skip


def paper_markdown() -> str:
    """The paper's Table 2 (ImageNet-1k top-1, 224 px, 400 epochs): the paper's figures, not ours."""
    heads = [("closest configuration here", "left"), ("params (paper)", "right"),
             ("ImageNet-1k top-1 (paper)", "right")]  # fmt: skip
    rows = [[m.name, m.arm, f"{m.params_m:.1f}M", f"{m.top1:.1f}%"] for m in paper.TABLE2]
    return "\n".join(["**The paper's figures (Wu et al., ICLR 2025, Table 2: ImageNet-1k top-1; not measured here)**",
                      "", markdown_table("model (paper)", heads, rows)])  # fmt: skip
