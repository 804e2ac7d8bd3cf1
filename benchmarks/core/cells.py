"""Typed cells: one measurement's parameters, its canonical id and the hash of what changes its numbers.

A cell is ``kind`` plus typed parameters (variant, seed, tokens, pass, dtype, device, batch, dim,
heads, threads, image size, ...) and the *settings* that change its numbers without naming it
(timing rounds and window, memory budget, time limit, epochs, dataset arguments). The id is
readable and canonical (parameters in the kind's order) and ends with a hash of parameters and
settings, so changing a setting makes a new cell::

    complexity/level=operator/variant=sdpa/pass=fwd/.../tokens=1024@3f2a9c01

Parameters become columns of every row of the cell (:meth:`Cell.columns`).

>>> c = Cell.make("complexity", {"variant": "sdpa", "pass": "fwd", "tokens": 64}, {"rounds": 3})
>>> c.id.startswith("complexity/variant=sdpa/pass=fwd/tokens=64@")
True
>>> c["tokens"], c.get("seed", 0)
(64, 0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.core.store import config_hash

_FIXED = ("variant", "seed", "tokens", "image_size", "pass")
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Cell:
    """One cell: ``kind``, ordered typed ``params`` and the ``settings_hash`` of its settings."""

    kind: str
    params: tuple[tuple[str, Any], ...]
    settings_hash: str

    @classmethod
    def make(cls, kind: str, params: dict[str, Any], settings: dict[str, Any] | None = None) -> Cell:
        for k, v in params.items():
            if not isinstance(v, _SCALARS):
                raise TypeError(f"cell parameter {k!r} must be a scalar, got {type(v).__name__}")
        return cls(kind, tuple(params.items()), config_hash({"params": params, "settings": settings or {}}))

    @property
    def hash(self) -> str:
        """Hash of the parameters and settings (changes whenever the cell's numbers could)."""
        return config_hash([self.kind, list(self.params), self.settings_hash])[:8]

    @property
    def id(self) -> str:
        body = "/".join(f"{k}={v}" for k, v in self.params)
        return f"{self.kind}/{body}@{self.hash}"

    def __getitem__(self, key: str) -> Any:
        for k, v in self.params:
            if k == key:
                return v
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def as_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def row_args(self) -> dict[str, Any]:
        """Keyword arguments of :func:`benchmarks.core.store.make_row` for this cell: the fixed columns
        it has, every other parameter as an extra column, and the cell hash."""
        p = self.as_dict()
        out: dict[str, Any] = {
            "variant": str(p.get("variant", self.kind)),
            "seed": p.get("seed"),
            "tokens": p.get("tokens"),
            "image_size": p.get("image_size"),
            "pass_": p.get("pass"),
        }
        out.update({k: v for k, v in p.items() if k not in _FIXED})
        out["cell_hash"] = self.hash
        return out
