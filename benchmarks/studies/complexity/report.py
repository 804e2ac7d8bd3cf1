"""The complexity study's part of the report: YOLO11 model counts, operator cost at selected N,
log-log slopes and crossovers, the cost figures, and the ledger's claims on linear cost, the 16K
speed figure and the public forks' counts.

Rules of the claims, declared before reading any result:

- *Linear in N* (time or memory): the log-log slope k (time: each size's fastest sample, recorded as
  ``min_ms``; interference from other processes only ever adds time, so the fastest sample of a size
  is its least-disturbed measurement, as Chen & Revels, "Robust benchmarking in noisy environments",
  2016, argue; runs without the column use the median) over N >= the run's fit threshold (the suite's
  ``fit_min_tokens``; the cpu suite puts it past the last-level cache, so that the step from cache to
  memory bandwidth is not read as super-linear cost), by Theil-Sen (the median of the pairwise slopes)
  with its 95% interval (``scipy.stats.theilslopes``: distribution-free, from the ranks of the pairwise
  slopes, so a size that timing noise pushed off the line widens it instead of bending the fit);
  ``supported`` when the interval's upper end is <= ``LINEAR_MAX`` (1.15: O(N) up to slow drifts),
  ``contradicted`` when its lower end is > ``LINEAR_MAX``, otherwise ``inconclusive``. A slope below 1
  is consistent with O(N) (fixed costs dominate small N).
- *Exact counts* (parameters, GFLOPs): ``supported`` when the measured count rounds to the claimed
  figure at the claim's precision, ``contradicted`` otherwise (a count has no sampling interval).
  The GFLOPs verdict rests on the project's exact count (``flops_torch``: every operation at the
  true input size, in the project's FLOP convention), not on Ultralytics' estimate
  (``gflops_ultralytics``, thop on proxy images: the tool the forks quoted), which the row shows
  beside it; without an exact count row the claim is ``not testable here``.
- The paper's 16K-token GPU figure is ``not testable here`` without full models timed on a GPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.core.registry import ReportFigure, ReportPart
from benchmarks.report.claims import NOT_TESTABLE
from benchmarks.report.figures import COLUMN_IN, TEXT_IN, palette, plt, save, style
from benchmarks.report.render import Col, Table
from benchmarks.report.tables import ok_rows, provenance
from benchmarks.studies.complexity.derive import slope_times

KIND = "complexity"
LINEAR_MAX = 1.15


def yolo_models(df: pd.DataFrame) -> Table | None:
    """Model-level counts of every YOLO11 variant (yolo-table suite): params, GFLOPs, FLOPs, peak memory."""
    ok = ok_rows(df, KIND)
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


SELECTED_N = (1024, 4096, 16384)
LAYER_TSSA = "layer:tssa"
CORE_BEFORE_COLUMN = "tssa:stream"  # what `auto` ran on CPU in runs that predate the tssa_core column


def core_variant(ops: pd.DataFrame) -> str:
    """The core variant (``tssa:<impl>``) that the TSSA layer's ``auto`` resolved to in these rows (their
    ``tssa_core`` column, the latest run's), else :data:`CORE_BEFORE_COLUMN` for runs without it."""
    if not ops.empty and "tssa_core" in ops:
        cores = ops.loc[(ops["variant"] == LAYER_TSSA) & ops["tssa_core"].notna(), "tssa_core"]
        if not cores.empty:
            return f"tssa:{cores.iloc[-1]}"
    return CORE_BEFORE_COLUMN


def operator_rows(df: pd.DataFrame) -> pd.DataFrame:
    ok = ok_rows(df, KIND)
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
    """Log-log Theil-Sen slope and its ``confidence`` interval (``scipy.stats.theilslopes``); with two
    sizes the secant and no interval."""
    from scipy import stats as st

    x, y = [math.log(float(t)) for t in tokens], [math.log(float(v)) for v in values]
    if len(x) < 3:
        k = (y[-1] - y[0]) / (x[-1] - x[0])
        return k, math.nan, math.nan
    r = st.theilslopes(y, x, alpha=confidence)
    return float(r.slope), float(r.low_slope), float(r.high_slope)


