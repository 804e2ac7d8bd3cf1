"""Figures (seaborn on matplotlib): vector PDF plus a PNG, sized for a 3.25-inch column or a 6.75-inch
text width, TrueType fonts (``pdf.fonttype = 42``: no Type 3), the colourblind palette with a
distinct marker per series, units in every axis label, and no timestamps (byte-identical rebuilds). The studies draw their
figures with :func:`style`, :func:`palette` and :func:`save`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

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


def palette(names) -> tuple[dict, dict]:
    cols = sns.color_palette("colorblind", len(names))
    return dict(zip(names, cols)), {n: MARKERS[i % len(MARKERS)] for i, n in enumerate(names)}
