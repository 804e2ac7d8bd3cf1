"""Runs, run records, rows, the metric registry, suite validation and the runner's bookkeeping."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest

from benchmarks.core import metrics
from benchmarks.core.cells import Cell
from benchmarks.core.runner import Group, Outcome, open_run, run_groups
from benchmarks.core.store import (
    Run,
    list_runs,
    load_rows,
    machine,
    make_row,
    provenance,
    publish,
    select_runs,
    validate_row,
)
from benchmarks.core.suites import SuiteError, load_suite, validate_suite

QUIET = {"log": lambda *a, **k: None}


def _row(cell="c1", metric="latency_ms", value=1.5, **kw):
    return make_row("s", "complexity", cell, "sdpa", metric=metric, value=value, tokens=64, pass_="fwd", **kw)


# ------------------------------------------------------------------------------------- rows, registry
def test_every_row_carries_the_registry_unit():
    assert _row()["unit"] == "ms"
    assert _row(metric="flops_torch", value=3.0)["unit"] == "FLOPs"
    with pytest.raises(ValueError, match="is in 'ms'"):
        _row(unit="s")


def test_unknown_metrics_and_the_old_error_pseudo_metric_are_refused():
    for name in ("bogus", "error"):
        with pytest.raises(ValueError, match=f"unknown metric '{name}'"):
            _row(metric=name)


def test_registry_entries_are_complete_and_macs_are_macs_only():
    for m in metrics.METRICS.values():
        assert m.unit and m.label and m.latex and m.precision >= 0, m
    assert all(m.unit == "MACs" for n, m in metrics.METRICS.items() if n.startswith("macs_"))
    assert all(m.unit == "FLOPs" for n, m in metrics.METRICS.items() if n.startswith("flops_"))
    assert metrics.get("elementwise_analytic").unit == "ops"
    with pytest.raises(ValueError, match="already registered"):
        metrics.register("latency_ms", "s", False, "latency")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"kind": "training"}, "kind"),
        ({"pass": "backward"}, "pass"),
        ({"value": float("nan")}, "finite"),
        ({"value": "1.0"}, "finite"),
        ({"tokens": 1.5}, "tokens"),
        ({"cell": ""}, "cell"),
        ({"error": "boom"}, "value null"),
        ({"unit": "s"}, "registry"),
    ],
)
def test_malformed_rows_are_rejected_with_the_key_named(change, match):
    row = {**_row(), **change}
    with pytest.raises(ValueError, match=match):
        validate_row(row)


def test_provenance_names_code_machine_and_settings():
    prov = provenance("cpu")
    for key in (
        "git",
        "dirty",
        "packages",
        "torch",
        "cuda",
        "device",
        "device_name",
        "threads",
        "deterministic",
    ):
        assert key in prov, key
    assert prov["git"] is None or len(prov["git"]) == 40
    assert prov["timestamp"].endswith("+00:00")
    assert len(machine()["id"]) == 12 and machine() == machine()


def test_untracked_files_make_the_tree_dirty(tmp_path, monkeypatch):
    import benchmarks.core.store as st

    calls = []

    def fake_git(*args):
        calls.append(args)
        return "?? new_file.py" if args[0] == "status" else "0" * 40

    monkeypatch.setattr(st, "_git", fake_git)
    assert st.provenance("cpu")["dirty"] is True
    assert ("status", "--porcelain", "--untracked-files=normal") in calls


# ---------------------------------------------------------------------------------------- run files
def test_rows_count_only_once_their_cell_finished(tmp_path):
    run = Run.create(tmp_path, "s", {"name": "s"})
    a = run.start_cell("c1")
    run.finish_cell("c1", a, [_row("c1"), _row("c1", metric="peak_mib", value=2.0)])
    b = run.start_cell("c2")  # never finished: its rows, if any were written, never count
    assert [r["metric"] for r in run.rows()] == ["latency_ms", "peak_mib"]
    assert all(r["run"] == run.id for r in run.rows())
    assert run.status()["c2"].event == "started" and b == 1


def test_a_bad_row_in_a_batch_writes_nothing(tmp_path):
    run = Run.create(tmp_path, "s", {"name": "s"})
    a = run.start_cell("c1")
    bad = {**_row("c1"), "value": None}
    with pytest.raises(ValueError):
        run.finish_cell("c1", a, [_row("c1"), bad])
    assert run.rows() == [] and run.status()["c1"].event == "started"


def test_torn_last_line_is_skipped_and_fenced_off(tmp_path):
    run = Run.create(tmp_path, "s", {"name": "s"})
    run.finish_cell("c1", run.start_cell("c1"), [_row("c1")])
    with open(run.log_path, "a", encoding="utf-8") as fh:
        fh.write('{"type": "row", "cell": "c2", "met')  # a crash in the middle of a line
    with pytest.warns(UserWarning, match="torn"):
        run.finish_cell("c2", run.start_cell("c2"), [_row("c2")])
    with pytest.warns(UserWarning, match="torn"):
        assert sorted(r["cell"] for r in run.rows()) == ["c1", "c2"]


def _append_many(path, worker, n):
    run = Run(path)
    for i in range(n):
        cell = f"w{worker}-{i}"
        run.finish_cell(cell, run.start_cell(cell), [_row(cell, value=float(i)) for _ in range(5)])


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
    run = Run.create(tmp_path, "s", {"name": "s"})
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(run.path, w, 30)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    rows = run.rows()
    assert len(rows) == 4 * 30 * 5
    assert len({r["cell"] for r in rows}) == 120
    assert run.summary() == {"finished": 120}


def test_a_cell_started_and_never_finished_is_reported_failed_not_done(tmp_path):
    run = Run.create(tmp_path, "s", {"name": "s"})
    a = run.start_cell("c1")
    with open(run.log_path, encoding="utf-8") as fh:  # pretend a dead process (pid 2**22 + 1) started it
        lines = [json.loads(x) for x in fh]
    lines[-1]["pid"] = 2**22 + 1
    run.log_path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    assert run.reap() == ["c1"]
    st = run.status()["c1"]
    assert st.event == "failed" and st.reason.startswith("interrupted") and st.attempt == a
    assert run.reap() == []  # reported once


def test_a_cell_claimed_by_a_live_worker_is_left_alone(tmp_path):
    run = Run.create(tmp_path, "s", {"name": "s"})
    run.start_cell("c1")
    lines = [json.loads(x) for x in run.log_path.read_text(encoding="utf-8").splitlines()]
    lines[-1]["pid"] = os.getppid()  # alive, and not this process
    run.log_path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    assert run.reap() == []


# ------------------------------------------------------------------------------------------- runner
def _suite(name="demo", **kw):
    return {"name": name, **kw}


def _cells(n):
    return [Cell.make("complexity", {"variant": "floor", "pass": "fwd", "tokens": 2**i}) for i in range(n)]


def _exec(record):
    def execute(cells, ctx):
        record.extend(c.id for c in cells)
        out = {}
        for c in cells:
            if c["tokens"] == 4:
                out[c.id] = Outcome(failed="RuntimeError: boom")
            elif c["tokens"] == 8:
                out[c.id] = Outcome(skipped="predicted to exceed the budget")
            else:
                out[c.id] = Outcome(rows=[ctx.row(c, "flops_torch", float(c["tokens"]))])
        return out

    return execute


def test_runner_records_every_outcome_and_resumes_only_here(tmp_path):
    seen: list[str] = []
    groups = [Group([c], _exec(seen)) for c in _cells(5)]
    run = run_groups("demo", _suite(), groups, tmp_path, **QUIET)
    assert run.record["status"] == "complete"
    assert run.summary() == {"finished": 3, "failed": 1, "skipped": 1}
    assert len(run.rows()) == 3 and len(seen) == 5
    # the same command again: a new run (the last one completed); nothing is appended to the old one
    run2 = run_groups("demo", _suite(), groups, tmp_path, **QUIET)
    assert run2.id != run.id and len(run.rows()) == 3
    # --retry-failed reopens the latest run and retries only the failed cell
    seen.clear()
    run3 = run_groups("demo", _suite(), groups, tmp_path, retry_failed=True, **QUIET)
    assert run3.id == run2.id and len(seen) == 1 and "tokens=4@" in seen[0]
    # another configuration never resumes this one
    assert open_run("demo", _suite(seed=1), tmp_path)[0].id not in (run.id, run2.id)


def test_an_exception_in_a_group_fails_its_cells_and_the_run_goes_on(tmp_path):
    def boom(cells, ctx):
        raise RuntimeError("kaboom\nsecond line")

    ok = _exec([])
    cells = _cells(2)
    run = run_groups("demo", _suite(), [Group([cells[0]], boom), Group([cells[1]], ok)], tmp_path, **QUIET)
    st = run.status()
    assert st[cells[0].id].event == "failed" and st[cells[0].id].reason == "RuntimeError: kaboom"
    assert st[cells[1].id].event == "finished"


def test_published_runs_are_never_resumed_and_selection_is_per_machine(tmp_path):
    run = run_groups("demo", _suite(), [Group(_cells(1), _exec([]))], tmp_path, **QUIET)
    (run.artifacts("abc") / "last.pt").write_bytes(b"weights")
    target = publish(run, tmp_path)
    assert target == tmp_path / "demo" / run.id
    assert not (target / "artifacts").exists()  # training artefacts are never published
    with pytest.raises(ValueError, match="already published"):
        publish(run, tmp_path)
    # a published run recorded on another machine
    other = tmp_path / "demo" / "20200101T000000Z-other-00000000"
    other.mkdir()
    rec = json.loads((target / "run.json").read_text())
    rec.update(run="20200101T000000Z-other-00000000", machine={**rec["machine"], "id": "other000000"})
    rec["started"] = "2020-01-01T00:00:00+00:00"
    (other / "run.json").write_text(json.dumps(rec))
    (other / "log.jsonl").write_text((target / "log.jsonl").read_text())
    # a fresh clone has no local runs: nothing published is resumed, a new run starts
    fresh = tmp_path / "clone"
    fresh.mkdir()
    for p in (target, other):
        dst = fresh / "demo" / p.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(p, dst)
    new, resumed = open_run("demo", _suite(), fresh)
    assert not resumed and "local" in str(new.path)
    assert {r.id for r in select_runs(tmp_path, "demo")} == {run.id, other.name}
    assert [r.id for r in select_runs(tmp_path, "demo", scope="published", runs=[other.name])] == [other.name]
    with pytest.raises(ValueError, match="unknown run"):
        select_runs(tmp_path, "demo", runs=["nope"])
    df = load_rows(select_runs(tmp_path, "demo"))
    assert set(df["machine"]) == {machine()["id"], "other000000"} and "prov.git" in df.columns
    assert len(list_runs(tmp_path, "demo")) == 2  # the published copy of a local run is listed once


def test_incomplete_runs_cannot_be_published(tmp_path):
    run = Run.create(tmp_path / "local" / "demo", "demo", {"name": "demo"})
    with pytest.raises(ValueError, match="not complete"):
        publish(run, tmp_path)


# ------------------------------------------------------------------------------------------- suites
def test_embedded_suites_load_with_defaults():
    cpu = load_suite("cpu")
    assert cpu["device"] == "cpu" and cpu["threads"] == 1
    op = cpu["complexity"]["operator"]
    assert op["tokens"] == sorted(op["tokens"]) and "layer:tssa" in op["variants"]
    assert cpu["complexity"]["model"]["passes"] == ["fwd", "fwd+bwd"]
    assert load_suite("gpu")["device"] == "cuda"


@pytest.mark.parametrize(
    "data, match",
    [
        ({"device": "cpu"}, r"\.name: Field required"),
        ({"name": "a/b"}, "not a path-safe name"),
        ({"name": "x", "bogus": 1}, r"x\.yaml\.bogus: unknown key; allowed keys: \['classification'"),
        ({"name": "x", "threads": "2"}, r"\.threads: Input should be a valid integer, got '2'"),
        ({"name": "x", "threads": 0}, r"\.threads: Input should be greater than or equal to 1"),
        ({"name": "x", "device": "tpu"}, r"\.device: got 'tpu'; allowed: 'cpu' or 'cuda'"),
        ({"name": "x", "classification": {}}, r"x\.yaml: classification\.tasks: Field required"),
        ({"name": "x", "classification": {"tasks": {"d": {"arms": ["tost_tiny_12_p8_224"], "bogus": 1}}}},
         r"x\.yaml: classification\.tasks\.d\.bogus: unknown key"),
        ({"name": "x", "complexity": {"operator": {"tokens": [1], "variants": ["tssa:bogus"]}}},
         r"operator\.variants: unknown operator variant 'tssa:bogus'; allowed: tssa:<impl>"),
        ({"name": "x", "complexity": {"operator": {"tokens": [1], "variants": ["sdpa:x"]}}},
         "unknown operator variant 'sdpa:x'"),
        ({"name": "x", "complexity": {"operator": {"tokens": [4, 4]}}}, "duplicate entries"),
        ({"name": "x", "complexity": {"operator": {"tokens": [4], "dim": 30, "heads": 4}}}, "divisible"),
        ({"name": "x", "complexity": {"operator": {"tokens": [4], "passes": ["bwd"]}}}, r"passes\[0\]: got 'bwd'"),
        ({"name": "x", "complexity": {"model": {"yolo": {"variants": ["yolo12n"], "image_sizes": [64]}}}},
         "unknown YOLO variant 'yolo12n'"),
        ({"name": "x", "complexity": {"model": {"timm": {"variants": ["tost_bogus"], "image_sizes": [64]}}}},
         "unknown timm model 'tost_bogus'"),
    ],
)  # fmt: skip
def test_bad_suites_raise_one_clear_line(data, match):
    with pytest.raises(SuiteError, match=match) as exc:
        validate_suite(data, source="x.yaml")
    assert "\n" not in str(exc.value)


def test_suite_files_unknown_names_bad_yaml_and_embedded_names(tmp_path):
    with pytest.raises(SuiteError, match="embedded suites are"):
        load_suite("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SuiteError, match="not valid YAML"):
        load_suite(str(bad))
    clash = tmp_path / "mine.yaml"
    clash.write_text("name: cpu\n")
    with pytest.raises(SuiteError, match="'cpu' is the name of an embedded suite"):
        load_suite(str(clash))


@pytest.mark.parametrize(
    "yaml_text, match",
    [("name: x\nbogus: 1\n", "unknown key"), ("name: x\ncomplexity: {operator: {tokens: [8], variants: [nope]}}\n",
                                              "unknown operator variant 'nope'")],
)  # fmt: skip
def test_cli_refuses_bad_suites_with_one_line_and_writes_nothing(tmp_path, yaml_text, match):
    path = tmp_path / "s.yaml"
    path.write_text(yaml_text)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "run", "--suite", str(path), "--results-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(err) == 1 and match in err[0], proc.stderr
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------ kill and resume
KILL_SUITE = """\
name: killtest
timeout_s: 10
memory_budget_gib: 0.5
complexity:
  operator:
    tokens: [16, 32, 64, 128]
    dim: 16
    heads: 2
    variants: ["tssa:naive", sdpa, floor]
    rounds: 2
    min_run_time: 0.02
    profile_max_tokens: 32
