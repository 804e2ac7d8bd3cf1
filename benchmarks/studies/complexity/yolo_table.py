"""Params and GFLOPs of every YOLO11 variant x scale at 640 px, from rows, as a Markdown table.

    python -m benchmarks.studies.complexity.yolo_table                      # print the table (measures when no run exists)
    python -m benchmarks.studies.complexity.yolo_table --rerun              # measure again in a new run
    python -m benchmarks.studies.complexity.yolo_table --write-readme       # also replace it between the README markers

The numbers are rows of the embedded suite ``yolo-table`` (``benchmarks/suites/yolo-table.yaml``:
count-only model cells measured through the harness's runner, so they have provenance and resume):
``params``, ``flops_torch`` (the project's FLOP convention, TSSA counted through its reference
equations) and ``gflops_ultralytics`` (``model.info()``'s thop figure). The table is rendered from
the latest complete run of that suite on this machine. The text between
``<!-- yolo-table:begin -->`` and ``<!-- yolo-table:end -->`` is replaced atomically; without both
markers the README is left untouched and the script fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.core.readme import markers, write_block
from benchmarks.report.render import markdown_table

README = Path(__file__).resolve().parents[3] / "README.md"

# Published figures the table is checked against (n scale): (variant, params in M, GFLOPs range, source).
# "reproduced" means the parameter count and the project's counted GFLOPs (one decimal) both match;
# Ultralytics' estimate is shown beside them (it is what the sources quote) but decides nothing.
PUBLIC = [
    ("yolo11", 2.62, (6.5, 6.7), "Ultralytics yolo11n"),
    ("yolo11-tssa", 2.61, (6.6, 6.6), "public C2PSA-TSSA forks"),
]


def measure(
    results_dir: str = "results", rerun: bool = False, suite_arg: str = "yolo-table", from_rows: bool = False
) -> tuple[list[dict], str]:
    """One dict per (variant, scale) from the rows of the ``yolo-table`` suite, and the run id.

    The rows come from the latest complete run of the suite's configuration on this machine (local
    or published); the suite is run (or an interrupted run resumed) when there is none, or always
    with ``rerun``. ``from_rows``: never measure; the latest complete run of the configuration on
    any machine (counts do not depend on the machine), ValueError when there is none.
    """
    from benchmarks.core.runner import run_groups
    from benchmarks.core.store import config_hash, list_runs, machine
    from benchmarks.core.suites import load_suite
    from benchmarks.studies import complexity

    suite = load_suite(suite_arg)
    name = suite["name"]
    done = [
        r
        for r in list_runs(results_dir, name)
        if r.record["status"] == "complete"
        and r.record["config_hash"] == config_hash(suite)
        and (from_rows or r.record["machine"]["id"] == machine()["id"])
    ]
    if from_rows and not done:
        raise ValueError(
            f"no complete run of suite {name!r} under {results_dir}; run it without --from-rows first"
        )
    if done and (not rerun or from_rows):
        run = done[-1]
    else:
        run = run_groups(name, suite, complexity.plan(name, suite), results_dir, log=lambda *a: None)
    by: dict[str, dict] = {}
    for r in run.rows():
        if r["error"] is not None:
            continue
        name = r["variant"]
        scale = name[len("yolo11")]
        entry = by.setdefault(name, {"variant": "yolo11" + name[len("yolo11") + 1 :], "scale": scale})
        key = {"params": "params", "flops_torch": "gflops", "gflops_ultralytics": "gflops_ultralytics"}.get(
            r["metric"]
        )
        if key:
            entry[key] = r["value"] / 1e9 if key == "gflops" else r["value"]
    order = {v: i for i, v in enumerate(suite["complexity"]["model"]["yolo"]["variants"])}
    rows = [
        by[k] for k in sorted(by, key=order.get) if {"params", "gflops", "gflops_ultralytics"} <= set(by[k])
    ]
    return rows, run.id


def public_verdict(r: dict, p_m: float, g_range: tuple[float, float]) -> str:
    """One n-scale row against published figures: reproduced when the parameter count (in M, two
    decimals) and the counted GFLOPs (one decimal) match; Ultralytics' estimate is reported beside."""
    g_lo, g_hi = g_range
    params, counted, estimate = r["params"] / 1e6, r["gflops"], r["gflops_ultralytics"]
    ok_p = round(params, 2) == p_m
    ok_g = g_lo <= round(counted, 1) <= g_hi
    ok_u = g_lo <= round(estimate, 1) <= g_hi
    g = f"{g_lo}" if g_lo == g_hi else f"{g_lo}-{g_hi}"
    text = (
        f"{p_m}M params / {g} GFLOPs at 640; here `yolo11n{r['variant'][len('yolo11') :]}` has "
        f"{params:.2f}M / {counted:.2f} GFLOPs counted ({round(counted, 1):.1f} at one decimal), "
        f"{estimate:.1f} by Ultralytics' estimate"
    )
    if ok_p and ok_g:
        return f"{text}: reproduced"
    reasons = [] if ok_p else [f"params {params:.2f}M vs {p_m}M"]
    if not ok_g:
        reasons.append(
            f"counted {round(counted, 1):.1f} vs {g}; Ultralytics' estimate {estimate:.1f} "
            f"{'matches' if ok_u else 'does not match'}"
        )
    return f"{text}: not reproduced ({', '.join(reasons)})"


