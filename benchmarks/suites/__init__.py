"""Suite definitions: YAML files validated on load into plain dicts with every default filled in.

``load_suite("cpu")`` reads the embedded ``cpu.yaml`` beside this file; any other argument ending
in ``.yaml``/``.yml`` is read as a path. Unknown keys, wrong types and impossible values raise a
one-line ``ValueError`` naming the key and what to write instead.

Top level: ``name``, ``device`` (cpu | cuda), ``threads``, ``seed``, ``memory_budget_gib``,
``timeout_s``, and sections. The ``complexity`` section has ``operator`` (token sweep of single
operators) and ``model`` (image-size sweep of whole models: ``yolo`` and ``timm`` lists) parts.
Sections other parts of the harness define (``detection``, ``classification``) pass through as
dicts for their own validation.

>>> suite = load_suite("cpu")
>>> suite["device"], suite["complexity"]["operator"]["dim"]
('cpu', 384)
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml

SUITES_DIR = Path(__file__).resolve().parent
PASSES = ("fwd", "fwd+bwd")
OP_VARIANTS = ("tssa", "softmax", "sdpa", "floor")

_TOP = {
    "name": (str, None),
    "device": (str, "cpu"),
    "threads": (int, 1),
    "seed": (int, 0),
    "memory_budget_gib": ((int, float), 4.0),
    "timeout_s": ((int, float), 120),
    "complexity": (dict, None),
    "detection": (dict, None),
    "classification": (dict, None),
}
_OPERATOR = {
    "tokens": (list, None),
    "batch": (int, 1),
    "dim": (int, 384),
    "heads": (int, 8),
    "dtype": (str, "float32"),
    "passes": (list, ["fwd", "fwd+bwd"]),
    "variants": (list, ["tssa:*", "softmax", "sdpa", "floor"]),
    "rounds": (int, 3),
    "min_run_time": ((int, float), 0.2),
    "profile_max_tokens": (int, 4096),
    "fit_min_tokens": (int, 1024),
}
_MODEL = {
    "passes": (list, ["fwd"]),
    "batch": (int, 1),
    "rounds": (int, 2),
    "min_run_time": ((int, float), 0.2),
    "yolo": (dict, None),
    "timm": (dict, None),
}
_FAMILY = {"variants": (list, None), "image_sizes": (list, None)}
DTYPES = ("float32", "float64", "float16", "bfloat16")


def _check(where: str, data: Any, schema: dict[str, tuple], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"suite {where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise ValueError(f"suite {where}: unknown key(s) {unknown}; allowed keys are {sorted(schema)}")
    out = {}
    for key, (types, default) in schema.items():
        if key not in data or data[key] is None:
            if key in required:
                raise ValueError(f"suite {where}: missing required key {key!r}")
            out[key] = deepcopy(default)
            continue
        val = data[key]
        if isinstance(val, bool) or not isinstance(val, types):
            names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
            raise ValueError(f"suite {where}.{key}: expected {names}, got {val!r}")
        out[key] = val
    return out


def _positive_ints(where: str, values: list) -> list[int]:
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"suite {where}: expected a non-empty list of positive integers, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"suite {where}: duplicate entries in {values!r}")
    return sorted(values)


def _passes(where: str, values: list) -> list[str]:
    bad = [p for p in values if p not in PASSES]
    if not values or bad:
        raise ValueError(
            f"suite {where}: passes must be a non-empty subset of {list(PASSES)}, got {values!r}"
        )
    return list(values)


def validate_suite(data: Any, source: str = "<suite>") -> dict[str, Any]:
    """Check a parsed suite and return it with defaults filled in (raises ValueError)."""
    suite = _check(source, data, _TOP, required=("name",))
    if suite["device"] not in ("cpu", "cuda"):
        raise ValueError(f"suite {source}.device: expected 'cpu' or 'cuda', got {suite['device']!r}")
    for key in ("threads", "memory_budget_gib", "timeout_s"):
        if suite[key] <= 0:
            raise ValueError(f"suite {source}.{key}: must be > 0, got {suite[key]!r}")
    cx = suite["complexity"]
    if cx is not None:
        unknown = sorted(set(cx) - {"operator", "model"})
        if unknown:
            raise ValueError(
                f"suite {source}.complexity: unknown key(s) {unknown}; allowed: ['model', 'operator']"
            )
        if cx.get("operator") is not None:
            op = _check(f"{source}.complexity.operator", cx["operator"], _OPERATOR, required=("tokens",))
            where = f"{source}.complexity.operator"
            op["tokens"] = _positive_ints(f"{where}.tokens", op["tokens"])
            op["passes"] = _passes(where, op["passes"])
            for key in ("batch", "dim", "heads", "rounds"):
                if op[key] < 1:
                    raise ValueError(f"suite {where}.{key}: must be >= 1, got {op[key]}")
            if op["dim"] % op["heads"]:
                raise ValueError(f"suite {where}: dim {op['dim']} must be divisible by heads {op['heads']}")
            if op["dtype"] not in DTYPES:
                raise ValueError(f"suite {where}.dtype: expected one of {list(DTYPES)}, got {op['dtype']!r}")
            if op["min_run_time"] <= 0:
                raise ValueError(f"suite {where}.min_run_time: must be > 0, got {op['min_run_time']}")
            for v in op["variants"]:
                if not isinstance(v, str) or v.split(":", 1)[0] not in OP_VARIANTS:
                    raise ValueError(
                        f"suite {where}.variants: unknown variant {v!r}; use tssa:<impl>, tssa:*, "
                        "softmax, sdpa or floor"
                    )
            cx["operator"] = op
        if cx.get("model") is not None:
            where = f"{source}.complexity.model"
            model = _check(where, cx["model"], _MODEL)
            model["passes"] = _passes(where, model["passes"])
            for fam in ("yolo", "timm"):
                if model[fam] is not None:
                    f = _check(f"{where}.{fam}", model[fam], _FAMILY, required=("variants", "image_sizes"))
                    f["image_sizes"] = _positive_ints(f"{where}.{fam}.image_sizes", f["image_sizes"])
                    if not f["variants"] or not all(isinstance(v, str) and v for v in f["variants"]):
                        raise ValueError(f"suite {where}.{fam}.variants: expected a non-empty list of names")
                    model[fam] = f
            cx["model"] = model
    return suite


def load_suite(name_or_path: str) -> dict[str, Any]:
    """Load and validate an embedded suite by name (``cpu``, ``gpu``) or a YAML file by path."""
    if name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
    else:
        path = SUITES_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))
            raise ValueError(
                f"unknown suite {name_or_path!r}; embedded suites are {known}, or give a .yaml path"
            )
    if not path.exists():
        raise ValueError(f"suite file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"suite file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return validate_suite(data, source=path.name)
