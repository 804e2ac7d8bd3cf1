"""Derived numbers from complexity rows: log-log slopes, crossovers, layer-over-floor ratios, model trends.

Every quantity is computed within one *configuration*: the same machine, device, dtype, batch,
width, heads and threads (:data:`CONFIG`); rows of different configurations are never mixed.
Core-level variants (``tssa:*``) are compared with the core reference (``sdpa`` by default) and
layer-level ones (``layer:tssa*``) with the layer of the same reference (``layer:sdpa``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks.report.render import markdown_table

CONFIG = ("machine", "device", "dtype", "batch", "dim", "heads", "threads")


def fit_slope(x, y) -> float:
    """Theil-Sen slope of ``log y`` against ``log x`` (the exponent k of ``y ~ x^k``): the median of the
    pairwise slopes (``scipy.stats.theilslopes``), robust to one size that a burst of the machine hit."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or len(set(x.tolist())) < 2:
        raise ValueError(f"a slope needs at least two distinct sizes, got {x.tolist()}")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("a log-log slope needs positive sizes and values")
    return float(stats.theilslopes(np.log(y), np.log(x)).slope)


def crossover(tokens, t_fast, t_ref) -> dict[str, Any]:
    """Smallest N from which ``t_fast < t_ref`` at every larger measured N, interpolated in log-log.

    ``{"n": float | None, "where": "inside" | "below" | "above"}``: ``below`` = faster at every
    measured N (``n`` the smallest), ``above`` = not faster at the largest N (``n`` None).
    """
    pts = sorted(zip(tokens, t_fast, t_ref))
    if not pts:
        raise ValueError("crossover needs at least one common size")
    logr = [math.log(a / b) for _, a, b in pts]
    if logr[-1] >= 0:
        return {"n": None, "where": "above"}
    i = len(pts) - 1
    while i > 0 and logr[i - 1] < 0:
        i -= 1
    if i == 0:
        return {"n": float(pts[0][0]), "where": "below"}
    n0, n1, r0, r1 = pts[i - 1][0], pts[i][0], logr[i - 1], logr[i]
    frac = r0 / (r0 - r1)
    return {"n": float(math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0)))), "where": "inside"}


def _config_label(cfg: dict[str, Any]) -> str:
    return (
        f"{cfg['device']} {cfg['dtype']}, B={int(cfg['batch'])} C={int(cfg['dim'])} H={int(cfg['heads'])}, "
        f"{int(cfg['threads'])} thread{'s' if cfg['threads'] != 1 else ''}, machine {cfg['machine']}"
    )


def _ok_operator_rows(df):
    if df.empty or "level" not in df.columns:
        return df.iloc[0:0]
    ok = df[(df["kind"] == "complexity") & df["error"].isna() & (df["level"] == "operator")]
    return ok


def derive(df, fit_min_tokens: int = 1024, reference: str = "sdpa") -> dict[str, Any]:
    """Slopes, crossovers and layer/floor ratios per configuration from operator rows.

    Returns ``{"configs": [{"config": {...}, "label": str, "slopes": {(variant, pass): {...}},
    "crossover": {(variant, pass): {...}}, "floor": {(variant, pass, N): ratio}}], "models": ...}``.
    ``reference`` must be a core variant present in the rows (ValueError otherwise).
    """
    ok = _ok_operator_rows(df)
    variants = set(ok["variant"]) if not ok.empty else set()
    has_core_tssa = any(v.startswith("tssa") for v in variants)
    if reference.startswith(("layer:", "tssa")) or (has_core_tssa and reference not in variants):
        raise ValueError(
            f"unknown --reference {reference!r}; use a core variant present in the rows: "
            f"{sorted(v for v in variants if not v.startswith(('tssa', 'layer:')) and v != 'floor')}"
        )
    configs = []
    if not ok.empty:
        for key, g in ok.groupby(list(CONFIG), dropna=False):
            cfg = {
                k: (int(v) if k in ("batch", "dim", "heads", "threads") else v) for k, v in zip(CONFIG, key)
            }
            configs.append(_derive_config(g, cfg, fit_min_tokens, reference))
    return {
        "configs": configs,
        "reference": reference,
        "fit_min_tokens": fit_min_tokens,
        "models": derive_models(df),
        "source": _source(df),
    }


def _series(g, variant: str, pass_: str, metric: str):
    s = g[(g["variant"] == variant) & (g["pass"] == pass_) & (g["metric"] == metric)]
    return s.sort_values("tokens").drop_duplicates("tokens", keep="last").set_index("tokens")


def slope_times(lat):
    """The times a time slope is fitted on, and what they are: each size's fastest sample (``min_ms``)
    where every row records one, else the median (runs before the column). Interference only adds
    time, so a burst of the machine during one size moves its median and leaves its fastest sample;
    the medians stay the rows' value and the tables' latency."""
    if "min_ms" in lat and len(lat) and lat["min_ms"].notna().all():
        return lat["min_ms"], "fastest sample"
    return lat["value"], "median"


