"""Operator speed regression checks (``tox -e perf``): ratios measured in one process, never absolute times.

Every check times its variants interleaved, single-threaded, and compares medians:

- the TSSA layer forward stays within a generous bound of its two linear projections (the floor);
- the fast CPU path ("stream", what ``impl="auto"`` runs on CPU) is not slower than the reference
  and the lean path, forward and forward+backward.

pytest-benchmark records the fast path's own timing next to the ratios (``extra_info``).
"""

from __future__ import annotations

import pytest
import torch
import torch.utils.benchmark as tb

from tssa.nn import TokenStatisticsAttention
from tssa.ops import resolve_impl

N, C, H = 4096, 384, 8
ROUNDS = 3
# How much slower than a reference the fast path may measure before the check fails. On a quiet
# 2-core machine stream/naive is ~0.8 and stream/lean 0.88-0.99 (three runs of this file); lean is
# the closer competitor, so its margin covers the 10-25% swings of a shared runner.
SLACK = {"naive": 1.1, "lean": 1.25}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _interleaved_medians(fns: dict, min_run_time: float = 0.15) -> dict[str, float]:
    """Median seconds of each callable over ``ROUNDS`` interleaved rounds (drift hits all alike)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            t = tb.Timer("fn()", globals={"fn": fn}, num_threads=1).blocked_autorange(
                min_run_time=min_run_time
            )
            times.setdefault(name, []).append(t.median)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def _layer_and_input(requires_grad=False):
    torch.manual_seed(0)
    layer = TokenStatisticsAttention(C, H).eval()
    x = torch.randn(1, N, C, requires_grad=requires_grad)
    return layer, x


def _forward(layer, x, impl):
    def fn():
        layer.impl = impl
        return layer(x)

    return fn


def test_auto_runs_the_fast_path_on_cpu():
    assert resolve_impl("auto", torch.empty(1, H, N, C // H)) == "stream"


def test_layer_forward_near_projection_floor(benchmark):
    layer, x = _layer_and_input()
    lin1, lin2 = layer.qkv, layer.to_out[0]
    with torch.no_grad():
        med = _interleaved_medians({"floor": lambda: lin2(lin1(x)), "stream": _forward(layer, x, "stream")})
        benchmark.pedantic(_forward(layer, x, "stream"), rounds=5, iterations=1)
    ratio = med["stream"] / med["floor"]
    benchmark.extra_info["layer_over_floor"] = ratio
    # goal: 1.3x at N = 16384 on a quiet machine; a shared CI runner gets a generous margin
    assert ratio < 1.8, f"TSSA layer forward is {ratio:.2f}x its two projections"


def test_fast_forward_not_slower_than_naive_or_lean(benchmark):
    layer, x = _layer_and_input()
    with torch.no_grad():
        med = _interleaved_medians({impl: _forward(layer, x, impl) for impl in ("naive", "lean", "stream")})
        benchmark.pedantic(_forward(layer, x, "stream"), rounds=5, iterations=1)
    for ref in ("naive", "lean"):
        benchmark.extra_info[f"stream_over_{ref}"] = med["stream"] / med[ref]
        assert med["stream"] <= SLACK[ref] * med[ref], f"stream forward {med['stream'] / med[ref]:.2f}x {ref}"


def test_fast_forward_backward_not_slower_than_naive_or_lean(benchmark):
    layer, x = _layer_and_input(requires_grad=True)
    layer.train()

    def step(impl):
        def fn():
            layer.impl = impl
            layer(x).sum().backward()

        return fn

    med = _interleaved_medians({impl: step(impl) for impl in ("naive", "lean", "stream")})
    benchmark.pedantic(step("stream"), rounds=3, iterations=1)
    for ref in ("naive", "lean"):
        benchmark.extra_info[f"stream_over_{ref}"] = med["stream"] / med[ref]
        assert med["stream"] <= SLACK[ref] * med[ref], f"stream fwd+bwd {med['stream'] / med[ref]:.2f}x {ref}"
