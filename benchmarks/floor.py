"""TSSA against the floor of its two linear projections: forward time and forward+backward memory.

The floor is ``x -> Linear(C, C) -> Linear(C, C)``; the layer adds the statistics core between them,
so ``layer / floor`` is the constant a linear-time operator pays on top of what it cannot avoid.

- time: median forward time of the layer with each core implementation over that of the floor,
  timed in one process, interleaved, with a fixed thread count (absolute times on a shared machine
  are only trends);
- memory: peak live tensor bytes of ``layer(x).sum().backward()`` over the same for the floor,
  measured at the dispatcher (:class:`tssa.utils.LiveTensorTracker`; exact and deterministic).

    python -m benchmarks.floor --tokens 1024 4096 16384 --dim 384 --heads 8 --threads 1

``--device cuda`` instead measures the core on a GPU (CUDA only): achieved GB/s of the TSSA core
against the device's bandwidth, and TSSA against ``scaled_dot_product_attention`` (flash for bf16)
forward and forward+backward, written as rows of the result store (``--suite gpu``).
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.utils.benchmark as tb

from tssa.nn import TokenStatisticsAttention
from tssa.ops import available_impls, resolve_impl, tssa
from tssa.utils import LiveTensorTracker

DEFAULT_IMPLS = ["naive", "lean", "stream"]


def floor_ratios(tokens: int, dim: int, heads: int, impls: list[str], min_run_time: float = 1.0) -> dict:
    """Median forward times (ms) of the two projections and of the layer with each impl, and ratios.

    Returns ``{"ms": {"floor": t0, impl: t, ...}, "ratio": {impl: t / t0, ...}}``.
    """
    torch.manual_seed(0)
    layer = TokenStatisticsAttention(dim, heads).eval()
    lin1, lin2 = layer.qkv, layer.to_out[0]
    x = torch.randn(1, tokens, dim)

    def floor_fn():
        return lin2(lin1(x))

    def layer_fn(impl):
        layer.impl = impl
        return layer(x)

    stmts = {"floor": floor_fn, **{impl: (lambda i=impl: layer_fn(i)) for impl in impls}}
    with torch.no_grad():
        for fn in stmts.values():  # warm-up
            fn()
        times = {}
        for _ in range(3):  # interleave rounds so drift hits every variant alike
            for name, fn in stmts.items():
                m = tb.Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
                times.setdefault(name, []).append(m.blocked_autorange(min_run_time=min_run_time / 3).median)
    med = {k: 1e3 * sorted(v)[len(v) // 2] for k, v in times.items()}
    return {"ms": med, "ratio": {k: med[k] / med["floor"] for k in impls}}


def _peak_fwd_bwd(fn, x: torch.Tensor) -> int:
    x = x.detach().clone().requires_grad_()
    with LiveTensorTracker() as tracker:
        fn(x).sum().backward()
    return tracker.peak


def memory_ratios(tokens: int, dim: int, heads: int, impls: list[str]) -> dict:
    """Peak bytes of forward+backward of the layer with each impl over that of the two projections.

    Input ``x`` (1, N, C) and the parameters exist beforehand and are not counted
    (:class:`tssa.utils.LiveTensorTracker`); activations, saved tensors and every gradient (weights included) are. Returns ``{"mib": {...}, "ratio": {...}}``.
    """
    torch.manual_seed(0)
    layer = TokenStatisticsAttention(dim, heads)
    lin1, lin2 = layer.qkv, layer.to_out[0]
    x = torch.randn(1, tokens, dim)
    peaks = {"floor": _peak_fwd_bwd(lambda t: lin2(lin1(t)), x)}
    for impl in impls:
        layer.impl = impl
        layer.zero_grad(set_to_none=True)
        peaks[impl] = _peak_fwd_bwd(layer, x)
    return {
        "mib": {k: v / 2**20 for k, v in peaks.items()},
        "ratio": {k: peaks[k] / peaks["floor"] for k in impls},
    }


# ----------------------------------------------------------------------------------------------- GPU


def device_bandwidth_gbps(device: torch.device) -> float | None:
    """Theoretical DRAM bandwidth (GB/s) from the device's memory clock and bus width, if reported."""
    props = torch.cuda.get_device_properties(device)
    clock_khz = getattr(props, "memory_clock_rate", 0)
    bus_bits = getattr(props, "memory_bus_width", 0)
    if not clock_khz or not bus_bits:
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9  # double data rate


