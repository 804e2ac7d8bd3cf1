"""FLOPs, peak memory and time versus token count: the sweep behind TSSA's linear-cost claim.

Operator level (``complexity.operator`` of a suite): at fixed channels C and heads H (D = C / H),
for every token count N and pass (``fwd``: inference under ``no_grad``; ``fwd+bwd``: forward plus
the backward of one fixed random upstream gradient), each variant is one cell:

- ``tssa:<impl>``: the TSSA core ``tssa(W, tau, impl=impl)`` on W (B, H, N, D), every registered
  implementation that runs on the device (``tssa:*``);
- ``softmax``: materialised attention ``softmax(Q K^T / sqrt(D)) V`` on Q, K, V (B, H, N, D);
- ``sdpa``: ``F.scaled_dot_product_attention(Q, K, V)`` (the fused kernel: the real competitor);
- ``floor``: the two C x C projections of a TSSA layer alone, ``x (B, N, C) -> x W1^T -> . W2^T``,
  which a TSSA layer cannot beat.

Per cell, rows of: ``flops_analytic`` / ``macs_analytic`` (:func:`benchmarks.flops.analytic_counts`;
for fwd+bwd three times the forward, the usual "backward = 2 x forward" convention), ``flops_torch``
(``FlopCounterMode`` with the mappings of :mod:`benchmarks.flops`, FLOPs), ``macs_fvcore`` (fvcore with
the extra handles, MACs, forward only: fvcore traces the forward), ``peak_mib`` (CPU: the
dispatch-level :class:`~tssa.utils.LiveTensorTracker`; GPU: ``max_memory_allocated`` delta),
``peak_mib_profiler`` (CPU cross-check: the allocator's running total in ``torch.profiler`` memory
events), ``latency_ms`` (median over interleaved rounds, ``iqr_ms`` beside it) and ``tokens_per_s``.
Cells predicted to exceed the memory budget or the time limit, and cells that fail (out of memory,
time-out), are rows with an ``error``.

Model level (``complexity.model``): YOLO11 variants and ToST models versus image size; rows record the
tokens each attention layer sees (``attn_tokens``), FLOPs (two counters), peak memory, latency and
``images_per_s``. Models whose integration is not importable become error rows.

Derived numbers (:func:`derive`): log-log slopes of time and memory per operator and pass, the N
from which TSSA is faster than SDPA, and per model the latency against its attention tokens.

    python -m benchmarks run --suite cpu            # rows -> results/cpu.jsonl (resumes)
    python -m benchmarks derive --suite cpu --readme README.md

>>> rows = run_operator_cell("floor", tokens=64, dim=32, heads=4, pass_="fwd", suite="demo", min_run_time=0.01)
>>> sorted({r["metric"] for r in rows})[:3]
['flops_analytic', 'flops_torch', 'latency_ms']
"""

from __future__ import annotations

import gc
import importlib
import math
import re
import signal
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.benchmark as tb

from benchmarks.flops import analytic_counts, count_macs_fvcore
from benchmarks.store import ResultStore, error_row, make_row, provenance
from tssa.utils import LiveTensorTracker

MIB = 2**20
KIND = "complexity"


# ----------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class OpCase:
    """One operator cell: a variant at one size, pass, device and dtype."""

    variant: str
    tokens: int
    batch: int = 1
    dim: int = 384
    heads: int = 8
    dtype: str = "float32"
    device: str = "cpu"
    pass_: str = "fwd"

    @property
    def cell(self) -> str:
        """Stable cell id, e.g. ``op/sdpa/fwd/cpu-float32-B1-C384-H8/N1024``."""
        shape = f"{self.device}-{self.dtype}-B{self.batch}-C{self.dim}-H{self.heads}"
        return f"op/{self.variant}/{self.pass_}/{shape}/N{self.tokens}"

    def extra(self) -> dict[str, Any]:
        return {
            "level": "operator",
            "device": self.device,
            "dtype": self.dtype,
            "batch": self.batch,
            "dim": self.dim,
            "heads": self.heads,
        }


def expand_variants(variants: list[str], device: str, dtype: str) -> list[str]:
    """Replace ``tssa:*`` by ``tssa:<impl>`` for every registered impl that runs on this device/dtype.

    Implementations registered with a negative priority (explicit-only paths such as ``compile``)
    are left out of ``tssa:*``; name them (``tssa:compile``) to sweep them.
    """
    from tssa.ops import _IMPLS, available_impls

    probe = torch.zeros(1, 2, 4, 4, device=device, dtype=getattr(torch, dtype))
    out: list[str] = []
    for v in variants:
        if v == "tssa:*":
            for name in available_impls():
                if _IMPLS[name].priority < 0:
                    continue
                try:
                    ok = _IMPLS[name].supports(probe, False)
                except Exception:  # an impl whose probe fails cannot run here
                    ok = False
                if ok and f"tssa:{name}" not in out:
                    out.append(f"tssa:{name}")
        elif v not in out:
            out.append(v)
    return out


def _materialised(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, N, N)
    return torch.softmax(scores, dim=-1) @ v  # (B, H, N, D)


