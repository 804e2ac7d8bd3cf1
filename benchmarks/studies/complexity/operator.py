"""Operator cells: TSSA, softmax attention and the projection floor at one token count.

Variants (``complexity.operator.variants`` of a suite):

- ``tssa:<impl>``: the TSSA core ``tssa(W, tau, impl=impl)`` on W (B, H, N, D) in the layout the
  layer hands it: the head split of the (B, N, C) projection, a strided view, no copy
  (``tssa:*`` = every registered implementation usable on the device; ``tssa:auto`` = the dispatch);
- ``sdpa``: ``F.scaled_dot_product_attention(Q, K, V)`` on the head split of a (B, N, 3C)
  projection, as :class:`~tssa.nn.SoftmaxAttention` hands it; ``softmax``: the same with the
  N x N matrix materialised;
- ``layer:tssa[:<impl>]``: the whole :class:`~tssa.nn.TokenStatisticsAttention` (projection, core,
  output projection) on x (B, N, C); ``layer:sdpa``, ``layer:softmax``: the whole
  :class:`~tssa.nn.SoftmaxAttention` with its own (3C and C) projections;
- ``floor``: the two C x C projections of a TSSA layer alone, which a TSSA layer cannot beat.

Passes: ``fwd`` (inference under ``no_grad``) and ``fwd+bwd`` (forward plus the backward of one
fixed random upstream gradient, previous gradients dropped).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.core import impl as _impl
from benchmarks.core.cells import Cell
from benchmarks.core.flops import analytic_counts, count_macs_fvcore
from benchmarks.core.measure import MIB, count_call, profiler_peak_bytes, time_interleaved, torch_threads
from benchmarks.core.runner import Context, Group, Outcome, reason

CORE = ("tssa", "softmax", "sdpa")
LAYER = ("layer:tssa", "layer:sdpa", "layer:softmax")


def variant_base(variant: str) -> str:
    """``tssa:lean`` -> ``tssa``; ``layer:tssa:lean`` -> ``layer:tssa``; ``floor`` -> ``floor``."""
    parts = variant.split(":")
    return ":".join(parts[:2]) if parts[0] == "layer" else parts[0]


def check_variant(variant: str) -> None:
    """ValueError naming the allowed forms when ``variant`` is not one the sweep knows."""
    from tssa.ops import available_impls

    impls = [*available_impls(), "auto"]
    parts = variant.split(":")
    ok = False
    if variant in ("softmax", "sdpa", "floor", "layer:sdpa", "layer:softmax", "tssa:*", "layer:tssa"):
        ok = True
    elif parts[0] == "tssa" and len(parts) == 2:
        ok = parts[1] in impls
    elif parts[:2] == ["layer", "tssa"] and len(parts) == 3:
        ok = parts[2] in impls
    if not ok:
        raise ValueError(
            f"unknown operator variant {variant!r}; allowed: tssa:<impl>, tssa:*, layer:tssa[:<impl>], "
            f"softmax, sdpa, layer:sdpa, layer:softmax, floor (impls: {', '.join(impls)})"
        )


def expand_variants(variants: list[str], device: str, dtype: str) -> list[str]:
    """Replace ``tssa:*`` by ``tssa:<impl>`` for every registered impl that runs on this device/dtype
    (explicit-only paths such as ``compile``, with a negative priority, are left out)."""
    from tssa.ops import _IMPLS, available_impls

    try:
        probe = torch.zeros(1, 2, 4, 4, device=device, dtype=getattr(torch, dtype))
    except (RuntimeError, AssertionError):  # the device is not here (a --dry-run elsewhere): list every impl
        probe = None
    out: list[str] = []
    for v in variants:
        check_variant(v)
        if v == "tssa:*":
            for name in available_impls():
                if _IMPLS[name].priority < 0:
                    continue
                try:
                    ok = probe is None or _IMPLS[name].supports(probe, False)
                except Exception:  # an impl whose probe fails cannot run here
                    ok = False
                if ok and f"tssa:{name}" not in out:
                    out.append(f"tssa:{name}")
        elif v not in out:
            out.append(v)
    return out


def _materialised(q, k, v):
    scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(q.shape[-1]))  # (B, H, N, N)
    return torch.softmax(scores, dim=-1) @ v  # (B, H, N, D)


def build_operator(
    cell: Cell, seed: int = 0, shared: dict | None = None
) -> tuple[Callable, tuple, Callable[[], None]]:
    """``(fn, args, step)`` of an operator cell: ``fn(*args)`` is the forward, ``step()`` one call.

    Inputs and weights come from a seeded CPU generator, then move to the device, so a seed gives
    the same data on every machine. With ``shared`` (one dict per group of cells) the cells of a group
    take the same tensor wherever they would draw the same values (the first input of one shape, the
    upstream gradient): an interleaved group of many sizes then holds one set of inputs per size, not
    one per variant. ``step()`` of forward+backward leaves no gradient behind (it frees them after the
    backward), so a cell holds only its inputs between calls.
    """
    b, n, c, h = cell["batch"], cell["tokens"], cell["dim"], cell["heads"]
    d = c // h
    dt, dev = getattr(torch, cell["dtype"]), torch.device(cell["device"])
    grad = cell["pass"] == "fwd+bwd"
    variant = cell["variant"]
    base = variant_base(variant)
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=dev, dtype=dt).requires_grad_(grad)

    def first_input(*shape):  # the generator's first draw: the same values for every variant of a shape
        key = ("input", shape, dt, dev, grad, seed)
        if shared is None:
            return rnd(*shape)
        if key not in shared:
            shared[key] = rnd(*shape)
        else:
            torch.randn(*shape, generator=gen)  # keep the generator where its own draw would leave it
        return shared[key]

    if base == "tssa":
        from tssa.ops import tssa

        impl = variant.split(":")[1]

        def fn(p, tau):  # p: (B, N, C), the projection output; its head split is a strided view
            return tssa(p.view(b, n, h, d).transpose(1, 2), tau, impl=impl)  # (B, H, N, D)

        args = (first_input(b, n, c), torch.ones(h, device=dev, dtype=dt).requires_grad_(grad))
    elif base in ("sdpa", "softmax"):
        attend = F.scaled_dot_product_attention if base == "sdpa" else _materialised

        def fn(p):  # p: (B, N, 3C) -> q, k, v (B, H, N, D) views, as SoftmaxAttention splits them
            q, k, v = p.view(b, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
            return attend(q, k, v)

        args = (first_input(b, n, 3 * c),)
    elif base == "floor":

        def fn(x, w1, w2):
            return F.linear(F.linear(x, w1), w2)  # (B, N, C) -> (B, N, C) -> (B, N, C)

        args = (first_input(b, n, c), rnd(c, c, scale=c**-0.5), rnd(c, c, scale=c**-0.5))
    elif base.startswith("layer:"):
        from tssa.nn import SoftmaxAttention, TokenStatisticsAttention

        torch.manual_seed(seed)
        if base == "layer:tssa":
            parts = variant.split(":")
            layer = TokenStatisticsAttention(c, h, impl=parts[2] if len(parts) > 2 else "auto")
        else:
            layer = SoftmaxAttention(c, h, fused_attn=base == "layer:sdpa")
        layer = layer.to(device=dev, dtype=dt).train(grad)
        layer.requires_grad_(grad)
        fn = layer
        args = (first_input(b, n, c),)
    else:  # pragma: no cover - check_variant guards
        raise ValueError(f"unknown operator variant {variant!r}")
    out_shape = (b, h, n, d) if base in CORE else (b, n, c)
    dy_key = ("dy", out_shape, dt, dev, seed)
    dy = (shared or {}).get(dy_key)
    if dy is None:
        dy = torch.randn(out_shape, generator=torch.Generator().manual_seed(seed + 1)).to(
            device=dev, dtype=dt
        )
        if shared is not None:
            shared[dy_key] = dy

    if grad:

        def release():
            for a in args:
                a.grad = None
            if isinstance(fn, torch.nn.Module):
                fn.zero_grad(set_to_none=True)

        def step():
            release()
            fn(*args).backward(dy)
            release()
    else:

        def step():
            with torch.no_grad():
                fn(*args)

    return fn, args, step


def analytic(cell: Cell) -> dict[str, int]:
    """Forward MACs / elementwise ops / FLOPs of a cell by formula (:func:`benchmarks.core.flops.analytic_counts`);
    layers add their projections (bias additions are not counted, as ``FlopCounterMode`` does not)."""
    b, n, c, h = cell["batch"], cell["tokens"], cell["dim"], cell["heads"]
    base = variant_base(cell["variant"])
    if base.startswith("layer:"):
        core = analytic_counts(base.split(":")[1], batch=b, tokens=n, dim=c, heads=h)
        proj = (2 if base == "layer:tssa" else 4) * b * n * c * c
        macs, elem = core["macs"] + proj, core["elementwise"]
        if base == "layer:softmax":  # SoftmaxAttention scales q (B, H, N, D), not the N x N scores
            elem += b * n * c - b * h * n * n
    else:
        core = analytic_counts(base, batch=b, tokens=n, dim=c, heads=h)
        macs, elem = core["macs"], core["elementwise"]
    return {"macs": macs, "elementwise": elem, "flops": 2 * macs + elem}


def predicted_peak_bytes(cell: Cell) -> int:
    """A generous estimate of a cell's extra memory, to skip cells over the budget before running:
    materialised softmax holds two (B, H, N, N) matrices forward and three backward; every other
    variant is linear in N."""
    b, n, c, h = cell["batch"], cell["tokens"], cell["dim"], cell["heads"]
    size = torch.empty((), dtype=getattr(torch, cell["dtype"])).element_size()
    linear = 16 * b * n * c * size
    if variant_base(cell["variant"]) in ("softmax", "layer:softmax"):
        return linear + (3 if cell["pass"] == "fwd+bwd" else 2) * b * h * n * n * size
    return linear


_SAME_SERIES = ("variant", "pass", "device", "dtype", "batch", "dim", "heads", "threads")


def predicted_seconds(cell: Cell, history: list[dict[str, Any]]) -> tuple[float, int] | None:
    """Per-call seconds predicted from this run's latency at the largest smaller N of the same series
    (quadratic growth: the conservative guess), with that N; None without a smaller size."""
    best = None
    for r in history:
        if r["metric"] != "latency_ms" or r.get("level") != "operator" or r["error"] is not None:
            continue
        if any(r.get(k) != cell[k] for k in _SAME_SERIES):
            continue
        if r["tokens"] < cell["tokens"] and (best is None or r["tokens"] > best[1]):
            best = (r["value"] / 1e3, r["tokens"])
    if best is None:
        return None
    return best[0] * (cell["tokens"] / best[1]) ** 2, best[1]


def execute(cells: list[Cell], ctx: Context) -> dict[str, Outcome]:
    """Measure one (tokens, pass, threads) group (or several sizes interleaved) on the cells' thread count; the process's own count is restored afterwards."""
    with torch_threads(cells[0]["threads"]):
        return _execute(cells, ctx)


def _execute(cells: list[Cell], ctx: Context) -> dict[str, Outcome]:
    """Measure the cells of one (tokens, pass, threads) group: counts, memory, then interleaved time."""
    suite = ctx.suite
    op = suite["complexity"]["operator"]
    timeout_s, budget = suite["timeout_s"], suite["memory_budget_gib"] * 2**30
    seed = suite["seed"]
    threads = cells[0]["threads"]
    device = cells[0]["device"]
    # sizes of one interleaved group predict from the counted calls of the smaller ones before them
    history = list(ctx.history())
    out: dict[str, Outcome] = {}
    steps, static, shared = {}, {}, {}
    for cell in cells:
        need = predicted_peak_bytes(cell)
        if need > budget:
            out[cell.id] = Outcome(
                skipped=f"predicted peak {need / 2**30:.1f} GiB exceeds the memory budget of "
                f"{budget / 2**30:g} GiB (out of memory)"
            )
            continue
        guess = predicted_seconds(cell, history)
        if guess is not None and guess[0] > timeout_s:
            out[cell.id] = Outcome(
                skipped=f"timeout: predicted {guess[0]:.0f} s per call from N={guess[1]} exceeds the "
                f"time limit of {timeout_s:g} s"
            )
            continue
        try:
            fn, args, step = build_operator(cell, seed, shared)
            static[cell.id], first = _static_rows(cell, fn, args, step, ctx, op, timeout_s)
            steps[cell.id] = step
            history.append({"metric": "latency_ms", "level": "operator", "error": None, "value": 1e3 * first,
                            **{k: cell[k] for k in (*_SAME_SERIES, "tokens")}})  # fmt: skip
        except Exception as exc:
            out[cell.id] = Outcome(failed=reason(exc))
    timings = time_interleaved(
        steps,
        device=device,
        rounds=op["rounds"],
        min_run_time=op["min_run_time"],
        threads=threads,
        guard_s=2 * timeout_s + op["min_run_time"],
    )
    by_id = {c.id: c for c in cells}
    for cid, t in timings.items():
        cell = by_id[cid]
        if t.error is not None:
            out[cid] = Outcome(failed=t.error)
            continue
        med = t.median
        rows = static[cid] + [
            ctx.row(
                cell,
                "latency_ms",
                1e3 * med,
                iqr_ms=1e3 * t.iqr,
                min_ms=1e3 * t.fastest,
                samples=len(t.samples),
                calls=t.calls,
                **t.provenance(),
            ),
            ctx.row(cell, "tokens_per_s", cell["batch"] * cell["tokens"] / med, samples=len(t.samples)),
        ]
        if device.startswith("cuda") and variant_base(cell["variant"]) == "tssa":
            size = torch.empty((), dtype=getattr(torch, cell["dtype"])).element_size()
            traffic = core_traffic_bytes(
                cell["batch"] * cell["tokens"] * cell["dim"], size, cell["pass"] == "fwd+bwd"
            )
            rows.append(ctx.row(cell, "achieved_gbps", traffic / med / 1e9, traffic_bytes=traffic))
        out[cid] = Outcome(rows=rows)
        ctx.log(f"  {cell['variant']:>16s} {cell['pass']:7s} N={cell['tokens']:<6d} {1e3 * med:10.3f} ms "
                f"(IQR {1e3 * t.iqr:.3f}, {len(t.samples)} samples, {t.calls} calls)")  # fmt: skip
    return out


def core_traffic_bytes(n_elems: int, itemsize: int, backward: bool) -> int:
    """The least DRAM traffic of the three-pass core: forward reads ``w`` 3x and writes ``Y`` once;
    backward reads ``w`` 3x and ``dY`` 2x and writes ``dW`` once (per-head statistics ignored)."""
    return n_elems * itemsize * (6 if backward else 4)


def _static_rows(
    cell: Cell, fn, args, step, ctx: Context, op: dict, timeout_s: float
) -> tuple[list[dict], float]:
    """Formula counts, the counted call (FLOPs, peak memory), fvcore, and the profiler's peak; and the
    counted call's seconds (an upper bound of one call: the counters slow it)."""
    mult = 3 if cell["pass"] == "fwd+bwd" else 1
    note = "forward count x 3 (backward = 2 x forward)" if mult == 3 else "forward"
    a = analytic(cell)
    rows = [
        ctx.row(cell, "flops_analytic", mult * a["flops"], note=note),
        ctx.row(cell, "macs_analytic", mult * a["macs"], note=note),
        ctx.row(cell, "elementwise_analytic", mult * a["elementwise"], note=note),
    ]
    peak, flops, first = count_call(step, cell["device"], timeout_s)
    rows.append(ctx.row(cell, "flops_torch", flops, counter="torch.utils.flop_counter.FlopCounterMode"))
    tracker = "torch.cuda.max_memory_allocated" if cell["device"].startswith("cuda") else "LiveTensorTracker"
    rows.append(ctx.row(cell, "peak_mib", peak / MIB, bytes=peak, tracker=tracker))
    if cell["pass"] == "fwd":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            macs, unsupported = count_macs_fvcore(fn, *args)
        opaque = sorted(k for k in unsupported if k.startswith("prim::PythonOp"))
        if opaque:  # a custom autograd function is one opaque node to the tracer: its count would be 0
            msg = f"fvcore cannot count inside {', '.join(opaque)} (a custom autograd function)"
            rows.append(ctx.row(cell, "macs_fvcore", None, error=msg))
        else:
            rows.append(
                ctx.row(cell, "macs_fvcore", macs, counter="fvcore", unsupported=unsupported,
                        complete=not unsupported)
            )  # fmt: skip
    if cell["device"] == "cpu" and cell["tokens"] <= op["profile_max_tokens"]:
        ppeak = profiler_peak_bytes(step)
        rows.append(ctx.row(cell, "peak_mib_profiler", ppeak / MIB, bytes=ppeak, tracker="torch.profiler"))
    return rows, first


