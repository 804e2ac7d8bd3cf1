"""Operator speed checks (``tox -e perf``): ratios measured in one process, never absolute times.

Core checks (what ``impl="auto"`` runs: ``fused`` on CPU where its extension builds, else ``stream``;
``triton`` on CUDA), each against
references timed in the same process, interleaved, single-threaded (``_timing.py``: per round, every
callable's block of calls timed in turn by this thread's CPU time and divided by the reference's
block of the same round; the check reads the median of the per-round ratios):

- forward and forward+backward of the core at (B, H, N, D) = (1, 8, 4096, 48) over a
  read-and-write pass over ``w`` (the bandwidth floor of a bandwidth-bound core) and over the
  reference path ``tssa.ops.naive.tssa_naive`` (called directly, never through the dispatch);
- linearity: the core's forward time at N = 16384 over N = 1024 stays near 16 (quadratic: 256);
- the layer forward over its two projections, and the fast path not slower than ``naive`` / ``lean``.

Exact gates (FLOPs, peak bytes): ``test_operator_exact.py``; instruction counts under callgrind:
``test_operator_instructions.py``. ``_plant.py`` plants regressions on purpose
(``TSSA_PERF_PLANT=double|slow25|nxn``); ``scripts/perf_gate_record.py`` runs the record below.

What catches what. Wall-time ratios on this machine drift by about +-20 % between sessions (the
clean forward core/floor ratio measured 9.95-11.7 in one half hour, 12.5-17.7 in others), which is as
large as a 25 % regression; a fixed wall-time limit therefore catches the doubled core and the N x N
matrix but cannot promise the 25 % slowdown. Instruction counts do not drift (clean runs within
0.07 %), so the callgrind check is the one that catches the 25 % slowdown every time; the timing
checks are limited so as never to raise a false alarm.

RECORD (fused, 2026-12-01, another machine: AMD EPYC, 2 cores; ``TSSA_PERF_PLANT=P pytest
tests/perf/test_operator_speed.py -k "core_speed or linear" -s``, three runs each, limits unchanged):
clean forward core/floor 7.2-10.5, forward+backward 24.2-31.0, linearity 17.2-19.8; doubled
forward 13.6-34.1, forward+backward 39.9-57.7, linearity 24.2-29.2. The compiled core sits far below
both limits (``stream`` measured 18.2-24.8 and 65.7-77.0 there, at or over them); a doubled fused core
is caught by the exact gates every time (FLOPs and bytes) and by the forward limit in 2 of 3 runs.

PROOF (2026-12-03, the fused/avx2 core of c9bacb4, AMD EPYC 2 cores, limits unchanged;
``scripts/perf_gate_record.py --plant P --runs K -- -k "core_speed or linear or exact or layer_forward or
not_slower"``, and ``-k instructions``): clean 5 + 2 (instructions) runs, 0 false alarms (forward
core/floor 4.98-8.96, core/naive 0.10-0.15; fwd+bwd core/floor 20.6-30.3, core/naive 0.058-0.080;
linearity 19.1-23.4; instructions 32.39M / 78.13M against the committed counts); double 3 + 1 runs, every
run caught (every FLOP and peak-byte gate 3/3, instructions x1.99 / x2.00; the timing limits, set for
``stream``, caught the forward 1/3 and linearity 1/3); nxn 3 runs, 3 caught (every exact gate, both core
timings 399-430x the floor, linearity 528-569, layer/projections); slow25 3 + 2 runs: the instruction
counts caught 2/2 (x1.22 / x1.13), the timing checks 1/3 (no FLOPs or bytes added, by construction).
The timing limits stay those of ``stream``: on this core they catch the N x N plant, not the double.

RECORD (this machine: Intel Xeon, 2 cores shared with other jobs, which may have run outside
``/tmp/train.lock`` on the other core during any of these runs: the noisy condition the checks must
survive). Every run under ``flock /tmp/train.lock``, ``scripts/perf_gate_record.py --plant P --runs K``.
Calibration (runs of the timing checks before the limits were set; clean / slow25 / double / nxn):

- forward core/floor: clean 9.95-17.7 (34 runs over three sessions); double 26.2-31.6 (5);
  nxn 97.9-105.6 (4). Limit 21.5.
- forward core/naive: clean 0.37-0.71; double 1.05-1.22; nxn 2.8-4.9. Limit 0.86.
- fwd+bwd core/floor: clean 36.4-50.2; double 75.8-92.8; nxn 137.7-139.5. Limit 62.
- fwd+bwd core/naive: clean 0.39-0.54; slow25 0.51-0.68 (overlaps clean: not a slow25 gate);
  double 0.739-0.97; nxn 1.18-1.43. Limit 0.63.
- linearity time(16384)/time(1024): clean 14.5-20.2, double 15.4-18.1, nxn 190.7-230.3. Bounds 6-48.
- layer/projections: clean 1.43-1.59, double 1.86-1.99, nxn 4.7-4.9. Limit 1.8.
  stream/lean (layer forward): clean 1.05-1.20. Limit 1.4.
- instructions (callgrind, ``test_operator_instructions.py``), 4 clean runs: forward 60,625,989-
  60,645,999 and fwd+bwd 312,136,579-312,319,731 against the committed 60,604,121 / 312,210,057
  (largest deviation 0.07 %; tolerance 1 %); slow25 +43 % / +42 %, double +100 % / +100 %,
  nxn x14 / x3.5: each caught.
- FLOPs and peak bytes (``test_operator_exact.py``) are exact: double and nxn change them (caught every
  run); the slow25 plant spins and adds neither, by construction.

PROOF (2026-11-29, the limits above unchanged, ``--runs 20`` per kind; timing and exact checks in one
pytest process per kind, ``-k "not instructions"``, nothing else running on the other core):

- clean: 20 runs, 0 false alarms. forward core/floor 9.49-11.99, core/naive 0.368-0.597; fwd+bwd
  core/floor 36.1-41.9, core/naive 0.363-0.451; linearity 15.7-19.3; layer/projections 1.39-1.48;
  stream/lean 0.96-1.17, stream/naive 0.69-0.83.
- double: 20 runs, 20 caught. FLOP gates (core and layer) and both peak-byte gates 20/20; fwd+bwd
  timing 20/20 (core/floor 73.0-85.1, core/naive 0.78-0.95); forward timing 19/20 (core/floor
  17.8-27.8, core/naive 0.69-1.27); layer/projections 9/20 (1.75-1.88 against 1.8); linearity 0/20.
- nxn: 20 runs, 20 caught. Every FLOP and byte gate, both core timings, linearity (223-273) and
  layer/projections (3.64-3.90) 20/20.
- slow25: 20 runs, 0 caught by these checks, as designed: the spin adds no FLOPs and no bytes, and its
  timing ratios (forward core/floor 11.3-14.6, fwd+bwd core/floor 44.9-49.4, core/naive 0.45-0.57)
  lie inside the clean range of earlier sessions (fwd+bwd core/floor up to 50.2, core/naive up to
  0.54); in this one session alone they were separated (fwd+bwd core/floor clean max 41.9 < slow25
  min 44.9), which is the drift that a fixed limit cannot follow.
- instructions (``-k instructions``, one valgrind child per run, about 37 s each, beside a one-thread
  training job on the other core, which the counts do not see): clean 20 runs, 0
  false alarms (forward 60,623,260-60,647,899, fwd+bwd 312,212,855-312,329,996 against the committed
  60,604,121 / 312,210,057: at most +0.07 %); slow25 20 runs, 20 caught (forward x1.414-1.439, fwd+bwd
  x1.397-1.422: the spin retires more instructions per second than the bandwidth-bound core, so 25 %
  more CPU time shows as about 41 % more instructions); double 3 runs, 3 caught (x1.997 / x1.999);
  nxn: the forward count of the one run recorded was 855,248,496 (x14.1); the forward+backward
  measurement then ran past the child's 600 s timeout, which fails the check as well (so an N x N
  regression makes this check slow to fail; the other checks fail it in seconds). The remaining nxn
  runs under valgrind were stopped, not counted.
- together: clean 20 + 20 runs without a false alarm; double, nxn and slow25 caught in every planted
  run (slow25 by the instruction counts alone, so without valgrind it is not guarded).
"""

