"""Paths no other test reached: the slope interval behind the linear-in-N verdicts, a third-party
TSSA implementation, dropout on the causal path, ToST under timm's FX tools, layer pruning and
parameter groups, the ``runs`` and ``publish`` subcommands, and the README's model tables."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.__main__ import main
from benchmarks.core.store import Run, make_row
from tssa import TokenStatisticsAttention
from tssa.ops import ImplSpec, available_impls, register_impl, resolve_impl, tssa
from tssa.ops.naive import tssa_causal_naive, tssa_naive


# ------------------------------------------------------------------------------------- slope_interval
def _power_law(tokens, k, noise_sd, seed):
    rng = np.random.default_rng(seed)
    return 3.0 * np.asarray(tokens, dtype=float) ** k * np.exp(rng.normal(0.0, noise_sd, len(tokens)))


@pytest.mark.parametrize("confidence", [0.95, 0.90])
def test_slope_interval_is_the_theil_sen_slope_and_its_interval(confidence):
    st = pytest.importorskip("scipy.stats")
    from benchmarks.studies.complexity.report import slope_interval

    tokens = [16384, 20480, 24576, 32768, 40960, 49152, 65536]
    values = _power_law(tokens, 1.0, 0.03, seed=3)
    k, lo, hi = slope_interval(tokens, values, confidence)
    ref = st.theilslopes(np.log(values), np.log(tokens), alpha=confidence)
    assert (k, lo, hi) == (
        pytest.approx(ref.slope, rel=1e-12),
        pytest.approx(ref.low_slope, rel=1e-12),
        pytest.approx(ref.high_slope, rel=1e-12),
    )
    assert lo < 1.0 < hi  # the true slope lies in the interval
    assert 0.01 < hi - lo < 0.5  # an interval of noise sd 0.03 over 7 sizes: neither empty nor vacuous


def test_slope_interval_covers_the_true_slope_at_least_at_its_nominal_rate():
    """Over 400 seeded data sets of 7 sizes the 95% interval holds the true slope at least about 95% of
    the time (the rank interval of Theil-Sen is conservative at small n), and its 90% interval is
    narrower than its 95% one."""
    pytest.importorskip("scipy")
    from benchmarks.studies.complexity.report import slope_interval

    tokens = [16384, 20480, 24576, 32768, 40960, 49152, 65536]
    hits, narrower = 0, 0
    for seed in range(400):
        values = _power_law(tokens, 2.0, 0.1, seed)
        _, lo, hi = slope_interval(tokens, values)
        _, lo90, hi90 = slope_interval(tokens, values, 0.90)
        hits += lo <= 2.0 <= hi
        narrower += (hi90 - lo90) <= (hi - lo)
    assert 0.93 <= hits / 400 <= 1.0, hits
    assert narrower == 400


def test_slope_interval_is_robust_to_one_size_off_the_line():
    """One size measured 40% slow (a burst of the machine) moves the least-squares slope by about
    0.08 over these 7 sizes; the Theil-Sen slope stays within 0.02 of the true one."""
    pytest.importorskip("scipy")
    from benchmarks.studies.complexity.report import slope_interval

    tokens = [16384, 20480, 24576, 32768, 40960, 49152, 65536]
    values = _power_law(tokens, 1.0, 0.0, seed=0)
    values[-1] *= 1.4
    k, _, _ = slope_interval(tokens, values)
    ls = np.polyfit(np.log(tokens), np.log(values), 1)[0]
    assert abs(k - 1.0) < 0.02 and ls - 1.0 > 0.05, (k, ls)


def test_slope_interval_of_two_sizes_is_the_secant_without_an_interval():
    from benchmarks.studies.complexity.report import slope_interval

    k, lo, hi = slope_interval([100, 400], [2.0, 32.0])
    assert k == pytest.approx(2.0) and math.isnan(lo) and math.isnan(hi)


# ------------------------------------------------------------------------------ third-party impls
TOY = "toy_reference"


@pytest.fixture
def toy_impl():
    """A third-party implementation (the reference, counted, non-causal only), unregistered after."""
    import tssa.ops as ops

    calls = []

    def fn(w, temperature, bias, causal):
        calls.append(tuple(w.shape))
        return tssa_naive(w, temperature, bias)

    assert TOY not in available_impls()
    register_impl(ImplSpec(TOY, fn, lambda w, causal: not causal, priority=-100))
    try:
        yield calls
    finally:
        ops._IMPLS.pop(TOY, None)
    assert TOY not in available_impls()


def test_registered_impl_is_selectable_by_name_and_gives_the_reference(toy_impl, monkeypatch):
    g = torch.Generator().manual_seed(0)
    w, tau = torch.randn(2, 3, 17, 8, generator=g), 0.5 + torch.rand(3, generator=g)
    assert TOY in available_impls()
    assert resolve_impl(TOY, w) == TOY
    torch.testing.assert_close(tssa(w, tau, impl=TOY), tssa(w, tau, impl="naive"), rtol=0, atol=0)
    assert toy_impl == [(2, 3, 17, 8)]  # its function ran, not a built-in one
    assert resolve_impl("auto", w) != TOY  # lowest priority: auto keeps choosing the built-ins
    monkeypatch.setenv("TSSA_IMPL", TOY)
    assert resolve_impl("auto", w) == TOY  # ...unless the variable names it
    assert resolve_impl("auto", w, causal=True) != TOY  # where it cannot run, auto chooses as if unset
    monkeypatch.delenv("TSSA_IMPL")
    with pytest.raises(ValueError, match=rf"TSSA impl '{TOY}' cannot run .*causal=True"):
        tssa(w, tau, causal=True, impl=TOY)
    layer = TokenStatisticsAttention(24, num_heads=3, impl=TOY).eval()  # a module selects it by name
    layer(torch.randn(2, 5, 24))
    assert toy_impl[-1] == (2, 3, 5, 8)


# ---------------------------------------------------------------------------- dropout, causal path
def _seeded(layer, x, seed):
    torch.manual_seed(seed)
    return layer(x)


def test_causal_dropout_changes_the_output_in_training_and_stays_causal():
    torch.manual_seed(0)
    layer = TokenStatisticsAttention(32, num_heads=4, causal=True, attn_drop=0.3)
    x = torch.randn(2, 24, 32)
    x_late = x.clone()
    x_late[:, 15:] = 10 * torch.randn(2, 9, 32)  # a different future from token 15 on
    y_eval = layer.eval()(x)
    layer.train()
    y = _seeded(layer, x, 7)
    assert not torch.allclose(y, y_eval)  # dropout acts in training
    torch.testing.assert_close(_seeded(layer, x, 7), y, rtol=0, atol=0)  # and follows the seed
    y_late = _seeded(layer, x_late, 7)
    torch.testing.assert_close(y_late[:, :15], y[:, :15], rtol=1e-6, atol=1e-7)  # the past ignores the future
    assert not torch.allclose(y_late[:, 15:], y[:, 15:])


def test_causal_dropout_drops_gate_entries_and_rescales_the_rest():
    """On the core: ``Y = -Pi W g`` with dropout on the causal gate ``g`` (B, H, N, D): dropped entries
    are exactly 0, the others are the eval values over ``1 - p``; still causal under the same seed."""
    g = torch.Generator().manual_seed(1)
    w, tau = torch.randn(2, 4, 40, 16, generator=g), 0.5 + torch.rand(4, generator=g)
    p = 0.4
    y_eval = tssa_causal_naive(w, tau)
    torch.manual_seed(3)
    y = tssa(w, tau, causal=True, attn_drop=p)
    dropped = y == 0
    assert 0.35 < dropped.float().mean().item() < 0.45
    torch.testing.assert_close(y[~dropped], y_eval[~dropped] / (1 - p), rtol=1e-5, atol=1e-7)
    w2 = w.clone()
    w2[:, :, 30:] = torch.randn(2, 4, 10, 16, generator=g)
    torch.manual_seed(3)
    y2 = tssa(w2, tau, causal=True, attn_drop=p)
    torch.testing.assert_close(y2[:, :, :30], y[:, :, :30], rtol=0, atol=0)


# ------------------------------------------------------------------------------------- ToST in timm
TOST = "tost_tiny_12_p16_224"  # the smallest ToST
IMG = 64  # 4 x 4 patch tokens


def _tost(**kwargs):
    timm = pytest.importorskip("timm")
    import tssa.timm  # noqa: F401  (registers the family)

    torch.manual_seed(0)
    return timm.create_model(TOST, num_classes=5, img_size=IMG, **kwargs).eval()


def test_tost_traces_with_timm_fx_and_gives_the_models_output():
    from timm.models import create_feature_extractor

    model = _tost()
    x = torch.randn(2, 3, IMG, IMG)
    fx = create_feature_extractor(model, return_nodes={"blocks.3": "block3", "head": "logits"})
    assert isinstance(fx, torch.fx.GraphModule)
    # the mixers stay leaves of the graph (timm's register_notrace_module): one call each, no inner ops
    calls = {n.target for n in fx.graph.nodes if n.op == "call_module"}
    assert "blocks.0.attn" in calls and not any(c.startswith("blocks.0.attn.") for c in calls)
    with torch.no_grad():
        out = fx(x)
        ref = model(x)
        (block3,) = model.forward_intermediates(x, indices=[3], output_fmt="NLC", intermediates_only=True)
    torch.testing.assert_close(out["logits"], ref, rtol=0, atol=0)
    torch.testing.assert_close(out["block3"], block3, rtol=0, atol=0)
    feats = _tost(features_only=True, feature_cls="fx", out_indices=(1, 3))
    with torch.no_grad():
        maps = feats(x)
    want = model.forward_intermediates(x, indices=[1, 3], output_fmt="NLC", intermediates_only=True)
    assert len(maps) == 2
    for got, exp in zip(maps, want):
        torch.testing.assert_close(got, exp, rtol=0, atol=0)


@pytest.mark.parametrize("prune_head", [True, False], ids=["head", "keep_head"])
def test_prune_intermediate_layers_keeps_the_requested_blocks(prune_head):
    model = _tost()
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        want = model.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
    take = model.prune_intermediate_layers([1, 3], prune_head=prune_head)
    assert take == [1, 3] and len(model.blocks) == 4
    with torch.no_grad():
        got = model.forward_intermediates(x, indices=take, intermediates_only=True)
        y = model(x)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    names = set(dict(model.named_parameters()))
    if prune_head:  # no classifier, no class token: the unpooled map of the last kept block
        assert y.shape == (2, IMG // 16, IMG // 16, 192) and model.num_classes == 0
        assert not any(n.startswith(("cls_token", "cls_attn_blocks", "head")) for n in names)
        torch.testing.assert_close(y, got[-1].permute(0, 2, 3, 1), rtol=0, atol=0)
    else:
        assert y.shape == (2, 5) and torch.isfinite(y).all()
        assert "cls_token" in names and "head.weight" in names
    assert not any(n.startswith("blocks.4.") for n in names)
    with pytest.raises(ValueError, match="out of range"):
        model.prune_intermediate_layers([5])  # only 4 blocks left


def test_group_matcher_assigns_every_parameter_to_one_ordered_group():
    from timm.models import group_parameters

    model = _tost()
    names = [n for n, _ in model.named_parameters()]
    matcher = model.group_matcher()
    patterns = [matcher["stem"], matcher["blocks"], *(p for p, _ in matcher["cls_attn_blocks"])]
    # every parameter but the classifier (timm's convention: unmatched, it forms the last group) matches
    unmatched = [n for n in names if not any(re.match(p, n) for p in patterns)]
    assert unmatched == ["head.weight", "head.bias"]
    groups = group_parameters(model, matcher)
    members = [n for g in groups.values() for n in g]
    assert sorted(members) == sorted(names) and len(members) == len(set(members))  # each exactly once
    order = list(groups.values())
    assert (
        "cls_token" in order[0]
        and "patch_embed.proj.0.0.weight" in order[0]
        and "pos_embeder.token_projection.weight" in order[0]
    )
    for i in range(12):
        assert all(n.startswith(f"blocks.{i}.") for n in order[1 + i]), order[1 + i][:3]
    assert "norm.weight" in order[14] and "cls_attn_blocks.1.gamma1" in order[14]  # norm joins the last block
    assert order[-1] == ["head.weight", "head.bias"]
    assert len(groups) == 16


# ------------------------------------------------------------------------------- runs and publish
def _local_run(results, config, complete=True):
    run = Run.create(results / "local" / "demo", "demo", config)
    a = run.start_cell("c1")
    run.finish_cell("c1", a, [make_row("demo", "complexity", "c1", "sdpa", metric="latency_ms", value=1.5)])
    if complete:
        run.mark("complete")
    return run


def _runs_lines(capsys, results, *extra):
    assert main(["runs", "--results-dir", str(results), *extra]) == 0
    return capsys.readouterr().out.splitlines()


def _error_line(capsys, argv):
    """The one error line and exit status of a refused command."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(err) == 1, err
    return exc.value.code, err[0]


