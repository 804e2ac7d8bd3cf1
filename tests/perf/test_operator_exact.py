"""Exact gates of the TSSA core: FLOPs and peak bytes at fixed shapes equal their committed values.

These quantities do not depend on the machine or its load, so they are compared for equality:
any change of the arithmetic (a doubled pass, extra work on part of the tokens, an N x N product)
or of the allocations (a new full-size temporary, an N x N buffer) fails, and an intended change is
recorded with ``TSSA_PERF_REFRESH=1`` (see ``_expected.py``). FLOPs follow
:func:`benchmarks.core.flops.count_flops_torch` (the project's one FLOP convention: elementwise ops,
reductions and softmax counted); bytes are the
dispatch-level peak of :class:`tssa.utils.LiveTensorTracker` (storages created inside, inputs excluded).
"""

from __future__ import annotations

import pytest
import torch
from _expected import expected, record, refreshing

from benchmarks.core.flops import count_flops_torch as count_flops
from tssa.nn import TokenStatisticsAttention
from tssa.ops import resolve_impl, tssa
from tssa.utils import LiveTensorTracker

B, N, H, D = 1, 1000, 8, 48  # fixed shapes: the committed values belong to them


def _core_inputs():
    g = torch.Generator().manual_seed(0)
    wt = torch.randn(B, N, H * D, generator=g, requires_grad=True)  # (B, N, C) token-major, as in the layer
    gy = torch.randn(B, N, H, D, generator=g).transpose(1, 2)  # (B, H, N, D)
    return wt, torch.ones(H), gy


def _heads(wt):
    return wt.view(B, N, H, D).transpose(1, 2)  # (B, H, N, D) view


def _forward(wt, tau, gy):
    with torch.no_grad():
        tssa(_heads(wt), tau)


def _forward_backward(wt, tau, gy):
    torch.autograd.grad(tssa(_heads(wt), tau), wt, gy)


def _layer_forward_backward():
    torch.manual_seed(0)
    layer = TokenStatisticsAttention(H * D, H)
    x = torch.randn(B, N, H * D)
    return lambda: layer(x).sum().backward()


def _check(section: str, name: str, value: int) -> None:
    key = (section, resolve_impl("auto", _heads(_core_inputs()[0])), name)
    if refreshing():
        record(key, value)
    want = expected(key)
    if want is None:
        pytest.fail(
            f"no committed {'/'.join(key)} in tests/perf/expected.json; record it with TSSA_PERF_REFRESH=1"
        )
    assert value == want, (
        f"{'/'.join(key)} is {value:,}, expected {want:,} ({value / want:.3f}x); "
        "if the change is intended, refresh with TSSA_PERF_REFRESH=1 (tests/perf/_expected.py)"
    )


@pytest.mark.parametrize(
    "name,fn", [("core_forward", _forward), ("core_forward_backward", _forward_backward)]
)
def test_exact_core_flops(name, fn):
    _check("flops", name, count_flops(fn, *_core_inputs()))


def test_exact_layer_flops():
    _check("flops", "layer_forward_backward", count_flops(_layer_forward_backward()))


@pytest.mark.parametrize(
    "name,fn", [("core_forward", _forward), ("core_forward_backward", _forward_backward)]
)
def test_exact_core_peak_bytes(name, fn):
    args = _core_inputs()
    fn(*args)  # first-call allocations (caches) stay out of the count
    with LiveTensorTracker() as tracker:
        fn(*args)
    _check("peak_bytes", name, tracker.peak)


def test_exact_flops_see_the_core():
    """The counter is not blind to elementwise work: the core's FLOPs grow linearly with N."""
    g = torch.Generator().manual_seed(0)
    small, large = (torch.randn(1, 2, n, 8, generator=g) for n in (100, 200))
    f_small, f_large = (count_flops(lambda w: tssa(w, torch.ones(2)), w) for w in (small, large))
    assert f_small > 10 * small.numel()
    assert 1.9 < f_large / f_small < 2.1
