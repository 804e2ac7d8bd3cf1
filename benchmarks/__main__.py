"""Command line of the harness.

    python -m benchmarks run --suite cpu [--results-dir DIR] [--retry-failed] [--dry-run] [--jobs N|auto]
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
import sys
import time


def _progress(done: int, total: int, label: str) -> None:
    print(f"[{done}/{total} cells] {label}", flush=True)


def _history(args) -> list:
    """Runs of this suite measured on this machine (published or local): what estimates come from."""
    from benchmarks.core.store import list_runs, machine

    here = machine()["id"]
    return [
        r for r in list_runs(args.results_dir, args.suite_name, "all") if r.record["machine"]["id"] == here
    ]


def _estimate_line(args, groups, states: dict, jobs: int) -> str:
    """The dry run's time estimate from cells measured before on this machine (any run of the suite)."""
    from benchmarks.core.estimate import cell_durations, describe_estimate, estimate_seconds

    todo = [[c for c in g.cells if states.get(c.id) == "todo"] for g in groups]
    exclusive = [g.exclusive for g in groups]
    return describe_estimate(
        estimate_seconds(todo, cell_durations(_history(args)), jobs=jobs, exclusive=exclusive)
    )


def _jobs_arg(text: str) -> str | int:
    """``--jobs``: a positive number of worker processes, or ``auto``."""
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of workers; give a positive integer or auto"
        ) from None
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"{n} workers: give a positive integer (1 runs the cells in this process) or auto"
        )
    return n


def _resolve_jobs(args, groups, requested) -> int:
    """The number of workers: ``auto`` from the cores, the cells' threads and the memory their earlier
    runs on this machine peaked at; an explicit number above the usable cores runs, with a warning."""
    from benchmarks.core.estimate import cell_peak_mib
    from benchmarks.core.runner import auto_jobs, available_mib, usable_cores

    if requested in (None, 1):
        return 1
    if requested == "auto":
        ids = {c.id for g in groups for c in g.cells}
        peaks = [v for k, v in cell_peak_mib(_history(args)).items() if k in ids]
        return auto_jobs(groups, max(peaks) if peaks else None, available_mib())
    threads = max([g.threads for g in groups if not g.exclusive] or [1])
    if requested * threads > usable_cores():
        print(f"warning: --jobs {requested} x {threads} thread(s) per cell exceeds the {usable_cores()} usable cores; "
              "the cells will compete for them", file=sys.stderr)  # fmt: skip
    return int(requested)


def _cmd_run(args, ap) -> int:
    import torch

    from benchmarks.core import registry
    from benchmarks.core.runner import plan_status, run_groups
    from benchmarks.core.scaleout import ScaleOutError, executor_from_args
    from benchmarks.core.store import list_runs, load_rows, machine

    try:  # where cells run is not part of the run's identity: the run sees the suite without it
        args.suite, executor = executor_from_args(args.suite, args)
    except ScaleOutError as exc:
        ap.error(str(exc))
    suite = args.suite
    owner = registry.owner(args.part)
    if owner is not None:
        if suite.get(owner.name) is None:
            ap.error(f"suite {args.suite_name!r} has no {owner.name} section")
        if args.part != owner.name and (suite[owner.name] or {}).get(args.part) is None:
            ap.error(f"suite {args.suite_name!r} has no {owner.name}.{args.part} section")
    if not args.dry_run and suite["device"] == "cuda" and not torch.cuda.is_available():
        ap.error(f"suite {args.suite_name!r} runs on cuda but torch sees no CUDA device; use --suite cpu")
    chosen = [
        s
        for s in registry.studies()
        if suite.get(s.name) is not None and args.part in ("all", s.name, *s.parts)
    ]
    data_notes = []
    for study in chosen:
        if study.check_data is None:
            continue
        try:
            study.check_data(suite[study.name])
        except ValueError as exc:  # DataError, or a section that cannot be used
            if not args.dry_run:  # no cell runs (and no row is written) when a dataset is missing
                ap.error(str(exc))
            data_notes.append(f"note: {exc} (a run would stop here)")
    try:
        groups = registry.plan(args.suite_name, suite, args.part)
    except ValueError as exc:
        ap.error(str(exc))
    if not groups:
        ap.error(f"suite {args.suite_name!r} has no cells to run")
    jobs = _resolve_jobs(args, groups, args.jobs if args.jobs is not None else executor.get("jobs"))
    args.jobs_n = jobs
    if args.dry_run:
        from benchmarks.core.store import config_hash

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
        print(f"{jobs} worker(s)" + (" (exclusive cells alone)" if jobs > 1 else ""))
        print(_estimate_line(args, groups, dict((c.id, st) for c, st in states), jobs))
        for note in data_notes:
            print(note)
        if executor["kind"] == "submitit":
            from benchmarks.core.scaleout import describe_submission

            print(describe_submission(executor, run, groups, args.retry_failed, args.suite_name))
        return 0
    if executor["kind"] == "submitit":
        from benchmarks.core.scaleout import submit_from_cli

        try:
            return submit_from_cli(args, groups, executor)
        except ScaleOutError as exc:
            ap.error(str(exc))
    t0 = time.perf_counter()
    try:
        run = run_groups(args.suite_name, suite, groups, args.results_dir, retry_failed=args.retry_failed,
                         device=suite["device"], progress=_progress, jobs=jobs,
                         planner=registry.Planner.current(args.part))  # fmt: skip
    except KeyboardInterrupt:
        print("stopped (Ctrl-C): the cells that were running are recorded as interrupted; the same command "
              "resumes the run", file=sys.stderr)  # fmt: skip
        return 130
    print(f"run {run.id}: {run.summary()} in {run.path} ({time.perf_counter() - t0:.0f} s)")
    df = load_rows([run])
    for study in chosen:
        if study.run_summary is not None and not df.empty and (df["kind"] == study.name).any():
            title = f"{study.name.capitalize()} study, suite {args.suite_name}, run {run.id}"
            text = study.run_summary(df, suite[study.name], title)
            if text:
                print(text)
    return 0


