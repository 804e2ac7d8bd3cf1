"""ToST: Token Statistics Transformer image classifiers, as a timm model family.

Wu et al., "Token Statistics Transformer: Linear-Time Attention via Variational Rate Reduction",
ICLR 2025 (arXiv 2412.17810). The vision models are XCiT-shaped (El-Nouby et al., NeurIPS 2021):

    image (B, 3, H, W)
      -> conv patch embedding: 4 (p16) or 3 (p8) stride-2 3x3 conv + BatchNorm, GELU between
      -> + Fourier positional encoding (1x1 conv of 64 sine/cosine features)   tokens (B, N, C)
      -> depth x pre-norm block: x + gamma1 * attn(LN(x)); x + gamma2 * mlp(LN(x))
      -> class token prepended, 2 class-attention blocks (CaiT; only the class token queries)
      -> LayerNorm, class token -> Linear head                                  logits (B, classes)

``attn`` is the swappable token mixer: TSSA (:class:`tssa.nn.TokenStatisticsAttention`) for the
``tost_*`` models, and the paper's controls on the same backbone: softmax attention
(``tost_softmax_*``, the paper's "vit_cab") and XCiT's cross-covariance attention (``tost_xca_*``,
"xcit_cab"). Names of parameters and their shapes follow the official checkpoints
(``patch_embed.proj.{0,2,4,6}``, ``pos_embeder.token_projection``, ``blocks.{i}.attn.{qkv,temp,to_out.0}``,
``cls_attn_blocks.{j}.attn.{qkv,proj}``, ``gamma1``/``gamma2``, ``norm``, ``head``), so an official
state dict loads with ``load_state_dict`` as it is (compared: every key and shape against the layout
written out in ``tests/test_timm.py``, and each mixer's output against its equations);
:func:`checkpoint_filter_fn` also accepts wrapped, ``module.``-prefixed or timm-XCiT-renamed
(``pos_embed.``) state dicts. Training recipe: weight decay and dropout as the official ``main.py``
sets them, see :meth:`ToST.no_weight_decay` and :class:`ToST`.

timm API: ``forward_features`` returns the patch tokens after the last token-mixing block as an NHWC
map (B, H/p, W/p, C) (``output_fmt = "NHWC"``); the class-attention blocks, the final norm and the
linear classifier form the head (``forward_head``), which is where the class token pools the tokens
(``global_pool="token"``). ``global_pool="avg"`` averages the normalised patch tokens instead, and
``global_pool=""`` returns the unpooled map. Any image size divisible by the patch size works.
"""

import math
from contextlib import nullcontext
from functools import partial

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, Mlp, to_2tuple, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, register_notrace_module
from torch import nn

from tssa.nn import SoftmaxAttention, TokenStatisticsAttention

from ._helpers import checkpoint, feature_take_indices

__all__ = [
    "ToST",
    "ToSTBlock",
    "ClassAttention",
    "ClassAttentionBlock",
    "CrossCovarianceAttention",
    "ConvPatchEmbed",
    "FourierPositionalEncoding",
    "ATTN_LAYERS",
    "checkpoint_filter_fn",
]


def _tssa_core_script(
    w: torch.Tensor, temperature: torch.Tensor, attn_drop: float, training: bool
) -> torch.Tensor:
    """TSSA core (B, H, N, D) -> (B, H, N, D) in TorchScript-compilable form; the same six steps and
    constants as :func:`tssa.ops.naive.tssa_naive` (column-norm floor 1e-12, membership eps 1e-8)."""
    u = F.normalize(w, p=2.0, dim=2, eps=1e-12).pow(2)  # (B, H, N, D)
    pi = torch.softmax(temperature.view(1, -1, 1) * u.sum(dim=-1), dim=1)  # (B, H, N): over heads
    pi_norm = pi / (pi.sum(dim=-1, keepdim=True) + 1e-8)  # (B, H, N)
    m = torch.einsum("bhn,bhnd->bhd", pi_norm, w.pow(2))  # (B, H, D)
    g = F.dropout(1.0 / (1.0 + m), p=attn_drop, training=training and attn_drop > 0.0)  # (B, H, D)
    return -pi.unsqueeze(-1) * w * g.unsqueeze(2)  # (B, H, N, D)


