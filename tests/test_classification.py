"""The classification study's parts: digits split, schema, cells, seeded training, metrics."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("timm")
pytest.importorskip("sklearn")
pytest.importorskip("pydantic")

from benchmarks.studies.classification import train as cls  # noqa: E402
from benchmarks.studies.classification.data import digits  # noqa: E402

TINY = {"depth": 1, "embed_dim": 32, "num_heads": 4}
ARMS = ["tost_tiny_12_p8_224", "tost_softmax_tiny_12_p8_224", "tost_xca_tiny_12_p8_224"]


def tiny_section(**train) -> dict:
    return {
        "seeds": [0],
        "measure": {"batch": 8, "min_run_time": 0.01, "rounds": 1},
        "tasks": {
            "digits": {
                "arms": ARMS[:1],
                "model": TINY,
                "data": {"name": "digits", "image_size": 16},
                "train": {"epochs": 1, "batch_size": 64, "no_aug": True, "lr": 2e-3, **train},
            }
        },
    }


# --------------------------------------------------------------------------- split
def test_split_is_deterministic_disjoint_and_stratified():
    tr, va = digits.split_digits(0.2, seed=0)
    tr2, va2 = digits.split_digits(0.2, seed=0)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(va, digits.split_digits(0.2, seed=1)[1])
    _, labels = digits.load_digits_uint8()
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == len(labels) == 1797
    full = np.bincount(labels, minlength=10)
    val = np.bincount(labels[va], minlength=10)
    # stratified: each class's share of val equals its share of the whole, up to one image
    assert np.all(np.abs(val - full * len(va) / len(labels)) <= 1.0)


def test_digits_dataset_images_and_export(tmp_path):
    ds = digits.DigitsDataset(np.array([0, 5]))
    img, target = ds[1]
    assert img.size == (8, 8) and img.mode == "RGB" and target == digits.load_digits_uint8()[1][5]
    raw = digits.load_digits_uint8()[0]
    assert raw.dtype == np.uint8 and raw.max() == 255 and raw.min() == 0
    root = digits.export_image_folder(tmp_path / "df")
    n_train = sum(1 for _ in (root / "train").rglob("*.png"))
    n_val = sum(1 for _ in (root / "validation").rglob("*.png"))
    assert (n_train, n_val) == (1437, 360)
    train, val = digits.create_datasets("folder", root)
    assert (len(train), len(val), train.num_classes) == (1437, 360, 10)


# --------------------------------------------------------------------------- bad input
def test_missing_dataset_path_is_one_line(tmp_path):
    with pytest.raises(digits.DataError) as e:
        digits.create_datasets("torch/cifar10", tmp_path / "nope")
    msg = str(e.value)
    assert "\n" not in msg and "does not exist" in msg and "nope" in msg
    with pytest.raises(digits.DataError, match="needs data.root"):
        digits.create_datasets("folder", None)


@pytest.mark.parametrize(
    "patch, where",
    [
        ({"tasks": {"digits": {"arms": ["tost_bogus_224"]}}}, "unknown timm model 'tost_bogus_224'"),
        (
            {"tasks": {"digits": {"arms": ARMS[:1], "bogus": 1}}},
            "classification.tasks.digits.bogus: unknown key",
        ),
        ({"tasks": {"digits": {"arms": ARMS[:1], "train": {"epochs": "many"}}}}, "train.epochs"),
        ({"tasks": {"digits": {"arms": ARMS[:1], "data": {"image_size": 36}}}}, "divisible"),
        ({"tasks": {"digits": {"arms": ARMS[:1], "model": {"depthh": 2}}}}, "depthh"),
        ({"tasks": {"a/b": {"arms": ARMS[:1]}}}, "not path-safe"),
        ({"seeds": [0, 0], "tasks": {"digits": {"arms": ARMS[:1]}}}, "seeds repeat"),
        ({"seeds": [0, -1], "tasks": {"digits": {"arms": ARMS[:1]}}}, "seeds must be distinct integers >= 0"),
        ({"seeds": "0,1", "tasks": {"digits": {"arms": ARMS[:1]}}}, "classification.seeds"),
        ({"tasks": {"digits": {"arms": ARMS[:2], "reference": ARMS[2]}}}, "is not one of the arms"),
        ({"tasks": {}}, "classification.tasks"),
    ],
)
def test_schema_errors_are_one_line(patch, where):
    with pytest.raises(cls.ClassificationError) as e:
        cls.validate_section(patch)
    msg = str(e.value)
    assert "\n" not in msg and where in msg, msg


# --------------------------------------------------------------------------- cells
def test_expand_cells_flat_typed_and_round_trip():
    section = tiny_section()
    section["seeds"] = [0, 1, 2]
    section["tasks"]["digits"]["arms"] = ARMS
    cells = cls.expand_cells(section, device="cpu", threads=1)
    assert [(c["variant"], c["seed"]) for c in cells] == [(a, s) for a in ARMS for s in (0, 1, 2)]
    for c in cells:
        assert all(isinstance(v, (int, float, str, bool, list, type(None))) for v in c.values())
        assert c["model.depth"] == 1 and c["train.epochs"] == 1 and c["kind"] == "classification"
        back = cls.parse_cell(json.loads(json.dumps(c)))
        assert back.variant == c["variant"] and back.model == TINY and back.train.scale == (0.08, 1.0)
    with pytest.raises(cls.ClassificationError, match="cell.train.bogus: unknown key"):
        cls.parse_cell({**cells[0], "train.bogus": 1})


def test_paper_table_names_registered_models():
    import timm

    import tssa.timm  # noqa: F401
    from benchmarks.core import paper

    assert all(timm.is_model(m.arm) for m in paper.TABLE2)
    assert "ImageNet-1k" in paper.TABLE2_SOURCE
    assert set(cls.CELL_METRICS) >= {"top1", "top5", "val_loss", "params", "gflops", "images_per_s"}


# --------------------------------------------------------------------------- training
def _cell(seed=0, arm=ARMS[0], **train) -> cls.CellParams:
    return cls.parse_cell(cls.expand_cells(tiny_section(**train) | {"seeds": [seed]})[0] | {"variant": arm})


def test_same_seed_same_data_order_for_every_arm():
    orders = []
    for arm in ARMS:
        cell = _cell(arm=arm)
        cls.set_deterministic(cell.seed, 1, "cpu")
        model = cls._create_model(arm, cell, num_classes=10)
        torch.randn(17)  # consume the global generator differently per arm
        loader, _ = cls.create_loaders(cell, model)
        orders.append([list(loader.sampler) for _ in range(2)])  # two epochs
    assert orders[0] == orders[1] == orders[2]
    assert orders[0][0] != orders[0][1]  # reshuffled each epoch
    cell = _cell(seed=1)
    loader, _ = cls.create_loaders(cell, cls._create_model(ARMS[0], cell, num_classes=10))
    assert list(loader.sampler) != orders[0][0]


def test_seeded_training_twice_gives_identical_weights_and_metrics(tmp_path):
    runs = []
    for _ in range(2):
        model, val_loader, stats = cls.train_model(_cell(hflip=0.5, color_jitter=0.4))  # with augmentation
        runs.append((model.state_dict(), cls.evaluate(model, val_loader, "cpu"), stats["train_loss"]))
    (w0, m0, l0), (w1, m1, l1) = runs
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert m0 == m1 and l0 == l1
    model, val_loader, _ = cls.train_model(_cell(seed=1, hflip=0.5, color_jitter=0.4))
    assert not all(torch.equal(w0[k], v) for k, v in model.state_dict().items())


def test_run_classification_cell_returns_every_metric(tmp_path):
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(False)  # earlier tests called train_model directly
    cell = cls.expand_cells(tiny_section())[0]
    out = cls.run_classification_cell(cell, tmp_path)
    assert set(out) == set(cls.CELL_METRICS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert 0.0 <= out["top1"] <= out["top5"] <= 1.0
    assert out["params"] > 0 and out["gflops"] > 0 and out["train_peak_mib"] > 0
    assert out["throughput_samples"] >= 1 and out["images_per_s"] > 0
    # the process's torch settings are restored after a cell
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()


def test_drop_rates_map_as_the_official_recipe_and_no_ema_by_default():
    """--drop P -> pos_drop_rate = proj_drop_rate = P (head dropout 0); drop path as drop_path_rate."""
    cell = _cell(drop=0.1, drop_path=0.05)
    model = cls._create_model(ARMS[0], cell, num_classes=10)
    assert model.pos_drop.p == 0.1 and getattr(getattr(model, "head_drop", None), "p", 0.0) == 0.0
    assert model.blocks[0].mlp.drop1.p == 0.1 and model.cls_attn_blocks[0].attn.proj_drop.p == 0.1
    assert model.blocks[0].drop_path.drop_prob == 0.05
    assert all(m.p == 0.0 for n, m in model.named_modules() if n.endswith("attn_drop"))
    assert cls.TrainConfig().model_ema is False


# --------------------------------------------------------------------------- through the harness
def _suite(tmp_path, section: dict, name: str = "clstest") -> str:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": name, "threads": 1, "classification": section}))
    return str(path)


@pytest.mark.parametrize("bad", ["model", "path", "seeds"])
def test_cli_bad_input_is_one_line_nonzero_and_no_rows(tmp_path, capsys, bad):
    from benchmarks.__main__ import main

    section = tiny_section()
    want = {"model": "tost_nope_224", "path": "missing", "seeds": "seeds"}[bad]
    if bad == "model":
        section["tasks"]["digits"]["arms"] = ["tost_tiny_12_p8_224", "tost_nope_224"]
    elif bad == "path":
        section["tasks"]["digits"]["data"] = {"name": "folder", "root": str(tmp_path / "missing")}
    else:
        section["seeds"] = [0, "one"]
    results = tmp_path / "r"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "run",
                "--suite",
                _suite(tmp_path, section),
                "--part",
                "classification",
                "--results-dir",
                str(results),
            ]
        )
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert e.value.code == 2 and len(err) == 1 and want in err[0], err
    assert not results.exists()  # no run, no rows


def test_profiles_validate_and_cpu_names_the_arms():
    from benchmarks.core.suites import load_suite

    cpu = load_suite("cpu")["classification"]
    arms = cpu["tasks"]["digits"]["arms"]
    assert (
        arms[0].startswith("tost_tiny")
        and any("softmax" in a for a in arms)
        and any("xca" in a for a in arms)
    )
    assert len(cpu["seeds"]) >= 3 and cpu["tasks"]["digits"]["data"]["name"] == "digits"
    assert len(load_suite("smoke")["classification"]["seeds"]) == 1
    for name in ("gpu", "paper"):  # real datasets: written, validated (paths are checked when a run starts)
        tasks = load_suite(name)["classification"]["tasks"]
        assert all(t["data"]["root"] for t in tasks.values())


def test_dry_run_lists_cells_even_where_data_is_absent(tmp_path, capsys):
    from benchmarks.__main__ import main

    assert (
        main(
            ["run", "--suite", "gpu", "--part", "classification", "--dry-run", "--results-dir", str(tmp_path)]
        )
        == 0
    )
    out = capsys.readouterr().out
    # 18 trainings (2 tasks x 3 arms x 3 seeds), each followed by its throughput cell
    assert out.count("todo      classification/variant=tost_") == 36 and "a run would stop here" in out
    assert out.count("/level=throughput@") == 18
    assert not any(tmp_path.iterdir())


def test_summary_against_hand_computed_values():
    import pandas as pd

    from benchmarks.studies.classification import summary as study

    top1 = {ARMS[0]: [0.90, 0.92, 0.94], ARMS[1]: [0.91, 0.95, 0.96]}
    rows = [dict(kind="classification", error=None, task="digits", variant=a, seed=s, metric="top1", value=v)
            for a, vals in top1.items() for s, v in enumerate(vals)]  # fmt: skip
    section = tiny_section()
    section["tasks"]["digits"]["arms"] = ARMS[:2]
    s = study.summary(pd.DataFrame(rows), section)["digits"]
    d = s["describe"].set_index("arm").loc[ARMS[0]]
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.92) and d["sd"] == pytest.approx(0.02)
    # 95% t interval: mean +- t(0.975, 2) sd / sqrt(3), t(0.975, 2) = 4.302653
    assert d["ci_high"] - d["mean"] == pytest.approx(4.302653 * 0.02 / 3**0.5, rel=1e-5)
    diff = s["diffs"].query("metric == 'top1'").iloc[0]  # differences 0.01, 0.03, 0.02
    assert (
        diff["arm"] == ARMS[1]
        and diff["mean_diff"] == pytest.approx(0.02)
        and diff["sd_diff"] == pytest.approx(0.01)
    )
    assert diff["ci_low"] == pytest.approx(0.02 - 4.302653 * 0.01 / 3**0.5, rel=1e-5)
    v = s["verdicts"].iloc[0]
    # interval [-0.005, 0.045] leaves the +-0.01 ROPE (not equivalent), and the paired t test's
    # two-sided p is 0.0742 > 0.05 (t = 3.46, 2 df; 0.0371 would be the one-sided p): inconclusive
    assert v["p_value"] == pytest.approx(0.0741799, rel=1e-4)
    assert v["p_adj"] == pytest.approx(0.0741799, rel=1e-4)  # Holm over one control: p itself
    assert v["verdict"] == "inconclusive"
    md = study.summary_markdown({"digits": s}, "t")
    assert "0.9200 ± 0.0200 (3)" in md and "+0.0200 [" in md
    paper = study.paper_markdown()
    assert "67.3%" in paper and "not measured here" in paper


def test_smoke_cell_runs_twice_identically_through_the_harness(tmp_path):
    """The smoke profile's classification cell end to end (store, rows, provenance), twice: same numbers."""
    import subprocess

    values = []
    for i in range(2):
        cmd = [sys.executable, "-m", "benchmarks", "run", "--suite", "smoke", "--part", "classification",
               "--results-dir", str(tmp_path / f"r{i}")]  # fmt: skip
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        from benchmarks.core.store import list_runs, load_rows

        (run,) = list_runs(tmp_path / f"r{i}", "smoke")
        df = load_rows([run])
        assert run.record["status"] == "complete" and (df["kind"] == "classification").all()
        acc = df[df["metric"].isin(["top1", "top5", "val_loss", "params", "gflops"])]
        values.append(dict(zip(acc["metric"], acc["value"])))
    assert values[0] == values[1] and set(values[0]) == {"top1", "top5", "val_loss", "params", "gflops"}


