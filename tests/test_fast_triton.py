"""The fused Triton kernels against the reference: interpreted on CPU, natively on CUDA.

On CPU the kernels run under ``TRITON_INTERPRET=1`` in a child process (the flag must be set before
triton compiles anything, and other tests may already have imported it); the child prints the
largest relative errors of the output and every gradient as JSON, which the test checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

triton = pytest.importorskip("triton")

# (B, H, N, D), bias, token-major: one token, odd N over several blocks, D = 60 (padded to 64),
# H = 3 (padded to 4), H = 1, B > 1, and N = 600 over three programs of 256 tokens per reduction
CASES = [
    ((1, 1, 1, 8), False, False),
    ((1, 2, 600, 8), True, False),
    ((2, 3, 70, 12), True, True),
    ((1, 4, 33, 60), False, False),
    ((2, 2, 131, 5), True, False),
    ((1, 1, 9, 16), True, True),
]


def _inputs(shape, bias, token_major, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, h, n, d = shape
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    if token_major:
        w = w.transpose(1, 2).contiguous().transpose(1, 2)
    tau = 0.5 + torch.rand(h, generator=g, dtype=torch.float64)
    pb = 0.1 * torch.randn(h, n, generator=g, dtype=torch.float64) if bias else None
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    return w, tau, pb, grad


def _grads(fn, w, tau, pb, grad, dtype, device):
    leaves = [
        t.detach().to(device, dtype).requires_grad_() for t in (w, tau) + ((pb,) if pb is not None else ())
    ]
    y = fn(leaves[0], leaves[1], leaves[2] if pb is not None else None)
    return [y.detach(), *torch.autograd.grad(y, leaves, grad.to(device, dtype))]


# the claimed limits: H = 64 heads (BLOCK_H 64), D = 256 (BLOCK_D 256), both at once (one token per tile)
LIMIT_CASES = [
    ((1, 64, 21, 4), True, False),
    ((2, 2, 19, 256), False, True),
    ((1, 64, 3, 256), True, False),
]


def _errors(device: str, cases=CASES) -> list[dict]:
    """Relative max errors of triton (fp32 and bf16) and of naive bf16 against naive fp64, per case."""
    from tssa.ops.naive import tssa_naive
    from tssa.ops.triton_tssa import tssa_triton

    rows = []
    for shape, bias, token_major in cases:
        w, tau, pb, grad = _inputs(shape, bias, token_major)
        ref = _grads(tssa_naive, w, tau, pb, grad, torch.float64, device)
        row = {"case": f"{shape} bias={bias} token_major={token_major}"}
        for label, fn, dt in [
            ("triton_fp32", tssa_triton, torch.float32),
            ("triton_bf16", tssa_triton, torch.bfloat16),
            ("naive_bf16", tssa_naive, torch.bfloat16),
        ]:
            out = _grads(fn, w, tau, pb, grad, dt, device)
            row[label + "_dtypes"] = [str(o.dtype) for o in out]
            row[label] = [
                (o.double() - r).abs().max().item() / max(r.abs().max().item(), 1e-30)
                for o, r in zip(out, ref)
            ]
        rows.append(row)
    return rows


def _check(rows: list[dict]) -> None:
    names = ["y", "dw", "dtau", "dbias"]
    for row in rows:
        assert set(row["triton_fp32_dtypes"]) == {"torch.float32"}, row
        assert set(row["triton_bf16_dtypes"]) == {"torch.bfloat16"}, row
        for name, e32, e16, n16 in zip(names, row["triton_fp32"], row["triton_bf16"], row["naive_bf16"]):
            assert e32 <= 2e-5, f"{row['case']} {name}: fp32 relative error {e32:.3g}"
            # flash-attention rule: at most twice the plain path's error in the same dtype (+0.1% floor)
            assert e16 <= 2 * n16 + 1e-3, f"{row['case']} {name}: bf16 {e16:.3g} vs naive bf16 {n16:.3g}"


def _interpreted(which: str) -> list[dict]:
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, __file__, which], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_triton_interpreted_matches_reference():
    rows = _interpreted("cases")
    assert len(rows) == len(CASES)
    _check(rows)


def test_triton_interpreted_at_the_claimed_limits():
    """H = 64 and D = 256, the largest inputs tssa_triton accepts, give the reference's values."""
    rows = _interpreted("limits")
    assert len(rows) == len(LIMIT_CASES)
    _check(rows)


