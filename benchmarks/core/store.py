"""Runs, run records and rows with provenance: the one place every part of the harness writes numbers.

A **run** is one execution of a suite on one machine under one configuration. Its folder holds::

    run.json     the run record: id, suite, machine, configuration and its hash, provenance (git SHA,
                 dirty including untracked files, package versions, torch/CUDA, device, threads,
                 deterministic flag), start and end time, status ("running" | "complete")
    log.jsonl    one JSON object per line, appended atomically: cell events
                 {"type": "event", "cell", "attempt", "event": started|finished|failed|skipped, ...}
                 and rows {"type": "row", "run", "cell", "attempt", "metric", "value", "unit", ...}

Where runs live::

    results/<suite>/<run id>/         published runs (committed; machine-written only)
    results/local/<suite>/<run id>/   the runs of this checkout (git-ignored)

A run only ever resumes from ``results/local`` and only on the machine that started it, so a fresh
clone measures instead of "resuming" somebody else's rows, and published runs are never appended to
or overwritten. ``python -m benchmarks publish`` copies a complete local run into the published area.

Guarantees:

- A cell's rows and its ``finished`` event are one ``write`` to a file opened with ``O_APPEND`` under
  an exclusive ``flock``: a cell is either complete with all its rows or not finished at all. Rows
  count only when their (cell, attempt) finished, so a killed cell never leaves rows behind.
- A cell that started and never finished (the process was killed) is recorded as ``failed`` on the
  next start of the run; it is retried only with ``--retry-failed``.
- Rows are validated before anything is written: unknown metrics (:mod:`benchmarks.core.metrics`), units
  that differ from the registry's and malformed values are refused, and nothing of the batch lands.
- A torn last line (power loss) is skipped on load and fenced off by a newline before the next append.

>>> import tempfile
>>> import benchmarks.studies  # the registered studies are the row kinds the store accepts
>>> root = tempfile.mkdtemp()
>>> run = Run.create(root, "demo", {"name": "demo"})
>>> run.finish_cell("c1", 1, [make_row("demo", "complexity", "c1", "sdpa", metric="flops_torch", value=8.0)])
>>> sorted(run.status())
['c1']
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.core import metrics as _metrics
from benchmarks.core import registry
from benchmarks.core.jobs import job_gone

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
)
PASSES = ("fwd", "fwd+bwd", "train", "eval", None)
EVENTS = ("started", "finished", "failed", "skipped")
_PACKAGES = (
    "torch", "numpy", "triton", "ultralytics", "timm", "fvcore", "pandas", "scipy", "pycocotools", "tssa-bench",
)  # fmt: skip
REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL = "local"
JOB_ENV = "TSSA_BENCH_JOB"  # set by a cluster worker: its job, recorded in every event it writes
ARTIFACTS = "artifacts"  # a run's training artefacts (weights, logs): never published, never in git


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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
def machine() -> dict[str, Any]:
    """This machine: ``id`` (a hash of the OS machine id and host name: stable on one machine,
    different on another) and a readable ``name`` (CPU model and core count)."""
    ident = ""
    for p in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            ident = Path(p).read_text(encoding="utf-8").strip()
            break
    raw = f"{ident}|{socket.gethostname()}|{_cpu_name()}|{os.cpu_count()}"
    return {
        "id": hashlib.sha256(raw.encode()).hexdigest()[:12],
        "name": f"{_cpu_name()} ({os.cpu_count()} cores)",
        "host_cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
    }


def provenance(device: str | None = None) -> dict[str, Any]:
    """Where and how a run's rows are produced (recorded once per run, in ``run.json``).

    Keys: ``git`` (HEAD SHA), ``dirty`` (tracked files modified or untracked files present),
    ``packages`` (versions), ``python``, ``torch``, ``cuda`` (None on CPU builds), ``device`` and
    ``device_name`` (the CPU model or the GPU's name), ``threads``, ``deterministic``, ``timestamp``.
    """
    import torch

    status = _git("status", "--porcelain", "--untracked-files=normal")
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    dev = device or "cpu"
    if dev.startswith("cuda") and torch.cuda.is_available():
        dev_name = torch.cuda.get_device_name(torch.device(dev))
    else:
        dev_name = machine()["host_cpu"] if dev == "cpu" else dev
    return {
        "git": _git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "packages": versions,
        "python": platform.python_version(),
        "host_cpu": machine()["host_cpu"],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": dev,
        "device_name": dev_name,
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "timestamp": _now(),
    }


def config_hash(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------------------- rows
def make_row(
    suite: str,
    kind: str,
    cell: str,
    variant: str,
    *,
    metric: str,
    value: float | None,
    unit: str | None = None,
    seed: int | None = 0,
    tokens: int | None = None,
    image_size: int | None = None,
    pass_: str | None = None,
    error: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One row of the fixed format; ``unit`` defaults to (and must equal) the registry's unit.

    ``extra`` keys (typed cell parameters, notes) follow the fixed ones.
    """
    reg_unit = _metrics.unit(metric)
    if unit is not None and unit != reg_unit:
        raise ValueError(f"metric {metric!r} is in {reg_unit!r} (benchmarks/core/metrics.py), not {unit!r}")
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
        "unit": reg_unit,
        "error": error,
    }
    clash = set(extra) & set(row)
    if clash:
        raise ValueError(f"extra row keys {sorted(clash)} collide with the fixed row keys")
    row.update(extra)
    validate_row(row)
    return row


