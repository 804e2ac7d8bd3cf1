"""ToST image classifiers registered with timm: ``import tssa.timm`` then ``timm.create_model``.

Importing this package registers 48 names with timm's registry (``@register_model``):
``tost_{tiny,small,medium,large}_{12,24}_p{16,8}_224`` (TSSA, Wu et al., ICLR 2025) and the
paper's controls on the same backbone, ``tost_softmax_*`` (softmax attention) and ``tost_xca_*``
(XCiT's cross-covariance attention). ``import tssa`` alone does not import timm.

>>> import timm, torch, tssa.timm
>>> model = timm.create_model("tost_tiny_12_p16_224", num_classes=10)
>>> model(torch.randn(1, 3, 64, 64)).shape
torch.Size([1, 10])
"""

from __future__ import annotations

from .tost import (
    ATTN_LAYERS,
    MODEL_NAMES,
    ClassAttention,
    ClassAttentionBlock,
    ConvPatchEmbed,
    CrossCovarianceAttention,
    FourierPositionalEncoding,
    SoftmaxMixer,
    ToST,
    ToSTBlock,
    TSSAMixer,
    checkpoint_filter_fn,
    model_args,
)

__all__ = [
    "ToST",
    "ToSTBlock",
    "ClassAttention",
    "ClassAttentionBlock",
    "ConvPatchEmbed",
    "CrossCovarianceAttention",
    "FourierPositionalEncoding",
    "TSSAMixer",
    "SoftmaxMixer",
    "ATTN_LAYERS",
    "MODEL_NAMES",
    "checkpoint_filter_fn",
    "model_args",
]
