"""Command line of the harness.

    python -m benchmarks run --suite cpu [--results-dir DIR] [--retry-failed] [--dry-run]
                             [--executor local|submitit [--partition P] [--account A] [--wait]]
    python -m benchmarks derive --suite cpu [--runs ID ...] [--scope all|published|local] [--readme README.md]
    python -m benchmarks runs [--suite cpu]          # every run: id, machine, status, cells
    python -m benchmarks publish --suite cpu [--run ID]   # copy a complete local run into results/<suite>/
    python -m benchmarks report [--results-dir results] [--out reports] [--readme README.md] [--no-pdf]

``run`` writes into this checkout's run of the suite (``results/local/<suite>/<run id>/``): the same
command on the same machine resumes an interrupted run; otherwise a new run starts. Rows of other
machines or configurations are never touched. ``derive`` reads an explicit set of runs (by default
the latest complete run of each suite and machine, published or local) and writes the derived
numbers (``results/<suite>/derived.json``) and, with ``--readme``, the README block.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _plan(suite_name: str, suite: dict, part: str):
    """Every group of the suite: the complexity sweeps, the detection study, the classification study."""
    from benchmarks import complexity

    parts = ("operator", "model", "detection", "classification") if part == "all" else (part,)
    groups = complexity.plan(suite_name, suite, parts)
    if "detection" in parts and suite.get("detection") is not None:
        from benchmarks import detection_study

        groups += detection_study.plan(suite_name, suite)
    if "classification" in parts and suite.get("classification") is not None:
        from benchmarks import classification_study

        groups += classification_study.plan(suite_name, suite)
    return groups


def _progress(done: int, total: int, label: str) -> None:
    print(f"[{done}/{total} cells] {label}", flush=True)


def _estimate_line(args, groups, states: dict) -> str:
    """The dry run's time estimate from cells measured before on this machine (any run of the suite)."""
    from benchmarks.estimate import cell_durations, describe_estimate, estimate_seconds
    from benchmarks.store import list_runs, machine

    here = machine()["id"]
    runs = [
        r for r in list_runs(args.results_dir, args.suite_name, "all") if r.record["machine"]["id"] == here
    ]
    todo = [[c for c in g.cells if states.get(c.id) == "todo"] for g in groups]
    return describe_estimate(estimate_seconds(todo, cell_durations(runs)))


