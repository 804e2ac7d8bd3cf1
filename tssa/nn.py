"""Token mixers with one interface, so a model swaps attention by one argument.

Both modules map (B, N, C) -> (B, N, C) and take the same constructor arguments
``(dim, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0, causal=False)``;
``forward_nchw`` maps (B, C, H, W) feature maps of conv networks through the same layer.

- :class:`TokenStatisticsAttention`: TSSA (Wu et al., ICLR 2025): one C -> C projection, the
  statistics core :func:`tssa.ops.tssa`, an output projection. Linear in N. Parameter names follow
  the official ToST code (``qkv``, ``temp`` (H, 1), ``to_out.0``) so its checkpoints load as they are.
- :class:`SoftmaxAttention`: multi-head softmax attention with a fused q/k/v projection and
  ``F.scaled_dot_product_attention`` (``fused_attn=False`` materialises the N x N matrix instead).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .ops import tssa

__all__ = ["TokenStatisticsAttention", "SoftmaxAttention", "build_attention", "ATTENTION_LAYERS"]


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = t.shape
    return t.view(b, n, heads, c // heads).transpose(1, 2)  # (B, H, N, D)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)  # (B, N, C)


class _TokenMixer(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads

    def forward_nchw(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W): the H*W positions are the tokens."""
        b, c, h, w = x.shape
        y = self(x.flatten(2).transpose(1, 2))  # (B, HW, C)
        return y.transpose(1, 2).reshape(b, c, h, w)


class TokenStatisticsAttention(_TokenMixer):
    """Token Statistics Self-Attention layer. (B, N, C) -> (B, N, C).

    ``W = qkv(x)`` split into H heads, ``Y = tssa(W, temp)``, heads merged, ``to_out`` (Linear + dropout).
    ``attn_drop`` drops entries of the gate ``1/(1+m)`` during training, as the official code does.
    ``impl`` selects the core implementation (see :func:`tssa.ops.tssa`). With ``causal=True`` and
    ``max_len`` set, a learned per-head, per-position bias (initialised to 0) is added.

    >>> attn = TokenStatisticsAttention(64, num_heads=4)
    >>> attn(torch.randn(2, 100, 64)).shape
    torch.Size([2, 100, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        causal: bool = False,
        *,
        impl: str = "auto",
        max_len: int | None = None,
    ) -> None:
        super().__init__(dim, num_heads)
        self.causal = causal
        self.impl = impl
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim, bias=qkv_bias)
        self.temp = nn.Parameter(torch.ones(num_heads, 1))
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(proj_drop))
        self.pos_bias = nn.Parameter(torch.zeros(num_heads, max_len)) if causal and max_len else None

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (the temperature, and the causal bias)."""
        return {"temp"} | ({"pos_bias"} if self.pos_bias is not None else set())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        w = _split_heads(self.qkv(x), self.num_heads)  # (B, H, N, D)
        bias = self.pos_bias[:, :n] if self.pos_bias is not None else None
        if bias is not None and bias.shape[1] < n:
            raise ValueError(f"sequence of {n} tokens exceeds max_len={self.pos_bias.shape[1]}")
        y = tssa(
            w,
            self.temp.view(-1),
            causal=self.causal,
            impl=self.impl,
            bias=bias,
            attn_drop=self.attn_drop if self.training else 0.0,
        )
        return self.to_out(_merge_heads(y))


class SoftmaxAttention(_TokenMixer):
    """Multi-head softmax attention. (B, N, C) -> (B, N, C).

    ``fused_attn`` (default from ``TSSA_FUSED_ATTN``, on unless set to 0) uses
    ``F.scaled_dot_product_attention``; off, the N x N attention matrix is materialised.

    >>> attn = SoftmaxAttention(64, num_heads=4)
    >>> attn(torch.randn(2, 100, 64)).shape
    torch.Size([2, 100, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        causal: bool = False,
        *,
        fused_attn: bool | None = None,
    ) -> None:
        super().__init__(dim, num_heads)
        self.causal = causal
        self.fused_attn = os.environ.get("TSSA_FUSED_ATTN", "1") != "0" if fused_attn is None else fused_attn
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def no_weight_decay(self) -> set[str]:
        return set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, N, D)
        if self.fused_attn:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0, is_causal=self.causal
            )
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, H, N, N)
            if self.causal:
                mask = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
                attn = attn.masked_fill(mask, float("-inf"))
            y = self.attn_drop(attn.softmax(dim=-1)) @ v
        return self.proj_drop(self.proj(_merge_heads(y)))


ATTENTION_LAYERS: dict[str, type[_TokenMixer]] = {
    "tssa": TokenStatisticsAttention,
    "softmax": SoftmaxAttention,
}


def build_attention(kind: str, dim: int, num_heads: int = 8, **kwargs) -> nn.Module:
    """Build a token mixer by name (``"tssa"`` or ``"softmax"``) with the shared constructor."""
    if kind not in ATTENTION_LAYERS:
        raise ValueError(f"unknown attention {kind!r}; choose one of {sorted(ATTENTION_LAYERS)}")
    return ATTENTION_LAYERS[kind](dim, num_heads, **kwargs)
