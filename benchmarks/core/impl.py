"""Which TSSA core a cell runs: what ``tssa``'s ``impl="auto"`` resolves to on the cell's device.

A cell whose model calls TSSA through ``auto`` (a YOLO11 TSSA arm, a ToST arm, the TSSA layer of the
complexity sweep) carries the resolved core as a parameter (``tssa_core``), so that it is part of the
cell's identity and a column of its rows: two runs whose ``auto`` resolved to different cores (a
machine with a compiler builds ``fused``, one without runs ``stream``) never share a cell id, and the
reproduction check never compares them.

The rule is resolved once, in the planning process, for a float32, non-causal input of the layer's
shape class on the cell's device (``auto`` is a static rule of device, dtype and causality,
:func:`tssa.ops.resolve_impl`; ``$TSSA_IMPL`` is honoured as there). Where the device is absent
from the planning machine (a GPU suite planned on a login node) the core is recorded as ``"auto"``.

>>> tssa_core("cpu") in ("fused", "stream")
True
"""

from __future__ import annotations

import functools
import os

__all__ = ["torch_device", "tssa_core", "impls_of", "core_of", "core_param", "cores_line"]


def torch_device(device: str) -> str:
    """The torch device of an Ultralytics ``device`` string (the first GPU of a DDP list).

    >>> torch_device("cpu"), torch_device("0"), torch_device("2,3"), torch_device("cuda:1")
    ('cpu', 'cuda:0', 'cuda:2', 'cuda:1')
    """
    d = device.strip().lower().strip("[]")
    if d in ("cpu", "mps"):
        return d
    d = d.removeprefix("cuda:").removeprefix("cuda").split(",")[0].strip()
    return f"cuda:{d or 0}"


def tssa_core(device: str = "cpu", dtype: str = "float32") -> str:
    """The implementation name ``auto`` resolves to for a ``dtype`` input on ``device`` (a torch or
    Ultralytics device string: ``"cpu"``, ``"cuda"``, ``"0"``, ``"0,1"``), or ``"auto"`` where that
    device is not present here."""
    from tssa.ops import ENV_IMPL

    return _resolved(torch_device(device), dtype, os.environ.get(ENV_IMPL, ""))


@functools.cache
def _resolved(dev: str, dtype: str, preferred: str) -> str:  # preferred: $TSSA_IMPL, part of the key
    import torch

    from tssa.ops import resolve_impl

    if dev.startswith("cuda") and not torch.cuda.is_available():
        return "auto"
    if dev == "mps" and not torch.backends.mps.is_available():
        return "auto"
    return resolve_impl("auto", torch.zeros(1, 4, 64, 48, dtype=getattr(torch, dtype), device=dev))


def impls_of(model) -> frozenset[str]:
    """The ``impl`` of every TSSA layer of ``model`` (empty when it has none)."""
    from tssa.nn import TokenStatisticsAttention

    return frozenset(m.impl for m in model.modules() if isinstance(m, TokenStatisticsAttention))


def core_of(impls: frozenset[str], device: str = "cpu", dtype: str = "float32") -> str | None:
    """The TSSA core(s) that layers with these ``impls`` (:func:`impls_of`) run on ``device``: ``None``
    for none, else each resolved name (``auto`` through :func:`tssa_core`), joined by ``+`` when they
    differ."""
    if not impls:
        return None
    return "+".join(sorted({tssa_core(device, dtype) if i == "auto" else i for i in impls}))


def core_param(impls: frozenset[str], device: str = "cpu", dtype: str = "float32") -> dict[str, str]:
    """The cell parameter that names the core: ``{"tssa_core": name}`` (:func:`core_of`), or ``{}``
    for a cell without TSSA. Every study adds it through this function (runs recorded before the
    parameter existed have the ids of a plan in which it returns ``{}``)."""
    core = core_of(impls, device, dtype)
    return {} if core is None else {"tssa_core": core}


def cores_line(df) -> str:
    """One sentence naming the TSSA core each variant's rows ran (their ``tssa_core`` column), or ``""``
    when the rows have none (runs before the column, or no TSSA arm)."""
    if df is None or "tssa_core" not in getattr(df, "columns", ()):
        return ""
    g = df[df["tssa_core"].notna()].drop_duplicates(["variant", "tssa_core"])
    if g.empty:
        return ""
    named = ", ".join(f"{v}: {c}" for v, c in zip(g["variant"], g["tssa_core"]))
    return f"TSSA core (what `impl='auto'` ran; part of each cell's identity): {named}."
