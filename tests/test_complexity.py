"""Complexity sweeps: FLOP counters and their independent cross-checks, memory, honest timing,
the layout the layer hands over, cells through the runner, derive per configuration, the CLI."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from benchmarks.__main__ import main
from benchmarks.core.cells import Cell
from benchmarks.core.flops import analytic_counts, count_flops_torch, count_macs_fvcore
from benchmarks.core.runner import Context, run_groups
from benchmarks.core.store import load_rows, make_row
from benchmarks.core.suites import validate_suite
from benchmarks.studies import complexity as cx
from benchmarks.studies.complexity import operator as opmod

SHAPES = [(1, 16, 32, 4), (2, 33, 48, 4)]  # (B, N, C, H), an odd N included
OPS = ["floor", "softmax", "sdpa", "tssa:naive", "layer:tssa:naive", "layer:sdpa", "layer:softmax"]
QUIET = {"log": lambda *a, **k: None}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _cell(variant, shape, pass_="fwd", threads=1):
    b, n, c, h = shape
    return Cell.make(
        "complexity",
        {"level": "operator", "variant": variant, "pass": pass_, "device": "cpu", "dtype": "float32",
         "batch": b, "dim": c, "heads": h, "threads": threads, "tokens": n},
    )  # fmt: skip


# ------------------------------------------------------------------------------------ FLOP counting
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", OPS)
def test_flop_counters_agree_with_the_formula_forward(variant, shape):
    want = opmod.analytic(_cell(variant, shape))
    fn, args, step = cx.build_operator(_cell(variant, shape))
    assert count_flops_torch(step) == want["flops"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's tracer warnings
        macs, unsupported = count_macs_fvcore(fn, *args)
    assert unsupported == {}
    assert macs == want["macs"]  # fvcore counts multiply-accumulates only


@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
def test_sdpa_counter_equals_the_materialised_path_counted_op_by_op(pass_):
    """Independent check of the SDPA mapping: the materialised path is counted by FlopCounterMode's
    own matmul formulas plus the softmax mapping, SDPA by the project's kernel formula."""
    shape = (1, 24, 32, 4)
    sd = count_flops_torch(cx.build_operator(_cell("sdpa", shape, pass_))[2])
    sm = count_flops_torch(cx.build_operator(_cell("softmax", shape, pass_))[2])
    assert sd == sm > 0


