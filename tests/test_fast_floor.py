"""benchmarks.floor: the floor ratios, the memory ratios, the GPU row builder (run on CPU) and the CLI."""

from __future__ import annotations

import re

import pytest
import torch

from benchmarks import floor


def test_memory_ratios_are_exact_and_rank_the_paths():
    a = floor.memory_ratios(512, 64, 4, ["naive", "lean", "stream"])
    b = floor.memory_ratios(512, 64, 4, ["naive", "lean", "stream"])
    assert a == b  # the dispatch-level tracker is exact: same input, same bytes
    assert set(a["ratio"]) == {"naive", "lean", "stream"}
    assert a["ratio"]["stream"] < a["ratio"]["lean"] < a["ratio"]["naive"]
    assert a["mib"]["floor"] > 0


def test_floor_ratios_report_every_impl():
    r = floor.floor_ratios(256, 64, 4, ["naive", "stream"], min_run_time=0.03)
    assert set(r["ms"]) == {"floor", "naive", "stream"}
    assert all(v > 0 for v in r["ms"].values())
    assert r["ratio"]["stream"] == pytest.approx(r["ms"]["stream"] / r["ms"]["floor"])


def test_core_rows_validate_against_the_store(tmp_path):
    from benchmarks.store import ResultStore

    rows = floor.gpu_core_rows([64, 100], dim=32, heads=4, dtypes=("float32",), device="cpu", suite="t")
    store = ResultStore(tmp_path / "t.jsonl", suite="t")
    assert store.append(rows) == len(rows)
    cells = {(r["variant"], r["pass"], r["tokens"], r["metric"]) for r in rows}
    for n in (64, 100):
        for p in ("fwd", "fwd+bwd"):
            assert ("tssa:stream", p, n, "latency_ms") in cells
            assert ("tssa:stream", p, n, "achieved_gbps") in cells
            assert ("sdpa", p, n, "latency_ms") in cells
    assert all(r["error"] is None and r["value"] > 0 for r in rows)


def test_core_traffic_counts_passes():
    assert floor.core_traffic_bytes(10, 4, backward=False) == 160
    assert floor.core_traffic_bytes(10, 2, backward=True) == 120


def test_cli_prints_time_and_memory(capsys):
    assert floor.main(["--tokens", "128", "--dim", "32", "--heads", "4", "--min-run-time", "0.03"]) == 0
    out = capsys.readouterr().out
    assert "N=   128  time" in out and "N=   128  memory" in out
    assert "stream=" in out and "naive=" in out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--threads", "0"], "--threads must be >= 1"),
        (["--dim", "30", "--heads", "4"], "--dim 30 must be divisible by --heads 4"),
        (["--impls", "nope"], r"unknown --impls \['nope'\]"),
        (["--tokens", "0"], "--tokens must be >= 1"),
    ],
)
def test_cli_rejects_bad_input(argv, match, capsys):
    with pytest.raises(SystemExit) as exc:
        floor.main(argv)
    assert exc.value.code == 2
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cli_cuda_without_a_gpu_says_so(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        floor.main(["--device", "cuda", "--results-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "no CUDA device is available" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written