def _split_run(source, parent, rid: str, started: str, kind: str):
    """A complete run ``parent/rid`` holding only the ``kind`` rows of ``source`` (the record of
    ``source``, its suite and machine, with a new id and start time; each row names the new run)."""
    from benchmarks.core.store import Run

    rows = [
        {**{k: v for k, v in r.items() if k != "run"}, "run": rid} for r in source.rows() if r["kind"] == kind
    ]
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    run = Run(parent / rid)
    run.path.mkdir(parents=True)
    rec = source.record | {"run": rid, "started": started, "finished": started, "status": "complete"}
    run.record_path.write_text(json.dumps(rec), encoding="utf-8")
    lines = [{"type": "row", "attempt": 1, **r} for r in rows]
    lines += [{"type": "event", "cell": c, "attempt": 1, "event": "finished"} for c in cells]
    run.log_path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return run


def test_derive_writes_each_block_from_the_run_of_its_kind(tmp_path, capsys):
    """Each README block that ``derive`` writes comes from the latest complete run holding rows of
    its own kind (``select_runs(kind=...)``), not from the latest complete run of the machine: the
    published cpu rows of each kind go into a run of their own (same suite and machine, distinct ids,
    started in turn), and each block names its run and none of the other two."""
    from pathlib import Path

    from benchmarks.__main__ import main
    from benchmarks.core.store import select_runs

    published = Path(__file__).resolve().parents[1] / "results"
    kinds = ("complexity", "detection", "classification")
    sources = {k: select_runs(published, "cpu", scope="published", kind=k) for k in kinds}
    if not all(sources.values()):
        pytest.skip("the published cpu runs do not hold every kind yet")
    parent = tmp_path / "results" / "cpu"
    runs = {}
    for i, k in enumerate(kinds):  # classification's run is the latest complete run of the machine
        rid = f"2030010{i + 1}T000000Z-split0-{k}"
        runs[k] = _split_run(sources[k][-1], parent, rid, f"2030-01-0{i + 1}T00:00:00+00:00", k)
    assert len({r.record["machine"]["id"] for r in runs.values()}) == 1  # one machine: the runs compete
    for k in kinds:  # the selection the blocks must follow: one run per kind, each its own
        assert [r.id for r in select_runs(tmp_path / "results", "cpu", kind=k)] == [runs[k].id]
    readme = tmp_path / "README.md"
    readme.write_text("".join(f"<!-- {k}:cpu:begin -->\n<!-- {k}:cpu:end -->\n" for k in kinds))
    argv = ["derive", "--suite", "cpu", "--results-dir", str(tmp_path / "results"), "--readme", str(readme)]
    assert main(argv) == 0
    text = readme.read_text()
    for k in kinds:
        block = text.split(f"<!-- {k}:cpu:begin -->")[1].split(f"<!-- {k}:cpu:end -->")[0]
        assert runs[k].id in block, f"the {k} block does not name its run {runs[k].id}"
        others = [runs[o].id for o in kinds if o != k]
        assert not any(o in block for o in others), f"the {k} block names another kind's run"
    cls_block = text.split("<!-- classification:cpu:begin -->")[1]
    assert "not measured here" in cls_block and "± " in cls_block and "95% t interval" in cls_block


def test_docstring_examples():
    import doctest

    import benchmarks.studies.classification  # noqa: F401  (imports cleanly, registers the metrics)

    for module in (cls, digits):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
