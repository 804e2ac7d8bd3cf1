"""The classification study through the harness: suite section -> cells -> runs -> rows -> summary.

Each (task, arm, seed) of a suite's ``classification:`` section (:mod:`benchmarks.classification`)
is one cell of kind ``classification``, executed alone by
:func:`benchmarks.classification.run_classification_cell` (timm's own model, data, optimizer,
scheduler and loss). Every returned metric becomes a row (unit from the registry); the cell's task
is a column of its rows (``task``).

:func:`summary` turns the rows of one run into the study's tables, per task: per arm and metric the
mean, sd, n and 95% t interval over seeds (:func:`benchmarks.stats.describe`); per control the
paired difference against the reference arm (ToST) over the seeds both have, with its 95% t
interval and paired t test (:func:`benchmarks.stats.paired_differences`), Holm-adjusted across the
controls (:func:`benchmarks.stats.holm`); and the verdict on "this control matches ToST on top-1"
with the suite's ROPE (:func:`benchmarks.stats.verdicts`: ``equivalent`` when the interval lies in
+-rope). :func:`paper_markdown` prints the paper's Table 2 ImageNet-1k figures as a separate table:
they are the paper's, never ours.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks import metrics as _metrics
from benchmarks.cells import Cell
from benchmarks.runner import Context, Group, Outcome, reason

KIND = "classification"


def register_metrics() -> None:
    """Put the study's metrics into the registry (shared names come from the detection study)."""
    from benchmarks import detection_study
    from benchmarks.classification import CLASSIFICATION_METRICS, SHARED_METRICS

    detection_study.register_metrics()  # params, gflops, train_time_s, train_peak_mib: one convention
    for name, m in CLASSIFICATION_METRICS.items():
        if name not in _metrics.METRICS:
            _metrics.register(name, m["unit"], m["higher_is_better"], m["label"], m["latex"], m["precision"])
    missing = [m for m in SHARED_METRICS if m not in _metrics.METRICS]
    if missing:  # pragma: no cover - a registry change elsewhere
        raise RuntimeError(f"metrics {missing} are not registered; the classification study reuses them")


def section_of(suite: dict[str, Any]):
    """The suite's validated classification section (:class:`~benchmarks.classification.ClassificationSection`)."""
    from benchmarks.classification import parse_classification

    return parse_classification(suite["classification"])


def plan(suite_name: str, suite: dict[str, Any]) -> list[Group]:
    """One group (one cell) per (task, arm, seed), seed-major within a task (every arm of seed 0 first)."""
    from benchmarks.classification import expand_cells

    register_metrics()
    sec = section_of(suite)
    device = suite.get("device", "cpu")
    flat = expand_cells(sec, device=device, threads=int(suite.get("threads", 1)))
    flat.sort(key=lambda c: (list(sec.tasks).index(c["task"]), sec.seeds.index(c["seed"])))  # stable
    groups = []
    for i, p in enumerate(flat):
        cell = Cell.make(
            KIND,
            {"variant": p["variant"], "pass": "train", "seed": p["seed"], "image_size": p["data.image_size"],
             "task": p["task"], "epochs": p["train.epochs"], "batch": p["train.batch_size"], "device": device},
            {k: v for k, v in p.items() if k not in ("kind",)},
        )  # fmt: skip
        label = f"{p['task']} {p['variant']} seed {p['seed']}"
        groups.append(Group([cell], _executor(p, i + 1, len(flat)), label=label))
    return groups


def _executor(params: dict[str, Any], index: int, total: int):
    def execute(cells: list[Cell], ctx: Context) -> dict[str, Outcome]:
        from benchmarks.classification import run_classification_cell

        (cell,) = cells
        workdir = ctx.run.artifacts(cell.hash) if ctx.run is not None else None
        ctx.log(f"  cell {index}/{total}: training {cell['variant']} seed {cell['seed']} on {cell['task']} "
                f"({cell['epochs']} epochs)")  # fmt: skip
        try:
            values = run_classification_cell(params, workdir)
        except Exception as exc:
            return {cell.id: Outcome(failed=reason(exc))}
        ctx.log(f"  {cell['variant']} seed {cell['seed']}: top-1 {values['top1']:.4f}, "
                f"{values['train_time_s']:.1f} s training")  # fmt: skip
        rows = []
        for name, v in values.items():
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                rows.append(ctx.row(cell, name, None, error="no finite value"))
            else:
                rows.append(ctx.row(cell, name, float(v)))
        return {cell.id: Outcome(rows=rows)}

    return execute