def test_runs_lists_and_publish_copies_the_latest_complete_local_run(tmp_path, capsys):
    res = tmp_path / "res"
    done = _local_run(res, {"name": "demo", "v": 1})
    busy = _local_run(res, {"name": "demo", "v": 2}, complete=False)
    lines = _runs_lines(capsys, res)
    assert len(lines) == 2
    by_id = {ln.split()[1]: ln.split() for ln in lines}
    assert by_id[done.id][:4] == ["demo", done.id, "local", "complete"]
    assert by_id[busy.id][:4] == ["demo", busy.id, "local", "running"]
    assert all(f"[{done.record['machine']['id']}]" in ln and "{'finished': 1}" in ln for ln in lines)

    assert main(["publish", "--suite", "demo", "--results-dir", str(res)]) == 0
    target = res / "demo" / done.id
    assert capsys.readouterr().out.strip() == (
        f"published {done.id} -> {target} (commit it to make it part of the project's results)"
    )
    assert json.loads((target / "run.json").read_text()) == done.record
    assert (target / "log.jsonl").read_bytes() == done.log_path.read_bytes()
    assert not (res / "demo" / busy.id).exists()  # the running one is not published
    lines = _runs_lines(capsys, res, "--suite", "demo")
    assert len(lines) == 2  # the published copy of a local run is listed once, as published
    assert {ln.split()[1]: ln.split()[2] for ln in lines} == {done.id: "published", busy.id: "local"}

    code, err = _error_line(capsys, ["publish", "--suite", "demo", "--results-dir", str(res)])
    assert code == 2 and err.endswith(f"run {done.id} is already published at {target}")
    code, err = _error_line(
        capsys, ["publish", "--suite", "demo", "--results-dir", str(res), "--run", busy.id]
    )
    assert code == 2 and f"no complete local run of suite 'demo' named {busy.id}" in err
    code, err = _error_line(capsys, ["runs", "--suite", "no such/suite", "--results-dir", str(res)])
    assert code == 2 and err.endswith("--suite 'no such/suite' is not a suite name")
    assert sorted(p.name for p in (res / "demo").iterdir()) == [done.id]  # the refusals wrote nothing


