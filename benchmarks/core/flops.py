"""Counting arithmetic three ways: fvcore (MACs), ``torch.utils.flop_counter`` (FLOPs), a formula.

Neither counter sees all of attention by default: fvcore counts a multiply-add as one and skips
elementwise ops, softmax and ``scaled_dot_product_attention``; ``FlopCounterMode`` counts 2 per
multiply-add, ignores elementwise ops and has no formula for the CPU SDPA kernel. Both get the
same conventions here, so every number is comparable:

- matrix products: ``m*n*k`` MACs = ``2*m*n*k`` FLOPs;
- elementwise ops (add, mul, div, pow, exp, clamp, reciprocal, activations, ...): 1 per output element;
- reductions (sum, mean, max pooling): 1 per input element; an L2 norm: 2 per input element;
- softmax: 5 per element (max, subtract, exp, sum, divide); its backward: 4 per element;
- SDPA over (B, H, N, D) queries and M keys: forward ``2*B*H*N*M*D`` MACs (QK^T, PV) plus
  ``6*B*H*N*M`` elementwise (scale, softmax); backward the four products of the materialised
  backward (``4*B*H*N*M*D`` MACs) plus ``5*B*H*N*M`` elementwise (scale and softmax backward),
  i.e. exactly what the materialised attention counts; kernel recomputation is not counted.

fvcore totals are MACs only (matrix products, convolutions, linear layers and the two products of
SDPA; elementwise ops are registered as free so that they are neither counted nor reported as
unsupported); ``FlopCounterMode`` totals are FLOPs = 2 x MACs + elementwise. The analytic formulas
of :func:`analytic_counts` return MACs and elementwise work separately.

>>> counts = analytic_counts("sdpa", batch=1, tokens=4, dim=8, heads=2)
>>> counts["macs"], counts["elementwise"]
(256, 192)
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

SOFTMAX_FWD = 5
SOFTMAX_BWD = 4
NORM_PER_ELEMENT = 2

_ELEMENTWISE = (
    "add", "sub", "rsub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "rsqrt", "reciprocal", "sin", "cos",
    "clamp", "clamp_min", "clamp_max", "abs", "sigmoid", "tanh", "relu", "gelu", "silu", "hardswish",
    "leaky_relu", "addcmul", "addcdiv", "maximum", "minimum", "gelu_backward", "silu_backward",
    "sigmoid_backward", "threshold_backward", "tanh_backward",
)  # fmt: skip
_REDUCTIONS = ("sum", "mean")  # also max pooling: one comparison per input element


def _numel(shape) -> int:
    return math.prod(shape) if shape is not None else 0


# --------------------------------------------------------------------------- FlopCounterMode mappings
def _elementwise_fc(*args, out_shape=None, **kwargs) -> int:
    return _numel(out_shape)


def _inplace_fc(*args, out_shape=None, **kwargs) -> int:
    return _numel(out_shape)


def _reduction_fc(inp, *args, out_shape=None, **kwargs) -> int:
    return _numel(inp)


def _norm_fc(inp, *args, out_shape=None, **kwargs) -> int:
    return NORM_PER_ELEMENT * _numel(inp)


def _softmax_fc(inp, *args, out_shape=None, **kwargs) -> int:
    return SOFTMAX_FWD * _numel(out_shape)


def _softmax_bwd_fc(grad, *args, out_shape=None, **kwargs) -> int:
    return SOFTMAX_BWD * _numel(out_shape)


def _sdpa_dims(q, k, v) -> tuple[int, int, int, int]:
    lead = _numel(q[:-2])
    return lead, q[-2], k[-2], q[-1] + v[-1]


def sdpa_counts(q, k, v, backward: bool = False) -> tuple[int, int]:
    """(MACs, elementwise) of attention with query/key/value shapes ``q, k, v`` (..., N|M, D)."""
    lead, n, m, dd = _sdpa_dims(q, k, v)
    if backward:
        return 2 * lead * n * m * dd, (1 + SOFTMAX_BWD) * lead * n * m
    return lead * n * m * dd, (1 + SOFTMAX_FWD) * lead * n * m


def _sdpa_fwd_fc(q, k, v, *args, out_shape=None, **kwargs) -> int:
    macs, elem = sdpa_counts(q, k, v)
    return 2 * macs + elem


def _sdpa_bwd_fc(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
    macs, elem = sdpa_counts(q, k, v, backward=True)
    return 2 * macs + elem


def _tssa_fused_fc(w_tm, *args, out_shape=None, backward: bool = False, **kwargs) -> int:
    """The compiled TSSA core (``tssa_cpu`` ops) counted through the reference's equations
    (:func:`analytic_counts`; its backward as twice the forward, the convention of every fwd+bwd row)."""
    b, n, h, d = w_tm  # FlopCounterMode hands shapes
    f = analytic_counts("tssa", batch=b, tokens=n, dim=h * d, heads=h)["flops"]
    return 2 * f if backward else f


def _tssa_fused_bwd_fc(grad_tm, w_tm, *args, out_shape=None, **kwargs) -> int:
    return _tssa_fused_fc(w_tm, backward=True)


def flop_counter_mapping() -> dict[Any, Any]:
    """``custom_mapping`` for ``FlopCounterMode`` implementing the module's conventions."""
    mapping: dict[Any, Any] = {}
    try:  # the compiled TSSA core (tssa.ops.fused_cpu), where its extension builds
        from tssa.ops.fused_cpu import available

        if available()[0]:
            mapping[torch.ops.tssa_cpu.fwd] = _tssa_fused_fc
            mapping[torch.ops.tssa_cpu.bwd] = _tssa_fused_bwd_fc
            mapping[torch.ops.tssa_cpu.bwd_over_w] = _tssa_fused_bwd_fc  # the same backward, dW over w
    except ImportError:  # pragma: no cover - an older tssa
        pass
    for name in _ELEMENTWISE:
        for n in (name, name + "_"):
            if hasattr(aten, n):
                mapping[getattr(aten, n)] = _elementwise_fc
    for name in _REDUCTIONS:
        mapping[getattr(aten, name)] = _reduction_fc
    mapping[aten.max_pool2d_with_indices] = _reduction_fc
    mapping[aten.linalg_vector_norm] = _norm_fc
    mapping[aten._softmax] = _softmax_fc
    mapping[aten._softmax_backward_data] = _softmax_bwd_fc
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    ):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = _sdpa_fwd_fc
        if hasattr(aten, name + "_backward"):
            mapping[getattr(aten, name + "_backward")] = _sdpa_bwd_fc
    return mapping


