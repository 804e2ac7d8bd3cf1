"""The fast TSSA paths and their registration with :func:`tssa.ops.register_impl`.

===========  ==========================================================  =================
name         what it is                                                  ``auto`` picks it
===========  ==========================================================  =================
``fused``    compiled C++ kernels, three fused passes forward and three   CPU, float32 or
             backward, threaded over token chunks (:mod:`tssa.ops.        float64, non-causal,
             fused_cpu`); built at first use, needs a C++ compiler        when it builds
``stream``   token-major, cache-sized chunks, memory-lean backward        CPU tensors the
             (:mod:`tssa.ops.stream`); non-causal, runs on any device     fused path cannot
                                                                          take (fp16/bf16, no
                                                                          compiler), non-causal
``triton``   fused Triton kernels, forward and backward                   CUDA, non-causal,
             (:mod:`tssa.ops.triton_tssa`); fp32/fp16/bf16 only           H <= 64, D <= 256,
                                                                          not float64
``compile``  ``torch.compile`` of the naive reference (both forms)        never (explicit)
===========  ==========================================================  =================

Causal inputs, and CUDA inputs Triton cannot take (float64, more heads or a wider head), fall back to
``lean`` under ``auto``. Triton is imported only when a CUDA input asks
for it, so ``import tssa`` still needs torch alone.

The static rule on CPU: ``fused`` for float32/float64 non-causal inputs wherever its extension
builds (measured, one thread, (1, 8, 4096, 48) float32: forward about 1.7x and forward+backward
about 2.4x faster than ``stream``; see the README's operator section), else ``stream``.

>>> w = torch.randn(1, 4, 64, 16)
>>> resolve_impl("auto", w) in ("fused", "stream")  # on a CPU tensor: fused where it builds
True
>>> resolve_impl("auto", w.half())  # float16 on a CPU: the streaming path
'stream'
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from . import ImplSpec, register_impl, resolve_impl  # noqa: F401  (resolve_impl: for the doctest)
from .naive import tssa_causal_naive, tssa_naive
from .stream import tssa_stream

__all__ = ["compiled_core", "triton_available"]


def _stream(w, temperature, bias, causal):
    return tssa_stream(w, temperature, bias)


def _stream_supports(w: torch.Tensor, causal: bool) -> bool:
    return not causal


def _on_cpu(w: torch.Tensor, causal: bool) -> bool:
    return w.device.type == "cpu"  # a CPU design (cache-sized chunks): auto never picks it elsewhere


@functools.cache
def triton_available() -> bool:
    """Whether the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def _triton(w, temperature, bias, causal):
    from .triton_tssa import tssa_triton

    return tssa_triton(w, temperature, bias)


_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # it computes in float32


def _triton_supports(w: torch.Tensor, causal: bool) -> bool:
    # limits mirror tssa.ops.triton_tssa.MAX_HEADS / MAX_HEAD_DIM (not imported here: that loads triton)
    return (
        w.is_cuda
        and not causal
        and w.dtype in _TRITON_DTYPES
        and w.shape[1] <= 64
        and w.shape[3] <= 256
        and triton_available()
    )


@functools.cache
def compiled_core(causal: bool):
    """``torch.compile`` of the naive reference (non-causal or causal); compiled on first call."""
    return torch.compile(tssa_causal_naive if causal else tssa_naive, dynamic=False)


def _compile(w, temperature, bias, causal):
    return compiled_core(causal)(w, temperature, bias)


def _always(w: torch.Tensor, causal: bool) -> bool:
    return True


def _fused(w, temperature, bias, causal, projection=None):
    from .fused_cpu import tssa_fused

    return tssa_fused(w, temperature, bias, projection=projection)


def _fused_supports(w: torch.Tensor, causal: bool) -> bool:
    if causal or w.device.type != "cpu" or w.dtype not in (torch.float32, torch.float64):
        return False
    from .fused_cpu import available

    return available()[0]  # builds the extension once per process; False (with a reason) without a compiler


register_impl(ImplSpec("fused", _fused, _fused_supports, priority=25, recomputes=True))
register_impl(ImplSpec("stream", _stream, _stream_supports, priority=20, auto_picks=_on_cpu))
register_impl(ImplSpec("triton", _triton, _triton_supports, priority=30))
register_impl(ImplSpec("compile", _compile, _always, priority=-10))