@register_notrace_module
class TSSAMixer(TokenStatisticsAttention):
    """:class:`tssa.nn.TokenStatisticsAttention` that also compiles under TorchScript. (B, N, C) -> (B, N, C).

    Eager mode runs the parent's forward (``tssa.ops.tssa`` with ``impl`` dispatch); a scripted model
    runs the same equations written out in compilable form (``_tssa_core_script``).

    >>> TSSAMixer(64, num_heads=4)(torch.randn(2, 10, 64)).shape
    torch.Size([2, 10, 64])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            b, n, c = x.shape
            w = self.qkv(x).view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # (B, H, N, D)
            y = _tssa_core_script(w, self.temp.view(-1), self.attn_drop, self.training)
            return self.to_out(y.transpose(1, 2).reshape(b, n, c))  # (B, N, C)
        return self._forward_eager(x)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        return TokenStatisticsAttention.forward(self, x)


@register_notrace_module
class SoftmaxMixer(SoftmaxAttention):
    """:class:`tssa.nn.SoftmaxAttention` (SDPA inside) that also compiles under TorchScript.

    >>> SoftmaxMixer(64, num_heads=4)(torch.randn(2, 10, 64)).shape
    torch.Size([2, 10, 64])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            b, n, c = x.shape
            qkv = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)  # each (B, H, N, D)
            y = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, D)
            return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, c)))  # (B, N, C)
        return self._forward_eager(x)

    @torch.jit.unused
    def _forward_eager(self, x: torch.Tensor) -> torch.Tensor:
        return SoftmaxAttention.forward(self, x)


