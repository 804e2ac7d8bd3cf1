"""Streaming TSSA for CPUs: token-major, cache-sized chunks, a memory-lean backward.

Same mathematics as :mod:`tssa.ops.naive` (Wu et al., ICLR 2025, Eq. 10-12), non-causal form. The
layer hands the core ``w = qkv(x)`` split into heads, i.e. a (B, H, N, D) *view* of a token-major
(B, N, H, D) buffer. This path works in that physical layout, so neither the head split nor the
merge after it copies anything, and it walks the tokens in chunks small enough to stay in the L2
cache, so that every full-size temporary of the eager formulation disappears:

- forward: one pass for the column energies ``colsq[h, d] = sum_n w^2``, one pass for the
  memberships ``Pi`` and the weighted second moment ``m``, one pass writing ``Y = -Pi w g``;
- backward: three passes of the same kind (see :mod:`tssa.ops.lean` for the equations), each
  recomputing the chunk's memberships; the only full-size tensor it allocates is ``dW`` itself.

Per-head contractions (``sum_d w^2 r``, ``sum_n Pi w^2``) are broadcast products reduced inside the
chunk; the softmax over heads runs on (B, H, n) blocks. Saved for backward: ``w`` and (B, H, D)
statistics; backward holds one (B, H, N) buffer besides ``dW``. Statistics and chunk arithmetic run
in float32 for float16/bfloat16 inputs. Inputs in another layout (e.g. a contiguous (B, H, N, D)
tensor) are copied to token-major once.

>>> w = torch.randn(2, 4, 197, 48)
>>> tssa_stream(w, torch.ones(4)).shape
torch.Size([2, 4, 197, 48])
"""

from __future__ import annotations

import torch

from .naive import MEMBERSHIP_EPS, NORM_EPS

__all__ = ["tssa_stream", "chunk_tokens"]

_SQ_EPS = NORM_EPS * NORM_EPS  # the norm floor, squared
_CHUNK_ELEMS = 1 << 16  # elements of one (chunk, C) block: 256 KiB in fp32, a quarter of a 1 MiB L2
# Forward chunks are 4x larger: its temporaries are gone before backward reaches the peak, and larger
# blocks keep both threads of a 2-core CPU busy (per-op threading overhead dominated at 256 KiB).
_FWD_CHUNK_SCALE = 4


