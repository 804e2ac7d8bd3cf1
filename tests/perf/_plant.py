"""Regressions planted on purpose, to prove that the speed checks catch them (test-only).

``TSSA_PERF_PLANT=<kind>`` makes the perf checks (``tests/perf/conftest.py``) and the callgrind child
(``tests/perf/_callgrind_child.py``) wrap every registered implementation of the core
(``tssa.ops._IMPLS``, hence ``impl="auto"``) with one of:

- ``double``: the core's work doubled: one more forward over all N tokens (and, when a gradient
  flows, one more forward + backward in the backward pass);
- ``slow25``: the core 25 % slower: after its forward, and after its backward, the calling thread
  spins for a quarter of the CPU time that pass just took (on CUDA, where no thread clock sees the
  kernels: one more pass over the first N/4 tokens). Spinning rather than extra arithmetic on
  N/4 tokens because a quarter of ``w`` fits in the L2 cache that the whole does not: such extra
  work costs only 5-16 % here (measured, see ``test_operator_speed.py``), not 25 %. The spin adds
  no FLOPs and no bytes, so only the timing checks and the instruction counts can see it;
- ``nxn``: an N x N matrix materialised: the token Gram matrix ``w[0, 0] @ w[0, 0]^T`` of one head.

The reference functions the checks compare against (``tssa.ops.naive.tssa_naive`` called directly,
a bandwidth pass, the projections) are never wrapped. Nothing in ``tssa`` reads the variable.
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch

ENV = "TSSA_PERF_PLANT"
KINDS = ("double", "slow25", "nxn")
SLOWDOWN = 0.25  # slow25: extra CPU time as a share of the core's own


def requested() -> str | None:
    """The plant named by ``TSSA_PERF_PLANT`` (None when unset or empty); a bad name is an error."""
    kind = os.environ.get(ENV, "").strip()
    if not kind:
        return None
    if kind not in KINDS:
        raise ValueError(f"{ENV}={kind!r} is not a planted regression; choose one of {', '.join(KINDS)}")
    return kind


def _spin(seconds: float) -> None:
    """Keep this thread busy for ``seconds`` of its own CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _extra_work(fn, w, temperature, bias, causal, y, tokens: int):
    """One more forward (and, when a gradient flows, forward + backward) over the first ``tokens`` tokens."""
    ws, bs = w[:, :, :tokens], (bias[:, :tokens] if bias is not None else None)
    if not (torch.is_grad_enabled() and y.requires_grad):
        with torch.no_grad():
            fn(ws, temperature, bs, causal)
        return

    def extra_forward_backward(grad):
        with torch.enable_grad():
            wd = ws.detach().requires_grad_()
            torch.autograd.grad(fn(wd, temperature.detach(), bs, causal), wd, grad[:, :, :tokens])
        return grad

    y.register_hook(extra_forward_backward)


def _slow_down(w, y, forward_s: float) -> None:
    """Spin ``SLOWDOWN`` x the forward's CPU time now, and the same share of the backward's when it runs."""
    _spin(SLOWDOWN * forward_s)
    if torch.is_grad_enabled() and y.requires_grad and w.requires_grad:
        start = []
        y.register_hook(lambda grad: start.append(time.thread_time()))  # the core's backward begins
        w.register_hook(lambda grad: _spin(SLOWDOWN * (time.thread_time() - start[-1])))  # ... and ended


def _wrap(fn, kind: str):
    def planted(w, temperature, bias, causal, **kw):  # kw: projection=..., for an impl that recomputes w
        t0 = time.thread_time()
        y = fn(w, temperature, bias, causal, **kw)
        if kind == "nxn":
            with torch.no_grad():
                head = w[0, 0]  # (N, D)
                (head @ head.mT).sum()  # (N, N) materialised, then dropped
        elif kind == "double":
            _extra_work(fn, w, temperature, bias, causal, y, w.shape[2])
        elif w.is_cuda:  # slow25 on CUDA: the thread clock does not see the kernels
            _extra_work(fn, w, temperature, bias, causal, y, max(1, round(SLOWDOWN * w.shape[2])))
        else:
            _slow_down(w, y, time.thread_time() - t0)
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