def validate_row(row: dict[str, Any]) -> None:
    """Raise ValueError naming the first key that breaks the row format."""
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        raise ValueError(f"row is missing keys {missing}; every row needs {list(ROW_KEYS)}")
    for key in ("suite", "cell", "variant", "metric"):
        if not isinstance(row[key], str) or not row[key]:
            raise ValueError(f"row key {key!r} must be a non-empty string, got {row[key]!r}")
    if row["kind"] not in registry.kinds():
        raise ValueError(
            f"row kind {row['kind']!r} is not a registered study's ({list(registry.kinds())}); register the study first"
        )
    if row["pass"] not in PASSES:
        raise ValueError(f"row pass {row['pass']!r} is not one of {list(PASSES)}")
    reg = _metrics.get(row["metric"])  # unknown metrics are refused
    if row["unit"] != reg.unit:
        raise ValueError(
            f"row {row['cell']}/{row['metric']}: unit {row['unit']!r} is not the registry's {reg.unit!r}"
        )
    for key in ("seed", "tokens", "image_size"):
        if row[key] is not None and (not isinstance(row[key], int) or isinstance(row[key], bool)):
            raise ValueError(f"row key {key!r} must be an int or null, got {row[key]!r}")
    v = row["value"]
    if row["error"] is None:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"row {row['cell']}/{row['metric']}: value must be a finite number, got {v!r}")
    else:
        if not isinstance(row["error"], str) or not row["error"]:
            raise ValueError(f"row {row['cell']}: error must be a non-empty string or null")
        if v is not None:
            raise ValueError(f"row {row['cell']}: a row with an error must have value null, got {v!r}")


# ------------------------------------------------------------------------------------------- the log
def _encode(records: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(r, allow_nan=False, separators=(",", ":")) for r in records) + "\n").encode()


