"""The README's ToST parameter table, counted from the registered models (``timm.create_model``).

``python -m benchmarks.studies.classification.params [--readme README.md]`` prints the table (and writes
the README's ``tost-params`` block): per size the parameter count of the TSSA model and of its softmax
and XCA controls, ``sum(p.numel() for p in model.parameters())``, with the paper's Table 2 figure
beside it. The models are built on the ``meta`` device: shapes only, no memory, no weights.
"""

from __future__ import annotations

import argparse
import sys

ROWS = (("tiny", 12, "ToST-T"), ("small", 12, "ToST-S"), ("medium", 24, "ToST-M"), ("large", 24, None))
FAMILIES = ("tost", "tost_softmax", "tost_xca")


def count(name: str) -> int:
    """Parameters of the registered timm model ``name`` (built on the meta device)."""
    import timm
    import torch

    import tssa.timm  # noqa: F401  (registers the family)

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    return sum(p.numel() for p in model.parameters())


def counts(patch: int = 16) -> dict[tuple[str, int, str], int]:
    """``{(size, depth, family): parameters}`` for every row of the table."""
    return {(s, d, f): count(f"{f}_{s}_{d}_p{patch}_224") for s, d, _ in ROWS for f in FAMILIES}


def table(patch: int = 16) -> str:
    from benchmarks.core import paper
    from benchmarks.report.render import markdown_table

    c = counts(patch)
    rows = []
    for s, d, ref in ROWS:
        label = f"{s}, depth {d}, p{patch}" + (f" ({ref})" if ref else "")
        shown = f"{paper.table2(ref).params_m:.1f}M" if ref else ""
        rows.append([label, *(f"{c[(s, d, f)]:,}" for f in FAMILIES), shown])
    heads = [("TSSA", "right"), ("softmax control", "right"), ("XCA control", "right"), ("paper", "right")]
    return "\n".join(["Written by `python -m benchmarks.studies.classification.params --readme README.md` "
                      "(`sum(p.numel() for p in model.parameters())` of `timm.create_model(name)`; the paper's "
                      "column is its Table 2):", "", markdown_table("model", heads, rows)])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.studies.classification.params", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--readme", help="write the README's tost-params block")
    args = ap.parse_args(argv)
    text = table()
    print(text)
    if args.readme:
        from benchmarks.core.readme import write_block

        try:
            write_block(args.readme, "tost-params", text)
        except (OSError, ValueError) as exc:
            ap.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
