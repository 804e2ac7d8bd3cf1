"""Command line of the harness.

    python -m benchmarks run --suite cpu              # run the suite's sweeps; rows -> results/cpu.jsonl
    python -m benchmarks run --suite cpu --part operator
    python -m benchmarks derive --suite cpu --readme README.md   # slopes + crossover -> README block

``run`` resumes: cells that already have rows in the results file are skipped (``--fresh`` moves the
old file to ``<file>.<UTC time>.prev`` first, never replacing an earlier one). ``derive`` reads the rows, fits log-log slopes and the TSSA/SDPA
crossover (:func:`benchmarks.complexity.derive`), writes ``results/<suite>-derived.json`` and, with
``--readme``, replaces the block between ``<!-- complexity:<suite>:begin -->`` and ``...:end -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _store(args):
    from benchmarks.store import ResultStore

    return ResultStore.for_suite(args.suite_name, args.results_dir, args.tag)


def _set_aside(path) -> None:
    """Move recorded rows to ``<file>.<UTC time>[-k].prev``; an earlier set-aside file is never replaced."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for k in range(1000):
        target = path.with_name(f"{path.name}.{stamp}{f'-{k}' if k else ''}.prev")
        try:
            os.link(path, target)  # fails if target exists: nothing is overwritten
        except FileExistsError:
            continue
        os.unlink(path)
        return
    raise RuntimeError(f"could not find a free name to set {path} aside")


def _cmd_run(args, ap) -> int:
    from benchmarks.complexity import run_model_sweep, run_operator_sweep

    store = _store(args)
    import torch

    if args.suite["device"] == "cuda" and not torch.cuda.is_available():
        ap.error(f"suite {args.suite_name!r} runs on cuda but torch sees no CUDA device; use --suite cpu")
    if args.fresh and store.path.exists():
        _set_aside(store.path)
    cx = args.suite.get("complexity") or {}
    parts = ["operator", "model"] if args.part == "all" else [args.part]
    t0 = time.perf_counter()
    n = 0
    for part in parts:
        if cx.get(part) is None:
            if args.part != "all":
                ap.error(f"suite {args.suite_name!r} has no complexity.{part} section")
            continue
        sweep = run_operator_sweep if part == "operator" else run_model_sweep
        n += len(sweep(args.suite_name, args.suite, store))
    print(f"{n} new rows in {store.path} ({time.perf_counter() - t0:.0f} s)")
    return 0


def _cmd_derive(args, ap) -> int:
    from benchmarks.complexity import derive, derived_json, derived_markdown, write_readme_block

    store = _store(args)
    df = store.load()
    if df.empty:
        ap.error(f"no rows in {store.path}; run `python -m benchmarks run --suite {args.suite_name}` first")
    op = (args.suite.get("complexity") or {}).get("operator") or {}
    fit_min = args.fit_min_tokens if args.fit_min_tokens is not None else op.get("fit_min_tokens", 1024)
    d = derive(df, fit_min_tokens=fit_min, reference=args.reference)
    if not d["slopes"]:
        ap.error(f"{store.path} holds no error-free operator latency rows to fit")
    command = f"python -m benchmarks run --suite {args.suite_name}"
    block = derived_markdown(d, command)
    print(block)
    out = store.path.with_name(store.path.stem + "-derived.json")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(derived_json(d), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out}")
    if args.readme:
        try:
            write_readme_block(args.readme, args.suite_name, block)
        except ValueError as exc:
            ap.error(str(exc))
        print(f"updated {args.readme}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from benchmarks.suites import load_suite

    ap = argparse.ArgumentParser(prog="python -m benchmarks", description="TSSA benchmark harness")
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--suite", default="cpu", help="embedded suite name (cpu, gpu) or a .yaml path")
    common.add_argument("--results-dir", default="results", help="folder of the <suite>.jsonl files")
    common.add_argument("--tag", default=None, help="machine tag: rows go to <suite>-<tag>.jsonl")
    r = sub.add_parser("run", parents=[common], help="run a suite's sweeps, appending rows (resumes)")
    r.add_argument("--part", choices=["operator", "model", "all"], default="all")
    r.add_argument(
        "--fresh",
        action="store_true",
        help="move existing rows to <file>.<UTC time>.prev (never overwritten) and start over",
    )
    d = sub.add_parser("derive", parents=[common], help="slopes and crossover from the rows")
    d.add_argument("--readme", default=None, help="README to update between the complexity markers")
    d.add_argument("--reference", default="sdpa", help="variant TSSA is compared with (default sdpa)")
    d.add_argument("--fit-min-tokens", type=int, default=None, help="fit slopes on N >= this")
    args = ap.parse_args(argv)
    try:
        args.suite = load_suite(args.suite)
    except ValueError as exc:
        ap.error(str(exc))
    args.suite_name = args.suite["name"]
    if args.tag is not None and (not args.tag or "/" in args.tag):
        ap.error(f"--tag must be a plain name, got {args.tag!r}")
    if args.cmd == "run":
        return _cmd_run(args, ap)
    return _cmd_derive(args, ap)


if __name__ == "__main__":
    sys.exit(main())
