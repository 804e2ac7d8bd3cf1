"""Fixtures of the operator speed checks: one intra-op thread, and the planted regressions.

``TSSA_PERF_PLANT=double|slow25|nxn`` wraps every registered core implementation for the whole
session (see ``_plant.py``); ``scripts/perf_gate_record.py`` uses it to prove that the checks fail.
``TSSA_PERF_REPEAT=K`` (default 1) runs every check K times in this process, each repetition a
separate test item (``...[...-run3]``) that builds its inputs and measures afresh: the record script
gets K independent runs of the same checks without K interpreter start-ups.

The plant a session runs under is also written to the JUnit report as the suite property
``tssa_perf_plant`` (``none`` on a clean run), so that a parent process can check what its child saw.
A check that cannot gate on this machine (no committed expectation for its key) names what is missing
through the ``missing_expectation`` fixture; each such line is repeated in a section of the terminal
summary, so that the gap shows at the end of every run, not only among the skips.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _plant  # noqa: E402

_MISSING = pytest.StashKey[list]()


@pytest.fixture(scope="session", autouse=True)
def planted_regression(record_testsuite_property):
    """The planted regression of this session (None on a clean run)."""
    kind = _plant.requested()
    record_testsuite_property("tssa_perf_plant", kind or "none")
    saved = _plant.apply(kind)
    yield kind
    _plant.restore(saved)


@pytest.fixture
def missing_expectation(request):
    """``note(line)``: keep one line for the terminal summary's section on expectations missing here."""
    lines = request.config.stash.setdefault(_MISSING, [])

    def note(line: str) -> None:
        if line not in lines:
            lines.append(line)

    return note


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(_MISSING, [])
    if lines:
        terminalreporter.write_sep("=", "perf expectations missing on this machine (not gated)", yellow=True)
        for line in lines:
            terminalreporter.write_line(line)


def pytest_generate_tests(metafunc):
    """``TSSA_PERF_REPEAT=K``: parametrize every check over K repetitions (ids ``run0`` ... ``run{K-1}``)."""
    text = os.environ.get("TSSA_PERF_REPEAT", "1").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise pytest.UsageError(f"TSSA_PERF_REPEAT={text!r} is not a positive integer; set it to e.g. 20")
    if int(text) > 1:
        metafunc.fixturenames.append("perf_run")
        metafunc.parametrize("perf_run", range(int(text)), ids=lambda i: f"run{i}")
