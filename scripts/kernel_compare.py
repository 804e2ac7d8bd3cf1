"""The fused CPU kernels of this checkout against those of another git revision, in one process.

Builds ``tssa/ops/csrc/tssa_cpu.cpp`` as it is here and as it is at ``--against`` (``git show``), each
under its own op namespace in a directory of its own below the extension cache, with the flags
``tssa.ops.fused_cpu`` builds with. Then, at (1, N, H, D) token-major inputs for every ``--tokens``:

- bit identity: every output of ``fwd`` (Y, Pi, the statistics) and of ``bwd`` (dW, dtau) of the two
  builds, compared with ``torch.equal``;
- time: the raw ``fwd`` and ``bwd`` op calls of both builds and the floor pass (one read and one write
  of ``w``: ``torch.neg(w, out=buf)``), interleaved by the harness's own timer
  (``benchmarks.core.measure.time_interleaved``), one torch thread; medians in ms and over the floor.

Op calls only: no autograd, no Python wrapper, the same inputs for both builds.

    python scripts/kernel_compare.py --against 3ca7dbe
    python scripts/kernel_compare.py --against HEAD~3 --tokens 4096 --rounds 15
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

SOURCE = "tssa/ops/csrc/tssa_cpu.cpp"


def build(name: str, source: str):
    """Compile ``source`` with its op library renamed to ``name``; returns ``torch.ops.<name>``."""
    import torch
    from torch.utils.cpp_extension import load

    from tssa.ops import fused_cpu

    text = re.sub(
        r"TORCH_LIBRARY(_IMPL)?\(tssa_cpu,", lambda m: f"TORCH_LIBRARY{m.group(1) or ''}({name},", source
    )
    if text == source:
        raise SystemExit(f"kernel_compare: no TORCH_LIBRARY(tssa_cpu, ...) in the {name} source")
    variant = fused_cpu.isa()
    root = fused_cpu.cache_dir() / "compare" / name / variant
    root.mkdir(parents=True, exist_ok=True)
    path = root / "tssa_cpu.cpp"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    cflags, ldflags = fused_cpu.build_flags(variant)
    load(name=f"{name}_{variant}", sources=[str(path)], extra_cflags=cflags, extra_ldflags=ldflags,
         build_directory=str(root), is_python_module=False, verbose=False)  # fmt: skip
    return getattr(torch.ops, name)


def _rows(ops: dict, n: int, h: int, d: int, rounds: int, min_run_time: float) -> list[str]:
    """The table rows at N = n: both builds' op times over the floor's, and whether their bits agree."""
    import torch

    from benchmarks.core.measure import time_interleaved
    from tssa.ops.fused_cpu import _SQ_EPS, MEMBERSHIP_EPS, chunk_tokens

    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, n, h, d, generator=g)
    grad = torch.randn(1, n, h, d, generator=g)
    tau, step, buf = torch.ones(h), chunk_tokens(h * d, n), torch.empty(1, n, h, d)
    fwd = {k: op.fwd(w, tau, None, step, _SQ_EPS, MEMBERSHIP_EPS) for k, op in ops.items()}
    bwd = {k: op.bwd(grad, w, tau, None, *fwd[k][1:], step, _SQ_EPS) for k, op in ops.items()}
    same_f = all(torch.equal(x, y) for x, y in zip(*fwd.values()))
    same_b = all(torch.equal(x, y) for x, y in zip(*bwd.values()))
    steps = {"floor": lambda: torch.neg(w, out=buf)}
    for k, op in ops.items():
        steps[f"{k} fwd"] = lambda op=op: op.fwd(w, tau, None, step, _SQ_EPS, MEMBERSHIP_EPS)
        steps[f"{k} bwd"] = lambda op=op, k=k: op.bwd(grad, w, tau, None, *fwd[k][1:], step, _SQ_EPS)
    t = time_interleaved(steps, device="cpu", rounds=rounds, min_run_time=min_run_time, threads=1)
    bad = {k: v.error for k, v in t.items() if v.error}
    if bad:
        raise SystemExit(f"kernel_compare: a step failed at N={n}: {bad}")
    fl = t["floor"].median
    bits = "identical" if same_f and same_b else f"DIFFER (fwd {same_f}, bwd {same_b})"
    rows = []
    for k in ops:
        f, b = t[f"{k} fwd"].median, t[f"{k} bwd"].median
        rows.append(f"| {n} | {k} | {f / fl:.2f}x ({f * 1e3:.3f} ms) | {b / fl:.2f}x ({b * 1e3:.3f} ms) | "
                    f"{(f + b) / fl:.2f}x | {bits} |")  # fmt: skip
    rows.append(f"| {n} | floor | {fl * 1e3:.3f} ms | | | |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", required=True, help="git revision whose kernels to compare with")
    ap.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--min-run-time", type=float, default=0.2)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=48, help="head size D")
    a = ap.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    git = subprocess.run(["git", "show", f"{a.against}:{SOURCE}"], cwd=root, capture_output=True, text=True)
    if git.returncode != 0:
        raise SystemExit(f"kernel_compare: cannot read {SOURCE} at {a.against!r}: {git.stderr.strip()}")

    import torch

    ops = {
        "here": build("tssa_cmp_here", (root / SOURCE).read_text()),
        a.against: build("tssa_cmp_then", git.stdout),
    }
    torch.set_num_threads(1)
    h, d = a.heads, a.dim
    print(f"fused kernels of this checkout (here) and of {a.against}, (1, N, {h}, {d}) token-major, 1 thread, "
          f"medians of {a.rounds} interleaved rounds; times of the raw op calls")  # fmt: skip
    print("| N | kernels | fwd | bwd | fwd+bwd | bits (fwd, bwd) |")
    print("| ---: | --- | ---: | ---: | ---: | --- |")
    for n in a.tokens:
        print("\n".join(_rows(ops, n, h, d, a.rounds, a.min_run_time)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
