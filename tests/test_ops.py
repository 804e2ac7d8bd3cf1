"""The TSSA operator: every implementation against the paper-faithful reference, and invariants."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tssa.ops import available_impls, memberships, resolve_impl, tssa
from tssa.ops.naive import tssa_causal_naive, tssa_naive
from tssa.utils import LiveTensorTracker

# tested in their own files: "triton" needs CUDA (tests/test_fast_triton.py runs it interpreted on CPU),
# "compile" compiles once per shape (tests/test_fast_compile.py)
OWN_TESTS = {"triton", "compile"}
CPU_IMPLS = [name for name in available_impls() if name not in OWN_TESTS]
FAST_IMPLS = [name for name in CPU_IMPLS if name != "naive"]


def _has_causal(impl):
    try:
        resolve_impl(impl, torch.zeros(1, 1, 1, 1), True)
    except ValueError:
        return False
    return True


CAUSAL_IDS = {False: "full", True: "causal"}


def _with_causal(impls, *inner):
    """``(causal, *inner, impl)`` cases for the forms the registry says each impl has: causal ones
    only where ``supports(w, causal=True)`` holds ("stream" and "fused" are non-causal only), so a
    combination that cannot run is never generated (and a real skip stays visible). ``inner``: further
    ``[(value, id), ...]`` axes between the two, ids joined as pytest would (``full-bf16-lean``)."""
    cases = []
    for causal in (False, True):
        for extra in itertools.product(*inner):
            for impl in impls:
                if causal and not _has_causal(impl):
                    continue
                ids = [CAUSAL_IDS[causal], *(i for _, i in extra), impl]
                cases.append(pytest.param(causal, *(v for v, _ in extra), impl, id="-".join(ids)))
    return cases


# (B, H, N, D): one token, ViT-B/16-like 197 tokens, YOLO P5 at 640 (400), odd N, D = 60, H = 1, B > 1
SHAPES = [
    (1, 1, 1, 8),
    (2, 4, 197, 48),
    (1, 8, 400, 60),
    (3, 2, 33, 16),
    (2, 1, 7, 60),
]


def _inputs(shape, dtype=torch.float32, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    b, h, n, d = shape
    w = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    tau = (0.5 + torch.rand(h, generator=g, dtype=torch.float64)).to(dtype)
    pb = (0.1 * torch.randn(h, n, generator=g, dtype=torch.float64)).to(dtype) if bias else None
    grad = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return w, tau, pb, grad


def _run(impl, w, tau, pb, grad, causal):
    """Output and gradients of every input through one upstream gradient."""
    leaves = [t.detach().clone().requires_grad_() for t in (w, tau) + ((pb,) if pb is not None else ())]
    y = tssa(leaves[0], leaves[1], causal=causal, impl=impl, bias=leaves[2] if pb is not None else None)
    grads = torch.autograd.grad(y, leaves, grad)
    return [y.detach(), *grads]


@pytest.mark.parametrize("causal, impl", _with_causal(FAST_IMPLS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_impl_matches_reference_fp32(impl, causal, shape):
    w, tau, pb, grad = _inputs(shape, bias=shape[2] % 2 == 1)
    ref = _run(
        "naive", w.double(), tau.double(), pb.double() if pb is not None else None, grad.double(), causal
    )
    out = _run(impl, w, tau, pb, grad, causal)
    for name, a, r in zip(["y", "dw", "dtau", "dbias"], out, ref):
        assert a.dtype == torch.float32
        # fp32 tolerance relative to the tensor's scale: sums over N tokens reach |dbias| ~ 1e2
        err = (a.double() - r).abs().max().item()
        assert err <= 1e-5 * r.abs().max().item() + 1e-7, f"{impl} {name}: max error {err:.3g}"


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_reference_gradcheck_fp64(causal, bias):
    w, tau, pb, _ = _inputs((2, 3, 6, 4), dtype=torch.float64, bias=bias)
    fn = tssa_causal_naive if causal else tssa_naive
    inputs = (w.requires_grad_(), tau.requires_grad_(), pb.requires_grad_() if bias else None)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("causal, impl", _with_causal(FAST_IMPLS))
def test_fast_gradcheck_fp64(impl, causal):
    w, tau, pb, _ = _inputs((2, 3, 5, 4), dtype=torch.float64, bias=True)

    def fn(w, tau, pb):
        return tssa(w, tau, causal=causal, impl=impl, bias=pb)

    assert torch.autograd.gradcheck(fn, (w.requires_grad_(), tau.requires_grad_(), pb.requires_grad_()))


@pytest.mark.parametrize(
    "causal, dtype, impl", _with_causal(FAST_IMPLS, [(torch.bfloat16, "bf16"), (torch.float16, "fp16")])
)
def test_low_precision_error_at_most_twice_naive(impl, dtype, causal):
    """The flash-attention rule: in low precision a fast path may err at most 2x the plain path."""
    try:  # a path built for float32/float64 only (fused) refuses low precision; auto falls back for it
        resolve_impl(impl, torch.zeros(1, 1, 1, 1, dtype=dtype), causal)
    except ValueError:
        pytest.skip(f"{impl} takes no {dtype}")
    w, tau, _, grad = (t if t is None else t.to(dtype) for t in _inputs((2, 4, 197, 32)))
    ref = _run("naive", w.double(), tau.double(), None, grad.double(), causal)  # same rounded inputs
    naive = _run("naive", w, tau, None, grad, causal)
    fast = _run(impl, w, tau, None, grad, causal)
    for name, f, n, r in zip(["y", "dw", "dtau"], fast, naive, ref):
        assert f.dtype == dtype, name
        err_fast = (f.double() - r).abs().max().item()
        err_naive = (n.double() - r).abs().max().item()
        scale = r.abs().max().item()
        assert torch.isfinite(f).all(), f"{impl} {name}: non-finite values"
        assert err_fast <= 1e-2 * scale, f"{impl} {name}: {err_fast:.3g} off a scale of {scale:.3g}"
        if math.isfinite(err_naive):  # the naive path itself can overflow in fp16 (then only the above holds)
            floor = 1e-3 * scale  # both within 0.1% of the largest value counts as equal
            assert err_fast <= 2 * err_naive + floor, (
                f"{impl} {name}: {err_fast:.3g} vs naive {err_naive:.3g}"
            )


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_memberships_sum_to_one_over_heads(causal):
    w, tau, _, _ = _inputs((3, 5, 41, 12))
    pi = memberships(w, tau * 3, causal=causal)
    assert pi.shape == (3, 5, 41)
    assert (pi >= 0).all()
    torch.testing.assert_close(pi.sum(dim=1), torch.ones(3, 41), rtol=0, atol=1e-6)


SCALES = [1e-6, 1e-3, 1.0, 1e2, 1e4]
SCALE_RTOL = 1e-5  # float32 against float64, relative to max |reference| (measured: <= 1.5e-6 at every scale)


def _relative_errors(out, ref):
    """Max |out - ref| over max |ref|, per tensor: an all-zero output scores 1, not 0."""
    return [((a.double() - r).abs().max() / r.abs().max()).item() for a, r in zip(out, ref)]


@pytest.mark.parametrize("causal, impl", _with_causal(CPU_IMPLS))
@pytest.mark.parametrize("scale", SCALES)
def test_outputs_and_gradients_match_float64_across_scales(impl, causal, scale):
    """At input scales 1e-6 .. 1e4 every CPU path in float32 gives the float64 reference's output
    and gradients (``naive`` on the same rounded inputs), not merely finite values."""
    w, tau, _, grad = _inputs((2, 4, 64, 16))
    ws = w * scale  # rounded to float32 once: the reference sees the same inputs
    ref = _run("naive", ws.double(), tau.double(), None, grad.double(), causal)
    out = _run(impl, ws, tau, None, grad, causal)
    for name, a, err in zip(["y", "dw", "dtau"], out, _relative_errors(out, ref)):
        assert a.dtype == torch.float32 and torch.isfinite(a).all(), f"{impl} {name}: non-finite values"
        assert err <= SCALE_RTOL, f"{impl} {name} at scale {scale:g}: relative error {err:.3g}"
    # the gate 1/(1+m) lies in (0, 1]: |Y| <= Pi |W| <= |W|
    assert (out[0].abs() <= ws.abs() * (1 + 1e-5)).all()


@pytest.mark.parametrize("impl", [name for name in CPU_IMPLS if _has_causal(name)])
def test_causal_output_ignores_future_tokens(impl):
    w, tau, _, _ = _inputs((2, 4, 50, 16))
    n = 20
    w2 = w.clone()
    w2[:, :, n + 1 :] = 100 * torch.randn_like(w2[:, :, n + 1 :])
    y1 = tssa(w, tau, causal=True, impl=impl)
    y2 = tssa(w2, tau, causal=True, impl=impl)
    torch.testing.assert_close(y1[:, :, : n + 1], y2[:, :, : n + 1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(y1[:, :, n + 1 :], y2[:, :, n + 1 :])  # the change did reach the future


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_noncausal_is_permutation_equivariant(impl):
    w, tau, _, _ = _inputs((2, 4, 97, 16))
    perm = torch.randperm(97, generator=torch.Generator().manual_seed(1))
    y = tssa(w, tau, impl=impl)
    y_perm = tssa(w[:, :, perm], tau, impl=impl)
    torch.testing.assert_close(y_perm, y[:, :, perm], rtol=1e-5, atol=1e-6)
    # ...while the causal form is not (a check that the test can tell the two apart)
    ci = impl if _has_causal(impl) else "naive"  # the causal form of this path, or the reference
    assert not torch.allclose(
        tssa(w[:, :, perm], tau, causal=True, impl=ci), tssa(w, tau, causal=True, impl=ci)[:, :, perm]
    )


def test_temperature_changes_memberships():
    w, tau, _, _ = _inputs((1, 4, 30, 8))
    assert not torch.allclose(tssa(w, tau), tssa(w, tau * 10))


def _bytes_per_token(fn, n, c=64, heads=4):
    torch.manual_seed(0)
    x = torch.randn(1, n, c, requires_grad=True)
    with LiveTensorTracker() as tracker:
        fn(x).sum().backward()
    return tracker.peak / n, tracker.allocated / n


@pytest.mark.parametrize("causal, impl", _with_causal(CPU_IMPLS))
def test_memory_is_linear_in_tokens(impl, causal):
    from tssa.nn import SoftmaxAttention, TokenStatisticsAttention

    torch.manual_seed(0)
    layer = TokenStatisticsAttention(64, num_heads=4, causal=causal, impl=impl)
    softmax = SoftmaxAttention(64, num_heads=4, causal=causal, fused_attn=False)
    peak_small, alloc_small = _bytes_per_token(layer, 1024)  # weight gradients are < 3% of this
    peak_big, alloc_big = _bytes_per_token(layer, 16384)
    # bytes per token must not grow with N; chunked paths ("stream") add a constant chunk buffer, so
    # theirs may fall, the others' stay flat
    lo = 0.3 if impl == "stream" else 0.9
    assert lo < peak_big / peak_small < 1.05, (peak_small, peak_big)
    assert lo < alloc_big / alloc_small < 1.05, (alloc_small, alloc_big)
    sm_small, _ = _bytes_per_token(softmax, 256)
    sm_big, _ = _bytes_per_token(softmax, 4096)
    assert sm_big / sm_small > 8, (sm_small, sm_big)  # the N x N matrix: per-token bytes grow ~16x


def test_lean_saves_less_than_naive():
    from tssa.nn import TokenStatisticsAttention

    torch.manual_seed(0)
    peaks = {}
    for impl in ("naive", "lean"):
        layer = TokenStatisticsAttention(64, num_heads=4, impl=impl)
        peaks[impl], _ = _bytes_per_token(layer, 2048)
    assert peaks["lean"] < 0.7 * peaks["naive"], peaks


def test_tracker_measures_a_known_allocation_exactly():
    with LiveTensorTracker() as t:
        a = torch.empty(1000, dtype=torch.float32)
        b = torch.empty(500, dtype=torch.float64)
        del a
        c = b.view(250, 2)  # a view: no new storage
    assert t.allocated == 4000 + 4000
    assert t.peak == 8000
    assert t.live == 4000
    del b, c
    assert t.live == 0


def test_tracker_ignores_views_and_in_place_ops_on_existing_buffers():
    x = torch.randn(4096)
    with LiveTensorTracker() as t:
        v = x.view(64, 64).t()  # a view of a buffer that existed before: nothing new
        x.add_(1.0)  # in place on an existing buffer: nothing new
        y = v * 2  # new: 16 KiB
    assert t.peak == t.allocated == 4096 * 4
    del y
    assert t.live == 0


@pytest.mark.parametrize(
    "w, tau, match",
    [
        (torch.randn(2, 4, 8), torch.ones(4), r"4-D tensor \(B, H, N, D\), got shape \(2, 4, 8\)"),
        (torch.randn(1, 4, 8, 2), torch.ones(3), r"temperature must have shape \(4,\).*got \(3,\)"),
        (torch.ones(1, 4, 8, 2, dtype=torch.int64), torch.ones(4), r"floating point, got dtype torch.int64"),
        (torch.randn(1, 4, 0, 2), torch.ones(4), r"shape \(1, 4, 0, 2\) has an empty"),
    ],
    ids=["rank", "temperature", "dtype", "empty"],
)
def test_bad_input_raises_clear_error(w, tau, match):
    with pytest.raises(ValueError, match=match):
        tssa(w, tau)


def test_bad_impl_and_bias_raise():
    w = torch.randn(1, 2, 5, 3)
    with pytest.raises(ValueError, match="unknown TSSA impl 'nope'"):
        tssa(w, torch.ones(2), impl="nope")
    with pytest.raises(ValueError, match=r"bias must have shape \(2, 5\)"):
        tssa(w, torch.ones(2), bias=torch.zeros(2, 4))


def test_env_variable_selects_impl(monkeypatch):
    w = torch.randn(1, 2, 5, 3)
    monkeypatch.setenv("TSSA_IMPL", "naive")
    assert resolve_impl("auto", w) == "naive"
    assert resolve_impl("lean", w) == "lean"  # an explicit choice wins over the variable
    monkeypatch.delenv("TSSA_IMPL")
    assert resolve_impl("auto", w) != "naive"
