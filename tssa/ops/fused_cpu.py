"""Fused, compiled CPU kernels of the non-causal TSSA core, forward and backward.

Same mathematics as :mod:`tssa.ops.naive` (Wu et al., "Token Statistics Transformer", ICLR 2025,
Eq. 10-12) and the same layout as :mod:`tssa.ops.stream`: the layer hands the core a (B, H, N, D)
*view* of a token-major (B, N, H, D) buffer, and the kernels (``csrc/tssa_cpu.cpp``, a C++ extension
built at first use) read that memory directly. Inputs in another layout are copied to token-major
once. Each pass walks every token once, fused into one loop instead of a chain of tensor ops (four
consecutive tokens per step where the pass sums over tokens, with the same operations in the same
order as one token at a time, so that a row of partial sums is loaded and stored once per four tokens):

- forward: column energies ``colsq[h, d] = sum_n w^2``; memberships ``Pi = softmax_h(tau q)`` with
  ``q = sum_d w^2 / colsq (+ D bias)`` and the weighted moment ``m = sum_n Pi w^2 / total``; the
  output ``Y = -Pi w g``, ``g = 1 / (1 + m)``;
- backward: pass A (``dPi1 = -sum_d G w g``, ``sum_n Pi G w``), pass B (the softmax backward over
  heads, ``sum_n tau dS w^2``, ``dtau``), pass C (``dW``), as in :mod:`tssa.ops.stream`.

Saved for backward: ``w``, ``Pi`` (B, N, H) and (B, H, D) float64 statistics; backward holds one
(B, N, H) buffer besides ``dW``. Per-token arithmetic runs in the input dtype (float32 or float64;
float16/bfloat16 are refused, the caller falls back); sums over tokens run in the input dtype over
blocks of 32 tokens and in float64 beyond, the statistics are float64. The softmax's float32 exp is
the kernels' own, 8 lanes at once: glibc's ``expf`` algorithm (2.28+, FMA form) written out, equal to
``std::exp`` in every bit for every float32 where the C library is glibc on an x86-64 CPU with FMA
(``torch.ops.tssa_cpu.exp_mismatches(0, 2**32)`` counts the patterns that differ: 0 there), and the
same in both builds everywhere else (float64 keeps ``std::exp``).

Determinism: the tokens are cut into chunks whose size depends on the shape only
(:func:`chunk_tokens`); threads (``at::parallel_for``) take whole chunks, each chunk writes its partial
sums into its own slot and the slots are added in chunk order, so outputs and gradients are
bit-identical whatever ``torch.get_num_threads()`` is.

Build: :func:`load` compiles the extension once per process with ``torch.utils.cpp_extension.load``
into ``$TSSA_EXT_CACHE`` or ``~/.cache/tssa-ext/<torch version>-py<python version>`` (``-O3``, plus
``-fopenmp`` where torch threads with OpenMP), under an exclusive ``fcntl.flock`` on ``build.lock``
there (two processes starting at once build once). The instruction set follows what torch detects on
the machine that runs it (:func:`isa`): ``-mavx2 -mfma`` where ``torch.backends.cpu.get_cpu_capability()``
reports AVX2 or AVX512 (AVX-512 code measured no faster here), the x86-64 baseline elsewhere; each
variant is a library of its own name (``tssa_cpu_ext_avx2``, ``tssa_cpu_ext_base``) built in a directory of
its own below the cache (``avx2/``, ``base/``), so a cache shared by machines of different CPUs never loads
code that one of them cannot run. ``-ffp-contract=off`` in every
variant: no fused multiply-add contraction, so the vector widths differ but every operation, and its
rounding, is the same, and the variants give bit-identical results (tested). The ops are registered as
``torch.ops.tssa_cpu.fwd`` / ``torch.ops.tssa_cpu.bwd``, so dispatch modes see them. :func:`available`
says whether that works here, and why not.

>>> ok, reason = available()  # builds the extension on first use (a C++ compiler is needed)
>>> if ok:
...     y = tssa_fused(torch.randn(2, 4, 197, 48), torch.ones(4))
...     assert y.shape == (2, 4, 197, 48) and y.transpose(1, 2).is_contiguous()
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import threading
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from .naive import MEMBERSHIP_EPS, NORM_EPS

__all__ = ["tssa_fused", "available", "load", "chunk_tokens", "cache_dir", "isa"]

EXT_NAME = "tssa_cpu_ext"  # + "_" + isa()
ENV_ISA = "TSSA_EXT_ISA"  # "base" forces the x86-64 baseline build
ENV_CACHE = "TSSA_EXT_CACHE"  # overrides the build directory
_SOURCE = Path(__file__).with_name("csrc") / "tssa_cpu.cpp"
_SQ_EPS = NORM_EPS * NORM_EPS  # the norm floor, squared
_CHUNK_ELEMS = 1 << 16  # elements of one (chunk, C) block: 256 KiB of float32 tokens
_DTYPES = (torch.float32, torch.float64)

_lock = threading.Lock()
_state: tuple[bool, str] | None = None  # (loaded, reason it is not), once per process


def chunk_tokens(channels: int, tokens: int) -> int:
    """Tokens per chunk for ``channels`` = H * D features: about 256 KiB of float32 tokens, at most a
    quarter of ``tokens`` (so that two or more threads have work at B = 1), at least 16. Depends on
    the shape only, which makes the results independent of the thread count."""
    step = max(16, _CHUNK_ELEMS // max(channels, 1))
    return max(16, min(step, -(-tokens // 4)))


def cache_dir() -> Path:
    """Build directory of the extension: ``$TSSA_EXT_CACHE`` or a per-torch, per-Python default."""
    env = os.environ.get(ENV_CACHE, "").strip()
    if env:
        return Path(env).expanduser()
    py = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return Path.home() / ".cache" / "tssa-ext" / f"{torch.__version__}-{py}"


_ISA_FLAGS = {"avx2": ["-mavx2", "-mfma"], "base": []}


def isa() -> str:
    """The instruction set the extension is built for here: ``"avx2"`` where torch reports an AVX2 or
    AVX512 CPU (x86-64), else ``"base"`` (the compiler's default target); ``$TSSA_EXT_ISA=base`` forces
    the baseline build (results are the same bit for bit, only slower)."""
    forced = os.environ.get(ENV_ISA, "").strip().lower()
    if forced not in ("", "base"):
        raise ValueError(
            f"${ENV_ISA}={forced!r}: only 'base' (the default target) can be forced; unset it for the automatic choice"
        )
    if forced == "base":
        return "base"
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - an older torch without the query: the portable build
        return "base"
    return "avx2" if cap in ("AVX2", "AVX512") else "base"


def _missing_tool() -> str | None:
    """A one-line reason when the build cannot even start, else None."""
    try:
        import fcntl  # noqa: F401  (POSIX only: the build lock)
    except ImportError:
        return "the fused CPU kernels need a POSIX system (fcntl) to build"
    cxx = shlex.split(os.environ.get("CXX", "") or "c++") or ["c++"]
    if shutil.which(cxx[0]) is None:
        return f"no C++ compiler found ({cxx[0]!r} is not on PATH; set CXX)"
    cpp_log = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_log.level
    cpp_log.setLevel(logging.ERROR)  # its import warns that no CUDA runtime exists: irrelevant here
    try:
        from torch.utils.cpp_extension import is_ninja_available
    finally:
        cpp_log.setLevel(level)

    if not is_ninja_available():
        return "ninja, which torch.utils.cpp_extension.load needs, is not installed"
    return None


def build_flags(variant: str) -> tuple[list[str], list[str]]:
    """Compiler and linker flags of the extension's ``variant`` build (:func:`isa`)."""
    # at::parallel_for is a header template: with torch's OpenMP backend it only runs threads in code
    # compiled with -fopenmp (libgomp resolves to the copy torch has already loaded)
    omp = ["-fopenmp"] if torch.backends.openmp.is_available() else []
    return ["-O3", "-ffp-contract=off", *_ISA_FLAGS[variant], *omp], omp


def _build() -> None:
    import fcntl

    from torch.utils.cpp_extension import load as load_extension

    root, variant = cache_dir(), isa()
    build = root / variant
    build.mkdir(parents=True, exist_ok=True)
    cflags, ldflags = build_flags(variant)
    # torch takes its own lock ("lock") inside load(); this one also covers its version check and the
    # dlopen, so a second process waits for the first build and then only loads the library.
    with open(root / "build.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            load_extension(
                name=f"{EXT_NAME}_{variant}",
                sources=[str(_SOURCE)],
                extra_cflags=cflags,
                extra_ldflags=ldflags,
                build_directory=str(build),
                is_python_module=False,  # plain torch.ops library: TORCH_LIBRARY(tssa_cpu, ...)
                verbose=False,
            )
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load() -> tuple[bool, str]:
    """Build (if needed) and load the extension, once per process. Returns ``(ok, reason)``."""
    global _state
    with _lock:
        if _state is None:
            reason = _missing_tool()
            if reason is None and not _SOURCE.is_file():
                reason = f"the kernel source {_SOURCE} is missing from this installation"
            if reason is None:
                try:
                    _build()
                except Exception as exc:  # a failed build: report it, the caller falls back
                    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
                    reason = f"building the fused CPU kernels failed ({type(exc).__name__}: {first}); see {cache_dir()}"
            _state = (reason is None, reason or "")
        return _state


def available() -> tuple[bool, str]:
    """``(True, "")`` when the fused CPU kernels can run here, else ``(False, one-line reason)``.

    Builds the extension on first call; never raises."""
    try:
        return load()
    except Exception as exc:  # pragma: no cover - load() already catches build errors
        return False, f"the fused CPU kernels cannot load: {type(exc).__name__}: {exc}"


def _token_major(t: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> the (B, N, H, D) tensor behind it, contiguous; a view when ``t`` is a head split."""
    return t.transpose(1, 2).contiguous()


def _forward(ctx, w, tau, bias):
    """The forward kernel on ``w`` (B, H, N, D): the (B, H, N, D) view of the token-major output and
    what backward needs besides ``w`` (tau and bias in w's dtype, Pi and the statistics). The chunk
    size and the parameters' dtypes go on ``ctx``; ``ctx=None`` where no autograd node is recorded."""
    _, h, n, d = w.shape
    step = chunk_tokens(h * d, n)
    if ctx is not None:
        ctx.step, ctx.tau_dtype = step, tau.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
    tau_c = tau.to(w.dtype).contiguous()
    bias_c = None if bias is None else bias.to(w.dtype).contiguous()
    y_tm, *stats = torch.ops.tssa_cpu.fwd(_token_major(w), tau_c, bias_c, step, _SQ_EPS, MEMBERSHIP_EPS)
    return y_tm.transpose(1, 2), (tau_c, bias_c, *stats)


class _TSSAFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, tau, bias):
        y, saved = _forward(ctx, w, tau, bias)
        ctx.save_for_backward(w, *saved)  # w, tau_c, bias_c, pi, colsq, r, total, m, g
        return y  # (B, H, N, D) view of the token-major buffer

    @staticmethod
    @once_differentiable  # the backward kernel has no derivative of its own
    def backward(ctx, grad):
        w, tau_c, bias_c, pi, colsq, r, total, m, g = ctx.saved_tensors
        outs = torch.ops.tssa_cpu.bwd(
            _token_major(grad.to(w.dtype)), _token_major(w), tau_c, bias_c, pi, colsq, r, total, m, g,
            ctx.step, _SQ_EPS,
        )  # fmt: skip
        dw = outs[0].transpose(1, 2) if ctx.needs_input_grad[0] else None  # view of token-major memory
        dtau = outs[1].to(ctx.tau_dtype) if ctx.needs_input_grad[1] else None
        dbias = outs[2].to(ctx.bias_dtype) if bias_c is not None and ctx.needs_input_grad[2] else None
        return dw, dtau, dbias


class _TSSAFusedRecomputed(torch.autograd.Function):
    """:class:`_TSSAFused` for ``w = F.linear(x, weight, qkv_bias)`` split into heads, saving that recipe
    instead of ``w``: backward recomputes ``w`` with the same call (the same bits), runs the core's
    backward with dW written over the recomputed buffer, and returns dW as ``w``'s gradient (``x`` and
    the weights get theirs through the projection's own node). Gradients are bit-identical to
    :class:`_TSSAFused`; ``w`` is not held from forward to backward (one token-sized buffer less at
    the step's peak) at the cost of one more projection in backward."""

    @staticmethod
    def forward(ctx, w, tau, bias, x, weight, qkv_bias):
        y, saved = _forward(ctx, w, tau, bias)
        ctx.save_for_backward(x, weight, qkv_bias, *saved)
        ctx.heads = w.shape[1]
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight, qkv_bias, tau_c, bias_c, *stats = ctx.saved_tensors
        wf = torch.nn.functional.linear(x, weight, qkv_bias)  # w again: the call that made it
        b, n, c = wf.shape
        w_tm = wf.view(b, n, ctx.heads, c // ctx.heads)
        outs = torch.ops.tssa_cpu.bwd_over_w(
            _token_major(grad.to(w_tm.dtype)), w_tm, tau_c, bias_c, *stats, ctx.step, _SQ_EPS
        )  # w_tm holds dW now
        dw = w_tm.transpose(1, 2) if ctx.needs_input_grad[0] else None
        dtau = outs[0].to(ctx.tau_dtype) if ctx.needs_input_grad[1] else None
        dbias = outs[1].to(ctx.bias_dtype) if bias_c is not None and ctx.needs_input_grad[2] else None
        return dw, dtau, dbias, None, None, None


def _check(w: torch.Tensor, temperature: torch.Tensor, bias: torch.Tensor | None) -> None:
    if not isinstance(w, torch.Tensor) or w.dim() != 4:
        shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"tssa_fused: w must be a 4-D tensor (B, H, N, D), got shape {shape}")
    others = [t for t in (temperature, bias) if isinstance(t, torch.Tensor)]
    device = next((t.device for t in (w, *others) if t.device.type != "cpu"), None)
    if device is not None:
        raise ValueError(f"tssa_fused: CPU tensors only, got a {device.type} tensor; use another impl")
    if w.dtype not in _DTYPES:
        raise ValueError(f"tssa_fused: float32 or float64 only, got {w.dtype}; use another impl")
    _, h, n, d = w.shape
    if n == 0 or d == 0 or h == 0:
        raise ValueError(f"tssa_fused: w of shape {tuple(w.shape)} has an empty head, token or feature axis")
    if not isinstance(temperature, torch.Tensor) or tuple(temperature.shape) != (h,):
        got = (
            tuple(temperature.shape) if isinstance(temperature, torch.Tensor) else type(temperature).__name__
        )
        raise ValueError(
            f"tssa_fused: temperature must have shape ({h},) for w of shape {tuple(w.shape)}, got {got}"
        )
    if not temperature.is_floating_point():
        raise ValueError(f"tssa_fused: temperature must be floating point, got {temperature.dtype}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (h, n)):
        got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(
            f"tssa_fused: bias must have shape ({h}, {n}) for w of shape {tuple(w.shape)}, got {got}"
        )
    if bias is not None and not bias.is_floating_point():
        raise ValueError(f"tssa_fused: bias must be floating point, got {bias.dtype}")


def tssa_fused(
    w: torch.Tensor,
    temperature: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    projection: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Non-causal TSSA core in fused C++ kernels. (B, H, N, D) -> (B, H, N, D), CPU, float32/float64.

    ``Y = -Pi * W * 1/(1 + m)`` exactly as :func:`tssa.ops.naive.tssa_naive`; ``bias`` (H, N) adds
    ``D * bias[h, n]`` to the head energies. The output, and ``dW`` in backward, are (B, H, N, D) views
    of token-major (B, N, H, D) buffers, so merging heads afterwards is free.

    ``projection=(x, weight, qkv_bias)`` says that ``w`` is the head split of
    ``F.linear(x, weight, qkv_bias)`` (x (B, N, C), as :class:`tssa.nn.TokenStatisticsAttention`
    makes it): then ``w`` is not saved for backward but recomputed there by that call, and dW is
    written over the recomputed buffer (same values and gradients, bit for bit; one token-sized buffer
    less held from forward to backward, one more projection in backward). The caller vouches that
    ``w`` is exactly that projection.

    Where no gradient is to be computed (grad mode off, or no input requires one) the forward kernel
    runs without an autograd node (same call, same bits, less per-call overhead).

    Raises ``ValueError`` (one line) for non-CPU tensors, other dtypes, wrong shapes, or when the
    extension cannot be built here (with the reason).
    """
    _check(w, temperature, bias)
    ok, reason = available()
    if not ok:
        raise ValueError(f"tssa_fused: unavailable: {reason}")
    if not (
        torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (w, temperature, bias))
    ):
        return _forward(None, w, temperature, bias)[0]  # nothing to differentiate: no autograd node
    if projection is None:
        return _TSSAFused.apply(w, temperature, bias)
    x, weight, qkv_bias = projection
    b, h, n, d = w.shape
    if not isinstance(x, torch.Tensor) or tuple(x.shape[:2]) != (b, n) or tuple(weight.shape[:1]) != (h * d,):
        raise ValueError(
            f"tssa_fused: projection (x {tuple(getattr(x, 'shape', ()))}, weight {tuple(weight.shape)}) "
            f"cannot have made w of shape {tuple(w.shape)}; pass x (B, N, C_in) and weight (H * D, C_in)"
        )
    return _TSSAFusedRecomputed.apply(w, temperature, bias, x, weight, qkv_bias)
