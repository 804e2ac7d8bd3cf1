"""Aggregated tables from rows: detection accuracy and paired differences, efficiency, ToST against
its controls (beside the paper's Table 2), operator cost at selected N, slopes and crossovers.

Every function takes the rows of selected runs (:func:`benchmarks.store.load_rows`) and returns a
:class:`benchmarks.report.render.Table` (or None when the rows it needs are absent). Means, sds and
t intervals come from :mod:`benchmarks.stats`; slopes and crossovers from
:mod:`benchmarks.complexity.derive`; labels, units, precision and direction from the registry.
"""

from __future__ import annotations

import math

import pandas as pd

from benchmarks import metrics as M
from benchmarks import stats
from benchmarks.report.render import Col, Table

SIZE_METRICS = ("map50_95", "map50", "ap_small", "ap_medium", "ap_large")
OCC_METRICS = ("ap_occ_none", "ap_occ_partial", "ap_occ_heavy", "recall_occ_none", "recall_occ_partial",
               "recall_occ_heavy")  # fmt: skip


def diff_metrics(section: dict) -> tuple[str, ...]:
    """The paired differences the report shows: mAP50-95 and the strata the suite's Holm family names."""
    return ("map50_95", *section["holm_family"])


EFFICIENCY_METRICS = ("params", "gflops", "latency_ms", "train_time_s", "train_peak_mib")
SELECTED_N = (1024, 4096, 16384)
CORE_TSSA = "tssa:stream"  # what tssa's dispatch picks on CPU
LAYER_TSSA = "layer:tssa"

# The paper's Table 2 (ImageNet-1k top-1, %, and parameters), marked as the paper's wherever shown.
PAPER_TABLE2 = (
    ("ToST-T (paper)", 67.3, 5.8),
    ("ToST-S (paper)", 77.9, 22.6),
    ("ToST-M (paper)", 80.3, 68.1),
    ("XCiT-S (paper)", 80.5, 24.9),
    ("ViT-S (paper)", 79.8, 22.1),
)


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


def _col(metric: str, style: str = "pm", **kw) -> Col:
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


