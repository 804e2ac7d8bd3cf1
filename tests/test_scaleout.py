"""Scale-out through submitit without a cluster: submitit's local executor runs the real worker code
path (pickled worker, subprocess per array task, its job environment, its pre-emption signal)."""

from __future__ import annotations

import json
import os
import sys
import time

import cloudpickle
import pytest

from benchmarks.core import jobs, scaleout
from benchmarks.core.cells import Cell
from benchmarks.core.runner import Group, Outcome, run_groups
from benchmarks.core.store import Run, load_rows
from benchmarks.core.suites import SuiteError, validate_suite

submitit = pytest.importorskip("submitit")
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's planners travel by value

QUIET = {"log": lambda *a, **k: None}
LOCAL = {"kind": "submitit", "cluster": "local", "timeout_min": 10, "signal_delay_s": 5}
TIMING = {"latency_ms", "tokens_per_s", "achieved_gbps", "peak_mib", "peak_mib_profiler"}


def _executor(**kw):
    return validate_suite({"name": "x", "executor": {**LOCAL, **kw}})["executor"]


def _operator_suite():
    return validate_suite(
        {
            "name": "tiny",
            "seed": 0,
            "timeout_s": 30,
            "complexity": {
                "operator": {
                    "tokens": [16, 32],
                    "dim": 16,
                    "heads": 2,
                    "passes": ["fwd", "fwd+bwd"],
                    "variants": ["sdpa", "tssa:stream"],
                    "rounds": 1,
                    "min_run_time": 0.01,
                    "profile_max_tokens": 0,
                    "fit_min_tokens": 16,
                }
            },
        }
    )


def _plan_operator(suite_name, suite):
    from benchmarks.studies import complexity

    return complexity.plan(suite_name, suite, ("operator",))


def _keyed(rows):
    return {(r["cell"], r["metric"]): r for r in rows}


def test_a_sweep_through_submitit_workers_gives_the_rows_of_the_local_executor(tmp_path):
    suite = _operator_suite()
    groups = _plan_operator("tiny", suite)
    assert len(groups) == 4  # four array tasks, one per (pass, N)
    local = run_groups("tiny", suite, groups, tmp_path / "a", **QUIET)
    run, jobs = scaleout.submit(
        "tiny", suite, groups, _plan_operator, _executor(), tmp_path / "b", wait=True, jobs=4, **QUIET
    )
    assert len(jobs) == 4 and len({j.job_id for j in jobs}) == 4  # four separate worker processes
    assert run.record["status"] == "complete"
    a, b = _keyed(local.rows()), _keyed(run.rows())
    assert len(a) == len(local.rows()) and len(b) == len(run.rows())  # one row per cell and metric
    assert set(a) == set(b) and len(a) >= 4 * 2 * 5
    for key in a:
        if key[1] not in TIMING:  # counts (FLOPs, MACs, elementwise) are deterministic
            assert a[key]["value"] == b[key]["value"], key
    events = [json.loads(x) for x in run.log_path.read_text().splitlines()]
    jobs_seen = {e["job"] for e in events if e.get("type") == "event"}
    assert len(jobs_seen) == 4 and all(j.startswith("local:") for j in jobs_seen)
    df = load_rows([run])
    assert set(df["machine_name"]) == {Run(local.path).record["machine"]["name"]}


