"""Regressions planted on purpose, to prove that the speed checks catch them (test-only).

``TSSA_PERF_PLANT=<kind>`` makes the perf checks (``tests/perf/conftest.py``) and the callgrind child
(``tests/perf/_callgrind_child.py``) wrap every registered implementation of the core
(``tssa.ops._IMPLS``, hence ``impl="auto"``) with one of:

- ``double``: the core's work doubled: one more forward over all N tokens (and, when a gradient
  flows, one more forward + backward in the backward pass);
- ``slow25``: the same on the first N/4 tokens: 25% extra work proportional to the core;
- ``nxn``: an N x N matrix materialised: the token Gram matrix ``w[0, 0] @ w[0, 0]^T`` of one head.

The reference functions the checks compare against (``tssa.ops.naive.tssa_naive`` called directly,
a bandwidth pass, the projections) are never wrapped. Nothing in ``tssa`` reads the variable.
"""

from __future__ import annotations

import dataclasses
import os

import torch

ENV = "TSSA_PERF_PLANT"
EXTRA_WORK = {"double": 1.0, "slow25": 0.25}
KINDS = (*EXTRA_WORK, "nxn")


def requested() -> str | None:
    """The plant named by ``TSSA_PERF_PLANT`` (None when unset or empty); a bad name is an error."""
    kind = os.environ.get(ENV, "").strip()
    if not kind:
        return None
    if kind not in KINDS:
        raise ValueError(f"{ENV}={kind!r} is not a planted regression; choose one of {', '.join(KINDS)}")
    return kind


def _wrap(fn, kind: str):
    def planted(w, temperature, bias, causal):
        y = fn(w, temperature, bias, causal)
        if kind == "nxn":
            with torch.no_grad():
                head = w[0, 0]  # (N, D)
                (head @ head.mT).sum()  # (N, N) materialised, then dropped
            return y
        k = max(1, round(EXTRA_WORK[kind] * w.shape[2]))  # tokens of the extra work
        ws, bs = w[:, :, :k], (bias[:, :k] if bias is not None else None)
        if not (torch.is_grad_enabled() and y.requires_grad):
            with torch.no_grad():
                fn(ws, temperature, bs, causal)
            return y

        def extra_forward_backward(grad):
            with torch.enable_grad():
                wd = ws.detach().requires_grad_()
                torch.autograd.grad(fn(wd, temperature.detach(), bs, causal), wd, grad[:, :, :k])
            return grad

        y.register_hook(extra_forward_backward)
        return y

    return planted


def apply(kind: str | None) -> dict:
    """Wrap every registered implementation with ``kind``; returns the originals for :func:`restore`."""
    from tssa import ops

    saved = dict(ops._IMPLS)
    if kind is not None:
        for name, spec in saved.items():
            ops._IMPLS[name] = dataclasses.replace(spec, fn=_wrap(spec.fn, kind))
    return saved


def restore(saved: dict) -> None:
    from tssa import ops

    ops._IMPLS.clear()
    ops._IMPLS.update(saved)