def count_flops_torch(fn, *args) -> int:
    """FLOPs of ``fn(*args)`` (forward and whatever backward it runs) under ``FlopCounterMode``.

    Runs under ``no_grad``-free autograd mode as given; never call it under ``inference_mode``
    (``FlopCounterMode`` then counts nothing).
    """
    if torch.is_inference_mode_enabled():
        raise ValueError(
            "count_flops_torch: FlopCounterMode counts 0 under torch.inference_mode; use no_grad"
        )
    mode = FlopCounterMode(display=False, custom_mapping=flop_counter_mapping())
    with mode:
        fn(*args)
    return int(mode.get_total_flops())


# --------------------------------------------------------------------------- fvcore handles
def _shape(v):
    from fvcore.nn.jit_handles import get_shape

    return get_shape(v)


def _fv_matmul(inputs, outputs) -> int:
    return (
        _numel(_shape(outputs[0])) * _shape(inputs[0])[-1]
    )  # each output is a dot product of length K  # every output element is a dot product of length K


def _fv_sdpa(inputs, outputs) -> int:
    macs, _ = sdpa_counts(_shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2]))
    return macs


def fvcore_handles() -> dict[str, Any]:
    """Extra fvcore op handles: MACs of the products fvcore misses (``matmul`` of any rank, SDPA);
    elementwise ops, reductions, norms and softmax are registered as free (``None``): MACs only."""
    handles: dict[str, Any] = {}
    for name in _ELEMENTWISE:
        handles[f"aten::{name}"] = None
        handles[f"aten::{name}_"] = None
    for name in (*_REDUCTIONS, "max_pool2d", "linalg_vector_norm", "norm", "softmax"):
        handles[f"aten::{name}"] = None
    handles["aten::matmul"] = _fv_matmul
    handles["aten::scaled_dot_product_attention"] = _fv_sdpa
    for free in ("aten::expand_as", "aten::expand", "aten::zeros_like", "aten::ones_like", "aten::where"):
        handles[free] = None  # no arithmetic
    return handles


