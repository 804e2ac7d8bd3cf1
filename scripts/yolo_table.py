"""Params and GFLOPs of every YOLO11 variant x scale, as a Markdown table (optionally into README.md).

    python scripts/yolo_table.py                      # print the table (all variants, n/s/m/l/x, 640)
    python scripts/yolo_table.py --write-readme       # also replace it between the README markers

GFLOPs are counted at the true input size with :func:`tssa.ultralytics.flops.detector_gflops`
(``FlopCounterMode``, 2 FLOPs per multiply-add); Ultralytics' own estimate (``model.info()``, thop)
is shown beside it. The text between ``<!-- yolo-table:start -->`` and ``<!-- yolo-table:end -->``
is replaced atomically; without both markers the README is left untouched and the script fails.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

START, END = "<!-- yolo-table:start -->", "<!-- yolo-table:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"

# Published figures the table is checked against (n scale): (variant, params in M, GFLOPs range, source).
PUBLIC = [
    ("yolo11", 2.62, (6.5, 6.7), "Ultralytics yolo11n"),
    ("yolo11-tssa", 2.61, (6.6, 6.6), "public C2PSA-TSSA forks"),
]


def measure(variants, scales, imgsz: int) -> list[dict]:
    """One row per (variant, scale): params, counted GFLOPs at ``imgsz``, Ultralytics' estimate."""
    import torch
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import get_flops

    import tssa.ultralytics as tu
    from tssa.ultralytics.flops import detector_gflops, params

    rows = []
    for scale in scales:
        for variant in variants:
            torch.manual_seed(0)
            model = YOLO(tu.model_yaml(variant, scale)).model
            rows.append(
                {
                    "variant": variant,
                    "scale": scale,
                    "params": params(model),
                    "gflops": detector_gflops(model, imgsz),
                    "gflops_ultralytics": get_flops(model, imgsz),
                }
            )
            print(
                f"{variant:<20} {scale}  {rows[-1]['params']:>11,}  {rows[-1]['gflops']:8.2f}",
                file=sys.stderr,
            )
    return rows


def render(rows: list[dict], imgsz: int) -> str:
    """The Markdown block: the table, then how the GFLOPs were counted and which public numbers match."""
    stock = {r["scale"]: r for r in rows if r["variant"] == "yolo11"}
    lines = [
        f"| model | params | GFLOPs @{imgsz} (counted) | vs stock | Ultralytics' estimate |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        name = f"yolo11{r['scale']}{r['variant'][len('yolo11') :]}"
        base = stock.get(r["scale"])
        delta = f"{r['gflops'] - base['gflops']:+.2f}" if base and r is not base else ""
        lines.append(
            f"| `{name}` | {r['params']:,} | {r['gflops']:.2f} | {delta} | {r['gflops_ultralytics']:.1f} |"
        )
    lines += [
        "",
        f"Counted at a 1x3x{imgsz}x{imgsz} input with `torch.utils.flop_counter.FlopCounterMode` under "
        "`no_grad` (2 FLOPs per multiply-add; every convolution, linear layer and matrix product, so "
        "softmax attention's N x N products count in full; elementwise ops, softmax, BatchNorm, pooling "
        f"and upsampling are not counted), TSSA through its `{os.environ.get('TSSA_IMPL', 'auto')}` "
        "implementation. Ultralytics' estimate is `model.info()`'s thop figure.",
        "",
    ]
    by_key = {(r["variant"], r["scale"]): r for r in rows}
    for variant, p_m, (g_lo, g_hi), source in PUBLIC:
        r = by_key.get((variant, "n"))
        if r is None or imgsz != 640:
            continue
        ok_p = round(r["params"] / 1e6, 2) == p_m
        ok_g = any(g_lo <= round(r[k], 1) <= g_hi for k in ("gflops", "gflops_ultralytics"))
        verdict = "reproduced" if ok_p and ok_g else "not reproduced"
        g = f"{g_lo}" if g_lo == g_hi else f"{g_lo}-{g_hi}"
        lines.append(
            f"- {source}: {p_m}M params / {g} GFLOPs at 640; here `yolo11n{variant[len('yolo11') :]}` has "
            f"{r['params'] / 1e6:.2f}M / {r['gflops_ultralytics']:.1f} (Ultralytics' estimate), "
            f"{r['gflops']:.2f} counted: {verdict}."
        )
    return "\n".join(lines)


def write_readme(path: Path, block: str) -> None:
    """Replace the text between the markers of ``path`` with ``block`` (atomic; ValueError without markers)."""
    text = path.read_text()
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(
            f"{path} needs exactly one {START} followed by one {END}; add them where the table goes"
        )
    head, rest = text.split(START)
    _, tail = rest.split(END)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    import tssa.offline

    tssa.offline.configure_offline(tssa.offline.default_config_dir())  # a private settings dir
    from tssa.ultralytics import SCALES, VARIANTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--scales", nargs="+", default=list(SCALES), choices=SCALES)
    parser.add_argument("--imgsz", type=int, default=640, help="square input size, a multiple of 32")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument(
        "--write-readme", nargs="?", const=str(README), default=None, metavar="PATH", help="README to update"
    )
    args = parser.parse_args(argv)
    if args.imgsz < 32 or args.imgsz % 32:
        parser.error(f"--imgsz must be a positive multiple of 32, got {args.imgsz}")
    readme = Path(args.write_readme) if args.write_readme else None
    if readme is not None:
        if not readme.is_file():
            parser.error(f"--write-readme: {readme} is not a file")
        text = readme.read_text()
        if text.count(START) != 1 or text.count(END) != 1:
            parser.error(f"--write-readme: {readme} needs exactly one {START} and one {END}")
    # count the reference equations: faster TSSA paths may reorganise the same work into other ops
    os.environ.setdefault("TSSA_IMPL", "naive")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    block = render(measure(args.variants, args.scales, args.imgsz), args.imgsz)
    print(block)
    if readme is not None:
        try:
            write_readme(readme, block)
        except ValueError as e:
            parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
