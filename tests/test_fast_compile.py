"""The ``torch.compile`` path ("compile") against the eager reference: outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from tssa.ops import resolve_impl, tssa


def _inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, h, n, d = shape
    w = torch.randn(shape, generator=g)
    tau = 0.5 + torch.rand(h, generator=g)
    pb = 0.1 * torch.randn(h, n, generator=g)
    grad = torch.randn(shape, generator=g)
    return w, tau, pb, grad


def _run(impl, w, tau, pb, grad, causal):
    leaves = [t.detach().clone().requires_grad_() for t in (w, tau, pb)]
    y = tssa(leaves[0], leaves[1], causal=causal, impl=impl, bias=leaves[2])
    return [y.detach(), *torch.autograd.grad(y, leaves, grad)]


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_compiled_matches_reference(causal):
    w, tau, pb, grad = _inputs((2, 3, 37, 12))
    ref = _run("naive", w, tau, pb, grad, causal)
    out = _run("compile", w, tau, pb, grad, causal)
    for name, a, r in zip(["y", "dw", "dtau", "dbias"], out, ref):
        assert a.shape == r.shape and a.dtype == r.dtype, name
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_compile_is_never_picked_by_auto():
    w = torch.randn(1, 2, 8, 4)
    assert resolve_impl("compile", w) == "compile"
    assert resolve_impl("auto", w) != "compile"
    assert resolve_impl("auto", w, causal=True) != "compile"


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_compiled_matches_float64_reference_across_scales(causal):
    """As tests/test_ops.py checks the eager paths: at input scales 1e-6 .. 1e4 the compiled float32
    core gives the float64 reference's output and gradients (one compile per form: the shape is fixed)."""
    w, tau, _, grad = _inputs((2, 4, 64, 16))
    for scale in (1e-6, 1e-3, 1.0, 1e2, 1e4):
        leaves = [(w * scale).requires_grad_(), tau.clone().requires_grad_()]
        y = tssa(leaves[0], leaves[1], causal=causal, impl="compile")
        out = [y.detach(), *torch.autograd.grad(y, leaves, grad)]
        ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
        y_ref = tssa(ref_leaves[0], ref_leaves[1], causal=causal, impl="naive")
        ref = [y_ref.detach(), *torch.autograd.grad(y_ref, ref_leaves, grad.double())]
        for name, a, r in zip(["y", "dw", "dtau"], out, ref):
            assert a.dtype == torch.float32, name
            err = ((a.double() - r).abs().max() / r.abs().max()).item()  # an all-zero output scores 1
            assert err <= 1e-5, f"compile {name} at scale {scale:g}: relative error {err:.3g}"
