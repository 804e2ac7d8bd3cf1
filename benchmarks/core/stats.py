"""Seeds -> mean, sd, n, t intervals, paired differences, Holm correction and claim verdicts.

Every function takes a *long* DataFrame with one row per (arm, seed, metric): columns ``arm``,
``seed``, ``metric``, ``value`` (the arm column can be named otherwise, e.g. ``variant``, through
the ``arm=`` argument). Nothing is computed by hand: means and sds are pandas', t intervals and
paired t tests scipy's (``scipy.stats.t.interval``, ``scipy.stats.ttest_rel``), the Holm
correction statsmodels' (``multipletests(method="holm")``).

With 3-5 seeds a t interval on the paired differences is the honest choice (a percentile
bootstrap is overconfident at that n). Arms are compared *paired by seed*: the same seed gives
every arm the same data order and the same initial weights outside the changed block, so the
seed-to-seed variation common to both arms cancels in the difference ``d_s = x_arm,s - x_ref,s``:

    mean d = (1/n) sum_s d_s,   sd_d = sqrt(sum_s (d_s - mean d)^2 / (n - 1)),
    95% interval = mean d -+ t_{0.975, n-1} sd_d / sqrt(n),   p = 2 P(T_{n-1} > |mean d| sqrt(n) / sd_d).

A verdict on a claim ("arm is better than the reference on metric") follows from the Holm-adjusted
p, two one-sided tests against a region of practical equivalence (ROPE, +-``rope`` in the metric's
unit) and a floor, all declared before the results exist, in this order:

1. ``not testable at this budget``: the metric's mean is under ``floor`` for both arms (a stratum
   the models have not learned: a difference there says nothing about the claim);
2. ``equivalent``: two one-sided paired t tests (statsmodels' ``ttost_paired``) reject a
   difference of -rope or less and one of +rope or more at ``alpha``, i.e. the 90% interval lies
   inside [-rope, +rope];
3. ``supported``: Holm-adjusted p < alpha and the mean difference is in the claimed direction;
4. ``contradicted``: Holm-adjusted p < alpha and the mean difference is against it;
5. ``inconclusive``: otherwise (also with fewer than 2 paired seeds).

Beside each verdict stands the *minimum detectable effect* (:func:`mde`): the smallest true
difference that a two-sided paired t test at the verdict's alpha finds with power 0.8 given the
run's n and paired sd (statsmodels' ``TTestPower``). Within a Holm family of m strata the alpha
is the first step's alpha / m, a conservative bound. "Inconclusive" then reads "an effect under
MDE would go undetected at n seeds".

A *control* (``summarise(controls=...)``) repeats every claim against a second reference, with
its own Holm family: a gain over the stock model is credited to the changed block only if it also
shows against the control (for detection: TSSA against the model without attention).

>>> import pandas as pd
>>> df = pd.DataFrame({"arm": ["a", "a", "a", "b", "b", "b"], "seed": [0, 1, 2] * 2,
...                    "metric": ["ap"] * 6, "value": [1.0, 2.0, 3.0, 2.0, 3.5, 4.0]})
>>> describe(df)[["arm", "n", "mean", "sd"]].to_dict("records")[0]
{'arm': 'a', 'n': 3, 'mean': 2.0, 'sd': 1.0}
>>> paired_differences(df, reference="a")[["arm", "n", "mean_diff"]].to_dict("records")
[{'arm': 'b', 'n': 3, 'mean_diff': 1.1666666666666667}]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

__all__ = [
    "describe",
    "paired_differences",
    "holm",
    "verdict",
    "verdicts",
    "summarise",
    "long_rows",
    "mde",
    "tost",
    "VERDICTS",
    "NOT_TESTABLE_FLOOR",
]

NOT_TESTABLE_FLOOR = "not testable at this budget"
VERDICTS = ("supported", "contradicted", "equivalent", "inconclusive", NOT_TESTABLE_FLOOR)
POWER = 0.8


def _check(df: pd.DataFrame, cols: Iterable[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"the results table lacks column(s) {missing}; it has {list(df.columns)}")


def _t_interval(mean: float, sd: float, n: int, confidence: float) -> tuple[float, float]:
    if n < 2 or not np.isfinite(sd):
        return math.nan, math.nan
    if sd == 0:
        return mean, mean
    lo, hi = stats.t.interval(confidence, n - 1, loc=mean, scale=sd / math.sqrt(n))
    return float(lo), float(hi)


def describe(
    df: pd.DataFrame,
    *,
    arm: str = "arm",
    metric: str = "metric",
    value: str = "value",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per (arm, metric): ``n``, ``mean``, ``sd`` (ddof 1) over seeds and the t interval ``ci_low``, ``ci_high``.

    Rows with a NaN value are left out of ``n`` (a stratum without ground truth, say).
    """
    _check(df, [arm, metric, value])
    g = df.dropna(subset=[value]).groupby([arm, metric], sort=True)[value]
    out = g.agg(n="count", mean="mean", sd="std").reset_index()
    ci = [_t_interval(m, s, n, confidence) for m, s, n in zip(out["mean"], out["sd"], out["n"])]
    out["ci_low"] = [c[0] for c in ci]
    out["ci_high"] = [c[1] for c in ci]
    return out


