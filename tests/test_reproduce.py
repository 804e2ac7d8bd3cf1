"""Reproduction across runs (benchmarks.core.reproduce): same cells again on the same machine, values compared bit for bit."""

from __future__ import annotations

import benchmarks.studies  # noqa: F401  (registers the detection metrics)
from benchmarks.core.reproduce import compare
from benchmarks.core.store import Run, list_runs, make_row


def _run(parent, values: dict[str, dict[str, float]], complete=True) -> Run:
    run = Run.create(parent / "s", "s", {"name": "s"})  # a published run of suite s
    for cell, metrics in values.items():
        a = run.start_cell(cell)
        rows = [make_row("s", "detection", cell, "yolo11n", metric=m, value=v) for m, v in metrics.items()]
        run.finish_cell(cell, a, rows)
    run.mark("complete" if complete else "running")
    return run


def test_identical_accuracy_counts_as_reproduced_and_times_are_not_compared(tmp_path):
    a = _run(tmp_path, {"c1": {"map50": 0.41, "latency_ms": 10.0, "latency_samples": 6}})
    b = _run(tmp_path, {"c1": {"map50": 0.41, "latency_ms": 12.5, "latency_samples": 40}})
    (rep,) = compare(list_runs(tmp_path, "s"), "detection")
    assert (rep.earlier, rep.later, rep.cells, rep.values, rep.identical) == (a.id, b.id, 1, 1, 1)
    assert rep.line().endswith(
        "1 of 1 accuracy and count values identical (times and memory are not compared)."
    )


def test_a_differing_value_is_counted_and_named(tmp_path):
    _run(tmp_path, {"c1": {"map50": 0.41, "params": 2591010}, "c2": {"map50": 0.30}})
    _run(tmp_path, {"c1": {"map50": 0.4100000001, "params": 2591010}, "c3": {"map50": 0.2}})
    (rep,) = compare(list_runs(tmp_path, "s"), "detection")
    assert (rep.cells, rep.values, rep.identical) == (1, 2, 1)  # only c1 is in both runs
    assert rep.differing == (("c1", "map50", 0.41, 0.4100000001),)
    assert "1 of 2" in rep.line() and "c1 map50: 0.41 vs 0.4100000001" in rep.line()


def test_incomplete_runs_and_other_kinds_are_left_out(tmp_path):
    _run(tmp_path, {"c1": {"map50": 0.41}})
    assert compare(list_runs(tmp_path, "s"), "detection") == []  # nothing to compare with
    _run(tmp_path, {"c1": {"map50": 0.5}}, complete=False)
    assert compare(list_runs(tmp_path, "s"), "detection") == []
    assert compare(list_runs(tmp_path, "s"), "classification") == []