"""
EXACT = ("flops_analytic", "macs_analytic", "elementwise_analytic", "flops_torch", "macs_fvcore", "peak_mib")


def _run_cli(suite, results, *extra):
    cmd = [
        sys.executable,
        "-m",
        "benchmarks",
        "run",
        "--suite",
        str(suite),
        "--results-dir",
        str(results),
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cells_rows(results):
    (run,) = list_runs(results, "killtest", "local")
    rows = run.rows()
    keys = [(r["cell"], r["metric"]) for r in rows]
    exact = {(r["cell"], r["metric"]): r["value"] for r in rows if r["metric"] in EXACT}
    return run, keys, exact


def test_a_run_killed_at_random_moments_ends_with_the_cells_of_an_uninterrupted_run(tmp_path):
    import random

    suite = tmp_path / "killtest.yaml"
    suite.write_text(KILL_SUITE)
    ref = _run_cli(suite, tmp_path / "ref")
    assert ref.wait(timeout=300) == 0
    ref_run, ref_keys, ref_exact = _cells_rows(tmp_path / "ref")
    rng = random.Random(1234)
    kills = 0
    for _ in range(3):
        p = _run_cli(suite, tmp_path / "k")
        log = None
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:  # wait until cells are being measured
            found = list((tmp_path / "k").glob("local/killtest/*/log.jsonl"))
            if found and found[0].stat().st_size > 0:
                log = found[0]
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if p.poll() is None:
            p.kill()
            kills += 1
        p.wait()
        assert log is not None
    assert kills >= 1
    p = _run_cli(suite, tmp_path / "k", "--retry-failed")
    assert p.wait(timeout=300) == 0
    run, keys, exact = _cells_rows(tmp_path / "k")
    assert run.record["status"] == "complete" and run.summary() == {"finished": len({k[0] for k in ref_keys})}
    assert len(keys) == len(set(keys))  # nothing duplicated
    assert sorted(keys) == sorted(ref_keys)  # nothing lost, nothing extra
    assert exact == ref_exact  # counts and exact peaks equal those of the uninterrupted run