def _cmd_run(args, ap) -> int:
    import torch

    from benchmarks.runner import plan_status, run_groups
    from benchmarks.scaleout import ScaleOutError, executor_from_args
    from benchmarks.store import list_runs, machine

    try:  # where cells run is not part of the run's identity: the run sees the suite without it
        args.suite, executor = executor_from_args(args.suite, args)
    except ScaleOutError as exc:
        ap.error(str(exc))
    suite = args.suite
    cx = suite.get("complexity") or {}
    if args.part in ("detection", "classification") and suite.get(args.part) is None:
        ap.error(f"suite {args.suite_name!r} has no {args.part} section")
    if args.part in ("operator", "model") and cx.get(args.part) is None:
        ap.error(f"suite {args.suite_name!r} has no complexity.{args.part} section")
    if not args.dry_run and suite["device"] == "cuda" and not torch.cuda.is_available():
        ap.error(f"suite {args.suite_name!r} runs on cuda but torch sees no CUDA device; use --suite cpu")
    if suite.get("detection") is not None and args.part in ("all", "detection"):
        from benchmarks.data.real import DataError
        from benchmarks.detection import check_data, parse_detection

        try:
            check_data(parse_detection(suite["detection"]))
        except (DataError, ValueError) as exc:
            ap.error(str(exc))
    data_note = None
    if suite.get("classification") is not None and args.part in ("all", "classification"):
        from benchmarks.classification import check_data, parse_classification
        from benchmarks.data.digits import DataError as ClsDataError

        try:
            check_data(parse_classification(suite["classification"]))
        except (ClsDataError, ValueError) as exc:
            if not args.dry_run:  # no cell runs (and no row is written) when a dataset is missing
                ap.error(str(exc))
            data_note = f"note: {exc} (a run would stop here)"
    try:
        groups = _plan(args.suite_name, suite, args.part)
    except ValueError as exc:
        ap.error(str(exc))
    if not groups:
        ap.error(f"suite {args.suite_name!r} has no cells to run")
    if args.dry_run:
        from benchmarks.store import config_hash

        chash = config_hash(suite)
        mine = [r for r in list_runs(args.results_dir, args.suite_name, "local")
                if r.record["config_hash"] == chash and r.record["machine"]["id"] == machine()["id"]]  # fmt: skip
        run = mine[-1] if mine and (mine[-1].record["status"] != "complete" or args.retry_failed) else None
        states = plan_status(run, groups, args.retry_failed)
        for cell, state in states:
            print(f"{state:9s} {cell.id}")
        todo = sum(s == "todo" for _, s in states)
        where = f"resumes run {run.id}" if run else "starts a new run"
        print(f"{len(states)} cells, {todo} to execute; this command {where} under {args.results_dir}/local/")
        print(_estimate_line(args, groups, dict((c.id, st) for c, st in states)))
        if data_note:
            print(data_note)
        if executor["kind"] == "submitit":
            from benchmarks.scaleout import describe_submission

            print(describe_submission(executor, run, groups, args.retry_failed, args.suite_name))
        return 0
    if executor["kind"] == "submitit":
        from benchmarks.scaleout import submit_from_cli

        try:
            return submit_from_cli(args, groups, executor)
        except ScaleOutError as exc:
            ap.error(str(exc))
    t0 = time.perf_counter()
    run = run_groups(args.suite_name, suite, groups, args.results_dir, retry_failed=args.retry_failed,
                     device=suite["device"], progress=_progress)  # fmt: skip
    print(f"run {run.id}: {run.summary()} in {run.path} ({time.perf_counter() - t0:.0f} s)")
    if suite.get("detection") is not None and args.part in ("all", "detection"):
        from benchmarks import detection_study
        from benchmarks.store import load_rows

        df = load_rows([run])
        if not df.empty and (df["kind"] == "detection").any():
            s = detection_study.summary(df, suite["detection"])
            print(
                detection_study.summary_markdown(s, f"Detection study, suite {args.suite_name}, run {run.id}")
            )
    if suite.get("classification") is not None and args.part in ("all", "classification"):
        from benchmarks import classification_study
        from benchmarks.store import load_rows

        df = load_rows([run])
        if not df.empty and (df["kind"] == "classification").any():
            s = classification_study.summary(df, suite["classification"])
            title = f"Classification study, suite {args.suite_name}, run {run.id}"
            print(classification_study.summary_markdown(s, title))
    return 0


def _select(args, ap, kind=None):
    from benchmarks.store import load_rows, select_runs

    try:
        runs = select_runs(args.results_dir, args.suite_name, args.runs, args.scope, kind=kind)
    except ValueError as exc:
        ap.error(str(exc))
    if not runs:
        ap.error(
            f"no complete run of suite {args.suite_name!r} under {args.results_dir}; run "
            f"`python -m benchmarks run --suite {args.suite_name}` first"
        )
    return runs, load_rows(runs)


def _readme_block(args, ap, marker: str, block: str) -> None:
    """Replace the README's ``marker`` block with ``block``; a README without the markers is one error line."""
    from benchmarks.complexity import write_readme_block

    try:
        write_readme_block(args.readme, marker, block)
    except ValueError as exc:
        ap.error(str(exc))


def _reproduction_lines(args, kind: str) -> list[str]:
    """One line per earlier run of this suite and machine whose cells the latest run measured again."""
    from benchmarks.reproduce import compare
    from benchmarks.store import list_runs

    return [r.line() for r in compare(list_runs(args.results_dir, args.suite_name, args.scope), kind)]


