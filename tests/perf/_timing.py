"""Interleaved timing for the speed checks: ratios of medians measured in one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _clock(device: str) -> Callable[[], float]:
    # On CPU the work runs on this thread (one intra-op thread): its CPU time leaves out the time a
    # busy machine's scheduler hands the core to other processes. CUDA work is timed by the wall.
    return time.perf_counter if device == "cuda" else time.thread_time


def interleaved_ratios(
    fns: dict[str, Callable[[], object]],
    reference: str,
    *,
    rounds: int = 15,
    block_s: float = 0.02,
    device: str = "cpu",
) -> dict[str, float]:
    """Median over ``rounds`` interleaved rounds of ``time(fn) / time(fns[reference])``, per callable.

    Each round times every callable once, in turn, over a block of calls lasting about ``block_s``
    (the number of calls is fixed after one warm-up per callable) and divides each by the reference's
    block of the same round, so a slow phase of the machine hits numerator and denominator alike;
    the median over rounds drops the rounds a neighbour's burst hit unevenly. On CPU the clock is
    this thread's CPU time, which leaves out the time the scheduler gives the core to other processes.
    On CPU freed memory stays in glibc's heap first (``keep_freed_memory``, as in every timing of the
    harness): otherwise whether the core's multi-MiB output comes from a fresh ``mmap``, page-faulted
    on every call, depends on what the session allocated before (glibc's dynamic mmap and trim
    thresholds). Without it the full perf session failed the fused forward gate in 2 of 3 runs here
    (23.3x the floor against 21.5), while the speed file alone passed; with it, 2 of 2 passed.
    """
    if device != "cuda":
        from benchmarks.core.measure import keep_freed_memory

        keep_freed_memory()
    clock = _clock(device)
    calls = {}
    for name, fn in fns.items():
        fn()
        _sync(device)
        t0 = clock()
        fn()
        _sync(device)
        calls[name] = max(1, round(block_s / max(clock() - t0, 1e-7)))
    ratios: dict[str, list[float]] = {name: [] for name in fns if name != reference}
    for _ in range(rounds):
        times = {}
        for name, fn in fns.items():
            _sync(device)
            t0 = clock()
            for _ in range(calls[name]):
                fn()
            _sync(device)
            times[name] = (clock() - t0) / calls[name]
        for name in ratios:
            ratios[name].append(times[name] / times[reference])
    return {name: statistics.median(r) for name, r in ratios.items()}
