"""Instruction counts of the TSSA core under callgrind: the stable signal for small regressions.

Wall time on a shared machine swings by tens of percent; the number of instructions a call executes
does not (PyTorch gates its own compile-time benchmarks on instruction counts with ~1.5 %
tolerances). ``_callgrind_child.py`` runs under ``valgrind --tool=callgrind`` with one thread at
(B, H, N, D) = (1, 8, 4096, 48) and counts the core's forward and forward+backward over 4 calls
each (the Python around the calls included); this check compares the counts with
``tests/perf/expected.json``.

Counts depend on the code path, so the expectation is keyed by torch version, Python version and
the CPU capability ATen dispatches to (``torch.backends.cpu.get_cpu_capability()``); on a machine
with no committed key the check skips and says how to record one (``TSSA_PERF_REFRESH=1``).
Refresh on purpose after an intended change of the core, and review the diff.

Valgrind does count inside ATen's kernels here: with the core's work doubled
(``TSSA_PERF_PLANT=double``) the forward count went from 60.6 M to 121.0 M (x1.996) and fwd+bwd from
312.2 M to 623.8 M (x1.998), so the count follows the kernels' work, not only the Python around them.

Tolerance: ``TOLERANCE`` below, from the spread of clean runs on the development machine (see the
docstring of ``test_operator_speed.py`` for the record).

Refresh on purpose (after an intended change of the core, or to add this machine's key), then
review the diff of ``tests/perf/expected.json``::

    TSSA_PERF_REFRESH=1 tox -e perf -- -k instructions
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _expected import expected, record, refreshing

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
TOLERANCE = 0.01  # relative; clean runs here differ by <= 0.07 %, the smallest plant (slow25) adds 41 %


def _key() -> str:
    py = ".".join(platform.python_version_tuple()[:2])
    return f"torch {torch.__version__}, python {py}, {platform.machine()} {torch.backends.cpu.get_cpu_capability()}"


def _total(dump: Path) -> int:
    m = re.search(r"^(?:totals|summary):\s*(\d+)", dump.read_text(), re.M)
    if m is None:
        raise AssertionError(f"no instruction total in callgrind dump {dump}")
    return int(m.group(1))


def collect_counts(tmp: Path) -> dict[str, int]:
    """Run the child under callgrind; {measurement name: instructions over its calls}."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    cmd = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
        f"--callgrind-out-file={tmp / 'cg.out'}", sys.executable, str(HERE / "_callgrind_child.py"), str(tmp),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"callgrind child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    names = json.loads((tmp / "names.json").read_text())
    dumps = sorted(tmp.glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
    assert len(dumps) == len(names), f"{len(dumps)} callgrind dumps for {len(names)} measurements"
    return {name: _total(dump) for name, dump in zip(names, dumps, strict=True)}


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed (.ci/run installs it)")
@pytest.mark.skipif(
    not torch._C._valgrind_supported_platform(), reason="torch built without valgrind support"
)
def test_instructions_core_match_expectation(tmp_path, record_property):
    counts = collect_counts(tmp_path)
    for name, count in counts.items():
        record_property(name, count)
        print(f"\ninstructions {name}: {count}")
    if refreshing():
        record(("instructions", _key()), counts)
    want = expected(("instructions", _key()))
    if want is None:
        pytest.skip(f"no instruction-count expectation for {_key()!r}; record one with TSSA_PERF_REFRESH=1")
    for name, count in counts.items():
        ratio = count / want[name]
        assert abs(ratio - 1) <= TOLERANCE, (
            f"{name}: {count:,} instructions, expected {want[name]:,} ({ratio:.3f}x, tolerance "
            f"{TOLERANCE:.1%}); if intended, refresh with TSSA_PERF_REFRESH=1 (tests/perf/_expected.py)"
        )