def _append_lines(
    path: Path, records: list[dict[str, Any]] | Callable[[], list[dict[str, Any]] | None]
) -> bool:
    """Append JSON lines in one ``write`` under an exclusive lock; fence off a torn last line.

    ``records`` may be a function called under the lock, so that reading the log and the append that
    depends on it are one step for every process sharing the file; it returns None to append nothing
    (then this returns False).
    """
    data = None if callable(records) else _encode(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if data is None:
            recs = records()
            if recs is None:
                return False
            data = _encode(recs)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        written = os.write(fd, data)
        if written != len(data):  # a short write on a regular file means the disk is full
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
        return True
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike):
    """An exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block: what several
    processes of one machine (or nodes sharing a file system with working ``flock``) do one at a time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{i}: skipping a torn line", stacklevel=3)
    return out


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _max_rss_mib() -> float | None:
    """The largest resident memory of this process so far, in MiB (Linux reports KiB)."""
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):  # pragma: no cover - not Unix
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


MAX_INTERRUPTED = 2  # an interrupted cell gets this many attempts before it stays failed


def pending(st: CellStatus | None, retry_failed: bool = False) -> bool:
    """Whether a cell whose latest event is ``st`` is still to execute: never started, or failed and
    either retried on request or interrupted with fewer than :data:`MAX_INTERRUPTED` attempts. A
    cell that is ``started`` belongs to a live worker (after :meth:`Run.reap`), never to this one."""
    if st is None:
        return True
    if st.event == "failed":
        interrupted = (st.reason or "").startswith("interrupted")
        return retry_failed or (interrupted and st.attempt < MAX_INTERRUPTED)
    return False


def worker_gone(st: CellStatus) -> bool:
    """Whether the worker that wrote ``st`` (a ``started`` event) has ended.

    This process never counts as a live worker of an earlier event; a cluster job is asked about
    through :func:`benchmarks.core.jobs.job_gone`; a pid on this host is gone when it is dead.
    """
    if st.job:
        return job_gone(st.job, st.host)
    if st.host == socket.gethostname() and st.pid not in (None, os.getpid()):
        return not _pid_alive(st.pid)
    return True


@dataclass
class CellStatus:
    """The latest state of one cell in a run."""

    cell: str
    event: str  # started | finished | failed | skipped
    attempt: int
    reason: str | None = None
    host: str | None = None
    pid: int | None = None
    job: str | None = None  # the cluster job that wrote the event (``slurm:<id>``, ``local:<id>``), if any


class Run:
    """One run's folder: its record (``run.json``) and its log (``log.jsonl``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.record_path = self.path / "run.json"
        self.log_path = self.path / "log.jsonl"

    # -- record
    @property
    def record(self) -> dict[str, Any]:
        return json.loads(self.record_path.read_text(encoding="utf-8"))

    @property
    def id(self) -> str:
        return self.path.name

    @classmethod
    def create(
        cls, parent: str | os.PathLike, suite: str, config: dict[str, Any], device: str = "cpu"
    ) -> Run:
        """A new run folder ``<parent>/<UTC time>-<machine>-<config hash>`` with its record."""
        mach = machine()
        chash = config_hash(config)
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        parent = Path(parent)
        for k in range(1000):
            rid = f"{stamp}-{mach['id'][:6]}-{chash[:8]}" + (f"-{k}" if k else "")
            try:
                (parent / rid).mkdir(parents=True)
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover
            raise RuntimeError(f"no free run id under {parent}")
        run = cls(parent / rid)
        _write_json(
            run.record_path,
            {
                "run": rid,
                "suite": suite,
                "machine": mach,
                "config_hash": chash,
                "config": config,
                "provenance": provenance(device),
                "started": _now(),
                "finished": None,
                "status": "running",
            },
        )
        return run

    def mark(self, status: str) -> None:
        """Set the record's status (``running`` or ``complete``) and its end time."""
        rec = self.record
        rec["status"] = status
        rec["finished"] = _now() if status == "complete" else None
        if status == "running":
            rec.setdefault("resumed", []).append(_now())
        _write_json(self.record_path, rec)

    # -- events and rows
    def _event(self, cell: str, attempt: int, event: str, reason: str | None = None) -> dict[str, Any]:
        return {
            "type": "event",
            "cell": cell,
            "attempt": attempt,
            "event": event,
            "reason": reason,
            "time": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "job": os.environ.get(JOB_ENV) or None,
        }

    def start_cell(self, cell: str) -> int:
        """Record that ``cell`` starts; returns its attempt number (1, 2, ...)."""
        prev = self.status().get(cell)
        attempt = (prev.attempt + 1) if prev else 1
        _append_lines(self.log_path, [self._event(cell, attempt, "started")])
        return attempt

    def claim(self, cell: str, retry_failed: bool = False) -> int | None:
        """Start ``cell`` if it is still :func:`pending`, atomically for every process that shares the
        run: returns the attempt number, or None when another worker holds or ended it."""
        got: dict[str, int] = {}

        def started() -> list[dict[str, Any]] | None:
            st = self.status().get(cell)  # read under the log's lock: no other claim can interleave
            if not pending(st, retry_failed):
                return None
            got["attempt"] = (st.attempt + 1) if st else 1
            return [self._event(cell, got["attempt"], "started")]

        return got["attempt"] if _append_lines(self.log_path, started) else None

    def finish_cell(self, cell: str, attempt: int, rows: Iterable[dict[str, Any]]) -> None:
        """Append the cell's rows and its ``finished`` event in one atomic write."""
        rid = self.id
        recs = []
        for row in rows:
            validate_row(row)
            if row["cell"] != cell:
                raise ValueError(f"row of cell {row['cell']!r} finished under cell {cell!r}")
            recs.append({"type": "row", "run": rid, "attempt": attempt, **row})
        recs.append(
            self._event(cell, attempt, "finished") | {"rows": len(recs), "max_rss_mib": _max_rss_mib()}
        )
        _append_lines(self.log_path, recs)

    def fail_cell(self, cell: str, attempt: int, reason: str, event: str = "failed") -> None:
        """Record that a cell failed (or was skipped by a prediction) with a one-line reason."""
        if event not in ("failed", "skipped"):
            raise ValueError(f"event must be 'failed' or 'skipped', got {event!r}")
        _append_lines(self.log_path, [self._event(cell, attempt, event, reason.splitlines()[0][:300])])

    def status(self) -> dict[str, CellStatus]:
        """The latest event of every cell, in log order."""
        out: dict[str, CellStatus] = {}
        for rec in _read_lines(self.log_path):
            if rec.get("type") == "event":
                out[rec["cell"]] = CellStatus(
                    rec["cell"],
                    rec["event"],
                    rec["attempt"],
                    rec.get("reason"),
                    rec.get("host"),
                    rec.get("pid"),
                    rec.get("job"),
                )
        return out

    def reap(self, gone: Callable[[CellStatus], bool] | None = None, reason: str | None = None) -> list[str]:
        """Mark cells that started and never finished as failed (their worker is gone); return them.

        ``gone(status)`` tells whether the worker that started a cell has ended; by default
        (:func:`worker_gone`) a process on this host is gone when its pid is dead, a cluster job
        (the event names it) when the cluster says it ended, and a process on another host without
        a job is presumed gone (nothing else could have written it). A live worker's cell is left alone.
        """
        gone = gone or worker_gone
        reaped = []
        for st in self.status().values():
            if st.event != "started" or not gone(st):
                continue
            self.fail_cell(
                st.cell, st.attempt, reason or "interrupted: started and never finished (the process was killed, "
                "for example by the out-of-memory killer)",
            )  # fmt: skip
            reaped.append(st.cell)
        return reaped

    def rows(self) -> list[dict[str, Any]]:
        """Rows of finished cells (latest finished attempt of each), in log order."""
        recs = _read_lines(self.log_path)
        finished = {}
        for rec in recs:
            if rec.get("type") == "event" and rec.get("event") == "finished":
                finished[rec["cell"]] = rec["attempt"]
        return [
            {k: v for k, v in rec.items() if k not in ("type", "attempt")}
            for rec in recs
            if rec.get("type") == "row" and finished.get(rec["cell"]) == rec["attempt"]
        ]

    def wall_times(self) -> dict[str, tuple[int, float]]:
        """Per cell kind: ``(cells, seconds)``, the wall time from the first ``started`` to the last
        ``finished`` event of that kind's cells in this run's log (kinds whose cells interleave
        with another's overlap; a resumed run's pause is counted)."""
        import datetime as dt

        spans: dict[str, list[float]] = {}
        cells: dict[str, set[str]] = {}
        for rec in _read_lines(self.log_path):
            if rec.get("type") != "event" or rec.get("event") not in ("started", "finished"):
                continue
            kind = rec["cell"].split("/", 1)[0]
            t = dt.datetime.fromisoformat(rec["time"]).timestamp()
            lo_hi = spans.setdefault(kind, [t, t])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], t), max(lo_hi[1], t)
            cells.setdefault(kind, set()).add(rec["cell"])
        return {k: (len(cells[k]), v[1] - v[0]) for k, v in spans.items()}

    def artifacts(self, cell_hash: str) -> Path:
        """The folder for one cell's training artefacts (weights, logs): ``<run>/artifacts/<hash>``."""
        path = self.path / ARTIFACTS / cell_hash
        path.mkdir(parents=True, exist_ok=True)
        return path

    def summary(self) -> dict[str, int]:
        """Number of cells per latest event."""
        out: dict[str, int] = {}
        for st in self.status().values():
            out[st.event] = out.get(st.event, 0) + 1
        return out