def _select(args, ap, kind=None):
    from benchmarks.core.store import load_rows, select_runs

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
    from benchmarks.core.readme import write_block

    try:
        write_block(args.readme, marker, block)
    except ValueError as exc:
        ap.error(str(exc))


def _cmd_derive(args, ap) -> int:
    from pathlib import Path

    from benchmarks.core import registry
    from benchmarks.core.reproduce import compare
    from benchmarks.core.store import list_runs, load_rows, select_runs

    command = f"python -m benchmarks derive --suite {args.suite_name}"
    options = {"reference": args.reference, "fit_min_tokens": args.fit_min_tokens}
    try:
        named = select_runs(args.results_dir, args.suite_name, args.runs, args.scope) if args.runs else None
    except ValueError as exc:
        ap.error(str(exc))
    every = list_runs(args.results_dir, args.suite_name, args.scope)
    if not named and not [r for r in every if r.record["status"] == "complete"]:
        ap.error(
            f"no complete run of suite {args.suite_name!r} under {args.results_dir}; run "
            f"`python -m benchmarks run --suite {args.suite_name}` first"
        )
    written, looked = 0, set()
    for study in registry.studies():
        if study.readme is None:
            continue
        runs = named or select_runs(args.results_dir, args.suite_name, None, args.scope, kind=study.name)
        looked |= {r.id for r in runs}
        rows = load_rows(runs)
        if rows.empty or not (rows["kind"] == study.name).any():
            continue
        ctx = registry.ReadmeContext(args.suite_name, args.suite, command, runs, rows, args.results_dir, options,
                                     [r.line() for r in compare(every, study.name)])  # fmt: skip
        try:
            block = study.readme(ctx)
        except ValueError as exc:
            ap.error(str(exc))
        if not block:
            continue
        written += 1
        print(block)
        if args.readme:
            _readme_block(args, ap, f"{study.name}:{args.suite_name}", block)
            print(f"updated {args.readme}")
    if not written:
        ap.error(f"the selected runs {sorted(looked)} hold no error-free rows to derive from")
    if args.readme and f"<!-- times:{args.suite_name}:begin -->" in Path(args.readme).read_text(
        encoding="utf-8"
    ):
        _readme_block(
            args, ap, f"times:{args.suite_name}", _times_block(command, [r for r in every if r.id in looked])
        )
    return 0


def _times_block(command: str, runs) -> str:
    """Wall time per study of the runs the README's blocks come from (each run's own log)."""
    from benchmarks.report.render import markdown_table

    rows = []
    for r in sorted(runs, key=lambda r: r.id):
        for kind, (n, sec) in sorted(r.wall_times().items()):
            rows.append([r.id, kind, str(n), f"{sec / 60:.1f}", r.record["machine"]["name"]])
    heads = [("study", "left"), ("cells", "right"), ("wall time (min)", "right"), ("machine", "left")]
    return "\n".join([f"Written by `{command} --readme README.md` from each run's log (first cell started to last "
                      "finished, per study; studies whose cells run side by side overlap):", "",
                      markdown_table("run", heads, rows)])  # fmt: skip


def _cmd_runs(args, ap) -> int:
    from pathlib import Path

    from benchmarks.core.store import list_runs

    for r in list_runs(args.results_dir, args.suite_name if args.suite_given else None):
        rec = r.record
        # by the layout (results/local/<suite>/<run>), not by folder names above the results folder
        area = (
            "local"
            if r.path.resolve().parents[1] == Path(args.results_dir).resolve() / "local"
            else "published"
        )
        print(f"{rec['suite']:10s} {r.id:40s} {area:9s} {rec['status']:8s} {rec['machine']['name']} "
              f"[{rec['machine']['id']}] {r.summary()}")  # fmt: skip
    return 0


def _cmd_publish(args, ap) -> int:
    from benchmarks.core.store import list_runs, publish

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

    import benchmarks.studies  # noqa: F401  (the project's studies register themselves)
    from benchmarks.core import registry
    from benchmarks.core.suites import SuiteError, load_suite

    ap = argparse.ArgumentParser(prog="python -m benchmarks", description="TSSA benchmark harness")
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--suite", default=None, help="embedded suite name (cpu, gpu) or a .yaml path")
    common.add_argument("--results-dir", default="results", help="folder of the runs (default results/)")
    r = sub.add_parser("run", parents=[common], help="run a suite's cells into this machine's run (resumes)")
    r.add_argument("--part", choices=registry.part_choices(), default="all",
                   help="one study, one section a study declares, or all")  # fmt: skip
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
    r.add_argument("--jobs", type=_jobs_arg, default=None, metavar="N|auto",
                   help="cells at once on this machine, each in its own worker process (default: the suite's jobs, "
                        "else 1); auto: usable cores // the cells' threads, capped by memory")  # fmt: skip
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
        from benchmarks.core.suites import NAME_RE

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