def slopes(
    df: pd.DataFrame, fit_min_tokens: int = 1024, reference: str = "sdpa"
) -> tuple[Table | None, dict]:
    """Log-log time and memory slopes with 95% intervals, fitted on N >= ``fit_min_tokens``, and crossovers."""
    from benchmarks.studies.complexity.derive import derive

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
                    vals = slope_times(ser)[0] if q == "time" else ser["value"]
                    k, lo, hi = slope_interval(ser["tokens"], vals)
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
    cap = (f"Log-log slopes k (time ~ N^k: each size's fastest sample where the rows record it, else the median "
           f"latency; memory ~ N^k: exact peak) fitted on N ≥ {fit_min_tokens} "
           f"(± the half-width of the 95% interval of the Theil-Sen slope), the crossover from which TSSA's "
           f"median latency stays below the reference's, and TSSA / reference time at the largest common N. "
           f"{provenance(ok)}.")  # fmt: skip
    return Table(name="slopes", caption=cap, label="tab:slopes", stub="variant (pass)", rows=rows, cols=cols,
                 cells=pd.DataFrame(recs), wide=True, small=True), info  # fmt: skip


def _guides(ax, x: np.ndarray, y0: float) -> None:
    """O(N) and O(N^2) guides through (x[0], y0), grey, labelled at their right end."""
    x = np.asarray(sorted(x), dtype=float)
    for k, ls, lab in ((1, "--", "O(N)"), (2, ":", "O(N²)")):
        y = y0 * (x / x[0]) ** k
        ax.plot(x, y, ls, color="0.55", lw=0.8, zorder=0)
        ax.annotate(lab, (x[-1], y[-1]), fontsize=6, color="0.4", xytext=(2, 0), textcoords="offset points",
                    va="center", annotation_clip=False)  # fmt: skip


QUANTITIES = (
    ("latency_ms", "fwd", "median forward time (ms)"),
    ("peak_mib", "fwd+bwd", "fwd+bwd peak memory (MiB)"),
    ("flops_analytic", "fwd", "forward FLOPs (formula)"),
)


def complexity(ops: pd.DataFrame, out: Path, caption_src: str, width: float = TEXT_IN, quantities=QUANTITIES,
               name: str = "complexity") -> list[Path]:  # fmt: skip
    """Log-log time, memory and FLOPs against N, core (left) and layer (right), with O(N)/O(N^2) guides."""
    is_layer = ops["variant"].str.startswith("layer:") | (ops["variant"] == "floor")
    levels = (("core", ops[~is_layer]), ("layer", ops[is_layer]))
    names = sorted(set(ops["variant"]))
    colour, marker = palette(names)
    with style():
        fig, axes = plt.subplots(
            len(quantities),
            2,
            figsize=(width, 1.7 * len(quantities) + (0.9 if width < TEXT_IN else 0.3)),
            squeeze=False,
        )
        for i, (metric, p, ylabel) in enumerate(quantities):
            for j, (level, g) in enumerate(levels):
                ax = axes[i][j]
                sel = g[(g["metric"] == metric) & (g["pass"] == p)]
                first = None
                for v in sorted(set(sel["variant"])):
                    s = sel[sel["variant"] == v].drop_duplicates("tokens", keep="last").sort_values("tokens")
                    ax.plot(s["tokens"].astype(float), s["value"].astype(float), marker=marker[v], color=colour[v],
                            label=v, ms=3)  # fmt: skip
                    if first is None or v in ("sdpa", "layer:sdpa"):
                        first = s
                if first is not None and len(first):
                    _guides(ax, first["tokens"].to_numpy(float), float(first["value"].iloc[0]))
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel("tokens N")
                ax.set_ylabel(ylabel)
                if i == 0:
                    ax.set_title(f"{level} level")
        # one legend for both levels, below the panels: never over the data, never over the other legend
        handles = {}
        for ax in axes[0]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        ncol = 4 if width < TEXT_IN else 8
        fig.tight_layout(rect=(0, 0.15 if width < TEXT_IN else 0.05, 1, 1))
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=ncol, frameon=False,
                   bbox_to_anchor=(0.5, 0.0), handlelength=1.5, columnspacing=1.0)  # fmt: skip
        return save(fig, out, name)


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
        for variant, level in ((core_variant(ops), "core"), (LAYER_TSSA, "layer")):
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
            vals, of = slope_times(g) if q == "time" else (g["value"], "peak memory")
            k, lo, hi = slope_interval(g["tokens"], vals)
            ns = sorted(int(x) for x in g["tokens"])
            out.append(dict(claim=claim, source=src,
                            measured=f"log-log slope of {variant} {p} {of if q == 'memory' else of + ' time'}, "
                                     f"N = {ns[0]}..{ns[-1]} ({len(ns)} sizes)",
                            interval=f"k = {k:.2f} [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else f"k = {k:.2f}",
                            verdict=_linear(k, lo, hi),
                            why=f"linear: upper end of the Theil-Sen 95% CI of k ≤ {LINEAR_MAX}"))  # fmt: skip
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
        core = core_variant(ops)
        t1, t0 = val(core, "fwd", "latency_ms"), val(ref, "fwd", "latency_ms")
        m1, m0 = val(core, "fwd", "peak_mib"), val(ref, "fwd", "peak_mib")
        if t1 and t0:
            ctx = f"context only, CPU core at N = 16384: {core} {t1:.1f} ms vs {ref} {t0:.1f} ms"
            if m1 and m0:
                ctx += f", peak {m1:.0f} MiB vs {m0:.0f} MiB"
        elif t1:  # the suite stops the quadratic reference below 16K (its max_tokens or budget)
            ctx = f"context only, CPU core at N = 16384: {core} {t1:.1f} ms; no reference timed at this N"
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


