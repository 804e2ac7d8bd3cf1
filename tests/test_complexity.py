"""Complexity sweeps: FLOP counters against the formulas, memory measurement, rows, slopes, CLI."""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch

from benchmarks import complexity as cx
from benchmarks.__main__ import main
from benchmarks.flops import analytic_counts, count_flops_torch, count_macs_fvcore
from benchmarks.store import ResultStore, make_row, validate_row

SHAPES = [(1, 16, 32, 4), (2, 33, 48, 4)]  # (B, N, C, H), an odd N included
OPS = ["floor", "softmax", "sdpa", "tssa:naive"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _case(variant, shape, pass_="fwd"):
    b, n, c, h = shape
    return cx.OpCase(variant, n, b, c, h, "float32", "cpu", pass_)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", OPS)
def test_flop_counters_agree_with_the_formula_forward(variant, shape):
    b, n, c, h = shape
    want = analytic_counts(variant, batch=b, tokens=n, dim=c, heads=h)
    fn, args, step = cx.build_operator(_case(variant, shape))
    assert count_flops_torch(step) == want["flops"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's tracer warnings
        macs, unsupported = count_macs_fvcore(fn, *args)
    assert unsupported == {}
    assert macs == want["fvcore_macs"]


def test_analytic_formulas_by_hand():
    # B=1, N=4, C=8, H=2, D=4: QK^T and PV are 2 * 2*4*4*4 MACs; scale + softmax 6 per score.
    sd = analytic_counts("sdpa", batch=1, tokens=4, dim=8, heads=2)
    assert (sd["macs"], sd["elementwise"], sd["flops"]) == (256, 192, 704)
    fl = analytic_counts("floor", batch=1, tokens=4, dim=8, heads=2)
    assert (fl["macs"], fl["flops"]) == (2 * 4 * 64, 4 * 4 * 64)
    ts = analytic_counts("tssa:lean", batch=1, tokens=4, dim=8, heads=2)
    e, t, s = 32, 8, 8
    assert (ts["macs"], ts["elementwise"]) == (e, 8 * e + 9 * t + 4 * s + 2)
    # TSSA is linear in N, attention quadratic
    big = {v: analytic_counts(v, batch=1, tokens=4096, dim=384, heads=8)["flops"] for v in ("tssa", "sdpa")}
    small = {v: analytic_counts(v, batch=1, tokens=1024, dim=384, heads=8)["flops"] for v in ("tssa", "sdpa")}
    assert big["tssa"] / small["tssa"] == pytest.approx(4, rel=1e-3)
    assert big["sdpa"] / small["sdpa"] == pytest.approx(16, rel=1e-3)
    with pytest.raises(ValueError, match="no analytic formula"):
        analytic_counts("flash", batch=1, tokens=4, dim=8, heads=2)


def test_backward_counts_sdpa_equals_materialised_and_floor_is_three_forwards():
    shape = (1, 24, 32, 4)
    counts = {}
    for v in ("sdpa", "softmax", "floor"):
        counts[v] = count_flops_torch(cx.build_operator(_case(v, shape, "fwd+bwd"))[2])
    assert counts["sdpa"] == counts["softmax"]
    fwd = analytic_counts("softmax", batch=1, tokens=24, dim=32, heads=4)
    assert counts["softmax"] > 2 * fwd["flops"]  # backward adds four products to the forward's two
    assert counts["floor"] == 3 * analytic_counts("floor", batch=1, tokens=24, dim=32, heads=4)["flops"]


def test_flop_counter_refuses_inference_mode():
    with torch.inference_mode(), pytest.raises(ValueError, match="inference_mode"):
        count_flops_torch(lambda: None)


def test_memory_measures_a_known_allocation_exactly():
    x = torch.randn(64, 64)

    def step():
        y = torch.empty(1000, dtype=torch.float32)  # 4000 bytes
        z = x.view(-1)  # a view of an existing input: 0 extra bytes
        del y, z

    assert cx.measure_peak_bytes(step, "cpu") == 4000
    assert cx.profiler_peak_bytes(step) == 4000

    def two():
        a = torch.empty(256, dtype=torch.float64)  # 2048 bytes
        b = torch.empty(512, dtype=torch.float32)  # 2048 bytes, both alive
        del a, b

    assert cx.measure_peak_bytes(two, "cpu") == 4096
    assert cx.profiler_peak_bytes(two) == 4096


@pytest.mark.parametrize("variant", ["tssa:naive", "softmax", "floor"])
def test_tracker_and_profiler_agree_on_operators(variant):
    for pass_ in ("fwd", "fwd+bwd"):
        _, _, step = cx.build_operator(_case(variant, (1, 128, 64, 4), pass_))
        step()  # warm-up
        tracked = cx.measure_peak_bytes(step, "cpu")
        # the profiler also sees 0-dim scalars that Python numbers become outside the dispatcher
        assert 0 <= cx.profiler_peak_bytes(step) - tracked <= 64
        # counting FLOPs inside the memory measurement changes neither number
        assert cx.peak_and_flops(step, "cpu") == (tracked, count_flops_torch(step))


def test_softmax_memory_is_quadratic_and_tssa_linear():
    peaks = {}
    for v in ("softmax", "tssa:naive"):
        for n in (256, 512):
            _, _, step = cx.build_operator(_case(v, (1, n, 64, 4)))
            peaks[v, n] = cx.measure_peak_bytes(step, "cpu")
    assert peaks["softmax", 512] / peaks["softmax", 256] > 3.5
    assert peaks["tssa:naive", 512] / peaks["tssa:naive", 256] == pytest.approx(2, rel=0.05)
    assert cx.predicted_peak_bytes(_case("softmax", (1, 512, 64, 4))) >= peaks["softmax", 512]


def _tiny_suite(tmp_budget_gib=1.0):
    return {
        "name": "t",
        "device": "cpu",
        "threads": 1,
        "seed": 0,
        "memory_budget_gib": tmp_budget_gib,
        "timeout_s": 60,
        "complexity": {
            "operator": {
                "tokens": [64, 128, 256],
                "batch": 1,
                "dim": 32,
                "heads": 4,
                "dtype": "float32",
                "passes": ["fwd", "fwd+bwd"],
                "variants": ["tssa:naive", "sdpa", "softmax", "floor"],
                "rounds": 2,
                "min_run_time": 0.01,
                "profile_max_tokens": 128,
                "fit_min_tokens": 64,
            }
        },
    }


def test_three_point_sweep_writes_well_formed_rows_and_resumes(tmp_path):
    # softmax at N=256 needs 2 * 4 * 256^2 * 4 B = 2 MiB of scores: over a 1.5 MiB budget -> error row
    suite = _tiny_suite(tmp_budget_gib=1.5 / 1024)
    store = ResultStore.for_suite("t", tmp_path)
    rows = cx.run_operator_sweep("t", suite, store, log=lambda *_: None)
    assert rows == store.rows() and rows
    for r in rows:
        validate_row(r)
        assert r["kind"] == "complexity" and r["suite"] == "t" and r["provenance"]["threads"] == 1
    cells = {}
    for r in rows:
        cells.setdefault(r["cell"], []).append(r)
    assert len(cells) == 4 * 3 * 2
    for cell, rs in cells.items():
        metrics = {r["metric"] for r in rs}
        if "softmax" in cell and cell.endswith("N256"):
            assert len(rs) == 1 and "memory budget" in rs[0]["error"] and rs[0]["value"] is None
            continue
        assert all(r["error"] is None for r in rs), cell
        want = {"flops_analytic", "macs_analytic", "flops_torch", "peak_mib", "latency_ms", "tokens_per_s"}
        want |= {"macs_fvcore"} if "/fwd/" in cell else set()
        want |= {"peak_mib_profiler"} if rs[0]["tokens"] <= 128 else set()
        assert metrics == want, cell
        by = {r["metric"]: r for r in rs}
        assert by["latency_ms"]["value"] > 0 and by["latency_ms"]["iqr_ms"] >= 0
        assert by["tokens_per_s"]["value"] == pytest.approx(
            rs[0]["tokens"] / (by["latency_ms"]["value"] / 1e3)
        )
    # FLOPs and memory are deterministic: a second measurement of a cell gives identical numbers
    again = cx.run_operator_cell(
        "tssa:naive", tokens=128, dim=32, heads=4, pass_="fwd+bwd", min_run_time=0.01
    )
    first = {r["metric"]: r["value"] for r in cells["op/tssa:naive/fwd+bwd/cpu-float32-B1-C32-H4/N128"]}
    for m in ("flops_torch", "peak_mib", "peak_mib_profiler", "flops_analytic"):
        assert {r["metric"]: r["value"] for r in again}[m] == first[m]
    assert cx.run_operator_sweep("t", suite, store, log=lambda *_: None) == []  # resume: nothing left


def test_fvcore_on_a_custom_autograd_function_is_an_error_row_not_zero():
    rows = cx.run_operator_cell("tssa:lean", tokens=64, dim=32, heads=4, pass_="fwd", min_run_time=0.01)
    fv = [r for r in rows if r["metric"] == "macs_fvcore"]
    assert len(fv) == 1 and fv[0]["value"] is None and "custom autograd function" in fv[0]["error"]
    assert all(r["error"] is None for r in rows if r["metric"] != "macs_fvcore")


def test_a_failing_cell_becomes_an_error_row(tmp_path, monkeypatch):
    real = cx.build_operator

    def boom(case, seed=0):
        if case.variant == "sdpa" and case.tokens == 128:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
        return real(case, seed)

    monkeypatch.setattr(cx, "build_operator", boom)
    suite = _tiny_suite()
    suite["complexity"]["operator"].update(tokens=[64, 128], passes=["fwd"], variants=["sdpa", "floor"])
    rows = cx.run_operator_sweep("t", suite, None, log=lambda *_: None)
    err = [r for r in rows if r["error"]]
    assert len(err) == 1 and err[0]["error"].startswith("out of memory") and err[0]["tokens"] == 128
    assert {r["variant"] for r in rows if r["metric"] == "latency_ms"} == {"sdpa", "floor"}


def test_calls_past_the_time_limit_become_timeout_rows(monkeypatch):
    suite = _tiny_suite()
    suite["timeout_s"] = 1e-7  # every first call is over it
    suite["complexity"]["operator"].update(tokens=[32], passes=["fwd"], variants=["floor"])
    rows = cx.run_operator_sweep("t", suite, None, log=lambda *_: None)
    assert len(rows) == 1 and rows[0]["error"].startswith("timeout: ") and rows[0]["value"] is None

    def stuck(*args, **kwargs):
        raise cx.CellTimeout("timeout: still running after 30 s (the guard of the per-call limit)")

    monkeypatch.setattr(cx, "time_samples", stuck)
    suite["timeout_s"] = 60
    rows = cx.run_operator_sweep("t", suite, None, log=lambda *_: None)
    assert (
        len(rows) == 1 and rows[0]["error"].startswith("timeout: still running") and rows[0]["value"] is None
    )


def test_slow_quadratic_cells_are_skipped_from_their_trend():
    suite = _tiny_suite()
    suite["timeout_s"] = 1.0
    ctx = cx._op_context("t", "cpu", 1, suite["complexity"]["operator"], 1.0, 1.0, 0)
    ctx["times"][("sdpa", "fwd")] = (1024, 0.5)  # 0.5 s at N=1024 -> ~2 s at N=2048
    rows = ctx["prepare"](_case("sdpa", (1, 2048, 32, 4)))
    assert isinstance(rows, list) and rows[0]["error"].startswith("timeout")


def test_slopes_of_synthetic_power_laws():
    n = [256, 512, 1024, 2048, 4096]
    assert cx.fit_slope(n, [3e-6 * x for x in n]) == pytest.approx(1.0, abs=1e-9)
    assert cx.fit_slope(n, [7e-9 * x**2 for x in n]) == pytest.approx(2.0, abs=1e-9)
    assert cx.fit_slope(n, [5.0] * 5) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="two distinct"):
        cx.fit_slope([8], [1.0])
    with pytest.raises(ValueError, match="positive"):
        cx.fit_slope([8, 16], [0.0, 1.0])


def test_crossover_of_synthetic_curves():
    n = [256, 512, 1024, 2048, 4096]
    lin = [x / 1000 for x in n]  # t = N / 1000
    quad = [x * x / 1e6 for x in n]  # t = N^2 / 1e6: equal at N = 1000
    c = cx.crossover(n, lin, quad)
    assert c["where"] == "inside" and c["n"] == pytest.approx(1000, rel=1e-9)
    assert cx.crossover(n, [t / 100 for t in quad], quad) == {"n": 256.0, "where": "below"}
    assert cx.crossover(n, [t * 2 for t in quad], quad) == {"n": None, "where": "above"}


def _synthetic_rows():
    rows = []
    for n in (256, 512, 1024, 2048, 4096):
        for variant, t, m in (("tssa:lean", n / 1000, 0.01 * n), ("sdpa", n * n / 1e6, 0.02 * n)):
            for pass_ in ("fwd", "fwd+bwd"):
                k = 2 if pass_ == "fwd+bwd" else 1
                for metric, value in (("latency_ms", k * t), ("peak_mib", k * m)):
                    rows.append(
                        make_row("t", "complexity", f"op/{variant}/{pass_}/N{n}", variant, metric=metric,
                                 value=value, unit="", tokens=n, pass_=pass_, prov={}, level="operator")
                    )  # fmt: skip
    rows.append(make_row("t", "complexity", "op/sdpa/fwd/N8192", "sdpa", metric="error", value=None,
                         unit="", tokens=8192, pass_="fwd", prov={}, error="out of memory", level="operator"))  # fmt: skip
    return rows


def test_derive_recovers_slopes_and_crossover(tmp_path):
    store = ResultStore(tmp_path / "t.jsonl", suite="t")
    store.append(_synthetic_rows())
    d = cx.derive(store.load(), fit_min_tokens=512)
    assert d["slopes"][("tssa:lean", "fwd")]["time"] == pytest.approx(1.0, abs=1e-6)
    assert d["slopes"][("sdpa", "fwd+bwd")]["time"] == pytest.approx(2.0, abs=1e-6)
    assert d["slopes"][("sdpa", "fwd")]["memory"] == pytest.approx(1.0, abs=1e-6)
    assert d["slopes"][("sdpa", "fwd")]["fit"] == [512, 4096]
    c = d["crossover"][("tssa:lean", "fwd")]
    assert c["n"] == pytest.approx(1000, rel=1e-6) and c["n_max"] == 4096
    assert c["speedup_at_n_max"] == pytest.approx(4.096, rel=1e-9)  # (4096^2 / 1e6) / (4096 / 1000)
    md = cx.derived_markdown(d, "python -m benchmarks run --suite t")
    assert "| tssa:lean | fwd | 1.00 | 1.00 |" in md and "N ~ 1000" in md


def test_cli_derive_writes_json_and_readme_block(tmp_path, capsys):
    store = ResultStore.for_suite("cpu", tmp_path)
    store.append([{**r, "suite": "cpu"} for r in _synthetic_rows()])
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- complexity:cpu:begin -->\nold\n<!-- complexity:cpu:end -->\ntail\n")
    assert main(["derive", "--suite", "cpu", "--results-dir", str(tmp_path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and "N ~ 1000" in text and text.endswith("<!-- complexity:cpu:end -->\ntail\n")
    derived = json.loads((tmp_path / "cpu-derived.json").read_text())
    assert math.isclose(derived["slopes"]["sdpa|fwd"]["time"], 2.0, abs_tol=1e-6)
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    with pytest.raises(SystemExit) as exc:
        main(["derive", "--suite", "cpu", "--results-dir", str(tmp_path), "--readme", str(bare)])
    assert exc.value.code == 2 and bare.read_text() == "no markers\n"
    assert "complexity:cpu:begin" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, match",
    [
        (["run", "--suite", "nope"], "unknown suite"),
        (["derive", "--suite", "cpu", "--results-dir", "{tmp}"], "no rows"),
        (["run", "--suite", "cpu", "--tag", "a/b"], "--tag"),
        pytest.param(
            ["run", "--suite", "gpu", "--results-dir", "{tmp}"],
            "no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA"),
        ),
    ],
)
def test_cli_bad_input_exits_with_a_clear_error(argv, match, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and match in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_model_cells_without_the_integration_become_error_rows(monkeypatch):
    def missing(family, variant, image_size):
        raise ImportError(f"No module named 'tssa.{family}'")

    monkeypatch.setattr(cx, "build_model", missing)
    suite = {
        "name": "t", "device": "cpu", "threads": 1, "seed": 0, "memory_budget_gib": 1, "timeout_s": 10,
        "complexity": {"model": {"passes": ["fwd"], "batch": 1, "rounds": 1, "min_run_time": 0.01,
                                 "yolo": {"variants": ["yolo11n-tssa"], "image_sizes": [64, 128]},
                                 "timm": None}},
    }  # fmt: skip
    rows = cx.run_model_sweep("t", suite, None, log=lambda *_: None)
    assert len(rows) == 2 and all("integration not importable" in r["error"] for r in rows)
    assert [r["image_size"] for r in rows] == [64, 128]


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


def test_yolo_p5_attention_sees_the_documented_tokens():
    import importlib.util

    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("ultralytics is not installed")
    try:
        model = cx.build_model("yolo", "yolo11n", 64)
    except ImportError as exc:  # the YOLO11 integration has not landed in this checkout
        pytest.skip(str(exc))
    assert cx.attention_tokens(model.eval(), torch.randn(1, 3, 64, 64)) == [4]  # 2x2 at P5/32


def test_attention_tokens_count_attention_layers_only():
    """A block without a mixer reports no tokens; a block with n mixers reports n (one per layer)."""
    pytest.importorskip("ultralytics")
    tu = pytest.importorskip("tssa.ultralytics")
    x = torch.randn(1, 64, 5, 5)
    assert cx.attention_tokens(tu.C2NoAttn(64, 64, n=2).eval(), x) == []
    assert cx.attention_tokens(tu.C2TSSA(64, 64, n=2).eval(), x) == [25, 25]
    from ultralytics.nn.modules import C2PSA

    assert cx.attention_tokens(C2PSA(128, 128, n=2).eval(), x.repeat(1, 2, 1, 1)) == [25, 25]  # stock agrees


def test_variants_expand_to_usable_impls():
    got = cx.expand_variants(["tssa:*", "sdpa", "sdpa"], "cpu", "float32")
    assert "tssa:naive" in got and "tssa:lean" in got and got.count("sdpa") == 1
    assert all(v == "sdpa" or v.startswith("tssa:") for v in got)
    with pytest.raises(ValueError, match="unknown operator variant"):
        cx.build_operator(cx.OpCase("flash", 8, 1, 8, 2))


def test_suite_copy_is_not_mutated_by_a_run(tmp_path):
    suite = _tiny_suite()
    suite["complexity"]["operator"].update(tokens=[32], passes=["fwd"], variants=["floor"])
    before = copy.deepcopy(suite)
    cx.run_operator_sweep("t", suite, None, log=lambda *_: None)
    assert suite == before


def test_model_rows_give_a_latency_table_and_slope_against_tokens(tmp_path):
    rows = []
    for size in (320, 640, 1280):
        tokens = (size // 32) ** 2  # P5 tokens: 100, 400, 1600
        cell = f"model/yolo/yolo11n-tssa/fwd/cpu-B1/S{size}"
        common = dict(image_size=size, tokens=tokens, pass_="fwd", prov={}, level="model", family="yolo")
        rows.append(make_row("t", "complexity", cell, "yolo11n-tssa", metric="latency_ms", value=tokens / 10,
                             unit="ms", **common))  # fmt: skip
        rows.append(make_row("t", "complexity", cell, "yolo11n-tssa", metric="flops_torch", value=2e9 * tokens,
                             unit="FLOPs", **common))  # fmt: skip
    store = ResultStore(tmp_path / "t.jsonl", suite="t")
    store.append(rows + _synthetic_rows())
    d = cx.derive(store.load(), fit_min_tokens=512)
    m = d["models"][("yolo", "yolo11n-tssa", "fwd")]
    assert m["sizes"] == [320, 640, 1280] and m["tokens"] == [100, 400, 1600]
    assert m["time_slope_vs_tokens"] == pytest.approx(1.0, abs=1e-9)
    assert m["gflops"] == pytest.approx([200.0, 800.0, 3200.0])
    md = cx.derived_markdown(d, "cmd")
    assert "| yolo11n-tssa | fwd | 10.0 (100) | 40.0 (400) | 160.0 (1600) | 1.00 |" in md
    assert not any(v.startswith("yolo") for v, _ in d["slopes"])  # model rows stay out of operator slopes


@pytest.mark.parametrize("family, variant", [("yolo", "yolo11n-tssa"), ("timm", "tost_tiny_12_p16_224")])
def test_real_model_cell_records_tokens_flops_memory_and_time(family, variant):
    try:
        cx.build_model(family, variant, 64)
    except ImportError as exc:  # the integration has not landed in this checkout
        pytest.skip(str(exc))
    suite = {
        "name": "t", "device": "cpu", "threads": 1, "seed": 0, "memory_budget_gib": 1, "timeout_s": 60,
        "complexity": {"model": {"passes": ["fwd", "fwd+bwd"], "batch": 1, "rounds": 1, "min_run_time": 0.01,
                                 "yolo": None, "timm": None}},
    }  # fmt: skip
    suite["complexity"]["model"][family] = {"variants": [variant], "image_sizes": [64]}
    rows = cx.run_model_sweep("t", suite, None, log=lambda *_: None)
    by = {(r["pass"], r["metric"]): r for r in rows}
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows if r["error"]]
    want = {"flops_torch", "peak_mib", "latency_ms", "images_per_s"}
    assert {m for p, m in by if p == "fwd+bwd"} == want and {m for p, m in by if p == "fwd"} == want | {
        "macs_fvcore"
    }
    assert all(
        r["image_size"] == 64 and r["tokens"] == max(by["fwd", "flops_torch"]["attn_tokens"]) for r in rows
    )
    assert by["fwd+bwd", "flops_torch"]["value"] > 2 * by["fwd", "flops_torch"]["value"]
    assert by["fwd+bwd", "peak_mib"]["value"] > by["fwd", "peak_mib"]["value"] > 0
