"""Time estimates for ``run --dry-run``, from the durations of cells already measured on this machine.

A cell's duration is the wall time between its ``started`` and ``finished`` events (one attempt, in
the run's log; the events carry second-resolution times). A planned cell is estimated from

1. the same cell (same id: same parameters and settings) measured before on this machine, else
2. cells of the same kind whose parameters other than the seed are equal (a new seed of a known
   recipe costs what the known seeds cost; their mean).

A group's cells run together (the complexity sweeps time a group's variants interleaved), so a
group costs the longest of its cells' durations, not their sum. Groups with a cell that has no such
history are counted as unknown, never guessed.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from benchmarks.core.cells import Cell
from benchmarks.core.store import Run, _read_lines

_SEED = re.compile(r"/seed=[^/@]*")


def _seedless(cell_id: str) -> str:
    """The cell id without its seed and hash: the key of "the same recipe at another seed"."""
    return _SEED.sub("", cell_id.split("@", 1)[0])


def cell_durations(runs: Iterable[Run]) -> dict[str, float]:
    """``{cell id: seconds}`` of every finished attempt in ``runs`` (the latest run's value wins)."""
    out: dict[str, float] = {}
    for run in runs:
        started: dict[tuple[str, int], _dt.datetime] = {}
        for rec in _read_lines(run.log_path):
            if rec.get("type") != "event" or not rec.get("time"):
                continue
            key = (rec["cell"], rec["attempt"])
            when = _dt.datetime.fromisoformat(rec["time"])
            if rec["event"] == "started":
                started[key] = when
            elif rec["event"] == "finished" and key in started:
                out[rec["cell"]] = (when - started[key]).total_seconds()
    return out


def estimate_seconds(
    groups: Iterable[Iterable[Cell]],
    durations: dict[str, float],
    jobs: int = 1,
    exclusive: Iterable[bool] | None = None,
) -> dict[str, Any]:
    """Estimate the wall time of the planned ``groups`` (each an iterable of cells still to run).

    Returns ``{"seconds": float, "known": int, "unknown": int}``: the estimate of the groups whose
    every cell has a history (see the module docstring) and the number of groups with and without
    one. Empty groups are ignored. With ``jobs`` workers, the groups that may overlap (not
    ``exclusive``) take their summed time / ``jobs``; exclusive groups run alone and add in full.
    """
    by_recipe: dict[str, list[float]] = defaultdict(list)
    for cid, sec in durations.items():
        by_recipe[_seedless(cid)].append(sec)
    seconds, shared, known, unknown = 0.0, 0.0, 0, 0
    groups = list(groups)
    alone = list(exclusive) if exclusive is not None else [True] * len(groups)
    for cells, excl in zip(groups, alone):
        cells = list(cells)
        if not cells:
            continue
        each = []
        for c in cells:
            if c.id in durations:
                each.append(durations[c.id])
            elif by_recipe.get(_seedless(c.id)):
                same = by_recipe[_seedless(c.id)]
                each.append(sum(same) / len(same))
            else:
                each = None
                break
        if each is None:
            unknown += 1
        else:
            if excl or jobs <= 1:
                seconds += max(each)
            else:
                shared += max(each)
            known += 1
    return {"seconds": seconds + shared / max(1, jobs), "known": known, "unknown": unknown}


def cell_peak_mib(runs: Iterable[Run]) -> dict[str, float]:
    """``{cell id: MiB}``: the largest resident memory of the process that finished each cell (the
    ``max_rss_mib`` of its ``finished`` event; an upper bound of the cell's own) in ``runs``."""
    out: dict[str, float] = {}
    for run in runs:
        for rec in _read_lines(run.log_path):
            if rec.get("type") == "event" and rec.get("event") == "finished" and rec.get("max_rss_mib"):
                out[rec["cell"]] = max(out.get(rec["cell"], 0.0), float(rec["max_rss_mib"]))
    return out


def describe_estimate(est: dict[str, Any]) -> str:
    """One line for the dry-run listing."""
    if est["known"] == 0 and est["unknown"] == 0:
        return "estimated time: nothing to execute"
    if est["known"] == 0:
        return (
            f"estimated time: unknown (no cell of the {est['unknown']} groups to execute has been "
            "measured on this machine before)"
        )
    minutes = est["seconds"] / 60
    text = f"estimated time: about {minutes:.1f} min for {est['known']} groups, from cells measured on this machine"
    if est["unknown"]:
        text += f"; {est['unknown']} groups without a measured history are not included"
    return text