FORK_SOURCE = "public C2PSA-TSSA forks"
FORK_PARAMS_M = 2.61  # the forks' yolo11n-TSSA parameter count (millions)
FORK_GFLOPS = 6.6  # the forks' yolo11n-TSSA GFLOPs at 640 px (Ultralytics' model.info(), one decimal)


def _last(ok: pd.DataFrame, metric: str, scale: float) -> float | None:
    s = ok[ok["metric"] == metric] if not ok.empty else ok
    return None if s.empty else float(s["value"].iloc[-1]) / scale


def _fork_gflops(exact: float | None, estimate: float | None) -> dict:
    """The GFLOPs claim: verdict on the exact count, Ultralytics' estimate (the forks' tool) beside it."""
    claim = f"yolo11n-TSSA costs {FORK_GFLOPS} GFLOPs"
    tool = "Ultralytics' estimate (the forks' tool)"
    if exact is None:
        measured = (
            f"{tool}: {estimate:.3f} GFLOPs only" if estimate is not None else "no yolo11n-tssa count rows"
        )
        return dict(claim=claim, source=FORK_SOURCE, measured=measured, interval="", verdict=NOT_TESTABLE,
                    why="the verdict rests on the exact count (flops_torch): run the yolo-table suite")  # fmt: skip
    ok_ = round(exact, 1) == FORK_GFLOPS
    verdict = "supported" if ok_ else "contradicted"
    measured = f"exact count at 640 px (the project's FLOP convention): {exact:.3f} GFLOPs"
    why = f"on the exact count: {exact:.2f} -> {round(exact, 1):.1f} vs claimed {FORK_GFLOPS}: {verdict}"
    if estimate is not None:
        measured += f"; {tool}: {estimate:.3f} GFLOPs"
        same = round(estimate, 1) == FORK_GFLOPS
        why += (f"; Ultralytics' estimate {estimate:.3f} -> {round(estimate, 1):.1f} (the forks' tool) "
                f"{'matches' if same else 'does not match'}")  # fmt: skip
    return dict(claim=claim, source=FORK_SOURCE, measured=measured, interval="exact count", verdict=verdict,
                why=why + f"; supported when the exact count rounds to {FORK_GFLOPS} GFLOPs")  # fmt: skip


