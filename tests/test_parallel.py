"""Cells in parallel on one machine: worker processes, claims in the store, exclusive cells, needs,
faults (kill -9 of the parent, a dead worker, Ctrl-C), shared data built once, --jobs on the CLI.

The toy study of ``tests/toy_sleep.py`` sleeps in every cell and records when and where it ran.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.core.runner import WAIT, Group, blocked, next_groups
from benchmarks.core.store import CellStatus, Run

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
ENTRY = (
    "import sys; sys.path.insert(0, {tests!r}); import toy_sleep; "
    "from benchmarks.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


def _suite(tmp_path: Path, name="toyrun", **section) -> Path:
    body = json.dumps({"cells": 6, "seconds": 0.3, **section})
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nsleepy: {body}\n")
    return path


def _cmd(suite: Path, res: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", ENTRY.format(tests=str(TESTS)), "run", "--suite", str(suite), "--results-dir",
            str(res), *extra]  # fmt: skip


def _runs(res: Path, name="toyrun") -> list[Run]:
    return [Run(p.parent) for p in sorted((res / "local" / name).glob("*/run.json"))]


def _events(run: Run) -> list[dict]:
    if not run.log_path.exists():
        return []
    return [json.loads(x) for x in run.log_path.read_text().splitlines() if x.strip()]


def _intervals(run: Run) -> dict[str, tuple[float, float]]:
    rows = run.rows()
    start = {r["cell"]: r["value"] for r in rows if r["metric"] == "t_start"}
    end = {r["cell"]: r["value"] for r in rows if r["metric"] == "t_end"}
    return {c: (start[c], end[c]) for c in start}


# ------------------------------------------------------------------------------------ the scheduling logic
def _st(event, reason=None, attempt=1):
    return CellStatus("x", event, attempt, reason)


def test_blocked_waits_for_pending_needs_and_fails_on_failed_or_missing_ones():
    g = Group([], None, needs=("a",))
    assert blocked(g, {}, {"a"}) == WAIT
    assert blocked(g, {"a": _st("started")}, {"a"}) == WAIT
    assert blocked(g, {"a": _st("finished")}, {"a"}) is None
    assert blocked(g, {"a": _st("failed", "interrupted: x")}, {"a"}) == WAIT  # it will be retried
    assert (
        blocked(g, {"a": _st("failed", "RuntimeError: boom")}, {"a"})
        == "needs cell a, which failed: RuntimeError: boom"
    )
    assert (
        blocked(g, {"a": _st("skipped", "over budget")}, {"a"}) == "needs cell a, which skipped: over budget"
    )
    assert blocked(g, {}, set()) == "needs cell a, which is not in this run's plan"


def test_next_groups_fills_the_pool_and_runs_exclusive_groups_alone():
    g = [Group([], None), Group([], None), Group([], None, exclusive=True), Group([], None)]
    assert next_groups([0, 1, 2, 3], g, {}, set(), [], jobs=2) == ([0, 1], None, {})
    # one worker busy: the exclusive group is ready, so the pool drains for it and group 3, planned
    # after it, waits (it would otherwise keep the pool busy and push the timing cell to the end)
    assert next_groups([2, 3], g, {}, set(), [1], jobs=2) == ([], None, {})
    assert next_groups([2, 3], g, {}, set(), [], jobs=2) == ([], 2, {})
    assert next_groups([3], g, {}, set(), [], jobs=2) == ([3], None, {})


def test_a_waiting_exclusive_group_holds_back_only_what_is_planned_after_it():
    # 0 and 1: training cells; 2: the timing cell that needs 0; 3: a later study's cell
    g = [Group([], None), Group([], None), Group([], None, exclusive=True, needs=("a",)), Group([], None)]
    pending = {"a": _st("started", "")}
    # 2's training cell is still running: 2 is not ready, so it holds nothing back
    assert next_groups([1, 2, 3], g, pending, {"a"}, [0], jobs=2) == ([1], None, {})
    done = {"a": _st("finished", "")}
    # 2 is ready: 1 (planned before it) still fills the pool, 3 (after it) waits
    assert next_groups([1, 2, 3], g, done, {"a"}, [], jobs=2) == ([1], None, {})
    assert next_groups([2, 3], g, done, {"a"}, [1], jobs=2) == ([], None, {})
    assert next_groups([2, 3], g, done, {"a"}, [], jobs=2) == ([], 2, {})


# ------------------------------------------------------------------------------------------ the CLI
@pytest.mark.parametrize("bad", ["0", "-1", "x", "2.5"])
def test_bad_jobs_values_are_one_line_and_exit_2(tmp_path, bad):
    p = subprocess.run(_cmd(_suite(tmp_path), tmp_path / "r", "--jobs", bad), capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert p.returncode == 2
    last = p.stderr.strip().splitlines()[-1]
    assert "--jobs" in last and ("positive integer" in last)
    assert not (tmp_path / "r").exists()


def test_jobs_above_the_cores_warns_in_one_line(tmp_path):
    n = os.cpu_count() * 4
    p = subprocess.run(_cmd(_suite(tmp_path, cells=2, seconds=0.05), tmp_path / "r", "--jobs", str(n), "--dry-run"),
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert p.returncode == 0, p.stderr
    warn = [x for x in p.stderr.splitlines() if x.startswith("warning: --jobs")]
    assert len(warn) == 1 and "usable cores" in warn[0]
    assert f"{n} worker(s)" in p.stdout


# ------------------------------------------------------------------------------- claims and overlaps
def test_two_runs_at_once_join_one_run_and_never_execute_a_cell_twice(tmp_path):
    suite, res = _suite(tmp_path, cells=8, seconds=0.4), tmp_path / "r"
    procs = [subprocess.Popen(_cmd(suite, res, "--jobs", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    (run,) = _runs(res)  # both joined one run
    started = [e["cell"] for e in _events(run) if e.get("type") == "event" and e["event"] == "started"]
    assert len(started) == 8 and len(set(started)) == 8  # every cell claimed exactly once
    rows = run.rows()
    assert len(rows) == 8 * 3 and len({r["cell"] for r in rows}) == 8
    assert run.record["status"] == "complete"
    pids = {e["pid"] for e in _events(run) if e.get("event") == "started"}
    assert len(pids) >= 2  # cells ran in several worker processes


def test_an_exclusive_cell_never_overlaps_another(tmp_path):
    suite, res = _suite(tmp_path, cells=9, seconds=0.3, exclusive_every=3), tmp_path / "r"
    p = subprocess.run(_cmd(suite, res, "--jobs", "2"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (run,) = _runs(res)
    iv = _intervals(run)
    exclusive = [c for c in iv if "index=2/" in c or "index=5/" in c or "index=8/" in c]
    assert len(exclusive) == 3 and len(iv) == 9
    for e in exclusive:
        for other in iv:
            if other != e:
                (a0, a1), (b0, b1) = iv[e], iv[other]
                assert a1 <= b0 or b1 <= a0, (e, other)  # disjoint in time
    shared = [c for c in iv if c not in exclusive]
    overlaps = sum(
        1 for a in shared for b in shared if a < b and not (iv[a][1] <= iv[b][0] or iv[b][1] <= iv[a][0])
    )
    assert overlaps >= 1  # the others did run two at a time
    workers = [r["workers_active"] for r in run.rows() if r["metric"] == "t_start"]
    assert max(workers) == 2 and min(workers) == 1  # recorded on every timing row


def test_a_cell_whose_need_failed_or_is_missing_fails_with_that_reason(tmp_path):
    suite, res = (
        _suite(tmp_path, cells=4, seconds=0.05, fail=[0], after=[2], needs_missing=True),
        tmp_path / "r",
    )
    for jobs in ("1", "2"):
        p = subprocess.run(
            _cmd(suite, res / jobs, "--jobs", jobs), capture_output=True, text=True, timeout=300
        )
        assert p.returncode == 0, p.stderr[-2000:]
        (run,) = _runs(res / jobs)
        st = {k.split("/")[2]: v for k, v in run.status().items()}
        assert st["index=0"].event == "failed" and "fails on purpose" in st["index=0"].reason
        assert st["index=1"].event == "finished"
        assert st["index=2"].event == "failed" and st["index=2"].reason.startswith(
            "needs cell sleepy/variant=toy/index=0"
        )
        assert "which failed: RuntimeError: cell 0 fails on purpose" in st["index=2"].reason
        assert (
            st["index=3"].reason
            == "needs cell sleepy/variant=ghost@00000000, which is not in this run's plan"
        )


# ------------------------------------------------------------------------------------------- faults
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_kill_9_of_the_parent_leaves_no_writing_orphans_and_resume_loses_and_duplicates_nothing(tmp_path):
    suite, res = _suite(tmp_path, cells=8, seconds=1.5), tmp_path / "r"
    parent = subprocess.Popen(
        _cmd(suite, res, "--jobs", "2"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the workers hold cells
        runs = _runs(res)
        if runs and sum(e.get("event") == "started" for e in _events(runs[0])) >= 3:
            break
        time.sleep(0.2)
    parent.kill()  # kill -9
    parent.wait()
    (run,) = _runs(res)
    workers = {e["pid"] for e in _events(run) if e.get("event") == "started"}
    time.sleep(2.5)
    assert [p for p in workers if _alive(p)] == []  # the workers ended with their parent
    n_lines = len(_events(run))
    time.sleep(2.0)
    assert len(_events(run)) == n_lines  # and nothing writes into the run any more
    p = subprocess.run(_cmd(suite, res, "--jobs", "2"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (run,) = _runs(res)  # resumed, not a new run
    rows = run.rows()
    per_cell = {}
    for r in rows:
        per_cell.setdefault(r["cell"], []).append(r["metric"])
    assert len(per_cell) == 8  # lost 0
    assert all(sorted(m) == ["pid", "t_end", "t_start"] for m in per_cell.values())  # duplicated 0
    assert run.record["status"] == "complete"


def test_ctrl_c_records_the_running_cells_as_interrupted_and_the_next_run_retries_them(tmp_path):
    suite, res = _suite(tmp_path, cells=6, seconds=2.0), tmp_path / "r"
    parent = subprocess.Popen(_cmd(suite, res, "--jobs", "2"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = _runs(res)
        if runs and sum(e.get("event") == "started" for e in _events(runs[0])) >= 2:
            break
        time.sleep(0.2)
    os.killpg(parent.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    _, err = parent.communicate(timeout=120)
    assert parent.returncode == 130, err[-2000:]
    (run,) = _runs(res)
    st = run.status()
    stopped = [s for s in st.values() if s.event == "failed"]
    assert stopped and all(s.reason.startswith("interrupted: stopped by Ctrl-C") for s in stopped)
    assert not [s for s in st.values() if s.event == "started"]
    p = subprocess.run(_cmd(suite, res, "--jobs", "2"), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert {s.event for s in Run(run.path).status().values()} == {"finished"}


# ------------------------------------------------------------------------------------- shared data
_BUILD = (
    "import sys, json; from benchmarks.studies.detection.data.scenes import make_scenes; "
    "p = make_scenes(sys.argv[1], n_train=24, n_val=8, imgsz=64, min_frac=0.06, max_objects=4); print(p)"
)


def test_two_processes_building_the_same_generated_data_set_build_it_once(tmp_path):
    root = tmp_path / "data" / "scenes-x"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD, str(root)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    assert {o[0].strip() for o in outs} == {str(root / "data.yaml")}
    assert len(list((root / "images" / "train").iterdir())) == 24
    assert not [
        p for p in root.parent.iterdir() if p.name.startswith(f".{root.name}.tmp")
    ]  # no half-built copy


def test_jobs_1_and_jobs_2_give_identical_accuracy_rows_on_the_smoke_profile(tmp_path):
    from benchmarks.core.metrics import device_bound
    from benchmarks.core.store import list_runs

    values = {}
    for jobs in ("1", "2"):
        cmd = [sys.executable, "-m", "benchmarks", "run", "--suite", "smoke", "--results-dir", str(tmp_path / jobs),
               "--jobs", jobs]  # fmt: skip
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, p.stderr[-2000:]
        (run,) = list_runs(tmp_path / jobs, "smoke", "local")
        assert run.record["status"] == "complete"
        values[jobs] = {(r["cell"], r["metric"]): r["value"] for r in run.rows()
                        if not device_bound(r["metric"]) and not r["metric"].endswith("_samples")}  # fmt: skip
    assert len(values["1"]) > 100 and values["1"] == values["2"]
