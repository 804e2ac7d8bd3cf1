"""Append-only result rows with provenance: the one place every part of the harness writes numbers.

One JSON object per line in ``results/<suite>.jsonl`` (a machine tag may be added to the file name).
Every row has the fixed keys of :data:`ROW_KEYS`, plus whatever extra keys its kind needs::

    {"suite": "cpu", "kind": "complexity", "cell": "op/sdpa/fwd/B1-C384-H8/N1024", "variant": "sdpa",
     "seed": 0, "tokens": 1024, "image_size": null, "pass": "fwd", "metric": "latency_ms",
     "value": 3.1, "unit": "ms", "error": null, "provenance": {"git": "...", "dirty": false, ...}}

Guarantees:

- Atomic appends: a row is encoded completely, then written with one ``write`` on a file opened
  with ``O_APPEND`` while holding an exclusive ``flock``; a crash never leaves half a row behind a
  complete one. A torn last line (power loss) is skipped on load with a warning and fenced off by
  a newline before the next append.
- Resume: :meth:`ResultStore.done_cells` lists the cells that already have rows; a runner skips them.
- Failures are rows: :func:`error_row` records an out-of-memory, a time-out or a missing
  integration as a row whose ``error`` says what happened and whose ``value`` is null.
- Aggregation: :meth:`ResultStore.load` returns a pandas DataFrame (provenance flattened to
  ``prov.*`` columns).

>>> import tempfile, pathlib
>>> store = ResultStore(pathlib.Path(tempfile.mkdtemp()) / "demo.jsonl", suite="demo")
>>> store.append([make_row("demo", "complexity", "c1", "sdpa", metric="flops", value=8.0, unit="FLOPs")])
1
>>> sorted(store.done_cells())
['c1']
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import functools
import json
import math
import os
import platform
import subprocess
import warnings
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

ROW_KEYS = (
    "suite",
    "kind",
    "cell",
    "variant",
    "seed",
    "tokens",
    "image_size",
    "pass",
    "metric",
    "value",
    "unit",
    "error",
    "provenance",
)
KINDS = ("detection", "classification", "complexity")
PASSES = ("fwd", "fwd+bwd", "train", "eval", None)
_PACKAGES = ("torch", "numpy", "triton", "ultralytics", "timm", "fvcore", "pandas", "tssa-bench")
REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def _static_provenance() -> dict[str, Any]:
    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git": sha,
        "dirty": None if status is None else bool(status),
        "packages": versions,
        "python": platform.python_version(),
        "host_cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
    }


def provenance(device: str | None = None) -> dict[str, Any]:
    """Where and how a row was produced.

    Keys: ``git`` (HEAD SHA), ``dirty`` (tracked files modified), ``packages`` (versions),
    ``torch``, ``cuda`` (None on CPU builds), ``device`` (e.g. ``"cpu"`` or the GPU's name),
    ``threads`` (``torch.get_num_threads()``), ``deterministic``
    (``torch.are_deterministic_algorithms_enabled()``), ``timestamp`` (UTC, ISO 8601).
    """
    import torch

    prov = dict(_static_provenance())
    dev = device or "cpu"
    if dev.startswith("cuda") and torch.cuda.is_available():
        dev_name = torch.cuda.get_device_name(torch.device(dev))
    else:
        dev_name = prov["host_cpu"] if dev == "cpu" else dev
    prov.update(
        torch=torch.__version__,
        cuda=torch.version.cuda,
        device=dev,
        device_name=dev_name,
        threads=torch.get_num_threads(),
        deterministic=torch.are_deterministic_algorithms_enabled(),
        timestamp=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    return prov


def make_row(
    suite: str,
    kind: str,
    cell: str,
    variant: str,
    *,
    metric: str,
    value: float | None,
    unit: str,
    seed: int = 0,
    tokens: int | None = None,
    image_size: int | None = None,
    pass_: str | None = None,
    error: str | None = None,
    prov: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One row of the fixed format (see the module docstring); ``extra`` keys are appended after it."""
    row = {
        "suite": suite,
        "kind": kind,
        "cell": cell,
        "variant": variant,
        "seed": seed,
        "tokens": tokens,
        "image_size": image_size,
        "pass": pass_,
        "metric": metric,
        "value": value,
        "unit": unit,
        "error": error,
        "provenance": prov if prov is not None else provenance(),
    }
    clash = set(extra) & set(row)
    if clash:
        raise ValueError(f"extra row keys {sorted(clash)} collide with the fixed row keys")
    row.update(extra)
    validate_row(row)
    return row


def error_row(
    suite: str, kind: str, cell: str, variant: str, error: str, *, metric: str = "error", **kw: Any
) -> dict[str, Any]:
    """A row recording that a cell failed (out of memory, time-out, not importable): value null."""
    if not error:
        raise ValueError("error_row needs a non-empty error message")
    return make_row(suite, kind, cell, variant, metric=metric, value=None, unit="", error=error, **kw)


def validate_row(row: dict[str, Any]) -> None:
    """Raise ValueError naming the first key that breaks the row format."""
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        raise ValueError(f"row is missing keys {missing}; every row needs {list(ROW_KEYS)}")
    for key in ("suite", "cell", "variant", "metric"):
        if not isinstance(row[key], str) or not row[key]:
            raise ValueError(f"row key {key!r} must be a non-empty string, got {row[key]!r}")
    if row["kind"] not in KINDS:
        raise ValueError(f"row kind {row['kind']!r} is not one of {list(KINDS)}")
    if row["pass"] not in PASSES:
        raise ValueError(f"row pass {row['pass']!r} is not one of {list(PASSES)}")
    for key in ("seed", "tokens", "image_size"):
        if row[key] is not None and (not isinstance(row[key], int) or isinstance(row[key], bool)):
            raise ValueError(f"row key {key!r} must be an int or null, got {row[key]!r}")
    v = row["value"]
    if row["error"] is None:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"row {row['cell']}/{row['metric']}: value must be a finite number, got {v!r}")
    elif v is not None:
        raise ValueError(f"row {row['cell']}: an error row must have value null, got {v!r}")
    if not isinstance(row["provenance"], dict):
        raise ValueError("row key 'provenance' must be a dict")


