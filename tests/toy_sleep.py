"""A toy study for the parallel-runner tests: cells that sleep and record when they ran.

Section ``sleepy: {cells: 6, seconds: 0.3, exclusive_every: 0, fail: [], needs_missing: false}``.
Every cell writes ``t_start`` and ``t_end`` (wall-clock seconds) and ``pid`` rows; a cell whose
index is in ``fail`` raises; with ``exclusive_every: k`` every k-th cell is exclusive; cell ``i``
of an ``after`` list needs cell 0. Registered on import (worker processes import it again).
"""

from __future__ import annotations

import os
import time

from benchmarks.core.cells import Cell
from benchmarks.core.metrics import Metric
from benchmarks.core.registry import Study, register
from benchmarks.core.runner import Group, Outcome
from benchmarks.core.schema import Section, validate


class SleepySection(Section):
    cells: int = 6
    seconds: float = 0.3
    exclusive_every: int = 0
    fail: list[int] = []
    after: list[int] = []  # these cells need cell 0
    needs_missing: bool = False  # the last cell needs a cell that is not in the plan


def _execute(cells, ctx):
    sec = ctx.suite["sleepy"]
    out = {}
    for c in cells:
        t0 = time.time()
        time.sleep(sec["seconds"])
        if c["index"] in sec["fail"]:
            raise RuntimeError(f"cell {c['index']} fails on purpose")
        out[c.id] = Outcome(rows=[ctx.row(c, "t_start", t0), ctx.row(c, "t_end", time.time()),
                                  ctx.row(c, "pid", float(os.getpid()))])  # fmt: skip
    return out


def plan(suite_name, suite, parts):
    sec = suite["sleepy"]
    cells = [Cell.make("sleepy", {"variant": "toy", "index": i, "seed": 0}, {"s": sec["seconds"]})
             for i in range(sec["cells"])]  # fmt: skip
    groups = []
    for i, c in enumerate(cells):
        needs = (cells[0].id,) if i in sec["after"] else ()
        if sec["needs_missing"] and i == len(cells) - 1:
            needs = ("sleepy/variant=ghost@00000000",)
        k = sec["exclusive_every"]
        groups.append(
            Group([c], _execute, label=f"toy {i}", exclusive=bool(k) and i % k == k - 1, needs=needs)
        )
    return groups


STUDY = register(
    Study(
        name="sleepy",
        parse=lambda s: validate(SleepySection, s, "sleepy").model_dump(),
        plan=plan,
        metrics=(
            Metric("t_start", "s", None, "start", "start", 3),
            Metric("t_end", "s", None, "end", "end", 3),
            Metric("pid", "count", None, "pid", "pid", 0),
        ),  # fmt: skip
        order=60,
    )
)
