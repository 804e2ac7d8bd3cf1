"""Two threads against one while another process keeps a core busy: the TSSA core's wall time.

Starts one spinning process (``python -c "while True: pass"``) beside the measurement, then times the
core that ``impl="auto"`` runs (forward, and forward+backward) at (1, H, N, D) on the layer's
token-major layout, with one and with two torch threads, interleaved: per round each (pass, threads)
pair runs a block of calls by the wall clock, and the table reports the median over rounds of the
2-thread / 1-thread ratio. Freed memory stays in glibc's heap first, as in the harness's timings
(``benchmarks.core.measure.keep_freed_memory``), so the times hold no page faults of fresh outputs.
With ``--policy both`` (the default) the measurement runs twice in child processes, once with
OpenMP's default wait policy and once with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP reads it when torch
loads it, so it must be set before the process starts).

    python scripts/busy_core.py                      # N = 4096 and 16384, both wait policies
    python scripts/busy_core.py --tokens 4096 --policy passive --no-spin
    python scripts/busy_core.py --impls stream fused  # the Python streaming core beside the compiled one
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time


def measure(tokens: list[int], rounds: int, heads: int, dim: int, impls: list[str]) -> list[dict]:
    import torch
    from _core_steps import core_steps

    from benchmarks.core.measure import keep_freed_memory
    from tssa.ops import resolve_impl

    keep_freed_memory()  # freed outputs stay in the heap, as in the harness's timings: no page faults per call
    out = []
    for n in tokens:
        steps = core_steps(n, heads, dim)
        for impl, (name, make) in itertools.product(
            impls, (("forward", steps.forward), ("forward+backward", steps.forward_backward))
        ):
            core = resolve_impl(impl, steps.heads_view())
            fn = make(impl)
            calls, times = {}, {1: [], 2: []}
            for t in (1, 2):  # warm-up and the block size: about 20 ms of calls
                torch.set_num_threads(t)
                fn()
                t0 = time.perf_counter()
                fn()
                calls[t] = max(1, round(0.02 / max(time.perf_counter() - t0, 1e-7)))
            for _ in range(rounds):
                for t in (1, 2):
                    torch.set_num_threads(t)
                    t0 = time.perf_counter()
                    for _ in range(calls[t]):
                        fn()
                    times[t].append((time.perf_counter() - t0) / calls[t])
            ratio = statistics.median(a / b for a, b in zip(times[2], times[1]))
            out.append(dict(tokens=n, pass_=name, core=core, ratio=ratio,
                            one_ms=statistics.median(times[1]) * 1e3, two_ms=statistics.median(times[2]) * 1e3))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=48, help="head size D")
    ap.add_argument("--policy", choices=["default", "passive", "both"], default="both")
    ap.add_argument("--impls", nargs="+", default=["auto"], help="cores to measure (default: what auto runs)")
    ap.add_argument("--no-spin", action="store_true", help="measure without the busy process")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if any(n < 1 for n in a.tokens) or a.rounds < 1 or a.heads < 1 or a.dim < 1:
        ap.error("--tokens, --rounds, --heads and --dim must be positive")
    if a.child:
        print(json.dumps(measure(a.tokens, a.rounds, a.heads, a.dim, a.impls)))
        return 0
    policies = ["default", "passive"] if a.policy == "both" else [a.policy]
    spin = None if a.no_spin else subprocess.Popen([sys.executable, "-c", "while True: pass"])
    results = {}
    try:
        for pol in policies:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if pol == "passive":
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            args = [sys.executable, __file__, "--child", "--rounds", str(a.rounds), "--heads", str(a.heads),
                    "--dim", str(a.dim), "--tokens", *map(str, a.tokens), "--impls", *a.impls]  # fmt: skip
            p = subprocess.run(args, env=env, capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"busy_core: the {pol} measurement failed: {p.stderr.strip().splitlines()[-1:]}")
            results[pol] = json.loads(p.stdout.strip().splitlines()[-1])
    finally:
        if spin is not None:
            spin.kill()
            spin.wait()
    busy = "one core kept busy by a spinning process" if spin is not None else "no busy process"
    print(f"2 threads / 1 thread, wall time, median of {a.rounds} interleaved rounds; {busy}")
    print("| core | pass | N | " + " | ".join(f"{p} wait policy" for p in policies) + " |")
    print("| --- | --- | ---: | " + " | ".join("---:" for _ in policies) + " |")
    for i, r in enumerate(results[policies[0]]):
        cells = " | ".join(
            f"{results[p][i]['ratio']:.2f} ({results[p][i]['one_ms']:.2f} / {results[p][i]['two_ms']:.2f} ms)"
            for p in policies
        )
        print(f"| {r['core']} | {r['pass_']} | {r['tokens']} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