class ResultStore:
    """The rows of one suite in one JSONL file. Appends are atomic; loading skips torn lines.

    ``path`` is the file (created with its parent folders on the first append); ``suite`` is
    checked against every appended row.
    """

    def __init__(self, path: str | os.PathLike, suite: str | None = None) -> None:
        self.path = Path(path)
        self.suite = suite

    @classmethod
    def for_suite(cls, suite: str, results_dir: str | os.PathLike = "results", tag: str | None = None):
        """``results/<suite>.jsonl`` (``results/<suite>-<tag>.jsonl`` with a machine tag)."""
        name = f"{suite}-{tag}.jsonl" if tag else f"{suite}.jsonl"
        return cls(Path(results_dir) / name, suite=suite)

    @contextlib.contextmanager
    def _locked(self, flags: int):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def append(self, rows: Iterable[dict[str, Any]]) -> int:
        """Validate every row, then append them all in one write. Returns the number of rows."""
        rows = list(rows)
        if not rows:
            return 0
        lines = []
        for row in rows:
            validate_row(row)
            if self.suite is not None and row["suite"] != self.suite:
                raise ValueError(f"row of suite {row['suite']!r} appended to the store of {self.suite!r}")
            lines.append(json.dumps(row, sort_keys=False, allow_nan=False, separators=(",", ":")))
        data = ("\n".join(lines) + "\n").encode()
        with self._locked(os.O_RDWR | os.O_CREAT | os.O_APPEND) as fd:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # fence off a torn last line
            written = os.write(fd, data)
            if written != len(data):  # a short write on a regular file means the disk is full
                raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
            os.fsync(fd)
        return len(rows)

    def rows(self) -> list[dict[str, Any]]:
        """Every complete row in file order; torn or invalid lines are skipped with a warning."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    validate_row(row)
                except (json.JSONDecodeError, ValueError) as exc:
                    warnings.warn(f"{self.path}:{i}: skipping a malformed row ({exc})", stacklevel=2)
                    continue
                out.append(row)
        return out

    def done_cells(self) -> set[str]:
        """Ids of the cells that already have at least one row (what a resumed run skips)."""
        return {r["cell"] for r in self.rows()}

    def load(self):
        """All rows as a pandas DataFrame; provenance is flattened into ``prov.<key>`` columns."""
        import pandas as pd

        rows = self.rows()
        if not rows:
            return pd.DataFrame(columns=[k for k in ROW_KEYS if k != "provenance"])
        df = pd.json_normalize(rows, sep=".")
        return df.rename(columns=lambda c: c.replace("provenance.", "prov.", 1))
