"""The TSSA operator: one dispatch function over interchangeable implementations.

``tssa(w, temperature)`` computes Token Statistics Self-Attention (Wu et al., ICLR 2025, Eq. 10-12)
on projected tokens ``w`` (B, H, N, D) with a per-head temperature (H,). Implementations:

- ``"naive"``: the paper's equations step by step (:mod:`tssa.ops.naive`), the reference.
- ``"lean"``: a custom autograd function that saves only ``w`` and per-head statistics
  (:mod:`tssa.ops.lean`).
- ``"stream"``, ``"triton"``, ``"compile"``: the fast paths of :mod:`tssa.ops.fast`.
- ``"auto"``: the best registered implementation for the device and dtype.

Further implementations register themselves with :func:`register_impl`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .lean import tssa_causal_lean, tssa_lean
from .naive import memberships, tssa_causal_naive, tssa_naive

__all__ = ["tssa", "register_impl", "available_impls", "resolve_impl", "memberships", "ImplSpec"]

ENV_IMPL = "TSSA_IMPL"  # overrides what "auto" resolves to, e.g. TSSA_IMPL=naive


@dataclass(frozen=True)
class ImplSpec:
    """One implementation of the core: ``fn(w, temperature, bias, causal) -> y``.

    ``supports(w, causal)`` says whether it can run on this input; ``priority`` orders ``auto``;
    ``auto_picks(w, causal)``, when given, narrows the inputs ``auto`` may choose it for (a path that
    runs anywhere but is built for one device), otherwise ``supports`` decides. ``recomputes``: ``fn``
    also takes ``projection=(x, weight, bias)``, the projection that made ``w``, and recomputes ``w``
    from it in backward instead of saving it (see :func:`tssa`).
    """

    name: str
    fn: Callable[..., torch.Tensor]
    supports: Callable[[torch.Tensor, bool], bool]
    priority: int = 0
    auto_picks: Callable[[torch.Tensor, bool], bool] | None = None
    recomputes: bool = False

    def eligible(self, w: torch.Tensor, causal: bool) -> bool:
        """Whether ``auto`` may choose this implementation for ``w``."""
        return self.supports(w, causal) and (self.auto_picks is None or self.auto_picks(w, causal))


_IMPLS: dict[str, ImplSpec] = {}


def register_impl(spec: ImplSpec) -> None:
    """Add (or replace) an implementation under ``spec.name``."""
    _IMPLS[spec.name] = spec


def available_impls() -> list[str]:
    """Names of the registered implementations, ``auto`` excluded."""
    return sorted(_IMPLS)


def _always(w: torch.Tensor, causal: bool) -> bool:
    return True


def _naive(w, temperature, bias, causal):
    return (tssa_causal_naive if causal else tssa_naive)(w, temperature, bias)


def _lean(w, temperature, bias, causal):
    return (tssa_causal_lean if causal else tssa_lean)(w, temperature, bias)


register_impl(ImplSpec("naive", _naive, _always, priority=0))
register_impl(ImplSpec("lean", _lean, _always, priority=10))


def resolve_impl(impl: str, w: torch.Tensor, causal: bool = False) -> str:
    """The concrete implementation name ``impl`` stands for on this input.

    Under ``"auto"``, ``$TSSA_IMPL`` names the preferred implementation; where it cannot run on this
    input (``stream`` on a causal input, ``triton`` on a CPU tensor) ``auto`` chooses as if it were
    unset, i.e. the highest-priority eligible implementation. An explicit ``impl`` that cannot run
    raises ``ValueError``.
    """
    if impl == "auto":
        preferred = os.environ.get(ENV_IMPL, "").strip()
        if preferred and preferred != "auto":
            if preferred not in _IMPLS:
                raise ValueError(
                    f"{ENV_IMPL}={preferred!r} is not a TSSA impl; set it to one of "
                    f"{['auto', *available_impls()]} or unset it"
                )
            if _IMPLS[preferred].supports(w, causal):
                return preferred
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return "naive"  # exporters trace plain tensor ops; custom autograd functions do not export
        usable = [s for s in _IMPLS.values() if s.eligible(w, causal)]
        return max(usable, key=lambda s: s.priority).name
    if impl not in _IMPLS:
        raise ValueError(f"unknown TSSA impl {impl!r}; choose one of {['auto', *available_impls()]}")
    if not _IMPLS[impl].supports(w, causal):
        raise ValueError(
            f"TSSA impl {impl!r} cannot run on a {w.device.type} {w.dtype} input of shape {tuple(w.shape)} "
            f"(causal={causal}); use impl='auto'"
        )
    return impl


def _check(w: torch.Tensor, temperature: torch.Tensor, bias: torch.Tensor | None) -> None:
    if not isinstance(w, torch.Tensor) or w.dim() != 4:
        shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"tssa: w must be a 4-D tensor (B, H, N, D), got shape {shape}")
    if not w.is_floating_point():
        raise ValueError(f"tssa: w must be floating point, got dtype {w.dtype} for shape {tuple(w.shape)}")
    b, h, n, d = w.shape
    if n == 0 or d == 0 or h == 0:
        raise ValueError(f"tssa: w of shape {tuple(w.shape)} has an empty head, token or feature axis")
    if not isinstance(temperature, torch.Tensor) or tuple(temperature.shape) != (h,):
        got = (
            tuple(temperature.shape) if isinstance(temperature, torch.Tensor) else type(temperature).__name__
        )
        raise ValueError(
            f"tssa: temperature must have shape ({h},) for w of shape {tuple(w.shape)}, got {got}"
        )
    if not temperature.is_floating_point():
        raise ValueError(f"tssa: temperature must be floating point, got dtype {temperature.dtype}")
    if bias is not None and tuple(bias.shape) != (h, n):
        raise ValueError(
            f"tssa: bias must have shape ({h}, {n}) for w of shape {tuple(w.shape)}, got {tuple(bias.shape)}"
        )


def tssa(
    w: torch.Tensor,
    temperature: torch.Tensor,
    *,
    causal: bool = False,
    impl: str = "auto",
    bias: torch.Tensor | None = None,
    attn_drop: float = 0.0,
    projection: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Token Statistics Self-Attention core. (B, H, N, D) -> (B, H, N, D).

    ``Y = -Pi * W * 1/(1 + m)`` with memberships ``Pi = softmax_heads(tau * sum_d (W/||W||)^2)`` and
    the membership-weighted second moment ``m`` (see :func:`tssa.ops.naive.tssa_naive`). With
    ``causal=True`` every statistic runs over the prefix of tokens 1..n.

    Args:
        w: projected tokens (B, H, N, D), floating point, N >= 1.
        temperature: per-head temperature (H,).
        causal: prefix statistics (language modelling).
        impl: ``"auto"`` | ``"naive"`` | ``"lean"`` | any name in :func:`available_impls`.
            ``"auto"`` honours the ``TSSA_IMPL`` environment variable.
        bias: optional per-head, per-position offset (H, N) added to the normalised squares.
        attn_drop: dropout probability on the gate ``1/(1+m)``; > 0 runs the naive path.
        projection: ``(x, weight, qkv_bias)`` when ``w`` is the head split of
            ``F.linear(x, weight, qkv_bias)`` (the caller vouches for it). An implementation that
            can (``fused``) then recomputes ``w`` in backward instead of saving it: the same values
            and gradients, one token-sized buffer less held from forward to backward, one more
            projection in backward. The others ignore it.

    >>> w = torch.randn(2, 4, 197, 48)
    >>> tssa(w, torch.ones(4)).shape
    torch.Size([2, 4, 197, 48])
    """
    _check(w, temperature, bias)
    if attn_drop > 0.0:
        return (tssa_causal_naive if causal else tssa_naive)(w, temperature, bias, attn_drop)
    spec = _IMPLS[resolve_impl(impl, w, causal)]
    if projection is not None and spec.recomputes:
        return spec.fn(w, temperature, bias, causal, projection=projection)
    return spec.fn(w, temperature, bias, causal)


# fast paths (tssa/ops/fast.py): "stream" (CPU, non-causal), "triton" (CUDA), "compile" (explicit only)
from . import fast as _fast  # noqa: E402,F401  (registers on import; needs the names above)