def test_a_resumed_sweep_skips_finished_cells_and_reports_a_dead_workers_cell_failed(tmp_path, monkeypatch):
    from benchmarks.core.runner import Context, execute_group, open_run
    from benchmarks.core.store import JOB_ENV

    suite = validate_suite({"name": "resume"})
    groups = _plan_many("resume", suite)[:4]
    run, _ = open_run("resume", suite, tmp_path)
    ctx = Context("resume", suite, run, **QUIET)
    for g in groups[:2]:  # an earlier worker finished two groups
        execute_group(run, g, g.cells, ctx)
    lost = groups[2].cells[0].id
    monkeypatch.setenv(JOB_ENV, f"local:{2**22 + 11}")  # a worker whose job is gone claimed one cell
    run.start_cell(lost)
    monkeypatch.delenv(JOB_ENV)
    again, jobs = scaleout.submit(
        "resume", suite, groups, _plan_many, _executor(), tmp_path, wait=True, **QUIET
    )
    assert again.id == run.id and len(jobs) == 2  # only the two groups with work left
    assert again.record["status"] == "complete"
    assert len(again.rows()) == 4 * 25 * 4 and len(_keyed(again.rows())) == 4 * 25
    ev = [json.loads(x) for x in again.log_path.read_text().splitlines() if '"event"' in x]
    story = [(e["event"], e["attempt"], (e["reason"] or "")[:11]) for e in ev if e["cell"] == lost]
    assert story == [
        ("started", 1, ""),
        ("failed", 1, "interrupted"),
        ("started", 2, ""),
        ("finished", 2, ""),
    ]
    assert {r["cell"] for r in again.rows() if r["resumed"]} == {lost}  # continues from its own checkpoint
    finished_by = {e["cell"]: e["job"] for e in ev if e["event"] == "finished"}
    assert {finished_by[c.id] for g in groups[:2] for c in g.cells} == {None}  # never executed again


# ------------------------------------------------------------------------ pre-emption and requeue
EPOCHS = 6


def _train_execute(cells, ctx):
    """A toy training cell: one 'epoch' per 0.4 s, its state saved after every epoch; resumes from
    that state only when the runner says so (a requeued job)."""
    (cell,) = cells
    work = ctx.run.artifacts(cell.hash)
    state = work / "last.json"
    start = json.loads(state.read_text())["epoch"] if cell.id in ctx.resume and state.exists() else 0
    total = json.loads(state.read_text())["sum"] if start else 0
    for epoch in range(start, EPOCHS):
        with open(work / "epochs.log", "a") as fh:
            fh.write(f"{epoch}\n")
        time.sleep(0.4)
        total += (epoch + 1) * cell["tokens"]
        state.write_text(json.dumps({"epoch": epoch + 1, "sum": total}))
    return {cell.id: Outcome(rows=[ctx.row(cell, "flops_analytic", float(total))])}


def _plan_train(suite_name, suite):
    cells = [Cell.make("complexity", {"level": "toy", "variant": "floor", "tokens": n}) for n in (3, 5)]
    return [Group([c], _train_execute, label=f"toy {c['tokens']}") for c in cells]


def test_a_preempted_job_requeues_and_finishes_with_the_rows_of_an_uninterrupted_one(tmp_path):
    suite = validate_suite({"name": "toy"})
    groups = _plan_train("toy", suite)
    plain = run_groups("toy", suite, groups, tmp_path / "a", **QUIET)
    run, jobs = scaleout.submit("toy", suite, groups, _plan_train, _executor(), tmp_path / "b", **QUIET)
    epochs_log = run.path / "artifacts" / groups[0].cells[0].hash / "epochs.log"
    deadline = time.time() + 60
    while not (epochs_log.exists() and len(epochs_log.read_text().split()) >= 3):
        assert time.time() < deadline, "the job never reached its third epoch"
        time.sleep(0.05)
    # SLURM pre-empts by signalling the task's processes; submitit's LocalJob._interrupt() signals the
    # local controller instead (which does not forward it), so the signal goes to the task itself
    started = [json.loads(x) for x in run.log_path.read_text().splitlines() if '"started"' in x]
    pid = next(e["pid"] for e in started if e["cell"] == groups[0].cells[0].id)
    os.kill(pid, submitit.JobEnvironment._usr_sig())
    for j in jobs:
        j.result()
    run = Run(run.path)
    assert _keyed(run.rows()).keys() == _keyed(plain.rows()).keys()
    assert {k: r["value"] for k, r in _keyed(run.rows()).items()} == {
        k: r["value"] for k, r in _keyed(plain.rows()).items()
    }
    ev = [json.loads(x) for x in run.log_path.read_text().splitlines() if '"event"' in x]
    cell = groups[0].cells[0].id
    mine = [(e["event"], e["attempt"], (e["reason"] or "")[:8]) for e in ev if e["cell"] == cell]
    assert mine == [("started", 1, ""), ("failed", 1, "requeued"), ("started", 2, ""), ("finished", 2, "")]
    assert len({e["pid"] for e in ev if e["cell"] == cell}) == 2  # a new process continued it
    epochs = [int(x) for x in epochs_log.read_text().split()]
    assert sorted(set(epochs)) == list(range(EPOCHS))
    assert len(epochs) <= EPOCHS + 1  # at most the epoch in progress is repeated
    assert run.record["status"] == "complete"


