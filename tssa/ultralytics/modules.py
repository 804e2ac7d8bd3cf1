"""YOLO11 blocks whose token mixer is swapped: TSSA in place of softmax attention, or none.

Stock YOLO11 puts softmax attention in ``C2PSA`` (layer 10, P5/32): ``cv1`` (1x1 conv, c1 -> 2c) splits
the channels into two halves ``a, b``; ``b`` runs through ``n`` PSA blocks (``b + attn(b)``, then
``b + ffn(b)``) with ``num_heads = max(c // 64, 1)``; ``cv2`` (1x1 conv, 2c -> c1) merges ``a, b``.
The modules here keep that structure and its parameter names, and change only ``attn``:

- :class:`C2TSSA`: ``attn`` is :class:`TokenStatisticsAttention2d`, TSSA (:mod:`tssa.nn`) on the
  flattened H*W positions, same heads as ``C2PSA``.
- :class:`C2NoAttn`: no token mixer; each block is ``b + ffn(b)``.

Their constructors match ``C2PSA(c1, c2, n=1, e=0.5)``, so a model YAML names them where it named
``C2PSA`` (see :mod:`tssa.ultralytics`).

>>> import torch
>>> m = C2TSSA(256, 256, n=1)
>>> m(torch.randn(1, 256, 20, 20)).shape
torch.Size([1, 256, 20, 20])
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules.conv import Conv

from tssa.nn import TokenStatisticsAttention

__all__ = ["TokenStatisticsAttention2d", "MixerPSABlock", "C2TSSA", "C2NoAttn", "heads_for"]


def heads_for(c: int) -> int:
    """The head count ``C2PSA`` uses for ``c`` hidden channels: ``max(c // 64, 1)``."""
    return max(c // 64, 1)


class TokenStatisticsAttention2d(TokenStatisticsAttention):
    """TSSA on conv feature maps. (B, C, H, W) -> (B, C, H, W); the H*W positions are the tokens.

    ``Y = to_out(merge(tssa(split(qkv(X)), temp)))`` with ``X`` the (B, HW, C) tokens; parameters as
    :class:`tssa.nn.TokenStatisticsAttention` (``qkv``, ``temp``, ``to_out.0``).

    >>> TokenStatisticsAttention2d(128, num_heads=2)(torch.randn(2, 128, 20, 20)).shape
    torch.Size([2, 128, 20, 20])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = super().forward(x.flatten(2).transpose(1, 2))  # (B, HW, C)
        return y.transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)


class MixerPSABlock(nn.Module):
    """A PSA block with a chosen token mixer. (B, C, H, W) -> (B, C, H, W).

    ``x = x + attn(x)`` (skipped when ``mixer="none"``), then ``x = x + ffn(x)``, where ``ffn`` is
    Ultralytics' ``Conv(c, 2c, 1) -> Conv(2c, c, 1, act=False)`` as in ``PSABlock``.

    Args:
        c: channels.
        num_heads: attention heads.
        mixer: ``"tssa"`` or ``"none"``.
    """

    def __init__(self, c: int, num_heads: int = 4, mixer: str = "tssa") -> None:
        super().__init__()
        if mixer not in ("tssa", "none"):
            raise ValueError(f"mixer must be 'tssa' or 'none', got {mixer!r}")
        self.attn = TokenStatisticsAttention2d(c, num_heads=num_heads) if mixer == "tssa" else None
        self.ffn = nn.Sequential(Conv(c, c * 2, 1), Conv(c * 2, c, 1, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = x + self.attn(x)
        return x + self.ffn(x)


class _C2Mixer(nn.Module):
    mixer = "tssa"

    def __init__(self, c1: int, c2: int, n: int = 1, e: float = 0.5) -> None:
        super().__init__()
        if c1 != c2:
            raise ValueError(f"{type(self).__name__} keeps the channel count: c1={c1} must equal c2={c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        self.m = nn.Sequential(*(MixerPSABlock(self.c, heads_for(self.c), self.mixer) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv1(x).split((self.c, self.c), dim=1)  # two (B, c, H, W) halves
        return self.cv2(torch.cat((a, self.m(b)), 1))


class C2TSSA(_C2Mixer):
    """``C2PSA`` with TSSA as the token mixer. (B, c1, H, W) -> (B, c1, H, W).

    ``a, b = split(cv1(x))``; ``b`` through ``n`` blocks ``b + tssa_attn(b)``, ``b + ffn(b)`` with
    ``max(c // 64, 1)`` heads, ``c = int(c1 * e)``; ``cv2(cat(a, b))``. State-dict keys equal
    ``C2PSA``'s except under ``m.*.attn``.

    >>> C2TSSA(256, 256, n=2)(torch.randn(1, 256, 8, 8)).shape
    torch.Size([1, 256, 8, 8])
    """

    mixer = "tssa"


class C2NoAttn(_C2Mixer):
    """``C2PSA`` with the token mixer removed and the feed-forward kept. (B, c1, H, W) -> (B, c1, H, W).

    ``a, b = split(cv1(x))``; ``b`` through ``n`` blocks ``b + ffn(b)``; ``cv2(cat(a, b))``.

    >>> C2NoAttn(256, 256)(torch.randn(1, 256, 8, 8)).shape
    torch.Size([1, 256, 8, 8])
    """

    mixer = "none"
