"""Memory-lean TSSA: a custom autograd function with a hand-derived backward.

Same mathematics as :mod:`tssa.ops.naive` (Wu et al., ICLR 2025, Eq. 10-12). Autograd through the
naive form keeps every intermediate of the six steps alive until backward (about eight tensors of
the size of ``w``). This path saves only the projected tokens ``w`` and per-head statistics of size
(B, H, D) or (B, H); the token memberships ``Pi`` (B, H, N) and, in the causal form, the prefix
statistics are recomputed in backward.

Statistics are accumulated in float32 when ``w`` is float16/bfloat16; the output has ``w``'s dtype.

Backward of the non-causal core (``G`` the upstream gradient, ``S = sum_n Pi``, ``r = 1/||w_d||^2``)::

    dPi  = -sum_d G w g + sum_d w^2 dA + dS          dA = g^2 (sum_n Pi G w) / (S + eps)
    dS   = -sum_d dA m                               ds = Pi (dPi - sum_h Pi dPi)     (softmax)
    dtau = sum_{b,n} ds q                            q  = sum_d w^2 r (+ D bias)
    dw   = -G Pi g + 2 w (Pi dA + tau ds r - r^2 sum_n tau ds w^2)
"""

from __future__ import annotations

import torch

from .naive import MEMBERSHIP_EPS, NORM_EPS

_SQ_EPS = NORM_EPS * NORM_EPS  # the norm floor, squared


def _stat_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype


def _revcumsum(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.flip(dim).cumsum(dim).flip(dim)


def _logits(q: torch.Tensor, tau: torch.Tensor, bias: torch.Tensor | None, d: int) -> torch.Tensor:
    if bias is not None:
        q = q + d * bias.to(q.dtype)  # bias is added to each of the D normalised squares
    return tau.view(1, -1, 1) * q, q


class _TSSALean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, tau, bias):
        dt = _stat_dtype(w)
        wf = w.to(dt)
        tau_f = tau.to(dt)
        d = w.shape[-1]
        sq = wf * wf  # (B, H, N, D)
        colsq = sq.sum(dim=2)  # (B, H, D)
        r = 1.0 / colsq.clamp_min(_SQ_EPS)  # (B, H, D)
        s, q = _logits(torch.matmul(sq, r.unsqueeze(-1)).squeeze(-1), tau_f, bias, d)  # (B, H, N)
        pi = torch.softmax(s, dim=1)  # (B, H, N)
        total = pi.sum(dim=-1) + MEMBERSHIP_EPS  # (B, H)
        m = torch.matmul(pi.unsqueeze(-2), sq).squeeze(-2) / total.unsqueeze(-1)  # (B, H, D)
        del sq
        g = 1.0 / (1.0 + m)  # (B, H, D)
        y = wf * pi.unsqueeze(-1)
        y.mul_(g.neg().unsqueeze(2))  # (B, H, N, D)
        ctx.save_for_backward(w, tau, bias, r, colsq, total, m, g)
        return y.to(w.dtype)

    @staticmethod
    def backward(ctx, grad):
        w, tau, bias, r, colsq, total, m, g = ctx.saved_tensors
        dt = r.dtype
        wf = w.to(dt)
        gf = grad.to(dt)
        tau_f = tau.to(dt)
        d = w.shape[-1]
        sq = wf * wf  # (B, H, N, D)
        s, q = _logits(torch.matmul(sq, r.unsqueeze(-1)).squeeze(-1), tau_f, bias, d)
        pi = torch.softmax(s, dim=1)  # (B, H, N), recomputed
        gw = gf * wf  # (B, H, N, D)
        dpi = -torch.matmul(gw, g.unsqueeze(-1)).squeeze(-1)  # (B, H, N)
        dm = g * g * torch.matmul(pi.unsqueeze(-2), gw).squeeze(-2)  # (B, H, D)
        del gw
        da = dm / total.unsqueeze(-1)  # (B, H, D)
        dtotal = -(da * m).sum(dim=-1)  # (B, H)
        dpi += torch.matmul(sq, da.unsqueeze(-1)).squeeze(-1) + dtotal.unsqueeze(-1)
        ds = pi * (dpi - (pi * dpi).sum(dim=1, keepdim=True))  # (B, H, N): softmax over heads
        tds = tau_f.view(1, -1, 1) * ds  # (B, H, N)
        dr = torch.matmul(tds.unsqueeze(-2), sq).squeeze(-2)  # (B, H, D)
        del sq
        dcol = torch.where(colsq > _SQ_EPS, -r * r * dr, torch.zeros_like(dr))  # (B, H, D)
        # dw = -G Pi g + 2 w (Pi dA + tds r + dcol): both coefficients are sums of outer products
        left = torch.stack([pi, tds, torch.ones_like(pi)], dim=-1)  # (B, H, N, 3)
        right = torch.stack([2 * da, 2 * r, 2 * dcol], dim=-2)  # (B, H, 3, D)
        dw = torch.matmul(left, right).mul_(wf)  # (B, H, N, D)
        dw.addcmul_(gf, pi.unsqueeze(-1) * g.unsqueeze(2), value=-1.0)
        dtau = (ds * q).sum(dim=(0, 2)).to(tau.dtype) if ctx.needs_input_grad[1] else None
        dbias = None
        if bias is not None and ctx.needs_input_grad[2]:
            dbias = (d * tds.sum(dim=0)).to(bias.dtype)
        return dw.to(w.dtype), dtau, dbias