def test_runs_tells_the_areas_apart_by_the_layout_not_by_the_folder_names(tmp_path, capsys):
    """A results folder whose own path holds a folder named ``local`` (``/usr/local/...``, ``~/local/...``)
    still lists its published runs as published."""
    res = tmp_path / "local" / "res"
    run = _local_run(res, {"name": "demo"})
    assert main(["publish", "--suite", "demo", "--results-dir", str(res)]) == 0
    capsys.readouterr()
    (line,) = _runs_lines(capsys, res)
    assert line.split()[1:3] == [run.id, "published"]


# ------------------------------------------------------------------------------ model tables (README)
def _model_rows():
    base = dict(kind="complexity", error=None, level="model", threads=1, pass_="fwd")
    rows = []

    def add(machine, family, variant, size, tokens, metric, value, error=None):
        rows.append({**base, "machine": machine, "family": family, "variant": variant, "image_size": size,
                     "tokens": tokens, "metric": metric, "value": value, "error": error})  # fmt: skip

    add("m1", "tost", "tost_tiny", 128, 64, "latency_ms", 999.0)  # superseded by the later row of its size
    for size, tokens in ((64, 16), (128, 64), (256, 256)):  # latency = 0.5 tokens^1.5
        add("m1", "tost", "tost_tiny", size, tokens, "latency_ms", 0.5 * tokens**1.5)
        add("m1", "tost", "tost_tiny", size, tokens, "peak_mib", tokens * 0.625)
    add("m1", "tost", "tost_tiny", 64, 16, "peak_mib_profiler", 11.0)
    add("m1", "tost", "tost_tiny", 512, 1024, "latency_ms", None, error="timeout after 60 s")  # left out
    for size, tokens in ((64, 16), (128, 64)):  # latency = tokens^2; no 256 px cell
        add("m1", "tost", "softmax", size, tokens, "latency_ms", float(tokens) ** 2)
        add("m1", "tost", "softmax", size, tokens, "peak_mib", 3.0 * tokens)
    for size in (320, 640):  # a model without attention layers: no tokens, no slope
        add("m2", "yolo", "yolo11n", size, None, "latency_ms", size / 10)
        add("m2", "yolo", "yolo11n", size, None, "peak_mib", size / 4)
    df = pd.DataFrame(rows).rename(columns={"pass_": "pass"})
    df.loc[len(df)] = {**df.iloc[0].to_dict(), "kind": "detection", "value": 1.0}  # another study's row
    return df


