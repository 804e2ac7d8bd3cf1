"""The detection study through the harness: suite section -> cells -> runs -> rows -> summary.

Each (arm, seed) of a suite's ``detection:`` section (:mod:`benchmarks.detection`) is one cell of
kind ``detection``, executed alone by :func:`benchmarks.detection.run_detection_cell` (Ultralytics'
own ``train`` and ``val``, pycocotools on ``predictions.json``). Training artefacts go to the run's
``artifacts/<cell hash>/`` (never published); generated data are made once per run under
``artifacts/data``. A cell that a requeued cluster job executes again (:attr:`Context.resume`)
continues training from its own ``last.pt`` there. Every returned metric becomes a row (unit from the registry); a metric that
has no value (a stratum without ground truth) becomes a row with an ``error`` saying so.

:func:`summary` turns the rows of selected runs into the study's tables: per arm and metric the
mean, sd, n and 95% t interval over seeds; per arm the paired difference against the reference
with its 95% t interval and Holm-adjusted p across the size and occlusion strata; and the verdict
on each claim (supported, contradicted, equivalent, inconclusive) with the suite's ROPE.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks import metrics as _metrics
from benchmarks.cells import Cell
from benchmarks.runner import Context, Group, Outcome, reason

KIND = "detection"
_IDENTITY = ("scale", "imgsz", "epochs", "batch")


def register_metrics() -> None:
    """Put the study's metrics into the registry (names already there keep their entry)."""
    from benchmarks.detection import DETECTION_METRICS

    for name, m in DETECTION_METRICS.items():
        if name in _metrics.METRICS:
            continue
        _metrics.register(name, m["unit"], m["higher_is_better"], m["label"], m["latex"], m["precision"])


def plan(suite_name: str, suite: dict[str, Any]) -> list[Group]:
    """One group (one cell) per (seed, arm) of the suite's detection section, seed-major."""
    from benchmarks.detection import detection_cells, parse_detection

    register_metrics()
    section = parse_detection(suite["detection"])
    groups = []
    params = detection_cells(section)
    epochs_total = sum(p["epochs"] for p in params)
    epochs_before = 0
    for i, p in enumerate(params):
        settings = {k: p[k] for k in ("data", "train", "eval", "latency", "occlusion_levels")}
        cell = Cell.make(
            KIND,
            {"variant": p["arm"], "pass": "train", "seed": p["seed"], "image_size": p["imgsz"],
             "scale": p["scale"], "epochs": p["epochs"], "batch": p["batch"], "device": p["train"]["device"]},
            settings,
        )  # fmt: skip
        where = (i + 1, len(params), epochs_before, epochs_total)
        groups.append(Group([cell], _executor(p, where), label=f"{p['arm']} seed {p['seed']}"))
        epochs_before += p["epochs"]
    return groups


def progress_line(
    cell: int, cells: int, epoch: int, epochs: int, done: int, total: int, width: int = 24
) -> str:
    """One line of the study's progress bar: training epochs done over all cells, and where in the cell.

    >>> progress_line(2, 9, 4, 16, 20, 144, width=10)
    '[#---------] 14% cell 2/9 epoch 4/16'
    """
    filled = round(width * done / total) if total else width
    return f"[{'#' * filled}{'-' * (width - filled)}] {100 * done / total:.0f}% cell {cell}/{cells} epoch {epoch}/{epochs}"


def _executor(params: dict[str, Any], where: tuple[int, int, int, int]):
    index, cells_total, epochs_before, epochs_total = where

    def execute(cells: list[Cell], ctx: Context) -> dict[str, Outcome]:
        from benchmarks.detection import run_detection_cell

        (cell,) = cells
        workdir = ctx.run.artifacts(cell.hash)
        data_dir = ctx.run.artifacts("data")
        ctx.log(f"  training {cell['variant']} seed {cell['seed']} ({cell['epochs']} epochs) in {workdir}")

        def on_epoch(epoch: int, epochs: int, seconds: float) -> None:
            bar = progress_line(index, cells_total, epoch, epochs, epochs_before + epoch, epochs_total)
            ctx.log(f"{bar} ({cell['variant']} seed {cell['seed']}, {seconds:.1f} s/epoch)")

        try:
            values = run_detection_cell(
                params, workdir, data_dir=data_dir, on_epoch=on_epoch, resume=cell.id in ctx.resume
            )
        except Exception as exc:
            return {cell.id: Outcome(failed=reason(exc))}
        rows = []
        for name, v in values.items():
            if v is None or (isinstance(v, float) and (math.isnan(v) or v < 0)):
                rows.append(ctx.row(cell, name, None, error="no value: the stratum has no ground truth here"))
            else:
                rows.append(ctx.row(cell, name, float(v)))
        return {cell.id: Outcome(rows=rows)}

    return execute


