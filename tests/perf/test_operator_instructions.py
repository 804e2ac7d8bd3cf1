"""Instruction counts of the TSSA core under callgrind: the stable signal for small regressions.

Wall time on a shared machine swings by tens of percent; the number of instructions a call executes
does not (PyTorch gates its own compile-time benchmarks on instruction counts with ~1.5 %
tolerances). ``_callgrind_child.py`` runs under ``valgrind --tool=callgrind`` with one thread at
(B, H, N, D) = (1, 8, 4096, 48) and counts the core's forward and forward+backward over 4 calls
each (the Python around the calls included); this check compares the counts with
``tests/perf/expected.json``.

Counts depend on the code path, so the expectation is keyed by torch version, Python version, the
CPU capability ATen dispatches to (``torch.backends.cpu.get_cpu_capability()``), the CPU vendor
(BLAS and oneDNN choose kernels per vendor) and the core ``auto`` resolves to (``fused`` where the
C++ core builds, with the instruction set it was built for, ``fused/avx2`` or ``fused/base``, else
``stream``: the FLOP and byte expectations are keyed by core too); on a machine
with no committed key the check skips before it starts valgrind, and its skip reason (shown by
``-ra``) and a line of the terminal summary (``tests/perf/conftest.py``) name the missing key and
the command that records it (``RECORD_COMMAND``). Refresh on purpose after an intended change of
the core, and review the diff.

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
from _expected import REFRESH_ENV, expected, record, refreshing

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
TOLERANCE = 0.01  # relative; clean runs here differ by <= 0.07 %, the smallest plant (slow25) adds 41 %
RECORD_COMMAND = f"{REFRESH_ENV}=1 tox -e perf -- -k instructions"  # then review the diff of expected.json


def _vendor() -> str:
    """The CPU vendor (``GenuineIntel``, ``AuthenticAMD``, ...): BLAS and oneDNN pick other kernels per vendor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _key() -> str:
    from tssa.ops import resolve_impl

    py = ".".join(platform.python_version_tuple()[:2])
    core = resolve_impl("auto", torch.zeros(1, 8, 64, 48))  # what the child's tssa(...) runs
    if core == "fused":  # its build for this CPU (AVX2 or the default target) runs other instructions
        from tssa.ops.fused_cpu import isa

        core = f"fused/{isa()}"
    return (f"torch {torch.__version__}, python {py}, {platform.machine()} {torch.backends.cpu.get_cpu_capability()}, "
            f"{_vendor()}, core {core}")  # fmt: skip


def missing_key_reason(key: str) -> str:
    """One line: the key with no committed counts, and the command that records them."""
    return (
        f"instruction counts not gated: no expectation for this machine's key {key!r} in "
        f"tests/perf/expected.json; record it with `{RECORD_COMMAND}` and commit the reviewed diff"
    )


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
def test_instructions_core_match_expectation(tmp_path, record_property, missing_expectation):
    key = _key()
    want = expected(("instructions", key))
    if want is None and not refreshing():  # nothing to compare with: skip before the slow valgrind run
        reason = missing_key_reason(key)
        missing_expectation(reason)  # repeated in the terminal summary (tests/perf/conftest.py)
        pytest.skip(reason)
    counts = collect_counts(tmp_path)
    for name, count in counts.items():
        record_property(name, count)
        print(f"\ninstructions {name}: {count}")
    if refreshing():
        record(("instructions", key), counts)
    for name, count in counts.items():
        ratio = count / want[name]
        assert abs(ratio - 1) <= TOLERANCE, (
            f"{name}: {count:,} instructions, expected {want[name]:,} ({ratio:.3f}x, tolerance "
            f"{TOLERANCE:.1%}); if intended, refresh with TSSA_PERF_REFRESH=1 (tests/perf/_expected.py)"
        )


def test_instructions_skip_names_the_missing_key_and_its_record_command(monkeypatch):
    """On a machine with no committed key the check skips, saying which key and how to record it."""
    fake = "torch 0.0.0+fake, python 3.99, x86_64 NOCAP"
    monkeypatch.delenv(REFRESH_ENV, raising=False)
    monkeypatch.setattr(sys.modules[__name__], "_key", lambda: fake)

    def no_valgrind(tmp):
        raise AssertionError("valgrind started although no expectation exists to compare with")

    monkeypatch.setattr(sys.modules[__name__], "collect_counts", no_valgrind)
    noted = []
    with pytest.raises(pytest.skip.Exception) as skip:
        test_instructions_core_match_expectation(None, lambda *a: None, noted.append)
    reason = str(skip.value)
    assert reason == missing_key_reason(fake)
    assert repr(fake) in reason and RECORD_COMMAND in reason
    assert noted == [reason]  # the same line goes to the terminal summary
    # the command is the one that records: it sets the refresh variable and selects this check
    assert RECORD_COMMAND.startswith(f"{REFRESH_ENV}=1 ") and "-k instructions" in RECORD_COMMAND
    assert "instructions" in test_instructions_core_match_expectation.__name__
