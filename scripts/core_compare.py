"""TSSA cores side by side in one process: forward and forward+backward time over the bandwidth floor.

For each N, the cores named by ``--impls`` (default: ``stream``, the Python streaming core, and
``fused``, the compiled one that ``impl="auto"`` runs on CPU) and the floor pass (one read and one
write of every element of ``w``: ``torch.neg(w, out=buf)``) are timed interleaved by the harness's
own timer (``benchmarks.core.measure.time_interleaved``: per round each callable fills
``--min-run-time`` seconds with repeated calls; ``--rounds`` rounds), one torch thread, on the layout
the layer hands over (the head split of a token-major (1, N, H * D) projection). The table gives each
core's median time over the floor's median, for the forward (no grad) and for the forward+backward
(``torch.autograd.grad`` back to the projection's output), and the medians in milliseconds.

    python scripts/core_compare.py
    python scripts/core_compare.py --tokens 4096 16384 --impls stream fused naive --rounds 11
"""

from __future__ import annotations

import argparse


def measure(
    tokens: list[int], impls: list[str], heads: int, dim: int, rounds: int, min_run_time: float
) -> list:
    import torch
    from _core_steps import core_steps

    from benchmarks.core.measure import time_interleaved

    torch.set_num_threads(1)
    out = []
    for n in tokens:
        core = core_steps(n, heads, dim)
        w_ = core.wt.detach()
        buf = torch.empty_like(w_)

        for pass_, make in (("fwd", core.forward), ("fwd+bwd", core.forward_backward)):
            steps = {"floor": lambda w_=w_, buf=buf: torch.neg(w_, out=buf)}
            steps |= {impl: make(impl) for impl in impls}
            for first_call in steps.values():  # first calls: the extension's build, the allocator's blocks
                first_call()
            t = time_interleaved(steps, device="cpu", rounds=rounds, min_run_time=min_run_time, threads=1)
            bad = {k: v.error for k, v in t.items() if v.error}
            if bad:
                raise SystemExit(f"core_compare: a step failed at N={n} {pass_}: {bad}")
            base = t["floor"].median
            for impl in impls:
                out.append(dict(tokens=n, pass_=pass_, impl=impl, over_floor=t[impl].median / base,
                                ms=t[impl].median * 1e3, floor_ms=base * 1e3))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--impls", nargs="+", default=["stream", "fused"])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--min-run-time", type=float, default=0.2)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=48, help="head size D")
    a = ap.parse_args(argv)
    if any(n < 1 for n in a.tokens) or a.rounds < 1 or a.heads < 1 or a.dim < 1 or a.min_run_time <= 0:
        ap.error("--tokens, --rounds, --heads, --dim and --min-run-time must be positive")
    from tssa.ops import available_impls

    unknown = [i for i in a.impls if i not in available_impls()]
    if unknown:
        ap.error(f"--impls: {unknown} not usable here; available: {sorted(available_impls())}")
    rows = measure(a.tokens, a.impls, a.heads, a.dim, a.rounds, a.min_run_time)
    print(
        f"core time / floor pass time (one read and one write of w), medians of {a.rounds} interleaved rounds,"
    )
    print(f"1 thread, (1, {a.heads}, N, {a.dim}) on the layer's token-major layout")
    print("| N | pass | " + " | ".join(a.impls) + " | floor |")
    print("| ---: | --- | " + " | ".join("---:" for _ in a.impls) + " | ---: |")
    for n in a.tokens:
        for pass_ in ("fwd", "fwd+bwd"):
            r = {x["impl"]: x for x in rows if x["tokens"] == n and x["pass_"] == pass_}
            cells = " | ".join(f"{r[i]['over_floor']:.2f}x ({r[i]['ms']:.2f} ms)" for i in a.impls)
            print(f"| {n} | {pass_} | {cells} | {r[a.impls[0]]['floor_ms']:.3f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
