"""Dry-run time estimates from the cell durations stored in runs."""

from __future__ import annotations

import json

from benchmarks.core.cells import Cell
from benchmarks.core.estimate import cell_durations, describe_estimate, estimate_seconds
from benchmarks.core.store import Run


def _det(seed, epochs=16):
    return Cell.make(
        "detection", {"variant": "yolo11n", "pass": "train", "seed": seed, "epochs": epochs}, {"lr": 1}
    )


def _op(variant):
    return Cell.make("complexity", {"variant": variant, "pass": "fwd", "tokens": 64}, {"rounds": 3})


def _log(tmp_path, spans):
    """A run whose log holds one (started, finished) pair per (cell, start second, end second)."""
    run = Run(tmp_path / "r")
    run.path.mkdir()
    lines = []
    for cell, t0, t1, attempt in spans:
        for event, t in (("started", t0), ("finished", t1)):
            stamp = f"2026-01-01T00:{t // 60:02d}:{t % 60:02d}+00:00"
            lines.append(
                {"type": "event", "cell": cell.id, "attempt": attempt, "event": event, "time": stamp}
            )
    run.log_path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


def test_durations_come_from_the_events_of_one_attempt(tmp_path):
    run = _log(tmp_path, [(_det(0), 0, 100, 1), (_det(1), 100, 300, 1), (_op("a"), 300, 310, 1)])
    # an attempt that started and never finished has no duration
    with run.log_path.open("a") as fh:
        fh.write(json.dumps({"type": "event", "cell": _op("b").id, "attempt": 1, "event": "started",
                             "time": "2026-01-01T00:06:00+00:00"}) + "\n")  # fmt: skip
    d = cell_durations([run])
    assert d == {_det(0).id: 100.0, _det(1).id: 200.0, _op("a").id: 10.0}


def test_estimates_use_the_same_cell_then_other_seeds_and_a_group_costs_its_longest_cell():
    d = {_det(0).id: 100.0, _det(1).id: 200.0, _op("a").id: 10.0, _op("b").id: 12.0}
    est = estimate_seconds([[_det(0)], [_det(2)], [_op("a"), _op("b")]], d)
    assert est == {"seconds": 100.0 + 150.0 + 12.0, "known": 3, "unknown": 0}
    # a recipe never measured (other epochs) is unknown, never guessed; empty groups are ignored
    est = estimate_seconds([[_det(0, epochs=32)], [], [_det(0)]], d)
    assert est == {"seconds": 100.0, "known": 1, "unknown": 1}
    assert describe_estimate(est).startswith("estimated time: about 1.7 min for 1 groups")
    assert "1 groups without a measured history" in describe_estimate(est)
    assert "unknown" in describe_estimate(estimate_seconds([[_det(5, epochs=8)]], d))
