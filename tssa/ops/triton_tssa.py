"""Fused Triton kernels for the non-causal TSSA core, forward and backward.

Same mathematics as :mod:`tssa.ops.naive` (Wu et al., ICLR 2025, Eq. 10-12) and the same backward
equations as :mod:`tssa.ops.lean`. Each kernel reads the projected tokens once; every reduction over
tokens is written as per-block partial sums and finished by ``torch.sum`` (no atomics, so results are
deterministic). Arithmetic is float32 whatever the input dtype; the output has ``w``'s dtype.

Forward (three passes over ``w``):

1. ``_colsq``: ``colsq[b, h, d] = sum_n w^2`` (partials per token block).
2. ``_fwd_stats``: one program per (batch, token block) holds all H heads, so the softmax over heads
   is local: ``q = sum_d w^2 r (+ D bias)``, ``Pi = softmax_h(tau q)``, partial ``sum_n Pi w^2`` and
   ``sum_n Pi``. ``Pi`` (B, H, N) is stored and saved for backward.
3. ``_fwd_out``: ``Y = -Pi w g`` with ``g = 1 / (1 + m)``.

Backward (three passes): ``_bwd_a`` (``dPi1 = -sum_d G w g``, partial ``sum_n Pi G w``), ``_bwd_b``
(the softmax backward over heads, partial ``sum_n tau dS w^2`` and ``sum_n dS q``), ``_bwd_c``
(``dW = 2 w (Pi dA + tau dS r + dcol) - G Pi g``). Saved: ``w``, ``Pi`` and (B, H, D) statistics.

Runs on CUDA tensors of float32, float16 or bfloat16 (float64 is refused rather than silently computed
in float32), and on CPU tensors under ``TRITON_INTERPRET=1`` (slow; for tests). Offsets are 64-bit.

>>> w = torch.randn(2, 4, 197, 48, device="cuda")  # doctest: +SKIP
>>> tssa_triton(w, torch.ones(4, device="cuda")).shape  # doctest: +SKIP
torch.Size([2, 4, 197, 48])
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

from .naive import MEMBERSHIP_EPS, NORM_EPS

__all__ = ["tssa_triton", "MAX_HEAD_DIM", "MAX_HEADS"]

_SQ_EPS = NORM_EPS * NORM_EPS
MAX_HEAD_DIM = 256
MAX_HEADS = 64
_BLOCK_N_2D = 64  # tokens per block of the per-head kernels
_TOKENS_PER_PROGRAM = 256  # tokens one reducing program sums over (token blocks x ITERS)


@triton.jit
def _colsq(
    W, P, N, H, D, s_b, s_h, s_n, s_d, NBLK,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, ITERS: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0).to(tl.int64)  # 64-bit offsets: B*H*N*D may pass 2^31
    pid_n = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    od = tl.arange(0, BLOCK_D).to(tl.int64)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for it in range(ITERS):  # ITERS token blocks per program: fewer partial sums to finish
        on = (pid_n * ITERS + it) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = (on[:, None] < N) & (od[None, :] < D)
        x = tl.load(W + b * s_b + h * s_h + on[:, None] * s_n + od[None, :] * s_d, mask=mask, other=0.0)
        x = x.to(tl.float32)
        acc += tl.sum(x * x, axis=0)
    tl.store(P + (pid_bh * NBLK + pid_n) * BLOCK_D + od, acc)


@triton.jit
def _fwd_stats(
    W, R, TAU, BIAS, PI, PM, PT,
    N, H, D, s_b, s_h, s_n, s_d, NBLK,
    HAS_BIAS: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ITERS: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)  # 64-bit offsets: B*H*N*D may pass 2^31
    pid_n = tl.program_id(1).to(tl.int64)
    oh = tl.arange(0, BLOCK_H).to(tl.int64)
    od = tl.arange(0, BLOCK_D).to(tl.int64)
    h3 = oh[:, None, None]
    d3 = od[None, None, :]
    hd_mask = (oh[:, None] < H) & (od[None, :] < D)
    r = tl.load(R + (b * H + oh[:, None]) * D + od[None, :], mask=hd_mask, other=0.0)  # (BH, BD)
    tau = tl.load(TAU + oh, mask=oh < H, other=0.0).to(tl.float32)
    pm = tl.zeros([BLOCK_H, BLOCK_D], dtype=tl.float32)
    pt = tl.zeros([BLOCK_H], dtype=tl.float32)
    for it in range(ITERS):
        on = (pid_n * ITERS + it) * BLOCK_N + tl.arange(0, BLOCK_N)
        n3 = on[None, :, None]
        hn_mask = (oh[:, None] < H) & (on[None, :] < N)
        x = tl.load(
            W + b * s_b + h3 * s_h + n3 * s_n + d3 * s_d, mask=(h3 < H) & (n3 < N) & (d3 < D), other=0.0
        )
        x = x.to(tl.float32)
        sq = x * x  # (BH, BN, BD)
        q = tl.sum(sq * r[:, None, :], axis=2)  # (BH, BN)
        if HAS_BIAS:
            q += D * tl.load(BIAS + oh[:, None] * N + on[None, :], mask=hn_mask, other=0.0).to(tl.float32)
        s = tl.where(oh[:, None] < H, tau[:, None] * q, float("-inf"))
        e = tl.exp(s - tl.max(s, axis=0)[None, :])
        pi = e / tl.sum(e, axis=0)[None, :]  # softmax over heads
        pi = tl.where(on[None, :] < N, pi, 0.0)  # padding tokens count for nothing
        tl.store(PI + (b * H + oh[:, None]) * N + on[None, :], pi, mask=hn_mask)
        pm += tl.sum(pi[:, :, None] * sq, axis=1)
        pt += tl.sum(pi, axis=1)
    base = (b * NBLK + pid_n) * BLOCK_H
    tl.store(PM + (base + oh[:, None]) * BLOCK_D + od[None, :], pm)
    tl.store(PT + base + oh, pt)


@triton.jit
def _fwd_out(
    W, PI, G, Y, N, H, D, s_b, s_h, s_n, s_d, y_b, y_h, y_n, y_d,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0).to(tl.int64)  # 64-bit offsets: B*H*N*D may pass 2^31
    pid_n = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    on = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    od = tl.arange(0, BLOCK_D).to(tl.int64)
    mask = (on[:, None] < N) & (od[None, :] < D)
    x = tl.load(W + b * s_b + h * s_h + on[:, None] * s_n + od[None, :] * s_d, mask=mask, other=0.0)
    pi = tl.load(PI + pid_bh * N + on, mask=on < N, other=0.0)
    g = tl.load(G + pid_bh * D + od, mask=od < D, other=0.0)
    y = -(x.to(tl.float32) * pi[:, None] * g[None, :])
    tl.store(
        Y + b * y_b + h * y_h + on[:, None] * y_n + od[None, :] * y_d, y.to(Y.dtype.element_ty), mask=mask
    )


@triton.jit
def _bwd_a(
    W, GR, PI, G, DPI, P1,
    N, H, D, s_b, s_h, s_n, s_d, g_b, g_h, g_n, g_d, NBLK,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, ITERS: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0).to(tl.int64)  # 64-bit offsets: B*H*N*D may pass 2^31
    pid_n = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    od = tl.arange(0, BLOCK_D).to(tl.int64)
    g = tl.load(G + pid_bh * D + od, mask=od < D, other=0.0)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    for it in range(ITERS):
        on = (pid_n * ITERS + it) * BLOCK_N + tl.arange(0, BLOCK_N)
        mask = (on[:, None] < N) & (od[None, :] < D)
        x = tl.load(W + b * s_b + h * s_h + on[:, None] * s_n + od[None, :] * s_d, mask=mask, other=0.0)
        gr = tl.load(GR + b * g_b + h * g_h + on[:, None] * g_n + od[None, :] * g_d, mask=mask, other=0.0)
        gw = gr.to(tl.float32) * x.to(tl.float32)
        pi = tl.load(PI + pid_bh * N + on, mask=on < N, other=0.0)
        tl.store(DPI + pid_bh * N + on, -tl.sum(gw * g[None, :], axis=1), mask=on < N)
        acc += tl.sum(pi[:, None] * gw, axis=0)
    tl.store(P1 + (pid_bh * NBLK + pid_n) * BLOCK_D + od, acc)


@triton.jit
def _bwd_b(
    W, PI, DPI, DA, DTOT, R, TAU, BIAS, TDS, PDR, PDT,
    N, H, D, s_b, s_h, s_n, s_d, NBLK,
    HAS_BIAS: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ITERS: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)  # 64-bit offsets: B*H*N*D may pass 2^31
    pid_n = tl.program_id(1).to(tl.int64)
    oh = tl.arange(0, BLOCK_H).to(tl.int64)
    od = tl.arange(0, BLOCK_D).to(tl.int64)
    h3 = oh[:, None, None]
    d3 = od[None, None, :]
    hd_mask = (oh[:, None] < H) & (od[None, :] < D)
    hd_off = (b * H + oh[:, None]) * D + od[None, :]
    r = tl.load(R + hd_off, mask=hd_mask, other=0.0)
    da = tl.load(DA + hd_off, mask=hd_mask, other=0.0)
    dtot = tl.load(DTOT + b * H + oh, mask=oh < H, other=0.0)
    tau = tl.load(TAU + oh, mask=oh < H, other=0.0).to(tl.float32)
    pdr = tl.zeros([BLOCK_H, BLOCK_D], dtype=tl.float32)
    pdt = tl.zeros([BLOCK_H], dtype=tl.float32)
    for it in range(ITERS):
        on = (pid_n * ITERS + it) * BLOCK_N + tl.arange(0, BLOCK_N)
        n3 = on[None, :, None]
        hn_mask = (oh[:, None] < H) & (on[None, :] < N)
        hn_off = (b * H + oh[:, None]) * N + on[None, :]
        x = tl.load(
            W + b * s_b + h3 * s_h + n3 * s_n + d3 * s_d, mask=(h3 < H) & (n3 < N) & (d3 < D), other=0.0
        )
        x = x.to(tl.float32)
        sq = x * x  # (BH, BN, BD)
        pi = tl.load(PI + hn_off, mask=hn_mask, other=0.0)  # zero on padding heads and tokens
        dpi = tl.load(DPI + hn_off, mask=hn_mask, other=0.0)
        dpi += tl.sum(sq * da[:, None, :], axis=2) + dtot[:, None]
        ds = pi * (dpi - tl.sum(pi * dpi, axis=0)[None, :])  # softmax backward over heads
        q = tl.sum(sq * r[:, None, :], axis=2)
        if HAS_BIAS:
            q += D * tl.load(BIAS + oh[:, None] * N + on[None, :], mask=hn_mask, other=0.0).to(tl.float32)
        tds = tau[:, None] * ds
        tl.store(TDS + hn_off, tds, mask=hn_mask)
        pdr += tl.sum(tds[:, :, None] * sq, axis=1)
        pdt += tl.sum(ds * q, axis=1)
    base = (b * NBLK + pid_n) * BLOCK_H
    tl.store(PDR + (base + oh[:, None]) * BLOCK_D + od[None, :], pdr)
    tl.store(PDT + base + oh, pdt)


@triton.jit
def _bwd_c(
    W, GR, PI, TDS, G, DA, R, DCOL, DW,
    N, H, D, s_b, s_h, s_n, s_d, g_b, g_h, g_n, g_d, o_b, o_h, o_n, o_d,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0).to(tl.int64)  # 64-bit offsets: B*H*N*D may pass 2^31
    pid_n = tl.program_id(1).to(tl.int64)
    b = pid_bh // H
    h = pid_bh % H
    on = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    od = tl.arange(0, BLOCK_D).to(tl.int64)
    mask = (on[:, None] < N) & (od[None, :] < D)
    x = tl.load(W + b * s_b + h * s_h + on[:, None] * s_n + od[None, :] * s_d, mask=mask, other=0.0)
    gr = tl.load(GR + b * g_b + h * g_h + on[:, None] * g_n + od[None, :] * g_d, mask=mask, other=0.0)
    pi = tl.load(PI + pid_bh * N + on, mask=on < N, other=0.0)
    tds = tl.load(TDS + pid_bh * N + on, mask=on < N, other=0.0)
    dmask = od < D
    g = tl.load(G + pid_bh * D + od, mask=dmask, other=0.0)
    da = tl.load(DA + pid_bh * D + od, mask=dmask, other=0.0)
    r = tl.load(R + pid_bh * D + od, mask=dmask, other=0.0)
    dcol = tl.load(DCOL + pid_bh * D + od, mask=dmask, other=0.0)
    coef = pi[:, None] * da[None, :] + tds[:, None] * r[None, :] + dcol[None, :]
    dw = 2.0 * x.to(tl.float32) * coef - gr.to(tl.float32) * pi[:, None] * g[None, :]
    tl.store(
        DW + b * o_b + h * o_h + on[:, None] * o_n + od[None, :] * o_d, dw.to(DW.dtype.element_ty), mask=mask
    )


def _blocks(h: int, d: int) -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_N, BLOCK_D) of the all-heads kernels: about 4096 elements per tile."""
    bh = triton.next_power_of_2(h)
    bd = triton.next_power_of_2(d)
    return bh, max(1, min(64, 4096 // (bh * bd))), bd


def _grid_n(n: int, block_n: int) -> tuple[int, int]:
    """(ITERS, programs along the tokens) of a reducing kernel with ``block_n`` tokens per block."""
    iters = max(1, _TOKENS_PER_PROGRAM // block_n)
    return iters, triton.cdiv(n, block_n * iters)


def _token_major_empty(w: torch.Tensor) -> torch.Tensor:
    """An uninitialised (B, H, N, D) tensor laid out as (B, N, H, D), so merging heads is a view."""
    b, h, n, d = w.shape
    return torch.empty(b, n, h, d, dtype=w.dtype, device=w.device).transpose(1, 2)


class _TSSATriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, tau, bias):
        bsz, h, n, d = w.shape
        f32 = dict(dtype=torch.float32, device=w.device)
        bh, bn3, bd = _blocks(h, d)
        nb2 = triton.cdiv(n, _BLOCK_N_2D)
        it2, nr2 = _grid_n(n, _BLOCK_N_2D)
        it3, nr3 = _grid_n(n, bn3)
        part = torch.empty(bsz * h, nr2, bd, **f32)
        _colsq[(bsz * h, nr2)](
            w, part, n, h, d, *w.stride(), nr2, BLOCK_N=_BLOCK_N_2D, BLOCK_D=bd, ITERS=it2
        )  # fmt: skip
        colsq = part.sum(dim=1)[:, :d].reshape(bsz, h, d)  # (B, H, D)
        r = (1.0 / colsq.clamp_min(_SQ_EPS)).contiguous()
        tau_c = tau.contiguous()
        bias_c = bias.contiguous() if bias is not None else r  # a dummy pointer when there is no bias
        pi = torch.empty(bsz, h, n, **f32)
        pm = torch.empty(bsz, nr3, bh, bd, **f32)
        pt = torch.empty(bsz, nr3, bh, **f32)
        _fwd_stats[(bsz, nr3)](
            w, r, tau_c, bias_c, pi, pm, pt, n, h, d, *w.stride(), nr3,
            HAS_BIAS=bias is not None, BLOCK_H=bh, BLOCK_N=bn3, BLOCK_D=bd, ITERS=it3,
        )  # fmt: skip
        total = pt.sum(dim=1)[:, :h] + MEMBERSHIP_EPS  # (B, H)
        m = pm.sum(dim=1)[:, :h, :d] / total.unsqueeze(-1)  # (B, H, D)
        g = (1.0 / (1.0 + m)).contiguous()
        y = _token_major_empty(w)
        _fwd_out[(bsz * h, nb2)](
            w, pi, g, y, n, h, d, *w.stride(), *y.stride(), BLOCK_N=_BLOCK_N_2D, BLOCK_D=bd
        )
        ctx.save_for_backward(w, tau_c, bias, pi, r, colsq, total, m, g)
        return y

    @staticmethod
    def backward(ctx, grad):
        w = ctx.saved_tensors[0]
        with torch.cuda.device(w.device) if w.is_cuda else contextlib.nullcontext():
            return _TSSATriton._backward(ctx, grad)

    @staticmethod
    def _backward(ctx, grad):
        w, tau, bias, pi, r, colsq, total, m, g = ctx.saved_tensors
        bsz, h, n, d = w.shape
        f32 = dict(dtype=torch.float32, device=w.device)
        bh, bn3, bd = _blocks(h, d)
        nb2 = triton.cdiv(n, _BLOCK_N_2D)
        it2, nr2 = _grid_n(n, _BLOCK_N_2D)
        it3, nr3 = _grid_n(n, bn3)
        dpi = torch.empty(bsz, h, n, **f32)
        p1 = torch.empty(bsz * h, nr2, bd, **f32)
        _bwd_a[(bsz * h, nr2)](
            w, grad, pi, g, dpi, p1, n, h, d, *w.stride(), *grad.stride(), nr2,
            BLOCK_N=_BLOCK_N_2D, BLOCK_D=bd, ITERS=it2,
        )  # fmt: skip
        da = (g * g * p1.sum(dim=1)[:, :d].reshape(bsz, h, d) / total.unsqueeze(-1)).contiguous()
        dtotal = -(da * m).sum(dim=-1).contiguous()  # (B, H)
        bias_c = bias.contiguous() if bias is not None else r
        tds = torch.empty(bsz, h, n, **f32)
        pdr = torch.empty(bsz, nr3, bh, bd, **f32)
        pdt = torch.empty(bsz, nr3, bh, **f32)
        _bwd_b[(bsz, nr3)](
            w, pi, dpi, da, dtotal, r, tau, bias_c, tds, pdr, pdt, n, h, d, *w.stride(), nr3,
            HAS_BIAS=bias is not None, BLOCK_H=bh, BLOCK_N=bn3, BLOCK_D=bd, ITERS=it3,
        )  # fmt: skip
        dr = pdr.sum(dim=1)[:, :h, :d]  # (B, H, D)
        dcol = torch.where(colsq > _SQ_EPS, -r * r * dr, torch.zeros_like(dr)).contiguous()
        dw = _token_major_empty(w)
        _bwd_c[(bsz * h, nb2)](
            w, grad, pi, tds, g, da, r, dcol, dw, n, h, d, *w.stride(), *grad.stride(), *dw.stride(),
            BLOCK_N=_BLOCK_N_2D, BLOCK_D=bd,
        )  # fmt: skip
        dtau = pdt.sum(dim=(0, 1))[:h].to(tau.dtype) if ctx.needs_input_grad[1] else None
        dbias = None
        if bias is not None and ctx.needs_input_grad[2]:
            dbias = (d * tds.sum(dim=0)).to(bias.dtype)  # (H, N)
        return dw, dtau, dbias


_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _check_inputs(w: torch.Tensor, temperature: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Refuse what the kernels cannot compute faithfully, with the fix in the message."""
    b, h, n, d = w.shape
    if d > MAX_HEAD_DIM or h > MAX_HEADS:
        raise ValueError(
            f"tssa_triton: head dim {d} / heads {h} exceed {MAX_HEAD_DIM} / {MAX_HEADS}; use impl='lean'"
        )
    if w.dtype not in _DTYPES:
        raise ValueError(
            f"tssa_triton: {w.dtype} input, but the kernels compute in float32 (a float64 input would silently "
            "lose precision); use impl='lean' or 'naive' for float64, or cast w to float32"
        )
    if not w.is_cuda and not (w.device.type == "cpu" and _interpreted()):
        raise ValueError(
            f"tssa_triton: w is on {w.device}, the kernels run on CUDA tensors; use impl='stream' or 'lean' "
            "on the CPU (TRITON_INTERPRET=1 runs them on CPU tensors, slowly, for tests)"
        )
    for name, t in (("temperature", temperature), ("bias", bias)):
        if t is not None and t.device != w.device:
            raise ValueError(
                f"tssa_triton: {name} is on {t.device} but w is on {w.device}; move both to one device"
            )


def tssa_triton(w: torch.Tensor, temperature: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Non-causal TSSA core as fused Triton kernels. (B, H, N, D) -> (B, H, N, D).

    ``Y = -Pi * W * 1/(1 + m)`` exactly as :func:`tssa.ops.naive.tssa_naive`; H <= 64, D <= 256;
    ``w`` float32, float16 or bfloat16 on a CUDA device (the kernels launch on ``w``'s device);
    offsets are 64-bit, so B * H * N * D may exceed 2^31. The output is a (B, H, N, D) view of a
    token-major (B, N, H, D) buffer.

    Raises:
        ValueError: limits exceeded, a float64 (or other) dtype, ``w`` not on CUDA, or
            ``temperature`` / ``bias`` on another device than ``w``.
    """
    _check_inputs(w, temperature, bias)
    with torch.cuda.device(w.device) if w.is_cuda else contextlib.nullcontext():
        return _TSSATriton.apply(w, temperature, bias)
