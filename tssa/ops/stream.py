"""Streaming TSSA for CPUs: token-major, cache-sized chunks, a memory-lean backward.

Same mathematics as :mod:`tssa.ops.naive` (Wu et al., ICLR 2025, Eq. 10-12), non-causal form. The
layer hands the core ``w = qkv(x)`` split into heads, i.e. a (B, H, N, D) *view* of a token-major
(B, N, H, D) buffer. This path works in that physical layout, so neither the head split nor the
merge after it copies anything, and it walks the tokens in chunks small enough to stay in the L2
cache, so that every full-size temporary of the eager formulation disappears:

- forward: one pass for the column energies ``colsq[h, d] = sum_n w^2``, one pass for the
  memberships ``Pi`` and the weighted second moment ``m``, one pass writing ``Y = -Pi w g``;
- backward: three passes of the same kind (see :mod:`tssa.ops.lean` for the equations); the only
  full-size tensor it allocates is ``dW`` itself.

Per-head contractions (``sum_d w^2 r`` per head, ``sum_n Pi w^2`` per head) run as small GEMMs against
block-diagonal (B, C, H) matrices, C = H * D. Saved for backward: ``w``, ``Pi`` (B, N, H) and
(B, H, D) statistics. Statistics and chunk arithmetic run in float32 for float16/bfloat16 inputs.

>>> w = torch.randn(2, 4, 197, 48)
>>> tssa_stream(w, torch.ones(4)).shape
torch.Size([2, 4, 197, 48])
"""

from __future__ import annotations

import torch

from .naive import MEMBERSHIP_EPS, NORM_EPS

__all__ = ["tssa_stream", "chunk_tokens"]

_SQ_EPS = NORM_EPS * NORM_EPS  # the norm floor, squared
_CHUNK_ELEMS = 1 << 17  # elements of one (chunk, C) block: 512 KiB in fp32, half of a 1 MiB L2