def summary(df, section: dict[str, Any]) -> dict[str, Any]:
    """The study's tables from detection rows (one run or several): ``describe``, ``diffs``, ``verdicts``.

    Rows of different machines are never pooled: the caller passes the rows of one run.
    """
    import pandas as pd

    from benchmarks import stats
    from benchmarks.detection import parse_detection

    sec = parse_detection(section)
    ok = df[(df["kind"] == KIND) & df["error"].isna()][["variant", "seed", "metric", "value"]]
    ok = ok.rename(columns={"variant": "arm"})
    desc = stats.describe(ok)
    diffs = stats.paired_differences(ok, reference=sec.reference)
    diffs = stats.holm(diffs, family=sec.holm_family, alpha=sec.alpha)
    hib = {k: bool(m.higher_is_better) for k, m in _metrics.METRICS.items() if m.higher_is_better is not None}
    claims = [c.model_dump() for c in sec.claims]
    ver = (
        stats.verdicts(diffs, claims, sec.rope, higher_is_better=hib, alpha=sec.alpha)
        if claims
        else pd.DataFrame()
    )
    return {"describe": desc, "diffs": diffs, "verdicts": ver, "reference": sec.reference, "rope": sec.rope}


def run_blocks(rdf, section: dict[str, Any], title: str) -> list[str]:
    """Markdown blocks of one run's detection rows, every machine named.

    Rows of one device: one summary (:func:`summary`). Rows of several devices (a cluster sweep
    over nodes with different GPUs): one summary of the device-independent metrics (accuracy,
    counts) over every node, then per device a table of the device-bound metrics (times, memory:
    :func:`benchmarks.metrics.device_bound`) of that device's rows only; they are never pooled.
    """
    import pandas as pd

    from benchmarks import stats

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
    from benchmarks import stats

    return stats.interval_text(r["ci_low"], r["ci_high"], 4)


def _fixed(value: float, metric: str) -> str:
    return f"{value:.{_metrics.get(metric).precision}f}"


def summary_markdown(s: dict[str, Any], title: str) -> str:
    """Markdown: arms x metrics (mean +- sd (n)), paired differences against the reference, verdicts."""
    from benchmarks import stats

    desc, diffs, ver = s["describe"], s["diffs"], s["verdicts"]
    mets = [m for m in SUMMARY_METRICS if m in set(desc["metric"])]
    arms = list(dict.fromkeys(desc["arm"]))
    lines = [f"**{title}**", "", "| arm | " + " | ".join(_metrics.get(m).label for m in mets) + " |",
             "| --- | " + " | ".join("---:" for _ in mets) + " |"]  # fmt: skip
    for a in arms:
        lines.append(f"| {a} | " + " | ".join(stats.mean_sd_cells(desc, a, mets, _fixed)) + " |")
    acc = [m for m in mets if _metrics.get(m).unit == "1"]
    if not diffs.empty:
        lines += ["", f"Paired differences against {s['reference']} (mean [95% t interval], Holm-adjusted p where the "
                  "metric is a stratum):", "", "| arm | " + " | ".join(_metrics.get(m).label for m in acc) + " |",
                  "| --- | " + " | ".join("---:" for _ in acc) + " |"]  # fmt: skip
        for a in [x for x in arms if x != s["reference"]]:
            cells = stats.difference_cells(diffs, a, acc, lambda m: 4)
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    if not ver.empty:
        lines += ["", f"Verdicts (ROPE ±{s['rope']} AP, declared in the suite before any result):", "",
                  "| claim | arm | metric | n | difference [95% CI] | p (Holm) | verdict |",
                  "| --- | --- | --- | ---: | ---: | ---: | --- |"]  # fmt: skip
        for _, r in ver.iterrows():
            p_adj = f"{r['p_adj']:.3g}" if r["p_adj"] == r["p_adj"] else "n/a"
            lines.append(f"| {r['claim']} | {r['arm']} | {r['metric']} | {r['n']} | {r['mean_diff']:+.4f} "
                         f"{_ci(r)} | {p_adj} | **{r['verdict']}** |")  # fmt: skip
    return "\n".join(lines)


register_metrics()  # readers of detection rows find the study's metrics in the registry
