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

pytest.importorskip("triton")

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


def _errors(device: str) -> list[dict]:
    """Relative max errors of triton (fp32 and bf16) and of naive bf16 against naive fp64, per case."""
    from tssa.ops.naive import tssa_naive
    from tssa.ops.triton_tssa import tssa_triton

    rows = []
    for shape, bias, token_major in CASES:
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


@pytest.mark.slow
def test_triton_interpreted_matches_reference():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == len(CASES)
    _check(rows)


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
    _check(_errors("cuda"))


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


if __name__ == "__main__":  # the child process of test_triton_interpreted_matches_reference
    print(json.dumps(_errors("cpu")))