def _cmd_derive(args, ap) -> int:
    from benchmarks.complexity import derive, derived_json, derived_markdown
    from benchmarks.store import load_rows, select_runs

    runs, df = _select(args, ap, kind=None if args.runs else "complexity")
    det_runs = (
        runs
        if args.runs
        else select_runs(args.results_dir, args.suite_name, None, args.scope, kind="detection")
    )
    det_df = df if args.runs else load_rows(det_runs)
    cls_runs = (
        runs
        if args.runs
        else select_runs(args.results_dir, args.suite_name, None, args.scope, kind="classification")
    )
    cls_df = df if args.runs else load_rows(cls_runs)
    has_cls = not cls_df.empty and (cls_df["kind"] == "classification").any()
    op = (args.suite.get("complexity") or {}).get("operator") or {}
    fit_min = args.fit_min_tokens if args.fit_min_tokens is not None else op.get("fit_min_tokens", 1024)
    try:
        d = derive(df, fit_min_tokens=fit_min, reference=args.reference)
    except ValueError as exc:
        ap.error(str(exc))
    has_det = not det_df.empty and (det_df["kind"] == "detection").any()
    if not d["configs"] and not d["models"] and not has_det and not has_cls:
        ap.error(f"the selected runs {[r.id for r in runs]} hold no error-free rows to derive from")
    command = f"python -m benchmarks derive --suite {args.suite_name}"
    block = derived_markdown(d, command)
    if not d["configs"] and not d["models"]:
        block = ""  # no complexity rows selected: the complexity block stays as it is
    print(block)
    if block:
        out = args.results_dir_path / args.suite_name / "derived.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(derived_json(d), indent=1, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, out)
        print(f"wrote {out}")
    if args.readme and block:
        _readme_block(args, ap, f"complexity:{args.suite_name}", block)
        print(f"updated {args.readme}")
    if has_det:
        from benchmarks import detection_study

        blocks = []
        for run in det_runs:  # one table per run: rows of different machines are never pooled
            rdf = det_df[det_df["run"] == run.id]
            if (rdf["kind"] == "detection").any():  # every machine named; timings never pooled across devices
                title = f"Detection study, suite {args.suite_name}, run {run.id}"
                blocks += detection_study.run_blocks(rdf, run.record["config"]["detection"], title)
        blocks += _reproduction_lines(args, "detection")
        block = f"Written by `{command}`.\n\n" + "\n\n".join(blocks)
        print(block)
        if args.readme:
            _readme_block(args, ap, f"detection:{args.suite_name}", block)
    if has_cls:
        from benchmarks import classification_study

        blocks = []
        for run in cls_runs:  # one table per run: rows of different machines are never pooled
            rdf = cls_df[cls_df["run"] == run.id]
            if (rdf["kind"] == "classification").any():
                s = classification_study.summary(rdf, run.record["config"]["classification"])
                title = (f"Classification study, suite {args.suite_name}, run {run.id} "
                         f"({run.record['machine']['name']}); mean ± sd (n seeds)")  # fmt: skip
                blocks.append(classification_study.summary_markdown(s, title))
        blocks += _reproduction_lines(args, "classification")
        blocks.append(classification_study.paper_markdown())
        block = f"Written by `{command}`.\n\n" + "\n\n".join(blocks)
        print(block)
        if args.readme:
            _readme_block(args, ap, f"classification:{args.suite_name}", block)
    return 0


def _cmd_runs(args, ap) -> int:
    from benchmarks.store import list_runs

    for r in list_runs(args.results_dir, args.suite_name if args.suite_given else None):
        rec = r.record
        area = "local" if "/local/" in str(r.path) or r.path.parts[-3] == "local" else "published"
        print(f"{rec['suite']:10s} {r.id:40s} {area:9s} {rec['status']:8s} {rec['machine']['name']} "
              f"[{rec['machine']['id']}] {r.summary()}")  # fmt: skip
    return 0


def _cmd_publish(args, ap) -> int:
    from benchmarks.store import list_runs, publish

    local = [
        r for r in list_runs(args.results_dir, args.suite_name, "local") if r.record["status"] == "complete"
    ]
    if args.run:
        local = [r for r in local if r.id == args.run]
    if not local:
        ap.error(f"no complete local run of suite {args.suite_name!r}{' named ' + args.run if args.run else ''}; "
                 f"`python -m benchmarks runs` lists them")  # fmt: skip
    try:
        target = publish(local[-1], args.results_dir)
    except ValueError as exc:
        ap.error(str(exc))
    print(f"published {local[-1].id} -> {target} (commit it to make it part of the project's results)")
    return 0


