"""The detection study through the harness: the smoke profile end to end, reproducible, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.core.store import list_runs, load_rows
from benchmarks.core.suites import SuiteError, load_suite, validate_suite


def _run(results, *extra):
    cmd = [sys.executable, "-m", "benchmarks", "run", "--suite", "smoke", "--part", "detection",
           "--results-dir", str(results), *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _started_cells(results) -> int:
    logs = list((results / "local" / "smoke").glob("*/log.jsonl"))
    if not logs:
        return 0
    lines = logs[0].read_text().splitlines()
    return sum(line.endswith("}") and json.loads(line).get("event") == "started" for line in lines)


def test_smoke_detection_end_to_end_and_a_killed_resumed_run_reproduces_every_accuracy_number(tmp_path):
    from benchmarks.studies.detection.section import ACCURACY_METRICS

    a = _run(tmp_path / "a")
    assert a.returncode == 0, a.stderr[-2000:]
    assert (
        "Verdicts (ROPE ±0.005 AP" in a.stdout
        and "| TSSA improves small objects | yolo11n-tssa |" in a.stdout
    )
    # the progress bar names the cell and its epoch: the trunk (1 epoch), then the two fine-tunes (2 each)
    assert "] 20% cell 1/3 epoch 1/1 (yolo11n-noattn seed 0," in a.stdout
    assert "] 60% cell 2/3 epoch 2/2 (yolo11n seed 0," in a.stdout
    assert "] 100% cell 3/3 epoch 2/2 (yolo11n-tssa seed 0," in a.stdout
    assert "Warm start: every arm fine-tuned from one common trunk (yolo11n-noattn, 1 epochs" in a.stdout
    # run b is killed while its second cell trains, then the same command resumes it
    cmd = [sys.executable, "-m", "benchmarks", "run", "--suite", "smoke", "--part", "detection",
           "--results-dir", str(tmp_path / "b")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while _started_cells(tmp_path / "b") < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (killed,) = list_runs(tmp_path / "b", "smoke", "local")
    assert killed.record["status"] == "running"
    assert sorted(st.event for st in killed.status().values()) == ["finished", "finished", "started"]
    b = _run(tmp_path / "b")
    assert b.returncode == 0, b.stderr[-2000:]
    assert "marked failed (started and never finished)" in b.stdout
    rows = {}
    for name in ("a", "b"):
        (run,) = list_runs(tmp_path / name, "smoke", "local")
        assert run.record["status"] == "complete" and run.summary() == {
            "finished": 5
        }  # the trunk, 2 fine-tunes, 2 latencies
        df = load_rows([run])
        assert (
            set(df["variant"]) == {"yolo11n", "yolo11n-tssa", "yolo11n-noattn"}
            and (df["kind"] == "detection").all()
        )
        assert set(df[df["variant"] == "yolo11n-noattn"]["role"]) == {"trunk"}
        tuned = df[(df["variant"] != "yolo11n-noattn") & (df["pass"] == "train")].set_index("metric")
        assert (
            tuned.loc["transferred", "value"].to_numpy() < tuned.loc["transfer_total", "value"].to_numpy()
        ).all()
        # the evaluator cross-checked: faster-coco-eval on the same predictions
        ok = df[df["error"].isna()].pivot_table(index="cell", columns="metric", values="value")
        gap = (ok["map50_95"] - ok["map50_95_fce"]).dropna()
        assert len(gap) == 3 and (gap.abs() < 1e-10).all()  # the trunk and the two fine-tunes
        assert not df.duplicated(["cell", "metric"]).any()  # the killed attempt left no rows
        acc = df[df["metric"].isin(ACCURACY_METRICS)]
        rows[name] = {
            (r.variant, r.metric): (r.value if r.value == r.value else None, r.error)
            for r in acc.itertuples()
        }
    assert rows["a"] == rows["b"] and len(rows["a"]) >= 2 * 10
    # training artefacts stay under the run, never in the rows' folder of a published run
    (run,) = list_runs(tmp_path / "a", "smoke", "local")
    assert list((run.path / "artifacts").glob("*/train/weights/last.pt"))


def test_the_progress_bar_counts_epochs_over_all_cells():
    from benchmarks.studies.detection.cells import progress_line

    assert progress_line(2, 9, 4, 16, 20, 144, width=10) == "[#---------] 14% cell 2/9 epoch 4/16"
    assert progress_line(9, 9, 16, 16, 144, 144, width=4) == "[####] 100% cell 9/9 epoch 16/16"


@pytest.mark.parametrize(
    "section, match",
    [
        ({"arms": ["yolo11n-bogus"], "seeds": [0], "data": {"generated": {}}}, "unknown arm 'yolo11n-bogus'"),
        ({"arms": ["yolo11n"], "seeds": [0, 0], "data": {"generated": {}}}, "seeds must be distinct"),
        (
            {"arms": ["yolo11n"], "seeds": [-1], "data": {"generated": {}}},
            "seeds must be distinct integers >= 0",
        ),
        ({"arms": ["yolo11n"], "seeds": [0], "data": {"generated": {}}, "bogus": 1}, "unknown key"),
    ],
)
def test_bad_detection_sections_are_one_clear_line(section, match):
    with pytest.raises(SuiteError, match=match) as exc:
        validate_suite({"name": "x", "detection": section}, source="x.yaml")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("suite x.yaml")


def test_a_missing_data_yaml_is_one_line_and_no_rows(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: mine\ndetection:\n  arms: [yolo11n]\n  seeds: [0]\n  data: {yaml: /nonexistent/VOC.yaml}\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "benchmarks",
        "run",
        "--suite",
        str(suite),
        "--results-dir",
        str(tmp_path / "r"),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    err = [line for line in p.stderr.splitlines() if "error:" in line]
    assert len(err) == 1 and "/nonexistent/VOC.yaml" in err[0]
    assert not (tmp_path / "r").exists()


def test_every_profile_validates():
    for name in ("smoke", "cpu", "gpu", "paper"):
        s = load_suite(name)
        assert s["name"] == name
    det = load_suite("cpu")["detection"]
    assert (det["rope"], det["floor"]) == (0.01, 0.05)  # declared before any v2 result


def test_the_console_script_is_the_same_command_line(tmp_path):
    from pathlib import Path

    script = Path(sys.executable).parent / "tssa-bench"
    if not script.exists():
        pytest.skip("the package is not installed in this interpreter's environment (tox installs it)")
    p = subprocess.run([str(script), "run", "--suite", "smoke", "--dry-run", "--results-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-1000:]
    assert "todo      detection/variant=yolo11n-tssa/pass=train/seed=0" in p.stdout
    assert "this command starts a new run" in p.stdout and not any(tmp_path.iterdir())