def render(rows: list[dict], imgsz: int, run_id: str) -> str:
    """The Markdown block: the table, then how the GFLOPs were counted and which public numbers match
    (:func:`public_verdict`: the counted GFLOPs decide, not Ultralytics' estimate)."""
    stock = {r["scale"]: r for r in rows if r["variant"] == "yolo11"}
    cells = []
    for r in rows:
        name = f"yolo11{r['scale']}{r['variant'][len('yolo11') :]}"
        base = stock.get(r["scale"])
        delta = f"{r['gflops'] - base['gflops']:+.2f}" if base and r is not base else ""
        cells.append(
            [
                f"`{name}`",
                f"{int(r['params']):,}",
                f"{r['gflops']:.2f}",
                delta,
                f"{r['gflops_ultralytics']:.1f}",
            ]
        )
    heads = [
        (h, "right") for h in ("params", f"GFLOPs @{imgsz} (counted)", "vs stock", "Ultralytics' estimate")
    ]
    lines = [markdown_table("model", heads, cells)]
    lines += [
        "",
        f'Counted at a 1x3x{imgsz}x{imgsz} input in the project\'s FLOP convention (see "FLOPs" below: '
        "2 per multiply-add of every convolution, linear layer and matrix product, so softmax attention's "
        "N x N products count in full, plus 1 per elementwise operation), TSSA through its reference "
        f"equations; rows of run `{run_id}` of the `yolo-table` suite (`benchmarks/suites/yolo-table.yaml`). Ultralytics' estimate is "
        "`model.info()`'s thop figure.",
        "",
    ]
    by_key = {(r["variant"], r["scale"]): r for r in rows}
    for variant, p_m, (g_lo, g_hi), source in PUBLIC:
        r = by_key.get((variant, "n"))
        if r is None or imgsz != 640:
            continue
        lines.append(f"- {source}: {public_verdict(r, p_m, (g_lo, g_hi))}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import tssa.offline

    tssa.offline.configure_offline(tssa.offline.default_config_dir())  # a private settings dir
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", default="results", help="folder of the runs (default results/)")
    parser.add_argument("--suite", default="yolo-table", help="count-only model suite (name or .yaml path)")
    parser.add_argument("--rerun", action="store_true", help="measure again even if a complete run exists")
    parser.add_argument("--from-rows", action="store_true",
                        help="never measure: the latest complete run of the suite on any machine")  # fmt: skip
    parser.add_argument(
        "--write-readme", nargs="?", const=str(README), default=None, metavar="PATH", help="README to update"
    )
    args = parser.parse_args(argv)
    readme = Path(args.write_readme) if args.write_readme else None
    if readme is not None:
        if not readme.is_file():
            parser.error(f"--write-readme: {readme} is not a file")
        begin, end = markers("yolo-table")
        text = readme.read_text(encoding="utf-8")
        if text.count(begin) != 1 or text.count(end) != 1:
            parser.error(f"--write-readme: {readme} needs exactly one {begin} and one {end}")
    try:
        rows, run_id = measure(args.results_dir, args.rerun, args.suite, from_rows=args.from_rows)
    except ValueError as e:
        parser.error(str(e))
    block = render(rows, 640, run_id)
    print(block)
    if readme is not None:
        try:
            write_block(readme, "yolo-table", block)
        except ValueError as e:
            parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