def _derive_config(g, cfg: dict, fit_min_tokens: int, reference: str) -> dict[str, Any]:
    slopes, cross, floor = {}, {}, {}
    for (variant, pass_), _ in g.groupby(["variant", "pass"]):
        lat = _series(g, variant, pass_, "latency_ms")
        mem = _series(g, variant, pass_, "peak_mib")
        if len(lat) == 0:
            continue
        sel = lat[lat.index >= fit_min_tokens]
        if len(sel) < 2:
            sel = lat.tail(2)
        msel = mem[mem.index.isin(sel.index)]
        entry = {
            "points": int(len(sel)),
            "fit": [int(sel.index.min()), int(sel.index.max())],
            "time": fit_slope(sel.index, slope_times(sel)[0]) if len(sel) >= 2 else None,
            "time_of": slope_times(sel)[1],
            "memory": fit_slope(msel.index, msel["value"]) if len(msel) >= 2 else None,
            "samples": int(sel["samples"].min()) if "samples" in sel.columns and len(sel) else None,
        }
        slopes[(variant, pass_)] = entry
        ref = reference if not variant.startswith("layer:") else f"layer:{reference}"
        if variant.startswith(("tssa", "layer:tssa")):
            r = _series(g, ref, pass_, "latency_ms")
            common = sorted(set(r.index) & set(lat.index))
            if common:
                c = crossover(
                    common, [lat.loc[n, "value"] for n in common], [r.loc[n, "value"] for n in common]
                )
                top = common[-1]
                c.update(
                    reference=ref,
                    n_max=int(top),
                    ratio_at_n_max=float(lat.loc[top, "value"] / r.loc[top, "value"]),
                    samples=int(min(lat.loc[n, "samples"] for n in common))
                    if "samples" in lat.columns
                    else None,
                )
                cross[(variant, pass_)] = c
        if variant.startswith("layer:tssa"):
            fl_t, fl_m = _series(g, "floor", pass_, "latency_ms"), _series(g, "floor", pass_, "peak_mib")
            for n in sorted(set(lat.index) & set(fl_t.index)):
                floor[(variant, pass_, int(n), "time")] = float(lat.loc[n, "value"] / fl_t.loc[n, "value"])
            for n in sorted(set(mem.index) & set(fl_m.index)):
                floor[(variant, pass_, int(n), "memory")] = float(mem.loc[n, "value"] / fl_m.loc[n, "value"])
    return {"config": cfg, "label": _config_label(cfg), "slopes": slopes, "crossover": cross, "floor": floor}


def _source(df) -> dict[str, list[str]]:
    src = {}
    for key in ("run", "prov.git", "prov.dirty", "prov.device_name", "prov.torch"):
        if key in df.columns:
            src[key.replace("prov.", "")] = sorted({str(v) for v in df[key].dropna()})
    return src


def derive_models(df) -> dict[tuple, dict[str, Any]]:
    """Per (machine, family, variant, pass) of the model rows: sizes, latency, attention tokens,
    training-step and inference peaks, and the log-log slope of latency against attention tokens."""
    if df.empty or "level" not in df.columns or "family" not in df.columns:
        return {}
    ok = df[(df["kind"] == "complexity") & df["error"].isna() & (df["level"] == "model")]
    out: dict = {}
    for (mach, fam, variant, pass_, threads), g in ok.groupby(
        ["machine", "family", "variant", "pass", "threads"]
    ):

        def by_size(metric, g=g):
            s = g[g["metric"] == metric].drop_duplicates("image_size", keep="last")
            return s.set_index("image_size")

        lat, peak, ppeak = by_size("latency_ms"), by_size("peak_mib"), by_size("peak_mib_profiler")
        sizes = sorted(int(x) for x in lat.index)
        entry = {
            "sizes": sizes,
            "latency_ms": [float(lat.loc[s, "value"]) for s in sizes],
            "tokens": [None if pd_isna(lat.loc[s, "tokens"]) else int(lat.loc[s, "tokens"]) for s in sizes],
            "peak_mib": [float(peak.loc[s, "value"]) if s in peak.index else None for s in sizes],
            "peak_mib_profiler": [float(ppeak.loc[s, "value"]) if s in ppeak.index else None for s in sizes],
        }
        pts = [(t, v) for t, v in zip(entry["tokens"], entry["latency_ms"]) if t]
        entry["time_slope_vs_tokens"] = (
            fit_slope([t for t, _ in pts], [v for _, v in pts]) if len({t for t, _ in pts}) >= 2 else None
        )
        out[(mach, fam, variant, pass_, int(threads))] = entry
    return out


