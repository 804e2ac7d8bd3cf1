"""``scripts/perf_gate_record.py``: its record lines, its summary table and its command line.

The record path runs once, on its cheapest selection: the layer FLOP gate (a quarter of a second),
planted with ``double`` and repeated twice, into a temporary file. That proves in ~10 s that the
script passes the plant and the repetition to its child, tells the runs apart and records the gate as
failed in each; ``tests/perf/expected.json`` must come out byte for byte unchanged (the child's
environment carries no ``TSSA_PERF_REFRESH``, see ``_child.py``).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from _child import ROOT, child_env, in_record_session
from _expected import PATH as EXPECTED_PATH

SCRIPT = ROOT / "scripts" / "perf_gate_record.py"
RECORD_KEYS = {"plant", "run", "exit", "wall_s_all_runs", "failed", "passed", "skipped", "values"}


def _script():
    spec = importlib.util.spec_from_file_location("perf_gate_record", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_record_script_splits_the_repetition_off_the_test_id():
    split = _script()._split
    assert split("test_x[run3-core_forward-_forward]") == ("test_x[core_forward-_forward]", 3)
    assert split("test_x[run12]") == ("test_x", 12)
    assert split("test_x") == ("test_x", 0)
    assert split("test_x[forward-cpu]") == ("test_x[forward-cpu]", 0)  # no repetition id: run 0


@pytest.mark.skipif(in_record_session(), reason="this session itself runs planted or repeated")
def test_record_script_writes_one_line_per_run(tmp_path):
    out = tmp_path / "record.jsonl"
    earlier = {"plant": "clean", "run": 0, "exit": 0, "wall_s_all_runs": 9.0, "failed": [],
               "passed": ["test_exact_layer_flops"], "skipped": [], "values": {}}  # fmt: skip
    out.write_text(json.dumps(earlier) + "\n")  # --out appends: what was there stays
    before = EXPECTED_PATH.read_bytes()
    cmd = [sys.executable, str(SCRIPT), "--plant", "double", "--runs", "2", "--out", str(out)]
    cmd += ["--", "-k", "test_exact_layer_flops"]
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert EXPECTED_PATH.read_bytes() == before, "the record script rewrote tests/perf/expected.json"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("double: 2 runs, 2 failing, "), proc.stdout

    lines = out.read_text().splitlines()
    assert json.loads(lines[0]) == earlier
    recs = [json.loads(line) for line in lines[1:]]
    assert [r["run"] for r in recs] == [0, 1]
    for r in recs:
        assert set(r) == RECORD_KEYS
        assert r["plant"] == "double" and r["exit"] == 1 and r["wall_s_all_runs"] > 0
        assert r["failed"] == ["test_exact_layer_flops"]  # the run id is split off the name
        assert r["passed"] == [] and r["skipped"] == [] and r["values"] == {}

    table = _script().summary(out).splitlines()
    assert table[:4] == [
        "## clean: 1 runs, 0 runs failing (false alarms)",
        "  test_exact_layer_flops: failed 0/1",
        "## double: 2 runs, 2 runs failing (caught)",
        "  test_exact_layer_flops: failed 2/2",
    ]


def test_record_script_summary_table(tmp_path, capsys):
    def rec(plant, run, failed, passed, values):
        return {"plant": plant, "run": run, "exit": int(bool(failed)), "wall_s_all_runs": 1.0,
                "failed": failed, "passed": passed, "skipped": [], "values": values}  # fmt: skip

    gate = "test_g[forward-cpu]"
    recs = [
        rec("nxn", 0, [gate], [], {f"{gate}:core_over_floor": 180.0}),
        rec("clean", 0, [], [gate], {f"{gate}:core_over_floor": 8.0}),
        rec("clean", 1, [], [gate], {f"{gate}:core_over_floor": 12.5}),
        rec("clean", 2, [gate], [], {f"{gate}:core_over_floor": 30.0}),
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + "\n")  # a blank line is skipped
    assert _script().main(["--summary", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "## clean: 3 runs, 1 runs failing (false alarms)",  # clean first: the order of PLANTS
        f"  {gate}: failed 1/3",
        f"  {gate}:core_over_floor: min 8 median 12.5 max 30 (n=3)",
        "## nxn: 1 runs, 1 runs failing (caught)",
        f"  {gate}: failed 1/1",
        f"  {gate}:core_over_floor: min 180 median 180 max 180 (n=1)",
    ]


def test_record_script_refuses_incomplete_commands(tmp_path, capsys):
    script = _script()
    for argv in (
        ["--summary", str(tmp_path / "none.jsonl")],
        ["--plant", "double"],
        ["--runs", "0", "--out", "x"],
    ):
        with pytest.raises(SystemExit) as exit_:
            script.main(argv)
        assert exit_.value.code == 2, argv
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "none.jsonl").exists()