from __future__ import annotations

import pytest
import torch
import torch.utils.benchmark as tb
from _timing import interleaved_ratios

from tssa.nn import TokenStatisticsAttention
from tssa.ops import resolve_impl, tssa
from tssa.ops.naive import tssa_naive

N, C, H = 4096, 384, 8
ROUNDS = 3
# How much slower than a reference the fast path may measure before the check fails. On a quiet
# 2-core machine stream/naive is ~0.8 and stream/lean 0.88-0.99 (three runs of this file); lean is
# the closer competitor, so its margin covers the 10-25% swings of a shared runner.
SLACK = {"naive": 1.1, "lean": 1.4}  # measured stream/naive and stream/lean: see RECORD and PROOF above

# Core checks: the largest ratio each may measure (see the record in the module docstring).
CORE_SHAPE = {"cpu": (1, 8, 4096, 48), "cuda": (8, 8, 16384, 48)}  # (B, H, N, D)
CORE_LIMITS = {
    # about the geometric mean of the largest clean and the smallest doubled ratio (see the RECORD)
    "cpu": {"forward": {"floor": 21.5, "naive": 0.86}, "forward_backward": {"floor": 62.0, "naive": 0.63}},
    # CUDA: not measured yet (no device here); generous placeholders that a doubled core exceeds
    "cuda": {"forward": {"floor": 12.0, "naive": 0.6}, "forward_backward": {"floor": 40.0, "naive": 0.6}},
}
LINEAR_TOKENS = (1024, 16384)
LINEAR_BOUNDS = (6.0, 48.0)  # time(16384) / time(1024); linear: ~16, quadratic: 256

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")],
    ),
]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _core_inputs(shape, device):
    """A token-major (B, N, C) leaf as the layer's projection gives it, its temperature and an upstream gradient."""
    b, h, n, d = shape
    g = torch.Generator(device=device).manual_seed(0)
    wt = torch.randn(b, n, h * d, generator=g, device=device, requires_grad=True)  # (B, N, C)
    gy = torch.randn(b, n, h, d, generator=g, device=device).transpose(1, 2)  # (B, H, N, D)
    return wt, torch.ones(h, device=device), gy


