"""Suite definitions: YAML files validated completely on load (pydantic), returned as plain dicts.

``load_suite("cpu")`` reads the embedded ``cpu.yaml`` beside this file; an argument ending in
``.yaml``/``.yml`` is read as a path. Unknown keys, wrong types, impossible values, names that are
not path-safe, a custom file that reuses an embedded suite's name and variant names no registry
knows are refused with one line naming the key and the allowed values (:class:`SuiteError`).

Top level: ``name``, ``device`` (cpu | cuda), ``threads``, ``seed``, ``memory_budget_gib``,
``timeout_s``, and sections: ``complexity`` (``operator`` token sweep, ``model`` image-size sweep),
``detection`` (its schema: :class:`benchmarks.detection.DetectionSection`), ``classification``
(its schema: :class:`benchmarks.classification.ClassificationSection`) and ``executor`` (where the
cells run: :class:`ExecutorSection`; absent = in this process).

>>> suite = load_suite("cpu")
>>> suite["device"], suite["complexity"]["operator"]["dim"]
('cpu', 384)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SUITES_DIR = Path(__file__).resolve().parent
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Pass = Literal["fwd", "fwd+bwd"]
DType = Literal["float32", "float64", "float16", "bfloat16"]


class SuiteError(ValueError):
    """A suite file that cannot be used; the message is one line naming the key and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _sizes(v: list[int], what: str) -> list[int]:
    if not v:
        raise ValueError(f"{what} must be a non-empty list of positive integers")
    if any(x < 1 for x in v):
        raise ValueError(f"{what} must be positive integers, got {v}")
    if len(set(v)) != len(v):
        raise ValueError(f"duplicate entries in {v}")
    return sorted(v)


def _passes(v: list[str]) -> list[str]:
    if not v or len(set(v)) != len(v):
        raise ValueError(f"passes must be a non-empty list without duplicates, got {v}")
    return v


class OperatorSection(_Strict):
    tokens: list[int]
    batch: int = Field(1, ge=1)
    dim: int = Field(384, ge=1)
    heads: int = Field(8, ge=1)
    dtype: DType = "float32"
    passes: list[Pass] = ["fwd", "fwd+bwd"]
    variants: list[str] = ["tssa:*", "softmax", "sdpa", "floor"]
    threads: list[int] | None = None  # thread counts swept (default: the suite's threads)
    rounds: int = Field(3, ge=1)
    min_run_time: float = Field(0.2, gt=0)
    profile_max_tokens: int = Field(4096, ge=0)
    fit_min_tokens: int = Field(1024, ge=1)

    _tok = field_validator("tokens")(lambda v: _sizes(v, "tokens"))
    _pas = field_validator("passes")(lambda v: _passes(v))

    @field_validator("threads")
    @classmethod
    def _threads(cls, v):
        return None if v is None else _sizes(v, "threads")

    @field_validator("variants")
    @classmethod
    def _variants(cls, v):
        from benchmarks.complexity.operator import check_variant

        if not v:
            raise ValueError("variants must be a non-empty list")
        for name in v:
            check_variant(name)
        return v

    @model_validator(mode="after")
    def _shape(self):
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        return self


class FamilySection(_Strict):
    variants: list[str]
    image_sizes: list[int]
    _sz = field_validator("image_sizes")(lambda v: _sizes(v, "image_sizes"))


class ModelSection(_Strict):
    passes: list[Pass] = ["fwd", "fwd+bwd"]
    batch: int = Field(1, ge=1)
    rounds: int = Field(2, ge=1)
    min_run_time: float = Field(0.2, gt=0)
    profile_max_size: int = Field(640, ge=0)
    timing: bool = True  # False: count-only cells (params, FLOPs, MACs, memory), no latency rows
    yolo: FamilySection | None = None
    timm: FamilySection | None = None
    _pas = field_validator("passes")(lambda v: _passes(v))

    @model_validator(mode="after")
    def _names(self):
        from benchmarks.complexity.model import check_model

        for fam in ("yolo", "timm"):
            sec = getattr(self, fam)
            if sec is not None:
                if not sec.variants:
                    raise ValueError(f"{fam}.variants must be a non-empty list")
                for v in sec.variants:
                    check_model(fam, v)
        return self


