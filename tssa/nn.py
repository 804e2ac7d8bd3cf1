"""Token mixers with one interface, so a model swaps attention by one argument.

Both modules map (B, N, C) -> (B, N, C) and take the same constructor arguments
``(dim, num_heads=8, qkv_bias=False, attn_drop=0.0, proj_drop=0.0, causal=False)``;
``forward_nchw`` maps (B, C, H, W) feature maps of conv networks through the same layer.

- :class:`TokenStatisticsAttention`: TSSA (Wu et al., ICLR 2025): one C -> C projection, the
  statistics core :func:`tssa.ops.tssa`, an output projection. Linear in N. Parameter names and
  shapes are those of the official vision layer (``qkv``, ``temp`` (H, 1), ``to_out.0``), so one of
  its state dicts loads with ``load_state_dict`` as it is; the official language layer (``c_attn``,
  ``c_proj``, ``temp``, ``denom_bias``) loads through :meth:`TokenStatisticsAttention.from_official`.
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
    ``attn_drop`` drops entries of the gate ``1/(1+m)`` during training, as both official layers do.
    ``impl`` selects the core implementation (see :func:`tssa.ops.tssa`). With ``causal=True`` and
    ``max_len`` set, a learned per-head, per-position bias ``pos_bias`` (H, max_len), initialised to
    0, is added to the normalised squares (the official language layer's ``denom_bias``).
    ``proj_bias=False`` drops the output projection's bias (the official language layer with
    ``bias=False``); the official vision layer always has it. ``recompute=True`` lets a core that can
    (``fused``, CPU) recompute ``W = qkv(x)`` in backward instead of keeping it from forward: the same
    outputs and gradients bit for bit, one (B, N, C) buffer less at the training step's peak (the
    layer's peak then equals its two projections' alone), one more ``qkv`` projection in backward
    (one more matrix product per training step); ``False`` keeps ``W``.

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
        proj_bias: bool = True,
        recompute: bool = True,
    ) -> None:
        super().__init__(dim, num_heads)
        self.causal = causal
        self.impl = impl
        self.recompute = recompute
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim, bias=qkv_bias)
        self.temp = nn.Parameter(torch.ones(num_heads, 1))
        self.to_out = nn.Sequential(nn.Linear(dim, dim, bias=proj_bias), nn.Dropout(proj_drop))
        self.pos_bias = nn.Parameter(torch.zeros(num_heads, max_len)) if causal and max_len else None

    def no_weight_decay(self) -> set[str]:
        """Names exempt from weight decay when this layer's own list is consulted: ``temp`` and ``pos_bias``.

        This is the official language recipe (``configure_optimizers`` exempts names containing
        ``temp`` or ``denom``, and everything with fewer than 2 dimensions); the YOLO plug-in follows
        it. The official vision recipe never consults a layer's list and decays ``temp``, and so do
        the ToST classifiers of :mod:`tssa.timm` (see ``ToST.no_weight_decay``).
        """
        return {"temp"} | ({"pos_bias"} if self.pos_bias is not None else set())

    @classmethod
    def from_official(
        cls, state_dict: dict[str, torch.Tensor], num_heads: int, **kwargs
    ) -> TokenStatisticsAttention:
        """The layer holding one official ToST attention layer's weights, loaded strictly.

        ``state_dict`` holds one layer's entries with its prefix removed, in either official layout:

        - vision (``tost_vision/tost.py``, ``AttentionTSSA``): ``qkv.weight`` (C, C), ``qkv.bias``
          (optional), ``temp`` (H, 1), ``to_out.0.weight`` (C, C), ``to_out.0.bias`` (optional);
          non-causal.
        - language (``tost_lang/model_TSSA.py``, ``CausalSelfAttention_TSSA``): ``c_attn.weight``
          (C, C), ``c_proj.weight`` (C, C), their biases (present only with ``bias=True``), ``temp``
          (H, 1), ``denom_bias`` (H, block_size, 1); causal with ``max_len = block_size``, and
          ``denom_bias[:, :, 0]`` becomes ``pos_bias`` (both are added to every feature's
          normalised square before the sum over features).

        The width C, both biases, causality and ``max_len`` come from the tensors; ``num_heads``
        must equal H of ``temp``. ``kwargs`` go to the constructor (``attn_drop``, ``proj_drop``,
        ``impl``). Parameters take the dtype and device of ``qkv``/``c_attn``'s weight.

        >>> sd = {"c_attn.weight": torch.randn(64, 64), "c_proj.weight": torch.randn(64, 64),
        ...       "temp": torch.ones(4, 1), "denom_bias": torch.zeros(4, 32, 1)}
        >>> layer = TokenStatisticsAttention.from_official(sd, num_heads=4)
        >>> layer.causal, layer.pos_bias.shape, layer.to_out[0].bias
        (True, torch.Size([4, 32]), None)
        """
        layouts = {
            "vision": (("qkv.weight", "temp", "to_out.0.weight"), "qkv", "to_out.0"),
            "language": (("c_attn.weight", "c_proj.weight", "temp", "denom_bias"), "c_attn", "c_proj"),
        }
        found = [name for name, (need, _, _) in layouts.items() if all(k in state_dict for k in need)]
        if not found:
            missing = "; ".join(
                f"{name} layout misses {', '.join(k for k in need if k not in state_dict)}"
                for name, (need, _, _) in layouts.items()
            )
            raise ValueError(
                f"from_official: not an official ToST attention layer state dict ({missing}); got keys "
                f"{sorted(state_dict)[:8]}. Pass one layer's entries with its prefix removed, e.g. "
                "{k.removeprefix(p): v for k, v in sd.items() if k.startswith(p)} with p = 'blocks.0.attn.'"
            )
        kind = found[0]
        _, qkv, out = layouts[kind]
        w_in, temp = state_dict[f"{qkv}.weight"], state_dict["temp"]
        dim = w_in.shape[1]
        if tuple(w_in.shape) != (dim, dim):
            raise ValueError(
                f"from_official: {qkv}.weight has shape {tuple(w_in.shape)}; TSSA's projection is (C, C) "
                f"(a (3C, C) weight belongs to softmax attention)"
            )
        if tuple(temp.shape) != (num_heads, 1):
            raise ValueError(
                f"from_official: temp has shape {tuple(temp.shape)}, expected ({num_heads}, 1) for "
                f"num_heads={num_heads}; pass num_heads={temp.shape[0]}"
            )
        prefixes = {f"{qkv}.": "qkv.", f"{out}.": "to_out.0."}
        renamed = {}
        for k, v in state_dict.items():
            head = next((p for p in prefixes if k.startswith(p)), None)
            renamed[prefixes[head] + k[len(head) :] if head else k] = v
        max_len = None
        if kind == "language":
            denom = renamed.pop("denom_bias")
            if denom.dim() != 3 or denom.shape[0] != num_heads or denom.shape[2] != 1:
                raise ValueError(
                    f"from_official: denom_bias has shape {tuple(denom.shape)}, "
                    f"expected ({num_heads}, block_size, 1)"
                )
            renamed["pos_bias"] = denom[:, :, 0]  # (H, block_size)
            max_len = denom.shape[1]
        layer = cls(
            dim,
            num_heads,
            qkv_bias="qkv.bias" in renamed,
            causal=kind == "language",
            max_len=max_len,
            proj_bias="to_out.0.bias" in renamed,
            **kwargs,
        ).to(device=w_in.device, dtype=w_in.dtype)
        layer.load_state_dict(renamed, strict=True)
        return layer

    def _projection(self, x: torch.Tensor) -> tuple | None:
        """``(x, qkv.weight, qkv.bias)`` for the core to recompute ``w`` from in backward
        (:func:`tssa.ops.tssa`'s ``projection``), or None: only while a gradient is being taken, with
        nothing dropping entries of the gate, and ``qkv`` a plain ``nn.Linear`` without hooks of its
        own, so that ``F.linear(x, qkv.weight, qkv.bias)`` is what made ``w``. Global module hooks
        (profilers, ``FlopCounterMode``'s tracker) are assumed to leave outputs as they are; one that
        replaces ``qkv``'s output needs ``recompute=False``."""
        if (
            not getattr(self, "recompute", True)  # modules pickled before `recompute` existed lack it
            or not torch.is_grad_enabled()
            or (self.training and self.attn_drop > 0.0)
        ):
            return None
        if type(self.qkv) is not nn.Linear or self.qkv._forward_hooks or self.qkv._forward_pre_hooks:
            return None
        return (x, self.qkv.weight, self.qkv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        bias = self.pos_bias[:, :n] if self.pos_bias is not None else None
        if bias is not None and bias.shape[1] < n:
            raise ValueError(f"sequence of {n} tokens exceeds max_len={self.pos_bias.shape[1]}")
        w = _split_heads(self.qkv(x), self.num_heads)  # (B, H, N, D)
        y = tssa(
            w,
            self.temp.view(-1),
            causal=self.causal,
            impl=self.impl,
            bias=bias,
            attn_drop=self.attn_drop if self.training else 0.0,
            projection=self._projection(x),
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
