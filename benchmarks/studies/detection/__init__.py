"""The detection study: YOLO11 with C2PSA's softmax attention against TSSA and no attention, trained
from scratch or fine-tuned from a no-attention trunk (``warm_start``) under fixed seeds, evaluated
by AP overall, by object size and by occlusion level.

- :mod:`.section`: the suite's ``detection:`` section (schema, metrics, arms, cells)
- :mod:`.cells`: the plan (the warm start's trunks, one cell per arm and seed, latency cells) and the executors
- :mod:`.train`: one cell trained and evaluated (Ultralytics' own ``train`` and ``val``)
- :mod:`.coco_eval`: pycocotools on Ultralytics' ``predictions.json``, by size and occlusion level
- :mod:`.data`: the generated scenes (embedded default) and real data YAMLs (COCO, VOC, ...)
- :mod:`.summary`: paired differences, Holm, verdicts; the README block
- :mod:`.report`: the report's tables, figures and claims

The study registers itself (:data:`STUDY`) when this package is imported.
"""

from __future__ import annotations

from typing import Any

from benchmarks.core.metrics import Metric
from benchmarks.core.registry import ReadmeContext, Study, register

from .cells import plan
from .section import DETECTION_METRICS, check_data, gpu_count, parse_detection


def _parse(section: Any) -> dict:
    return parse_detection(section).model_dump()


def _check_data(section: dict) -> None:
    check_data(parse_detection(section))


def _gpus(section: dict) -> int:
    return gpu_count(section["train"]["device"])


def _run_summary(rows, section: dict, title: str) -> str:
    from .summary import summary, summary_markdown

    return summary_markdown(summary(rows, section), title)


def _readme(ctx: ReadmeContext) -> str | None:
    from .summary import run_blocks

    blocks = []
    for run in ctx.runs:  # one table per run: rows of different machines are never pooled
        rdf = ctx.rows[ctx.rows["run"] == run.id]
        if (rdf["kind"] == "detection").any():  # every machine named; timings never pooled across devices
            title = f"Detection study, suite {ctx.suite_name}, run {run.id}"
            blocks += run_blocks(rdf, run.record["config"]["detection"], title)
    if not blocks:
        return None
    return f"Written by `{ctx.command}`.\n\n" + "\n\n".join([*blocks, *ctx.reproduction])


def _report(ctx):
    from .report import report

    return report(ctx)


STUDY = register(
    Study(
        name="detection",
        parse=_parse,
        plan=plan,
        check_data=_check_data,
        gpus=_gpus,
        run_summary=_run_summary,
        readme=_readme,
        report=_report,
        metrics=tuple(Metric(name, **m) for name, m in DETECTION_METRICS.items()),
        order=1,
        null_when_absent=True,
    )
)

__all__ = ["STUDY", "plan", "parse_detection"]