def test_triton_refuses_what_it_cannot_compute(monkeypatch):
    from tssa.ops.triton_tssa import tssa_triton

    w, tau = torch.randn(1, 2, 8, 4), torch.ones(2)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="the kernels run on CUDA tensors; use impl='stream' or 'lean'"):
        tssa_triton(w, tau)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # CPU tensors allowed; the checks still apply
    with pytest.raises(ValueError, match="float64 input, but the kernels compute in float32.*impl='lean'"):
        tssa_triton(w.double(), tau.double())
    with pytest.raises(ValueError, match="temperature is on meta but w is on cpu"):
        tssa_triton(w, tau.to("meta"))
    with pytest.raises(ValueError, match="bias is on meta but w is on cpu"):
        tssa_triton(w, tau, torch.zeros(2, 8, device="meta"))
    with pytest.raises(ValueError, match="heads 65 exceed 256 / 64"):
        tssa_triton(torch.randn(1, 65, 2, 4), torch.ones(65))
    with pytest.raises(ValueError, match="head dim 257 / heads 1 exceed"):
        tssa_triton(torch.randn(1, 1, 2, 257), torch.ones(1))


def test_kernel_offsets_are_64_bit():
    """Every pointer offset of every kernel is int64 even when all sizes and strides arrive as int32, so
    B*H*N*D past 2^31 elements addresses correctly. Compiled for a CUDA target; no GPU needed."""
    import re

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tssa.ops import triton_tssa as tt

    kernels = [tt._colsq, tt._fwd_stats, tt._fwd_out, tt._bwd_a, tt._bwd_b, tt._bwd_c]
    sizes = {"BLOCK_N": 16, "BLOCK_D": 16, "BLOCK_H": 4, "ITERS": 2, "HAS_BIAS": True}
    for fn in kernels:
        names = fn.arg_names
        pointers = {n for n in names if n.isupper() and n not in sizes and n not in ("N", "H", "D", "NBLK")}
        sig = {n: "constexpr" if n in sizes else "*fp32" if n in pointers else "i32" for n in names}
        constexprs = {(names.index(n),): v for n, v in sizes.items() if n in names}
        ttir = triton.compile(ASTSource(fn, sig, constexprs), target=GPUTarget("cuda", 90, 32)).asm["ttir"]
        offsets = re.findall(r"tt\.addptr .*?:\s*\S*ptr<f32>>?,\s*(\S+)", ttir)
        assert offsets, fn.__name__
        narrow = [o for o in offsets if "i64" not in o]
        assert not narrow, f"{fn.__name__}: 32-bit pointer offsets {narrow}"


def test_interpreted_check_rejects_a_wrong_kernel():
    """The check above can fail: an error of 1e-3 in fp32 is caught."""
    rows = [
        {
            "case": "synthetic",
            "triton_fp32_dtypes": ["torch.float32"],
            "triton_bf16_dtypes": ["torch.bfloat16"],
            "triton_fp32": [1e-3, 0.0, 0.0],
            "triton_bf16": [0.0, 0.0, 0.0],
            "naive_bf16": [0.0, 0.0, 0.0],
        }
    ]
    with pytest.raises(AssertionError, match="fp32 relative error"):
        _check(rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_cuda_matches_reference():
    _check(_errors("cuda", CASES + LIMIT_CASES))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_picks_triton_on_cuda():
    from tssa.nn import TokenStatisticsAttention
    from tssa.ops import resolve_impl

    w = torch.randn(2, 8, 1000, 48, device="cuda")
    assert resolve_impl("auto", w) == "triton"
    assert resolve_impl("auto", w, causal=True) == "lean"
    layer = TokenStatisticsAttention(384, num_heads=8).cuda()
    x = torch.randn(2, 1000, 384, device="cuda")
    y = layer(x)
    layer.impl = "naive"
    torch.testing.assert_close(y, layer(x), rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_on_cuda_never_picks_stream_and_triton_refuses_float64():
    from tssa.ops import resolve_impl
    from tssa.ops.triton_tssa import tssa_triton

    w = torch.randn(1, 4, 64, 16, device="cuda", dtype=torch.float64)
    assert resolve_impl("auto", w) == "lean"
    assert resolve_impl("auto", torch.randn(1, 80, 64, 16, device="cuda")) == "lean"  # H > 64
    with pytest.raises(ValueError, match="float64"):
        tssa_triton(w, torch.ones(4, device="cuda", dtype=torch.float64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_past_2_31_elements_equals_per_batch_runs():
    """B*H*N*D > 2^31 (the last batch element starts past 2^31): equal to running each element alone."""
    from tssa.ops.triton_tssa import tssa_triton

    free, _ = torch.cuda.mem_get_info()
    b, h, n, d = 3, 1, (1 << 30) // 64 + 64, 64  # 3 x 2^30+ elements, bf16: 6 GiB in, 6 GiB out
    if free < 20 * 2**30:
        pytest.skip("needs 20 GiB of free GPU memory")
    g = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    tau = torch.ones(h, device="cuda")
    with torch.no_grad():
        y = tssa_triton(w, tau)
        for i in range(b):
            torch.testing.assert_close(y[i : i + 1], tssa_triton(w[i : i + 1].clone(), tau), rtol=0, atol=0)


if __name__ == "__main__":  # the child process of the interpreted tests: "cases" or "limits"
    print(json.dumps(_errors("cpu", LIMIT_CASES if sys.argv[1:] == ["limits"] else CASES)))
