"""The classification study's cells: suite section -> training cells and throughput cells, and their executors.

Each (task, arm, seed) of a suite's ``classification:`` section (:mod:`benchmarks.studies.classification.train`)
is one cell of kind ``classification``, executed alone by
:func:`benchmarks.studies.classification.train.run_classification_cell` (timm's own model, data, optimizer,
scheduler and loss). Every returned metric becomes a row (unit from the registry); the cell's task
is a column of its rows (``task``).

"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.core import impl as _impl
from benchmarks.core.cells import Cell
from benchmarks.core.runner import Context, Group, Outcome, reason

KIND = "classification"


def section_of(suite: dict[str, Any]):
    """The suite's validated classification section (:class:`~benchmarks.studies.classification.train.ClassificationSection`)."""
    from benchmarks.studies.classification.train import parse_classification

    return parse_classification(suite["classification"])


def _arm_impls(task, arm: str) -> frozenset[str]:
    """The ``impl`` of each TSSA layer of the arm's model (built on the meta device as the task builds it)."""
    import torch

    from benchmarks.studies.classification.train import _create_model

    with torch.device("meta"):
        return _impl.impls_of(_create_model(arm, task, num_classes=2))


def plan(suite_name: str, suite: dict[str, Any], parts: tuple[str, ...] = ()) -> list[Group]:
    """One group (one cell) per (task, arm, seed), seed-major within a task (every arm of seed 0 first);
    a cell of an arm with TSSA names the core ``auto`` resolves to (``tssa_core``)."""
    from benchmarks.studies.classification.train import expand_cells

    sec = section_of(suite)
    device = suite.get("device", "cpu")
    flat = expand_cells(sec, device=device, threads=int(suite.get("threads", 1)))
    flat.sort(key=lambda c: (list(sec.tasks).index(c["task"]), sec.seeds.index(c["seed"])))  # stable
    train, timing = [], []
    cores = {
        (t, a): _impl.core_param(_arm_impls(task, a), device)
        for t, task in sec.tasks.items()
        for a in task.arms
    }
    for i, p in enumerate(flat):
        ident = {"variant": p["variant"], "pass": "train", "seed": p["seed"], "image_size": p["data.image_size"],
                 "task": p["task"], "epochs": p["train.epochs"], "batch": p["train.batch_size"], "device": device}  # fmt: skip
        ident.update(cores[p["task"], p["variant"]])  # the core TSSA runs on is part of the cell's identity
        # the training cell's numbers do not depend on how throughput is timed: measure.* is the timing cell's
        cell = Cell.make(
            KIND, ident, {k: v for k, v in p.items() if k != "kind" and not k.startswith("measure.")}
        )
        label = f"{p['task']} {p['variant']} seed {p['seed']}"
        train.append(Group([cell], _executor(p, i + 1, len(flat)), label=label, threads=p["threads"]))
        tput = Cell.make(KIND, {**ident, "pass": "eval", "level": "throughput"},
                         {"trained": cell.id, **{k: v for k, v in p.items() if k.startswith("measure.")}})  # fmt: skip
        timing.append(Group([tput], _throughput_executor(p, cell), label=f"{label} throughput", exclusive=True,
                            needs=(cell.id,), threads=p["threads"]))  # fmt: skip
    return train + timing


def _throughput_executor(params: dict[str, Any], trained: Cell):
    def execute(cells: list[Cell], ctx: Context) -> dict[str, Outcome]:
        from benchmarks.studies.classification.train import measure_throughput

        (cell,) = cells
        try:
            values = measure_throughput(params, ctx.run.artifacts(trained.hash) / "model.pt")
        except Exception as exc:
            return {cell.id: Outcome(failed=reason(exc))}
        return {cell.id: Outcome(rows=[ctx.row(cell, k, v) for k, v in values.items()])}

    return execute


def _executor(params: dict[str, Any], index: int, total: int):
    def execute(cells: list[Cell], ctx: Context) -> dict[str, Outcome]:
        from benchmarks.studies.classification.train import run_classification_cell

        (cell,) = cells
        workdir = ctx.run.artifacts(cell.hash) if ctx.run is not None else None
        ctx.log(f"  cell {index}/{total}: training {cell['variant']} seed {cell['seed']} on {cell['task']} "
                f"({cell['epochs']} epochs)")  # fmt: skip
        try:
            values = run_classification_cell(params, workdir, throughput=False)
        except Exception as exc:
            return {cell.id: Outcome(failed=reason(exc))}
        ctx.log(f"  {cell['variant']} seed {cell['seed']}: top-1 {values['top1']:.4f}, "
                f"{values['train_time_s']:.1f} s training")  # fmt: skip
        rows = []
        det = {"deterministic": True}  # the cell trains under torch.use_deterministic_algorithms(True)
        for name, v in values.items():
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                rows.append(ctx.row(cell, name, None, error="no finite value", **det))
            else:
                rows.append(ctx.row(cell, name, float(v), **det))
        return {cell.id: Outcome(rows=rows)}

    return execute
