"""The classification study: ToST against its softmax (ViT-style) and XCA (XCiT-style) controls on one
backbone, trained from scratch with timm's own library under fixed seeds, compared on top-1.

- :mod:`.train`: the suite's ``classification:`` section (schema, metrics, cells) and one cell
  trained and measured with timm's model, data, optimizer, scheduler and loss
- :mod:`.cells`: the plan (one cell per task, arm and seed) and the executor of one cell
- :mod:`.data`: the embedded digits (scikit-learn's 8 x 8 handwritten digits) and local folders
- :mod:`.summary`: paired differences against ToST, verdicts, the paper's Table 2; the README block
- :mod:`.report`: the report's table and claim

The study registers itself (:data:`STUDY`) when this package is imported.
"""

from __future__ import annotations

from typing import Any

from benchmarks.core.registry import ReadmeContext, Study, register

from .cells import plan
from .train import CLASSIFICATION_METRICS, check_data, parse_classification


def _parse(section: Any) -> dict:
    return parse_classification(section).model_dump(mode="json")


def _check_data(section: dict) -> None:
    check_data(parse_classification(section))


def _run_summary(rows, section: dict, title: str) -> str:
    from .summary import summary, summary_markdown

    return summary_markdown(summary(rows, section), title)


def _readme(ctx: ReadmeContext) -> str | None:
    from .summary import paper_markdown, summary, summary_markdown

    blocks = []
    for run in ctx.runs:  # one table per run: rows of different machines are never pooled
        rdf = ctx.rows[ctx.rows["run"] == run.id]
        if (rdf["kind"] == "classification").any():
            s = summary(rdf, run.record["config"]["classification"])
            title = (f"Classification study, suite {ctx.suite_name}, run {run.id} "
                     f"({run.record['machine']['name']}); mean ± sd (n seeds)")  # fmt: skip
            blocks.append(summary_markdown(s, title))
    if not blocks:
        return None
    blocks += [*ctx.reproduction, paper_markdown()]
    return f"Written by `{ctx.command}`.\n\n" + "\n\n".join(blocks)


def _report(ctx):
    from .report import report

    return report(ctx)


STUDY = register(
    Study(
        name="classification",
        parse=_parse,
        plan=plan,
        check_data=_check_data,
        run_summary=_run_summary,
        readme=_readme,
        report=_report,
        metrics=CLASSIFICATION_METRICS,
        order=2,
        null_when_absent=True,
    )
)

__all__ = ["STUDY", "plan", "parse_classification"]