class _TSSACausalLean(torch.autograd.Function):
    @staticmethod
    def _stats(wf, tau_f, bias):
        d = wf.shape[-1]
        sq = wf * wf  # (B, H, N, D)
        c = torch.cumsum(sq, dim=2)  # (B, H, N, D) prefix column energy
        u = sq / c.clamp_min(NORM_EPS)  # (B, H, N, D)
        s, q = _logits(u.sum(dim=-1), tau_f, bias, d)  # (B, H, N)
        pi = torch.softmax(s, dim=1)  # (B, H, N)
        total = torch.cumsum(pi, dim=2) + MEMBERSHIP_EPS  # (B, H, N)
        m = torch.cumsum(pi.unsqueeze(-1) * sq, dim=2).div_(total.unsqueeze(-1))  # (B, H, N, D)
        return sq, c, u, q, pi, total, m

    @staticmethod
    def forward(ctx, w, tau, bias):
        dt = _stat_dtype(w)
        wf = w.to(dt)
        _, _, _, _, pi, _, m = _TSSACausalLean._stats(wf, tau.to(dt), bias)
        y = m.add_(1.0).reciprocal_().mul_(wf).mul_(pi.unsqueeze(-1)).neg_()  # -Pi w g
        ctx.save_for_backward(w, tau, bias)
        return y.to(w.dtype)

    @staticmethod
    def backward(ctx, grad):
        w, tau, bias = ctx.saved_tensors
        dt = _stat_dtype(w)
        wf = w.to(dt)
        gf = grad.to(dt)
        tau_f = tau.to(dt)
        d = w.shape[-1]
        sq, c, u, q, pi, total, m = _TSSACausalLean._stats(wf, tau_f, bias)
        g = m.add_(1.0).reciprocal_()  # (B, H, N, D); m is recovered below as 1/g - 1
        pi4 = pi.unsqueeze(-1)
        gpw = gf * wf * pi4  # (B, H, N, D)
        dpi = -(gf * wf * g).sum(dim=-1)  # (B, H, N)
        da = gpw.mul_(g).mul_(g).div_(total.unsqueeze(-1))  # dm / total
        dtotal = -(da * (1.0 / g - 1.0)).sum(dim=-1)  # (B, H, N)
        ra = _revcumsum(da, 2)  # (B, H, N, D)
        del da
        dpi += (ra * sq).sum(dim=-1) + _revcumsum(dtotal, 2)
        dsq = ra.mul_(pi4)  # (B, H, N, D)
        ds = pi * (dpi - (pi * dpi).sum(dim=1, keepdim=True))  # (B, H, N)
        tds = tau_f.view(1, -1, 1) * ds
        cc = c.clamp_min(NORM_EPS)
        dsq += tds.unsqueeze(-1) / cc
        dc = torch.where(c > NORM_EPS, -tds.unsqueeze(-1) * u / cc, torch.zeros_like(c))
        dsq += _revcumsum(dc, 2)
        dw = (2.0 * wf) * dsq - gf * pi4 * g
        dtau = (ds * q).sum(dim=(0, 2)).to(tau.dtype) if ctx.needs_input_grad[1] else None
        dbias = None
        if bias is not None and ctx.needs_input_grad[2]:
            dbias = (d * tds.sum(dim=0)).to(bias.dtype)
        return dw.to(w.dtype), dtau, dbias


def tssa_lean(w: torch.Tensor, temperature: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Non-causal TSSA core with the memory-lean backward. (B, H, N, D) -> (B, H, N, D)."""
    return _TSSALean.apply(w, temperature, bias)


def tssa_causal_lean(
    w: torch.Tensor, temperature: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal TSSA core; saves only ``w`` and recomputes every prefix statistic in backward."""
    return _TSSACausalLean.apply(w, temperature, bias)
