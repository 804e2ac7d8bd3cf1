"""The fused C++ CPU kernels (:mod:`tssa.ops.fused_cpu`) against the reference: outputs and every
gradient, layouts, chunk edges, thread-count determinism, gradcheck and the refusals."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tssa.ops.fused_cpu as fused_mod
from tssa.ops.fused_cpu import available, chunk_tokens, tssa_fused
from tssa.ops.naive import tssa_naive

_OK, _REASON = available()
if not _OK:
    pytest.skip(f"fused CPU kernels unavailable: {_REASON}", allow_module_level=True)

_STEP = chunk_tokens(8 * 48, 100_000)  # tokens per chunk at H * D = 384 (170), long sequences

# (B, H, N, D): one token; three tokens; N = 197 with D = 60 and D = 1 (the runtime head size) and
# with D = 16, 32, 64 (compile-time ones, as 48); H = 1; a multiple of the chunk plus and minus one
# (4 full chunks with a ragged last one, and 5 with a one-token last one)
SHAPES = [
    (1, 1, 1, 1),
    (2, 4, 3, 48),
    (1, 8, 197, 48),
    (2, 4, 197, 60),
    (2, 8, 197, 1),
    (2, 4, 197, 16),  # the head sizes compiled as constants: 16, 32, 48 (above) and 64
    (1, 6, 197, 32),
    (1, 2, 197, 64),
    (2, 1, 197, 48),
    (2, 8, 4 * _STEP - 1, 48),
    (1, 8, 4 * _STEP + 1, 48),
]


def _inputs(shape, seed=0, bias=False, head_split=False):
    g = torch.Generator().manual_seed(seed)
    b, h, n, d = shape
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    if head_split:  # the layout a layer hands over: x.view(B, N, H, D).transpose(1, 2)
        w = w.transpose(1, 2).contiguous().view(b, n, h * d).view(b, n, h, d).transpose(1, 2)
    tau = 0.5 + torch.rand(h, generator=g, dtype=torch.float64)
    pb = 0.1 * torch.randn(h, n, generator=g, dtype=torch.float64) if bias else None
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    return w, tau, pb, grad


def _grads(fn, w, tau, pb, grad, dtype):
    """[y, dw, dtau(, dbias)] of ``fn`` in ``dtype``, keeping the layout of ``w``."""
    leaves = [w.detach().to(dtype).requires_grad_(), tau.detach().to(dtype).requires_grad_()]
    if pb is not None:
        leaves.append(pb.detach().to(dtype).requires_grad_())
    y = fn(leaves[0], leaves[1], leaves[2] if pb is not None else None)
    return [y.detach(), *torch.autograd.grad(y, leaves, grad.to(dtype))]


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("head_split", [True, False], ids=["head_split", "contiguous"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fused_matches_reference(shape, head_split, bias):
    w, tau, pb, grad = _inputs(shape, bias=bias, head_split=head_split)
    assert w.transpose(1, 2).is_contiguous() == head_split or shape[1] == 1 or shape[2] == 1
    ref = _grads(tssa_naive, w, tau, pb, grad, torch.float64)
    # float32: within 1e-5 of the largest reference value, or within 4x the reference's own float32
    # error where the problem is worse conditioned (dtau at N = 3 cancels: naive float32 is ~2e-5 off)
    ref32 = _grads(tssa_naive, w, tau, pb, grad, torch.float32)
    names = ["y", "dw", "dtau", "dbias"]
    for dtype, rtol, atol in ((torch.float64, 1e-10, 1e-12), (torch.float32, 1e-5, 1e-6)):
        out = _grads(tssa_fused, w, tau, pb, grad, dtype)
        assert len(out) == len(ref)
        for name, a, r, r32 in zip(names, out, ref, ref32):
            assert a.dtype == dtype and a.shape == r.shape, name
            err = (a.double() - r).abs().max().item()
            scale = r.abs().max().item()
            tol = rtol * scale + atol
            if dtype == torch.float32:
                tol = max(tol, 4 * (r32.double() - r).abs().max().item())
            assert err <= tol, f"{dtype} {name}: max error {err:.3g} > {tol:.3g} (max |ref| {scale:.3g})"


def test_fused_layouts_of_output_and_gradient():
    for head_split in (True, False):
        w, tau, _, grad = _inputs((2, 4, 30, 8), head_split=head_split)
        w = w.float().requires_grad_()
        y = tssa_fused(w, tau.float())
        assert y.shape == (2, 4, 30, 8)
        assert y.transpose(1, 2).is_contiguous()  # (B, N, H, D) buffer: merging heads is a view
        (dw,) = torch.autograd.grad(y, w, grad.float())
        assert dw.shape == w.shape and dw.transpose(1, 2).is_contiguous()


def test_fused_empty_batch_matches_reference():
    w, tau = torch.randn(0, 2, 5, 3, requires_grad=True), torch.ones(2, requires_grad=True)
    y = tssa_fused(w, tau)
    dw, dtau = torch.autograd.grad(y.sum(), (w, tau))
    assert y.shape == dw.shape == (0, 2, 5, 3) and torch.equal(dtau, torch.zeros(2))


def test_fused_is_bit_identical_across_thread_counts():
    before = torch.get_num_threads()
    results = {}
    try:
        for dtype in (torch.float32, torch.float64):
            w, tau, pb, grad = _inputs((2, 8, 1200, 48), bias=True, head_split=True)  # 8 chunks each
            for threads in (1, 2):
                torch.set_num_threads(threads)
                results[dtype, threads] = _grads(tssa_fused, w, tau, pb, grad, dtype)
    finally:
        torch.set_num_threads(before)
    for dtype in (torch.float32, torch.float64):
        for a, b in zip(results[dtype, 1], results[dtype, 2]):
            assert torch.equal(a, b), dtype


def test_fused_gradcheck_fp64_across_chunks(one_thread):
    w, tau, pb, _ = _inputs((2, 2, 40, 3), bias=True)  # chunks of 16 tokens: 16 + 16 + 8
    assert chunk_tokens(2 * 3, 40) == 16
    inputs = (w.requires_grad_(), tau.requires_grad_(), pb.requires_grad_())
    assert torch.autograd.gradcheck(tssa_fused, inputs, eps=1e-6, atol=1e-6)


def test_fused_without_a_gradient_runs_the_same_kernel_and_records_no_graph():
    w, tau, pb, _ = _inputs((2, 4, 197, 48), bias=True, head_split=True)
    w, tau, pb = w.float(), tau.float(), pb.float()
    graph = tssa_fused(w.requires_grad_(), tau, pb)  # through the autograd function
    with torch.no_grad():
        plain = tssa_fused(w, tau, pb)
    leaf = tssa_fused(w.detach(), tau, pb)  # grad mode on, nothing requires a gradient
    assert graph.grad_fn is not None and plain.grad_fn is None and leaf.grad_fn is None
    for y in (plain, leaf):
        assert torch.equal(y, graph) and y.stride() == graph.stride()  # the same token-major view


def test_fused_handles_mixed_parameter_dtypes_and_partial_grads():
    w, tau, pb, grad = _inputs((1, 4, 50, 8), bias=True, head_split=True)
    wf = w.float().requires_grad_()
    tau64 = tau.clone().requires_grad_()  # float64 temperature on a float32 input
    y = tssa_fused(wf, tau64, pb.float())  # bias without grad
    dw, dtau = torch.autograd.grad(y, (wf, tau64), grad.float())
    assert dtau.dtype == torch.float64 and dw.dtype == torch.float32
    ref = _grads(tssa_naive, w, tau, pb, grad, torch.float64)
    torch.testing.assert_close(dtau, ref[2], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(dw.double(), ref[1], rtol=1e-4, atol=1e-6)


def test_fused_leaves_its_inputs_untouched():
    w, tau, pb, grad = (t.float() for t in _inputs((2, 4, 40, 8), bias=True, head_split=True))
    copies = [t.clone() for t in (w, tau, pb, grad)]
    leaves = [t.requires_grad_() for t in (w, tau, pb)]
    torch.autograd.grad(tssa_fused(*leaves), leaves, grad)
    for before, after in zip(copies, (w, tau, pb, grad)):
        assert torch.equal(before, after.detach())


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_fused_calls_are_torch_operators_seen_by_dispatch_modes():
    w, tau, pb, grad = (t.float() for t in _inputs((1, 2, 20, 4), bias=True))
    leaves = [t.requires_grad_() for t in (w, tau, pb)]
    with _Recorder() as rec:
        torch.autograd.grad(tssa_fused(*leaves), leaves, grad)
    assert "tssa_cpu.fwd.default" in rec.seen and "tssa_cpu.bwd.default" in rec.seen


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fused_refuses_half_precision(dtype):
    with pytest.raises(ValueError, match=f"float32 or float64 only, got {dtype}"):
        tssa_fused(torch.randn(1, 2, 8, 4, dtype=dtype), torch.ones(2))


def test_fused_refuses_bad_shapes_and_devices():
    w = torch.randn(1, 2, 8, 4)
    with pytest.raises(ValueError, match=r"bias must have shape \(2, 8\).*got \(2, 7\)"):
        tssa_fused(w, torch.ones(2), torch.zeros(2, 7))
    with pytest.raises(ValueError, match=r"temperature must have shape \(2,\)"):
        tssa_fused(w, torch.ones(3))
    with pytest.raises(ValueError, match="4-D tensor"):
        tssa_fused(w[0], torch.ones(2))
    with pytest.raises(ValueError, match="CPU tensors only, got a meta tensor"):  # CUDA is absent here
        tssa_fused(w.to("meta"), torch.ones(2))


def test_unavailable_extension_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr(fused_mod, "_state", None)
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    ok, reason = available()
    assert not ok and "no C++ compiler" in reason and "\n" not in reason
    with pytest.raises(ValueError, match="unavailable: no C\\+\\+ compiler"):
        tssa_fused(torch.randn(1, 2, 8, 4), torch.ones(2))
    monkeypatch.setattr(fused_mod, "_state", None)
    monkeypatch.delenv("CXX")
    assert available() == (True, "")  # loads again: the library is already in this process


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TSSA_EXT_CACHE", str(tmp_path / "ext"))
    assert fused_mod.cache_dir() == tmp_path / "ext"
    monkeypatch.delenv("TSSA_EXT_CACHE")
    assert fused_mod.cache_dir().parts[-2] == "tssa-ext" and torch.__version__ in fused_mod.cache_dir().name


def _outputs_of_every_path():
    """fwd and bwd outputs of the raw ops, float32 and float64, for every shape class of SHAPES with
    a bias (the statistics, Pi, dW, dtau and dbias included)."""
    out = []
    for dtype in (torch.float32, torch.float64):
        for shape in SHAPES:
            w, tau, pb, grad = _inputs(shape, bias=True)
            wt = w.transpose(1, 2).contiguous().to(dtype)  # token-major (B, N, H, D)
            gt = grad.transpose(1, 2).contiguous().to(dtype)
            tau, pb = tau.to(dtype), pb.to(dtype).contiguous()
            step = chunk_tokens(shape[1] * shape[3], shape[2])
            f = torch.ops.tssa_cpu.fwd(wt, tau, pb, step, fused_mod._SQ_EPS, fused_mod.MEMBERSHIP_EPS)
            b = torch.ops.tssa_cpu.bwd(gt, wt, tau, pb, f[1], *f[2:], step, fused_mod._SQ_EPS)
            out.append([t.clone() for t in (*f, *b)])
    return out


def test_the_avx2_and_baseline_builds_give_the_same_bits(tmp_path):
    """Built for AVX2 here and, in a child process, for the compiler's default target
    (``TSSA_EXT_ISA=base``, its own library in its own directory): every output of both kernels is
    bit-identical (no floating-point contraction in either build, the same operations in the same order)."""
    import os
    import subprocess
    import sys

    if fused_mod.isa() != "avx2":
        pytest.skip(f"this machine builds the {fused_mod.isa()!r} variant only")
    mine = _outputs_of_every_path()
    code = (
        "import sys, torch\n"
        "import tests.test_fast_fused as t\n"
        "from tssa.ops import fused_cpu\n"
        "assert fused_cpu.isa() == 'base', fused_cpu.isa()\n"
        "torch.save(t._outputs_of_every_path(), sys.argv[1])\n"
    )
    out = tmp_path / "base.pt"
    env = {**os.environ, "TSSA_EXT_ISA": "base"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-c", code, str(out)], env=env, cwd=root, capture_output=True, text=True,
                       timeout=900)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    theirs = torch.load(out)
    assert len(theirs) == len(mine)
    for i, (a, b) in enumerate(zip(mine, theirs)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and torch.equal(x, y), (i, (x - y).abs().max())


def test_the_kernels_exp_is_the_c_librarys_for_every_float32():
    """The memberships' softmax runs the kernels' own float32 exp (glibc's expf algorithm written out, 8
    lanes at once in the AVX2 build, one at a time in the baseline build). Where the C library is glibc
    2.28 or newer on an x86-64 CPU with FMA, both must equal ``std::exp`` in every bit for all 2^32
    float32 bit patterns: the kernels called ``std::exp`` before, so their results are unchanged."""
    import platform

    libc, version = platform.libc_ver()
    release = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if platform.machine() != "x86_64" or libc != "glibc" or release < (2, 28) or fused_mod.isa() != "avx2":
        pytest.skip(
            f"the exp mirrors glibc >= 2.28 on x86-64 with FMA; here {platform.machine()} {libc} {version}"
        )
    assert torch.ops.tssa_cpu.exp_mismatches(0, 2**32) == 0
    with pytest.raises(RuntimeError, match="lo <= hi"):
        torch.ops.tssa_cpu.exp_mismatches(5, 4)


def test_backward_over_w_writes_the_same_gradient_into_w():
    """``tssa_cpu::bwd_over_w`` is ``bwd`` with dW written over ``w_tm``: the same bits, in that buffer."""
    for shape in SHAPES:
        w, tau, pb, grad = _inputs(shape, bias=True)
        wt, gt = w.transpose(1, 2).contiguous(), grad.transpose(1, 2).contiguous()
        step = chunk_tokens(shape[1] * shape[3], shape[2])
        f = torch.ops.tssa_cpu.fwd(wt, tau, pb, step, fused_mod._SQ_EPS, fused_mod.MEMBERSHIP_EPS)
        ref = torch.ops.tssa_cpu.bwd(gt, wt, tau, pb, *f[1:], step, fused_mod._SQ_EPS)
        buf = wt.clone()
        outs = torch.ops.tssa_cpu.bwd_over_w(gt, buf, tau, pb, *f[1:], step, fused_mod._SQ_EPS)
        assert torch.equal(buf, ref[0]) and not torch.equal(buf, wt), shape
        assert len(outs) == 2 and torch.equal(outs[0], ref[1]) and torch.equal(outs[1], ref[2]), shape


@pytest.mark.parametrize("qkv_bias", [False, True], ids=["no_qkv_bias", "qkv_bias"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_recomputed_projection_gives_the_same_bits(qkv_bias, bias):
    """``projection=(x, weight, qkv_bias)``: w recomputed in backward, dW written over it; the output and
    every gradient (x, both weights, tau, bias) equal the path that saves w, bit for bit."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(3)
    b, n, h, d = 2, 197, 4, 48
    x = torch.randn(b, n, h * d, generator=g, requires_grad=True)
    weight = (torch.randn(h * d, h * d, generator=g) / 20).requires_grad_()
    qb = torch.randn(h * d, generator=g).requires_grad_() if qkv_bias else None
    tau = (torch.rand(h, generator=g) + 0.5).requires_grad_()
    pb = torch.randn(h, n, generator=g).requires_grad_() if bias else None
    gy = torch.randn(b, h, n, d, generator=g)
    leaves = [t for t in (x, weight, qb, tau, pb) if t is not None]
    runs = []
    for projection in (False, True):
        w = F.linear(x, weight, qb).view(b, n, h, d).transpose(1, 2)
        y = tssa_fused(w, tau, pb, projection=(x, weight, qb) if projection else None)
        runs.append((y.detach(), torch.autograd.grad(y, leaves, gy)))
    (y0, g0), (y1, g1) = runs
    assert torch.equal(y0, y1)
    assert all(torch.equal(a, c) for a, c in zip(g0, g1))
    with pytest.raises(ValueError, match="cannot have made w"):
        tssa_fused(w, tau, pb, projection=(x[:, :5], weight, qb))