def test_derive_models_gives_the_sizes_latencies_peaks_and_slopes():
    from benchmarks.studies.complexity.derive import derive_models

    models = derive_models(_model_rows())
    assert set(models) == {("m1", "tost", "tost_tiny", "fwd", 1), ("m1", "tost", "softmax", "fwd", 1),
                           ("m2", "yolo", "yolo11n", "fwd", 1)}  # fmt: skip
    tiny = models[("m1", "tost", "tost_tiny", "fwd", 1)]
    assert tiny["sizes"] == [64, 128, 256] and tiny["tokens"] == [16, 64, 256]
    assert tiny["latency_ms"] == [32.0, 256.0, 2048.0]  # the later 128 px row, not the 999
    assert tiny["peak_mib"] == [10.0, 40.0, 160.0] and tiny["peak_mib_profiler"] == [11.0, None, None]
    assert tiny["time_slope_vs_tokens"] == pytest.approx(1.5)
    assert models[("m1", "tost", "softmax", "fwd", 1)]["time_slope_vs_tokens"] == pytest.approx(2.0)
    yolo = models[("m2", "yolo", "yolo11n", "fwd", 1)]
    assert yolo["tokens"] == [None, None] and yolo["time_slope_vs_tokens"] is None


def test_readme_model_tables_hold_the_derived_numbers():
    from benchmarks.studies.complexity.derive import derive_models, derived_markdown

    d = {"configs": [], "fit_min_tokens": 1024, "models": derive_models(_model_rows()), "source": {}}
    text = derived_markdown(d, "python -m benchmarks derive --suite t")
    assert text.count("Model level (") == 2  # one table per (machine, family, threads)
    tost = text.split("Model level (tost, machine m1, 1 thread(s))")[1].split("Model level (")[0]
    header = next(ln for ln in tost.splitlines() if ln.startswith("|"))
    heads = [c.strip() for c in header.strip("|").split("|")]
    assert heads == ["model", "pass", "64 px", "128 px", "256 px", "slope"]

    def cells(block, variant):
        (line,) = [ln for ln in block.splitlines() if ln.startswith(f"| {variant} ")]
        return [c.strip() for c in line.strip("|").split("|")]

    assert cells(tost, "tost_tiny") == ["tost_tiny", "fwd", "32.0 ms (16), 10 MiB", "256.0 ms (64), 40 MiB",
                                        "2048.0 ms (256), 160 MiB", "1.50"]  # fmt: skip
    assert cells(tost, "softmax") == ["softmax", "fwd", "256.0 ms (16), 48 MiB", "4096.0 ms (64), 192 MiB",
                                      "skipped or failed (`benchmarks runs`)", "2.00"]  # fmt: skip
    yolo = text.split("Model level (yolo, machine m2, 1 thread(s))")[1]
    assert cells(yolo, "yolo11n") == ["yolo11n", "fwd", "32.0 ms (no attention), 80 MiB",
                                      "64.0 ms (no attention), 160 MiB", "n/a"]  # fmt: skip


