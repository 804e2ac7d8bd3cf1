"""The runner: executes groups of cells into a run, resuming interrupted runs on the same machine.

Every study plugs in the same way (its record in :mod:`benchmarks.core.registry`): it turns its
suite section into :class:`Group` s of typed cells (:mod:`benchmarks.core.cells`) and an ``execute(cells, ctx) -> {cell id: Outcome}`` function. Cells of
one group run together (the complexity sweep times them interleaved); a training study has one
cell per group. The runner owns the bookkeeping:

- opens the run: the latest local run of this suite on this machine with the same configuration
  hash is resumed when it is not complete (or, with ``retry_failed``, even when it is), otherwise a
  new run starts (:mod:`benchmarks.core.store`);
- marks cells that started and never finished as failed (:meth:`Run.reap`); an interrupted cell
  is retried automatically while it has had fewer than ``MAX_INTERRUPTED`` attempts, other failed
  cells only with ``retry_failed``;
- records ``started`` before a group executes and ``finished`` (with the rows, atomically),
  ``failed`` or ``skipped`` (with the reason) after it; an exception in ``execute`` fails every
  cell of its group with the exception's first line and the run goes on;
- marks the run complete when every cell has ended.

>>> import tempfile
>>> import benchmarks.studies  # the registered studies are the row kinds the store accepts
>>> from benchmarks.core.cells import Cell
>>> cells = [Cell.make("complexity", {"variant": "floor", "tokens": n}) for n in (1, 2)]
>>> def execute(cs, ctx):
...     return {c.id: Outcome(rows=[ctx.row(c, "params", float(c["tokens"]))]) for c in cs}
>>> run = run_groups("demo", {"name": "demo"}, [Group(cells, execute)], tempfile.mkdtemp(), log=lambda *a: None)
>>> run.record["status"], len(run.rows())
('complete', 2)
"""

from __future__ import annotations

import gc
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.core.cells import Cell
from benchmarks.core.store import Run, config_hash, list_runs, machine, make_row, runs_root

MAX_INTERRUPTED = 2  # an interrupted cell gets this many attempts before it stays failed


@dataclass
class Outcome:
    """What happened to one cell: ``rows`` (finished), or a ``failed`` / ``skipped`` reason."""

    rows: list[dict[str, Any]] | None = None
    failed: str | None = None
    skipped: str | None = None


@dataclass
class Group:
    """Cells that execute together, and the function that executes them."""

    cells: list[Cell]
    execute: Callable[[list[Cell], Context], dict[str, Outcome]]
    label: str = ""


@dataclass
class Context:
    """What an executor may use: the suite, the run, a row builder and the run's rows so far."""

    suite_name: str
    suite: dict[str, Any]
    run: Run | None
    log: Callable[..., None] = print
    cache: dict[str, Any] = field(default_factory=dict)
    # cells that continue from their own last checkpoint (executed again by a requeued cluster job)
    resume: frozenset[str] = frozenset()

    def row(self, cell: Cell, metric: str, value: float | None, error: str | None = None, **extra) -> dict:
        """A validated row of ``cell`` (unit from the metric registry)."""
        args = cell.row_args()
        clash = set(extra) & set(args)
        for k in clash:  # an executor may refine a column (e.g. the tokens a model's attention saw)
            args[k] = extra.pop(k)
        return make_row(
            self.suite_name, cell.kind, cell.id, metric=metric, value=value, error=error, **args, **extra
        )

    def history(self) -> list[dict[str, Any]]:
        """Rows of this run's finished cells (what predictions are made from, so that a resumed run
        decides as an uninterrupted one would)."""
        return self.run.rows() if self.run is not None else []


def reason(exc: BaseException) -> str:
    """One line for a failed cell: out of memory, time-out, or the exception's type and message."""
    import torch

    text = str(exc).strip()
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in text.lower():
        text = f"out of memory: {text}"
    elif not text.startswith("timeout"):
        text = f"{type(exc).__name__}: {text}"
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def open_run(
    suite_name: str, suite: dict[str, Any], results_dir, retry_failed: bool = False, device: str = "cpu"
) -> tuple[Run, bool]:
    """The run to write into: (run, resumed). Only this checkout's runs on this machine resume."""
    chash = config_hash(suite)
    mine = [
        r
        for r in list_runs(results_dir, suite_name, scope="local")
        if r.record["config_hash"] == chash and r.record["machine"]["id"] == machine()["id"]
    ]
    if mine:
        last = mine[-1]
        if last.record["status"] != "complete" or retry_failed:
            last.mark("running")
            return last, True
    return Run.create(runs_root(results_dir, True) / suite_name, suite_name, suite, device), False


