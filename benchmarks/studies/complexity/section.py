"""The complexity study's suite section: ``complexity.operator`` (the token sweep) and
``complexity.model`` (the image-size sweep of YOLO11 and ToST models), validated strictly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from benchmarks.core.schema import StrictSection, validate

Pass = Literal["fwd", "fwd+bwd"]
DType = Literal["float32", "float64", "float16", "bfloat16"]


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


class OperatorSection(StrictSection):
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
    # the largest N of a variant (as named in ``variants`` or expanded from ``tssa:*``); larger sizes are
    # not planned for it. Written only when set: suites without it keep their configuration hash
    max_tokens: dict[str, int] | None = None
    # sizes from this N up are timed in one group per pass, interleaved across sizes (written only when set)
    interleave_from: int | None = Field(None, ge=1)

    _tok = field_validator("tokens")(lambda v: _sizes(v, "tokens"))
    _pas = field_validator("passes")(lambda v: _passes(v))

    @field_validator("threads")
    @classmethod
    def _threads(cls, v):
        return None if v is None else _sizes(v, "threads")

    @field_validator("variants")
    @classmethod
    def _variants(cls, v):
        from benchmarks.studies.complexity.operator import check_variant

        if not v:
            raise ValueError("variants must be a non-empty list")
        for name in v:
            check_variant(name)
        return v

    @field_validator("max_tokens")
    @classmethod
    def _max_tokens(cls, v):
        from benchmarks.studies.complexity.operator import check_variant

        for name, n in (v or {}).items():
            check_variant(name)
            if n < 1:
                raise ValueError(f"max_tokens of {name!r} must be a positive integer, got {n}")
        return v

    @model_validator(mode="after")
    def _shape(self):
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        return self


class FamilySection(StrictSection):
    variants: list[str]
    image_sizes: list[int]
    _sz = field_validator("image_sizes")(lambda v: _sizes(v, "image_sizes"))


class ModelSection(StrictSection):
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
        from benchmarks.studies.complexity.model import check_model

        for fam in ("yolo", "timm"):
            sec = getattr(self, fam)
            if sec is not None:
                if not sec.variants:
                    raise ValueError(f"{fam}.variants must be a non-empty list")
                for v in sec.variants:
                    check_model(fam, v)
        return self


class ComplexitySection(StrictSection):
    operator: OperatorSection | None = None
    model: ModelSection | None = None


def parse_complexity(section: Any) -> dict[str, Any]:
    """Validate a suite's ``complexity:`` section (ValueError, one line) and return it as a dict."""
    out = validate(ComplexitySection, section, "complexity").model_dump()
    for key in ("max_tokens", "interleave_from"):  # optional settings: absent, a suite keeps its hash
        if out.get("operator") is not None and out["operator"].get(key) is None:
            out["operator"].pop(key, None)
    return out
