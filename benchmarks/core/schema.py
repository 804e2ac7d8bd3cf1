"""What every suite section shares: the pydantic bases, one error formatter, and the data error.

- :class:`Section`: a section model that refuses unknown keys and converts YAML values where the
  type says so (a list becomes a tuple). :class:`StrictSection` also refuses conversions (``"2"``
  for an int): the suite's top level, the executor and the complexity sweeps use it, whose values
  are plain scalars; sections that hold tuples or nested ranges cannot (pydantic's strict mode
  refuses a YAML list for a tuple).
- :func:`one_line`: a pydantic ``ValidationError`` as one line naming the key, for any model:
  ``detection.train.epochz: unknown key; allowed keys: ['batch', ...]``.
- :class:`DataError`: a study's data cannot be had (a missing file or folder); one line naming it.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["Section", "StrictSection", "DataError", "one_line", "validate"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StrictSection(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DataError(ValueError):
    """A data set that cannot be used as configured; the message is one line naming the fix."""


def _submodel(ann: Any) -> type[BaseModel] | None:
    """The first pydantic model inside an annotation (``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _allowed(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The keys the model at ``loc`` (field names, list indices, mapping keys) accepts."""
    for part in loc:
        if model is None:
            return []
        if isinstance(part, str) and part in model.model_fields:
            model = _submodel(model.model_fields[part].annotation)
    return sorted(model.model_fields) if model is not None else []


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if str(part).startswith("function-"):
            continue
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def one_line(exc: ValidationError, where: str, model: type[BaseModel] | None = None) -> str:
    """The first error of ``exc`` as ``<where>.<key>: <what>`` on one line (and how many more)."""
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    if err["type"] == "extra_forbidden":
        allowed = _allowed(model, tuple(err["loc"][:-1]))
        msg = f"unknown key; allowed keys: {allowed}" if allowed else "unknown key"
    elif err["type"] == "literal_error" and "expected" in ctx:
        msg = f"got {err.get('input')!r}; allowed: {ctx['expected']}"
    elif err["type"].endswith("_type") or err["type"].endswith("_parsing"):
        msg = f"{msg}, got {err.get('input')!r}"
    loc = _loc(tuple(err["loc"]))
    path = f"{where}.{loc}" if loc and where else loc or where
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return f"{path}: {msg}{more}".replace("\n", " ")


M = typing.TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, where: str, error: type[ValueError] = ValueError) -> M:
    """``model.model_validate(data)``; a mapping is required, and any error is one ``error`` line."""
    if not isinstance(data, dict):
        raise error(f"{where}: must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(one_line(exc, where, model)) from None