def paired_differences(
    df: pd.DataFrame,
    reference: str,
    *,
    arm: str = "arm",
    seed: str = "seed",
    metric: str = "metric",
    value: str = "value",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per (arm != reference, metric): the paired difference ``arm - reference`` over the seeds both have.

    Columns: ``arm``, ``reference``, ``metric``, ``n`` (paired seeds), ``mean_diff``, ``sd_diff``,
    ``ci_low``, ``ci_high`` (t interval), ``t``, ``p_value`` (two-sided ``ttest_rel``; 1 when every
    difference is 0, 0 when they are all equal and non-zero).

    Raises:
        ValueError: missing columns, an unknown reference, or two rows for one (arm, seed, metric).
    """
    _check(df, [arm, seed, metric, value])
    if reference not in set(df[arm]):
        raise ValueError(f"unknown reference arm {reference!r}; the table has {sorted(set(df[arm]))}")
    dup = df.duplicated([arm, seed, metric])
    if dup.any():
        r = df[dup].iloc[0]
        key = {c: (r[c].item() if hasattr(r[c], "item") else r[c]) for c in (arm, seed, metric)}
        raise ValueError(f"two values for arm={key[arm]!r}, seed={key[seed]!r}, metric={key[metric]!r}")
    wide = df.pivot_table(index=[metric, seed], columns=arm, values=value, aggfunc="first")
    rows = []
    for other in sorted(a for a in set(df[arm]) if a != reference):
        for m, block in wide.groupby(level=0, sort=True):
            pair = block[[reference, other]].dropna()
            x, y = pair[other].to_numpy(float), pair[reference].to_numpy(float)
            n = len(pair)
            d = x - y
            mean = float(d.mean()) if n else math.nan
            sd = float(d.std(ddof=1)) if n > 1 else math.nan
            if n < 2:
                t, p = math.nan, math.nan
            elif sd == 0:
                t, p = (math.inf if mean > 0 else -math.inf if mean < 0 else 0.0), (0.0 if mean else 1.0)
            else:
                res = stats.ttest_rel(x, y)
                t, p = float(res.statistic), float(res.pvalue)
            lo, hi = _t_interval(mean, sd, n, confidence)
            rows.append(
                dict(
                    arm=other,
                    reference=reference,
                    metric=m,
                    n=n,
                    mean_diff=mean,
                    sd_diff=sd,
                    ci_low=lo,
                    ci_high=hi,
                    t=t,
                    p_value=p,
                )
            )
    return pd.DataFrame(
        rows,
        columns=[
            "arm",
            "reference",
            "metric",
            "n",
            "mean_diff",
            "sd_diff",
            "ci_low",
            "ci_high",
            "t",
            "p_value",
        ],
    )


def holm(
    diffs: pd.DataFrame, family: Iterable[str] | None = None, *, by: str = "arm", alpha: float = 0.05
) -> pd.DataFrame:
    """Add ``p_holm``: Holm-adjusted p-values across the metrics of ``family`` within each ``by`` group.

    ``family``: the strata tested together (e.g. AP small/medium/large and every occlusion
    level); metrics outside it get ``p_holm = NaN``; None means every metric. NaN p-values take no
    part (and stay NaN). Returns a copy.
    """
    out = diffs.copy()
    out["p_holm"] = math.nan
    fam = set(out["metric"]) if family is None else set(family)
    for _, idx in out[out["metric"].isin(fam) & out["p_value"].notna()].groupby(by).groups.items():
        _, p_adj, _, _ = multipletests(out.loc[idx, "p_value"].to_numpy(float), alpha=alpha, method="holm")
        out.loc[idx, "p_holm"] = p_adj
    return out


def mde(sd_diff: float, n: int, alpha: float, power: float = POWER) -> float:
    """The minimum detectable effect: the smallest true mean difference that a two-sided paired t test
    at ``alpha`` finds with probability ``power``, given ``n`` pairs whose differences have sd
    ``sd_diff`` (statsmodels' ``TTestPower`` solved for the standardised effect, times ``sd_diff``).

    NaN with fewer than 2 pairs or no finite sd; 0 when every difference is the same.

    >>> round(mde(0.003, 3, 0.05), 4)  # paired sd 0.3 AP points at 3 seeds: about 1 AP point
    0.0098
    """
    if n < 2 or not np.isfinite(sd_diff):
        return math.nan
    if sd_diff == 0:
        return 0.0
    d = TTestPower().solve_power(nobs=n, alpha=alpha, power=power, alternative="two-sided")
    return float(d) * float(sd_diff)


def tost(x, y, rope: float) -> float:
    """The p-value of two one-sided paired t tests of ``|mean(x - y)| < rope`` (statsmodels'
    ``ttost_paired``; the larger of the two one-sided p). Below alpha: the ``1 - 2 alpha`` interval
    lies inside [-rope, +rope]. NaN with fewer than 2 pairs; with every difference equal, 0 inside
    the region and 1 outside (no spread to test against)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2:
        return math.nan
    d = x - y
    if np.all(d == d[0]):
        return 0.0 if -rope < d[0] < rope else 1.0
    return float(ttost_paired(x, y, -rope, rope)[0])


def verdict(
    mean_diff: float,
    p_adj: float,
    p_tost: float,
    *,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    testable: bool = True,
) -> str:
    """The verdict on "the arm is better than the reference" (rules in the module doc).

    ``p_adj``: the Holm-adjusted p of the paired t test; ``p_tost``: :func:`tost`'s p;
    ``testable``: False when both arms are under the floor."""
    if not testable:
        return NOT_TESTABLE_FLOOR
    if np.isfinite(p_tost) and p_tost < alpha:
        return "equivalent"
    if np.isfinite(p_adj) and p_adj < alpha:
        better = mean_diff > 0 if higher_is_better else mean_diff < 0
        return "supported" if better else "contradicted"
    return "inconclusive"


def _pairs(long: pd.DataFrame, arm: str, reference: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The (arm, reference) values of ``metric`` over the seeds both have, in seed order."""
    sel = long[(long["metric"] == metric) & long["arm"].isin([arm, reference])].dropna(subset=["value"])
    wide = sel.pivot_table(index="seed", columns="arm", values="value", aggfunc="first")
    if arm not in wide or reference not in wide:
        return np.array([]), np.array([])
    wide = wide[[arm, reference]].dropna().sort_index()
    return wide[arm].to_numpy(float), wide[reference].to_numpy(float)


def verdicts(
    diffs: pd.DataFrame,
    claims: Iterable[Mapping],
    rope: float | Mapping[str, float],
    *,
    long: pd.DataFrame,
    higher_is_better: Mapping[str, bool] | None = None,
    alpha: float = 0.05,
    floor: float | None = None,
    family: Iterable[str] | None = None,
) -> pd.DataFrame:
    """One row per claim ``{"name", "arm", "metric"}``: the paired difference, its verdict and what it
    could have detected.

    ``diffs``: output of :func:`holm` (uses ``p_holm``, falling back to ``p_value`` where the metric
    was outside the Holm family). ``long``: the (arm, seed, metric, value) frame behind ``diffs``
    (the equivalence test and the floor read it). ``rope``: one value, or per metric.
    ``higher_is_better``: per metric (default True). ``floor``: a claim whose metric both arms
    average under it is not testable. ``family``: the Holm family ``diffs`` was adjusted over
    (None: every metric), for the MDE's alpha.

    Columns: ``claim``, ``arm``, ``reference``, ``metric``, ``n``, ``mean_diff``, ``sd_diff``,
    ``ci_low``, ``ci_high`` (95% t interval), ``ci90_low``, ``ci90_high`` (the interval that TOST
    compares with the ROPE), ``p_value``, ``p_adj``, ``p_tost``, ``rope``, ``alpha_mde``, ``mde``,
    ``arm_mean``, ``reference_mean``, ``verdict``.

    Raises:
        ValueError: a claim names an (arm, metric) that ``diffs`` does not have.
    """
    hib = dict(higher_is_better or {})
    rows = []
    for c in claims:
        sel = diffs[(diffs["arm"] == c["arm"]) & (diffs["metric"] == c["metric"])]
        if sel.empty:
            raise ValueError(
                f"claim {c.get('name', '')!r}: no paired difference for arm {c['arm']!r} and metric {c['metric']!r}; "
                f"arms {sorted(set(diffs['arm']))}, metrics {sorted(set(diffs['metric']))}"
            )
        r = sel.iloc[0]
        in_family = "p_holm" in r and pd.notna(r["p_holm"])
        p_adj = r["p_holm"] if in_family else r["p_value"]
        m = 1
        if in_family:
            fam = set(diffs["metric"]) if family is None else set(family)
            grp = diffs[(diffs["arm"] == c["arm"]) & diffs["metric"].isin(fam) & diffs["p_value"].notna()]
            m = max(len(grp), 1)
        width = rope[c["metric"]] if isinstance(rope, Mapping) else rope
        x, y = _pairs(long, c["arm"], r["reference"], c["metric"])
        arm_mean = float(x.mean()) if len(x) else math.nan
        ref_mean = float(y.mean()) if len(y) else math.nan
        testable = floor is None or not (arm_mean < floor and ref_mean < floor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p_tost = tost(x, y, width)
            lo90, hi90 = _t_interval(r["mean_diff"], r["sd_diff"], int(r["n"]), 1 - 2 * alpha)
            v = verdict(r["mean_diff"], p_adj, p_tost, higher_is_better=hib.get(c["metric"], True),
                        alpha=alpha, testable=testable)  # fmt: skip
        rows.append(
            dict(
                claim=c.get("name", f"{c['arm']} better on {c['metric']}"),
                arm=c["arm"],
                reference=r["reference"],
                metric=c["metric"],
                n=int(r["n"]),
                mean_diff=r["mean_diff"],
                sd_diff=r["sd_diff"],
                ci_low=r["ci_low"],
                ci_high=r["ci_high"],
                ci90_low=lo90,
                ci90_high=hi90,
                p_value=r["p_value"],
                p_adj=p_adj,
                p_tost=p_tost,
                rope=width,
                alpha_mde=alpha / m,
                mde=mde(r["sd_diff"], int(r["n"]), alpha / m),
                arm_mean=arm_mean,
                reference_mean=ref_mean,
                verdict=v,
            )
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ the summary pipeline
def long_rows(df: pd.DataFrame, kind: str, arm: str = "variant") -> pd.DataFrame:
    """The error-free rows of ``kind`` as the long (arm, seed, metric, value) frame the functions above take."""
    if df.empty or "kind" not in df:
        return pd.DataFrame(columns=["arm", "seed", "metric", "value"])
    ok = df[(df["kind"] == kind) & df["error"].isna()]
    return ok[[arm, "seed", "metric", "value"]].rename(columns={arm: "arm"})


def _verdicts_or_no_data(diffs: pd.DataFrame, claims: list[Mapping], rope, kw: dict) -> pd.DataFrame:
    """:func:`verdicts`, where a claim whose arm has no value of its metric (a stratum without ground
    truth in this suite's data) is a row of n = 0, "not testable at this budget"."""
    have = set(zip(diffs["arm"], diffs["metric"])) if not diffs.empty else set()
    ok = [c for c in claims if (c["arm"], c["metric"]) in have]
    out = verdicts(diffs, ok, rope, **kw) if ok else pd.DataFrame()
    ref = diffs["reference"].iloc[0] if not diffs.empty else None
    none = [dict(claim=c.get("name", f"{c['arm']} better on {c['metric']}"), arm=c["arm"], reference=ref,
                 metric=c["metric"], n=0, mean_diff=math.nan, sd_diff=math.nan, ci_low=math.nan, ci_high=math.nan,
                 ci90_low=math.nan, ci90_high=math.nan, p_value=math.nan, p_adj=math.nan, p_tost=math.nan,
                 rope=rope[c["metric"]] if isinstance(rope, Mapping) else rope, alpha_mde=math.nan, mde=math.nan,
                 arm_mean=math.nan, reference_mean=math.nan, verdict=NOT_TESTABLE_FLOOR)
            for c in claims if (c["arm"], c["metric"]) not in have]  # fmt: skip
    rows = pd.concat([out, pd.DataFrame(none)], ignore_index=True) if none else out
    order = {c.get("name", f"{c['arm']} better on {c['metric']}"): i for i, c in enumerate(claims)}
    return rows.sort_values("claim", key=lambda k: k.map(order), kind="stable").reset_index(drop=True)


def summarise(
    long: pd.DataFrame,
    reference: str,
    *,
    family: Iterable[str] | None = None,
    claims: Iterable[Mapping] = (),
    rope: float | Mapping[str, float] = 0.0,
    alpha: float = 0.05,
    higher_is_better: Mapping[str, bool] | None = None,
    floor: float | None = None,
    controls: Iterable[str] = (),
) -> dict:
    """One study summary from a long frame: ``describe`` (arm x metric over seeds), ``diffs``
    (every arm - ``reference``, paired by seed, Holm-adjusted across ``family`` within each arm;
    ``family=[]`` adjusts nothing) and ``verdicts`` (one per claim, :func:`verdicts`, with its MDE
    and equivalence test), with the ``reference``, ``rope`` and ``floor``.

    ``controls``: further references; every claim is tested against each of them too (its own
    paired differences and its own Holm family over ``family``): ``verdicts`` then holds one row
    per (claim, reference), column ``role`` ``"primary"`` or ``"control"``, and every primary row
    a ``credited`` column: ``True`` when the claim is supported against the reference *and* against
    every control present, ``False`` when it is supported against the reference only, ``None``
    otherwise. ``control_diffs``: the controls' paired differences. Without the reference or a
    second arm, ``diffs`` and ``verdicts`` are empty frames."""
    desc = describe(long)
    kw = dict(higher_is_better=higher_is_better, alpha=alpha, floor=floor, family=family, long=long)
    claims = list(claims)
    diffs, ver, cdiffs = pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    arms = set(long["arm"])
    if reference in arms and len(arms) > 1:
        diffs = holm(paired_differences(long, reference=reference), family=family, alpha=alpha)
        if claims:
            ver = _verdicts_or_no_data(diffs, claims, rope, kw).assign(role="primary")
            parts, cparts = [ver], []
            for ctrl in controls:
                mine = [c for c in claims if c["arm"] != ctrl]
                if ctrl not in arms or not mine:
                    continue
                d = paired_differences(
                    long[long["arm"].isin({ctrl, *(c["arm"] for c in mine)})], reference=ctrl
                )
                d = holm(d, family=family, alpha=alpha)
                cparts.append(d)
                parts.append(_verdicts_or_no_data(d, mine, rope, kw).assign(role="control"))
            if cparts:
                cdiffs = pd.concat(cparts, ignore_index=True)
                ctrl_rows = pd.concat(parts[1:], ignore_index=True)
                credited = []
                for _, r in ver.iterrows():
                    mine = ctrl_rows[(ctrl_rows["claim"] == r["claim"]) & (ctrl_rows["arm"] == r["arm"])]
                    if r["verdict"] != "supported" or mine.empty:
                        credited.append(None)
                    else:
                        credited.append(bool((mine["verdict"] == "supported").all()))
                parts[0] = ver.assign(credited=credited)
            ver = pd.concat(parts, ignore_index=True)
    return {"describe": desc, "diffs": diffs, "verdicts": ver, "control_diffs": cdiffs,
            "reference": reference, "rope": rope, "floor": floor, "controls": list(controls)}  # fmt: skip


# ------------------------------------------------------------------ Markdown cells of the study summaries
def interval_text(lo: float, hi: float, digits: int) -> str:
    """``[lo, hi]`` with signs at ``digits`` decimals; ``[n/a: < 2 seeds]`` when the interval is NaN."""
    if lo != lo:  # NaN: fewer than two (paired) seeds
        return "[n/a: < 2 seeds]"
    return f"[{lo:+.{digits}f}, {hi:+.{digits}f}]"


def mean_sd_cells(desc: pd.DataFrame, arm: str, metrics: Iterable[str], fmt) -> list[str]:
    """One arm's ``mean ± sd (n)`` per metric from a :func:`describe` frame: ``-`` where the arm has
    no value, sd ``n/a`` from a single seed; ``fmt(value, metric)`` formats the mean and the sd."""
    cells = []
    for m in metrics:
        r = desc[(desc["arm"] == arm) & (desc["metric"] == m)]
        if r.empty:
            cells.append("-")
            continue
        r = r.iloc[0]
        sd = fmt(r["sd"], m) if r["n"] > 1 else "n/a"
        cells.append(f"{fmt(r['mean'], m)} ± {sd} ({int(r['n'])})")
    return cells


def difference_cells(diffs: pd.DataFrame, arm: str, metrics: Iterable[str], digits) -> list[str]:
    """One arm's paired difference per metric from a :func:`paired_differences` frame:
    ``mean [95% t interval]`` at ``digits(metric)`` decimals, with ``, p=`` the Holm-adjusted p where
    :func:`holm` gave one; ``-`` where the arm has no value."""
    cells = []
    for m in metrics:
        r = diffs[(diffs["arm"] == arm) & (diffs["metric"] == m)]
        if r.empty:
            cells.append("-")
            continue
        r = r.iloc[0]
        d = digits(m)
        ph = f", p={r['p_holm']:.2g}" if "p_holm" in r and r["p_holm"] == r["p_holm"] else ""
        cells.append(f"{r['mean_diff']:+.{d}f} {interval_text(r['ci_low'], r['ci_high'], d)}{ph}")
    return cells
