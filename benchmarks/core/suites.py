"""Suite definitions: YAML files validated completely on load (pydantic), returned as plain dicts.

``load_suite("cpu")`` reads the embedded ``benchmarks/suites/cpu.yaml``; an argument ending in
``.yaml``/``.yml`` is read as a path. Unknown keys, wrong types, impossible values, names that are
not path-safe, a custom file that reuses an embedded suite's name and variant names no registry
knows are refused with one line naming the key and the allowed values (:class:`SuiteError`).

Top level: ``name``, ``device`` (cpu | cuda), ``threads``, ``seed``, ``memory_budget_gib``,
``timeout_s``, ``executor`` (where the cells run: :class:`ExecutorSection`; absent = in this
process), ``jobs`` (cells at once on this machine: a number or ``auto``), and one section per registered study (:mod:`benchmarks.core.registry`), validated by the
study's own ``parse``.

>>> import benchmarks.studies  # the project's studies, whose sections the embedded suites use
>>> suite = load_suite("cpu")
>>> suite["device"], suite["complexity"]["operator"]["dim"]
('cpu', 384)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from benchmarks.core import registry
from benchmarks.core.schema import StrictSection, one_line

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SuiteError(ValueError):
    """A suite file that cannot be used; the message is one line naming the key and the fix."""


class ExecutorSection(StrictSection):
    """Where the cells execute: ``local`` (in this process, one group at a time) or ``submitit``
    (one array job over the groups through submitit: SLURM, or local subprocesses with
    ``cluster: local``). Not part of a run's identity: the same cells give the same run either way."""

    kind: Literal["local", "submitit"] = "local"
    cluster: Literal["slurm", "local"] = "slurm"
    partition: str | None = None  # SLURM partition (None: the cluster's default)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None  # e.g. one GPU type, so that every row of the run has the same device
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    timeout_min: int = Field(60, ge=1)  # per job; a longer cell requeues itself and resumes
    array_parallelism: int = Field(32, ge=1)  # array tasks running at once
    max_num_timeout: int = Field(20, ge=0)  # time-limit requeues per task before it fails
    signal_delay_s: int = Field(120, ge=1)  # the pre-emption signal comes this long before the limit
    folder: str | None = None  # submitit's job files and logs (default: <run>/submitit)


class Suite(StrictSection):
    """The top level of a suite; every other key is a registered study's section."""

    name: str
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    memory_budget_gib: float = Field(4.0, gt=0)
    timeout_s: float = Field(120, gt=0)
    executor: ExecutorSection | None = None
    jobs: int | Literal["auto"] | None = None  # cells at once on this machine (not part of the identity)

    @field_validator("jobs")
    @classmethod
    def _jobs(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError(f"jobs must be a positive integer or 'auto', got {v}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a path-safe name (letters, digits, '_', '.', '-'; at most 64)")
        return v


NOT_IDENTITY = ("executor", "jobs")  # where, and how many at once, cells run: never part of a run's identity


def identity(suite: dict[str, Any]) -> dict[str, Any]:
    """The suite as a run's configuration (what its hash is taken of): without ``executor`` and ``jobs``."""
    return {k: v for k, v in suite.items() if k not in NOT_IDENTITY}


def executor_problem(suite: dict[str, Any], cfg: dict[str, Any]) -> str | None:
    """Why the ``submitit`` executor ``cfg`` cannot run the suite's cells, or None: a SLURM task gets
    ``gpus_per_node`` GPUs, and a study's cells may need more (``Study.gpus``)."""
    if cfg.get("kind") != "submitit" or cfg.get("cluster", "slurm") != "slurm":
        return None
    for study in registry.studies():
        section = suite.get(study.name)
        if section is None or study.gpus is None:
            continue
        gpus = study.gpus(section)
        if gpus > cfg.get("gpus_per_node", 0):
            return (f"{study.name} cells use {gpus} GPU(s) but executor.gpus_per_node is "
                    f"{cfg.get('gpus_per_node', 0)}; set gpus_per_node: {gpus} in the suite's executor section")  # fmt: skip
    return None


def validate_suite(data: Any, source: str = "<suite>") -> dict[str, Any]:
    """Check a parsed suite and return it as a dict with every default filled in (SuiteError).

    The top level is :class:`Suite`; each other key must be a registered study's section and is
    validated by that study (``Study.parse``). A study with ``null_when_absent`` that the suite
    lacks is written as ``None``, so the configuration (and its hash) is what it always was.
    """
    if not isinstance(data, dict):
        raise SuiteError(f"suite {source}: expected a mapping at the top level, got {type(data).__name__}")
    known = {s.name: s for s in registry.studies()}
    top = {k: v for k, v in data.items() if k not in known}
    unknown = [k for k in top if k not in Suite.model_fields]
    if unknown:
        allowed = sorted([*Suite.model_fields, *known])
        raise SuiteError(f"suite {source}.{unknown[0]}: unknown key; allowed keys: {allowed}")
    try:
        out = Suite.model_validate(top).model_dump()
    except ValidationError as exc:
        raise SuiteError("suite " + one_line(exc, source, Suite)) from None
    for name, study in known.items():
        if data.get(name) is not None:
            try:
                out[name] = study.parse(data[name])
            except ValueError as exc:
                raise SuiteError(f"suite {source}: {str(exc).strip()}".replace("\n", " ")) from None
        elif study.null_when_absent or name in data:
            out[name] = None
    if out["jobs"] is None:  # like the executor: a suite without it keeps the configuration it had
        del out["jobs"]
    if out["executor"] is None:  # a suite without an executor section keeps the configuration it had
        del out["executor"]
    else:
        problem = executor_problem(out, out["executor"])
        if problem:
            raise SuiteError(f"suite {source}: {problem}")
    return out


def embedded_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str) -> dict[str, Any]:
    """Load and validate an embedded suite by name (``cpu``, ``gpu``, ...) or a YAML file by path."""
    embedded = not name_or_path.endswith((".yaml", ".yml"))
    if embedded:
        path = SUITES_DIR / f"{name_or_path}.yaml"
        if not NAME_RE.match(name_or_path) or not path.exists():
            raise SuiteError(
                f"unknown suite {name_or_path!r}; embedded suites are {embedded_names()}, or give a .yaml path"
            )
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise SuiteError(f"suite file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SuiteError(f"suite file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    suite = validate_suite(data, source=path.name)
    if (
        not embedded
        and suite["name"] in embedded_names()
        and path.resolve() != (SUITES_DIR / f"{suite['name']}.yaml")
    ):
        raise SuiteError(
            f"suite {path.name}.name: {suite['name']!r} is the name of an embedded suite; give your suite "
            "its own name so its runs are not mistaken for the embedded suite's"
        )
    return suite