def test_the_complexity_report_fits_on_the_runs_own_threshold():
    """The ledger's slopes use the fit threshold of the run's own suite (the cpu suite: past the
    last-level cache), and 1024 for runs recorded without one."""
    from benchmarks.studies.complexity.report import fit_min_tokens

    class Run:
        def __init__(self, op):
            self.record = {"config": {"complexity": {"operator": op}}}

    assert fit_min_tokens([Run({"fit_min_tokens": 64}), Run({"fit_min_tokens": 16384})]) == 16384
    assert fit_min_tokens([Run({})]) == 1024 and fit_min_tokens([]) == 1024


def test_time_slopes_fit_the_fastest_sample_where_the_rows_record_it():
    """Bursts during two sizes move their medians, not their fastest samples: the time slope follows
    ``min_ms`` where every row has it and falls back to the median for rows recorded without it."""
    import pandas as pd

    from benchmarks.studies.complexity.derive import slope_times
    from benchmarks.studies.complexity.report import slope_interval

    tokens = [16384, 24576, 32768, 49152, 65536, 98304, 131072]
    fastest = [0.25e-3 * n for n in tokens]
    median = [t * {98304: 1.5, 131072: 1.6}.get(n, 1.0) for t, n in zip(fastest, tokens)]
    rows = pd.DataFrame({"tokens": tokens, "value": median, "min_ms": fastest})
    vals, of = slope_times(rows)
    assert of == "fastest sample" and list(vals) == fastest
    assert slope_interval(tokens, vals)[0] == pytest.approx(1.0, abs=1e-9)
    assert slope_interval(tokens, rows["value"])[0] > 1.05  # the bursts bend the medians' slope
    older = rows.assign(min_ms=[None] * 6 + [fastest[-1]])  # one row without the column: use the medians
    assert slope_times(older)[1] == "median" and list(slope_times(older)[0]) == median
    assert slope_times(rows.drop(columns="min_ms"))[1] == "median"
