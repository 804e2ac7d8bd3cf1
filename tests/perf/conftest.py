"""Fixtures of the operator speed checks: one intra-op thread, and the planted regressions.

``TSSA_PERF_PLANT=double|slow25|nxn`` wraps every registered core implementation for the whole
session (see ``_plant.py``); ``scripts/perf_gate_record.py`` uses it to prove that the checks fail.
``TSSA_PERF_REPEAT=K`` (default 1) runs every check K times in this process, each repetition a
separate test item (``...[...-run3]``) that builds its inputs and measures afresh: the record script
gets K independent runs of the same checks without K interpreter start-ups.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _plant  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def planted_regression():
    """The planted regression of this session (None on a clean run)."""
    kind = _plant.requested()
    saved = _plant.apply(kind)
    yield kind
    _plant.restore(saved)


def pytest_generate_tests(metafunc):
    """``TSSA_PERF_REPEAT=K``: parametrize every check over K repetitions (ids ``run0`` ... ``run{K-1}``)."""
    text = os.environ.get("TSSA_PERF_REPEAT", "1").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise pytest.UsageError(f"TSSA_PERF_REPEAT={text!r} is not a positive integer; set it to e.g. 20")
    if int(text) > 1:
        metafunc.fixturenames.append("perf_run")
        metafunc.parametrize("perf_run", range(int(text)), ids=lambda i: f"run{i}")
