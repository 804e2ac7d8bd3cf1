"""Scale-out: a suite's groups as one submitit array job, every worker appending to the same run.

The ``submitit`` executor (suite section ``executor:``, :class:`benchmarks.core.suites.ExecutorSection`,
or ``python -m benchmarks run --executor submitit``) opens the run exactly as the local executor
does (:func:`benchmarks.core.runner.open_run`; a resumed sweep skips every cell some worker finished),
then submits one array job through ``executor.map_array``: one task per group of cells with work
left, at most ``array_parallelism`` at once, one task per node (``nodes=1, tasks_per_node=1``; a
multi-GPU cell starts its engine's own DDP inside that task). Each task (:class:`SweepWorker`)
plans the suite again, checks that its group still has the cell ids it was given, and executes
it through :func:`benchmarks.core.runner.execute_group` into the shared run folder:

- every event it writes names its job (``slurm:<array job>_<task>`` or ``local:<id>``,
  :data:`benchmarks.core.store.JOB_ENV`), and every row names the node that measured it
  (``machine``, ``machine_name``, ``device_name``), so rows of different nodes are never pooled;
- rows and the ``finished`` event are one ``O_APPEND`` write under ``flock`` (the store's
  guarantee), so many workers on many hosts append to one ``log.jsonl`` safely (the folder must be
  on a file system every node sees, with working ``flock``: NFSv4, Lustre, GPFS, BeeGFS);
- on pre-emption or at the time limit submitit calls :meth:`SweepWorker.checkpoint` and requeues
  the task; the requeued task finds its own ``started`` event, records that attempt as
  ``failed: requeued ...`` and executes the cell again with the cell in :attr:`Context.resume`,
  so a training cell continues from its own ``last.pt`` (saved every epoch): at most the epoch in
  progress is lost;
- a cell whose worker died without a requeue stays ``started`` until the cluster says its job
  ended (:func:`job_gone`); then the next ``run`` of the sweep (or the submitting process, with
  ``--wait``) records it as failed (``interrupted``), never lost, and submits it again once; that
  task, too, continues from the cell's own checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.core import registry
from benchmarks.core.registry import Planner
from benchmarks.core.runner import Context, Group, _todo, execute_group, open_run, usable_cores
from benchmarks.core.store import JOB_ENV, CellStatus, Run, file_lock, machine, runs_root, worker_gone
from benchmarks.core.suites import ExecutorSection, executor_problem, identity

REQUEUED = "requeued: pre-empted or at its time limit; executed again from its own last checkpoint"


class ScaleOutError(RuntimeError):
    """The sweep cannot be submitted; the message is one line naming the fix."""


def split_executor(suite: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(suite without its executor section and jobs, the section with defaults and ``jobs``)``: where
    and how many at once cells run is not part of a run's identity (its configuration hash), so any
    executor and any number of workers resume the same run."""
    cells = identity(suite)
    return cells, {**(suite.get("executor") or ExecutorSection().model_dump()), "jobs": suite.get("jobs")}


def _device_name(device: str) -> str:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"{torch.cuda.get_device_name(0)}" + (f" (x{n} visible)" if n > 1 else "")
    return machine()["host_cpu"]


def plan_ended(run: Run, groups: list[Group]) -> bool:
    """Whether every cell of ``groups`` has ended in ``run`` (finished, failed or skipped)."""
    st = run.status()
    return all(st.get(c.id) is not None and st[c.id].event != "started" for g in groups for c in g.cells)


