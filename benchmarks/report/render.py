"""One renderer: an aggregated table -> a LaTeX fragment (booktabs, siunitx ``S`` columns) and Markdown.

A :class:`Table` holds one long frame of aggregated cells (``row``, ``col``, ``mean``, ``sd``,
``n``, ``lo``, ``hi`` or ``text``) and the column specifications; :func:`to_latex` and
:func:`to_markdown` read the same frame, so the report and the README never disagree.

Numbers print as ``mean +- sd`` in an ``S[table-format=a.b(c)]`` column (``separate-uncertainty``:
siunitx aligns value and uncertainty on their decimal markers) with ``n`` stated in the header or
the caption; column headers carry units from the metric registry. The best value of a column
(direction ``higher_is_better`` from the registry) is bold only when its interval ``[lo, hi]`` is
disjoint from the runner-up's; a tie in the mean is never bold, and a column without a direction
never has a bold cell.

LaTeX is produced by ``pandas.io.formats.style.Styler.to_latex(hrules=True, siunitx=True)``.
Two of its pitfalls are handled here: headers with braces raise a KeyError (pandas #60063), and
index names are not escaped (#57362), so headers go in as placeholders that are replaced after
rendering; row labels, captions and text cells are escaped with :func:`escape_latex` (pandas'
own escaping turns ``~`` into TS1's ``\\textasciitilde``, a bitmap Type 3 glyph without cm-super); cells holding LaTeX (``\\bfseries``, siunitx input) are left as they are.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pandas as pd

_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\ensuremath{\sim}",
    "^": r"\^{}",
    "±": r"\ensuremath{\pm}",
    "≥": r"\ensuremath{\geq}",
    "≤": r"\ensuremath{\leq}",
    "×": r"\ensuremath{\times}",
    "≈": r"\ensuremath{\approx}",
    "²": r"\ensuremath{^2}",
    "−": r"\ensuremath{-}",
}
_ESC_RE = re.compile("|".join(re.escape(k) for k in _ESCAPES))


def escape_latex(text: str) -> str:
    """Plain text -> LaTeX text: the ten special characters and a few symbols (``±``, ``≥``...) escaped."""
    return _ESC_RE.sub(lambda m: _ESCAPES[m.group(0)], str(text))


@dataclass(frozen=True)
class Col:
    """One column of a table.

    ``style``: ``pm`` (mean +- sd), ``value`` (mean alone), ``signed`` (mean with its sign),
    ``text`` (the ``text`` field, escaped). ``latex``/``plain``: header without the unit; ``unit``:
    siunitx unit text for LaTeX (``\\milli\\second``), ``plain_unit`` for Markdown.
    ``higher_is_better``: None disables bolding.
    """

    key: str
    latex: str
    plain: str
    style: str = "pm"
    precision: int = 3
    unit: str = ""
    plain_unit: str = ""
    higher_is_better: bool | None = None
    width: str = ""  # text columns: a p{} width such as "4cm" (default: l)
    align: str = ""  # Markdown: "right" aligns a text column right (numbers printed as text)


@dataclass
class Table:
    """An aggregated table: ``cells`` has one row per (row, col) with ``mean``, ``sd``, ``n``, ``lo``,
    ``hi`` (the interval used by the bolding rule) and ``text`` (text columns)."""

    name: str
    caption: str  # plain text; escaped when rendered
    label: str
    stub: str  # header of the row-label column
    rows: list[str]
    cols: list[Col]
    cells: pd.DataFrame
    wide: bool = False  # table* (spans both columns of a two-column paper)
    note: str = ""  # plain text under the caption's first sentence (escaped)
    small: bool = False
    extra: dict = field(default_factory=dict)
    labels: list[str] | None = None  # shown instead of ``rows`` (row keys must be unique, labels need not)

    def row_label(self, row: str) -> str:
        return self.labels[self.rows.index(row)] if self.labels is not None else row


def text_table(name: str, stub: str, columns, rows, caption: str = "") -> Table:
    """A table of preformatted text: ``columns`` are ``(header, "left" | "right")``, ``rows`` lists of
    strings (the first is the row's label; labels may repeat). For summaries whose cells are already
    formatted (``mean ± sd (n)``, intervals), rendered by the same :func:`to_markdown` as every table.

    >>> print(to_markdown(text_table("t", "arm", [("score", "right")], [["a", "1.0"], ["a", "2.0"]]), title=False))
    | arm | score |
    | --- | ---: |
    | a | 1.0 |
    | a | 2.0 |
    <BLANKLINE>
    """
    cols = [Col(f"c{j}", h, h, "text", align=a) for j, (h, a) in enumerate(columns)]
    keys = [f"r{i}" for i in range(len(rows))]
    recs = [dict(row=k, col=f"c{j}", text=v) for k, r in zip(keys, rows) for j, v in enumerate(r[1:])]
    cells = pd.DataFrame(recs, columns=["row", "col", "text"])
    return Table(name, caption, f"tab:{name}", stub, keys, cols, cells, labels=[r[0] for r in rows])


def _get(t: Table, row: str, col: str) -> pd.Series | None:
    c = t.cells
    sel = c[(c["row"] == row) & (c["col"] == col)]
    return None if sel.empty else sel.iloc[0]


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and pd.notna(x)


def best_row(t: Table, col: Col) -> str | None:
    """The row to set in bold in ``col``, or None.

    Rows named in ``t.extra["not_ranked"]`` (a lower bound such as the projections-only floor) take no
    part. The best mean (per ``higher_is_better``) wins only when no other row prints the same mean and its
    interval ``[lo, hi]`` (a point when absent) does not overlap the runner-up's.
    """
    if col.higher_is_better is None or col.style == "text":
        return None
    vals = []
    for r in t.rows:
        s = _get(t, r, col.key)
        if s is None or not _finite(s.get("mean")) or r in t.extra.get("not_ranked", ()):
            continue
        m = float(s["mean"])
        lo = float(s["lo"]) if _finite(s.get("lo")) else m
        hi = float(s["hi"]) if _finite(s.get("hi")) else m
        vals.append((m, lo, hi, r))
    if len(vals) < 2:
        return None
    vals.sort(key=lambda v: v[0], reverse=bool(col.higher_is_better))
    (m1, lo1, hi1, r1), (m2, lo2, hi2, _) = vals[0], vals[1]
    if f"{m1:.{col.precision}f}" == f"{m2:.{col.precision}f}":
        return None  # a tie (at the printed precision) is never bold
    disjoint = lo1 > hi2 if col.higher_is_better else hi1 < lo2
    return r1 if disjoint else None


def _num(x: float, p: int, signed: bool = False) -> str:
    s = f"{x:+.{p}f}" if signed else f"{x:.{p}f}"
    return "0" + s[1:] if s in (f"-{0:.{p}f}",) else s


def _cell_latex(s, col: Col) -> str:
    if s is None:
        return "{--}"
    if col.style == "text":
        return escape_latex(s.get("text", "")) if _finite(s.get("text")) else "{--}"
    if not _finite(s.get("mean")):
        return "{" + escape_latex(s["text"]) + "}" if _finite(s.get("text")) else "{--}"
    m = _num(float(s["mean"]), col.precision, col.style == "signed")
    if col.style == "pm" and _finite(s.get("sd")):
        return f"{m} +- {float(s['sd']):.{col.precision}f}"
    return m


def _cell_md(s, col: Col) -> str:
    if s is None:
        return "–"
    if col.style == "text":
        return str(s.get("text", "")) if _finite(s.get("text")) else "–"
    if not _finite(s.get("mean")):
        return str(s["text"]) if _finite(s.get("text")) else "–"
    m = _num(float(s["mean"]), col.precision, col.style == "signed")
    if col.style == "pm" and _finite(s.get("sd")):
        return f"{m} ± {float(s['sd']):.{col.precision}f}"
    return m


def _table_format(t: Table, col: Col) -> str:
    """siunitx ``table-format`` wide enough for every cell of the column: ``a.b`` or ``a.b(c)``."""
    ints, sdi, sign = 1, 0, False
    for r in t.rows:
        s = _get(t, r, col.key)
        if s is None or not _finite(s.get("mean")):
            continue
        m = float(s["mean"])
        sign |= m < 0 or col.style == "signed"
        ints = max(ints, len(str(int(abs(round(m, col.precision))))))
        if col.style == "pm" and _finite(s.get("sd")):
            sdi = max(sdi, len(str(int(abs(round(float(s["sd"]), col.precision))))))
    p = col.precision
    fmt = f"{'+' if sign else ''}{ints}.{p}" if p else f"{'+' if sign else ''}{ints}"
    if sdi:
        fmt += f" +- {sdi}.{p}" if p else f" +- {sdi}"
    return fmt


def _header_latex(col: Col) -> str:
    h = col.latex
    if col.unit:
        h += rf" (\si{{{col.unit}}})"
    return h


def _header_md(col: Col) -> str:
    return f"{col.plain} ({col.plain_unit})" if col.plain_unit else col.plain


def display_frame(t: Table, latex: bool) -> pd.DataFrame:
    """The table as strings (rows x columns), bold applied; what both renderers print."""
    data = {}
    for col in t.cols:
        best = best_row(t, col)
        vals = []
        for r in t.rows:
            s = _get(t, r, col.key)
            v = _cell_latex(s, col) if latex else _cell_md(s, col)
            if r == best:
                v = rf"\bfseries {v}" if latex else f"**{v}**"
            vals.append(v)
        data[col.key] = vals
    return pd.DataFrame(data, index=pd.Index(t.rows, name=None))  # keyed by row; labels via Table.row_label


def to_latex(t: Table) -> str:
    """The table as a standalone LaTeX fragment (needs only booktabs and siunitx)."""
    df = display_frame(t, latex=True)
    placeholders = {f"HDRPLACEHOLDER{i}X": _header_latex(c) for i, c in enumerate(t.cols)}
    df.columns = list(placeholders)
    rag = r">{\raggedright\arraybackslash}"  # array is loaded by siunitx
    fmt = [f"{rag}p{{{t.extra['stub_width']}}}" if "stub_width" in t.extra else "l"]
    for c in t.cols:
        if c.style == "text":
            fmt.append(f"{rag}p{{{c.width}}}" if c.width else "l")
        else:
            fmt.append(f"S[table-format={_table_format(t, c)}]")
    df.index = [
        escape_latex(t.row_label(r)) for r in df.index
    ]  # the same escaping as captions and text cells
    styler = df.style
    body = styler.to_latex(
        column_format="".join(fmt),
        hrules=True,
        siunitx=True,
        environment="table*" if t.wide else "table",
        position="tbp",
        position_float="centering",
        caption="CAPTIONPLACEHOLDER",
        label=t.label,
    )
    cap = escape_latex(t.caption) + (" " + escape_latex(t.note) if t.note else "")
    body = body.replace("CAPTIONPLACEHOLDER", cap)
    for k, v in placeholders.items():
        body = body.replace(k, v)
    # the empty top-left header cell becomes the stub header
    lines = body.split("\n")
    for i, line in enumerate(lines):
        if line.startswith(r"\toprule"):
            head = lines[i + 1]
            lines[i + 1] = escape_latex(t.stub) + head[head.index("&") - 1 :] if "&" in head else head
            break
    setup = r"\sisetup{separate-uncertainty, table-align-uncertainty, reset-text-series=false, text-series-to-math=true}"
    out = [f"% generated by python -m benchmarks report; table {t.name}"]
    for line in lines:
        out.append(line)
        if line.startswith(r"\centering"):
            out.append(setup)
            if t.small:
                out.append(r"\small\setlength{\tabcolsep}{3pt}")
    return "\n".join(out).rstrip() + "\n"


def to_markdown(t: Table, title: bool = True) -> str:
    """The same table as GitHub Markdown (caption as a bold first line when ``title``)."""
    df = display_frame(t, latex=False)
    heads = [_header_md(c) for c in t.cols]
    right = ["---" if c.style == "text" and c.align != "right" else "---:" for c in t.cols]
    lines = [f"**{t.caption}**", ""] if title else []
    lines += ["| " + " | ".join([t.stub, *heads]) + " |", "| " + " | ".join(["---", *right]) + " |"]
    for r in t.rows:
        vals = [str(v).replace("|", "\\|") for v in df.loc[r]]
        lines.append("| " + " | ".join([t.row_label(r), *vals]) + " |")
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines) + "\n"


def markdown_table(stub: str, columns, rows) -> str:
    """:func:`text_table` rendered by :func:`to_markdown` without a title line or a trailing newline."""
    return to_markdown(text_table("text", stub, columns, rows), title=False).rstrip("\n")