# ----------------------------------------------------------------------------- concurrent writers
def _append_execute(cells, ctx):
    return {c.id: Outcome(rows=[ctx.row(c, "flops_analytic", float(c["tokens"]), pad="x" * 3000,
                                        resumed=c.id in ctx.resume)
                                for _ in range(4)]) for c in cells}  # fmt: skip  # > PIPE_BUF per write


def _plan_many(suite_name, suite):
    return [
        Group([Cell.make("complexity", {"level": "toy", "variant": "floor", "tokens": 100 * w + i})
               for i in range(25)], _append_execute, label=f"w{w}")
        for w in range(6)
    ]  # fmt: skip


def test_many_workers_appending_at_once_lose_and_duplicate_nothing(tmp_path):
    suite = validate_suite({"name": "many"})
    groups = _plan_many("many", suite)
    run, jobs = scaleout.submit(
        "many", suite, groups, _plan_many, _executor(), tmp_path, wait=True, jobs=6, **QUIET
    )
    assert len(jobs) == 6
    rows = run.rows()
    assert len(rows) == 6 * 25 * 4
    assert {r["cell"] for r in rows} == {c.id for g in groups for c in g.cells}
    lines = run.log_path.read_text().splitlines()
    assert all(json.loads(x) for x in lines)  # no torn or interleaved line
    fin = [json.loads(x) for x in lines if '"finished"' in x]
    assert len(fin) == 150 and len({e["cell"] for e in fin}) == 150


# --------------------------------------------------------------------------- liveness and schema
def test_a_cell_held_by_a_live_job_is_left_and_one_of_an_ended_job_is_reaped(tmp_path, monkeypatch):
    from benchmarks.core.store import JOB_ENV

    run = Run.create(tmp_path, "s", {"name": "s"})
    monkeypatch.setenv(JOB_ENV, f"local:{os.getppid()}")  # a live controller on this host
    run.start_cell("live")
    monkeypatch.setenv(JOB_ENV, f"local:{2**22 + 7}")  # a controller that is gone
    run.start_cell("dead")
    monkeypatch.delenv(JOB_ENV)
    assert run.reap() == ["dead"]
    assert run.status()["live"].event == "started"
    assert jobs.job_gone(f"local:{os.getpid()}", "another-host") is False  # cannot tell: alive


def test_executor_section_is_validated_and_left_out_of_the_run_identity():
    from benchmarks.core.store import config_hash
    from benchmarks.core.suites import load_suite

    plain = validate_suite({"name": "x", "seed": 3})
    assert "executor" not in plain  # a suite without the section keeps its configuration hash
    cluster = validate_suite({"name": "x", "seed": 3, "executor": {"kind": "submitit", "partition": "gpu"}})
    cells_suite, cfg = scaleout.split_executor(cluster)
    assert cfg["partition"] == "gpu" and cfg["timeout_min"] == 60
    assert config_hash(cells_suite) == config_hash(plain)  # the same run whichever executor runs it
    assert scaleout.split_executor(plain)[1]["kind"] == "local"
    with pytest.raises(SuiteError, match="executor.kind"):
        validate_suite({"name": "x", "executor": {"kind": "kubernetes"}})
    det = load_suite("smoke")["detection"]
    det["train"]["device"] = "0,1,2,3"
    with pytest.raises(SuiteError, match="gpus_per_node: 4"):
        validate_suite({"name": "x", "executor": {"kind": "submitit", "gpus_per_node": 1}, "detection": det})
    ok = validate_suite({"name": "x", "executor": {"kind": "submitit", "gpus_per_node": 4}, "detection": det})
    assert ok["executor"]["gpus_per_node"] == 4