class _Wrap(torch.nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def count_macs_fvcore(fn_or_module, *args) -> tuple[int, dict[str, int]]:
    """fvcore's count of ``fn(*args)`` forward with the extra handles: (MACs, unsupported op counts).

    fvcore traces the forward only; ops it still cannot count are returned so a row can say so.
    """
    from fvcore.nn import FlopCountAnalysis

    module = fn_or_module if isinstance(fn_or_module, torch.nn.Module) else _Wrap(fn_or_module)
    fa = FlopCountAnalysis(module, args if len(args) != 1 else args[0])
    fa.set_op_handle(**fvcore_handles())
    fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    total = int(fa.total())
    return total, dict(Counter(fa.unsupported_ops()))


# --------------------------------------------------------------------------- analytic formulas
def analytic_counts(variant: str, *, batch: int, tokens: int, dim: int, heads: int) -> dict[str, int]:
    """Forward (MACs, elementwise FLOPs) of one operator at (B, N, C, H), D = C / H.

    - ``floor``: ``x (B, N, C) -> Linear(C, C) -> Linear(C, C)``, no bias: ``2*B*N*C^2`` MACs.
    - ``softmax`` / ``sdpa``: ``softmax(Q K^T * D^-1/2) V``: ``2*B*H*N^2*D`` MACs, ``6*B*H*N^2`` elementwise.
    - ``tssa[:impl]``: the six steps of the reference on E = B*H*N*D elements (T = B*H*N, S = B*H*D):
      column norms 2E, clamp S, divide E, square E, sum over d E, temperature T, softmax over heads 5T,
      membership total T, eps B*H, normalise T, W^2 E, weighted moment E MACs, gate 1+m, 1/x, 1.0*x 3S,
      negate T, two products 2E: ``E`` MACs and ``8E + 9T + 4S + B*H`` elementwise.

    ``flops = 2*macs + elementwise``; fvcore's total is ``macs``.
    """
    b, n, c, h = batch, tokens, dim, heads
    if c % h:
        raise ValueError(f"dim {c} must be divisible by heads {h}")
    d = c // h
    base = variant.split(":", 1)[0]
    if base == "floor":
        macs, elem = 2 * b * n * c * c, 0
    elif base in ("softmax", "sdpa"):
        macs, elem = sdpa_counts((b, h, n, d), (b, h, n, d), (b, h, n, d))
    elif base == "tssa":
        e, t, s = b * h * n * d, b * h * n, b * h * d
        macs, elem = e, 8 * e + 9 * t + 4 * s + b * h
    else:
        raise ValueError(
            f"no analytic formula for variant {variant!r}; known: floor, softmax, sdpa, tssa[:impl]"
        )
    return {"macs": macs, "elementwise": elem, "flops": 2 * macs + elem}


def count_reference_flops(fn, *args) -> int:
    """:func:`count_flops_torch` with TSSA through its reference equations (``TSSA_IMPL=naive`` for the
    call), so that a count does not depend on how a fast path reorganises the same work."""
    import os

    before = os.environ.get("TSSA_IMPL")
    os.environ["TSSA_IMPL"] = "naive"
    try:
        return count_flops_torch(fn, *args)
    finally:
        if before is None:
            del os.environ["TSSA_IMPL"]
        else:
            os.environ["TSSA_IMPL"] = before


def model_gflops(model: torch.nn.Module, imgsz: int) -> float:
    """GFLOPs of one forward of an image model on a (1, 3, imgsz, imgsz) input in the project's
    convention (:func:`count_reference_flops`), under ``no_grad`` in eval mode (restored afterwards)."""
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, 3, imgsz, imgsz, dtype=p.dtype, device=p.device)
        with torch.no_grad():
            flops = count_reference_flops(model, x)
    finally:
        model.train(was_training)
    return flops / 1e9
