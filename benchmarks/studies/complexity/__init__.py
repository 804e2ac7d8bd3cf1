"""FLOPs, peak memory and time versus token count: the sweep behind TSSA's linear-cost claim.

Operator level (``complexity.operator`` of a suite, :mod:`.operator`): at fixed width C and heads H,
for every token count N, pass and thread count, each variant (TSSA cores, SDPA, materialised
softmax, whole layers, the projection floor) is one cell; the cells of one N are timed interleaved.
Model level (``complexity.model``, :mod:`.model`): YOLO11 variants and ToST models versus image
size. Its section schema is :mod:`.section`; measurement primitives live in
:mod:`benchmarks.core.measure`, derived numbers in :mod:`.derive`, the report part in :mod:`.report`;
the floor ratios (:mod:`.floor`) and the YOLO table (:mod:`.yolo_table`, suite ``yolo-table``)
belong here too. Cells run through the core's runner into runs of the store. The study registers
itself (:data:`STUDY`) when this package is imported.

    python -m benchmarks run --suite cpu
    python -m benchmarks derive --suite cpu --readme README.md
"""

from __future__ import annotations

from typing import Any

from benchmarks.core.measure import count_call, measure_peak_bytes, profiler_peak_bytes, time_interleaved
from benchmarks.core.registry import ReadmeContext, Study, register
from benchmarks.core.runner import Group

from . import model, operator
from .derive import crossover, derive, derive_models, derived_json, derived_markdown, fit_slope
from .model import attention_tokens, build_model
from .operator import analytic, build_operator, expand_variants, predicted_peak_bytes
from .section import parse_complexity


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


def readme(ctx: ReadmeContext) -> str | None:
    """The ``complexity:<suite>`` block (slopes, crossovers, ratios, model tables); also writes
    ``results/<suite>/derived.json``. None when the selected runs hold no complexity rows."""
    import json
    import os
    from pathlib import Path

    from .report import fit_min_tokens

    # the threshold the measured run declared (its suite's, when it ran), so that a later change of the
    # suite's setting never refits rows that were measured for another
    fit_min = ctx.options.get("fit_min_tokens") or fit_min_tokens(ctx.runs)
    rows = ctx.rows[ctx.rows["kind"] == "complexity"] if not ctx.rows.empty else ctx.rows
    d = derive(rows, fit_min_tokens=fit_min, reference=ctx.options.get("reference", "sdpa"))
    if not d["configs"] and not d["models"]:
        return None
    out = Path(ctx.results_dir) / ctx.suite_name / "derived.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(derived_json(d), indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return derived_markdown(d, ctx.command)


def _report(ctx):
    from .report import report

    return report(ctx)


STUDY = register(
    Study(
        name="complexity",
        parse=parse_complexity,
        plan=plan,
        parts=("operator", "model"),
        readme=readme,
        report=_report,
        order=0,
        null_when_absent=True,
    )
)

__all__ = [
    "STUDY", "plan", "analytic", "build_operator", "build_model", "attention_tokens", "expand_variants",
    "predicted_peak_bytes", "count_call", "measure_peak_bytes", "profiler_peak_bytes", "time_interleaved",
    "crossover", "derive", "derive_models", "derived_json", "derived_markdown", "fit_slope",
]  # fmt: skip