# -------------------------------------------------------------------------------------- run selection
def runs_root(results_dir: str | os.PathLike, local: bool) -> Path:
    return Path(results_dir) / LOCAL if local else Path(results_dir)


def list_runs(
    results_dir: str | os.PathLike = "results", suite: str | None = None, scope: str = "all"
) -> list[Run]:
    """Runs found under ``results_dir`` (``scope``: ``published``, ``local`` or ``all``), oldest first.

    A run id is unique, so a run present in both areas (published from this checkout) is listed once.
    """
    if scope not in ("all", "published", "local"):
        raise ValueError(f"scope must be 'all', 'published' or 'local', got {scope!r}")
    roots = []
    if scope in ("all", "published"):
        roots.append(runs_root(results_dir, False))
    if scope in ("all", "local"):
        roots.append(runs_root(results_dir, True))
    seen: dict[str, Run] = {}
    for root in roots:
        suites = (
            [suite] if suite else sorted(p.name for p in root.glob("*") if p.is_dir() and p.name != LOCAL)
        )
        for s in suites:
            for rec in sorted((root / s).glob("*/run.json")):
                run = Run(rec.parent)
                seen.setdefault(run.id, run)
    return sorted(seen.values(), key=lambda r: (r.record["started"], r.id))


def select_runs(
    results_dir: str | os.PathLike = "results",
    suite: str | None = None,
    runs: list[str] | None = None,
    scope: str = "all",
    kind: str | None = None,
) -> list[Run]:
    """The runs a reader uses: the named ``runs`` (ids), or by default the latest complete run of
    each suite and machine (with ``kind``: the latest that holds rows of that kind). ValueError
    naming the fix when a named run does not exist."""
    found = list_runs(results_dir, suite, scope)
    if runs:
        by_id = {r.id: r for r in found}
        missing = [r for r in runs if r not in by_id]
        if missing:
            raise ValueError(
                f"unknown run(s) {missing}; `python -m benchmarks runs` lists the runs under {results_dir}"
            )
        return [by_id[r] for r in runs]
    latest: dict[tuple[str, str], Run] = {}
    for r in found:
        rec = r.record
        if rec["status"] == "complete" and (kind is None or any(x["kind"] == kind for x in r.rows())):
            latest[(rec["suite"], rec["machine"]["id"])] = r
    return sorted(latest.values(), key=lambda r: (r.record["suite"], r.record["machine"]["id"]))