def chunk_tokens(channels: int, tokens: int | None = None, scale: int = 1) -> int:
    """Tokens per chunk for ``channels`` = H * D features: a chunk of about ``scale`` x 256 KiB, and
    at most a quarter of ``tokens`` so that chunk temporaries stay small next to the full-size
    tensors. Depends on the shape only, so results are deterministic."""
    step = max(16, scale * _CHUNK_ELEMS // max(channels, 1))
    return step if tokens is None else max(16, min(step, -(-tokens // 4)))


def _stat_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype


def _token_major(t: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> the (B, N, H, D) tensor behind it, contiguous; a view when ``t`` is a head split."""
    return t.transpose(1, 2).contiguous()


class _TSSAStream(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, tau, bias):
        bsz, h, n, d = w.shape
        c = h * d
        dt = _stat_dtype(w)
        wt = _token_major(w).view(bsz, n, c)  # (B, N, C), physical token-major layout
        tau_f = tau.to(dt).view(1, h, 1)
        step = chunk_tokens(c, n, _FWD_CHUNK_SCALE)
        colsq = wt.new_zeros(bsz, c, dtype=dt)  # (B, C): sum_n w^2 per feature column
        for n0 in range(0, n, step):
            x = wt[:, n0 : n0 + step].to(dt)  # (B, n, C)
            colsq += (x * x).sum(dim=1)
        colsq = colsq.view(bsz, h, d)  # (B, H, D)
        r4 = (1.0 / colsq.clamp_min(_SQ_EPS)).unsqueeze(1)  # (B, 1, H, D)
        pi = wt.new_empty(bsz, h, n, dtype=dt)  # (B, H, N)
        mnum = wt.new_zeros(bsz, h, d, dtype=dt)  # (B, H, D): sum_n Pi w^2
        for n0 in range(0, n, step):
            x4 = wt[:, n0 : n0 + step].to(dt).view(bsz, -1, h, d)  # (B, n, H, D)
            sq4 = x4 * x4
            p = torch.softmax(_head_energy(sq4, r4, bias, n0, d).mul_(tau_f), dim=1)  # (B, H, n)
            pi[:, :, n0 : n0 + step] = p
            mnum += (sq4 * p.transpose(1, 2).unsqueeze(-1)).sum(dim=1)
        total = pi.sum(dim=-1) + MEMBERSHIP_EPS  # (B, H)
        m = mnum / total.unsqueeze(-1)  # (B, H, D)
        g = 1.0 / (1.0 + m)  # (B, H, D)
        neg_g4 = g.neg().unsqueeze(1)  # (B, 1, H, D)
        y = torch.empty(bsz, n, h, d, dtype=w.dtype, device=w.device)  # (B, N, H, D)
        for n0 in range(0, n, step):
            x4 = wt[:, n0 : n0 + step].view(bsz, -1, h, d)  # (B, n, H, D)
            p4 = pi[:, :, n0 : n0 + step].transpose(1, 2).unsqueeze(-1)  # (B, n, H, 1)
            if dt == w.dtype:
                y4 = y[:, n0 : n0 + step]
                torch.mul(x4, p4, out=y4).mul_(neg_g4)  # -Pi w g, in two cache-resident passes
            else:
                y[:, n0 : n0 + step] = x4.to(dt).mul(p4).mul_(neg_g4)
        ctx.save_for_backward(w, tau, bias, r4, colsq, total, m, g)  # Pi is recomputed chunk by chunk
        return y.transpose(1, 2)  # (B, H, N, D) view of the token-major buffer

    @staticmethod
    def backward(ctx, grad):
        w, tau, bias, r4, colsq, total, m, g = ctx.saved_tensors
        bsz, h, n, d = w.shape
        c = h * d
        dt = g.dtype
        wt = _token_major(w).view(bsz, n, c)  # (B, N, C)
        gt = _token_major(grad).view(bsz, n, c)  # (B, N, C)
        tau_f = tau.to(dt).view(1, h, 1)
        step = chunk_tokens(c, n)
        g4 = g.unsqueeze(1)  # (B, 1, H, D)

        def chunk(t, n0):  # (B, N, C) -> one chunk (B, n, H, D) in the statistics dtype
            return t[:, n0 : n0 + step].to(dt).view(bsz, -1, h, d)

        # pass A: dPi1 = -sum_d G w g, and P = sum_n Pi G w (per head, per feature)
        dpi = g.new_empty(bsz, h, n)  # (B, H, N)
        pgw = g.new_zeros(bsz, h, d)  # (B, H, D)
        for n0 in range(0, n, step):
            x4 = chunk(wt, n0)  # (B, n, H, D)
            p4 = _memberships(x4, r4, tau_f, bias, n0, d).transpose(1, 2).unsqueeze(-1)  # (B, n, H, 1)
            gw4 = chunk(gt, n0) * x4  # G w (a new tensor: never write to G)
            dpi[:, :, n0 : n0 + step] = (gw4 * g4).sum(dim=-1).transpose(1, 2).neg_()  # (B, H, n)
            pgw += gw4.mul_(p4).sum(dim=1)
        da = g * g * pgw / total.unsqueeze(-1)  # (B, H, D): dm / total
        dtotal = -(da * m).sum(dim=-1, keepdim=True)  # (B, H, 1)
        da4 = da.unsqueeze(1)  # (B, 1, H, D)
        # pass B: dPi, the softmax backward over heads, dr = sum_n tau dS w^2, dtau = sum_n dS q
        tds = dpi  # (B, H, N), overwritten chunk by chunk
        drm = g.new_zeros(bsz, h, d)  # (B, H, D)
        dtau = g.new_zeros(h)
        for n0 in range(0, n, step):
            x4 = chunk(wt, n0)
            sq4 = x4 * x4  # (B, n, H, D)
            q = _head_energy(sq4, r4, bias, n0, d)  # (B, H, n)
            p = torch.softmax(q * tau_f, dim=1)  # (B, H, n)
            dp = (sq4 * da4).sum(dim=-1).transpose(1, 2).add_(dpi[:, :, n0 : n0 + step]).add_(dtotal)
            ds = p * (dp - (p * dp).sum(dim=1, keepdim=True))  # (B, H, n): softmax over heads
            dtau += (ds * q).sum(dim=(0, 2))
            td = ds.mul_(tau_f)  # (B, H, n)
            drm += sq4.mul_(td.transpose(1, 2).unsqueeze(-1)).sum(dim=1)
            tds[:, :, n0 : n0 + step] = td
        r = r4.squeeze(1)  # (B, H, D)
        dcol = torch.where(colsq > _SQ_EPS, -r * r * drm, torch.zeros_like(drm))  # (B, H, D)
        # pass C: dW = 2 w (Pi dA + tds r + dcol) - G Pi g
        da2, r2, dcol2, neg_g4 = 2 * da4, 2 * r4, 2 * dcol.unsqueeze(1), g4.neg()
        dw = torch.empty(bsz, n, h, d, dtype=w.dtype, device=w.device)  # (B, N, H, D)
        for n0 in range(0, n, step):
            x4 = chunk(wt, n0)
            p4 = _memberships(x4, r4, tau_f, bias, n0, d).transpose(1, 2).unsqueeze(-1)  # (B, n, H, 1)
            t4 = tds[:, :, n0 : n0 + step].transpose(1, 2).unsqueeze(-1)
            coef = torch.addcmul(dcol2, p4, da2).addcmul_(t4, r2)  # (B, n, H, D)
            if dt == w.dtype:  # accumulate in the output chunk: one temporary per chunk
                out = dw[:, n0 : n0 + step]
                torch.mul(chunk(gt, n0), p4, out=out).mul_(neg_g4).addcmul_(coef, x4)
            else:
                dw[:, n0 : n0 + step] = coef.mul_(x4).addcmul_(chunk(gt, n0) * p4, neg_g4)
            del coef  # before the next chunk's temporaries exist
        dtau_out = dtau.to(tau.dtype) if ctx.needs_input_grad[1] else None
        dbias = None
        if bias is not None and ctx.needs_input_grad[2]:
            dbias = (d * tds.sum(dim=0)).to(bias.dtype)  # (H, N)
        return dw.transpose(1, 2), dtau_out, dbias


def _head_energy(sq4, r4, bias, n0, d):
    """``q[b, h, n] = sum_d w^2 / colsq (+ D bias[h, n])`` of one chunk: (B, n, H, D) -> (B, H, n)."""
    q = (sq4 * r4).sum(dim=-1).transpose(1, 2).contiguous()  # (B, H, n)
    if bias is not None:
        q += d * bias[:, n0 : n0 + q.shape[-1]].to(q.dtype)  # (H, n) broadcast over B
    return q


def _memberships(x4, r4, tau, bias, n0, d):
    """``Pi = softmax over heads of tau q`` of one chunk (B, n, H, D) -> (B, H, n), contiguous.

    One chunk-sized temporary (``w^2 r`` built in place)."""
    q = (x4 * x4).mul_(r4).sum(dim=-1).transpose(1, 2).contiguous()  # (B, H, n)
    if bias is not None:
        q += d * bias[:, n0 : n0 + q.shape[-1]].to(q.dtype)  # (H, n) broadcast over B
    return torch.softmax(q.mul_(tau), dim=1)


def tssa_stream(w: torch.Tensor, temperature: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Non-causal TSSA core, streamed over token chunks. (B, H, N, D) -> (B, H, N, D).

    ``Y = -Pi * W * 1/(1 + m)`` exactly as :func:`tssa.ops.naive.tssa_naive`. The output is a
    (B, H, N, D) view of a token-major (B, N, H, D) buffer, so merging heads afterwards is free.
    """
    return _TSSAStream.apply(w, temperature, bias)