class SweepWorker:
    """One array task: executes its groups of the suite into the shared run (picklable; requeues).

    ``planner(suite_name, suite) -> [Group]`` must give the plan the submitter saw (it is called
    again in the task, where the groups' functions live); ``task = {"groups": [i, ...], "cells":
    [[cell id, ...], ...]}`` names the groups by index with the cell ids the submitter planned.
    """

    def __init__(
        self,
        suite_name: str,
        suite: dict[str, Any],
        planner: Callable[[str, dict[str, Any]], list[Group]],
        run_path: str,
        retry_failed: bool = False,
    ) -> None:
        self.suite_name, self.suite, self.planner = suite_name, suite, planner
        self.run_path, self.retry_failed = str(run_path), retry_failed
        self.modules = registry.modules()  # the task registers the same studies (row kinds, metrics)

    def __call__(self, task: dict[str, Any]) -> dict[str, int]:
        import submitit

        registry.load(self.modules)
        env = submitit.JobEnvironment()
        me = f"{env.cluster}:{env.job_id}"
        os.environ[JOB_ENV] = me
        run = Run(self.run_path)
        groups = self.planner(self.suite_name, self.suite)
        extra = {
            "machine": machine()["id"],
            "machine_name": machine()["name"],
            "device_name": _device_name(self.suite.get("device", "cpu")),
        }
        workers = run.path / "workers"
        workers.mkdir(exist_ok=True)
        (workers / f"{me.replace(':', '-')}.json").write_text(
            json.dumps({"job": me, "host": socket.gethostname(), **extra}, indent=1) + "\n", encoding="utf-8"
        )
        ctx = Context(self.suite_name, self.suite, run, log=lambda *a, **k: print(*a, **k, flush=True))
        for i, ids in zip(task["groups"], task["cells"]):
            if i >= len(groups) or [c.id for c in groups[i].cells] != ids:
                raise RuntimeError(
                    f"group {i} of suite {self.suite_name!r} is not the group that was submitted (the code or "
                    "the suite changed since); run the sweep again to submit the current plan"
                )
            cells, resume = self._pending(run, groups[i], me)
            if cells:
                ctx.resume = frozenset(resume)
                ctx.log(f"{me} on {socket.gethostname()}: {groups[i].label or ids[0]} ({len(cells)} cells"
                        + (f", {len(resume)} resumed" if resume else "") + ")")  # fmt: skip
                execute_group(run, groups[i], cells, ctx, extra, claim=False)
        if plan_ended(run, groups):
            run.mark("complete")
        return run.summary()

    def _pending(self, run: Run, group: Group, me: str) -> tuple[list, set[str]]:
        """The cells of ``group`` this task executes, and those it resumes after its own requeue."""
        status = run.status()
        cells, resume = [], set()
        for c in group.cells:
            st: CellStatus | None = status.get(c.id)
            if st is not None and st.job == me:  # this task's own earlier life
                if st.event == "started":  # pre-empted or timed out in the middle of this cell
                    run.fail_cell(c.id, st.attempt, REQUEUED)
                elif not (st.event == "failed" and (st.reason or "").startswith("requeued")):
                    continue  # this task already ended the cell
                cells.append(c)
                resume.add(c.id)
            elif st is not None and st.event == "started":
                print(f"  {c.id}: executing under {st.job or st.host} (left to it)", flush=True)
            elif _todo(c, status, self.retry_failed):
                cells.append(c)
                if st is not None and (st.reason or "").startswith(("interrupted", "requeued")):
                    resume.add(c.id)  # cut short before (its node died): continue from its own checkpoint
        return cells, resume

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit calls this on pre-emption or at the time limit: requeue the same task. Its state
        is in the run (events) and in each cell's artefact folder (``last.pt``), nothing else."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def check_cluster(cfg: dict[str, Any]) -> None:
    """ScaleOutError (one line) when the section's cluster cannot be reached from here."""
    if cfg["cluster"] == "slurm" and shutil.which("sbatch") is None:
        raise ScaleOutError(
            "executor submitit with cluster slurm needs SLURM's sbatch on this machine's PATH; run on the "
            "cluster's login node, or use --executor local"
        )


