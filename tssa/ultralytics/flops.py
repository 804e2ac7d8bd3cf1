"""FLOPs of a detector at its true input size, counted op by op (right for attention).

Ultralytics' ``model.info()`` GFLOPs come from thop: module hooks on a small proxy image,
extrapolated to the requested size. thop sees only modules (Conv, Linear, BN), not functional
matrix products such as softmax attention's ``q @ k``, and the extrapolation assumes a cost linear
in the number of pixels; attention is quadratic in the number of tokens. Here every matrix
product, convolution and linear layer is counted at the real input (e.g. 640x640) with
``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs per multiply-add, so the ``N x N`` products
of softmax attention count in full at N tokens, and TSSA's statistics (``einsum`` over tokens) count
as the matrix products they are.

Not counted (FlopCounterMode skips them by design): elementwise ops (activations, BatchNorm in
unfused models, residual adds, TSSA's normalisation, squares and gate), softmax, pooling,
upsampling and concatenation. They are a few FLOPs per element, small next to the convolutions.

>>> import torch
>>> count_flops(torch.nn.Conv2d(3, 8, 3, padding=1), torch.zeros(1, 3, 16, 16))
110592
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_flops", "detector_gflops", "params"]


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one ``module(*inputs)`` call (2 per multiply-add), under ``no_grad``.

    ``torch.inference_mode`` would hide the ops from the counter, so ``no_grad`` is used.
    """
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def detector_gflops(model: nn.Module, imgsz: int = 640) -> float:
    """GFLOPs of one forward of a detector on a (1, 3, imgsz, imgsz) image, counted at that size.

    The model is put in eval mode for the count and restored afterwards.
    """
    if not isinstance(imgsz, int) or imgsz < 32 or imgsz % 32:
        raise ValueError(f"imgsz must be a positive multiple of 32, got {imgsz!r}")
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        flops = count_flops(model, torch.zeros(1, 3, imgsz, imgsz, dtype=p.dtype, device=p.device))
    finally:
        model.train(was_training)
    return flops / 1e9


def params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())
