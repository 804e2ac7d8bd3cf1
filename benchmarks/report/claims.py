"""The claims ledger: every claim of the paper and the public forks that the suite can test, with its
source, what was measured, the interval and the verdict.

Each registered study contributes its claims (``ReportPart.claims``, placed by its
``ledger_order``) and declares the rules of its verdicts in its own report module
(``benchmarks/studies/<study>/report.py``) before reading any result. Verdicts: ``supported``,
``contradicted``, ``equivalent``, ``inconclusive`` (the rules of :mod:`benchmarks.core.stats` for
paired differences, or a study's rule for slopes and exact counts), ``not testable at this budget``
(a stratum both arms have not learned: under the suite's floor) and ``not testable here`` (with
why). Beside a paired comparison's verdict stands what it could have detected (``detectable``).
"""

from __future__ import annotations

import pandas as pd

from benchmarks.core.stats import NOT_TESTABLE_FLOOR
from benchmarks.report.render import Col, Table

NOT_TESTABLE = "not testable here"
VERDICTS = ("supported", "contradicted", "equivalent", "inconclusive", NOT_TESTABLE, NOT_TESTABLE_FLOOR)
COLUMNS = ["claim", "source", "measured", "interval", "verdict", "detectable", "why"]


def ledger(parts) -> pd.DataFrame:
    """One row per claim of the report parts (``ReportPart``), in their ``ledger_order``:
    ``claim``, ``source``, ``measured``, ``interval``, ``verdict``, ``detectable`` (what a paired
    comparison could have detected: its minimum detectable effect; empty for other rules), ``why``."""
    rows = [{"detectable": "", **c} for p in sorted(parts, key=lambda p: p.ledger_order) for c in p.claims]
    bad = sorted({c.get("verdict") for c in rows} - set(VERDICTS), key=str)
    if bad:
        raise ValueError(f"claims with verdicts {bad}; a verdict is one of {list(VERDICTS)}")
    return pd.DataFrame(rows, columns=COLUMNS)


def ledger_table(led: pd.DataFrame, provenance: str) -> Table:
    """The ledger as a report table (text columns, wrapped)."""
    recs, rows = [], []
    for _, r in led.iterrows():
        label = r["claim"]
        rows.append(label)
        for c in ("source", "measured", "interval", "verdict", "detectable", "why"):
            recs.append(dict(row=label, col=c, text=r[c]))
    cols = [Col("source", "source", "source", "text", width="2.0cm"),
            Col("measured", "measured", "measured", "text", width="3.0cm"),
            Col("interval", "estimate [95\\% CI]", "estimate [95% CI]", "text", width="2.4cm"),
            Col("verdict", "verdict", "verdict", "text", width="1.8cm"),
            Col("detectable", "could detect (MDE)", "could detect (MDE)", "text", width="1.9cm"),
            Col("why", "rule / why", "rule / why", "text", width="2.4cm")]  # fmt: skip
    cap = ("Claims ledger: every claim of the paper and the public forks that this suite can test, what was "
           "measured, the estimate with its 95% interval and the verdict (rules declared in "
           f"each study's report module, benchmarks/studies/<study>/report.py, before reading results). "
           f"Rows from: {provenance}.")  # fmt: skip
    return Table(
        name="claims",
        caption=cap,
        label="tab:claims",
        stub="claim",
        rows=rows,
        cols=cols,
        cells=pd.DataFrame(recs),
        wide=True,
        small=True,
        extra={"stub_width": "2.5cm"},
    )