def _floor(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    return F.linear(F.linear(x, w1), w2)  # (B, N, C) -> (B, N, C) -> (B, N, C)


def build_operator(case: OpCase, seed: int = 0) -> tuple[Callable, tuple, Callable[[], None]]:
    """``(fn, args, step)`` for a case: ``fn(*args)`` is the forward, ``step()`` one timed call.

    Inputs are drawn from a seeded generator on the CPU, then moved, so a seed gives the same data
    on every machine. ``step`` runs the forward under ``no_grad`` (``fwd``) or forward plus
    ``backward(dy)`` with a fixed random ``dy`` after dropping the previous gradients (``fwd+bwd``).
    """
    b, n, c, h = case.batch, case.tokens, case.dim, case.heads
    d = c // h
    dt, dev = getattr(torch, case.dtype), torch.device(case.device)
    grad = case.pass_ == "fwd+bwd"
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        t = (torch.randn(*shape, generator=gen) * scale).to(device=dev, dtype=dt)
        return t.requires_grad_(grad)

    base, _, impl = case.variant.partition(":")
    if base == "tssa":
        from tssa.ops import tssa

        args = (rnd(b, h, n, d), torch.ones(h, device=dev, dtype=dt).requires_grad_(grad))

        def fn(w, tau):
            return tssa(w, tau, impl=impl or "auto")
    elif base == "sdpa":
        args = (rnd(b, h, n, d), rnd(b, h, n, d), rnd(b, h, n, d))
        fn = F.scaled_dot_product_attention
    elif base == "softmax":
        args = (rnd(b, h, n, d), rnd(b, h, n, d), rnd(b, h, n, d))
        fn = _materialised
    elif base == "floor":
        args = (rnd(b, n, c), rnd(c, c, scale=c**-0.5), rnd(c, c, scale=c**-0.5))
        fn = _floor
    else:
        raise ValueError(
            f"unknown operator variant {case.variant!r}; use tssa:<impl>, softmax, sdpa or floor"
        )
    dy = torch.randn(tuple(args[0].shape), generator=gen).to(device=dev, dtype=dt)

    if grad:

        def step():
            for a in args:
                a.grad = None
            fn(*args).backward(dy)
    else:

        def step():
            with torch.no_grad():
                fn(*args)

    return fn, args, step


def predicted_peak_bytes(case: OpCase) -> int:
    """A generous estimate of a case's extra memory, used to skip cells over the budget before running.

    Materialised softmax holds two (B, H, N, N) matrices in the forward and three in the backward;
    every other variant is linear in N (a few copies of its (B, H, N, D) inputs).
    """
    b, n, c, h = case.batch, case.tokens, case.dim, case.heads
    size = torch.empty((), dtype=getattr(torch, case.dtype)).element_size()
    linear = 12 * b * n * c * size
    if case.variant == "softmax":
        return linear + (3 if case.pass_ == "fwd+bwd" else 2) * b * h * n * n * size
    return linear


# ----------------------------------------------------------------------------------- measurement
class CellTimeout(RuntimeError):
    """A call ran past the suite's time limit."""


@contextmanager
def _alarm(seconds: float):
    """Raise :class:`CellTimeout` once ``seconds`` have passed (checked between Python bytecodes)."""
    import threading

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


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def _reason(exc: BaseException) -> str:
    """One line for an error row: out of memory, a time-out, or the exception's type and message."""
    if _is_oom(exc):
        text = f"out of memory: {exc}"
    elif isinstance(exc, CellTimeout):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    lines = text.strip().splitlines() or [type(exc).__name__]
    return lines[0][:300]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_peak_bytes(step: Callable[[], None], device: str) -> int:
    """Extra peak bytes of one ``step()``: ``max_memory_allocated`` delta on CUDA, tracker on CPU.

    Storages alive before the step (inputs, parameters, their views) do not count on CPU.
    """
    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    with LiveTensorTracker(device="cpu") as tracker:
        step()
    return int(tracker.peak)


def peak_and_flops(step: Callable[[], None], device: str) -> tuple[int, int]:
    """One ``step()`` measured twice at once: (extra peak bytes, FLOPs under ``FlopCounterMode``).

    The FLOP counter runs inside the memory measurement, so a slow cell pays one call for both.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.flops import flop_counter_mapping

    counter = FlopCounterMode(display=False, custom_mapping=flop_counter_mapping())

    def counted():
        with counter:
            step()

    peak = measure_peak_bytes(counted, device)
    return peak, int(counter.get_total_flops())


def profiler_peak_bytes(step: Callable[[], None]) -> int:
    """Peak of the CPU allocator's running total during ``step()``, from ``torch.profiler`` memory events.

    The cross-check of :class:`~tssa.utils.LiveTensorTracker`: allocation events carry the size of
    every allocation and free (negative), summed in time order; frees of blocks allocated before
    the window are ignored. Unlike the tracker it also sees kernels' internal scratch buffers.
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
    mine: dict[int, int] = {}  # blocks allocated inside the window; frees of older blocks do not count
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


def time_samples(
    step: Callable[[], None], device: str, min_run_time: float, threads: int, single: bool
) -> list:
    """Per-call seconds of ``step`` for one round.

    CPU: ``torch.utils.benchmark.Timer`` at a fixed thread count (``blocked_autorange``; one
    ``timeit(1)`` when a single call already exceeds ``min_run_time``). CUDA: ``triton.testing.do_bench``
    (CUDA events, L2 flush between calls) when triton is present, else CUDA events with an explicit
    L2 flush and synchronisation.
    """
    if device.startswith("cuda"):
        try:
            from triton.testing import do_bench

            ms = do_bench(step, warmup=5, rep=max(1, int(1e3 * min_run_time)), return_mode="all")
            return [t / 1e3 for t in ms]
        except ImportError:
            flush = torch.empty(256 * MIB, dtype=torch.int8, device=device)
            out = []
            deadline = time.perf_counter() + min_run_time
            while time.perf_counter() < deadline or len(out) < 3:
                flush.zero_()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step()
                end.record()
                torch.cuda.synchronize()
                out.append(start.elapsed_time(end) / 1e3)
            return out
    timer = tb.Timer("step()", globals={"step": step}, num_threads=threads)
    if single:
        return list(timer.timeit(1).times)
    return list(timer.blocked_autorange(min_run_time=min_run_time).times)


def _median_iqr(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)

    def q(p):
        x = p * (len(s) - 1)
        lo, hi = math.floor(x), math.ceil(x)
        return s[lo] + (s[hi] - s[lo]) * (x - lo)

    return q(0.5), q(0.75) - q(0.25)


@dataclass
class _Prepared:
    case: Any
    step: Callable[[], None]
    rows: list
    first_s: float
    samples: list = field(default_factory=list)
    units: float = 1.0  # tokens (operators) or images (models) per call
    tokens: int | None = None  # model cells: the most tokens any attention layer sees


def _first_call(step: Callable[[], None], device: str, timeout_s: float) -> tuple[int, int, float]:
    """The counted call of a cell: (extra peak bytes, FLOPs, seconds); it is also the CPU warm-up.

    On CUDA one plain call runs first (lazy initialisation, library workspaces). A call past
    ``timeout_s`` raises :class:`CellTimeout`.
    """
    with _alarm(2 * timeout_s):
        if device.startswith("cuda"):
            step()
            _sync(device)
        t0 = time.perf_counter()
        peak, flops = peak_and_flops(step, device)
        _sync(device)
    first = time.perf_counter() - t0
    if first > timeout_s:
        raise CellTimeout(f"timeout: one call took {first:.1f} s, over the time limit of {timeout_s:g} s")
    return peak, flops, first


# ------------------------------------------------------------------------------------ operator
def _op_static_rows(case: OpCase, fn, args, step, ctx: dict) -> tuple[list, float]:
    """Count, measure memory and time the first call of a case; return its rows and that call's time."""
    mk = ctx["row"]
    counts = analytic_counts(
        case.variant, batch=case.batch, tokens=case.tokens, dim=case.dim, heads=case.heads
    )
    mult = 3 if case.pass_ == "fwd+bwd" else 1
    note = "forward count x 3 (backward = 2 x forward)" if mult == 3 else "forward"
    rows = [
        mk(case, "flops_analytic", mult * counts["flops"], "FLOPs", note=note),
        mk(
            case,
            "macs_analytic",
            mult * counts["macs"],
            "MACs",
            elementwise=mult * counts["elementwise"],
            note=note,
        ),
    ]
    peak, flops, first = _first_call(step, case.device, ctx["timeout_s"])
    rows.append(mk(case, "flops_torch", flops, "FLOPs", counter="torch.utils.flop_counter.FlopCounterMode"))
    if case.pass_ == "fwd":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            macs, unsupported = count_macs_fvcore(fn, *args)
        opaque = sorted(k for k in unsupported if k.startswith("prim::PythonOp"))
        if opaque:  # a custom autograd function is one opaque node to the tracer: its count would be 0
            msg = f"fvcore cannot count inside {', '.join(opaque)} (a custom autograd function)"
            rows.append(ctx["error"](case, msg, metric="macs_fvcore"))
        else:
            rows.append(
                mk(case, "macs_fvcore", macs, "MACs", counter="fvcore", unsupported=unsupported,
                   complete=not unsupported)
            )  # fmt: skip
    rows.append(mk(case, "peak_mib", peak / MIB, "MiB", bytes=peak, tracker=ctx["tracker"]))
    if case.device == "cpu" and case.tokens <= ctx["profile_max_tokens"]:
        ppeak = profiler_peak_bytes(step)
        rows.append(mk(case, "peak_mib_profiler", ppeak / MIB, "MiB", bytes=ppeak, tracker="torch.profiler"))
    return rows, first


def _run_groups(groups, ctx: dict, store: ResultStore | None, log) -> list[dict]:
    """Measure groups of cases; the cases of one group are timed interleaved, round by round."""
    all_rows: list[dict] = []
    for cases in groups:
        prepared: list[_Prepared] = []
        for case in cases:
            try:
                p = ctx["prepare"](case, ctx)
            except Exception as exc:  # a failed cell is a row, never a crash of the sweep
                reason = _reason(exc)
                rows = [ctx["error"](case, reason)]
                log(f"  {case.cell}: {reason}")
                if store is not None:
                    store.append(rows)
                all_rows += rows
                gc.collect()
                continue
            if isinstance(p, list):  # skipped before running: error rows
                if store is not None:
                    store.append(p)
                all_rows += p
                log(f"  {case.cell}: {p[0]['error']}")
                continue
            prepared.append(p)
        failed: dict[int, str] = {}
        for _ in range(ctx["rounds"]):
            for i, p in enumerate(prepared):
                if i in failed:
                    continue
                try:
                    with _alarm(2 * ctx["timeout_s"] + ctx["min_run_time"]):
                        p.samples += time_samples(
                            p.step,
                            ctx["device"],
                            ctx["min_run_time"],
                            ctx["threads"],
                            single=p.first_s >= ctx["min_run_time"],
                        )
                except Exception as exc:
                    failed[i] = _reason(exc)
                    log(f"  {p.case.cell}: {failed[i]}")
        for i, p in enumerate(prepared):
            if i in failed:
                rows = [ctx["error"](p.case, failed[i])]
            else:
                med, iqr = _median_iqr(p.samples)
                rows = p.rows + [
                    ctx["row"](
                        p.case, "latency_ms", 1e3 * med, "ms", iqr_ms=1e3 * iqr, samples=len(p.samples)
                    ),
                    ctx["row"](p.case, ctx["rate_metric"], p.units / med, ctx["rate_unit"]),
                ]
                ctx["times"][ctx["key"](p.case)] = (ctx["size"](p.case), med)
                log(f"  {p.case.cell}: {1e3 * med:.3f} ms (IQR {1e3 * iqr:.3f}, n={len(p.samples)})")
            if p.tokens is not None:
                rows = [_with_tokens(r, p.tokens) for r in rows]
            if store is not None:
                store.append(rows)
            all_rows += rows
        del prepared
        gc.collect()
    return all_rows


def _op_context(
    suite: str, device: str, threads: int, op: dict, budget_gib: float, timeout_s: float, seed: int
):
    prov = provenance(device)

    def row(case: OpCase, metric, value, unit, **extra):
        return make_row(
            suite, KIND, case.cell, case.variant, metric=metric, value=float(value), unit=unit, seed=seed,
            tokens=case.tokens, pass_=case.pass_, prov=prov, **case.extra(), **extra,
        )  # fmt: skip

    def error(case: OpCase, reason: str, metric: str = "error"):
        return error_row(
            suite, KIND, case.cell, case.variant, reason, metric=metric, seed=seed, tokens=case.tokens,
            pass_=case.pass_, prov=prov, **case.extra(),
        )  # fmt: skip

    ctx: dict[str, Any] = {
        "row": row,
        "error": error,
        "device": device,
        "threads": threads,
        "rounds": op.get("rounds", 3),
        "min_run_time": op.get("min_run_time", 0.2),
        "profile_max_tokens": op.get("profile_max_tokens", 4096),
        "timeout_s": timeout_s,
        "budget": budget_gib * 2**30,
        "tracker": "torch.cuda.max_memory_allocated" if device.startswith("cuda") else "LiveTensorTracker",
        "rate_metric": "tokens_per_s",
        "rate_unit": "tokens/s",
        "times": {},
        "key": lambda c: (c.variant, c.pass_),
        "size": lambda c: c.tokens,
        "seed": seed,
    }

    def prepare(case: OpCase, ctx=ctx):
        need = predicted_peak_bytes(case)
        if need > ctx["budget"]:
            return [
                error(case, f"skipped: predicted peak {need / 2**30:.1f} GiB exceeds the memory budget "
                      f"of {budget_gib:g} GiB (out of memory)")
            ]  # fmt: skip
        last = ctx["times"].get(ctx["key"](case))
        if last is not None:
            n0, t0 = last
            guess = t0 * (case.tokens / n0) ** 2  # quadratic growth: the conservative guess
            if guess > timeout_s:
                return [
                    error(case, f"timeout: skipped, predicted {guess:.0f} s per call from N={n0} exceeds "
                          f"the time limit of {timeout_s:g} s")
                ]  # fmt: skip
        fn, args, step = build_operator(case, seed=ctx["seed"])
        rows, first = _op_static_rows(case, fn, args, step, ctx)
        return _Prepared(case, step, rows, first, units=case.batch * case.tokens)

    ctx["prepare"] = prepare
    return ctx


def run_operator_sweep(
    suite_name: str, suite: dict, store: ResultStore | None = None, log=print, resume: bool = True
) -> list[dict]:
    """Run ``suite["complexity"]["operator"]`` (see :mod:`benchmarks.suites`); rows go to ``store``.

    Cells already in the store are skipped (resume). Sizes ascend so a quadratic variant that would
    pass the time limit is skipped from its measured trend. Returns the new rows.
    """
    op = suite["complexity"]["operator"]
    device = suite["device"]
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("suite device is 'cuda' but torch sees no CUDA device; run the cpu suite instead")
    threads = suite["threads"]
    torch.set_num_threads(threads)
    variants = expand_variants(op["variants"], device, op["dtype"])
    done = store.done_cells() if (store is not None and resume) else set()
    ctx = _op_context(
        suite_name, device, threads, op, suite["memory_budget_gib"], suite["timeout_s"], suite["seed"]
    )
    groups = []
    for pass_ in op["passes"]:
        for n in op["tokens"]:
            cases = [
                OpCase(v, n, op["batch"], op["dim"], op["heads"], op["dtype"], device, pass_)
                for v in variants
            ]
            todo = [c for c in cases if c.cell not in done]
            if todo:
                groups.append(todo)
    log(
        f"operator sweep: {sum(map(len, groups))} cells to run ({len(done)} already recorded), variants {variants}"
    )
    return _run_groups(groups, ctx, store, log)


def run_operator_cell(
    variant: str,
    *,
    tokens: int,
    dim: int = 384,
    heads: int = 8,
    batch: int = 1,
    pass_: str = "fwd",
    device: str = "cpu",
    dtype: str = "float32",
    suite: str = "adhoc",
    rounds: int = 1,
    min_run_time: float = 0.05,
    seed: int = 0,
) -> list[dict]:
    """Every row of one operator cell, measured now (nothing is stored)."""
    case = OpCase(variant, tokens, batch, dim, heads, dtype, device, pass_)
    op = {"rounds": rounds, "min_run_time": min_run_time, "profile_max_tokens": tokens}
    ctx = _op_context(suite, device, torch.get_num_threads(), op, 1e9, 1e9, seed)
    return _run_groups([[case]], ctx, None, lambda *_: None)


# ---------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelCase:
    """One model cell: a YOLO11 or timm variant at one square image size."""

    family: str  # "yolo" | "timm"
    variant: str
    image_size: int
    batch: int = 1
    device: str = "cpu"
    pass_: str = "fwd"

    @property
    def cell(self) -> str:
        return (
            f"model/{self.family}/{self.variant}/{self.pass_}/{self.device}-B{self.batch}/S{self.image_size}"
        )

    def extra(self) -> dict[str, Any]:
        return {"level": "model", "family": self.family, "device": self.device, "batch": self.batch}


def build_model(family: str, variant: str, image_size: int) -> torch.nn.Module:
    """A YOLO11 detection model from ``<variant>.yaml`` or a timm model at ``img_size=image_size``.

    Needs the project's integrations (``tssa.ultralytics``, ``tssa.timm``); raises ImportError when
    they are not importable.
    """
    if family == "yolo":
        # first: registers the modules and applies the offline settings before ultralytics reads them
        importlib.import_module("tssa.ultralytics")
        yolo = importlib.import_module("ultralytics").YOLO

        return yolo(f"{variant}.yaml").model
    if family == "timm":
        import timm

        import tssa.timm  # noqa: F401  (registers the ToST family)

        return timm.create_model(variant, img_size=image_size, pretrained=False)
    raise ValueError(f"unknown model family {family!r}; use 'yolo' or 'timm'")


_ATTN_CLASS = re.compile(r"Attention$")


def attention_tokens(model: torch.nn.Module, x: torch.Tensor) -> list[int]:
    """Tokens each attention layer sees in ``model(x)``: N of (B, N, C) inputs, H*W of (B, C, H, W).

    An attention layer is a module held under an attribute called ``attn`` (the convention of
    Ultralytics, timm and :mod:`tssa`) or whose class name ends in ``Attention``, and that is not inside
    another such module. Blocks named after their mixer (``C2TSSA``, ``C2NoAttn``, ``MixerPSABlock``)
    are not attention layers: a block without a mixer reports nothing, one with n mixers reports n.
    """

    def is_attn(name, m):
        return bool(_ATTN_CLASS.search(type(m).__name__)) or name.rsplit(".", 1)[-1] == "attn"

    outer = []
    for name, m in model.named_modules():
        if name and is_attn(name, m) and not any(name.startswith(o + ".") for o, _ in outer):
            outer.append((name, m))
    seen: list[int] = []

    def hook(mod, inputs):
        t = inputs[0] if inputs else None
        if isinstance(t, torch.Tensor):
            seen.append(int(t.shape[1]) if t.dim() == 3 else int(math.prod(t.shape[2:])))

    handles = [m.register_forward_pre_hook(hook) for _, m in outer]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _model_context(
    suite: str, device: str, threads: int, md: dict, budget_gib: float, timeout_s: float, seed: int
):
    prov = provenance(device)

    def row(case: ModelCase, metric, value, unit, **extra):
        return make_row(
            suite, KIND, case.cell, case.variant, metric=metric, value=float(value), unit=unit, seed=seed,
            image_size=case.image_size,
            pass_=case.pass_, prov=prov, **case.extra(), **extra,
        )  # fmt: skip

    def error(case: ModelCase, reason: str, metric: str = "error"):
        return error_row(
            suite, KIND, case.cell, case.variant, reason, metric=metric, seed=seed,
            image_size=case.image_size, pass_=case.pass_, prov=prov, **case.extra(),
        )  # fmt: skip

    ctx: dict[str, Any] = {
        "row": row,
        "error": error,
        "device": device,
        "threads": threads,
        "rounds": md.get("rounds", 2),
        "min_run_time": md.get("min_run_time", 0.2),
        "timeout_s": timeout_s,
        "rate_metric": "images_per_s",
        "rate_unit": "images/s",
        "times": {},
        "key": lambda c: (c.family, c.variant, c.pass_),
        "size": lambda c: c.image_size,
        "peaks": {},
        "seed": seed,
    }

    def prepare(case: ModelCase, ctx=ctx):
        last = ctx["times"].get(ctx["key"](case))
        if last is not None:
            s0, t0 = last
            guess = t0 * (case.image_size / s0) ** 4  # tokens grow with S^2; quadratic attention
            if guess > timeout_s:
                return [
                    error(case, f"timeout: skipped, predicted {guess:.0f} s per call from {s0}px exceeds "
                          f"the time limit of {timeout_s:g} s")
                ]  # fmt: skip
        seen = ctx["peaks"].get(ctx["key"](case))
        if seen is not None:
            s0, p0 = seen
            need = p0 * (case.image_size / s0) ** 4  # the quadratic worst case: N^2 with N ~ S^2
            if need > budget_gib * 2**30:
                return [
                    error(case, f"skipped: predicted peak {need / 2**30:.1f} GiB from {s0}px exceeds the "
                          f"memory budget of {budget_gib:g} GiB (out of memory)")
                ]  # fmt: skip
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = build_model(case.family, case.variant, case.image_size)
        except ImportError as exc:
            return [error(case, f"integration not importable: {exc}"[:300])]
        gen = torch.Generator().manual_seed(ctx["seed"])
        model = model.to(device)
        grad = case.pass_ == "fwd+bwd"
        x = torch.randn(case.batch, 3, case.image_size, case.image_size, generator=gen).to(device)
        tokens = attention_tokens(model.eval(), x)
        model.train(grad)  # fwd: eval mode under no_grad; fwd+bwd: train mode, backward of the output sum

        def scalar(out):
            leaves = [t for t in torch.utils._pytree.tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            return sum(t.float().sum() for t in leaves if t.is_floating_point())

        if grad:

            def step():
                model.zero_grad(set_to_none=True)
                scalar(model(x)).backward()
        else:

            def step():
                with torch.no_grad():
                    model(x)

        extra = {"attn_tokens": tokens, "params": sum(p.numel() for p in model.parameters())}
        rows = []
        peak, flops, first = _first_call(step, device, timeout_s)
        tok = max(tokens) if tokens else None
        rows.append(_with_tokens(row(case, "flops_torch", flops, "FLOPs", **extra), tok))
        if not grad:
            model.eval()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    macs, unsupported = count_macs_fvcore(model, x)
                    rows.append(
                        _with_tokens(
                            row(
                                case,
                                "macs_fvcore",
                                macs,
                                "MACs",
                                unsupported=unsupported,
                                complete=not unsupported,
                                **extra,
                            ),
                            tok,
                        )  # fmt: skip
                    )
                except Exception as exc:  # tracing a model can fail; say so in a row
                    msg = f"fvcore could not trace: {exc}"[:300]
                    rows.append(_with_tokens(error(case, msg, metric="macs_fvcore"), tok))
        ctx["peaks"][ctx["key"](case)] = (case.image_size, peak)
        rows.append(_with_tokens(row(case, "peak_mib", peak / MIB, "MiB", bytes=peak, **extra), tok))
        return _Prepared(case, step, rows, first, units=case.batch, tokens=tok)

    ctx["prepare"] = prepare
    return ctx


def _with_tokens(row: dict, tokens: int | None) -> dict:
    row["tokens"] = tokens
    return row


def run_model_sweep(
    suite_name: str, suite: dict, store: ResultStore | None = None, log=print, resume: bool = True
) -> list[dict]:
    """Run ``suite["complexity"]["model"]``: every YOLO/timm variant at every image size and pass."""
    md = suite["complexity"]["model"]
    device = suite["device"]
    torch.set_num_threads(suite["threads"])
    done = store.done_cells() if (store is not None and resume) else set()
    ctx = _model_context(
        suite_name,
        device,
        suite["threads"],
        md,
        suite["memory_budget_gib"],
        suite["timeout_s"],
        suite["seed"],
    )
    groups = []
    for pass_ in md["passes"]:
        for fam in ("yolo", "timm"):
            if md.get(fam) is None:
                continue
            for s in md[fam]["image_sizes"]:
                cases = [ModelCase(fam, v, s, md["batch"], device, pass_) for v in md[fam]["variants"]]
                todo = [c for c in cases if c.cell not in done]
                if todo:
                    groups.append(todo)
    log(f"model sweep: {sum(map(len, groups))} cells to run ({len(done)} already recorded)")
    rows = _run_groups(groups, ctx, store, log)
    return rows


# --------------------------------------------------------------------------------------- derived
def fit_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (the exponent k of ``y ~ x^k``)."""
    import numpy as np

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or len(set(x.tolist())) < 2:
        raise ValueError(f"a slope needs at least two distinct sizes, got {x.tolist()}")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("a log-log slope needs positive sizes and values")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def crossover(tokens, t_fast, t_ref) -> dict[str, Any]:
    """Smallest N from which ``t_fast < t_ref`` at every larger measured N, interpolated in log-log.

    Returns ``{"n": float | None, "where": "inside" | "below" | "above"}``: ``below`` means faster at
    every measured N (``n`` = the smallest N), ``above`` never faster at the largest N (``n`` None).
    """
    pts = sorted(zip(tokens, t_fast, t_ref))
    if not pts:
        raise ValueError("crossover needs at least one common size")
    logr = [math.log(a / b) for _, a, b in pts]
    if logr[-1] >= 0:
        return {"n": None, "where": "above"}
    i = len(pts) - 1
    while i > 0 and logr[i - 1] < 0:
        i -= 1
    if i == 0:
        return {"n": float(pts[0][0]), "where": "below"}
    n0, n1, r0, r1 = pts[i - 1][0], pts[i][0], logr[i - 1], logr[i]
    frac = r0 / (r0 - r1)  # linear in log N between the last slower and the first faster point
    return {"n": float(math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0)))), "where": "inside"}


def derive(df, fit_min_tokens: int = 1024, reference: str = "sdpa") -> dict[str, Any]:
    """Slopes and crossovers from operator rows (a DataFrame of :meth:`ResultStore.load`).

    ``slopes[(variant, pass)] = {"time": k, "memory": k, "points": n, "fit": [Nmin, Nmax]}``, fitted on
    error-free rows with N >= ``fit_min_tokens`` (a variant with fewer than two such sizes is fitted on
    its two largest sizes); ``crossover[(variant, pass)]`` compares each ``tssa:*`` variant's median
    latency with ``reference``'s at the sizes both have.
    """
    ok = df[(df["kind"] == KIND) & df["error"].isna()]
    if "level" in ok.columns:
        ok = ok[ok["level"] == "operator"]
    slopes: dict = {}
    cross: dict = {}
    lat = ok[ok["metric"] == "latency_ms"]
    mem = ok[ok["metric"] == "peak_mib"]
    for (variant, pass_), g in lat.groupby(["variant", "pass"]):
        g = g.sort_values("tokens").drop_duplicates("tokens", keep="last")
        m = mem[(mem["variant"] == variant) & (mem["pass"] == pass_)].sort_values("tokens")
        m = m.drop_duplicates("tokens", keep="last")
        sel = g[g["tokens"] >= fit_min_tokens]
        if len(sel) < 2:
            sel = g.tail(2)
        msel = m[m["tokens"].isin(sel["tokens"])]
        entry = {"points": int(len(sel)), "fit": [int(sel["tokens"].min()), int(sel["tokens"].max())]}
        entry["time"] = fit_slope(sel["tokens"], sel["value"]) if len(sel) >= 2 else None
        entry["memory"] = fit_slope(msel["tokens"], msel["value"]) if len(msel) >= 2 else None
        slopes[(variant, pass_)] = entry
    for pass_ in sorted(set(lat["pass"])):
        ref = lat[(lat["variant"] == reference) & (lat["pass"] == pass_)].set_index("tokens")["value"]
        for variant in sorted(v for v in set(lat["variant"]) if v.startswith("tssa")):
            mine = lat[(lat["variant"] == variant) & (lat["pass"] == pass_)].set_index("tokens")["value"]
            common = sorted(set(ref.index) & set(mine.index))
            if common:
                c = crossover(common, [mine[n] for n in common], [ref[n] for n in common])
                top = common[-1]
                c.update(n_max=int(top), speedup_at_n_max=float(ref[top] / mine[top]))
                cross[(variant, pass_)] = c
    source = {}
    for key in ("git", "dirty", "device_name", "threads", "torch"):
        col = f"prov.{key}"
        if col in ok.columns:
            source[key] = sorted({str(v) for v in ok[col].dropna()})
    return {
        "slopes": slopes,
        "crossover": cross,
        "reference": reference,
        "fit_min_tokens": fit_min_tokens,
        "source": source,
        "models": derive_models(df),
    }


def derive_models(df) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Per (family, variant, pass) of the model rows: sizes, median latency, attention tokens, FLOPs,
    and the log-log slope of latency against the largest attention token count (where it varies)."""
    if "level" not in df.columns or "family" not in df.columns:
        return {}
    ok = df[(df["kind"] == KIND) & df["error"].isna() & (df["level"] == "model")]
    out: dict = {}
    for (fam, variant, pass_), g in ok.groupby(["family", "variant", "pass"]):
        lat = (
            g[g["metric"] == "latency_ms"].drop_duplicates("image_size", keep="last").set_index("image_size")
        )
        fl = (
            g[g["metric"] == "flops_torch"].drop_duplicates("image_size", keep="last").set_index("image_size")
        )
        sizes = sorted(int(x) for x in lat.index)
        entry = {
            "sizes": sizes,
            "latency_ms": [float(lat.loc[x, "value"]) for x in sizes],
            "tokens": [
                None if lat.loc[x, "tokens"] != lat.loc[x, "tokens"] else int(lat.loc[x, "tokens"])
                for x in sizes
            ],
            "gflops": [float(fl.loc[x, "value"]) / 1e9 if x in fl.index else None for x in sizes],
        }
        pts = [(t, v) for t, v in zip(entry["tokens"], entry["latency_ms"]) if t]
        entry["time_slope_vs_tokens"] = (
            fit_slope([t for t, _ in pts], [v for _, v in pts]) if len({t for t, _ in pts}) >= 2 else None
        )
        out[(fam, variant, pass_)] = entry
    return out


def _models_markdown(models: dict) -> list[str]:
    lines: list[str] = []
    for fam in sorted({k[0] for k in models}):
        keys = sorted(k for k in models if k[0] == fam)
        sizes = sorted({s for k in keys for s in models[k]["sizes"]})
        lines += [
            "",
            f"Model level ({fam}): median latency in ms (largest attention token count) per image size, and the "
            "log-log slope of latency against those tokens:",
            "",
            "| model | pass | " + " | ".join(f"{s} px" for s in sizes) + " | slope |",
            "| --- | --- | " + " | ".join("---:" for _ in sizes) + " | ---: |",
        ]
        for k in keys:
            m = models[k]
            cells = []
            for s in sizes:
                if s in m["sizes"]:
                    i = m["sizes"].index(s)
                    cells.append(f"{m['latency_ms'][i]:.1f} ({m['tokens'][i]})")
                else:
                    cells.append("error row")
            slope = f"{m['time_slope_vs_tokens']:.2f}" if m["time_slope_vs_tokens"] is not None else "n/a"
            lines.append(f"| {k[1]} | {k[2]} | " + " | ".join(cells) + f" | {slope} |")
    return lines


def derived_markdown(derived: dict[str, Any], command: str) -> str:
    """The README block: a slope table and the crossover sentence for each TSSA impl and pass."""
    lines = [
        f"Log-log slopes (time ~ N^k, peak memory ~ N^k), fitted on N >= {derived['fit_min_tokens']}; "
        f"produced by `{command}`.",
        "",
        "| operator | pass | time slope | memory slope | sizes fitted |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for (variant, pass_), s in sorted(derived["slopes"].items()):
        t = f"{s['time']:.2f}" if s["time"] is not None else "n/a"
        m = f"{s['memory']:.2f}" if s["memory"] is not None else "n/a"
        lines.append(f"| {variant} | {pass_} | {t} | {m} | {s['fit'][0]}..{s['fit'][1]} ({s['points']}) |")
    lines += ["", f"Crossover N (TSSA median latency below {derived['reference']} from this N on):", ""]
    for (variant, pass_), c in sorted(derived["crossover"].items()):
        if c["where"] == "inside":
            text = f"N ~ {c['n']:.0f}"
        elif c["where"] == "below":
            text = f"faster at every measured N (from N = {c['n']:.0f})"
        else:
            text = "not faster at the largest measured N"
        if "speedup_at_n_max" in c:
            text += f"; {derived['reference']} / TSSA time at N = {c['n_max']}: {c['speedup_at_n_max']:.1f}x"
        lines.append(f"- {variant}, {pass_}: {text}")
    lines += _models_markdown(derived.get("models") or {})
    src = derived.get("source") or {}
    if src:
        desc = ", ".join(f"{k} {'/'.join(v)}" for k, v in src.items() if v)
        lines += ["", f"Rows from: {desc}."]
    return "\n".join(lines)


def derived_json(derived: dict[str, Any]) -> dict[str, Any]:
    """The derived numbers with string keys (``variant|pass``), for JSON."""
    return {
        "reference": derived["reference"],
        "fit_min_tokens": derived["fit_min_tokens"],
        "slopes": {f"{v}|{p}": s for (v, p), s in sorted(derived["slopes"].items())},
        "crossover": {f"{v}|{p}": c for (v, p), c in sorted(derived["crossover"].items())},
        "source": derived.get("source", {}),
        "models": {"|".join(k): m for k, m in sorted((derived.get("models") or {}).items())},
    }


README_BEGIN = "<!-- complexity:{suite}:begin -->"
README_END = "<!-- complexity:{suite}:end -->"


def write_readme_block(readme, suite: str, block: str) -> None:
    """Replace the text between the suite's markers in ``readme`` (atomically: temp file + rename)."""
    import os
    from pathlib import Path

    path = Path(readme)
    begin, end = README_BEGIN.format(suite=suite), README_END.format(suite=suite)
    text = path.read_text(encoding="utf-8")
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError(
            f"{path} has no '{begin}' ... '{end}' block; add both marker lines where the numbers go"
        )
    new = text[: i + len(begin)] + "\n" + block.strip() + "\n" + text[j:]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)


__all__ = [
    "OpCase",
    "ModelCase",
    "build_operator",
    "build_model",
    "attention_tokens",
    "expand_variants",
    "measure_peak_bytes",
    "profiler_peak_bytes",
    "predicted_peak_bytes",
    "time_samples",
    "run_operator_sweep",
    "run_operator_cell",
    "run_model_sweep",
    "fit_slope",
    "crossover",
    "derive",
    "derive_models",
    "derived_markdown",
    "derived_json",
    "write_readme_block",
]
