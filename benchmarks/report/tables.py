"""What the studies' report tables share: provenance captions, columns from the metric registry, the
error-free rows of a kind, the arms' order and the describe frame as table cells.

A study's tables (``benchmarks/studies/<name>/report.py``) take the rows of selected runs
(:func:`benchmarks.core.store.load_rows`) and return a :class:`benchmarks.report.render.Table`;
means, sds and t intervals come from :mod:`benchmarks.core.stats`, labels, units, precision and
direction from the metric registry.
"""

from __future__ import annotations

import pandas as pd

from benchmarks.core import metrics as M
from benchmarks.core import stats
from benchmarks.report.render import Col


def provenance(df: pd.DataFrame) -> str:
    """'suite S, n seeds, machine M, run R (git abc1234)' for every run in ``df`` (plain text)."""
    parts = []
    for run, g in df.groupby("run", sort=True):
        kind = str(g["kind"].iloc[0]) if "kind" in g else ""
        seeds = sorted({int(s) for s in g["seed"].dropna()}) if "seed" in g and kind != "complexity" else []
        git = str(g["prov.git"].iloc[0])[:7] if "prov.git" in g else "?"
        dirty = " dirty" if "prov.dirty" in g and bool(g["prov.dirty"].iloc[0]) else ""
        seed_txt = (
            f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
            if seeds
            else "medians and exact counts, no seeds"
        )
        parts.append(f"Suite {g['suite'].iloc[0]}, {seed_txt}, machine {g['machine_name'].iloc[0]} "
                     f"[{g['machine'].iloc[0]}], run {run} (git {git}{dirty})")  # fmt: skip
    return "; ".join(parts)


def provenance_short(df: pd.DataFrame) -> str:
    """'machine M; runs R1 (suite, kind), R2 (...)' (plain text), for captions that list several runs."""
    machines = sorted({f"{n} [{i}]" for n, i in zip(df["machine_name"], df["machine"])})
    runs = [f"{run} ({g['suite'].iloc[0]} {g['kind'].iloc[0]}, git {str(g['prov.git'].iloc[0])[:7]})"
            for run, g in df.groupby("run", sort=True)]  # fmt: skip
    return f"machine {', '.join(machines)}; runs {', '.join(runs)}"


def metric_col(metric: str, style: str = "pm", **kw) -> Col:
    m = M.get(metric)
    unit = m.latex_unit
    latex = m.latex
    if not unit and m.unit not in ("1", "count") and f"({m.unit})" not in latex:
        unit = {"s": r"\second", "MiB": r"\mebi\byte", "ms": r"\milli\second"}.get(m.unit, "")
    plain_unit = "" if m.unit in ("1", "count") or f"({m.unit})" in latex else m.unit
    args = dict(key=metric, latex=latex, plain=m.label, style=style, precision=m.precision, unit=unit,
                plain_unit=plain_unit, higher_is_better=m.higher_is_better)  # fmt: skip
    args.update(kw)
    return Col(**args)


def ok_rows(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    if df.empty or "kind" not in df:
        return df.iloc[0:0]
    return df[(df["kind"] == kind) & df["error"].isna()]


def arm_order(arms, reference: str) -> list[str]:
    return (
        [reference] + sorted(a for a in set(arms) if a != reference)
        if reference in set(arms)
        else sorted(arms)
    )


def describe_cells(long: pd.DataFrame) -> pd.DataFrame:
    d = stats.describe(long)
    return d.rename(columns={"arm": "row", "metric": "col", "ci_low": "lo", "ci_high": "hi"})
