"""The TSSA core's forward time per token at large N, with glibc's default allocator and with freed
memory kept in the heap (what the harness's CPU timings use, ``benchmarks.core.measure.keep_freed_memory``).

Each setting runs in its own child process (``mallopt`` changes the whole process), one torch thread.
Per round every size runs a block of ``--calls`` forward calls of ``impl="auto"`` on the layer's
token-major layout (1, H, N, D); the table gives the median over rounds of the wall time per call
divided by N (microseconds per token). With the default allocator an output past glibc's largest mmap
threshold (32 MiB on 64-bit) is mapped and page-faulted afresh on every call, and the cost per token
steps up there; with the heap kept it stays level.

    python scripts/heap_step.py
    python scripts/heap_step.py --tokens 16384 32768 65536 --rounds 21
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def measure(tokens: list[int], rounds: int, calls: int, heads: int, dim: int, keep: bool) -> dict:
    import torch

    from benchmarks.core.measure import keep_freed_memory
    from tssa.ops import resolve_impl, tssa

    torch.set_num_threads(1)
    allocator = keep_freed_memory() if keep else None
    if keep and allocator is None:
        raise SystemExit("heap_step: the C library is not glibc, so there is no heap setting to compare")
    ws = {n: torch.randn(1, n, heads * dim).view(1, n, heads, dim).transpose(1, 2) for n in tokens}
    tau = torch.ones(heads)
    per = {n: [] for n in tokens}
    with torch.no_grad():
        for n in tokens:  # warm-up: the extension's first call, the allocator's first blocks
            tssa(ws[n], tau)
        for _ in range(rounds):
            for n in tokens:
                t0 = time.perf_counter()
                for _ in range(calls):
                    tssa(ws[n], tau)
                per[n].append((time.perf_counter() - t0) / calls / n * 1e6)
    core = resolve_impl("auto", ws[tokens[0]])
    return {
        "core": core,
        "allocator": allocator or "default",
        "us_per_token": {n: statistics.median(v) for n, v in per.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--tokens", type=int, nargs="+", default=[16384, 20480, 24576, 32768, 40960, 49152, 65536]
    )
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=48, help="head size D")
    ap.add_argument("--child", choices=["default", "keep"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if min(a.tokens) < 1 or a.rounds < 1 or a.calls < 1:
        ap.error("--tokens, --rounds and --calls must be positive")
    if a.child:
        res = measure(sorted(a.tokens), a.rounds, a.calls, a.heads, a.dim, a.child == "keep")
        print(json.dumps(res))
        return 0
    results = []
    for mode in ("default", "keep"):
        cmd = [sys.executable, __file__, "--child", mode, "--rounds", str(a.rounds), "--calls", str(a.calls),
               "--heads", str(a.heads), "--dim", str(a.dim), "--tokens", *map(str, a.tokens)]  # fmt: skip
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"child exited {p.returncode}")
            return 1
        results.append(json.loads(p.stdout.strip().splitlines()[-1]))
    ns = sorted(a.tokens)
    print(f"core {results[0]['core']} forward, 1 thread, (1, {a.heads}, N, {a.dim}) float32: median us per token "
          f"over {a.rounds} rounds of {a.calls} calls")  # fmt: skip
    print("| allocator | " + " | ".join(f"N = {n}" for n in ns) + " |")
    print("| --- |" + " ---: |" * len(ns))
    for r in results:
        print(f"| {r['allocator']} | " + " | ".join(f"{r['us_per_token'][str(n)]:.3f}" for n in ns) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
