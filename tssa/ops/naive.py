"""Paper-faithful reference of Token Statistics Self-Attention (TSSA).

Wu et al., "Token Statistics Transformer: Linear-Time Attention via Variational Rate Reduction",
ICLR 2025 (arXiv 2412.17810), Eq. 10-12. The code follows the equations step by step and is meant
to be read, not to be fast; every other implementation is tested against it.

Shapes: ``w`` is (B, H, N, D) projected tokens, ``temperature`` is (H,). Output (B, H, N, D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORM_EPS = 1e-12  # floor of a feature column's L2 norm (step 1)
MEMBERSHIP_EPS = 1e-8  # added to the total membership of a head (step 4)


def tssa_naive(
    w: torch.Tensor,
    temperature: torch.Tensor,
    bias: torch.Tensor | None = None,
    attn_drop: float = 0.0,
) -> torch.Tensor:
    """Non-causal TSSA core, literally.

    1. ``Wn = W / max(||W[:, :, :, d]||_2 over tokens, 1e-12)``
    2. ``s[h, n] = tau[h] * sum_d (Wn[h, n, d]^2 + bias[h, n])`` (bias optional, (H, N))
    3. ``Pi = softmax over heads of s``
    4. ``m[h, d] = sum_n Pi[h, n] / (sum_n' Pi[h, n'] + 1e-8) * W[h, n, d]^2``
    5. ``g = 1 / (1 + m)`` (dropout ``attn_drop`` applies to ``g`` in training)
    6. ``Y = -Pi * W * g``
    """
    u = F.normalize(w, p=2.0, dim=2, eps=NORM_EPS).pow(2)  # (B, H, N, D)
    if bias is not None:
        u = u + bias.unsqueeze(-1)  # (H, N, 1): per-head, per-position offset
    s = temperature.view(1, -1, 1) * u.sum(dim=-1)  # (B, H, N)
    pi = torch.softmax(s, dim=1)  # (B, H, N): over heads
    pi_norm = pi / (pi.sum(dim=-1, keepdim=True) + MEMBERSHIP_EPS)  # (B, H, N)
    m = torch.einsum("bhn,bhnd->bhd", pi_norm, w.pow(2))  # (B, H, D)
    g = 1.0 / (1.0 + m)  # (B, H, D)
    if attn_drop > 0.0:
        g = F.dropout(g, p=attn_drop, training=True)
    return -pi.unsqueeze(-1) * w * g.unsqueeze(2)  # (B, H, N, D)


def tssa_causal_naive(
    w: torch.Tensor,
    temperature: torch.Tensor,
    bias: torch.Tensor | None = None,
    attn_drop: float = 0.0,
) -> torch.Tensor:
    """Causal TSSA core: every statistic runs over the prefix 1..n.

    1. ``U[h, n, d] = W[h, n, d]^2 / max(sum_{n' <= n} W[h, n', d]^2, 1e-12)``
    2. ``s[h, n] = tau[h] * sum_d (U[h, n, d] + bias[h, n])`` (bias optional: learned, (H, N), init 0)
    3. ``Pi = softmax over heads of s``
    4. ``m[h, n, d] = sum_{n' <= n} Pi[h, n'] W[h, n', d]^2 / (sum_{n' <= n} Pi[h, n'] + 1e-8)``
    5. ``g = 1 / (1 + m)``
    6. ``Y = -Pi * W * g``
    """
    sq = w.pow(2)  # (B, H, N, D)
    u = sq / torch.cumsum(sq, dim=2).clamp_min(NORM_EPS)  # (B, H, N, D)
    if bias is not None:
        u = u + bias.unsqueeze(-1)  # (H, N, 1): per-head, per-position offset
    s = temperature.view(1, -1, 1) * u.sum(dim=-1)  # (B, H, N)
    pi = torch.softmax(s, dim=1)  # (B, H, N)
    num = torch.cumsum(pi.unsqueeze(-1) * sq, dim=2)  # (B, H, N, D)
    den = torch.cumsum(pi, dim=2).unsqueeze(-1) + MEMBERSHIP_EPS  # (B, H, N, 1)
    g = 1.0 / (1.0 + num / den)  # (B, H, N, D)
    if attn_drop > 0.0:
        g = F.dropout(g, p=attn_drop, training=True)
    return -pi.unsqueeze(-1) * w * g


def memberships(w: torch.Tensor, temperature: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Soft group memberships ``Pi`` (B, H, N) of step 3; each token's column sums to 1 over heads."""
    if causal:
        sq = w.pow(2)
        s = (sq / torch.cumsum(sq, dim=2).clamp_min(NORM_EPS)).sum(-1)
    else:
        s = F.normalize(w, p=2.0, dim=2, eps=NORM_EPS).pow(2).sum(-1)
    return torch.softmax(temperature.view(1, -1, 1) * s, dim=1)