def pd_isna(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ------------------------------------------------------------------------------------------ Markdown
def derived_markdown(d: dict[str, Any], command: str, headline_tokens: int = 16384) -> str:
    """The README block: per configuration the slopes, the crossovers with their ratios, the
    layer-over-floor ratios; then the model tables."""
    lines = [f"Written by `{command}` from the rows of the runs named at the end.", ""]
    for c in d["configs"]:
        rows = []
        for (v, p), s in sorted(c["slopes"].items()):
            t = f"{s['time']:.2f}" if s["time"] is not None else "n/a"
            m = f"{s['memory']:.2f}" if s["memory"] is not None else "n/a"
            level = "layer" if v.startswith("layer:") or v == "floor" else "core"
            rows.append([v, level, p, t, m, f"{s['fit'][0]}..{s['fit'][1]} ({s['points']})"])
        heads = [("level", "left"), ("pass", "left"), ("time slope", "right"), ("memory slope", "right"),
                 ("sizes fitted", "left")]  # fmt: skip
        of = sorted({s.get("time_of", "median") for s in c["slopes"].values()})
        lines += [f"**{c['label']}.** Log-log slopes (time ~ N^k: the {' / '.join(of)} time per size; peak "
                  f"memory ~ N^k), fitted on N >= {d['fit_min_tokens']}:", "", markdown_table("operator", heads, rows)]  # fmt: skip
        if c["crossover"]:
            lines += ["", "Crossover (TSSA median latency below the reference from this N on) and the time "
                      "ratio TSSA / reference at the largest common N (below 1: TSSA faster):", ""]  # fmt: skip
            for (v, p), x in sorted(c["crossover"].items()):
                if x["where"] == "inside":
                    text = f"N ~ {x['n']:.0f}"
                elif x["where"] == "below":
                    text = f"faster at every measured N (from N = {x['n']:.0f})"
                else:
                    text = "not faster at the largest measured N"
                lines.append(
                    f"- {v} vs {x['reference']}, {p}: {text}; ratio at N = {x['n_max']}: "
                    f"{x['ratio_at_n_max']:.3g} (medians of >= {x['samples']} samples each)"
                )
        if c["floor"]:
            ns = sorted({k[2] for k in c["floor"]})
            show = [n for n in ns if n >= 1024] or ns
            rows = []
            for v in sorted({k[0] for k in c["floor"]}):
                for p, q in (("fwd", "time"), ("fwd+bwd", "memory")):
                    vals = [c["floor"].get((v, p, n, q)) for n in show]
                    if any(x is not None for x in vals):
                        rows.append([v, f"{p} {q}", *(f"{x:.2f}x" if x is not None else "-" for x in vals)])
            heads = [("quantity", "left"), *((f"N={n}", "right") for n in show)]
            lines += ["", "Layer over its floor (the two C x C projections alone): forward time and "
                      "forward+backward peak memory, ratio of medians / of exact peaks:", "",
                      markdown_table("layer", heads, rows)]  # fmt: skip
        lines.append("")
    lines += _models_markdown(d.get("models") or {})
    src = d.get("source") or {}
    if src:
        desc = "; ".join(f"{k} {', '.join(v)}" for k, v in src.items() if v)
        lines += ["", f"Rows from: {desc}."]
    return "\n".join(lines).strip() + "\n"


def _models_markdown(models: dict) -> list[str]:
    lines: list[str] = []
    for key0 in sorted({(k[0], k[1], k[4]) for k in models}):
        mach, fam, threads = key0
        keys = sorted(k for k in models if (k[0], k[1], k[4]) == key0)
        sizes = sorted({s for k in keys for s in models[k]["sizes"]})
        rows = []
        for k in keys:
            m = models[k]
            cells = []
            for s in sizes:
                if s in m["sizes"]:
                    i = m["sizes"].index(s)
                    pk = m["peak_mib"][i]
                    tok = m["tokens"][i] if m["tokens"][i] is not None else "no attention"
                    peak = f"{pk:.0f} MiB" if pk is not None else "peak n/a"
                    cells.append(f"{m['latency_ms'][i]:.1f} ms ({tok}), {peak}")
                else:
                    cells.append("skipped or failed (`benchmarks runs`)")
            slope = f"{m['time_slope_vs_tokens']:.2f}" if m["time_slope_vs_tokens"] is not None else "n/a"
            rows.append([k[2], k[3], *cells, slope])
        heads = [("pass", "left"), *((f"{s} px", "right") for s in sizes), ("slope", "right")]
        lines += [
            "",
            f"Model level ({fam}, machine {mach}, {threads} thread(s)): median latency in ms (largest "
            "attention token count) and peak memory in MiB (tracker; fwd+bwd = one training step) per "
            "image size, and the log-log slope of latency against those tokens:",
            "",
            markdown_table("model", heads, rows),
        ]
    return lines


def _key(k) -> str:
    return "|".join(str(x) for x in k)


def derived_json(d: dict[str, Any]) -> dict[str, Any]:
    """The derived numbers with string keys, for JSON."""
    return {
        "reference": d["reference"],
        "fit_min_tokens": d["fit_min_tokens"],
        "configs": [
            {
                "config": {
                    k: (v if not isinstance(v, np.integer) else int(v)) for k, v in c["config"].items()
                },
                "slopes": {_key(k): v for k, v in sorted(c["slopes"].items())},
                "crossover": {_key(k): v for k, v in sorted(c["crossover"].items())},
                "floor": {_key(k): v for k, v in sorted(c["floor"].items())},
            }
            for c in d["configs"]
        ],
        "models": {_key(k): m for k, m in sorted((d.get("models") or {}).items())},
        "source": d.get("source", {}),
    }
