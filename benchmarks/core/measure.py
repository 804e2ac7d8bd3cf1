"""Measurement primitives: peak memory, FLOPs, honest timing, time limits.

- :func:`measure_peak_bytes`: extra peak bytes of one call (CPU: the dispatch-level
  :class:`~tssa.utils.LiveTensorTracker`, exact; CUDA: ``max_memory_allocated`` delta).
- :func:`profiler_peak_bytes`: the allocator's running total from ``torch.profiler`` allocation
  events; unlike the tracker it sees kernels' scratch buffers.
- :func:`count_call`: the *counted* call of a cell (memory and FLOPs at once). It is never a
  timing sample.
- :func:`time_interleaved`: every callable timed over repeated calls filling a minimum window
  (``torch.utils.benchmark.Timer.blocked_autorange``: each sample is the mean of a block of calls),
  round-robin over the callables for several rounds, so drift hits all alike; returns the samples
  and the number of calls behind them. On CPU it first calls :func:`keep_freed_memory`.
- :func:`keep_freed_memory`: glibc keeps freed memory for reuse instead of returning it to the
  system, so a timed call that allocates its output reuses warm pages at every size.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.utils.benchmark as tb

from tssa.utils import LiveTensorTracker

MIB = 2**20


class CellTimeout(RuntimeError):
    """A call ran past the suite's time limit."""


@contextmanager
def alarm(seconds: float):
    """Raise :class:`CellTimeout` once ``seconds`` have passed (checked between Python bytecodes)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _fire(signum, frame):
        raise CellTimeout(f"timeout: still running after {seconds:g} s (the guard of the per-call limit)")

    old = signal.signal(signal.SIGALRM, _fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def torch_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)`` and restore the previous count afterwards.

    A sweep pins one thread for its timings; what runs after it in the same process (another group,
    the training of a detection cell) must get the process's own thread count back.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_peak_bytes(step: Callable[[], None], device: str) -> int:
    """Extra peak bytes of one ``step()``: ``max_memory_allocated`` delta on CUDA, tracker on CPU.

    Storages alive before the step (inputs, parameters, their views) do not count on CPU.
    """
    if device.startswith("cuda"):
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    with LiveTensorTracker(device="cpu") as tracker:
        step()
    return int(tracker.peak)


def profiler_peak_bytes(step: Callable[[], None]) -> int:
    """Peak of the CPU allocator's running total during ``step()``, from ``torch.profiler`` events.

    Allocation events carry the size of every allocation and free (negative), summed in time order;
    frees of blocks allocated before the window are ignored. Includes kernels' scratch buffers.
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size, node.extra_fields.ptr))
    live = peak = 0
    mine: dict[int, int] = {}
    for _, size, ptr in sorted(events):
        if size > 0:
            mine[ptr] = size
        elif ptr in mine:
            size = -mine.pop(ptr)
        else:
            continue
        live += size
        peak = max(peak, live)
    return int(peak)