def test_tssa_formula_equals_its_reference_counted_op_by_op():
    """The TSSA formula against a count of the reference path that shares no code with it: every
    aten op of ``tssa_naive`` recorded by a dispatch mode and priced by hand."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from tssa.ops.naive import tssa_naive

    ops = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            ops.append((func.overloadpacket.__name__, [a.shape for a in args if isinstance(a, torch.Tensor)],
                        out.shape if isinstance(out, torch.Tensor) else None))  # fmt: skip
            return out

    b, h, n, d = 2, 4, 33, 12
    w, tau = torch.randn(b, h, n, d), torch.ones(h)
    with torch.no_grad(), Record():
        tssa_naive(w, tau)
    total = 0
    for name, ins, out in ops:
        numel = out.numel() if out is not None else 0
        if name == "linalg_vector_norm":
            total += 2 * ins[0].numel()
        elif name == "sum":
            total += ins[0].numel()
        elif name == "_softmax":
            total += 5 * numel
        elif name == "bmm":
            total += 2 * ins[0][0] * ins[0][1] * ins[0][2] * ins[1][2]
        elif name in (
            "clamp_min",
            "div",
            "pow",
            "mul",
            "add",
            "reciprocal",
            "neg",
            "rsub",
            "expand",
            "clone",
        ):
            total += numel if name not in ("expand", "clone") else 0
    want = analytic_counts("tssa", batch=b, tokens=n, dim=d * h, heads=h)["flops"]
    assert total == want


def test_analytic_formulas_by_hand():
    sd = analytic_counts("sdpa", batch=1, tokens=4, dim=8, heads=2)
    assert (sd["macs"], sd["elementwise"], sd["flops"]) == (256, 192, 704)
    fl = analytic_counts("floor", batch=1, tokens=4, dim=8, heads=2)
    assert (fl["macs"], fl["flops"]) == (2 * 4 * 64, 4 * 4 * 64)
    ts = analytic_counts("tssa:lean", batch=1, tokens=4, dim=8, heads=2)
    e, t, s = 32, 8, 8
    assert (ts["macs"], ts["elementwise"]) == (e, 8 * e + 9 * t + 4 * s + 2)
    lay = opmod.analytic(_cell("layer:sdpa", (1, 4, 8, 2)))
    assert lay["macs"] == 256 + 4 * 4 * 64  # the core plus qkv (3C) and proj (C)
    big = {v: analytic_counts(v, batch=1, tokens=4096, dim=384, heads=8)["flops"] for v in ("tssa", "sdpa")}
    small = {v: analytic_counts(v, batch=1, tokens=1024, dim=384, heads=8)["flops"] for v in ("tssa", "sdpa")}
    assert big["tssa"] / small["tssa"] == pytest.approx(4, rel=1e-3)
    assert big["sdpa"] / small["sdpa"] == pytest.approx(16, rel=1e-3)
    with pytest.raises(ValueError, match="no analytic formula"):
        analytic_counts("flash", batch=1, tokens=4, dim=8, heads=2)


def test_backward_counts_floor_is_three_forwards():
    counts = count_flops_torch(cx.build_operator(_cell("floor", (1, 24, 32, 4), "fwd+bwd"))[2])
    assert counts == 3 * analytic_counts("floor", batch=1, tokens=24, dim=32, heads=4)["flops"]


def test_flop_counter_refuses_inference_mode():
    with torch.inference_mode(), pytest.raises(ValueError, match="inference_mode"):
        count_flops_torch(lambda: None)


# ------------------------------------------------------------------------------------------ memory
def test_memory_measures_a_known_allocation_exactly():
    x = torch.randn(64, 64)

    def step():
        y = torch.empty(1000, dtype=torch.float32)  # 4000 bytes
        z = x.view(-1)  # a view of an existing input: 0 extra bytes
        del y, z

    assert cx.measure_peak_bytes(step, "cpu") == 4000
    assert cx.profiler_peak_bytes(step) == 4000


@pytest.mark.parametrize("variant", ["tssa:naive", "softmax", "floor", "layer:tssa:stream"])
def test_tracker_and_profiler_agree_and_counting_changes_nothing(variant):
    for pass_ in ("fwd", "fwd+bwd"):
        _, _, step = cx.build_operator(_cell(variant, (1, 128, 64, 4), pass_))
        step()  # warm-up
        tracked = cx.measure_peak_bytes(step, "cpu")
        assert 0 <= cx.profiler_peak_bytes(step) - tracked <= 64
        peak, flops, _ = cx.count_call(step, "cpu", 60)
        assert (peak, flops) == (tracked, count_flops_torch(step))


def test_softmax_memory_is_quadratic_and_tssa_linear():
    peaks = {}
    for v in ("softmax", "tssa:naive"):
        for n in (256, 512):
            _, _, step = cx.build_operator(_cell(v, (1, n, 64, 4)))
            peaks[v, n] = cx.measure_peak_bytes(step, "cpu")
    assert peaks["softmax", 512] / peaks["softmax", 256] > 3.5
    assert peaks["tssa:naive", 512] / peaks["tssa:naive", 256] == pytest.approx(2, rel=0.05)
    assert cx.predicted_peak_bytes(_cell("softmax", (1, 512, 64, 4))) >= peaks["softmax", 512]


# ---------------------------------------------------------------------- what users run, how it is timed
def test_tssa_cores_get_the_layout_the_layer_hands_over(monkeypatch):
    import tssa.nn
    import tssa.ops

    seen = {}

    def spy(tag, real):
        def f(w, *a, **k):
            seen[tag] = (w.shape, w.stride(), w.is_contiguous())
            return real(w, *a, **k)

        return f

    real = tssa.ops.tssa
    monkeypatch.setattr(tssa.nn, "tssa", spy("layer", real))
    tssa.nn.TokenStatisticsAttention(48, 4)(torch.randn(2, 33, 48))
    import tssa.ops as ops_mod

    monkeypatch.setattr(ops_mod, "tssa", spy("cell", real))
    _, _, step = cx.build_operator(_cell("tssa:stream", (2, 33, 48, 4)))
    step()
    assert seen["cell"] == seen["layer"] and seen["cell"][2] is False


def test_timing_samples_are_blocks_of_repeated_calls_interleaved():
    order = []

    def make(tag):
        def step():
            order.append(tag)
            torch.ones(8).sum()

        return step

    t = cx.time_interleaved(
        {"a": make("a"), "b": make("b")}, device="cpu", rounds=3, min_run_time=0.02, threads=1
    )
    for name in ("a", "b"):
        assert len(t[name].samples) >= 3 and t[name].calls > 10 * len(t[name].samples)
    switches = sum(1 for x, y in zip(order, order[1:]) if x != y)
    assert switches >= 5  # a, b, a, b, a, b: interleaved round by round


def test_cells_of_a_group_share_their_inputs_and_keep_no_gradients():
    """The cells of one group take the same input tensor where they would draw the same values (so an
    interleaved group of many sizes holds one set per size); the values are those each cell draws
    alone, and a forward+backward step frees the gradients it made."""
    shape = (1, 64, 32, 4)
    variants = ["tssa:naive", "tssa:lean", "floor", "layer:tssa"]
    shared = {}
    built = {v: cx.build_operator(_cell(v, shape, "fwd+bwd"), 0, shared) for v in variants}
    alone = {v: cx.build_operator(_cell(v, shape, "fwd+bwd"), 0) for v in variants}
    firsts = {v: built[v][1][0] for v in variants}
    assert len({t.data_ptr() for t in firsts.values()}) == 1  # one (1, 64, 32) input for all four
    for v in variants:
        assert all(torch.equal(a, b) for a, b in zip(built[v][1], alone[v][1]))  # the values drawn alone
    sizes = {tuple(k[1]) for k in shared if k[0] == "input"}
    assert sizes == {(1, 64, 32)} and sum(k[0] == "dy" for k in shared) == 2  # core- and layer-shaped
    for v in variants:
        built[v][2]()
        assert all(a.grad is None for a in built[v][1]), v
        if isinstance(built[v][0], torch.nn.Module):
            assert all(p.grad is None for p in built[v][0].parameters()), v


def test_a_call_longer_than_the_window_is_timed_alone_after_the_first_round():
    """blocked_autorange makes a warm-up call before every block; for a call that fills the window by
    itself the later rounds time one call each, so only the first round pays a warm-up."""
    import time as _time

    made = {"slow": 0, "fast": 0}

    def slow():
        made["slow"] += 1
        _time.sleep(0.03)

    def fast():
        made["fast"] += 1

    t = cx.time_interleaved(
        {"slow": slow, "fast": fast}, device="cpu", rounds=4, min_run_time=0.01, threads=1
    )
    assert t["slow"].calls == len(t["slow"].samples) == 4  # blocks of one call, one per round
    assert made["slow"] == t["slow"].calls + 1  # the first round's warm-up call only
    assert all(0.03 <= x < 0.5 for x in t["slow"].samples)
    assert t["fast"].calls > 10 * len(t["fast"].samples)  # short calls still come in blocks
    assert made["fast"] > t["fast"].calls + 3  # and blocked_autorange warms up before each round's block


def test_a_failing_step_is_recorded_and_the_others_go_on():
    def bad():
        raise RuntimeError("boom")

    t = cx.time_interleaved(
        {"bad": bad, "ok": lambda: None}, device="cpu", rounds=2, min_run_time=0.01, threads=1
    )
    assert t["bad"].error == "RuntimeError: boom" and t["ok"].error is None and t["ok"].samples


# ------------------------------------------------------------------------------------ cells, runner
def _tiny_suite(**op):
    return validate_suite(
        {
            "name": "t",
            "threads": 1,
            "memory_budget_gib": 1.0,
            "timeout_s": 10,
            "complexity": {
                "operator": {
                    "tokens": [32, 64],
                    "dim": 16,
                    "heads": 2,
                    "rounds": 1,
                    "min_run_time": 0.01,
                    "profile_max_tokens": 32,
                    "fit_min_tokens": 32,
                    "variants": ["tssa:naive", "sdpa", "layer:tssa", "layer:sdpa", "floor"],
                    **op,
                }
            },
        }  # fmt: skip
    )


def test_sweep_writes_typed_rows_with_registry_units(tmp_path):
    suite = _tiny_suite()
    before = copy.deepcopy(suite)
    run = run_groups("t", suite, cx.plan("t", suite), tmp_path, **QUIET)
    assert suite == before
    df = load_rows([run])
    assert run.summary() == {"finished": 5 * 2 * 2}
    for col in (
        "variant",
        "pass",
        "dtype",
        "device",
        "batch",
        "dim",
        "heads",
        "threads",
        "tokens",
        "cell_hash",
    ):
        assert df[col].notna().all(), col
    from benchmarks.core.metrics import METRICS

    assert all(METRICS[m].unit == u for m, u in zip(df["metric"], df["unit"]))
    lat = df[df["metric"] == "latency_ms"]
    assert (lat["samples"] >= 1).all() and (lat["calls"] >= lat["samples"]).all()
    assert set(df["metric"]) >= {
        "flops_analytic",
        "macs_analytic",
        "elementwise_analytic",
        "flops_torch",
        "macs_fvcore",
        "peak_mib",
        "peak_mib_profiler",
        "latency_ms",
        "tokens_per_s",
    }
    assert (df["level"] == "operator").all() and set(df["run"]) == {run.id}


def test_skips_are_predicted_from_stored_rows_so_a_resume_decides_the_same(tmp_path):
    suite = _tiny_suite(tokens=[32, 4096], variants=["softmax"], passes=["fwd"])
    cells = [g.cells[0] for g in cx.plan("t", suite)]
    # 10 ms at N=32 predicts 10 ms * 128^2 = 164 s at N=4096: over the 10 s limit
    hist = [make_row("t", "complexity", cells[0].id, "softmax", metric="latency_ms", value=10.0, tokens=32,
                     pass_="fwd", level="operator", device="cpu", dtype="float32", batch=1, dim=16, heads=2,
                     threads=1)]  # fmt: skip
    guess = opmod.predicted_seconds(cells[1], hist)
    assert guess == (pytest.approx(0.01 * 128**2), 32)

    class Ctx(Context):
        def history(self):
            return hist

    out = opmod.execute([cells[1]], Ctx("t", suite, None, **QUIET))
    assert out[cells[1].id].skipped.startswith("timeout: predicted 164 s per call from N=32")


def test_a_sweep_gives_the_process_its_thread_count_back(tmp_path):
    # the timing groups pin one thread; the groups after them (a detection cell's training) must not inherit it
    suite = _tiny_suite(tokens=[32], variants=["floor"], passes=["fwd"])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_groups("t", suite, cx.plan("t", suite), tmp_path, **QUIET)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_cells_over_the_memory_budget_are_skipped_with_the_reason(tmp_path):
    suite = _tiny_suite(tokens=[20000], variants=["softmax"], passes=["fwd"])
    run = run_groups("t", suite, cx.plan("t", suite), tmp_path, **QUIET)
    (st,) = run.status().values()
    assert st.event == "skipped" and "exceeds the memory budget" in st.reason


def test_calls_past_the_time_limit_fail_with_timeout(tmp_path, monkeypatch):
    import time as _time

    suite = _tiny_suite(tokens=[32], variants=["floor"], passes=["fwd"])
    suite["timeout_s"] = 0.05
    real = opmod.build_operator

    def slow(cell, seed=0, shared=None):
        fn, args, step = real(cell, seed, shared)

        def slow_step():
            _time.sleep(0.2)
            step()

        return fn, args, slow_step

    monkeypatch.setattr(opmod, "build_operator", slow)
    run = run_groups("t", suite, cx.plan("t", suite), tmp_path, **QUIET)
    (st,) = run.status().values()
    assert st.event == "failed" and st.reason.startswith("timeout")


def test_max_tokens_stops_a_variant_at_its_size_and_names_a_bad_key():
    suite = _tiny_suite(tokens=[32, 64, 128], variants=["tssa:*", "sdpa", "layer:sdpa", "floor"], passes=["fwd"],
                        max_tokens={"sdpa": 64, "layer:sdpa": 32, "tssa:naive": 32})  # fmt: skip
    planned = {(c["variant"], c["tokens"]) for g in cx.plan("t", suite) for c in g.cells}
    assert {n for v, n in planned if v == "sdpa"} == {32, 64}
    assert {n for v, n in planned if v == "layer:sdpa"} == {32}
    assert {n for v, n in planned if v == "tssa:naive"} == {32}
    # uncapped variants, and the other cores the ``tssa:*`` pattern expands to, keep every size
    assert (
        {n for v, n in planned if v == "floor"}
        == {n for v, n in planned if v == "tssa:lean"}
        == {32, 64, 128}
    )
    with pytest.raises(ValueError, match="unknown operator variant 'flash'"):
        _tiny_suite(max_tokens={"flash": 64})
    with pytest.raises(ValueError, match="max_tokens of 'sdpa' must be a positive integer"):
        _tiny_suite(max_tokens={"sdpa": 0})


def test_interleave_from_times_the_fit_sizes_in_one_group_per_pass(tmp_path):
    suite = _tiny_suite(tokens=[32, 64, 128, 256], variants=["tssa:naive", "floor"], interleave_from=64)
    groups = cx.plan("t", suite)
    sizes = [sorted({c["tokens"] for c in g.cells}) for g in groups]
    assert sizes == [[32], [64, 128, 256], [32], [64, 128, 256]]  # fwd, then fwd+bwd
    assert [len(g.cells) for g in groups] == [2, 6, 2, 6]
    run = run_groups("t", suite, groups, tmp_path, **QUIET)
    assert run.summary() == {"finished": 16}
    df = load_rows([run])
    lat = df[df["metric"] == "latency_ms"]
    assert sorted(lat["tokens"].astype(int).unique()) == [32, 64, 128, 256] and (lat["samples"] >= 1).all()
    with pytest.raises(ValueError, match="interleave_from"):
        _tiny_suite(interleave_from=0)


def test_a_suite_without_max_tokens_keeps_its_configuration_hash():
    from benchmarks.core.store import config_hash

    assert not {"max_tokens", "interleave_from"} & set(_tiny_suite()["complexity"]["operator"])
    assert config_hash(_tiny_suite()) != config_hash(_tiny_suite(max_tokens={"sdpa": 32}))


def test_variants_expand_to_usable_impls():
    got = cx.expand_variants(["tssa:*", "sdpa", "sdpa"], "cpu", "float32")
    assert "tssa:naive" in got and "tssa:lean" in got and got.count("sdpa") == 1
    assert "tssa:compile" not in got and "tssa:triton" not in got
    with pytest.raises(ValueError, match="unknown operator variant 'flash'"):
        cx.expand_variants(["flash"], "cpu", "float32")


# ------------------------------------------------------------------------------------------ derive
def _syn(machine="m1", threads=1, dtype="float32"):
    rows = []
    for n in (256, 1024, 4096, 16384):
        for v, t in (("tssa:stream", 0.01 * n), ("sdpa", 1e-5 * n * n), ("floor", 0.005 * n),
                     ("layer:tssa", 0.02 * n), ("layer:sdpa", 0.01 * n + 1e-5 * n * n)):  # fmt: skip
            for metric, val in (("latency_ms", t * threads), ("peak_mib", 0.001 * n)):
                rows.append(make_row("t", "complexity", f"{v}/{n}/{threads}/{dtype}", v, metric=metric, value=val,
                                     tokens=n, pass_="fwd", level="operator", device="cpu", dtype=dtype,
                                     batch=1, dim=384, heads=8, threads=threads, samples=5) | {"machine": machine})  # fmt: skip
    return rows


def test_derive_never_mixes_configurations():
    import pandas as pd

    df = pd.DataFrame(_syn() + _syn(threads=2) + _syn(machine="m2") + _syn(dtype="bfloat16"))
    d = cx.derive(df, fit_min_tokens=1024)
    assert len(d["configs"]) == 4
    for c in d["configs"]:
        s = c["slopes"]
        assert s[("tssa:stream", "fwd")]["time"] == pytest.approx(1.0)
        assert s[("sdpa", "fwd")]["time"] == pytest.approx(2.0)
        assert s[("sdpa", "fwd")]["points"] == 3  # N >= 1024 of this configuration only
        x = c["crossover"][("tssa:stream", "fwd")]
        assert x["where"] == "inside" and x["n"] == pytest.approx(1000, rel=1e-6) and x["reference"] == "sdpa"
        assert c["crossover"][("layer:tssa", "fwd")]["reference"] == "layer:sdpa"
        assert c["floor"][("layer:tssa", "fwd", 4096, "time")] == pytest.approx(4.0)


def test_derive_refuses_an_unknown_reference():
    import pandas as pd

    with pytest.raises(ValueError, match="unknown --reference 'flash'"):
        cx.derive(pd.DataFrame(_syn()), reference="flash")


def test_slopes_and_crossover_of_synthetic_curves():
    assert cx.fit_slope([1, 2, 4], [3, 12, 48]) == pytest.approx(2.0)
    assert cx.crossover([1, 2, 4], [1, 1, 1], [2, 2, 2]) == {"n": 1.0, "where": "below"}
    assert cx.crossover([1, 2, 4], [3, 3, 3], [2, 2, 2]) == {"n": None, "where": "above"}


def test_cli_runs_derives_and_writes_the_readme_block(tmp_path, capsys):
    import yaml

    suite = _tiny_suite(tokens=[32, 64], passes=["fwd"])
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(suite))
    res = tmp_path / "res"
    assert main(["run", "--suite", str(path), "--results-dir", str(res), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "10 cells, 10 to execute; this command starts a new run" in out
    assert "estimated time: unknown (no cell of the" in out
    assert not res.exists()  # a dry run writes nothing
    assert main(["run", "--suite", str(path), "--results-dir", str(res)]) == 0
    capsys.readouterr()
    # a new dry run (a complete run is never resumed) estimates its time from the cells just measured
    assert main(["run", "--suite", str(path), "--results-dir", str(res), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "10 cells, 10 to execute" in out and "estimated time: about " in out, out[-500:]
    assert "groups without a measured history" not in out
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- complexity:t:begin -->\nold\n<!-- complexity:t:end -->\nb\n")
    capsys.readouterr()
    assert main(["derive", "--suite", str(path), "--results-dir", str(res), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and "| tssa:naive | core | fwd |" in text and text.endswith("end -->\nb\n")
    assert (res / "t" / "derived.json").exists()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["derive", "--suite", "cpu", "--results-dir", "{tmp}"], "no complete run of suite 'cpu'"),
        (["derive", "--suite", "cpu", "--results-dir", "{tmp}", "--runs", "x"], "unknown run(s) ['x']"),
        (["run", "--suite", "nope"], "unknown suite 'nope'"),
        (["run", "--suite", "gpu", "--results-dir", "{tmp}"], "no CUDA device"),
    ],
)
def test_cli_bad_input_exits_with_a_clear_error(argv, match, tmp_path, capsys):
    if "gpu" in argv and torch.cuda.is_available():
        pytest.skip("checks the message shown without CUDA")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and match in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- models
def test_attention_tokens_follow_the_feature_map():
    from tssa.nn import TokenStatisticsAttention

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 16, 3, stride=4, padding=1)
            self.attn = TokenStatisticsAttention(16, num_heads=2)

        def forward(self, x):
            return self.attn.forward_nchw(self.stem(x))

    assert cx.attention_tokens(Net(), torch.randn(1, 3, 64, 64)) == [16 * 16]


def test_yolo_attention_tokens_count_attention_layers_only():
    stock = cx.build_model("yolo", "yolo11n", 64)
    assert cx.attention_tokens(stock.eval(), torch.randn(1, 3, 64, 64)) == [4]  # 2x2 at P5/32
    noattn = cx.build_model("yolo", "yolo11n-noattn", 64)
    assert cx.attention_tokens(noattn.eval(), torch.randn(1, 3, 64, 64)) == []


@pytest.mark.parametrize("family, variant", [("yolo", "yolo11n-tssa"), ("timm", "tost_tiny_12_p16_224")])
def test_real_model_cell_records_tokens_flops_memory_and_time(family, variant, tmp_path):
    suite = validate_suite({
        "name": "t", "threads": 1, "memory_budget_gib": 1, "timeout_s": 60,
        "complexity": {"model": {"rounds": 1, "min_run_time": 0.01, family: {"variants": [variant], "image_sizes": [64]}}},
    })  # fmt: skip
    run = run_groups("t", suite, cx.plan("t", suite), tmp_path, **QUIET)
    rows = run.rows()
    by = {(r["pass"], r["metric"]): r for r in rows}
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows if r["error"]]
    want = {"params", "flops_torch", "peak_mib", "peak_mib_profiler", "latency_ms", "images_per_s"}
    assert {m for p, m in by if p == "fwd+bwd"} == want
    extra = {"gflops_ultralytics"} if family == "yolo" else set()  # Ultralytics' thop figure beside ours
    assert {m for p, m in by if p == "fwd"} == want | {"macs_fvcore"} | extra
    assert all(r["image_size"] == 64 and r["tokens"] == max(r["attn_tokens"]) for r in rows)
    assert by["fwd+bwd", "flops_torch"]["value"] > 2 * by["fwd", "flops_torch"]["value"]
    assert by["fwd+bwd", "peak_mib"]["value"] > by["fwd", "peak_mib"]["value"] > 0
    assert by["fwd", "peak_mib_profiler"]["value"] >= by["fwd", "peak_mib"]["value"] * 0.9


def test_model_weights_come_from_the_seed():
    torch.manual_seed(0)
    a = cx.build_model("timm", "tost_tiny_12_p16_224", 32)
    torch.manual_seed(0)
    b = cx.build_model("timm", "tost_tiny_12_p16_224", 32)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_attention_tokens_count_attention_layers_only():
    """A block without a mixer reports no tokens; a block with n mixers reports n (one per layer)."""
    import tssa.ultralytics as tu

    x = torch.randn(1, 64, 5, 5)
    assert cx.attention_tokens(tu.C2NoAttn(64, 64, n=2).eval(), x) == []
    assert cx.attention_tokens(tu.C2TSSA(64, 64, n=2).eval(), x) == [25, 25]
    from ultralytics.nn.modules import C2PSA

    assert cx.attention_tokens(C2PSA(128, 128, n=2).eval(), x.repeat(1, 2, 1, 1)) == [25, 25]  # stock agrees


_FAULTS = """
import resource, sys, torch
from benchmarks.core.measure import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() is not None and keep_freed_memory() == keep_freed_memory()
faults = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(16 << 20).fill_(1.0)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def test_keep_freed_memory_makes_a_repeated_large_output_reuse_its_pages():
    """glibc maps a 64 MiB block afresh per allocation (one page fault per 4 KiB page on every call, the
    cost that steps the per-token time up past 32 MiB); with the heap kept, once the heap has settled (a
    few calls), the pages are reused. Counted in page faults (a child process per setting: the setting
    is process-wide), not in time."""
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator setting exists for glibc only")
    faults = {
        mode: [int(f) for f in subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                                              check=True).stdout.split()]
        for mode in ("default", "keep")
    }  # fmt: skip
    pages = (64 << 20) // 4096
    warm = {mode: sum(f < pages // 10 for f in fs[-15:]) for mode, fs in faults.items()}  # calls served warm
    assert warm["default"] == 0, faults  # every call maps and faults in fresh pages
    assert warm["keep"] >= 12, faults  # the kept heap serves them warm (it settles within about 7 calls)


def test_cpu_timings_record_the_allocator_setting():
    import platform

    from benchmarks.core.measure import HEAP_REUSE

    t = cx.time_interleaved({"ok": lambda: None}, device="cpu", rounds=1, min_run_time=0.01, threads=1)["ok"]
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert t.allocator == (HEAP_REUSE if glibc else None)
    assert t.provenance() == ({"allocator": HEAP_REUSE} if glibc else {})