def test_layer_recomputes_w_and_holds_one_buffer_less():
    """The TSSA layer on the fused core (``recompute=True``, the default) gives the same output and
    gradients as with ``recompute=False`` (and as with a hooked ``qkv``, which keeps its module call),
    and its forward+backward peak is lower by about one (B, N, C) float32 buffer."""
    from benchmarks.core.measure import measure_peak_bytes
    from tssa.nn import TokenStatisticsAttention

    torch.manual_seed(0)
    b, n, c = 1, 2048, 192
    on = TokenStatisticsAttention(c, 4, qkv_bias=True)
    off = TokenStatisticsAttention(c, 4, qkv_bias=True, recompute=False)
    hooked = TokenStatisticsAttention(c, 4, qkv_bias=True)
    off.load_state_dict(on.state_dict())
    hooked.load_state_dict(on.state_dict())
    hooked.qkv.register_forward_hook(lambda *args: None)
    x = torch.randn(b, n, c, requires_grad=True)
    dy = torch.randn(b, n, c)
    assert on._projection(x) is not None and off._projection(x) is None and hooked._projection(x) is None
    with torch.no_grad():
        assert on._projection(x) is None  # no gradient: nothing to save, nothing to recompute
    results = []
    for layer in (on, off, hooked):
        y = layer(x)
        results.append((y.detach(), torch.autograd.grad(y, [x, *layer.parameters()], dy)))
    for y, grads in results[1:]:
        assert torch.equal(y, results[0][0])
        assert all(torch.equal(a, c) for a, c in zip(grads, results[0][1]))

    def step(layer):
        def run():
            x.grad = None
            layer.zero_grad(set_to_none=True)
            layer(x).backward(dy)

        return run

    saved = measure_peak_bytes(step(off), "cpu") - measure_peak_bytes(step(on), "cpu")
    buffer = b * n * c * 4
    assert 0.9 * buffer <= saved <= 1.1 * buffer, (saved, buffer)