@register_notrace_module
class CrossCovarianceAttention(nn.Module):
    """XCiT's cross-covariance attention (XCA): attention between channels. (B, N, C) -> (B, N, C).

    With q, k, v (B, H, D, N) (channels as rows) and q, k L2-normalised over the N tokens,
    ``A = softmax(tau_h * q k^T)`` is (B, H, D, D) and ``Y = A v``: O(N D^2) time, O(D^2) memory.
    ``temperature`` (H, 1, 1) starts at 1. Same constructor as :mod:`tssa.nn`'s mixers.

    >>> CrossCovarianceAttention(64, num_heads=4)(torch.randn(2, 10, 64)).shape
    torch.Size([2, 10, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        if causal:
            raise ValueError("cross-covariance attention has no causal form; use causal=False")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"temperature"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 4, 1)
        q, k, v = qkv.unbind(0)  # each (B, H, D, N)
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature  # (B, H, D, D)
        attn = self.attn_drop(attn.softmax(dim=-1))
        y = (attn @ v).permute(0, 3, 1, 2).reshape(b, n, c)  # (B, H, D, N) -> (B, N, H, D) -> (B, N, C)
        return self.proj_drop(self.proj(y))


LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)  # the reference configuration's LayerNorm

ATTN_LAYERS: dict[str, type[nn.Module]] = {
    "tssa": TSSAMixer,
    "softmax": SoftmaxMixer,
    "xca": CrossCovarianceAttention,
}


class ConvPatchEmbed(nn.Module):
    """Conv patch embedding. (B, in_chans, H, W) -> (B, C, H/p, W/p).

    ``log2(p)`` stride-2 3x3 convolutions (no bias) each followed by BatchNorm, GELU between them;
    widths ``C/2^(k-1), ..., C/2, C``. ``proj.{2i}.0`` is a conv, ``proj.{2i}.1`` its BatchNorm.

    >>> ConvPatchEmbed(16, 3, 64)(torch.randn(1, 3, 32, 48)).shape
    torch.Size([1, 64, 2, 3])
    """

    def __init__(
        self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768, act_layer=nn.GELU
    ) -> None:
        super().__init__()
        if patch_size not in (8, 16):
            raise ValueError(f"patch_size must be 8 or 16 (conv patch embedding), got {patch_size}")
        steps = int(math.log2(patch_size))
        if embed_dim % 2 ** (steps - 1):
            raise ValueError(
                f"embed_dim {embed_dim} must be divisible by {2 ** (steps - 1)} for patch {patch_size}"
            )
        chans = [in_chans] + [embed_dim // 2**k for k in range(steps - 1, -1, -1)]
        layers: list[nn.Module] = []
        for i in range(steps):
            conv = nn.Conv2d(chans[i], chans[i + 1], kernel_size=3, stride=2, padding=1, bias=False)
            layers.append(nn.Sequential(conv, nn.BatchNorm2d(chans[i + 1])))
            if i < steps - 1:
                layers.append(act_layer())
        self.patch_size = patch_size
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@register_notrace_module
class FourierPositionalEncoding(nn.Module):
    """Fourier positional encoding of a patch grid. (B, C, Hp, Wp) features -> (1, C, Hp, Wp) encoding.

    Row and column positions ``y = i / Hp * 2pi``, ``x = j / Wp * 2pi`` (i, j from 1) are divided by
    ``T^(2 floor(k/2) / K)`` for k < K = ``hidden_dim``, even k through sin, odd k through cos;
    the 2K features ``[y-features, x-features]`` go through a 1x1 conv ``token_projection`` to C.
    Only the grid size of the input is used, so any resolution works.

    >>> FourierPositionalEncoding(64)(torch.zeros(2, 64, 3, 5)).shape
    torch.Size([1, 64, 3, 5])
    """

    def __init__(self, dim: int, hidden_dim: int = 32, temperature: float = 10000.0) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.temperature = temperature
        self.token_projection = nn.Conv2d(2 * hidden_dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hp, wp = x.shape[-2], x.shape[-1]
        dev = self.token_projection.weight.device
        k = torch.arange(self.hidden_dim, dtype=torch.float32, device=dev)
        freq = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / self.hidden_dim)  # (K,)
        ys = torch.arange(1, hp + 1, dtype=torch.float32, device=dev) / (hp + 1e-6) * (2 * math.pi)
        xs = torch.arange(1, wp + 1, dtype=torch.float32, device=dev) / (wp + 1e-6) * (2 * math.pi)
        ay = ys[:, None] / freq  # (Hp, K)
        ax = xs[:, None] / freq  # (Wp, K)
        fy = torch.stack((ay[:, 0::2].sin(), ay[:, 1::2].cos()), dim=2).flatten(1)  # (Hp, K): sin, cos pairs
        fx = torch.stack((ax[:, 0::2].sin(), ax[:, 1::2].cos()), dim=2).flatten(1)  # (Wp, K)
        feats = torch.cat(
            (fy[:, None, :].expand(hp, wp, self.hidden_dim), fx[None, :, :].expand(hp, wp, self.hidden_dim)),
            dim=-1,
        )  # (Hp, Wp, 2K)
        feats = feats.permute(2, 0, 1).unsqueeze(0)  # (1, 2K, Hp, Wp)
        return self.token_projection(feats.to(self.token_projection.weight.dtype))


class ToSTBlock(nn.Module):
    """Pre-norm block with layer scale. (B, N, C) -> (B, N, C).

    ``x = x + drop_path(gamma1 * attn(norm1(x)))``; ``x = x + drop_path(gamma2 * mlp(norm2(x)))``.
    ``attn_layer`` builds the token mixer with ``(dim, num_heads, qkv_bias, attn_drop, proj_drop)``.

    >>> ToSTBlock(64, num_heads=4)(torch.randn(2, 10, 64)).shape
    torch.Size([2, 10, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer=nn.GELU,
        norm_layer=LayerNorm6,
        attn_layer=TSSAMixer,
        eta: float = 1.0,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(
            in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop
        )
        self.gamma1 = nn.Parameter(eta * torch.ones(dim))
        self.gamma2 = nn.Parameter(eta * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.gamma1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))


class ClassAttention(nn.Module):
    """CaiT class attention: only the class token (index 0) queries. (B, 1+N, C) -> (B, 1+N, C).

    ``cls' = proj(softmax(q_cls k^T / sqrt(D)) v)`` over all 1+N tokens, per head; the other
    tokens pass through unchanged. O(N) time and memory.

    >>> ClassAttention(64, num_heads=4)(torch.randn(2, 11, 64)).shape
    torch.Size([2, 11, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, 1+N, D)
        attn = (q[:, :, :1] * self.scale) @ k.transpose(-2, -1)  # (B, H, 1, 1+N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        cls = (attn @ v).transpose(1, 2).reshape(b, 1, c)  # (B, H, 1, D) -> (B, 1, C)
        cls = self.proj_drop(self.proj(cls))
        return torch.cat((cls, x[:, 1:]), dim=1)


class ClassAttentionBlock(nn.Module):
    """Class-attention block (XCiT's form). (B, 1+N, C) -> (B, 1+N, C).

    ``x = x + gamma1 * ca(norm1(x))``; then ``norm2`` on all tokens (``tokens_norm``) or on the class
    token only; then ``x = x + [gamma2 * mlp(x_cls), x_patches]`` (the official residual, which
    doubles the patch tokens; only the class token is read out).

    >>> ClassAttentionBlock(64, num_heads=4)(torch.randn(2, 11, 64)).shape
    torch.Size([2, 11, 64])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        act_layer=nn.GELU,
        norm_layer=LayerNorm6,
        eta: float = 1.0,
        tokens_norm: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = ClassAttention(
            dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop
        )
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(
            in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop
        )
        self.gamma1 = nn.Parameter(eta * torch.ones(dim))
        self.gamma2 = nn.Parameter(eta * torch.ones(dim))
        self.tokens_norm = tokens_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma1 * self.attn(self.norm1(x))
        if self.tokens_norm:
            x = self.norm2(x)
        else:
            x = torch.cat((self.norm2(x[:, :1]), x[:, 1:]), dim=1)
        # the official residual form: x + [gamma2 * mlp(cls), patch tokens], so the patch tokens are
        # doubled; only the class token is read out, and the next LayerNorm is blind to the scale
        return x + torch.cat((self.gamma2 * self.mlp(x[:, :1]), x[:, 1:]), dim=1)


def _build_context(device):
    return torch.device(device) if device is not None else nullcontext()


class ToST(nn.Module):
    """Token Statistics Transformer for images (XCiT backbone, swappable token mixer).

    (B, in_chans, H, W) -> logits (B, num_classes); H and W divisible by ``patch_size``.
    ``attn_layer`` is ``"tssa"`` (ToST), ``"softmax"`` or ``"xca"`` (the paper's controls), or a class
    with the :mod:`tssa.nn` constructor. ``eta`` is the layer-scale init (1.0 at depth 12, 1e-5 at 24).

    Dropout follows timm 1.x: ``drop_rate`` is dropout before the classifier (the official model has
    none), ``pos_drop_rate`` after the positional encoding, ``proj_drop_rate`` after every mixer's
    output projection and in every MLP (class-attention blocks included), ``attn_drop_rate`` inside
    the mixers, ``drop_path_rate`` the same in every token-mixing block (none in the class-attention
    blocks). The official ``--drop P`` is ``pos_drop_rate=P, proj_drop_rate=P`` (``drop_rate=0``);
    ``--drop-path Q`` is ``drop_path_rate=Q`` (placements compared in ``tests/test_timm.py``).

    >>> model = ToST(embed_dim=64, depth=2, num_heads=4, num_classes=10)
    >>> model(torch.randn(2, 3, 64, 96)).shape
    torch.Size([2, 10])
    >>> model.forward_features(torch.randn(2, 3, 64, 96)).shape   # NHWC patch tokens
    torch.Size([2, 4, 6, 64])
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer=None,
        norm_layer=None,
        cls_attn_layers: int = 2,
        use_pos_embed: bool = True,
        eta: float = 1.0,
        tokens_norm: bool = True,
        attn_layer: str | type[nn.Module] = "tssa",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        img_size = to_2tuple(img_size)
        if any(s % patch_size for s in img_size):
            raise ValueError(
                f"img_size {img_size} must be divisible by patch_size {patch_size}; "
                f"use a multiple of {patch_size} such as {patch_size * max(1, round(img_size[0] / patch_size))}"
            )
        if global_pool not in ("", "avg", "token"):
            raise ValueError(f"global_pool must be one of 'token', 'avg' or '', got {global_pool!r}")
        if isinstance(attn_layer, str):
            if attn_layer not in ATTN_LAYERS:
                raise ValueError(f"unknown attn_layer {attn_layer!r}; choose one of {sorted(ATTN_LAYERS)}")
            attn_layer = ATTN_LAYERS[attn_layer]
        norm_layer = norm_layer or LayerNorm6
        act_layer = act_layer or nn.GELU

        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.output_fmt = "NHWC"
        self.grad_checkpointing = False

        with _build_context(device):
            self.patch_embed = ConvPatchEmbed(patch_size, in_chans, embed_dim, act_layer=act_layer)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embeder = FourierPositionalEncoding(embed_dim) if use_pos_embed else None
            self.pos_drop = nn.Dropout(p=pos_drop_rate)
            block = partial(
                ToSTBlock,
                embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=drop_path_rate,
                act_layer=act_layer,
                norm_layer=norm_layer,
                attn_layer=attn_layer,
                eta=eta,
            )
            self.blocks = nn.ModuleList([block() for _ in range(depth)])
            self.cls_attn_blocks = nn.ModuleList(
                [
                    ClassAttentionBlock(
                        embed_dim,
                        num_heads,
                        mlp_ratio=mlp_ratio,
                        qkv_bias=qkv_bias,
                        proj_drop=proj_drop_rate,
                        attn_drop=attn_drop_rate,
                        act_layer=act_layer,
                        norm_layer=norm_layer,
                        eta=eta,
                        tokens_norm=tokens_norm,
                    )
                    for _ in range(cls_attn_layers)
                ]
            )
            self.norm = norm_layer(embed_dim)
            self.head_drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
            trunc_normal_(self.cls_token, std=0.02)
            self.apply(self._init_weights)
        if dtype is not None:
            self.to(dtype=dtype)
        self.feature_info = [
            dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)
        ]

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names exempt from weight decay besides 1-D parameters and biases: the class token only.

        This reproduces the official vision recipe: ``main.py`` calls timm 0.4's
        ``create_optimizer(args, model)``, which exempts 1-D parameters, names ending in ``.bias`` and
        the names of the top-level ``no_weight_decay()`` (``pos_embed``, ``cls_token``, ``dist_token``;
        only ``cls_token`` exists), and never consults the mixers' own lists, so the temperatures
        ``temp`` (H, 1) and XCA's ``temperature`` (H, 1, 1) are decayed. timm's
        ``create_optimizer_v2`` with this list decays the same set (compared name by name in
        ``tests/test_timm.py``).
        """
        return {"cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^cls_token|pos_embeder|patch_embed",
            blocks=r"^blocks\.(\d+)",
            cls_attn_blocks=[(r"^cls_attn_blocks\.(\d+)", None), (r"^norm", (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with ``num_classes`` outputs (0: none); ``global_pool`` None keeps it."""
        if global_pool is not None:
            if global_pool not in ("", "avg", "token"):
                raise ValueError(f"global_pool must be one of 'token', 'avg' or '', got {global_pool!r}")
            if global_pool == "token" and self.cls_token is None:
                raise ValueError("global_pool='token' needs the class-attention head, which was pruned")
            self.global_pool = global_pool
        self.num_classes = num_classes
        ref = next(self.parameters())
        if num_classes > 0:
            self.head = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
        else:
            self.head = nn.Identity()
        self.head.train(self.training)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, C, Hp, Wp)
        if self.pos_embeder is not None:
            x = x + self.pos_embeder(x)
        return x

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Outputs of the token-mixing blocks. Returns ``(forward_features(x), [maps])`` or ``[maps]``.

        ``indices``: last n blocks if an int, all if None, else those indices. Maps are (B, C, Hp, Wp)
        for ``output_fmt="NCHW"``, (B, Hp, Wp, C) for "NHWC", (B, N, C) for "NLC"; ``norm`` applies
        the final LayerNorm to them.
        """
        if output_fmt not in ("NCHW", "NHWC", "NLC"):
            raise ValueError(f"output_fmt must be one of NCHW, NHWC or NLC, got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x = self._embed(x)
        b, c, hp, wp = x.shape
        x = self.pos_drop(x.flatten(2).transpose(1, 2))  # (B, N, C)
        blocks = self.blocks if not stop_early else self.blocks[: max_index + 1]
        intermediates = []
        for i, blk in enumerate(blocks):
            x = checkpoint(blk, x) if self.grad_checkpointing else blk(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        if output_fmt == "NCHW":
            intermediates = [y.transpose(1, 2).reshape(b, c, hp, wp) for y in intermediates]  # (B, C, Hp, Wp)
        elif output_fmt == "NHWC":
            intermediates = [y.reshape(b, hp, wp, c) for y in intermediates]  # (B, Hp, Wp, C)
        if intermediates_only:
            return intermediates
        return x.reshape(b, hp, wp, c), intermediates  # (B, Hp, Wp, C)

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last wanted index (and the class-attention head, norm if asked)."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.cls_attn_blocks = nn.ModuleList()
            self.cls_token = None
            self.num_prefix_tokens = 0
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> patch tokens after the last token-mixing block, NHWC (B, H/p, W/p, C)."""
        x = self._embed(x)
        b, c, hp, wp = x.shape
        x = self.pos_drop(x.flatten(2).transpose(1, 2))  # (B, N, C)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x)
            else:
                x = blk(x)
        return x.reshape(b, hp, wp, c)  # (B, Hp, Wp, C)

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) patch tokens -> (B, 1+N, C): class token prepended, class-attention blocks applied."""
        cls_token = self.cls_token
        assert cls_token is not None
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.cls_attn_blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x)
            else:
                x = blk(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """NHWC patch tokens (B, Hp, Wp, C) -> logits (B, classes), or (B, C) with ``pre_logits``.

        ``global_pool="token"``: class attention, norm, class token; ``"avg"``: norm, mean over the
        patch tokens; ``""``: the map passes through (the classifier acts on its channels).
        """
        if self.global_pool == "token":
            x = self.norm(self.forward_cls(x.flatten(1, 2)))[:, 0]  # (B, C)
        elif self.global_pool == "avg":
            x = self.norm(x.flatten(1, 2)).mean(dim=1)  # (B, C)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_ALIASES = (("pos_embed.", "pos_embeder."),)


def checkpoint_filter_fn(state_dict: dict, model: ToST) -> dict:
    """Map an official ToST (or XCiT-style) state dict onto :class:`ToST`'s names and shapes.

    Unwraps ``{"model": ...}`` / ``{"state_dict": ...}`` (``model``, the weights the official ``--eval``
    reads, before ``model_ema``; timm's own loaders unwrap first and prefer ``model_ema`` unless given
    ``use_ema=False``), strips a ``module.`` prefix (DDP), renames
    timm-XCiT's ``pos_embed.`` to the official ``pos_embeder.``, reshapes temperatures saved as (H,)
    or (H, 1, 1) to the model's shape, and drops a distillation token/head the model does not have.
    """
    for key in ("model", "state_dict", "model_ema"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
            break
    target = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        k = k[len("module.") :] if k.startswith("module.") else k
        for old, new in _ALIASES:
            if k.startswith(old):
                k = new + k[len(old) :]
        if k.startswith(("dist_token", "head_dist.")) and k not in target:
            continue
        is_temperature = k.endswith(("attn.temp", "attn.temperature"))
        if is_temperature and k in target and v.shape != target[k].shape and v.numel() == target[k].numel():
            v = v.reshape(target[k].shape)  # (H,) / (H, 1) / (H, 1, 1) layouts of the same values
        out[k] = v
    return out


def _create_tost(variant: str, pretrained: bool = False, **kwargs) -> ToST:
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        ToST,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs,
    )


def _cfg(patch_size: int, **kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (224 // patch_size, 224 // patch_size),
        "crop_pct": 1.0,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj.0.0",
        "classifier": "head",
        "license": "mit",
        "paper_ids": "arXiv:2412.17810",
        **kwargs,
    }


# Reference configurations (shared/TSSA.md): embed dim and heads per size.
SIZES = {"tiny": (192, 4), "small": (384, 8), "medium": (512, 8), "large": (768, 16)}
DEPTHS = (12, 24)
PATCHES = (16, 8)
MIXERS = {"": "tssa", "softmax_": "softmax", "xca_": "xca"}


def model_args(name: str) -> dict:
    """Constructor arguments a registered name stands for, read from the name, e.g.
    ``tost_xca_small_24_p8_224``; the tests check that every registered function passes exactly these."""
    parts = name.split("_")
    if parts[0] != "tost" or len(parts) not in (5, 6) or parts[-1] != "224":
        raise ValueError(
            f"not a ToST model name: {name!r} (expected tost[_softmax|_xca]_<size>_<depth>_p<patch>_224)"
        )
    mixer = parts[1] + "_" if len(parts) == 6 else ""
    size, depth, patch = parts[-4], int(parts[-3]), int(parts[-2][1:])
    if mixer not in MIXERS or size not in SIZES or depth not in DEPTHS or patch not in PATCHES:
        raise ValueError(f"not a ToST model name: {name!r}")
    dim, heads = SIZES[size]
    return dict(
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=heads,
        eta=1.0 if depth == 12 else 1e-5,
        attn_layer=MIXERS[mixer],
    )


MODEL_NAMES = [
    f"tost_{mixer}{size}_{depth}_p{patch}_224"
    for mixer in MIXERS
    for size in SIZES
    for depth in DEPTHS
    for patch in PATCHES
]

default_cfgs = generate_default_cfgs({name: _cfg(model_args(name)["patch_size"]) for name in MODEL_NAMES})


# One entrypoint per name (timm's convention): each only sets the constructor arguments.


@register_model
def tost_tiny_12_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), tiny: embed 192, 4 heads, depth 12, patch 16. ToST-T of the paper."""
    args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=4, eta=1.0, attn_layer="tssa")
    return _create_tost("tost_tiny_12_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_tiny_12_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), tiny: embed 192, 4 heads, depth 12, patch 8."""
    args = dict(patch_size=8, embed_dim=192, depth=12, num_heads=4, eta=1.0, attn_layer="tssa")
    return _create_tost("tost_tiny_12_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_tiny_24_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), tiny: embed 192, 4 heads, depth 24, patch 16."""
    args = dict(patch_size=16, embed_dim=192, depth=24, num_heads=4, eta=1e-5, attn_layer="tssa")
    return _create_tost("tost_tiny_24_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_tiny_24_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), tiny: embed 192, 4 heads, depth 24, patch 8."""
    args = dict(patch_size=8, embed_dim=192, depth=24, num_heads=4, eta=1e-5, attn_layer="tssa")
    return _create_tost("tost_tiny_24_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_small_12_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), small: embed 384, 8 heads, depth 12, patch 16. ToST-S of the paper."""
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=8, eta=1.0, attn_layer="tssa")
    return _create_tost("tost_small_12_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_small_12_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), small: embed 384, 8 heads, depth 12, patch 8."""
    args = dict(patch_size=8, embed_dim=384, depth=12, num_heads=8, eta=1.0, attn_layer="tssa")
    return _create_tost("tost_small_12_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_small_24_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), small: embed 384, 8 heads, depth 24, patch 16."""
    args = dict(patch_size=16, embed_dim=384, depth=24, num_heads=8, eta=1e-5, attn_layer="tssa")
    return _create_tost("tost_small_24_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_small_24_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), small: embed 384, 8 heads, depth 24, patch 8."""
    args = dict(patch_size=8, embed_dim=384, depth=24, num_heads=8, eta=1e-5, attn_layer="tssa")
    return _create_tost("tost_small_24_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_medium_12_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), medium: embed 512, 8 heads, depth 12, patch 16."""
    args = dict(patch_size=16, embed_dim=512, depth=12, num_heads=8, eta=1.0, attn_layer="tssa")
    return _create_tost("tost_medium_12_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_medium_12_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), medium: embed 512, 8 heads, depth 12, patch 8."""
    args = dict(patch_size=8, embed_dim=512, depth=12, num_heads=8, eta=1.0, attn_layer="tssa")
    return _create_tost("tost_medium_12_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_medium_24_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), medium: embed 512, 8 heads, depth 24, patch 16. ToST-M of the paper."""
    args = dict(patch_size=16, embed_dim=512, depth=24, num_heads=8, eta=1e-5, attn_layer="tssa")
    return _create_tost("tost_medium_24_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_medium_24_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), medium: embed 512, 8 heads, depth 24, patch 8."""
    args = dict(patch_size=8, embed_dim=512, depth=24, num_heads=8, eta=1e-5, attn_layer="tssa")
    return _create_tost("tost_medium_24_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_large_12_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), large: embed 768, 16 heads, depth 12, patch 16."""
    args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=16, eta=1.0, attn_layer="tssa")
    return _create_tost("tost_large_12_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_large_12_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), large: embed 768, 16 heads, depth 12, patch 8."""
    args = dict(patch_size=8, embed_dim=768, depth=12, num_heads=16, eta=1.0, attn_layer="tssa")
    return _create_tost("tost_large_12_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_large_24_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), large: embed 768, 16 heads, depth 24, patch 16."""
    args = dict(patch_size=16, embed_dim=768, depth=24, num_heads=16, eta=1e-5, attn_layer="tssa")
    return _create_tost("tost_large_24_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_large_24_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """ToST (TSSA), large: embed 768, 16 heads, depth 24, patch 8."""
    args = dict(patch_size=8, embed_dim=768, depth=24, num_heads=16, eta=1e-5, attn_layer="tssa")
    return _create_tost("tost_large_24_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_tiny_12_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, tiny: embed 192, 4 heads, depth 12, patch 16."""
    args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=4, eta=1.0, attn_layer="softmax")
    return _create_tost("tost_softmax_tiny_12_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_tiny_12_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, tiny: embed 192, 4 heads, depth 12, patch 8."""
    args = dict(patch_size=8, embed_dim=192, depth=12, num_heads=4, eta=1.0, attn_layer="softmax")
    return _create_tost("tost_softmax_tiny_12_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_tiny_24_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, tiny: embed 192, 4 heads, depth 24, patch 16."""
    args = dict(patch_size=16, embed_dim=192, depth=24, num_heads=4, eta=1e-5, attn_layer="softmax")
    return _create_tost("tost_softmax_tiny_24_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_tiny_24_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, tiny: embed 192, 4 heads, depth 24, patch 8."""
    args = dict(patch_size=8, embed_dim=192, depth=24, num_heads=4, eta=1e-5, attn_layer="softmax")
    return _create_tost("tost_softmax_tiny_24_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_small_12_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, small: embed 384, 8 heads, depth 12, patch 16."""
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=8, eta=1.0, attn_layer="softmax")
    return _create_tost("tost_softmax_small_12_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_small_12_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, small: embed 384, 8 heads, depth 12, patch 8."""
    args = dict(patch_size=8, embed_dim=384, depth=12, num_heads=8, eta=1.0, attn_layer="softmax")
    return _create_tost("tost_softmax_small_12_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_small_24_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, small: embed 384, 8 heads, depth 24, patch 16."""
    args = dict(patch_size=16, embed_dim=384, depth=24, num_heads=8, eta=1e-5, attn_layer="softmax")
    return _create_tost("tost_softmax_small_24_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_small_24_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, small: embed 384, 8 heads, depth 24, patch 8."""
    args = dict(patch_size=8, embed_dim=384, depth=24, num_heads=8, eta=1e-5, attn_layer="softmax")
    return _create_tost("tost_softmax_small_24_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_medium_12_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, medium: embed 512, 8 heads, depth 12, patch 16."""
    args = dict(patch_size=16, embed_dim=512, depth=12, num_heads=8, eta=1.0, attn_layer="softmax")
    return _create_tost("tost_softmax_medium_12_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_medium_12_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, medium: embed 512, 8 heads, depth 12, patch 8."""
    args = dict(patch_size=8, embed_dim=512, depth=12, num_heads=8, eta=1.0, attn_layer="softmax")
    return _create_tost("tost_softmax_medium_12_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_medium_24_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, medium: embed 512, 8 heads, depth 24, patch 16."""
    args = dict(patch_size=16, embed_dim=512, depth=24, num_heads=8, eta=1e-5, attn_layer="softmax")
    return _create_tost("tost_softmax_medium_24_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_medium_24_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, medium: embed 512, 8 heads, depth 24, patch 8."""
    args = dict(patch_size=8, embed_dim=512, depth=24, num_heads=8, eta=1e-5, attn_layer="softmax")
    return _create_tost("tost_softmax_medium_24_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_large_12_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, large: embed 768, 16 heads, depth 12, patch 16."""
    args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=16, eta=1.0, attn_layer="softmax")
    return _create_tost("tost_softmax_large_12_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_large_12_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, large: embed 768, 16 heads, depth 12, patch 8."""
    args = dict(patch_size=8, embed_dim=768, depth=12, num_heads=16, eta=1.0, attn_layer="softmax")
    return _create_tost("tost_softmax_large_12_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_large_24_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, large: embed 768, 16 heads, depth 24, patch 16."""
    args = dict(patch_size=16, embed_dim=768, depth=24, num_heads=16, eta=1e-5, attn_layer="softmax")
    return _create_tost("tost_softmax_large_24_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_softmax_large_24_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """softmax-attention control, large: embed 768, 16 heads, depth 24, patch 8."""
    args = dict(patch_size=8, embed_dim=768, depth=24, num_heads=16, eta=1e-5, attn_layer="softmax")
    return _create_tost("tost_softmax_large_24_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_tiny_12_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, tiny: embed 192, 4 heads, depth 12, patch 16."""
    args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=4, eta=1.0, attn_layer="xca")
    return _create_tost("tost_xca_tiny_12_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_tiny_12_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, tiny: embed 192, 4 heads, depth 12, patch 8."""
    args = dict(patch_size=8, embed_dim=192, depth=12, num_heads=4, eta=1.0, attn_layer="xca")
    return _create_tost("tost_xca_tiny_12_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_tiny_24_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, tiny: embed 192, 4 heads, depth 24, patch 16."""
    args = dict(patch_size=16, embed_dim=192, depth=24, num_heads=4, eta=1e-5, attn_layer="xca")
    return _create_tost("tost_xca_tiny_24_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_tiny_24_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, tiny: embed 192, 4 heads, depth 24, patch 8."""
    args = dict(patch_size=8, embed_dim=192, depth=24, num_heads=4, eta=1e-5, attn_layer="xca")
    return _create_tost("tost_xca_tiny_24_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_small_12_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, small: embed 384, 8 heads, depth 12, patch 16."""
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=8, eta=1.0, attn_layer="xca")
    return _create_tost("tost_xca_small_12_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_small_12_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, small: embed 384, 8 heads, depth 12, patch 8."""
    args = dict(patch_size=8, embed_dim=384, depth=12, num_heads=8, eta=1.0, attn_layer="xca")
    return _create_tost("tost_xca_small_12_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_small_24_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, small: embed 384, 8 heads, depth 24, patch 16."""
    args = dict(patch_size=16, embed_dim=384, depth=24, num_heads=8, eta=1e-5, attn_layer="xca")
    return _create_tost("tost_xca_small_24_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_small_24_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, small: embed 384, 8 heads, depth 24, patch 8."""
    args = dict(patch_size=8, embed_dim=384, depth=24, num_heads=8, eta=1e-5, attn_layer="xca")
    return _create_tost("tost_xca_small_24_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_medium_12_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, medium: embed 512, 8 heads, depth 12, patch 16."""
    args = dict(patch_size=16, embed_dim=512, depth=12, num_heads=8, eta=1.0, attn_layer="xca")
    return _create_tost("tost_xca_medium_12_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_medium_12_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, medium: embed 512, 8 heads, depth 12, patch 8."""
    args = dict(patch_size=8, embed_dim=512, depth=12, num_heads=8, eta=1.0, attn_layer="xca")
    return _create_tost("tost_xca_medium_12_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_medium_24_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, medium: embed 512, 8 heads, depth 24, patch 16."""
    args = dict(patch_size=16, embed_dim=512, depth=24, num_heads=8, eta=1e-5, attn_layer="xca")
    return _create_tost("tost_xca_medium_24_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_medium_24_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, medium: embed 512, 8 heads, depth 24, patch 8."""
    args = dict(patch_size=8, embed_dim=512, depth=24, num_heads=8, eta=1e-5, attn_layer="xca")
    return _create_tost("tost_xca_medium_24_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_large_12_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, large: embed 768, 16 heads, depth 12, patch 16."""
    args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=16, eta=1.0, attn_layer="xca")
    return _create_tost("tost_xca_large_12_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_large_12_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, large: embed 768, 16 heads, depth 12, patch 8."""
    args = dict(patch_size=8, embed_dim=768, depth=12, num_heads=16, eta=1.0, attn_layer="xca")
    return _create_tost("tost_xca_large_12_p8_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_large_24_p16_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, large: embed 768, 16 heads, depth 24, patch 16."""
    args = dict(patch_size=16, embed_dim=768, depth=24, num_heads=16, eta=1e-5, attn_layer="xca")
    return _create_tost("tost_xca_large_24_p16_224", pretrained=pretrained, **dict(args, **kwargs))


@register_model
def tost_xca_large_24_p8_224(pretrained: bool = False, **kwargs) -> ToST:
    """XCA control, large: embed 768, 16 heads, depth 24, patch 8."""
    args = dict(patch_size=8, embed_dim=768, depth=24, num_heads=16, eta=1e-5, attn_layer="xca")
    return _create_tost("tost_xca_large_24_p8_224", pretrained=pretrained, **dict(args, **kwargs))