def summary(df, section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task: ``describe`` (arm x metric), ``diffs`` (each control - reference, paired by seed,
    Holm across the controls on top-1), ``verdicts`` (top-1 equivalence within the ROPE), the
    ``reference`` and the ``rope``. ``df``: the rows of one run (machines are never pooled)."""
    import pandas as pd

    from benchmarks import stats
    from benchmarks.classification import parse_classification

    sec = parse_classification(section)
    out: dict[str, dict[str, Any]] = {}
    rows = df[(df["kind"] == KIND) & df["error"].isna()]
    for name, task in sec.tasks.items():
        ok = rows[rows["task"] == name] if "task" in rows.columns else rows.iloc[0:0]
        if ok.empty:
            continue
        ok = ok[["variant", "seed", "metric", "value"]].rename(columns={"variant": "arm"})
        reference = task.reference or task.arms[0]
        desc = stats.describe(ok)
        if reference in set(ok["arm"]) and ok["arm"].nunique() > 1:
            diffs = stats.holm(
                stats.paired_differences(ok, reference=reference), family=["top1"], alpha=sec.alpha
            )
            claims = [{"name": f"{a} matches {reference} on top-1", "arm": a, "metric": "top1"}
                      for a in task.arms if a != reference and a in set(ok["arm"])]  # fmt: skip
            ver = stats.verdicts(diffs, claims, sec.rope, alpha=sec.alpha) if claims else pd.DataFrame()
        else:
            diffs, ver = pd.DataFrame(), pd.DataFrame()
        out[name] = {"describe": desc, "diffs": diffs, "verdicts": ver, "reference": reference,
                     "rope": sec.rope, "arms": list(task.arms)}  # fmt: skip
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
    "equivalent": "matches ToST (interval within the ROPE)",
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
    from benchmarks import stats

    return stats.interval_text(lo, hi, _metrics.get(metric).precision)


def summary_markdown(s: dict[str, dict[str, Any]], title: str) -> str:
    """Markdown per task: arms x metrics (mean ± sd (n)), the 95% t intervals of top-1, the paired
    differences of each control against ToST, and the top-1 verdicts."""
    from benchmarks import stats

    lines = []
    for task, t in s.items():
        desc, diffs, ver = t["describe"], t["diffs"], t["verdicts"]
        mets = [m for m in SUMMARY_METRICS if m in set(desc["metric"])]
        arms = [a for a in t["arms"] if a in set(desc["arm"])]
        lines += [f"**{title}, task {task}**", "",
                  "| arm | " + " | ".join(_metrics.get(m).label for m in mets) + " | top-1 95% t interval |",
                  "| --- | " + " | ".join("---:" for _ in mets) + " | ---: |"]  # fmt: skip
        for a in arms:
            cells = stats.mean_sd_cells(desc, a, mets, _fmt)
            r = desc[(desc["arm"] == a) & (desc["metric"] == "top1")]
            ci = (
                "-"
                if r.empty
                else _ci(r.iloc[0]["ci_low"], r.iloc[0]["ci_high"], "top1").strip("[]").replace("+", "")
            )
            lines.append(f"| {a} | " + " | ".join(cells) + f" | {ci} |")
        if not diffs.empty:
            dm = [m for m in DIFF_METRICS if m in set(diffs["metric"])]
            lines += ["", f"Paired differences, control - {t['reference']} over the same seeds "
                      "(mean [95% t interval]; top-1 with its Holm-adjusted p across the controls):", "",
                      "| control | " + " | ".join(_metrics.get(m).label for m in dm) + " |",
                      "| --- | " + " | ".join("---:" for _ in dm) + " |"]  # fmt: skip
            for a in [x for x in arms if x != t["reference"]]:
                cells = stats.difference_cells(diffs, a, dm, lambda m: _metrics.get(m).precision)
                lines.append(f"| {a} | " + " | ".join(cells) + " |")
        if not ver.empty:
            lines += ["", f"Top-1 verdicts (ROPE ±{t['rope']} top-1, fixed in the suite before any result):", "",
                      "| control | n | difference [95% CI] | p (Holm) | verdict |", "| --- | ---: | ---: | ---: | --- |"]  # fmt: skip
            for _, r in ver.iterrows():
                p_adj = f"{r['p_adj']:.3g}" if r["p_adj"] == r["p_adj"] else "n/a"
                lines.append(f"| {r['arm']} | {r['n']} | {r['mean_diff']:+.4f} {_ci(r['ci_low'], r['ci_high'], 'top1')} "
                             f"| {p_adj} | **{_READING[r['verdict']]}** |")  # fmt: skip
        lines.append("")
    return "\n".join(lines).strip()


def paper_markdown() -> str:
    """The paper's Table 2 (ImageNet-1k top-1, 224 px, 400 epochs): the paper's figures, not ours."""
    from benchmarks.classification import PAPER_TABLE2

    lines = ["**The paper's figures (Wu et al., ICLR 2025, Table 2: ImageNet-1k top-1; not measured here)**", "",
             "| model (paper) | closest configuration here | params (paper) | ImageNet-1k top-1 (paper) |",
             "| --- | --- | ---: | ---: |"]  # fmt: skip
    for r in PAPER_TABLE2:
        lines.append(f"| {r['model']} | {r['arm']} | {r['params'] / 1e6:.1f}M | {100 * r['top1']:.1f}% |")
    return "\n".join(lines)


register_metrics()  # readers of classification rows find the study's metrics in the registry