def load_rows(runs: Iterable[Run]):
    """The rows of ``runs`` as one pandas DataFrame, each row joined with its run's provenance
    (``prov.*``, ``machine``, ``machine_name``). A row written by a cluster worker keeps the
    ``machine``, ``machine_name`` and ``device_name`` of the node that measured it."""
    import pandas as pd

    frames = []
    for run in runs:
        rows = run.rows()
        if not rows:
            continue
        df = pd.DataFrame(rows)
        rec = run.record
        for k, v in rec["provenance"].items():
            if not isinstance(v, dict):
                df[f"prov.{k}"] = v
        # rows a cluster worker wrote name their own machine and device (one run, many nodes)
        for col, default in (("machine", rec["machine"]["id"]), ("machine_name", rec["machine"]["name"])):
            df[col] = df[col].fillna(default) if col in df.columns else default
        if "device_name" in df.columns:
            df["prov.device_name"] = df["device_name"].fillna(df["prov.device_name"])
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=[*ROW_KEYS, "run"])
    return pd.concat(frames, ignore_index=True)


def publish(run: Run, results_dir: str | os.PathLike = "results") -> Path:
    """Copy a complete local run (its record and log; not its ``artifacts/`` folder of weights and
    logs) into the published area ``results/<suite>/<run id>``; never replaces a published run."""
    rec = run.record
    if rec["status"] != "complete":
        raise ValueError(f"run {run.id} is not complete ({run.summary()}); finish it before publishing")
    target = runs_root(results_dir, False) / rec["suite"] / run.id
    if target.exists():
        raise ValueError(f"run {run.id} is already published at {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{run.id}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run.path, tmp, ignore=shutil.ignore_patterns(ARTIFACTS, ".*.tmp"))
    os.replace(tmp, target)
    return target
