"""The detection study's cells: suite section -> cells, and the executor of one cell.

Each (arm, seed) of a suite's ``detection:`` section (:mod:`benchmarks.studies.detection.section`)
is one cell of kind ``detection``, executed alone by
:func:`benchmarks.studies.detection.train.run_detection_cell` (Ultralytics' own ``train`` and
``val``, pycocotools on ``predictions.json``). Training artefacts go to the run's
``artifacts/<cell hash>/`` (never published); generated data are made once per run under
``artifacts/data``. A cell that a requeued cluster job executes again (:attr:`Context.resume`)
continues training from its own ``last.pt`` there. Every returned metric becomes a row (unit from the registry); a metric that
has no value (a stratum without ground truth) becomes a row with an ``error`` saying so.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.core.cells import Cell
from benchmarks.core.runner import Context, Group, Outcome, reason
from benchmarks.studies.detection.section import detection_cells, parse_detection

KIND = "detection"
_IDENTITY = ("scale", "imgsz", "epochs", "batch")


def plan(suite_name: str, suite: dict[str, Any], parts: tuple[str, ...] = ()) -> list[Group]:
    """One group (one cell) per (seed, arm) of the suite's detection section, seed-major."""
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
        from benchmarks.studies.detection.train import run_detection_cell

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
