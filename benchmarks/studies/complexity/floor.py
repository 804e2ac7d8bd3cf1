"""The TSSA layer against the floor it cannot beat: its two C x C projections alone.

The floor is ``x -> Linear(C, C) -> Linear(C, C)``; the layer adds the statistics core between
them, so ``layer / floor`` is what a linear-time operator pays on top of what it cannot avoid:

- time: median forward time of :class:`~tssa.nn.TokenStatisticsAttention` with each core
  implementation over that of the floor, interleaved in one process at each thread count;
- memory: peak bytes of forward+backward (the dispatch-level tracker: exact, the same on any CPU).

Cells run through the harness's runner into a run of the suite ``floor`` (resumable, like every
suite), so the numbers are rows with provenance; the table and the README block are written from
those rows::

    python -m benchmarks.studies.complexity.floor --tokens 1024 4096 16384 --threads 1 2 --impls naive lean stream fused --readme README.md
"""

from __future__ import annotations

import argparse
from typing import Any

import torch


def default_impls(device: str) -> list[str]:
    """The cores the sweep's ``tssa:*`` runs on ``device`` (every registered impl usable there, the
    compiled ``fused`` core included where its extension builds): the layer is measured with each."""
    from benchmarks.studies.complexity.operator import expand_variants

    return [v.split(":", 1)[1] for v in expand_variants(["tssa:*"], device, "float32")]


def floor_suite(
    tokens: list[int], dim: int, heads: int, threads: list[int], impls: list[str], min_run_time: float,
    device: str = "cpu",
) -> dict[str, Any]:  # fmt: skip
    """The validated suite of the floor benchmark (the layer with each impl, and the floor)."""
    from benchmarks.core.suites import validate_suite

    return validate_suite(
        {
            "name": "floor",
            "device": device,
            "threads": max(threads),
            "memory_budget_gib": 8.0,
            "timeout_s": 60,
            "complexity": {
                "operator": {
                    "tokens": tokens,
                    "dim": dim,
                    "heads": heads,
                    "threads": threads,
                    "passes": ["fwd", "fwd+bwd"],
                    "variants": ["floor", *[f"layer:tssa:{i}" for i in impls]],
                    "rounds": 3,
                    "min_run_time": min_run_time,
                    "profile_max_tokens": 0,
                    "fit_min_tokens": 1,
                },  # fmt: skip
            },
        },
        source="floor",
    )


def floor_table(df) -> str:
    """Ratio lines from operator rows: per thread count and N, layer / floor forward time and
    forward+backward memory for every impl."""
    from benchmarks.studies.complexity import derive

    d = derive(df, fit_min_tokens=1)
    lines = []
    for c in d["configs"]:
        cfg = c["config"]
        lines.append(
            f"threads={cfg['threads']} C={cfg['dim']} H={cfg['heads']} ({cfg['device']}, machine {cfg['machine']})"
        )
        impls = sorted({k[0].split(":", 2)[2] for k in c["floor"]})
        for n in sorted({k[2] for k in c["floor"]}):
            for p, q in (("fwd", "time"), ("fwd+bwd", "memory")):
                cells = [
                    f"{i}={c['floor'][(f'layer:tssa:{i}', p, n, q)]:.2f}x"
                    for i in impls
                    if (f"layer:tssa:{i}", p, n, q) in c["floor"]
                ]
                if cells:
                    lines.append(f"N={n:6d}  {p:7s} {q:6s}  " + "  ".join(cells))
    return "\n".join(lines)


def memory_ratios(tokens: int, dim: int, heads: int, impls: list[str]) -> dict:
    """Peak bytes of forward+backward of the layer with each impl over the floor's (measured now,
    not stored): ``{"mib": {...}, "ratio": {impl: layer / floor}}``."""
    from benchmarks.core.cells import Cell
    from benchmarks.studies.complexity import build_operator, measure_peak_bytes

    peaks = {}
    for v in ["floor", *[f"layer:tssa:{i}" for i in impls]]:
        cell = Cell.make("complexity", {"variant": v, "pass": "fwd+bwd", "device": "cpu", "dtype": "float32",
                                        "batch": 1, "dim": dim, "heads": heads, "tokens": tokens})  # fmt: skip
        _, _, step = build_operator(cell)
        peaks[v.rsplit(":", 1)[-1]] = measure_peak_bytes(step, "cpu")
    return {
        "mib": {k: v / 2**20 for k, v in peaks.items()},
        "ratio": {k: peaks[k] / peaks["floor"] for k in impls},
    }


def main(argv: list[str] | None = None) -> int:
    from benchmarks.core.runner import run_groups
    from benchmarks.core.store import load_rows
    from benchmarks.core.suites import SuiteError
    from benchmarks.studies.complexity.operator import check_variant

    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.studies.complexity.floor", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument(
        "--impls", nargs="+", default=None, help="cores (default: every one usable on the device)"
    )
    ap.add_argument("--min-run-time", type=float, default=0.3, help="seconds of calls per variant and round")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("--readme", default=None, help="README whose <!-- floor:begin/end --> block to rewrite")
    args = ap.parse_args(argv)
    if min(args.threads) < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    if args.dim % args.heads:
        ap.error(f"--dim {args.dim} must be divisible by --heads {args.heads}")
    if min(args.tokens) < 1:
        ap.error(f"--tokens must be >= 1, got {args.tokens}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device is available here; run it on a GPU machine")
    args.impls = args.impls or default_impls(args.device)
    for impl in args.impls:
        try:
            check_variant(f"tssa:{impl}")
        except ValueError:
            from tssa.ops import available_impls

            ap.error(f"unknown --impls {[impl]}; choose from {available_impls()}")
    try:
        suite = floor_suite(
            args.tokens, args.dim, args.heads, args.threads, args.impls, args.min_run_time, args.device
        )
    except SuiteError as exc:
        ap.error(str(exc))
    from benchmarks.studies import complexity

    run = run_groups("floor", suite, complexity.plan("floor", suite), args.results_dir, device=args.device)
    table = floor_table(load_rows([run]))
    head = (
        "time   = layer forward / two projections forward (medians, interleaved)\n"
        "memory = peak bytes of layer forward+backward / two projections forward+backward"
    )
    print(head)
    print(table)
    if args.readme:
        from benchmarks.core.readme import write_block

        cmd = "python -m benchmarks.studies.complexity.floor " + " ".join(
            argv if argv is not None else __import__("sys").argv[1:]
        )
        block = f"Written by `{cmd.strip()}` from run {run.id}:\n\n```\n{head}\n{table}\n```"
        write_block(args.readme, "floor", block)
        print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