class ComplexitySection(_Strict):
    operator: OperatorSection | None = None
    model: ModelSection | None = None


class ExecutorSection(_Strict):
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


class Suite(_Strict):
    name: str
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    memory_budget_gib: float = Field(4.0, gt=0)
    timeout_s: float = Field(120, gt=0)
    complexity: ComplexitySection | None = None
    detection: dict | None = None
    classification: dict | None = None
    executor: ExecutorSection | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a path-safe name (letters, digits, '_', '.', '-'; at most 64)")
        return v

    @model_validator(mode="after")
    def _sections(self):
        if self.detection is not None:
            from benchmarks.detection import parse_detection

            self.detection = parse_detection(self.detection).model_dump()
        if self.executor is not None and self.executor.kind == "submitit" and self.detection is not None:
            gpus = gpu_count(self.detection["train"]["device"])
            if self.executor.cluster == "slurm" and gpus > self.executor.gpus_per_node:
                raise ValueError(
                    f"executor.gpus_per_node is {self.executor.gpus_per_node} but detection.train.device "
                    f"{self.detection['train']['device']!r} uses {gpus} GPU(s); set gpus_per_node: {gpus}"
                )
        if self.classification is not None:
            from benchmarks.classification import parse_classification

            self.classification = parse_classification(self.classification).model_dump(mode="json")
        return self


def gpu_count(device: str) -> int:
    """GPUs an Ultralytics ``device`` string names: ``"cpu"`` 0, ``"0"`` 1, ``"0,1,2,3"`` 4 (DDP).

    >>> gpu_count("cpu"), gpu_count("0"), gpu_count("0,1,2,3"), gpu_count("cuda:1")
    (0, 1, 4, 1)
    """
    d = device.strip().lower().removeprefix("cuda:")
    if d in ("cpu", "mps", ""):
        return 0
    if d == "cuda":
        return 1
    return len([x for x in d.replace("[", "").replace("]", "").split(",") if x.strip()])


def _one_line(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = f"unknown key; allowed keys: {_allowed(err['loc'][:-1])}"
    if err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
        msg = f"got {err.get('input')!r}; allowed: {err['ctx']['expected']}"
    elif err["type"].endswith("_type"):
        msg = f"{msg}, got {err.get('input')!r}"
    where = f"{source}.{loc}" if loc else source
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return f"suite {where}: {msg}{more}".replace("\n", " ")


def _allowed(loc: tuple) -> list[str]:
    """The keys a model at ``loc`` (a path of field names from :class:`Suite`) accepts."""
    import typing

    model: Any = Suite
    for part in loc:
        ann = model.model_fields[part].annotation
        args = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = args[0] if args else ann
    return sorted(model.model_fields)


def _float_ok(data: Any) -> Any:
    """YAML ints are accepted where floats are meant (strict mode would refuse ``timeout_s: 15``)."""
    floats = {"memory_budget_gib", "timeout_s", "min_run_time", "mem_gb"}
    if isinstance(data, dict):
        return {k: (float(v) if k in floats and isinstance(v, int) and not isinstance(v, bool) else _float_ok(v))
                for k, v in data.items()}  # fmt: skip
    return data


def validate_suite(data: Any, source: str = "<suite>") -> dict[str, Any]:
    """Check a parsed suite and return it as a dict with every default filled in (SuiteError)."""
    if not isinstance(data, dict):
        raise SuiteError(f"suite {source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        suite = Suite.model_validate(_float_ok(data))
    except ValidationError as exc:
        raise SuiteError(_one_line(exc, source)) from None
    out = suite.model_dump()
    if out["executor"] is None:  # a suite without an executor section keeps the configuration it had
        del out["executor"]
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
