"""Prove the operator speed gates: run the checks of ``tests/perf`` K times, clean or with a planted regression.

One ``pytest tests/perf`` process per call, with ``TSSA_PERF_REPEAT=K`` (every selected check runs K
times in that process, each repetition a separate test item that builds its inputs and measures
afresh, see ``tests/perf/conftest.py``) and ``TSSA_PERF_PLANT`` for planted runs (see
``tests/perf/_plant.py``). Repetition k of every check forms run k. One JSON line per run goes to
``--out``: the plant, the checks that failed, and the ratios / counts each check recorded
(``record_property``). ``--summary`` turns such a file into the table of the closing record.

    python scripts/perf_gate_record.py --plant clean --runs 20 --out perf_record.jsonl
    python scripts/perf_gate_record.py --plant slow25 --runs 20 --out perf_record.jsonl -- -k "core or exact"
    python scripts/perf_gate_record.py --summary perf_record.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLANTS = ("clean", "double", "slow25", "nxn")
DEFAULT_SELECTION = ["-k", "not instructions"]  # callgrind takes ~40 s a run: record it separately
_RUN = re.compile(r"\[run(\d+)(?:-|\])")


def _split(name: str) -> tuple[str, int]:
    """``test_x[run3-cpu]`` -> (``test_x[cpu]``, 3); ``test_x[run3]`` -> (``test_x``, 3)."""
    m = _RUN.search(name)
    if m is None:
        return name, 0
    rest = name[m.end() :]
    return name[: m.start()] + (f"[{rest}" if rest else ""), int(m.group(1))


def record(plant: str, runs: int, pytest_args: list[str]) -> list[dict]:
    """Run the selected checks ``runs`` times in one pytest process; one dict per run."""
    env = dict(os.environ, TSSA_PERF_REPEAT=str(runs))
    env.pop("TSSA_PERF_PLANT", None)
    if plant != "clean":
        env["TSSA_PERF_PLANT"] = plant
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "tests/perf",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--junitxml={xml}",
        ]
        t0 = time.time()
        proc = subprocess.run(cmd + pytest_args, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        if not xml.exists():
            raise SystemExit(
                f"pytest wrote no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
            )
        cases = ET.parse(xml).getroot().iter("testcase")
        per_run: dict[int, dict] = defaultdict(
            lambda: {"failed": [], "passed": [], "skipped": [], "values": {}}
        )
        for case in cases:
            check, k = _split(case.get("name"))
            rec = per_run[k]
            if case.find("failure") is not None or case.find("error") is not None:
                rec["failed"].append(check)
            elif case.find("skipped") is not None:
                rec["skipped"].append(check)
            else:
                rec["passed"].append(check)
            for prop in case.iter("property"):
                rec["values"][f"{check}:{prop.get('name')}"] = float(prop.get("value"))
    return [
        {"plant": plant, "run": k, "exit": proc.returncode, "wall_s_all_runs": round(wall, 1), **per_run[k]}
        for k in sorted(per_run)
    ]


def summary(path: Path) -> str:
    """Per plant: runs caught (a run fails when any of its checks fails), per-check failures, value ranges."""
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_plant = defaultdict(list)
    for r in runs:
        by_plant[r["plant"]].append(r)
    lines = []
    for plant in PLANTS:
        rs = by_plant.get(plant, [])
        if not rs:
            continue
        failing = sum(bool(r["failed"]) for r in rs)
        verdict = "runs failing (caught)" if plant != "clean" else "runs failing (false alarms)"
        lines.append(f"## {plant}: {len(rs)} runs, {failing} {verdict}")
        per_check = defaultdict(lambda: [0, 0])
        for r in rs:
            for name in r["failed"]:
                per_check[name][0] += 1
                per_check[name][1] += 1
            for name in r["passed"]:
                per_check[name][1] += 1
        for name, (bad, n) in sorted(per_check.items()):
            lines.append(f"  {name}: failed {bad}/{n}")
        for key in sorted({k for r in rs for k in r["values"]}):
            vals = [r["values"][key] for r in rs if key in r["values"]]
            lines.append(
                f"  {key}: min {min(vals):.4g} median {statistics.median(vals):.4g} max {max(vals):.4g} (n={len(vals)})"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plant", choices=PLANTS, default="clean")
    ap.add_argument("--runs", type=int, default=1, help="repetitions of every selected check (K)")
    ap.add_argument("--out", type=Path, help="JSON lines file to append one record per run to")
    ap.add_argument("--summary", type=Path, help="print the table of a record file and exit")
    ap.add_argument(
        "pytest_args", nargs="*", help="after --: arguments for pytest (default: -k 'not instructions')"
    )
    args = ap.parse_args(argv)
    if args.summary is not None:
        if not args.summary.exists():
            ap.error(f"--summary {args.summary}: no such file; record runs first with --out")
        print(summary(args.summary))
        return 0
    if args.out is None or args.runs < 1:
        ap.error("recording needs --out FILE and --runs >= 1")
    recs = record(args.plant, args.runs, args.pytest_args or DEFAULT_SELECTION)
    with args.out.open("a") as f:
        for rec in recs:
            f.write(json.dumps(rec) + "\n")
    caught = sum(bool(r["failed"]) for r in recs)
    print(f"{args.plant}: {len(recs)} runs, {caught} failing, {recs[0]['wall_s_all_runs']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