def chunk_tokens(channels: int) -> int:
    """Tokens per chunk for ``channels`` = H * D features (depends on C only, so results are deterministic)."""
    return max(16, _CHUNK_ELEMS // max(channels, 1))


def _stat_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype


def _blockdiag(v: torch.Tensor) -> torch.Tensor:
    """(B, H, D) -> (B, H, C) with row h holding v[:, h] in columns h*D..h*D+D-1, zeros elsewhere."""
    b, h, d = v.shape
    out = v.new_zeros(b, h, h, d)  # (B, H, H, D)
    out.diagonal(dim1=1, dim2=2).copy_(v.transpose(1, 2))  # diagonal view: (B, D, H)
    return out.view(b, h, h * d)


def _diagblocks(m: torch.Tensor, d: int) -> torch.Tensor:
    """(B, H, C) -> (B, H, D): row h restricted to its own head's columns."""
    b, h, _ = m.shape
    return m.view(b, h, h, d).diagonal(dim1=1, dim2=2).transpose(1, 2)  # (B, D, H) -> (B, H, D)


def _token_major(t: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> the (B, N, H, D) tensor behind it, contiguous; a view when ``t`` is a head split."""
    return t.transpose(1, 2).contiguous()


def _logits(sq, r_blk, tau, bias_t, d):
    """Per-token head logits: ``q = sum_d w^2 r (+ D bias)``; returns (tau * q, q), each (B, n, H)."""
    q = torch.matmul(sq, r_blk.transpose(1, 2))  # (B, n, C) @ (B, C, H) -> (B, n, H)
    if bias_t is not None:
        q = q + d * bias_t  # (n, H) broadcast over B
    return q * tau, q


class _TSSAStream(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, tau, bias):
        bsz, h, n, d = w.shape
        c = h * d
        dt = _stat_dtype(w)
        wt = _token_major(w).view(bsz, n, c)  # (B, N, C), physical token-major layout
        tau_f = tau.to(dt)
        step = chunk_tokens(c)
        colsq = wt.new_zeros(bsz, c, dtype=dt)  # (B, C): sum_n w^2 per feature column
        for n0 in range(0, n, step):
            x = wt[:, n0 : n0 + step].to(dt)  # (B, n, C)
            colsq += (x * x).sum(dim=1)
        colsq = colsq.view(bsz, h, d)  # (B, H, D)
        r = 1.0 / colsq.clamp_min(_SQ_EPS)  # (B, H, D)
        r_blk = _blockdiag(r)  # (B, H, C)
        pi = wt.new_empty(bsz, n, h, dtype=dt)  # (B, N, H)
        mnum = wt.new_zeros(bsz, h, c, dtype=dt)  # (B, H, C); its diagonal blocks are sum_n Pi w^2
        for n0 in range(0, n, step):
            x = wt[:, n0 : n0 + step].to(dt)  # (B, n, C)
            sq = x * x
            bias_t = bias[:, n0 : n0 + step].t().to(dt) if bias is not None else None
            s, _ = _logits(sq, r_blk, tau_f, bias_t, d)
            p = torch.softmax(s, dim=-1)  # (B, n, H): over heads
            pi[:, n0 : n0 + step] = p
            mnum.baddbmm_(p.transpose(1, 2), sq)  # (B, H, n) @ (B, n, C)
        total = pi.sum(dim=1) + MEMBERSHIP_EPS  # (B, H)
        m = _diagblocks(mnum, d) / total.unsqueeze(-1)  # (B, H, D)
        g = 1.0 / (1.0 + m)  # (B, H, D)
        neg_g_blk = _blockdiag(-g)  # (B, H, C)
        y = torch.empty(bsz, n, c, dtype=w.dtype, device=w.device)  # (B, N, C)
        for n0 in range(0, n, step):
            coef = torch.bmm(pi[:, n0 : n0 + step], neg_g_blk)  # (B, n, H) @ (B, H, C): -Pi g per channel
            if dt == w.dtype:
                torch.mul(wt[:, n0 : n0 + step], coef, out=y[:, n0 : n0 + step])
            else:
                y[:, n0 : n0 + step] = wt[:, n0 : n0 + step].to(dt) * coef
        ctx.save_for_backward(w, tau, bias, pi, r, colsq, total, m, g)
        return y.view(bsz, n, h, d).transpose(1, 2)  # (B, H, N, D) view of the token-major buffer

    @staticmethod
    def backward(ctx, grad):
        w, tau, bias, pi, r, colsq, total, m, g = ctx.saved_tensors
        bsz, h, n, d = w.shape
        c = h * d
        dt = r.dtype
        wt = _token_major(w).view(bsz, n, c)  # (B, N, C)
        gt = _token_major(grad).view(bsz, n, c)  # (B, N, C)
        tau_f = tau.to(dt)
        step = chunk_tokens(c)
        g_blk = _blockdiag(g)  # (B, H, C)
        # pass A: dPi1 = -sum_d G w g, and P = sum_n Pi G w (per head, per feature)
        dpi = pi.new_empty(bsz, n, h)  # (B, N, H)
        pgw = pi.new_zeros(bsz, h, c)  # (B, H, C)
        for n0 in range(0, n, step):
            gw = gt[:, n0 : n0 + step].to(dt) * wt[:, n0 : n0 + step].to(dt)  # (B, n, C)
            dpi[:, n0 : n0 + step] = torch.bmm(gw, g_blk.transpose(1, 2)).neg_()  # (B, n, H)
            pgw.baddbmm_(pi[:, n0 : n0 + step].transpose(1, 2), gw)
        da = g * g * _diagblocks(pgw, d) / total.unsqueeze(-1)  # (B, H, D): dm / total
        dtotal = -(da * m).sum(dim=-1)  # (B, H)
        da_blk = _blockdiag(da)  # (B, H, C)
        r_blk = _blockdiag(r)
        # pass B: dPi, the softmax backward over heads, dr = sum_n tau dS w^2, dtau = sum_n dS q
        tds = dpi  # (B, N, H), overwritten chunk by chunk
        drm = pi.new_zeros(bsz, h, c)  # (B, H, C)
        dtau = pi.new_zeros(h)
        for n0 in range(0, n, step):
            x = wt[:, n0 : n0 + step].to(dt)
            sq = x * x  # (B, n, C)
            p = pi[:, n0 : n0 + step]  # (B, n, H)
            dp = torch.baddbmm(dpi[:, n0 : n0 + step], sq, da_blk.transpose(1, 2)).add_(dtotal.unsqueeze(1))
            ds = p * (dp - (p * dp).sum(dim=-1, keepdim=True))  # (B, n, H): softmax over heads
            bias_t = bias[:, n0 : n0 + step].t().to(dt) if bias is not None else None
            _, q = _logits(sq, r_blk, tau_f, bias_t, d)
            dtau += (ds * q).sum(dim=(0, 1))
            td = ds.mul_(tau_f)  # (B, n, H)
            drm.baddbmm_(td.transpose(1, 2), sq)
            tds[:, n0 : n0 + step] = td
        dr = _diagblocks(drm, d)  # (B, H, D)
        dcol = torch.where(colsq > _SQ_EPS, -r * r * dr, torch.zeros_like(dr))  # (B, H, D)
        # pass C: dW = 2 w (Pi dA + tds r + dcol) - G Pi g; the coefficients are (n, 2H+1) @ (2H+1, C)
        right = torch.cat([_blockdiag(2 * da), _blockdiag(2 * r), 2 * dcol.view(bsz, 1, c)], dim=1)
        neg_g_blk = g_blk.neg_()  # (B, H, C)
        dw = torch.empty(bsz, n, c, dtype=w.dtype, device=w.device)  # (B, N, C)
        ones = pi.new_ones(bsz, min(step, n), 1)
        for n0 in range(0, n, step):
            p = pi[:, n0 : n0 + step]  # (B, n, H)
            k = p.shape[1]
            left = torch.cat([p, tds[:, n0 : n0 + step], ones[:, :k]], dim=-1)  # (B, n, 2H + 1)
            coef_w = torch.bmm(left, right)  # (B, n, C)
            coef_g = torch.bmm(p, neg_g_blk)  # (B, n, C): -Pi g per channel
            x = wt[:, n0 : n0 + step].to(dt)
            acc = coef_w.mul_(x).addcmul_(coef_g, gt[:, n0 : n0 + step].to(dt))
            dw[:, n0 : n0 + step] = acc
        dw4 = dw.view(bsz, n, h, d).transpose(1, 2)  # (B, H, N, D)
        dtau_out = dtau.to(tau.dtype) if ctx.needs_input_grad[1] else None
        dbias = None
        if bias is not None and ctx.needs_input_grad[2]:
            dbias = (d * tds.sum(dim=0)).t().to(bias.dtype)  # (H, N)
        return dw4, dtau_out, dbias


def tssa_stream(w: torch.Tensor, temperature: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Non-causal TSSA core, streamed over token chunks. (B, H, N, D) -> (B, H, N, D).

    ``Y = -Pi * W * 1/(1 + m)`` exactly as :func:`tssa.ops.naive.tssa_naive`. The output is a
    (B, H, N, D) view of a token-major (B, N, H, D) buffer, so merging heads afterwards is free.
    """
    return _TSSAStream.apply(w, temperature, bias)
