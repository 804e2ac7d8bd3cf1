"""Reproduction across runs: the same cells measured again on the same machine give the same values.

A cell id names everything that determines its result (variant, seed, recipe, the hash of its
parameters), so two runs that hold the same cell id on the same machine measured the same thing.
:func:`compare` pairs the latest run holding rows of a kind with every earlier run of the same suite
and machine that holds any of the same cells, and counts the device-independent values (accuracy,
counts: every metric that :func:`benchmarks.core.metrics.device_bound` does not mark as a time, memory or
throughput, nor the number of timing samples) that are identical, bit for bit. Times and memory are
never expected to repeat and are not compared. ``python -m benchmarks derive`` writes the result
under each study's summary in the README.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.core import metrics as _metrics
from benchmarks.core.store import Run


@dataclass(frozen=True)
class Reproduction:
    earlier: str  # run id
    later: str  # run id
    machine: str
    cells: int  # cells present in both runs
    values: int  # device-independent values compared
    identical: int
    differing: tuple[tuple[str, str, float, float], ...]  # (cell, metric, earlier, later), first few

    def line(self) -> str:
        head = (
            f"Reproduction: run {self.later} measured {self.cells} cells of run {self.earlier} again on the "
            f"same machine [{self.machine}]: {self.identical} of {self.values} accuracy and count values identical"
        )
        if self.identical == self.values:
            return head + " (times and memory are not compared)."
        shown = "; ".join(f"{c.split('@')[0]} {m}: {a!r} vs {b!r}" for c, m, a, b in self.differing)
        return head + f"; differing, first {len(self.differing)}: {shown}."


def _values(run: Run, kind: str) -> dict[tuple[str, str], float]:
    return {
        (r["cell"], r["metric"]): r["value"]
        for r in run.rows()
        if r.get("kind") == kind and r.get("error") is None and _compared(r["metric"])
    }


def _compared(metric: str) -> bool:
    # times, memory and throughput are the device's; so is the number of timing samples that fit
    # in a timer's min_run_time (latency_samples, throughput_samples), though counted in units of 1
    return not (_metrics.device_bound(metric) or metric.endswith("_samples"))


def compare(runs: list[Run], kind: str, show: int = 5) -> list[Reproduction]:
    """For the latest complete run holding rows of ``kind`` per (suite, machine): one
    :class:`Reproduction` per earlier complete run of that suite and machine sharing cells with it."""
    done = [r for r in runs if r.record["status"] == "complete"]
    out = []
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in done:
        groups.setdefault((r.record["suite"], r.record["machine"]["id"]), []).append(r)
    for (_, machine), rs in sorted(groups.items()):
        with_kind = [(r, _values(r, kind)) for r in rs]
        with_kind = [(r, v) for r, v in with_kind if v]
        if len(with_kind) < 2:
            continue
        (later, lv), earlier = with_kind[-1], with_kind[:-1]
        for run, ev in earlier:
            keys = sorted(set(ev) & set(lv))
            if not keys:
                continue
            # rows hold finite values only (store.validate_row), so plain equality is bit for bit
            diff = [(c, m, ev[(c, m)], lv[(c, m)]) for c, m in keys if ev[(c, m)] != lv[(c, m)]]
            cells = len({c for c, _ in keys})
            out.append(
                Reproduction(
                    run.id, later.id, machine, cells, len(keys), len(keys) - len(diff), tuple(diff[:show])
                )
            )
    return out