def count_call(
    step: Callable[[], None], device: str, timeout_s: float, flops: bool = True
) -> tuple[int, int | None, float]:
    """The counted call of a cell: (extra peak bytes, FLOPs under ``FlopCounterMode``, seconds).

    It doubles as the warm-up and is never a timing sample. On CUDA one plain call runs first (lazy
    initialisation). A call past ``timeout_s`` raises :class:`CellTimeout`. With ``flops=False``
    nothing is counted (FLOPs None): for callers that count FLOPs another way.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.core.flops import flop_counter_mapping

    counter = FlopCounterMode(display=False, custom_mapping=flop_counter_mapping())

    def counted():
        with counter:
            step()

    measured = counted if flops else step

    with alarm(2 * timeout_s):
        if device.startswith("cuda"):
            step()
            sync(device)
        t0 = time.perf_counter()
        peak = measure_peak_bytes(measured, device)
        sync(device)
    first = time.perf_counter() - t0
    if first > timeout_s:
        raise CellTimeout(f"timeout: one call took {first:.1f} s, over the time limit of {timeout_s:g} s")
    return peak, int(counter.get_total_flops()) if flops else None, first


@dataclass
class Timing:
    """Samples of one callable: each sample is seconds per call, averaged over a block of calls."""

    samples: list[float] = field(default_factory=list)
    calls: int = 0
    error: str | None = None
    allocator: str | None = None  # what :func:`keep_freed_memory` set (None: the platform's default)

    @property
    def median(self) -> float:
        return quantile(self.samples, 0.5)

    @property
    def fastest(self) -> float:
        """The fastest sample: under interference that only ever adds time (other processes, the
        machine's other tenants), the least-disturbed estimate of a call's own cost."""
        return min(self.samples)

    def provenance(self) -> dict[str, str]:
        """The fields a latency row records about how it was timed (the allocator setting, if any)."""
        return {"allocator": self.allocator} if self.allocator else {}

    @property
    def iqr(self) -> float:
        return quantile(self.samples, 0.75) - quantile(self.samples, 0.25)


def quantile(samples: list[float], p: float) -> float:
    s = sorted(samples)
    if not s:
        raise ValueError("no samples")
    x = p * (len(s) - 1)
    lo, hi = math.floor(x), math.ceil(x)
    return s[lo] + (s[hi] - s[lo]) * (x - lo)


def _round_samples(
    step: Callable[[], None], device: str, min_run_time: float, threads: int
) -> tuple[list, int]:
    if device.startswith("cuda"):
        from triton.testing import do_bench

        ms = do_bench(step, warmup=5, rep=max(1, int(1e3 * min_run_time)), return_mode="all")
        return [t / 1e3 for t in ms], len(ms)
    m = tb.Timer("step()", globals={"step": step}, num_threads=threads).blocked_autorange(
        min_run_time=min_run_time
    )
    return list(m.times), m.number_per_run * len(m.times)


def _one_call(step: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


HEAP_REUSE = "glibc M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1"
_heap_reuse: str | None = None


def keep_freed_memory() -> str | None:
    """Make glibc's malloc keep freed memory in its heap for reuse (``mallopt``: no ``mmap`` for large
    blocks, no trimming below 2 GiB of free top); returns :data:`HEAP_REUSE`, or None where the C
    library is not glibc (nothing is changed there). Idempotent, for the whole process.

    Why: by default glibc serves a block above its mmap threshold (dynamic, at most 32 MiB on 64-bit)
    with a fresh ``mmap`` and unmaps it on free, so an output past 32 MiB is page-faulted anew on every
    call. The per-token cost of a streaming operator then steps up at that size (the fused TSSA forward
    at (1, 8, N, 48): about 3x from N = 24576, measured by ``scripts/heap_step.py``), which a slope
    fitted across it reads as super-linear time. With the heap kept, every size reuses warm pages, as
    a caching allocator (CUDA's) does. The peak-memory figures are the dispatch-level tracker's and do
    not change.
    """
    global _heap_reuse
    if _heap_reuse is not None:
        return _heap_reuse
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    if libc.mallopt(m_mmap_max, 0) != 1 or libc.mallopt(m_trim_threshold, 2**31 - 1) != 1:
        return None
    _heap_reuse = HEAP_REUSE
    return _heap_reuse


def time_interleaved(
    steps: dict[str, Callable[[], None]],
    *,
    device: str,
    rounds: int,
    min_run_time: float,
    threads: int,
    guard_s: float = 0.0,
) -> dict[str, Timing]:
    """Time every step round-robin: per round, ``blocked_autorange`` fills ``min_run_time`` with
    repeated calls (CUDA: ``triton.testing.do_bench``, L2 flushed). A step that raises (or passes
    ``guard_s`` in one round) records its error and drops out; the others go on.

    On CPU a step whose every sample so far took ``min_run_time`` or more (blocks of one call) is
    timed by one call per later round: the block ``blocked_autorange`` would time, without the
    warm-up call it makes before every block (for calls of seconds, half the time of a round)."""
    allocator = None if device.startswith("cuda") else keep_freed_memory()
    out = {k: Timing(allocator=allocator) for k in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            t = out[name]
            if t.error is not None:
                continue
            try:
                with alarm(guard_s):
                    if not device.startswith("cuda") and t.samples and min(t.samples) >= min_run_time:
                        s, calls = [_one_call(step)], 1
                    else:
                        s, calls = _round_samples(step, device, min_run_time, threads)
                t.samples += s
                t.calls += calls
            except Exception as exc:  # recorded on the cell's rows
                from benchmarks.core.runner import reason

                t.error = reason(exc)
    return out
