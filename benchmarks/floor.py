"""Forward time of the TSSA layer relative to its two linear projections (the floor it cannot beat).

The floor is ``x -> Linear(C, C) -> Linear(C, C)``; the layer adds the statistics core between them.
Everything is timed in one process, interleaved, with a fixed thread count, and reported as
medians and ratios (absolute times on a shared machine are only trends).

    python -m benchmarks.floor --tokens 1024 4096 16384 --dim 384 --heads 8 --threads 1
"""

from __future__ import annotations

import argparse

import torch
import torch.utils.benchmark as tb

from tssa.nn import TokenStatisticsAttention


def floor_ratios(tokens: int, dim: int, heads: int, impls: list[str], min_run_time: float = 1.0) -> dict:
    """Median forward times (ms) of the two projections and of the layer with each impl, and ratios."""
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--impls", nargs="+", default=["naive", "lean"])
    ap.add_argument("--min-run-time", type=float, default=1.0, help="seconds per variant and size")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} C={args.dim} H={args.heads}  (ratio = layer forward / two projections)")
    for n in args.tokens:
        r = floor_ratios(n, args.dim, args.heads, args.impls, args.min_run_time)
        cells = "  ".join(f"{k}={r['ratio'][k]:.2f}x" for k in args.impls)
        print(f"N={n:6d}  floor={r['ms']['floor']:.2f} ms  {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
