"""The claims ledger: every claim of the paper and the public forks that the suite can test, with its
source, what was measured, the interval and the verdict.

Verdicts: ``supported``, ``contradicted``, ``equivalent``, ``inconclusive`` (the rules of
:mod:`benchmarks.stats` for paired accuracy differences) and ``not testable here`` (with why).
Rules declared here, before reading any result:

- *Linear in N* (time or memory): the log-log slope k over N >= the fit threshold, with its 95%
  t interval; ``supported`` when the interval's upper end is <= ``LINEAR_MAX`` (1.15: O(N) up to
  slow drifts such as cache effects), ``contradicted`` when its lower end is > ``LINEAR_MAX``,
  otherwise ``inconclusive``. A slope below 1 is consistent with O(N) (fixed costs dominate small N).
- *Exact counts* (parameters, GFLOPs): ``supported`` when the measured count rounds to the claimed
  figure at the claim's precision, ``contradicted`` otherwise (a count has no sampling interval).
- *Better detection* (size, occlusion strata): the suite's paired-difference verdicts (95% t
  interval over seeds, Holm across strata, the suite's region of practical equivalence).
- *On par with the controls*: ``equivalent`` when the 95% interval of the paired top-1 difference
  lies within +-``TOP1_ROPE`` points.
"""

from __future__ import annotations

import math

import pandas as pd

from benchmarks.report import tables as T
from benchmarks.report.render import Col, Table

LINEAR_MAX = 1.15
TOP1_ROPE = 1.0  # top-1 points (percent)
NOT_TESTABLE = "not testable here"
VERDICTS = ("supported", "contradicted", "equivalent", "inconclusive", NOT_TESTABLE)


