"""The streaming CPU path ("stream") against the reference, its memory, layout and dispatch."""

from __future__ import annotations

import pytest
import torch

import tssa.ops.stream as stream_mod
from benchmarks.studies.complexity.floor import memory_ratios
from tssa.nn import TokenStatisticsAttention
from tssa.ops import resolve_impl, tssa
from tssa.ops.naive import tssa_naive
from tssa.ops.stream import chunk_tokens, tssa_stream


def _inputs(shape, seed=0, bias=False, token_major=False):
    g = torch.Generator().manual_seed(seed)
    b, h, n, d = shape
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    if token_major:  # the layout a layer hands over: a head split of a (B, N, C) buffer
        w = w.transpose(1, 2).contiguous().transpose(1, 2)
    tau = 0.5 + torch.rand(h, generator=g, dtype=torch.float64)
    pb = 0.1 * torch.randn(h, n, generator=g, dtype=torch.float64) if bias else None
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    return w, tau, pb, grad


def _grads(fn, w, tau, pb, grad, dtype):
    leaves = [t.detach().to(dtype).requires_grad_() for t in (w, tau) + ((pb,) if pb is not None else ())]
    y = fn(leaves[0], leaves[1], leaves[2] if pb is not None else None)
    return [y.detach(), *torch.autograd.grad(y, leaves, grad.to(dtype))]


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks of a few tokens, so every pass crosses many chunk boundaries, with a ragged last one."""
    monkeypatch.setattr(stream_mod, "_CHUNK_ELEMS", 7 * 48)
    return chunk_tokens(48)


@pytest.mark.parametrize("token_major", [False, True], ids=["head_major", "token_major"])
@pytest.mark.parametrize("shape", [(3, 4, 37, 12), (1, 8, 50, 6), (2, 1, 9, 48)], ids=str)
def test_stream_matches_reference_across_chunks(tiny_chunks, shape, token_major):
    assert tiny_chunks == 16  # the floor of chunk_tokens: 37 and 50 tokens give 3 and 4 chunks
    w, tau, pb, grad = _inputs(shape, bias=True, token_major=token_major)
    ref = _grads(tssa_naive, w, tau, pb, grad, torch.float64)
    out = _grads(tssa_stream, w, tau, pb, grad, torch.float32)
    for name, a, r in zip(["y", "dw", "dtau", "dbias"], out, ref):
        assert a.dtype == torch.float32 and a.shape == r.shape, name
        err = (a.double() - r).abs().max().item()
        assert err <= 1e-5 * r.abs().max().item() + 1e-7, f"{name}: max error {err:.3g}"


def test_stream_gradcheck_fp64_across_chunks(tiny_chunks, one_thread):  # tiny ops: threads only sync
    w, tau, pb, _ = _inputs((2, 2, 19, 3), bias=True)  # two chunks, the last ragged
    inputs = (w.requires_grad_(), tau.requires_grad_(), pb.requires_grad_())
    assert torch.autograd.gradcheck(tssa_stream, inputs, eps=1e-6, atol=1e-6)


def test_stream_output_is_token_major_so_head_merge_is_free():
    w, tau, _, _ = _inputs((2, 4, 30, 8), token_major=True)
    y = tssa_stream(w.float(), tau.float())
    assert y.shape == (2, 4, 30, 8)
    assert y.transpose(1, 2).is_contiguous()  # (B, N, H, D) buffer: reshape to (B, N, C) is a view


def test_stream_is_deterministic():
    w, tau, pb, grad = _inputs((2, 8, 1200, 48), bias=True, token_major=True)  # 8 chunks
    a = _grads(tssa_stream, w, tau, pb, grad, torch.float32)
    b = _grads(tssa_stream, w, tau, pb, grad, torch.float32)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_layer_with_stream_equals_layer_with_naive():
    torch.manual_seed(0)
    layer = TokenStatisticsAttention(96, num_heads=4, qkv_bias=True)
    with torch.no_grad():
        layer.temp.copy_(torch.tensor([[0.5], [1.0], [2.0], [3.0]]))
    x = torch.randn(2, 300, 96)
    results = {}
    for impl in ("naive", "stream"):
        layer.impl = impl
        layer.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        y = layer(xi)
        y.pow(2).sum().backward()
        results[impl] = [y.detach(), xi.grad] + [p.grad for p in layer.parameters()]
    for a, r in zip(results["stream"], results["naive"]):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)


def _cpu_choice() -> str:
    from tssa.ops.fused_cpu import available

    return "fused" if available()[0] else "stream"


def test_auto_picks_the_compiled_path_on_cpu_and_lean_for_causal():
    w = torch.randn(1, 4, 16, 8)
    assert resolve_impl("auto", w) == _cpu_choice()
    assert resolve_impl("auto", w.half()) == "stream"  # the compiled path takes float32/float64 only
    assert resolve_impl("auto", w, causal=True) == "lean"
    with pytest.raises(ValueError, match="'stream' cannot run.*causal=True"):
        tssa(w, torch.ones(4), causal=True, impl="stream")
    with pytest.raises(ValueError, match="'triton' cannot run on a cpu"):
        tssa(w, torch.ones(4), impl="triton")


def test_env_preference_falls_back_the_way_auto_does(monkeypatch):
    """TSSA_IMPL=stream with a causal input runs what auto runs (before: "use impl='auto'", which was in use)."""
    w, tau = torch.randn(1, 4, 16, 8), 0.5 + torch.rand(4)
    monkeypatch.setenv("TSSA_IMPL", "stream")
    assert resolve_impl("auto", w) == "stream"
    assert resolve_impl("auto", w, causal=True) == "lean"
    y = tssa(w, tau, causal=True)
    monkeypatch.delenv("TSSA_IMPL")
    torch.testing.assert_close(y, tssa(w, tau, causal=True, impl="naive"), rtol=1e-5, atol=1e-6)
    monkeypatch.setenv("TSSA_IMPL", "triton")  # cannot run on a CPU tensor: auto's own choice
    assert resolve_impl("auto", w) == _cpu_choice()
    monkeypatch.setenv("TSSA_IMPL", "fastest")
    with pytest.raises(ValueError, match="TSSA_IMPL='fastest' is not a TSSA impl.*or unset it"):
        tssa(w, tau)


def test_auto_never_picks_the_cpu_streaming_path_elsewhere():
    w = torch.empty(1, 4, 16, 8, device="meta")  # any non-CPU tensor, CUDA included
    assert resolve_impl("auto", w) == "lean"
    assert resolve_impl("stream", w) == "stream"  # explicitly asked for, it still runs anywhere


@pytest.mark.parametrize("n", [1024, 2048])
def test_layer_peak_memory_within_1p5x_of_projections(n):
    """Goal of the memory-lean backward: forward+backward peak <= 1.5x the two projections alone
    (input and parameters not counted; activations, saved tensors and all gradients are)."""
    ratios = memory_ratios(n, 384, 8, ["lean", "stream"])["ratio"]
    assert ratios["stream"] <= 1.5, ratios
    assert ratios["stream"] < ratios["lean"], ratios


def test_stream_leaves_its_inputs_untouched():
    w, tau, pb, grad = (t.float() for t in _inputs((2, 4, 40, 8), bias=True, token_major=True))
    copies = [t.clone() for t in (w, tau, pb, grad)]
    leaves = [t.requires_grad_() for t in (w, tau, pb)]
    y = tssa_stream(*leaves)
    torch.autograd.grad(y, leaves, grad)
    for before, after in zip(copies, (w, tau, pb, grad)):
        assert torch.equal(before, after.detach())