def _bench_ms(fn, device: torch.device) -> float:
    """Median milliseconds of ``fn()``: triton's do_bench on CUDA (synchronised), a torch Timer elsewhere."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    return 1e3 * tb.Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.2).median


def core_traffic_bytes(n_elems: int, itemsize: int, backward: bool) -> int:
    """The least DRAM traffic of the three-pass core: forward reads ``w`` 3x and writes ``Y`` once;
    backward reads ``w`` 3x and ``dY`` 2x and writes ``dW`` once (per-head statistics ignored)."""
    return n_elems * itemsize * (6 if backward else 4)


def gpu_core_rows(
    tokens: list[int],
    dim: int = 384,
    heads: int = 8,
    batch: int = 1,
    dtypes: tuple[str, ...] = ("bfloat16", "float32"),
    device: str = "cuda",
    suite: str = "gpu",
) -> list[dict]:
    """Rows of the result store: the TSSA core (``impl="auto"``) and SDPA, fwd and fwd+bwd.

    Metrics per (variant, dtype, N, pass): ``latency_ms``, ``peak_mib`` (CUDA only); for TSSA also
    ``achieved_gbps`` (:func:`core_traffic_bytes` / time) and ``bandwidth_frac`` (of the device's).
    An out-of-memory cell becomes an error row. Runs on CPU too (for tests), without the memory rows.
    """
    from benchmarks.store import error_row, make_row, provenance

    dev = torch.device(device)
    prov = provenance(device)
    peak_bw = device_bandwidth_gbps(dev) if dev.type == "cuda" else None
    d = dim // heads
    rows = []
    for dtype_name in dtypes:
        dt = getattr(torch, dtype_name)
        for n in tokens:
            g = torch.Generator(device=dev).manual_seed(0)
            shape = (batch, heads, n, d)  # (B, H, N, D)
            tssa_impl = resolve_impl("auto", torch.empty(1, 1, 1, 1, device=dev).expand(shape))
            variants = {f"tssa:{tssa_impl}": "tssa", "sdpa:flash" if dt != torch.float32 else "sdpa": "sdpa"}
            for variant, kind in variants.items():
                for pass_ in ("fwd", "fwd+bwd"):
                    cell = f"op/{variant}/{pass_}/{dtype_name}/B{batch}-C{dim}-H{heads}/N{n}"
                    common = dict(tokens=n, pass_=pass_, prov=prov, dtype=dtype_name, dim=dim, heads=heads)
                    try:
                        ms, peak = _time_core(kind, shape, dt, dev, g, backward=pass_ == "fwd+bwd")
                    except torch.OutOfMemoryError as exc:
                        rows.append(
                            error_row(suite, "complexity", cell, variant, f"OOM: {exc}"[:300], **common)
                        )
                        torch.cuda.empty_cache()
                        continue
                    rows.append(make_row(suite, "complexity", cell, variant, metric="latency_ms", value=ms,
                                         unit="ms", **common))  # fmt: skip
                    if peak is not None:
                        rows.append(make_row(suite, "complexity", cell, variant, metric="peak_mib", value=peak,
                                             unit="MiB", **common))  # fmt: skip
                    if kind == "tssa":
                        traffic = core_traffic_bytes(math.prod(shape), dt.itemsize, pass_ == "fwd+bwd")
                        gbps = traffic / (ms * 1e-3) / 1e9
                        rows.append(make_row(suite, "complexity", cell, variant, metric="achieved_gbps",
                                             value=gbps, unit="GB/s", **common))  # fmt: skip
                        if peak_bw:
                            rows.append(make_row(suite, "complexity", cell, variant, metric="bandwidth_frac",
                                                 value=gbps / peak_bw, unit="1", device_gbps=peak_bw,
                                                 **common))  # fmt: skip
    return rows


def _time_core(kind, shape, dt, dev, gen, backward):
    """(median ms, peak MiB or None) of one core call, forward or forward+backward."""
    w = torch.randn(shape, generator=gen, device=dev, dtype=dt)
    if kind == "tssa":
        tau = torch.ones(shape[1], device=dev, dtype=dt)
        args = [w.requires_grad_(backward), tau.requires_grad_(backward)]

        def call():
            return tssa(*args)
    else:
        q, k = (torch.randn(shape, generator=gen, device=dev, dtype=dt) for _ in range(2))
        args = [q.requires_grad_(backward), k.requires_grad_(backward), w.requires_grad_(backward)]
        backends = _sdpa_backends(dt, dev)

        def call():
            with backends():
                return torch.nn.functional.scaled_dot_product_attention(*args)

    dy = torch.randn(shape, generator=gen, device=dev, dtype=dt) if backward else None

    def step():
        y = call()
        if backward:
            torch.autograd.grad(y, args, dy)

    step()  # warm-up (and compilation)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        step()
        torch.cuda.synchronize(dev)
        peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    else:
        peak = None
    return _bench_ms(step, dev), peak


def _sdpa_backends(dt, dev):
    """Force the flash kernel for half precision on CUDA (fp32 has none: the default choice runs)."""
    import contextlib

    if dev.type == "cuda" and dt != torch.float32:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    return contextlib.nullcontext


# ---------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tokens", type=int, nargs="+", default=None, help="default 1024 4096 16384 (GPU: 4K..64K)"
    )
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--impls", nargs="+", default=DEFAULT_IMPLS)
    ap.add_argument("--min-run-time", type=float, default=1.0, help="seconds per variant and size")
    ap.add_argument("--no-memory", action="store_true", help="skip the forward+backward peak-memory ratios")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: GPU core rows instead")
    ap.add_argument("--suite", default="gpu", help="result-store suite of the --device cuda rows")
    ap.add_argument("--results-dir", default="results")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    if args.dim % args.heads:
        ap.error(f"--dim {args.dim} must be divisible by --heads {args.heads}")
    if args.tokens is not None and min(args.tokens) < 1:
        ap.error(f"--tokens must be >= 1, got {args.tokens}")
    unknown = sorted(set(args.impls) - set(available_impls()))
    if unknown:
        ap.error(f"unknown --impls {unknown}; choose from {available_impls()}")
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda: no CUDA device is available here; run it on a GPU machine")
        from benchmarks.store import ResultStore

        tokens = args.tokens or [4096, 8192, 16384, 32768, 65536]
        rows = gpu_core_rows(tokens, args.dim, args.heads, suite=args.suite)
        store = ResultStore.for_suite(args.suite, args.results_dir)
        store.append(rows)
        for r in rows:
            val = "ERROR " + r["error"] if r["error"] else f"{r['value']:.4g} {r['unit']}"
            print(f"{r['cell']:60s} {r['metric']:15s} {val}")
        print(f"{len(rows)} rows -> {store.path}")
        return 0
    for impl in args.impls:
        try:
            resolve_impl(impl, torch.empty(1, args.heads, 1, args.dim // args.heads))
        except ValueError as exc:  # e.g. "triton" on a CPU tensor
            ap.error(f"--impls: {exc}")
    tokens = args.tokens or [1024, 4096, 16384]
    print(f"threads={args.threads} C={args.dim} H={args.heads}")
    print("time   = layer forward / two projections forward (median, interleaved)")
    if not args.no_memory:
        print("memory = peak bytes of layer forward+backward / two projections forward+backward")
    for n in tokens:
        r = floor_ratios(n, args.dim, args.heads, args.impls, args.min_run_time)
        cells = "  ".join(f"{k}={r['ratio'][k]:.2f}x" for k in args.impls)
        print(f"N={n:6d}  time    floor={r['ms']['floor']:8.2f} ms   {cells}")
        if not args.no_memory:
            mem = memory_ratios(n, args.dim, args.heads, args.impls)
            cells = "  ".join(f"{k}={mem['ratio'][k]:.2f}x" for k in args.impls)
            print(f"N={n:6d}  memory  floor={mem['mib']['floor']:8.1f} MiB  {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