def test_submitting_to_slurm_without_slurm_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    cfg = validate_suite({"name": "x", "executor": {"kind": "submitit"}})["executor"]
    with pytest.raises(scaleout.ScaleOutError, match="sbatch"):
        scaleout.make_executor(cfg, tmp_path, "x")


# -------------------------------------------------------------------------------------------- merging
def _node_rows(suite, machine_id, device, seed, latency):
    node = {"machine": machine_id, "machine_name": f"node {machine_id}", "device_name": device}
    from benchmarks.core.store import make_row

    out = []
    for arm, ap in (("yolo11n", 0.30), ("yolo11n-tssa", 0.32)):
        cell = f"detection/variant={arm}/seed={seed}"
        accuracy = (
            "map50_95",
            "ap_small",
            "ap_medium",
            "ap_large",
            "ap_occ_none",
            "ap_occ_partial",
            "ap_occ_heavy",
        )
        rows = [make_row(suite, "detection", cell, arm, metric=m, value=ap + seed / 100, seed=seed, **node)
                for m in accuracy]  # fmt: skip
        rows.append(
            make_row(suite, "detection", cell, arm, metric="latency_ms", value=latency, seed=seed, **node)
        )
        out.append((cell, rows))
    return out


def test_rows_of_several_machines_merge_with_each_named_and_timings_never_pooled(tmp_path):
    import benchmarks.studies  # noqa: F401  (registers the detection metrics)
    from benchmarks.core.suites import load_suite
    from benchmarks.studies.detection.summary import run_blocks

    det = load_suite("smoke")["detection"]
    run = Run.create(tmp_path, "merge", {"name": "merge", "detection": det})
    for cell, rows in _node_rows("merge", "aaaa", "GPU-A", 0, 10.0) + _node_rows(
        "merge", "bbbb", "GPU-B", 1, 30.0
    ):
        run.finish_cell(cell, run.start_cell(cell), rows)
    df = load_rows([run])
    assert set(df["machine"]) == {"aaaa", "bbbb"} and set(df["prov.device_name"]) == {"GPU-A", "GPU-B"}
    blocks = run_blocks(df, det, "Detection study, run r")
    assert len(blocks) == 3  # accuracy over both nodes, then the timings of each device on its own
    assert "node aaaa [aaaa], GPU-A" in blocks[0] and "node bbbb [bbbb], GPU-B" in blocks[0]
    assert "latency" not in blocks[0]  # no timing in the pooled table
    assert "0.3050 ± " in blocks[0] and "(2)" in blocks[0]  # yolo11n mAP over the two seeds of two nodes
    assert "GPU-A" in blocks[1] and "10.00" in blocks[1] and "30.00" not in blocks[1]
    assert "GPU-B" in blocks[2] and "30.00" in blocks[2] and "20.00" not in "".join(blocks)  # never the mean


def test_complexity_rows_of_two_nodes_derive_separately(tmp_path):
    from benchmarks.core.store import make_row
    from benchmarks.studies.complexity import derive

    run = Run.create(tmp_path, "cx", {"name": "cx"})
    for mid, scale in (("aaaa", 1.0), ("bbbb", 3.0)):
        for n in (64, 128, 256):
            for v in ("sdpa", "tssa:stream"):
                cell = f"complexity/{v}/{n}/{mid}"
                extra = {"machine": mid, "machine_name": f"node {mid}", "device_name": f"dev {mid}"}
                common = dict(tokens=n, pass_="fwd", level="operator", device="cuda", dtype="float32", batch=1,
                              dim=16, heads=2, threads=1, samples=3, **extra)  # fmt: skip
                t = scale * (n**2 if v == "sdpa" else 40 * n) / 1e3
                run.finish_cell(cell, run.start_cell(cell), [make_row("cx", "complexity", cell, v, metric="latency_ms",
                                                                      value=t, **common)])  # fmt: skip
    d = derive(load_rows([run]), fit_min_tokens=64)
    assert sorted(c["config"]["machine"] for c in d["configs"]) == ["aaaa", "bbbb"]