def _todo(cell: Cell, status, retry_failed: bool) -> bool:
    st = status.get(cell.id)
    if st is None:
        return True
    if st.event in ("finished", "skipped"):
        return False
    if st.event == "failed":
        interrupted = (st.reason or "").startswith("interrupted")
        return retry_failed or (interrupted and st.attempt < MAX_INTERRUPTED)
    # still "started" after reap(): a live worker (another process, a cluster job) has it
    return st.event != "started"


def plan_status(run: Run | None, groups: list[Group], retry_failed: bool = False) -> list[tuple[Cell, str]]:
    """(cell, state) for every planned cell: ``todo`` or its recorded event (for ``--dry-run``)."""
    status = run.status() if run is not None else {}
    out = []
    for g in groups:
        for c in g.cells:
            st = status.get(c.id)
            out.append((c, "todo" if _todo(c, status, retry_failed) else st.event))
    return out


def execute_group(
    run: Run, group: Group, cells: list[Cell], ctx: Context, extra: dict[str, Any] | None = None
) -> None:
    """Execute ``cells`` of ``group`` into ``run``: ``started``, then ``finished`` with the rows
    (each updated with ``extra`` columns), ``failed`` or ``skipped``; an exception in the group's
    ``execute`` fails every one of its cells with the exception's first line."""
    log = ctx.log
    attempts = {c.id: run.start_cell(c.id) for c in cells}
    try:
        outcomes = group.execute(cells, ctx)
    except Exception as exc:  # a failing group is recorded, never a crash of the run
        why = reason(exc)
        log(f"  group {group.label or cells[0].id}: {why}")
        log("".join(traceback.format_exception_only(type(exc), exc)).strip())
        outcomes = {c.id: Outcome(failed=why) for c in cells}
    for c in cells:
        out = outcomes.get(c.id) or Outcome(failed="the executor returned no outcome for this cell")
        if out.rows is not None:
            run.finish_cell(c.id, attempts[c.id], [{**r, **(extra or {})} for r in out.rows])
        elif out.skipped is not None:
            run.fail_cell(c.id, attempts[c.id], out.skipped, event="skipped")
            log(f"  {c.id}: skipped: {out.skipped}")
        else:
            run.fail_cell(c.id, attempts[c.id], out.failed or "failed")
            log(f"  {c.id}: failed: {out.failed}")


def run_groups(
    suite_name: str,
    suite: dict[str, Any],
    groups: list[Group],
    results_dir,
    *,
    retry_failed: bool = False,
    device: str = "cpu",
    log: Callable[..., None] = print,
    progress: Callable[[int, int, str], None] | None = None,
) -> Run:
    """Execute every pending cell of ``groups`` into the suite's run; returns the run."""
    run, resumed = open_run(suite_name, suite, results_dir, retry_failed, device)
    reaped = run.reap()
    for c in reaped:
        log(f"  {c}: marked failed (started and never finished)")
    status = run.status()
    todo_groups = [[c for c in g.cells if _todo(c, status, retry_failed)] for g in groups]
    total = sum(len(g.cells) for g in groups)
    pending = sum(map(len, todo_groups))
    log(f"run {run.id} ({'resumed' if resumed else 'new'}): {pending} of {total} cells to execute")
    ctx = Context(suite_name, suite, run, log)
    done = total - pending
    t0 = time.perf_counter()
    for g, cells in zip(groups, todo_groups):
        if not cells:
            continue
        execute_group(run, g, cells, ctx)
        done += len(cells)
        if progress is not None:
            progress(done, total, cells[-1].id)
        gc.collect()
    final = run.status()
    ended = all(
        final.get(c.id) is not None and final[c.id].event != "started" for g in groups for c in g.cells
    )
    run.mark("complete" if ended else "running")
    log(f"run {run.id}: {run.summary()} ({time.perf_counter() - t0:.0f} s)")
    return run