def plan(suite_name: str, suite: dict[str, Any]) -> list[Group]:
    """Groups of the operator sweep: one per (threads, pass, N), N ascending, variants interleaved; the
    sizes from ``interleave_from`` up form one group per (threads, pass), sizes and variants interleaved
    (a slope compares times at different N: timed in the same rounds, a drift of the machine between
    groups cannot pass for a change of slope)."""
    op = suite["complexity"]["operator"]
    device = suite["device"]
    variants = expand_variants(op["variants"], device, op["dtype"])
    settings = {k: op[k] for k in ("rounds", "min_run_time", "profile_max_tokens")} | {
        "memory_budget_gib": suite["memory_budget_gib"],
        "timeout_s": suite["timeout_s"],
        "seed": suite["seed"],
    }
    # the TSSA layer through ``auto`` names the core it resolves to (part of the cell's identity)
    cores = {"layer:tssa": _impl.core_param(frozenset({"auto"}), device, op["dtype"])}
    caps = op.get("max_tokens") or {}
    merge_from = op.get("interleave_from") or math.inf
    groups = []
    for threads in op["threads"] or [suite["threads"]]:
        for pass_ in op["passes"]:
            merged = []
            for n in op["tokens"]:
                cells = [
                    Cell.make(
                        "complexity",
                        {
                            "level": "operator",
                            "variant": v,
                            "pass": pass_,
                            "device": device,
                            "dtype": op["dtype"],
                            "batch": op["batch"],
                            "dim": op["dim"],
                            "heads": op["heads"],
                            "threads": threads,
                            "tokens": n,
                            **cores.get(v, {}),
                        },  # fmt: skip
                        settings,
                    )
                    for v in variants
                    if n <= caps.get(v, caps.get(variant_base(v), n))
                ]
                if n >= merge_from:
                    merged += cells
                    continue
                groups.append(Group(cells, execute, label=f"operator {pass_} N={n} threads={threads}", exclusive=True,
                                    threads=threads))  # fmt: skip
            if merged:
                ns = sorted({c["tokens"] for c in merged})
                groups.append(Group(merged, execute, label=f"operator {pass_} N={ns[0]}..{ns[-1]} interleaved "
                                    f"threads={threads}", exclusive=True, threads=threads))  # fmt: skip
    return groups
