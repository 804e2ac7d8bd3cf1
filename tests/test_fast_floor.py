"""benchmarks.studies.complexity.floor: the layer over its two projections, measured as cells of a run; the CLI."""

from __future__ import annotations

import re

import pytest
import torch

from benchmarks.core.store import list_runs
from benchmarks.studies.complexity import floor
from benchmarks.studies.complexity.operator import core_traffic_bytes


def test_memory_ratios_are_exact_and_rank_the_paths():
    a = floor.memory_ratios(512, 64, 4, ["naive", "lean", "stream"])
    b = floor.memory_ratios(512, 64, 4, ["naive", "lean", "stream"])
    assert a == b  # the dispatch-level tracker is exact: same input, same bytes
    assert set(a["ratio"]) == {"naive", "lean", "stream"}
    assert a["ratio"]["stream"] < a["ratio"]["lean"] < a["ratio"]["naive"]
    assert a["mib"]["floor"] > 0


def test_core_traffic_counts_passes():
    assert core_traffic_bytes(10, 4, backward=False) == 160
    assert core_traffic_bytes(10, 2, backward=True) == 120


def test_cli_measures_cells_into_a_run_and_writes_the_readme_block(capsys, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- floor:begin -->\n<!-- floor:end -->\n")
    argv = ["--tokens", "128", "--dim", "32", "--heads", "4", "--impls", "naive", "stream",
            "--min-run-time", "0.01", "--results-dir", str(tmp_path / "r"), "--readme", str(readme)]  # fmt: skip
    assert floor.main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"N=   128  fwd     time    naive=\d+\.\d\dx  stream=\d+\.\d\dx", out)
    assert re.search(r"N=   128  fwd\+bwd memory  naive=\d+\.\d\dx  stream=\d+\.\d\dx", out)
    (run,) = list_runs(tmp_path / "r", "floor", "local")
    assert run.summary() == {"finished": 6}  # 3 variants x 2 passes
    assert "python -m benchmarks.studies.complexity.floor --tokens 128" in readme.read_text()
    # the same command resumes nothing (the run is complete) and a second run starts
    assert floor.main(argv) == 0
    assert len(list_runs(tmp_path / "r", "floor", "local")) == 2


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--threads", "0"], "--threads must be >= 1"),
        (["--dim", "30", "--heads", "4"], "--dim 30 must be divisible by --heads 4"),
        (["--impls", "nope"], r"unknown --impls \['nope'\]"),
        (["--tokens", "0"], "--tokens must be >= 1"),
    ],
)
def test_cli_rejects_bad_input(argv, match, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        floor.main([*argv, "--results-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without CUDA")
def test_cli_cuda_without_a_gpu_says_so(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        floor.main(["--device", "cuda", "--results-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert "no CUDA device is available" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