def _cmd_report(args, ap) -> int:
    from pathlib import Path

    from benchmarks.report import build

    if not Path(args.results_dir).is_dir():
        ap.error(f"--results-dir {args.results_dir!r} is not a folder; point it at the committed results/")
    if args.readme and not Path(args.readme).is_file():
        ap.error(f"--readme {args.readme!r} does not exist; name the README that holds the report markers")
    try:
        build(args.results_dir, args.out, args.readme, pdf=not args.no_pdf)
    except (ValueError, RuntimeError) as exc:
        ap.error(str(exc))
    return 0


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    from benchmarks.suites import SuiteError, load_suite

    ap = argparse.ArgumentParser(prog="python -m benchmarks", description="TSSA benchmark harness")
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--suite", default=None, help="embedded suite name (cpu, gpu) or a .yaml path")
    common.add_argument("--results-dir", default="results", help="folder of the runs (default results/)")
    r = sub.add_parser("run", parents=[common], help="run a suite's cells into this machine's run (resumes)")
    r.add_argument(
        "--part", choices=["operator", "model", "detection", "classification", "all"], default="all"
    )
    r.add_argument("--retry-failed", action="store_true", help="run failed cells of the latest run again")
    r.add_argument(
        "--dry-run", action="store_true", help="validate, list the cells and their state, run nothing"
    )
    r.add_argument(
        "--executor", choices=["local", "submitit"], default=None,
        help="local: in this process (default); submitit: one array job over the groups (suite section executor:)",
    )  # fmt: skip
    r.add_argument("--partition", default=None, help="SLURM partition (overrides executor.partition)")
    r.add_argument("--account", default=None, help="SLURM account (overrides executor.account)")
    r.add_argument("--wait", action="store_true", help="with submitit: wait for the jobs and close the run")
    d = sub.add_parser("derive", parents=[common], help="slopes, crossovers and ratios from selected runs")
    d.add_argument("--runs", nargs="+", default=None, help="run ids (default: latest complete per machine)")
    d.add_argument("--scope", choices=["all", "published", "local"], default="all")
    d.add_argument("--readme", default=None, help="README to update between the complexity markers")
    d.add_argument("--reference", default="sdpa", help="core variant TSSA is compared with (default sdpa)")
    d.add_argument("--fit-min-tokens", type=int, default=None, help="fit slopes on N >= this")
    sub.add_parser("runs", parents=[common], help="list runs")
    p = sub.add_parser("publish", parents=[common], help="copy a complete local run into results/<suite>/")
    p.add_argument("--run", default=None, help="run id (default: the latest complete local run)")
    rp = sub.add_parser(
        "report", help="render tables, figures, the claims ledger and report.pdf from the rows"
    )
    rp.add_argument("--results-dir", default="results", help="folder of the runs (default results/)")
    rp.add_argument("--out", default="reports", help="output folder (default reports/)")
    rp.add_argument("--readme", default=None, help="README whose report block is rewritten")
    rp.add_argument("--no-pdf", action="store_true", help="write the .tex files only, do not run latexmk")
    args = ap.parse_args(argv)
    if args.cmd == "report":
        return _cmd_report(args, ap)
    args.suite_given = args.suite is not None
    if (
        args.cmd in ("runs", "publish")
        and args.suite is not None
        and not args.suite.endswith((".yaml", ".yml"))
    ):
        from benchmarks.suites import NAME_RE

        if not NAME_RE.match(args.suite):  # a run's suite by name (e.g. floor), embedded or not
            ap.error(f"--suite {args.suite!r} is not a suite name")
        args.suite_name = args.suite
    else:
        try:
            args.suite = load_suite(args.suite or "cpu")
        except SuiteError as exc:
            ap.error(str(exc))
        args.suite_name = args.suite["name"]
    args.results_dir_path = Path(args.results_dir)
    return {"run": _cmd_run, "derive": _cmd_derive, "runs": _cmd_runs, "publish": _cmd_publish}[args.cmd](
        args, ap
    )


if __name__ == "__main__":
    sys.exit(main())