def test_a_slurm_jobs_liveness_comes_from_sacct_through_submitit(tmp_path, monkeypatch):
    sacct = tmp_path / "sacct"  # stands in for SLURM's accounting command, in its --parsable2 format
    sacct.write_text("#!/bin/sh\nprintf 'JobID|State|NodeList\\n77_1|COMPLETED|n1\\n77_2|RUNNING|n2\\n"
                     "77_3|NODE_FAIL|n3\\n'\n")  # fmt: skip
    sacct.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert jobs.job_gone("slurm:77_1") is True
    assert jobs.job_gone("slurm:77_2") is False
    assert jobs.job_gone("slurm:77_3") is True
    assert jobs.job_gone("slurm:77_9") is False  # sacct does not know it (yet): counted alive


TINY_YAML = """name: scaletiny
complexity:
  operator: {tokens: [16], dim: 16, heads: 2, passes: [fwd], variants: [sdpa, floor], rounds: 1,
             min_run_time: 0.01, profile_max_tokens: 0, fit_min_tokens: 16}
executor: {kind: submitit, cluster: CLUSTER, timeout_min: 10}
"""


def _cli(*args, env=None):
    import subprocess

    return subprocess.run([sys.executable, "-m", "benchmarks", "run", *args], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip


def test_the_command_line_submits_through_submitit_and_closes_the_run(tmp_path):
    suite = tmp_path / "scaletiny.yaml"
    suite.write_text(TINY_YAML.replace("CLUSTER", "local"))
    dry = _cli("--suite", str(suite), "--results-dir", str(tmp_path / "r"), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "executor submitit: one array job 'tssa-scaletiny' of 1 tasks" in dry.stdout
    p = _cli("--suite", str(suite), "--results-dir", str(tmp_path / "r"), "--wait")
    assert p.returncode == 0, p.stderr
    assert "submitted 1 array tasks" in p.stdout
    (run,) = [Run(x.parent) for x in (tmp_path / "r" / "local" / "scaletiny").glob("*/run.json")]
    assert run.record["status"] == "complete" and "executor" not in run.record["config"]
    assert {r["variant"] for r in run.rows()} == {"sdpa", "floor"}
    assert {r["machine"] for r in run.rows()} == {run.record["machine"]["id"]}  # each row names its node


def test_the_command_line_without_slurm_is_one_line_and_writes_nothing(tmp_path):
    suite = tmp_path / "scaletiny.yaml"
    suite.write_text(TINY_YAML.replace("CLUSTER", "slurm"))
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # no sbatch on it
    p = _cli("--suite", str(suite), "--results-dir", str(tmp_path / "r"), env=env)
    assert p.returncode == 2
    err = [x for x in p.stderr.splitlines() if "error:" in x]
    assert len(err) == 1 and "sbatch" in err[0] and "--executor local" in err[0]
    assert not (tmp_path / "r").exists()  # no run, no rows


def test_the_local_cluster_runs_at_most_jobs_tasks_at_once(tmp_path):
    """submitit's local cluster starts every array task at once: the sweep deals its groups to at most
    ``jobs`` tasks (each executing its groups in turn), and every cell still runs once."""
    suite = validate_suite({"name": "many"})
    groups = _plan_many("many", suite)
    run, jobs = scaleout.submit(
        "many", suite, groups, _plan_many, _executor(), tmp_path, wait=True, jobs=2, **QUIET
    )
    assert len(jobs) == 2
    assert len(run.rows()) == 6 * 25 * 4 and run.record["status"] == "complete"
