"""Committed expectations of the exact checks (``expected.json``) and how to refresh them on purpose.

``TSSA_PERF_REFRESH=1 tox -e perf -- -k "exact or instructions"`` rewrites the values the selected
checks measure instead of comparing them (each such check then reports itself skipped), so an
intended change of the core's FLOPs, bytes or instruction counts is one command and one reviewed
diff of ``tests/perf/expected.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

PATH = Path(__file__).with_name("expected.json")
REFRESH_ENV = "TSSA_PERF_REFRESH"


def refreshing() -> bool:
    return os.environ.get(REFRESH_ENV, "") not in ("", "0")


def load() -> dict:
    return json.loads(PATH.read_text()) if PATH.exists() else {}


def record(path: tuple[str, ...], value) -> None:
    """Store ``value`` at ``path`` in expected.json (refresh mode), then skip the calling check."""
    data = load()
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    PATH.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    pytest.skip(f"{REFRESH_ENV}: recorded {'/'.join(path)} = {value}")


def expected(path: tuple[str, ...]):
    """The committed value at ``path`` (None when absent)."""
    node = load()
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node
