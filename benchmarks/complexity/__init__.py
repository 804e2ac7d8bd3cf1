"""FLOPs, peak memory and time versus token count: the sweep behind TSSA's linear-cost claim.

Operator level (``complexity.operator`` of a suite, :mod:`.operator`): at fixed width C and heads H,
for every token count N, pass and thread count, each variant (TSSA cores, SDPA, materialised
softmax, whole layers, the projection floor) is one cell; the cells of one N are timed interleaved.
Model level (``complexity.model``, :mod:`.model`): YOLO11 variants and ToST models versus image
size. Measurement primitives live in :mod:`.measure`, derived numbers in :mod:`.derive`; cells run
through the generic runner (:mod:`benchmarks.runner`) into runs of the store.

    python -m benchmarks run --suite cpu
    python -m benchmarks derive --suite cpu --readme README.md
"""

from __future__ import annotations

from typing import Any

from benchmarks.runner import Group

from . import model, operator
from .derive import (
    crossover,
    derive,
    derive_models,
    derived_json,
    derived_markdown,
    fit_slope,
    write_readme_block,
)
from .measure import count_call, measure_peak_bytes, profiler_peak_bytes, time_interleaved
from .model import attention_tokens, build_model
from .operator import analytic, build_operator, expand_variants, predicted_peak_bytes


def plan(
    suite_name: str, suite: dict[str, Any], parts: tuple[str, ...] = ("operator", "model")
) -> list[Group]:
    """Every group of the suite's complexity section (operator sweep first)."""
    cx = suite.get("complexity") or {}
    groups: list[Group] = []
    if "operator" in parts and cx.get("operator") is not None:
        groups += operator.plan(suite_name, suite)
    if "model" in parts and cx.get("model") is not None:
        groups += model.plan(suite_name, suite)
    return groups


__all__ = [
    "plan", "analytic", "build_operator", "build_model", "attention_tokens", "expand_variants",
    "predicted_peak_bytes", "count_call", "measure_peak_bytes", "profiler_peak_bytes", "time_interleaved",
    "crossover", "derive", "derive_models", "derived_json", "derived_markdown", "fit_slope", "write_readme_block",
]  # fmt: skip