def _fork_counts(yolo: pd.DataFrame) -> list[dict]:
    ok = yolo[(yolo["kind"] == "complexity") & yolo["error"].isna()] if not yolo.empty else yolo
    ok = ok[ok["variant"] == "yolo11n-tssa"] if not ok.empty else ok
    claim = f"yolo11n-TSSA has {FORK_PARAMS_M}M parameters"
    params = _last(ok, "params", 1e6)
    if params is None:
        out = [dict(claim=claim, source=FORK_SOURCE, measured="no yolo11n-tssa count rows", interval="",
                    verdict=NOT_TESTABLE, why="run the yolo-table suite")]  # fmt: skip
    else:
        ok_ = round(params, 2) == FORK_PARAMS_M
        out = [dict(claim=claim, source=FORK_SOURCE, measured=f"parameter count: {params:.4f}M",
                    interval="exact count", verdict="supported" if ok_ else "contradicted",
                    why=f"supported when it rounds to {FORK_PARAMS_M}M")]  # fmt: skip
    out.append(_fork_gflops(_last(ok, "flops_torch", 1e9), _last(ok, "gflops_ultralytics", 1.0)))
    return out


def fit_min_tokens(runs) -> int:
    """The fit threshold of the slopes: the ``fit_min_tokens`` of the (latest) run's own suite, 1024 for
    runs without the setting."""
    for run in runs[-1:]:
        op = ((run.record.get("config") or {}).get("complexity") or {}).get("operator") or {}
        if op.get("fit_min_tokens"):
            return int(op["fit_min_tokens"])
    return 1024


def report(ctx) -> list[ReportPart]:
    """Three parts: the missing gpu run (first of the missing lines), the yolo-table counts (after the
    detection study's tables) and the operator sweep of the cpu suite (last tables, first claims)."""
    cx = ctx.rows("cpu", KIND, latest=True)  # one run: times of two machines are never pooled
    yolo = ctx.rows("yolo-table", KIND, latest=True)
    gpu = ReportPart(order=0, ledger_order=0)
    if not ctx.runs("gpu", None):
        gpu.missing.append("gpu: no complete run of the gpu suite under results/ (no GPU rows); GPU claims are "
                           "marked not testable here")  # fmt: skip
    models = ReportPart(order=2, ledger_order=1, rows=yolo, claims=_fork_counts(yolo))
    if yolo.empty:
        models.missing.append("yolo-table: no complete run of the yolo-table suite (model counts)")
    else:
        models.tables = [t for t in [yolo_models(yolo)] if t]
    ops = operator_rows(cx) if not cx.empty else cx
    fit_min = fit_min_tokens(ctx.latest("cpu", KIND))
    sweep = ReportPart(
        order=4, ledger_order=0, rows=cx, claims=[*_slope_claims(ops, fit_min), _speed_16k(ops)]
    )
    if cx.empty:
        sweep.missing.append("complexity: no rows of kind 'complexity' in the cpu suite's runs")
        return [gpu, models, sweep]
    sweep.tables = [
        t for t in (operator_cost(cx, "core"), operator_cost(cx, "layer"), slopes(cx, fit_min)[0]) if t
    ]
    prov = provenance(ops)
    out = Path(ctx.out) / "figures"
    sweep.figures = [
        ReportFigure("complexity", complexity(ops, out, prov),
                     "Operator cost against the number of tokens N on log-log axes, core (left) and layer (right): "
                     "median forward time, exact forward+backward peak memory and forward FLOPs (2 per "
                     "multiply-accumulate plus elementwise work); grey guides O(N) dashed and O(N²) dotted, "
                     f"through the reference's first point. {prov}.", wide=True,
                     readme_alt="Operator cost against N, core and layer, log-log, with O(N) and O(N²) guides"),
        ReportFigure("complexity_time_column",
                     complexity(ops, out, prov, width=COLUMN_IN, quantities=QUANTITIES[:1], name="complexity_time_column"),
                     "Median forward time against N (column width), core and layer, with O(N) and O(N²) guides. "
                     f"{prov}."),
    ]  # fmt: skip
    return [gpu, models, sweep]