def make_executor(cfg: dict[str, Any], folder: str | os.PathLike, name: str):
    """A submitit executor for an ``executor:`` section: SLURM (``cluster: slurm``) or local
    subprocesses (``cluster: local``), one task per node, the section's resources."""
    import submitit

    check_cluster(cfg)
    ex = submitit.AutoExecutor(folder=folder, cluster=cfg["cluster"])
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": cfg["timeout_min"],
        "nodes": 1,
        "tasks_per_node": 1,
        "cpus_per_task": cfg["cpus_per_task"],
        "gpus_per_node": cfg["gpus_per_node"],
        "mem_gb": cfg["mem_gb"],
    }
    if cfg["cluster"] == "slurm":
        params.update(
            slurm_partition=cfg["partition"],
            slurm_account=cfg["account"],
            slurm_qos=cfg["qos"],
            slurm_constraint=cfg["constraint"],
            slurm_array_parallelism=cfg["array_parallelism"],
            slurm_max_num_timeout=cfg["max_num_timeout"],
            slurm_signal_delay_s=cfg["signal_delay_s"],
        )
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def tasks_of(run: Run, groups: list[Group], retry_failed: bool) -> list[dict[str, Any]]:
    """One array task per group that has a cell left to execute (a cell a live worker holds is left)."""
    status = run.status()
    return [
        {"groups": [i], "cells": [[c.id for c in g.cells]]}
        for i, g in enumerate(groups)
        if any(_todo(c, status, retry_failed) for c in g.cells)
    ]