def _linear(k: float, lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if hi <= LINEAR_MAX:
        return "supported"
    if lo > LINEAR_MAX:
        return "contradicted"
    return "inconclusive"


def _slope_claims(ops: pd.DataFrame, fit_min_tokens: int) -> list[dict]:
    out = []
    specs = (("time", "latency_ms", "fwd"), ("memory", "peak_mib", "fwd+bwd"))
    for q, metric, p in specs:
        for variant, level in ((T.CORE_TSSA, "core"), (T.LAYER_TSSA, "layer")):
            claim = f"Linear {q} in N ({level})"
            src = "paper, Table 1; public forks"
            g = (
                ops[(ops["variant"] == variant) & (ops["pass"] == p) & (ops["metric"] == metric)]
                if not ops.empty
                else ops
            )
            g = (
                g[g["tokens"].astype(int) >= fit_min_tokens].drop_duplicates("tokens", keep="last")
                if not g.empty
                else g
            )
            if len(g) < 2:
                out.append(dict(claim=claim, source=src, measured=f"no {variant} {p} {metric} rows at N ≥ {fit_min_tokens}",
                                interval="", verdict=NOT_TESTABLE,
                                why="no complexity rows selected; run the cpu suite's complexity sweep"))  # fmt: skip
                continue
            k, lo, hi = T.slope_interval(g["tokens"], g["value"])
            ns = sorted(int(x) for x in g["tokens"])
            out.append(dict(claim=claim, source=src,
                            measured=f"log-log slope of {variant} {p} {'median time' if q == 'time' else 'peak memory'}, "
                                     f"N = {ns[0]}..{ns[-1]} ({len(ns)} sizes)",
                            interval=f"k = {k:.2f} [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else f"k = {k:.2f}",
                            verdict=_linear(k, lo, hi),
                            why=f"linear: upper end of k's 95% CI ≤ {LINEAR_MAX}"))  # fmt: skip
    return out


def _speed_16k(ops: pd.DataFrame) -> dict:
    claim = "16K tokens: ToST ~12 ms vs ViT ~300 ms, ~0.13 GB vs ~17 GB"
    src = "paper, speed/memory figure (GPU, full models)"
    ctx = ""
    if not ops.empty:
        g = ops[ops["tokens"].astype(int) == 16384]

        def val(v, p, m):
            s = g[(g["variant"] == v) & (g["pass"] == p) & (g["metric"] == m)]
            return float(s["value"].iloc[-1]) if not s.empty else None

        ref = "softmax" if val("softmax", "fwd", "latency_ms") else "sdpa"
        t1, t0 = val(T.CORE_TSSA, "fwd", "latency_ms"), val(ref, "fwd", "latency_ms")
        m1, m0 = val(T.CORE_TSSA, "fwd", "peak_mib"), val(ref, "fwd", "peak_mib")
        if t1 and t0:
            ctx = f"context only, CPU core at N = 16384: {T.CORE_TSSA} {t1:.1f} ms vs {ref} {t0:.1f} ms"
            if m1 and m0:
                ctx += f", peak {m1:.0f} MiB vs {m0:.0f} MiB"
    gpu = (
        not ops.empty
        and "prov.device" in ops
        and (ops["prov.device"].astype(str).str.startswith("cuda")).any()
    )
    why = "needs full models timed on a GPU; only CPU rows here (no gpu run)" if not gpu else "GPU rows exist but no full-model 16K comparison is defined"  # fmt: skip
    return dict(
        claim=claim,
        source=src,
        measured=ctx or "nothing comparable",
        interval="",
        verdict=NOT_TESTABLE,
        why=why,
    )


def _fork_counts(yolo: pd.DataFrame) -> list[dict]:
    src = "public C2PSA-TSSA forks"
    ok = yolo[(yolo["kind"] == "complexity") & yolo["error"].isna()] if not yolo.empty else yolo
    ok = ok[ok["variant"] == "yolo11n-tssa"] if not ok.empty else ok
    out = []
    for claim, metric, target, scale, digits, unit in (
        ("yolo11n-TSSA has 2.61M parameters", "params", 2.61, 1e6, 2, "M"),
        ("yolo11n-TSSA costs 6.6 GFLOPs", "gflops_ultralytics", 6.6, 1.0, 1, " GFLOPs"),
    ):
        s = ok[ok["metric"] == metric] if not ok.empty else ok
        if s.empty:
            out.append(dict(claim=claim, source=src, measured="no yolo11n-tssa count rows", interval="",
                            verdict=NOT_TESTABLE, why="run the yolo-table suite"))  # fmt: skip
            continue
        v = float(s["value"].iloc[-1]) / scale
        ok_ = round(v, digits) == round(target, digits)
        what = (
            "parameter count"
            if metric == "params"
            else "Ultralytics' GFLOPs estimate at 640 px (the forks' tool)"
        )
        out.append(dict(claim=claim, source=src, measured=f"{what}: {v:.{digits + 2}f}{unit}",
                        interval="exact count", verdict="supported" if ok_ else "contradicted",
                        why=f"supported when it rounds to {target}{unit}"))  # fmt: skip
    return out


def _detection_claims(summary: dict | None) -> list[dict]:
    groups = (("Better multi-scale detection", ("ap_small", "ap_medium", "ap_large")),
              ("Better occluded detection", ("ap_occ_partial", "ap_occ_heavy")))  # fmt: skip
    src = "public C2PSA-TSSA forks"
    out = []
    ver = summary["verdicts"] if summary else pd.DataFrame()
    for title, mets in groups:
        sel = ver[ver["metric"].isin(mets)] if not ver.empty else ver
        if sel.empty:
            out.append(dict(claim=title, source=src, measured="no detection verdicts", interval="",
                            verdict=NOT_TESTABLE, why="run the cpu suite's detection study"))  # fmt: skip
            continue
        for _, r in sel.iterrows():
            out.append(dict(claim=f"{title}: {T.M.get(r['metric']).label}", source=src,
                            measured=f"paired AP difference {r['arm']} − {r['reference']}, n = {r['n']} seeds",
                            interval=f"{r['mean_diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]",
                            verdict=r["verdict"],
                            why=f"Holm p = {r['p_adj']:.2g}; ROPE ±{r['rope']} AP"))  # fmt: skip
    return out


def _classification_claim(cls: pd.DataFrame) -> list[dict]:
    from benchmarks import stats

    claim = "ToST on par with its softmax and XCA controls"
    src = "paper, Table 2 (ToST-S 77.9, XCiT-S 80.5, ViT-S 79.8 top-1)"
    ok = cls[(cls["kind"] == "classification") & cls["error"].isna()] if not cls.empty else cls
    metric = T.classification_metric(ok) if not ok.empty else None
    if metric is None:
        return [dict(claim=claim, source=src, measured="no classification rows", interval="", verdict=NOT_TESTABLE,
                     why="missing: no classification rows in the selected runs")]  # fmt: skip
    long = ok[ok["metric"] == metric][["variant", "seed", "value"]].rename(columns={"variant": "arm"})
    long = long.assign(
        metric="top1", value=long["value"].astype(float) * (100.0 if T.M.get(metric).unit == "1" else 1.0)
    )
    tost = sorted(a for a in set(long["arm"]) if "softmax" not in a and "xca" not in a)
    out = []
    for ctrl in sorted(a for a in set(long["arm"]) if "softmax" in a or "xca" in a):
        for t in tost:
            pair = long[long["arm"].isin([t, ctrl])]
            d = stats.paired_differences(pair, reference=ctrl)
            if d.empty:
                continue
            r = d.iloc[0]
            lo, hi = r["ci_low"], r["ci_high"]
            v = stats.verdict(lo, hi, r["mean_diff"], r["p_value"], TOP1_ROPE)
            out.append(dict(claim=f"{claim}: {t} vs {ctrl}", source=src,
                            measured=f"paired top-1 difference (points), n = {int(r['n'])} seeds",
                            interval=f"{r['mean_diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]", verdict=v,
                            why=f"on par = equivalent within ±{TOP1_ROPE} points"))  # fmt: skip
    return out or [dict(claim=claim, source=src, measured="no ToST/control pair", interval="", verdict=NOT_TESTABLE,
                        why="the classification rows lack a softmax or XCA control")]  # fmt: skip


def ledger(complexity: pd.DataFrame, detection_summary: dict | None, yolo: pd.DataFrame,
           classification: pd.DataFrame, fit_min_tokens: int = 1024) -> pd.DataFrame:  # fmt: skip
    """One row per claim: ``claim``, ``source``, ``measured``, ``interval``, ``verdict``, ``why``."""
    ops = T.operator_rows(complexity) if not complexity.empty else complexity
    rows = _slope_claims(ops, fit_min_tokens)
    rows.append(_speed_16k(ops))
    rows += _fork_counts(yolo)
    rows += _detection_claims(detection_summary)
    rows += _classification_claim(classification)
    return pd.DataFrame(rows, columns=["claim", "source", "measured", "interval", "verdict", "why"])


def ledger_table(led: pd.DataFrame, provenance: str) -> Table:
    """The ledger as a report table (text columns, wrapped)."""
    recs, rows = [], []
    for _, r in led.iterrows():
        label = r["claim"]
        rows.append(label)
        for c in ("source", "measured", "interval", "verdict", "why"):
            recs.append(dict(row=label, col=c, text=r[c]))
    cols = [Col("source", "source", "source", "text", width="2.2cm"),
            Col("measured", "measured", "measured", "text", width="3.4cm"),
            Col("interval", "estimate [95\\% CI]", "estimate [95% CI]", "text", width="2.6cm"),
            Col("verdict", "verdict", "verdict", "text", width="1.9cm"),
            Col("why", "rule / why", "rule / why", "text", width="2.5cm")]  # fmt: skip
    cap = ("Claims ledger: every claim of the paper and the public forks that this suite can test, what was "
           "measured, the estimate with its 95% interval and the verdict (rules declared in "
           f"benchmarks/report/claims.py before reading results). Rows from: {provenance}.")  # fmt: skip
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
