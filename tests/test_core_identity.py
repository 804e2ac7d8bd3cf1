"""The TSSA core that ``auto`` resolves to is part of the identity of every cell that runs TSSA."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import benchmarks.studies  # noqa: F401  (the studies register themselves)
from benchmarks.core import registry
from benchmarks.core.impl import core_of, tssa_core
from benchmarks.core.suites import load_suite
from tssa.ops import resolve_impl


def _cells(kind: str) -> list:
    return [c for g in registry.plan("smoke", load_suite("smoke"), kind) for c in g.cells]


def test_tssa_core_is_what_auto_resolves_to(monkeypatch):
    monkeypatch.delenv("TSSA_IMPL", raising=False)
    assert tssa_core("cpu") == resolve_impl("auto", torch.zeros(1, 2, 8, 4))
    monkeypatch.setenv("TSSA_IMPL", "lean")  # honoured, not hidden by a cache
    assert tssa_core("cpu") == "lean"
    assert core_of(frozenset()) is None
    assert core_of(frozenset({"auto", "naive"})) == "lean+naive"
    if not torch.cuda.is_available():
        assert tssa_core("0") == tssa_core("cuda") == "auto"  # a device absent here is not guessed


@pytest.mark.parametrize(
    "kind, with_tssa", [("detection", {"yolo11n-tssa"}), ("classification", {"tost_tiny_12_p8_224"})]
)
def test_cells_that_run_tssa_name_their_core(monkeypatch, kind, with_tssa):
    monkeypatch.delenv("TSSA_IMPL", raising=False)
    cells = _cells(kind)
    core = tssa_core("cpu")
    named = {c["variant"] for c in cells if c.get("tssa_core") is not None}
    assert named == with_tssa
    assert {c["tssa_core"] for c in cells if c["variant"] in with_tssa} == {core}
    # another core gives the TSSA cells other ids and leaves every other cell's id as it was
    monkeypatch.setenv("TSSA_IMPL", "lean" if core != "lean" else "naive")
    other = {c.id: c for c in _cells(kind)}
    before = {c.id: c for c in cells}
    assert (
        {i for i in before if i not in other}
        == {i for i, c in before.items() if c["variant"] in with_tssa}
        != set()
    )
    assert all(c.get("tssa_core") in (None, "lean", "naive") for c in other.values())


def test_the_complexity_layer_and_model_cells_name_their_core(monkeypatch):
    monkeypatch.delenv("TSSA_IMPL", raising=False)
    cells = _cells("complexity")
    layer = [c for c in cells if c["variant"] == "layer:tssa"]
    assert layer and {c["tssa_core"] for c in layer} == {tssa_core("cpu")}
    # an explicit core names itself in its variant and needs no column; the baselines run no TSSA
    assert all(c.get("tssa_core") is None for c in cells if c["variant"] in ("tssa:stream", "sdpa", "floor"))


def test_the_report_follows_the_core_of_the_rows():
    from benchmarks.studies.complexity.report import CORE_BEFORE_COLUMN, core_variant

    rows = pd.DataFrame({"variant": ["layer:tssa", "sdpa"], "tssa_core": ["fused", None]})
    assert core_variant(rows) == "tssa:fused"
    assert core_variant(rows.drop(columns="tssa_core")) == CORE_BEFORE_COLUMN == "tssa:stream"
    assert core_variant(rows.iloc[0:0]) == CORE_BEFORE_COLUMN
