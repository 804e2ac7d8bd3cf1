"""The detection study's cells: suite section -> training cells and latency cells, and their executors.

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

import functools
import math
from typing import Any

from benchmarks.core import impl as _impl
from benchmarks.core.cells import Cell
from benchmarks.core.runner import Context, Group, Outcome, reason
from benchmarks.studies.detection.section import detection_cells, parse_detection, trunk_cells

KIND = "detection"
_IDENTITY = ("scale", "imgsz", "epochs", "batch")


@functools.cache
def _arm_impls(arm: str) -> frozenset[str]:
    """The ``impl`` of each TSSA layer of the arm's model, built from its YAML as the trainer builds it."""
    from tssa.offline import configure_offline

    configure_offline()
    from ultralytics.nn.tasks import DetectionModel

    import tssa.ultralytics as tu
    from benchmarks.core.impl import impls_of
    from benchmarks.studies.detection.section import parse_arm

    variant, scale = parse_arm(arm)
    return impls_of(DetectionModel(tu.model_yaml(variant, scale), nc=80, verbose=False))


def plan(suite_name: str, suite: dict[str, Any], parts: tuple[str, ...] = ()) -> list[Group]:
    """Per (seed, arm) of the suite's detection section, seed-major: a training cell (train, val, COCO
    evaluation, counts, training time and peak memory), then, after every training cell, one
    latency cell per trained model: a measurement of time that runs alone on the machine and reads
    the trained weights of the cell it needs.

    With a ``warm_start``, its trunk cells come first (role ``trunk``: trained and evaluated like any
    cell, their own rows), and every training cell needs its trunk and is fine-tuned from the
    trunk's weights; it names its trunk by the trunk cell's id (part of its identity), never by a
    path. A cell of an arm with TSSA names the core ``auto`` resolves to (``tssa_core``)."""
    section = parse_detection(suite["detection"])
    trunks = trunk_cells(section)
    params = detection_cells(section)
    epochs_total = sum(p["epochs"] for p in trunks + params)
    epochs_before = 0
    groups, timing, by_seed = [], [], {}
    for i, p in enumerate(trunks + params):
        settings = {k: p[k] for k in ("data", "train", "eval", "occlusion_levels")}
        ident = {"variant": p["arm"], "pass": "train", "seed": p["seed"], "image_size": p["imgsz"],
                 "scale": p["scale"], "epochs": p["epochs"], "batch": p["batch"], "device": p["train"]["device"]}  # fmt: skip
        ident.update(_impl.core_param(_arm_impls(p["arm"]), p["train"]["device"]))  # the core TSSA runs on
        trunk = by_seed.get(p.get("trunk_seed"))
        if p.get("role") == "trunk":
            ident["role"] = "trunk"
        elif trunk is not None:
            ident["start"] = "warm"
            settings["warm_start"] = {"trunk": trunk.id}
        cell = Cell.make(KIND, ident, settings)
        where = (i + 1, len(trunks) + len(params), epochs_before, epochs_total)
        label = f"{'trunk ' if p.get('role') == 'trunk' else ''}{p['arm']} seed {p['seed']}"
        threads = p["train"]["threads"] or 1
        run_params = {**p, "latency": None}
        groups.append(Group([cell], _executor(run_params, where, trunk), label=label, threads=threads,
                            exclusive=threads > 1, needs=(trunk.id,) if trunk is not None else ()))  # fmt: skip
        epochs_before += p["epochs"]
        if p.get("role") == "trunk":
            by_seed[p["seed"]] = cell
            continue
        lat = Cell.make(
            KIND, {**ident, "pass": "eval", "level": "latency"}, {"trained": cell.id, "latency": p["latency"]}
        )
        timing.append(Group([lat], _latency_executor(p, cell), label=f"{label} latency", exclusive=True,
                            needs=(cell.id,), threads=1))  # fmt: skip
    return groups + timing


def _latency_executor(params: dict[str, Any], trained: Cell):
    def execute(cells: list[Cell], ctx: Context) -> dict[str, Outcome]:
        from benchmarks.studies.detection.train import measure_latency, trained_weights

        (cell,) = cells
        try:
            values = measure_latency(trained_weights(ctx.run.artifacts(trained.hash)), params)
        except Exception as exc:
            return {cell.id: Outcome(failed=reason(exc))}
        return {cell.id: Outcome(rows=[ctx.row(cell, k, float(v)) for k, v in values.items()])}

    return execute


def progress_line(
    cell: int, cells: int, epoch: int, epochs: int, done: int, total: int, width: int = 24
) -> str:
    """One line of the study's progress bar: training epochs done over all cells, and where in the cell.

    >>> progress_line(2, 9, 4, 16, 20, 144, width=10)
    '[#---------] 14% cell 2/9 epoch 4/16'
    """
    filled = round(width * done / total) if total else width
    return f"[{'#' * filled}{'-' * (width - filled)}] {100 * done / total:.0f}% cell {cell}/{cells} epoch {epoch}/{epochs}"


def _executor(params: dict[str, Any], where: tuple[int, int, int, int], trunk: Cell | None = None):
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
            ctx.progress(cell, f"epoch {epoch}/{epochs}, {seconds:.1f} s/epoch")

        run_params = params
        if trunk is not None:  # the trunk's weights in this run (its cell finished first: the group needs it)
            from benchmarks.studies.detection.train import trained_weights

            w = trained_weights(ctx.run.artifacts(trunk.hash))
            if not w.is_file():
                return {
                    cell.id: Outcome(
                        failed=f"no trunk weights at {w}: the trunk cell {trunk.id} must finish first"
                    )
                }
            run_params = {**params, "train": {**params["train"], "pretrained": str(w)}}
        try:
            values = run_detection_cell(
                run_params, workdir, data_dir=data_dir, on_epoch=on_epoch, resume=cell.id in ctx.resume
            )
        except Exception as exc:
            return {cell.id: Outcome(failed=reason(exc))}
        rows = []
        det = values.pop("deterministic", None)  # the setting the training ran under (Ultralytics sets it)
        extra = {} if det is None else {"deterministic": bool(det)}
        for name, v in values.items():
            if v is None or (isinstance(v, float) and (math.isnan(v) or v < 0)):
                rows.append(
                    ctx.row(cell, name, None, error="no value: the stratum has no ground truth here", **extra)
                )
            else:
                rows.append(ctx.row(cell, name, float(v), **extra))
        return {cell.id: Outcome(rows=rows)}

    return execute
