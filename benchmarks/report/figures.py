"""Figures (seaborn on matplotlib): vector PDF plus a PNG, sized for a 3.25-inch column or a 6.75-inch
text width, TrueType fonts (``pdf.fonttype = 42``: no Type 3), the colourblind palette with a
distinct marker per series, units in every axis label, and no timestamps (byte-identical rebuilds).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from benchmarks import metrics as M  # noqa: E402

COLUMN_IN = 3.25
TEXT_IN = 6.75
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
RC = {
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "font.family": "DejaVu Sans",
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "legend.fontsize": 6,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "lines.linewidth": 1.0,
    "lines.markersize": 3.5,
    "svg.hashsalt": "tssa",
    "savefig.dpi": 200,
}
PDF_META = {"CreationDate": None, "Creator": None, "Producer": None}
PNG_META = {"Software": None}


def style():
    """The rc context every figure is drawn in."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", rc=RC)
    return plt.rc_context(RC)


def save(fig, out: Path, name: str) -> list[Path]:
    """Write ``name.pdf`` and ``name.png`` without timestamps; return both paths."""
    out.mkdir(parents=True, exist_ok=True)
    pdf, png = out / f"{name}.pdf", out / f"{name}.png"
    fig.savefig(pdf, metadata=PDF_META, bbox_inches="tight", pad_inches=0.02)
    fig.savefig(png, metadata=PNG_META, bbox_inches="tight", pad_inches=0.02)
    plt.close(fig)
    return [pdf, png]


def _palette(names) -> tuple[dict, dict]:
    cols = sns.color_palette("colorblind", len(names))
    return dict(zip(names, cols)), {n: MARKERS[i % len(MARKERS)] for i, n in enumerate(names)}


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
    colour, marker = _palette(names)
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


def accuracy_by_stratum(det: pd.DataFrame, out: Path, reference: str, width: float = COLUMN_IN) -> list[Path]:
    """AP by object size and by occlusion level per arm: mean over seeds with ±1 sd error bars."""
    strata = (("size", ("ap_small", "ap_medium", "ap_large"), ("small", "medium", "large")),
              ("occlusion", ("ap_occ_none", "ap_occ_partial", "ap_occ_heavy"), ("none", "partial", "heavy")))  # fmt: skip
    arms = [reference] + sorted(a for a in set(det["variant"]) if a != reference)
    colour, marker = _palette(arms)
    n = det["seed"].nunique()
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(width, 2.1), sharey=True)
        for ax, (title, mets, labels) in zip(axes, strata):
            d = det[det["metric"].isin(mets)].copy()
            d["stratum"] = d["metric"].map(dict(zip(mets, labels)))
            d["value"] = d["value"].astype(float)
            sns.pointplot(data=d, x="stratum", y="value", hue="variant", order=list(labels), hue_order=arms,
                          errorbar="sd", dodge=0.4, markers=[marker[a] for a in arms], linestyles="none",
                          palette=colour, ax=ax, capsize=0.1, err_kws={"linewidth": 0.8}, markersize=3.5)  # fmt: skip
            ax.set_xlabel(f"object {title}")
            ax.set_ylabel("AP50-95 (fraction)")
            ax.get_legend().remove()
        handles, labs = axes[0].get_legend_handles_labels()
        fig.legend(
            handles, labs, loc="lower center", ncol=len(arms), frameon=False, bbox_to_anchor=(0.5, 1.0)
        )
        fig.text(0.5, -0.02, f"mean over n = {n} seeds, error bars ±1 sd", ha="center", va="top", fontsize=6)
        fig.tight_layout()
        return save(fig, out, "detection_strata")


def paired_differences(diffs: pd.DataFrame, out: Path, rope: float, reference: str, metrics_order,
                       width: float = COLUMN_IN) -> list[Path]:  # fmt: skip
    """Paired differences against the reference with 95% t intervals; the equivalence region shaded."""
    d = diffs[diffs["metric"].isin(metrics_order)].copy()
    arms = sorted(set(d["arm"]))
    colour, marker = _palette([reference, *arms])
    labels = [M.get(m).label for m in metrics_order if m in set(d["metric"])]
    ypos = {m: i for i, m in enumerate(m for m in metrics_order if m in set(d["metric"]))}
    with style():
        fig, ax = plt.subplots(figsize=(width, 0.3 * len(ypos) + 0.9))
        ax.axvspan(-rope, rope, color="0.88", zorder=0, label=f"equivalence ±{rope}")
        ax.axvline(0, color="0.4", lw=0.6)
        off = np.linspace(-0.15, 0.15, len(arms)) if len(arms) > 1 else [0.0]
        for a, o in zip(arms, off):
            s = d[d["arm"] == a]
            y = np.array([ypos[m] for m in s["metric"]]) + o
            x = s["mean_diff"].to_numpy(float)
            err = np.vstack([x - s["ci_low"].to_numpy(float), s["ci_high"].to_numpy(float) - x])
            ax.errorbar(x, y, xerr=err, fmt=marker[a], color=colour[a], capsize=2, lw=0.8, label=a, ms=3.5)
        ax.set_yticks(range(len(ypos)), labels)
        ax.invert_yaxis()
        ax.set_xlabel(f"AP difference vs {reference} (fraction; 95% t interval)")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
        fig.tight_layout()
        return save(fig, out, "detection_diffs")
