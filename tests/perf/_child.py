"""Child pytest processes for the tests of the perf checks themselves: their environment and their results.

A child gets the parent's environment without the variables that change what the perf checks do
(``TSSA_PERF_PLANT``, ``TSSA_PERF_REPEAT``, ``TSSA_PERF_REFRESH``): a child runs planted only when
its caller names the plant, runs every check once, and never rewrites ``expected.json``.
Results come from the child's JUnit report: per test its outcome and the values it recorded with
``record_property``, and the suite properties (``tssa_perf_plant``: the plant the child saw).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import _plant
from _expected import REFRESH_ENV

ROOT = Path(__file__).resolve().parents[2]
REPEAT_ENV = "TSSA_PERF_REPEAT"
CONTROL_ENV = (_plant.ENV, REPEAT_ENV, REFRESH_ENV)


def child_env(plant: str | None = None, **extra: str) -> dict[str, str]:
    """The parent's environment less ``CONTROL_ENV``; ``TSSA_PERF_PLANT=plant`` when one is named."""
    env = {k: v for k, v in os.environ.items() if k not in CONTROL_ENV}
    if plant is not None:
        if plant not in _plant.KINDS:
            raise ValueError(f"{plant!r} is not a planted regression ({', '.join(_plant.KINDS)})")
        env[_plant.ENV] = plant
    env.update(extra)
    return env


def in_record_session() -> bool:
    """Whether this process itself runs planted or repeated (``scripts/perf_gate_record.py``)."""
    repeat = os.environ.get(REPEAT_ENV, "").strip()
    return bool(os.environ.get(_plant.ENV, "").strip()) or (repeat.isdigit() and int(repeat) > 1)


@dataclasses.dataclass
class ChildRun:
    plant: str | None
    returncode: int
    wall_s: float
    outcomes: dict[str, str]  # test name (``test_x[id]``) -> passed | failed | skipped
    values: dict[str, dict[str, float]]  # test name -> its record_property values
    messages: dict[str, str]  # test name -> the message of its failure, error or skip ("" when it passed)
    suite: dict[str, str]  # the report's suite properties
    output: str  # the tail of the child's stdout and stderr

    def names(self, outcome: str) -> set[str]:
        return {name for name, o in self.outcomes.items() if o == outcome}


def _outcome(case: ET.Element) -> tuple[str, str]:
    for tag, outcome in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
        node = case.find(tag)
        if node is not None:
            return outcome, f"{node.get('message', '')}\n{node.text or ''}".strip()
    return "passed", ""


def run_pytest(args: list[str], plant: str | None, tmp: Path, timeout: float = 300) -> ChildRun:
    """``python -m pytest ARGS -p no:cacheprovider -q`` from the repository root, planted with ``plant``."""
    xml = tmp / f"junit-{plant or 'clean'}-{time.monotonic_ns()}.xml"
    cmd = [sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider", "-q", f"--junitxml={xml}"]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, env=child_env(plant), capture_output=True, text=True, timeout=timeout
    )
    wall = time.perf_counter() - t0
    output = (proc.stdout[-6000:] + proc.stderr[-3000:]).strip()
    if not xml.exists():
        raise AssertionError(f"the child pytest wrote no report (exit {proc.returncode}):\n{output}")
    root = ET.parse(xml).getroot()
    outcomes, values, messages = {}, {}, {}
    for case in root.iter("testcase"):
        name = case.get("name")
        outcomes[name], messages[name] = _outcome(case)
        values[name] = {p.get("name"): float(p.get("value")) for p in case.iter("property")}
    suite = {
        p.get("name"): p.get("value")
        for s in root.iter("testsuite")
        for props in s.findall("properties")
        for p in props.iter("property")
    }
    return ChildRun(plant, proc.returncode, wall, outcomes, values, messages, suite, output)