def _core_callables(shape, device, backward: bool) -> dict:
    b, h, n, d = shape
    wt, tau, gy = _core_inputs(shape, device)
    w_ = wt.detach()
    buf = torch.empty_like(w_)

    def heads():
        return wt.view(b, n, h, d).transpose(1, 2)  # (B, H, N, D) view, as the layer's head split

    def floor():
        torch.neg(w_, out=buf)  # one read and one write of every element of w

    def run(core):
        if backward:
            return lambda: torch.autograd.grad(core(heads(), tau), wt, gy)

        def fwd():
            with torch.no_grad():
                core(heads(), tau)

        return fwd

    return {"floor": floor, "core": run(tssa), "naive": run(tssa_naive)}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pass_", ["forward", "forward_backward"])
def test_core_speed_over_floor_and_reference(benchmark, record_property, device, pass_):
    shape = CORE_SHAPE[device]
    fns = _core_callables(shape, device, backward=pass_ == "forward_backward")
    ratios = interleaved_ratios(fns, "floor", rounds=25, block_s=0.02, device=device)
    ratios["naive"] = ratios["core"] / ratios.pop("naive")  # core over the reference path
    ratios["floor"] = ratios.pop("core")  # core over the bandwidth floor
    for k, v in ratios.items():
        benchmark.extra_info[f"core_over_{k}"] = v
        record_property(f"core_over_{k}", v)
    benchmark.pedantic(fns["core"], rounds=10, iterations=1, warmup_rounds=1)
    print(f"\n{pass_} {device} ratios: " + ", ".join(f"core/{k} {v:.3f}" for k, v in ratios.items()))
    for ref, limit in CORE_LIMITS[device][pass_].items():
        assert ratios[ref] <= limit, (
            f"TSSA core {pass_} on {device} measures {ratios[ref]:.2f}x the {ref} (limit {limit})"
        )