def cap_tasks(tasks: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """At most ``n`` tasks, the groups dealt round-robin (each task executes its groups in turn).

    >>> cap_tasks([{"groups": [i], "cells": [[str(i)]]} for i in range(5)], 2)[0]["groups"]
    [0, 2, 4]
    """
    if len(tasks) <= n:
        return tasks
    out = [{"groups": [], "cells": []} for _ in range(max(1, n))]
    for k, t in enumerate(tasks):
        out[k % len(out)]["groups"] += t["groups"]
        out[k % len(out)]["cells"] += t["cells"]
    return out


def submit(
    suite_name: str,
    suite: dict[str, Any],
    groups: list[Group],
    planner: Callable[[str, dict[str, Any]], list[Group]],
    cfg: dict[str, Any],
    results_dir,
    *,
    retry_failed: bool = False,
    device: str = "cpu",
    wait: bool = False,
    log: Callable[..., None] = print,
    jobs: int | None = None,
) -> tuple[Run, list]:
    """Submit the suite's pending groups as one array job into the suite's run; returns (run, jobs).

    With ``wait``, waits for every job, records the cells its workers left ``started`` as failed
    (they are gone) and marks the run complete when every cell has ended.
    """
    check_cluster(cfg)  # before the run is opened: nothing is written when the cluster is not there
    with file_lock(runs_root(results_dir, True) / suite_name / ".lock"):
        run, resumed = open_run(suite_name, suite, results_dir, retry_failed, device)
    for c in run.reap():
        log(f"  {c}: marked failed (its worker ended without finishing it)")
    total = sum(len(g.cells) for g in groups)
    tasks = tasks_of(run, groups, retry_failed)
    if cfg["cluster"] == "local":  # submitit's local cluster starts every task at once: cap them here
        tasks = cap_tasks(tasks, jobs or usable_cores())
    held = [st for st in run.status().values() if st.event == "started"]
    log(f"run {run.id} ({'resumed' if resumed else 'new'}): {len(tasks)} array tasks over {total} cells"
        + (f"; {len(held)} cells held by live jobs ({', '.join(sorted({s.job or s.host for s in held}))})"
           if held else ""))  # fmt: skip
    if not tasks:
        if plan_ended(run, groups):
            run.mark("complete")
        return run, []
    folder = Path(cfg["folder"]) if cfg.get("folder") else run.path / "submitit"
    ex = make_executor(cfg, folder, f"tssa-{suite_name}")
    worker = SweepWorker(suite_name, suite, planner, str(run.path), retry_failed)
    jobs = ex.map_array(worker, tasks)
    with open(run.path / "jobs.jsonl", "a", encoding="utf-8") as fh:
        for j, t in zip(jobs, tasks):
            fh.write(json.dumps({"job": f"{cfg['cluster']}:{j.job_id}", "groups": t["groups"]}) + "\n")
    ids = sorted({str(j.job_id).split("_")[0] for j in jobs})
    log(f"submitted {len(jobs)} array tasks (job {', '.join(ids)}); logs in {folder}")
    if not wait:
        return run, jobs
    mine = {f"{cfg['cluster']}:{j.job_id}" for j in jobs}
    for j in jobs:
        try:
            j.result()
        except Exception as exc:  # a task that failed as a whole: its cells are reaped below
            log(
                f"  task {j.job_id}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}"
            )
    for c in run.reap(lambda st: st.job in mine or worker_gone(st)):
        log(f"  {c}: marked failed (its worker ended without finishing it)")
    run.mark("complete" if plan_ended(run, groups) else "running")
    log(f"run {run.id}: {run.summary()}")
    return run, jobs


# ------------------------------------------------------------------------------------- command line
def executor_from_args(suite: dict[str, Any], args) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the suite without its executor section, the executor with the command line's overrides)."""
    cells, cfg = split_executor(suite)
    cfg = dict(cfg)
    if getattr(args, "executor", None):
        cfg["kind"] = args.executor
    for key in ("partition", "account"):
        if getattr(args, key, None):
            cfg[key] = getattr(args, key)
    problem = executor_problem(cells, cfg)
    if problem:
        raise ScaleOutError(problem)
    return cells, cfg


def describe_submission(cfg: dict[str, Any], run: Run | None, groups: list[Group], retry_failed: bool,
                        suite_name: str) -> str:  # fmt: skip
    """What ``run --executor submitit`` would submit (for ``--dry-run``)."""
    n = len(tasks_of(run, groups, retry_failed)) if run is not None else len(groups)
    where = (
        f"SLURM partition {cfg['partition'] or '(the default)'}"
        if cfg["cluster"] == "slurm"
        else "local subprocesses"
    )
    res = [f"{cfg['gpus_per_node']} GPU(s)", f"{cfg['cpus_per_task']} CPUs"]
    if cfg["mem_gb"]:
        res.append(f"{cfg['mem_gb']:g} GB")
    extra = [f"{k} {cfg[k]}" for k in ("account", "qos", "constraint") if cfg.get(k)]
    return (
        f"executor submitit: one array job 'tssa-{suite_name}' of {n} tasks (one per group with work left) on "
        f"{where}{', ' + ', '.join(extra) if extra else ''}; each task 1 node x 1 task with "
        f"{', '.join(res)}, {cfg['timeout_min']} min per job (requeued at the limit up to "
        f"{cfg['max_num_timeout']} times, resuming from the cell's last checkpoint); at most "
        f"{cfg['array_parallelism']} tasks at once"
    )


def submit_from_cli(args, groups: list[Group], cfg: dict[str, Any]) -> int:
    """``python -m benchmarks run --executor submitit``: submit, then say how to watch and resume."""
    run, jobs = submit(
        args.suite_name,
        args.suite,
        groups,
        Planner.current(args.part),
        cfg,
        args.results_dir,
        retry_failed=args.retry_failed,
        device=args.suite["device"],
        wait=args.wait,
        jobs=getattr(args, "jobs_n", None),
    )
    if jobs and not args.wait:
        folder = Path(cfg["folder"]) if cfg.get("folder") else run.path / "submitit"
        array = str(jobs[0].job_id).split("_")[0]
        print(
            f"watch: squeue -j {array}   |   python -m benchmarks runs --suite {args.suite_name}   |   "
            f"tail -f {folder}/{array}_*_0_log.out\n"
            f"resume (after the jobs ended, e.g. to retry cells whose node died): the same command again"
        )
    print(f"run {run.id}: {run.summary()} in {run.path}")
    return 0
