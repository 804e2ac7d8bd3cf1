"""The runner: executes groups of cells into a run, resuming interrupted runs on the same machine.

Every study plugs in the same way (its record in :mod:`benchmarks.core.registry`): it turns its
suite section into :class:`Group` s of typed cells (:mod:`benchmarks.core.cells`) and an
``execute(cells, ctx) -> {cell id: Outcome}`` function. Cells of one group run together (the
complexity sweep times them interleaved); a training study has one cell per group. A group may be
``exclusive`` (a measurement of time: nothing else runs on the machine meanwhile) and may name the
cells it ``needs`` (finished before it starts). The runner owns the bookkeeping:

- opens the run under a lock of the results folder: the latest local run of this suite on this
  machine with the same configuration hash is resumed (joined, when another ``run`` is executing
  it) when it is not complete (or, with ``retry_failed``, even when it is), otherwise a new run
  starts (:mod:`benchmarks.core.store`);
- marks cells that started and never finished as failed (:meth:`Run.reap`); an interrupted cell
  is retried automatically while it has had fewer than ``MAX_INTERRUPTED`` attempts, other failed
  cells only with ``retry_failed``;
- claims each cell atomically before it executes (:meth:`Run.claim`: a cell another process or
  worker holds is left to it), records ``finished`` (with the rows, atomically), ``failed`` or
  ``skipped`` (with the reason) after it; an exception in ``execute`` fails every cell of its
  group with the exception's first line and the run goes on;
- with ``jobs > 1``, executes the groups in that many worker processes of a
  ``concurrent.futures.ProcessPoolExecutor`` (spawn), each pinned to the cells' thread count;
  exclusive groups run in this process while no worker is busy, and a ready one holds back the
  groups planned after it (:func:`next_groups` decides);
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
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from benchmarks.core.cells import Cell
from benchmarks.core.metrics import device_bound
from benchmarks.core.store import (
    MAX_INTERRUPTED,
    Run,
    config_hash,
    file_lock,
    list_runs,
    machine,
    make_row,
    pending,
    runs_root,
)
from benchmarks.core.suites import identity

__all__ = [
    "Outcome",
    "Group",
    "Context",
    "run_groups",
    "execute_group",
    "next_groups",
    "open_run",
    "MAX_INTERRUPTED",
]
POOL_THREADS_ENV = "TSSA_BENCH_POOL_THREADS"  # set in every worker of a pool: the threads a cell gets


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
    exclusive: bool = False  # a measurement of time: runs alone on the machine
    needs: tuple[str, ...] = ()  # cell ids that must have finished before this group starts
    threads: int = 1  # torch threads one of its cells uses (a pool runs cores // threads workers)


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

    def progress(self, cell: Cell, text: str) -> None:
        """Where ``cell`` is (``epoch 3/16``): shown by the run's progress display, one file per cell."""
        if self.run is None:
            return
        path = self.run.path / "progress" / cell.hash
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{cell.hash}.{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

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
    suite = identity(suite)
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
    return pending(status.get(cell.id), retry_failed)


def plan_status(run: Run | None, groups: list[Group], retry_failed: bool = False) -> list[tuple[Cell, str]]:
    """(cell, state) for every planned cell: ``todo`` or its recorded event (for ``--dry-run``)."""
    status = run.status() if run is not None else {}
    out = []
    for g in groups:
        for c in g.cells:
            st = status.get(c.id)
            out.append((c, "todo" if _todo(c, status, retry_failed) else st.event))
    return out


def _timing_columns(
    rows: list[dict[str, Any]], load: tuple[float, float], active: int
) -> list[dict[str, Any]]:
    """Rows of time, memory or throughput carry the machine's 1-minute load average at the cell's start
    and end and the number of the run's workers busy when it started (1: it ran alone)."""
    out = []
    for r in rows:
        if r.get("error") is None and device_bound(r["metric"]):
            r = {
                **r,
                "load_start": round(load[0], 2),
                "load_end": round(load[1], 2),
                "workers_active": active,
            }
        out.append(r)
    return out


def execute_group(
    run: Run,
    group: Group,
    cells: list[Cell],
    ctx: Context,
    extra: dict[str, Any] | None = None,
    *,
    retry_failed: bool = False,
    claim: bool = True,
    active: int = 1,
) -> list[str]:
    """Execute ``cells`` of ``group`` into ``run``: claim each (a cell another worker holds or ended
    is left out; ``claim=False`` starts them unconditionally, for a requeued cluster task that owns
    them), then ``finished`` with the rows (each updated with ``extra`` columns and, for timing rows,
    the load columns of :func:`_timing_columns`), ``failed`` or ``skipped``; an exception in the
    group's ``execute`` fails every one of its cells with the exception's first line. Returns the
    ids of the cells it executed."""
    log = ctx.log
    attempts: dict[str, int] = {}
    for c in cells:
        a = run.claim(c.id, retry_failed) if claim else run.start_cell(c.id)
        if a is not None:
            attempts[c.id] = a
    cells = [c for c in cells if c.id in attempts]
    if not cells:
        return []
    load0 = os.getloadavg()[0]
    try:
        outcomes = group.execute(cells, ctx)
    except Exception as exc:  # a failing group is recorded, never a crash of the run
        why = reason(exc)
        log(f"  group {group.label or cells[0].id}: {why}")
        log("".join(traceback.format_exception_only(type(exc), exc)).strip())
        outcomes = {c.id: Outcome(failed=why) for c in cells}
    load = (load0, os.getloadavg()[0])
    for c in cells:
        out = outcomes.get(c.id) or Outcome(failed="the executor returned no outcome for this cell")
        if out.rows is not None:
            rows = _timing_columns([{**r, **(extra or {})} for r in out.rows], load, active)
            run.finish_cell(c.id, attempts[c.id], rows)
        elif out.skipped is not None:
            run.fail_cell(c.id, attempts[c.id], out.skipped, event="skipped")
            log(f"  {c.id}: skipped: {out.skipped}")
        else:
            run.fail_cell(c.id, attempts[c.id], out.failed or "failed")
            log(f"  {c.id}: failed: {out.failed}")
    return [c.id for c in cells]


# ------------------------------------------------------------------------------------------ scheduling
WAIT = "wait"


def blocked(group: Group, status, planned: set[str]) -> str | None:
    """Why ``group`` cannot start: None (its needs have finished), :data:`WAIT` (a need is still
    pending or running), or the reason its cells fail (a need that failed, was skipped or is not in
    the plan)."""
    for need in group.needs:
        st = status.get(need)
        if st is not None and st.event == "finished":
            continue
        if st is None and need not in planned:
            return f"needs cell {need}, which is not in this run's plan"
        if st is None or st.event == "started" or pending(st):
            return WAIT
        return f"needs cell {need}, which {st.event}" + (f": {st.reason}" if st.reason else "")
    return None


def next_groups(waiting: list[int], groups: list[Group], status, planned: set[str], running: list[int],
                jobs: int) -> tuple[list[int], int | None, dict[int, str]]:  # fmt: skip
    """What to start now, in plan order: ``(to the pool, to run alone here, {group: why it fails})``.

    ``waiting``: indices of groups not yet started; ``running``: indices executing in the pool. A
    group whose needs failed fails; one whose needs are pending waits. Non-exclusive groups fill
    the pool up to ``jobs``; an exclusive group starts only when nothing runs (and then alone), so
    a measurement of time never overlaps another cell. An exclusive group that is ready holds back
    every group planned after it while the pool drains: a study's timing cells run once its own
    training cells are done, not after every later study's (whose cells would otherwise keep the
    pool busy), so each study ends, and its wall time is its own, before the next one starts.

    >>> g = [Group([], None, exclusive=True), Group([], None), Group([], None), Group([], None, needs=("x",))]
    >>> next_groups([0, 1, 2, 3], g, {}, {"x"}, [], jobs=2)
    ([], 0, {})
    >>> next_groups([1, 2, 3], g, {}, {"x"}, [], jobs=2)
    ([1, 2], None, {})
    >>> next_groups([0, 1, 2], g, {}, {"x"}, [3], jobs=2)  # 0 is ready: 1 and 2 wait behind it
    ([], None, {})
    >>> next_groups([3], g, {}, set(), [], jobs=2)
    ([], None, {3: "needs cell x, which is not in this run's plan"})
    """
    pool, fails = [], {}
    busy = len(running)
    for i in waiting:
        why = blocked(groups[i], status, planned)
        if why == WAIT:
            continue
        if why is not None:
            fails[i] = why
            continue
        if groups[i].exclusive:
            if busy == 0 and not pool:
                return pool, i, fails
            break  # the pool drains for it; nothing planned after it starts meanwhile
        if busy + len(pool) < jobs:
            pool.append(i)
    return pool, None, fails


# ------------------------------------------------------------------------------------------- workers
_PLANS: dict[tuple[str, str], list[Group]] = {}


def _worker_init(threads: int, parent: int, modules: tuple[str, ...]) -> None:
    """A pool worker: its threads, Ctrl-C left to the parent, and it ends when the parent is gone."""
    os.environ[POOL_THREADS_ENV] = str(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # Linux: the kernel kills this worker when the parent dies (kill -9 included)
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watchdog() -> None:  # elsewhere (and as a second guard): notice the parent's end within 0.5 s
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    import torch

    torch.set_num_threads(threads)
    from benchmarks.core import registry

    registry.load(modules)


def _work(run_path: str, suite_name: str, suite: dict[str, Any], planner, index: int, ids: list[str],
          retry_failed: bool, active: int) -> list[str]:  # fmt: skip
    """One group, executed in a pool worker: plan again (once per worker), check the group is the one
    the parent planned, claim and execute its cells; returns the ids it executed."""
    key = (suite_name, config_hash(suite))
    if key not in _PLANS:
        _PLANS[key] = planner(suite_name, suite)
    groups = _PLANS[key]
    if index >= len(groups) or not set(ids) <= {c.id for c in groups[index].cells}:
        raise RuntimeError(f"group {index} of suite {suite_name!r} is not the group the runner planned")
    g = groups[index]
    run = Run(run_path)
    logfile = run.path / "logs" / f"worker-{os.getpid()}.log"
    logfile.parent.mkdir(exist_ok=True)

    def log(*args, **kwargs) -> None:
        with open(logfile, "a", encoding="utf-8") as fh:
            print(*args, **kwargs, file=fh)

    ctx = Context(suite_name, suite, run, log)
    cells = [c for c in g.cells if c.id in set(ids)]
    done = execute_group(run, g, cells, ctx, retry_failed=retry_failed, active=active)
    gc.collect()
    return done


def usable_cores() -> int:
    """Cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where it is missing)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def auto_jobs(groups: list[Group], peak_mib: float | None = None, available_mib: float | None = None) -> int:
    """``--jobs auto``: usable cores // the cells' threads (at least 1), and no more workers than the
    available memory holds at the largest peak measured for these cells before (``peak_mib``)."""
    threads = max([g.threads for g in groups if not g.exclusive] or [1])
    n = max(1, usable_cores() // max(1, threads))
    if peak_mib and available_mib:
        n = max(1, min(n, int(available_mib // peak_mib)))
    return n


def available_mib() -> float | None:
    """``MemAvailable`` of ``/proc/meminfo`` in MiB (None where it cannot be read)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# ------------------------------------------------------------------------------------------- the run
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
    jobs: int = 1,
    planner: Callable[[str, dict[str, Any]], list[Group]] | None = None,
) -> Run:
    """Execute every pending cell of ``groups`` into the suite's run; returns the run.

    ``jobs > 1`` needs ``planner`` (picklable, e.g. :class:`benchmarks.core.registry.Planner`): the
    workers plan the suite again, where the groups' functions live."""
    if jobs > 1 and planner is None:
        raise ValueError(
            "jobs > 1 needs a picklable planner (benchmarks.core.registry.Planner) for the workers"
        )
    with file_lock(runs_root(results_dir, True) / suite_name / ".lock"):  # two `run`s join one run
        run, resumed = open_run(suite_name, suite, results_dir, retry_failed, device)
        reaped = run.reap()
    for c in reaped:
        log(f"  {c}: marked failed (started and never finished)")
    status = run.status()
    todo = [i for i, g in enumerate(groups) if any(_todo(c, status, retry_failed) for c in g.cells)]
    total = sum(len(g.cells) for g in groups)
    left = sum(_todo(c, status, retry_failed) for g in groups for c in g.cells)
    where = f"{jobs} workers" if jobs > 1 else "this process"
    log(f"run {run.id} ({'resumed' if resumed else 'new'}): {left} of {total} cells to execute in {where}")
    t0 = time.perf_counter()
    try:
        if jobs > 1:
            _run_pool(run, suite_name, suite, groups, todo, retry_failed, log, jobs, planner)
        else:
            _run_here(run, suite_name, suite, groups, todo, retry_failed, log, progress, total)
    except KeyboardInterrupt:
        for c in run.reap(reason="interrupted: stopped by Ctrl-C"):
            log(f"  {c}: recorded as interrupted (Ctrl-C); the next run retries it")
        run.mark("running")
        raise
    final = run.status()
    ended = all(
        final.get(c.id) is not None and final[c.id].event != "started" for g in groups for c in g.cells
    )
    run.mark("complete" if ended else "running")
    log(f"run {run.id}: {run.summary()} ({time.perf_counter() - t0:.0f} s)")
    return run


def _gone_elsewhere(st) -> bool:
    """A cell held by a worker of another process that has died (this process's own are never)."""
    from benchmarks.core.store import worker_gone

    return st.pid != os.getpid() and worker_gone(st)


def _fail_blocked(run: Run, group: Group, why: str, retry_failed: bool, log) -> None:
    for c in group.cells:
        a = run.claim(c.id, retry_failed)
        if a is not None:
            run.fail_cell(c.id, a, why)
            log(f"  {c.id}: failed: {why}")


def _run_here(run, suite_name, suite, groups, todo, retry_failed, log, progress, total) -> None:
    """One group at a time in this process, in plan order (a group waits for needs another process holds)."""
    ctx = Context(suite_name, suite, run, log)
    planned = {c.id for g in groups for c in g.cells}
    for i in todo:
        g = groups[i]
        while (why := blocked(g, run.status(), planned)) == WAIT:
            time.sleep(1.0)  # a need is executing in another process sharing the run
            run.reap(gone=_gone_elsewhere)
        if why is not None:
            _fail_blocked(run, g, why, retry_failed, log)
            continue
        status = run.status()
        cells = [c for c in g.cells if _todo(c, status, retry_failed)]
        if not cells:
            continue
        execute_group(run, g, cells, ctx, retry_failed=retry_failed)
        if progress is not None:
            st = run.status()
            done = sum(
                st.get(c.id) is not None and st[c.id].event != "started" for h in groups for c in h.cells
            )
            progress(done, total, cells[-1].id)
        gc.collect()


def _run_pool(run, suite_name, suite, groups, todo, retry_failed, log, jobs, planner) -> None:
    """The groups in ``jobs`` worker processes; exclusive ones here, alone (see :func:`next_groups`)."""
    from tqdm import tqdm

    from benchmarks.core import registry

    # the workers' threads: exclusive groups run here, alone, with their own
    threads = max([g.threads for g in groups if not g.exclusive] or [1])
    cells = [c for g in groups for c in g.cells]
    planned = {c.id for c in cells}
    waiting = list(todo)
    running: dict[Any, int] = {}  # future -> group index
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))  # inherited by the workers
    bar = tqdm(total=len(cells), unit="cell", dynamic_ncols=True, desc=f"{jobs} workers")
    ctx = Context(suite_name, suite, run, lambda *a, **k: bar.write(" ".join(map(str, a))))

    def make_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                                   initargs=(threads, os.getpid(), registry.modules()))  # fmt: skip

    def refresh(here: int | None = None) -> None:
        st = run.status()
        bar.n = sum(st.get(c.id) is not None and st[c.id].event != "started" for c in cells)
        active = []
        for i in [*running.values(), *([here] if here is not None else [])]:
            for c in groups[i].cells:
                if st.get(c.id) is not None and st[c.id].event == "started":
                    p = run.path / "progress" / c.hash
                    active.append(f"{groups[i].label or c.id.split('@')[0]}: "
                                  + (p.read_text(encoding="utf-8") if p.is_file() else "started"))  # fmt: skip
        bar.set_postfix_str("; ".join(active)[:240], refresh=False)
        bar.refresh()

    def report(i: int) -> None:
        st = run.status()
        for c in groups[i].cells:
            s = st.get(c.id)
            if s is not None and s.event in ("failed", "skipped"):
                ctx.log(f"  {c.id}: {s.event}: {s.reason}")

    pool = make_pool()
    interrupted = False
    try:
        while waiting or running:
            status = run.status()
            to_pool, here, fails = next_groups(waiting, groups, status, planned, list(running.values()), jobs)
            for i, why in fails.items():
                waiting.remove(i)
                _fail_blocked(run, groups[i], why, retry_failed, ctx.log)
            busy = len(running) + len(to_pool)  # workers busy once this round's groups start
            for i in to_pool:
                waiting.remove(i)
                ids = [c.id for c in groups[i].cells if _todo(c, status, retry_failed)]
                fut = pool.submit(
                    _work, str(run.path), suite_name, suite, planner, i, ids, retry_failed, busy
                )
                running[fut] = i
            if here is not None:  # a measurement of time: alone on the machine, in this process
                waiting.remove(here)
                refresh(here)
                todo_here = [c for c in groups[here].cells if _todo(c, status, retry_failed)]
                execute_group(run, groups[here], todo_here, ctx, retry_failed=retry_failed)
                report(here)
                refresh()
                continue
            if not running:
                if waiting:  # needs held by another process that shares the run (reaped if it died)
                    time.sleep(1.0)
                    run.reap(gone=_gone_elsewhere)
                continue
            done, _ = wait(list(running), timeout=2.0, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                i = running.pop(fut)
                try:
                    fut.result()
                except BrokenProcessPool:
                    broken = True
                    waiting.insert(0, i)
                    continue
                except Exception as exc:  # the worker could not execute the group at all
                    _fail_blocked(run, groups[i], reason(exc), retry_failed, ctx.log)
                report(i)
            if broken:  # a worker was killed: every worker of that pool is gone; start a new pool
                waiting[:0] = list(running.values())
                running.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                why = ("interrupted: a worker process of the pool died (killed by the out-of-memory killer "
                       "or a signal); its cells run again once")  # fmt: skip
                for c in run.reap(reason=why):
                    ctx.log(f"  {c}: {why}")
                pool = make_pool()
            refresh()
    except KeyboardInterrupt:
        interrupted = True
        children = multiprocessing.active_children()
        for p in children:
            p.kill()
        for p in children:  # reaped, so that their cells count as ended workers
            p.join(timeout=10)
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        bar.close()