@pytest.mark.parametrize("device", DEVICES)
def test_core_time_linear_in_tokens(benchmark, record_property, device):
    b, h, _, d = CORE_SHAPE[device]
    fns = {n: _core_callables((b, h, n, d), device, backward=False)["core"] for n in LINEAR_TOKENS}
    ratio = interleaved_ratios(fns, LINEAR_TOKENS[0], rounds=7, block_s=0.02, device=device)[LINEAR_TOKENS[1]]
    benchmark.extra_info["time_16384_over_1024"] = ratio
    record_property("time_16384_over_1024", ratio)
    benchmark.pedantic(fns[LINEAR_TOKENS[1]], rounds=3, iterations=1)
    print(f"\nlinearity {device}: time(N={LINEAR_TOKENS[1]}) / time(N={LINEAR_TOKENS[0]}) = {ratio:.2f}")
    lo, hi = LINEAR_BOUNDS if device == "cpu" else (0.0, LINEAR_BOUNDS[1])  # CUDA: launch-bound at N = 1024
    assert lo <= ratio <= hi, f"core time grows {ratio:.1f}x for 16x the tokens (linear: ~16, quadratic: 256)"


def _interleaved_medians(fns: dict, min_run_time: float = 0.15) -> dict[str, float]:
    """Median seconds of each callable over ``ROUNDS`` interleaved rounds (drift hits all alike)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        for name, fn in fns.items():
            t = tb.Timer("fn()", globals={"fn": fn}, num_threads=1).blocked_autorange(
                min_run_time=min_run_time
            )
            times.setdefault(name, []).append(t.median)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def _layer_and_input(requires_grad=False):
    torch.manual_seed(0)
    layer = TokenStatisticsAttention(C, H).eval()
    x = torch.randn(1, N, C, requires_grad=requires_grad)
    return layer, x


def _forward(layer, x, impl):
    def fn():
        layer.impl = impl
        return layer(x)

    return fn


def test_auto_runs_the_fast_path_on_cpu():
    assert (
        resolve_impl("auto", torch.empty(1, H, N, C // H)) == "fused"
    )  # where its extension builds (CI: it does)


def test_layer_forward_near_projection_floor(benchmark, record_property):
    layer, x = _layer_and_input()
    lin1, lin2 = layer.qkv, layer.to_out[0]
    with torch.no_grad():
        med = _interleaved_medians({"floor": lambda: lin2(lin1(x)), "stream": _forward(layer, x, "stream")})
        benchmark.pedantic(_forward(layer, x, "stream"), rounds=5, iterations=1)
    ratio = med["stream"] / med["floor"]
    benchmark.extra_info["layer_over_floor"] = ratio
    record_property("layer_over_floor", ratio)
    # goal: 1.3x at N = 16384 on a quiet machine; a shared CI runner gets a generous margin
    assert ratio < 1.8, f"TSSA layer forward is {ratio:.2f}x its two projections"


def test_fast_forward_not_slower_than_naive_or_lean(benchmark, record_property):
    layer, x = _layer_and_input()
    with torch.no_grad():
        med = _interleaved_medians({impl: _forward(layer, x, impl) for impl in ("naive", "lean", "stream")})
        benchmark.pedantic(_forward(layer, x, "stream"), rounds=5, iterations=1)
    for ref in ("naive", "lean"):
        benchmark.extra_info[f"stream_over_{ref}"] = med["stream"] / med[ref]
        record_property(f"stream_over_{ref}", med["stream"] / med[ref])
        assert med["stream"] <= SLACK[ref] * med[ref], f"stream forward {med['stream'] / med[ref]:.2f}x {ref}"


def test_fast_forward_backward_not_slower_than_naive_or_lean(benchmark, record_property):
    layer, x = _layer_and_input(requires_grad=True)
    layer.train()

    def step(impl):
        def fn():
            layer.impl = impl
            layer(x).sum().backward()

        return fn

    med = _interleaved_medians({impl: step(impl) for impl in ("naive", "lean", "stream")})
    benchmark.pedantic(step("stream"), rounds=3, iterations=1)
    for ref in ("naive", "lean"):
        benchmark.extra_info[f"stream_over_{ref}"] = med["stream"] / med[ref]
        record_property(f"stream_over_{ref}", med["stream"] / med[ref])
        assert med["stream"] <= SLACK[ref] * med[ref], f"stream fwd+bwd {med['stream'] / med[ref]:.2f}x {ref}"