def _ok(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    if df.empty or "kind" not in df:
        return df.iloc[0:0]
    return df[(df["kind"] == kind) & df["error"].isna()]


def _arm_order(arms, reference: str) -> list[str]:
    return (
        [reference] + sorted(a for a in set(arms) if a != reference)
        if reference in set(arms)
        else sorted(arms)
    )


# ------------------------------------------------------------------------------------------ detection
def detection_long(df: pd.DataFrame) -> pd.DataFrame:
    """Detection rows as (arm, seed, metric, value)."""
    ok = _ok(df, "detection")
    return (
        ok[["variant", "seed", "metric", "value"]].rename(columns={"variant": "arm"}).astype({"value": float})
    )


def _describe_cells(long: pd.DataFrame) -> pd.DataFrame:
    d = stats.describe(long)
    return d.rename(columns={"arm": "row", "metric": "col", "ci_low": "lo", "ci_high": "hi"})


def detection_accuracy(df: pd.DataFrame, reference: str, which: str) -> Table | None:
    """Per arm: mean +- sd over seeds of the overall and size (``which="size"``) or occlusion metrics."""
    long = detection_long(df)
    if long.empty:
        return None
    mets = [m for m in (SIZE_METRICS if which == "size" else OCC_METRICS) if m in set(long["metric"])]
    cells = _describe_cells(long[long["metric"].isin(mets)])
    n = int(cells["n"].max())
    what = "overall and by object size" if which == "size" else "by occlusion level (AP and recall)"
    cap = (f"Detection accuracy per arm, {what}: mean ± sd over n = {n} seeds (COCO evaluator on the "
           f"validation set). Bold: the best arm, only when its 95% t interval is disjoint from the runner-up's. "
           f"{provenance(df[df['kind'] == 'detection'])}.")  # fmt: skip
    return Table(name=f"detection_{which}", caption=cap, label=f"tab:detection-{which}", stub="arm",
                 rows=_arm_order(long["arm"], reference), cols=[_col(m) for m in mets], cells=cells, wide=True,
                 small=True)  # fmt: skip


def detection_diffs(df: pd.DataFrame, section: dict) -> tuple[Table | None, pd.DataFrame]:
    """Paired differences (arm - reference, by seed) with 95% t intervals and Holm-adjusted p."""
    from benchmarks import detection_study

    det = df[df["kind"] == "detection"] if not df.empty else df
    if det.empty or det["error"].isna().sum() == 0:
        return None, pd.DataFrame()
    s = detection_study.summary(det, section)
    diffs = s["diffs"]
    shown = diff_metrics(section)
    diffs = diffs[diffs["metric"].isin(shown)]
    rows, recs = [], []
    for arm in sorted(set(diffs["arm"])):
        for m in shown:
            r = diffs[(diffs["arm"] == arm) & (diffs["metric"] == m)]
            if r.empty:
                continue
            r = r.iloc[0]
            label = f"{arm}: {M.get(m).label}"
            rows.append(label)
            recs += [dict(row=label, col="diff", mean=r["mean_diff"]),
                     dict(row=label, col="lo", mean=r["ci_low"]), dict(row=label, col="hi", mean=r["ci_high"]),
                     dict(row=label, col="p", mean=r["p_holm"] if pd.notna(r["p_holm"]) else r["p_value"]),
                     dict(row=label, col="n", mean=float(r["n"]))]  # fmt: skip
    cols = [Col("n", "$n$", "n", "value", 0), Col("diff", r"$\Delta$", "difference", "signed", 4),
            Col("lo", "95\\% CI low", "95% CI low", "signed", 4), Col("hi", "95\\% CI high", "95% CI high", "signed", 4),
            Col("p", "$p$ (Holm)", "p (Holm)", "value", 3)]  # fmt: skip
    cap = (f"Paired differences against {s['reference']} (same seed: same data order and initial weights outside "
           f"the changed block): mean difference in AP and its 95% t interval over the paired seeds; p from the "
           f"paired t test, Holm-adjusted across the size and occlusion strata (overall mAP unadjusted). "
           f"Region of practical equivalence ±{s['rope']} AP, declared in the suite before any result. "
           f"{provenance(det)}.")  # fmt: skip
    t = Table(name="detection_diffs", caption=cap, label="tab:detection-diffs", stub="arm: metric", rows=rows,
              cols=cols, cells=pd.DataFrame(recs), wide=True)  # fmt: skip
    return t, s


def efficiency(df: pd.DataFrame, reference: str) -> Table | None:
    """Per detection arm: params, GFLOPs, latency, training time and training-step peak memory."""
    long = detection_long(df)
    long = long[long["metric"].isin(EFFICIENCY_METRICS)]
    if long.empty:
        return None
    cells = _describe_cells(long)
    const = cells.groupby("col")["sd"].max().fillna(0) == 0
    cols = [
        _col(m, "value" if const.get(m, False) else "pm")
        for m in EFFICIENCY_METRICS
        if m in set(long["metric"])
    ]
    cap = (f"Efficiency per detection arm: parameters, GFLOPs (the project's counter), median inference latency "
           f"(batch 1), training time and training-step peak memory; mean ± sd over n = {int(cells['n'].max())} "
           f"seeds where they vary. {provenance(df[df['kind'] == 'detection'])}.")  # fmt: skip
    return Table(name="efficiency", caption=cap, label="tab:efficiency", stub="arm",
                 rows=_arm_order(long["arm"], reference), cols=cols, cells=cells, wide=True)  # fmt: skip


def yolo_models(df: pd.DataFrame) -> Table | None:
    """Model-level counts of every YOLO11 variant (yolo-table suite): params, GFLOPs, FLOPs, peak memory."""
    ok = _ok(df, "complexity")
    if ok.empty or "family" not in ok:
        return None
    ok = ok[(ok["family"] == "yolo") & ok["metric"].isin(["params", "gflops_ultralytics", "flops_torch"])]
    if ok.empty:
        return None
    recs = []
    for (v, m), g in ok.groupby(["variant", "metric"]):
        val = float(g["value"].iloc[-1])
        if m == "params":
            val /= 1e6
        if m == "flops_torch":
            val /= 1e9
        recs.append(dict(row=v, col=m, mean=val))
    sizes = sorted({int(x) for x in ok["image_size"].dropna()})
    cols = [Col("params", "params (M)", "parameters", "value", 3, "", "M"),
            Col("gflops_ultralytics", "GFLOPs (Ultralytics)", "GFLOPs (Ultralytics' estimate)", "value", 1),
            Col("flops_torch", "GFLOPs (counted)", "GFLOPs (counted)", "value", 2)]  # fmt: skip
    cap = (f"YOLO11 variants at {', '.join(map(str, sizes))} px: parameters, Ultralytics' GFLOPs estimate (thop on a "
           f"small image scaled by area) and the project's FLOP count (2 per multiply-accumulate plus elementwise "
           f"work, at the full size). {provenance(ok)}.")  # fmt: skip
    return Table(name="yolo_models", caption=cap, label="tab:yolo-models", stub="model", rows=sorted(set(ok["variant"])),
                 cols=cols, cells=pd.DataFrame(recs), small=True)  # fmt: skip


# ------------------------------------------------------------------------------------- classification
def classification_metric(ok: pd.DataFrame) -> str | None:
    """The top-1 metric of classification rows (a registered metric named ``top1...``), or None."""
    names = sorted(m for m in set(ok["metric"]) if m.startswith(("top1", "acc1")))
    return names[0] if names else None


def tost_controls(df: pd.DataFrame) -> tuple[Table, str | None]:
    """ToST against its controls (softmax, XCA) from classification rows, beside the paper's Table 2.

    Returns the table and a one-line message when the classification rows are missing.
    """
    ok = _ok(df, "classification")
    recs, rows, missing = [], [], None
    metric = classification_metric(ok) if not ok.empty else None
    if metric is not None:
        long = ok[ok["metric"] == metric][["variant", "seed", "value"]].rename(columns={"variant": "arm"})
        long = long.assign(metric="top1", value=long["value"].astype(float))
        scale = 100.0 if M.get(metric).unit == "1" else 1.0
        d = stats.describe(long)
        for _, r in d.iterrows():
            rows.append(r["arm"])
            recs.append(dict(row=r["arm"], col="top1", mean=r["mean"] * scale, sd=r["sd"] * scale,
                             lo=r["ci_low"] * scale, hi=r["ci_high"] * scale))  # fmt: skip
            recs.append(dict(row=r["arm"], col="source", text=f"measured, n = {int(r['n'])} seeds"))
        prov = provenance(ok)
    else:
        missing = ("no rows of kind 'classification' in the selected runs: the measured ToST-versus-controls "
                   "columns are missing (run the classification study, then re-render)")  # fmt: skip
        prov = "no measured rows"
    for name, top1, params in PAPER_TABLE2:
        rows.append(name)
        recs += [dict(row=name, col="paper_top1", mean=top1), dict(row=name, col="params", mean=params),
                 dict(row=name, col="source", text="paper, Table 2 (ImageNet-1k)")]  # fmt: skip
    cols = [Col("top1", "top-1 (measured)", "top-1 measured", "pm", 2, r"\percent", "%", True),
            Col("paper_top1", "top-1 (paper)", "top-1 (paper)", "value", 1, r"\percent", "%"),
            Col("params", "params (paper, M)", "params (paper)", "value", 1, "", "M"),
            Col("source", "source", "source", "text")]  # fmt: skip
    cap = ("ToST against its controls (the same backbone with softmax attention and with XCA). Rows marked "
           "(paper) are the paper's Table 2, ImageNet-1k, copied for reference, not measured here. "
           + (f"Measured: {prov}." if metric else f"Measured: missing — {missing}."))  # fmt: skip
    return Table(name="tost_controls", caption=cap, label="tab:tost-controls", stub="model", rows=rows, cols=cols,
                 cells=pd.DataFrame(recs)), missing  # fmt: skip


# ------------------------------------------------------------------------------------------ operator
def operator_rows(df: pd.DataFrame) -> pd.DataFrame:
    ok = _ok(df, "complexity")
    if ok.empty or "level" not in ok:
        return ok.iloc[0:0]
    return ok[ok["level"] == "operator"]


def operator_cost(df: pd.DataFrame, level: str, ns=SELECTED_N) -> Table | None:
    """Median forward latency (with its IQR) and forward+backward peak memory at selected N, ``core`` or ``layer``."""
    ok = operator_rows(df)
    if ok.empty:
        return None
    is_layer = ok["variant"].str.startswith("layer:") | (ok["variant"] == "floor")
    ok = ok[is_layer] if level == "layer" else ok[~is_layer]
    ns = [n for n in ns if n in set(ok["tokens"].astype(int))]
    if ok.empty or not ns:
        return None
    recs, cols = [], []
    for n in ns:
        cols.append(
            Col(f"t{n}", f"$t_{{{n}}}$", f"fwd time N={n}", "value", 2, r"\milli\second", "ms", False)
        )
    for n in ns:
        cols.append(
            Col(f"m{n}", f"$M_{{{n}}}$", f"fwd+bwd peak N={n}", "value", 1, r"\mebi\byte", "MiB", False)
        )
    for (v, n), g in ok.groupby(["variant", ok["tokens"].astype(int)]):
        if n not in ns:
            continue
        lat = g[(g["metric"] == "latency_ms") & (g["pass"] == "fwd")]
        if not lat.empty:
            r = lat.iloc[-1]
            iqr = float(r["iqr_ms"]) if "iqr_ms" in r and pd.notna(r["iqr_ms"]) else 0.0
            recs.append(
                dict(
                    row=v,
                    col=f"t{n}",
                    mean=float(r["value"]),
                    lo=r["value"] - iqr / 2,
                    hi=r["value"] + iqr / 2,
                )
            )
        mem = g[(g["metric"] == "peak_mib") & (g["pass"] == "fwd+bwd")]
        if not mem.empty:
            recs.append(dict(row=v, col=f"m{n}", mean=float(mem["value"].iloc[-1])))
    cfg = ok.iloc[0]
    what = ("core (the operator alone, on projected tokens)" if level == "core"
            else "layer (projections, core and output projection; floor = the two C x C projections alone)")  # fmt: skip
    cap = (f"Operator cost at selected N, {what}: t = median forward latency over interleaved rounds (bold only "
           f"when its interquartile range is disjoint from the runner-up's; the floor is a bound, never ranked), M = exact forward+backward peak memory, "
           f"subscript = N. "
           f"{cfg['dtype']}, B={int(cfg['batch'])}, C={int(cfg['dim'])}, H={int(cfg['heads'])}, "
           f"{int(cfg['threads'])} thread(s). {provenance(ok)}.")  # fmt: skip
    return Table(name=f"operator_{level}", caption=cap, label=f"tab:operator-{level}", stub="variant",
                 rows=sorted(set(ok["variant"])), cols=cols, cells=pd.DataFrame(recs), wide=True, small=True,
                 extra={"not_ranked": ("floor",)})  # fmt: skip


def slope_interval(tokens, values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Log-log least-squares slope and its t interval (``scipy.stats.linregress`` standard error)."""
    from scipy import stats as st

    x, y = [math.log(float(t)) for t in tokens], [math.log(float(v)) for v in values]
    if len(x) < 3:
        k = (y[-1] - y[0]) / (x[-1] - x[0])
        return k, math.nan, math.nan
    r = st.linregress(x, y)
    h = st.t.ppf(0.5 + confidence / 2, len(x) - 2) * r.stderr
    return float(r.slope), float(r.slope - h), float(r.slope + h)


def slopes(
    df: pd.DataFrame, fit_min_tokens: int = 1024, reference: str = "sdpa"
) -> tuple[Table | None, dict]:
    """Log-log time and memory slopes with 95% intervals, fitted on N >= ``fit_min_tokens``, and crossovers."""
    from benchmarks.complexity.derive import derive

    ok = operator_rows(df)
    if ok.empty:
        return None, {}
    d = derive(df[df["kind"] == "complexity"], fit_min_tokens=fit_min_tokens, reference=reference)
    recs, rows, info = [], [], {}
    for c in d["configs"]:
        for (v, p), s in sorted(c["slopes"].items()):
            label = f"{v} ({p})"
            rows.append(label)
            g = ok[(ok["variant"] == v) & (ok["pass"] == p) & (ok["tokens"].astype(int) >= s["fit"][0])]
            entry = {}
            for q, met in (("time", "latency_ms"), ("memory", "peak_mib")):
                ser = g[g["metric"] == met].drop_duplicates("tokens", keep="last").sort_values("tokens")
                if len(ser) >= 2:
                    k, lo, hi = slope_interval(ser["tokens"], ser["value"])
                    recs.append(
                        dict(row=label, col=q, mean=k, sd=(hi - lo) / 2 if pd.notna(lo) else math.nan)
                    )
                    entry[q] = (k, lo, hi, len(ser), int(ser["tokens"].min()), int(ser["tokens"].max()))
            x = c["crossover"].get((v, p))
            if x:
                if x["where"] == "inside":
                    txt = f"N ≈ {x['n']:.0f}"
                elif x["where"] == "below":
                    txt = f"all N ≥ {x['n']:.0f}"
                else:
                    txt = "none measured"
                recs.append(dict(row=label, col="cross", text=f"{txt} (vs {x['reference']})"))
                recs.append(dict(row=label, col="ratio", mean=x["ratio_at_n_max"]))
                entry["crossover"] = x
            info[(v, p)] = entry
    cols = [Col("time", "time slope", "time slope k", "pm", 2), Col("memory", "memory slope", "memory slope k", "pm", 2),
            Col("cross", "crossover", "crossover", "text"), Col("ratio", "time ratio at max $N$", "time ratio at max N", "value", 3)]  # fmt: skip
    cap = (f"Log-log slopes k (time ~ N^k: median latency; memory ~ N^k: exact peak) fitted on N ≥ {fit_min_tokens} "
           f"(± the half-width of the 95% t interval of the least-squares slope), the crossover from which TSSA's "
           f"median latency stays below the reference's, and TSSA / reference time at the largest common N. "
           f"{provenance(ok)}.")  # fmt: skip
    return Table(name="slopes", caption=cap, label="tab:slopes", stub="variant (pass)", rows=rows, cols=cols,
                 cells=pd.DataFrame(recs), wide=True, small=True), info  # fmt: skip
