"""Seed statistics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmarks.core.stats import describe, holm, paired_differences, summarise, verdict, verdicts

T975_DF2 = 4.302652729911275  # t quantile 0.975 with 2 degrees of freedom (tables)


def long(values: dict[str, list[float]], metric: str = "ap") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"arm": a, "seed": s, "metric": metric, "value": v}
            for a, vs in values.items()
            for s, v in enumerate(vs)
        ]
    )


def test_describe_by_hand():
    df = long({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.5, 4.0]})
    r = describe(df).set_index("arm").loc["a"]
    assert (r["n"], r["mean"], r["sd"]) == (3, 2.0, 1.0)
    half = T975_DF2 * 1.0 / math.sqrt(3)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((2 - half, 2 + half))
    one = describe(long({"a": [1.0]})).iloc[0]
    assert one["n"] == 1 and math.isnan(one["ci_low"])  # no interval from one seed


def test_paired_difference_by_hand():
    # differences 1, 1.5, 1: mean 7/6, sd sqrt(1/12), se 1/6, t = 7 with 2 degrees of freedom;
    # two-sided p for df = 2: 1 - t / sqrt(2 + t^2)
    df = long({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.5, 4.0]})
    r = paired_differences(df, reference="a").iloc[0]
    assert (r["arm"], r["reference"], r["n"]) == ("b", "a", 3)
    assert r["mean_diff"] == pytest.approx(7 / 6) and r["sd_diff"] == pytest.approx(math.sqrt(1 / 12))
    assert r["t"] == pytest.approx(7.0)
    assert r["p_value"] == pytest.approx(1 - 7 / math.sqrt(51))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((7 / 6 - T975_DF2 / 6, 7 / 6 + T975_DF2 / 6))


def test_pairs_only_seeds_both_arms_have():
    df = long({"a": [1.0, 2.0, 3.0], "b": [2.0, 3.0]})  # b lacks seed 2
    r = paired_differences(df, reference="a").iloc[0]
    assert (
        r["n"] == 2 and r["mean_diff"] == 1.0 and r["p_value"] == 0.0 and r["ci_low"] == r["ci_high"] == 1.0
    )
    with pytest.raises(ValueError, match="unknown reference arm 'c'"):
        paired_differences(df, reference="c")
    with pytest.raises(ValueError, match="two values for arm='a', seed=0"):
        paired_differences(pd.concat([df, df.iloc[:1]]), reference="a")
    with pytest.raises(ValueError, match="lacks column"):
        paired_differences(df.rename(columns={"seed": "s"}), reference="a")


def test_other_arm_column_name():
    df = long({"x": [1.0, 2.0], "y": [1.5, 2.5]}).rename(columns={"arm": "variant"})
    assert paired_differences(df, reference="x", arm="variant")["mean_diff"].tolist() == [0.5]
    assert describe(df, arm="variant")["mean"].tolist() == [1.5, 2.0]


def test_holm_by_hand():
    diffs = pd.DataFrame(
        {"arm": ["t"] * 4, "metric": ["s", "m", "l", "other"], "p_value": [0.01, 0.04, 0.03, 0.001]}
    )
    # sorted p 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04 -> monotone 0.03, 0.06, 0.06
    out = holm(diffs, family=["s", "m", "l"])
    assert out["p_holm"].tolist()[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(out["p_holm"].iloc[3])  # outside the family


@pytest.mark.parametrize(
    "mean, p, p_tost, hib, testable, expected",
    [
        (0.0005, 0.7, 0.01, True, True, "equivalent"),
        (0.0025, 0.01, 0.02, True, True, "equivalent"),  # significant but inside the ROPE
        (0.017, 0.01, 0.9, True, True, "supported"),
        (-0.017, 0.01, 0.9, True, True, "contradicted"),
        (-0.017, 0.01, 0.9, False, True, "supported"),  # lower is better
        (0.01, 0.3, 0.4, True, True, "inconclusive"),
        (0.017, 0.06, 0.9, True, True, "inconclusive"),  # not significant after Holm
        (0.01, math.nan, math.nan, True, True, "inconclusive"),
        (0.017, 0.01, 0.01, True, False, "not testable at this budget"),  # both arms under the floor
    ],
)
def test_verdict_rules(mean, p, p_tost, hib, testable, expected):
    assert verdict(mean, p, p_tost, higher_is_better=hib, testable=testable) == expected


def _two_strata():
    return pd.concat(
        [
            long({"ref": [0.30, 0.31, 0.32, 0.30, 0.31], "tssa": [0.35, 0.36, 0.37, 0.36, 0.35]}, "ap_small"),
            long(
                {"ref": [0.50, 0.52, 0.51, 0.50, 0.52], "tssa": [0.501, 0.519, 0.511, 0.501, 0.52]},
                "ap_large",
            ),
        ]
    )


def test_verdicts_from_a_table():
    df = _two_strata()
    d = holm(paired_differences(df, reference="ref"), family=["ap_small", "ap_large"])
    claims = [
        {"name": "small", "arm": "tssa", "metric": "ap_small"},
        {"name": "large", "arm": "tssa", "metric": "ap_large"},
    ]
    v = verdicts(d, claims, rope=0.005, long=df, family=["ap_small", "ap_large"]).set_index("claim")
    assert v.loc["small", "verdict"] == "supported" and v.loc["large", "verdict"] == "equivalent"
    assert v.loc["small", "p_adj"] == pytest.approx(2 * min(d["p_value"]))  # Holm: smallest of 2 times 2
    assert v.loc["small", "alpha_mde"] == pytest.approx(0.025)  # first Holm step: alpha / 2
    with pytest.raises(ValueError, match="no paired difference for arm 'tssa' and metric 'ap_medium'"):
        verdicts(d, [{"name": "m", "arm": "tssa", "metric": "ap_medium"}], rope=0.005, long=df)


def test_tost_is_statsmodels_and_the_90_interval():
    from statsmodels.stats.weightstats import ttost_paired

    from benchmarks.core.stats import tost

    rng = np.random.default_rng(0)
    y = rng.normal(0.4, 0.02, size=8)
    x = y + rng.normal(0.001, 0.002, size=8)
    p = tost(x, y, 0.005)
    assert p == ttost_paired(x, y, -0.005, 0.005)[0]
    # p < 0.05 exactly when the 90% t interval of the differences lies inside the region
    d = x - y
    half = stats.t.ppf(0.95, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    inside = -0.005 < d.mean() - half and d.mean() + half < 0.005
    assert inside and p < 0.05
    assert tost(x, y, 0.0005) > 0.05  # a region narrower than the mean difference is not shown
    assert tost(x[:1], y[:1], 0.005) != tost(x[:1], y[:1], 0.005)  # NaN below 2 pairs
    assert tost([1.0, 2.0], [1.0, 2.0], 0.1) == 0.0 and tost([1.5, 2.5], [1.0, 2.0], 0.1) == 1.0


def test_mde_is_statsmodels_power_and_detects_with_that_power():
    from statsmodels.stats.power import TTestPower

    from benchmarks.core.stats import mde

    e = mde(0.01, 5, 0.05)
    assert e == pytest.approx(TTestPower().solve_power(nobs=5, alpha=0.05, power=0.8) * 0.01)
    # the paired t test at that true effect rejects in about 80% of simulated runs
    rng = np.random.default_rng(1)
    rejects = [stats.ttest_1samp(rng.normal(e, 0.01, size=5), 0).pvalue < 0.05 for _ in range(4000)]
    assert abs(np.mean(rejects) - 0.8) < 0.025
    assert mde(0.01, 5, 0.05 / 6) > e  # a stricter alpha needs a larger effect
    assert mde(0.01, 10, 0.05) < e  # more seeds resolve less
    assert mde(0.0, 5, 0.05) == 0.0 and math.isnan(mde(0.01, 1, 0.05))


def test_floor_makes_a_claim_not_testable():
    df = pd.concat([long({"ref": [0.01, 0.02, 0.012], "tssa": [0.03, 0.04, 0.035]}, "ap_heavy"),
                    long({"ref": [0.01, 0.02, 0.012], "tssa": [0.06, 0.07, 0.065]}, "ap_small")])  # fmt: skip
    claims = [
        {"name": "h", "arm": "tssa", "metric": "ap_heavy"},
        {"name": "s", "arm": "tssa", "metric": "ap_small"},
    ]
    s = summarise(df, "ref", family=[], claims=claims, rope=0.005, floor=0.05)
    v = s["verdicts"].set_index("claim")
    assert v.loc["h", "verdict"] == "not testable at this budget"
    assert v.loc["s", "verdict"] != "not testable at this budget"  # one arm over the floor
    assert summarise(df, "ref", family=[], claims=claims, rope=0.005)["verdicts"]["verdict"].tolist() == [
        "supported",
        "supported",
    ]


def test_a_control_has_its_own_family_and_decides_the_credit():
    base = [0.30, 0.31, 0.32, 0.30, 0.31]
    df = pd.concat(
        [
            long({"ref": base, "noattn": [b + 0.05 for b in base], "tssa": [0.35, 0.36, 0.37, 0.36, 0.35]}, "ap_small"),
            long({"ref": base, "noattn": base, "tssa": [0.35, 0.365, 0.37, 0.36, 0.355]}, "ap_large"),
        ]
    )  # fmt: skip
    claims = [{"name": "small", "arm": "tssa", "metric": "ap_small"},
              {"name": "large", "arm": "tssa", "metric": "ap_large"}]  # fmt: skip
    s = summarise(df, "ref", family=["ap_small", "ap_large"], claims=claims, rope=0.005, controls=["noattn"])
    v = s["verdicts"]
    prim = v[v["role"] == "primary"].set_index("claim")
    ctrl = v[v["role"] == "control"].set_index("claim")
    assert list(ctrl["reference"].unique()) == ["noattn"]
    assert prim.loc["small", "verdict"] == "supported" and prim.loc["small", "credited"] is False
    assert prim.loc["large", "verdict"] == "supported" and prim.loc["large", "credited"] is True
    # the control's Holm family is its own: its p-values are adjusted over its own two strata
    cd = s["control_diffs"]
    assert set(cd["reference"]) == {"noattn"} and cd["p_holm"].notna().sum() == 2
    raw = paired_differences(df[df["arm"].isin(["noattn", "tssa"])], reference="noattn")
    assert sorted(cd["p_holm"]) == pytest.approx(sorted(holm(raw, family=["ap_small", "ap_large"])["p_holm"]))


def test_markdown_cells_of_the_study_summaries():
    from benchmarks.core.stats import difference_cells, interval_text, mean_sd_cells

    desc = pd.DataFrame(
        [
            {"arm": "a", "metric": "m", "mean": 0.5, "sd": 0.25, "n": 3},
            {"arm": "a", "metric": "k", "mean": 2.0, "sd": float("nan"), "n": 1},
        ]
    )
    fmt = lambda v, m: f"{v:.2f}"  # noqa: E731
    assert mean_sd_cells(desc, "a", ["m", "k", "z"], fmt) == ["0.50 ± 0.25 (3)", "2.00 ± n/a (1)", "-"]
    diffs = pd.DataFrame(
        [
            {"arm": "b", "metric": "m", "mean_diff": 0.125, "ci_low": -0.5, "ci_high": 0.75, "p_holm": 0.0312},
            {"arm": "b", "metric": "k", "mean_diff": -1.0, "ci_low": float("nan"), "ci_high": float("nan"),
             "p_holm": float("nan")},
        ]
    )  # fmt: skip
    assert difference_cells(diffs, "b", ["m", "k", "z"], lambda m: 3) == [
        "+0.125 [-0.500, +0.750], p=0.031",
        "-1.000 [n/a: < 2 seeds]",
        "-",
    ]
    assert interval_text(-0.5, 0.75, 1) == "[-0.5, +0.8]"
