"""The detection study's warm start, data version, proxy calibration and evaluator cross-check."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from benchmarks.core.schema import DataError
from benchmarks.studies.detection.cells import plan
from benchmarks.studies.detection.section import detection_cells, parse_detection, trunk_cells

BASE = {
    "arms": ["yolo11n", "yolo11n-tssa", "yolo11n-noattn"],
    "seeds": [0, 1],
    "data": {"generated": {"n_train": 8, "n_val": 4, "imgsz": 64, "min_frac": 0.06}},
    "train": {"imgsz": 64, "epochs": 2, "batch": 4},
}


def _suite(**det):
    return {"detection": {**BASE, **det}}


def test_a_shared_trunk_is_one_cell_that_every_fine_tune_needs_and_names_by_id():
    groups = plan("t", _suite(warm_start={"epochs": 3, "seed": 7}))
    cells = [c for g in groups for c in g.cells]
    trunks = [c for c in cells if c.get("role") == "trunk"]
    assert len(trunks) == 1
    (trunk,) = trunks
    assert trunk["variant"] == "yolo11n-noattn" and trunk["seed"] == 7 and trunk["epochs"] == 3
    assert groups[0].cells == [trunk]  # first in the plan
    train = [g for g in groups if g.cells[0]["pass"] == "train" and g.cells[0].get("role") is None]
    assert len(train) == 6
    for g in train:
        assert g.needs == (trunk.id,) and g.cells[0]["start"] == "warm"
    # the trunk's id is part of each fine-tune's identity; no path is
    settings = [json.dumps(g.cells[0].settings_hash) for g in train]
    assert len(set(settings)) == 6
    other = plan("t", _suite(warm_start={"epochs": 4, "seed": 7}))  # another trunk: other fine-tune ids
    ids = {c.id for g in other for c in g.cells if c.get("start") == "warm"}
    assert ids.isdisjoint({g.cells[0].id for g in train})


def test_per_seed_trunks_and_the_trunk_runs_alone_on_its_threads():
    groups = plan("t", _suite(warm_start={"epochs": 1, "mode": "per_seed", "threads": 2}))
    trunks = {g.cells[0]["seed"]: g for g in groups if g.cells[0].get("role") == "trunk"}
    assert sorted(trunks) == [0, 1]
    assert all(g.exclusive and g.threads == 2 for g in trunks.values())
    for g in groups:
        c = g.cells[0]
        if c.get("start") == "warm" and c["pass"] == "train":
            assert g.needs == (trunks[c["seed"]].cells[0].id,)
    single = plan("t", _suite(warm_start={"epochs": 1}))
    assert not single[0].exclusive and single[0].threads == 1


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"arms": ["yolo11n", "yolo11n-tssa-p345"]},
            "differ from the trunk 'yolo11n-noattn' in scale or layer layout",
        ),
        ({"arms": ["yolo11n", "yolo11s-tssa"]}, "differ from the trunk"),
        ({"train": {**BASE["train"], "pretrained": "yolo11n.pt"}}, "not both"),
        ({"warm_start": {"epochs": 0}}, "warm_start.epochs"),
        ({"warm_start": {"epochs": 1, "mode": "each"}}, "warm_start.mode"),
        ({"warm_start": {"epochs": 1, "arm": "yolo12n"}}, "unknown arm"),
    ],
)
def test_bad_warm_starts_are_one_line(change, match):
    det = {**BASE, "warm_start": {"epochs": 1}, **change}
    with pytest.raises(ValueError, match=match) as e:
        parse_detection(det)
    assert "\n" not in str(e.value)


def test_sections_without_the_new_keys_keep_their_configuration():
    dumped = parse_detection(BASE).model_dump()
    assert not {"warm_start", "floor", "controls"} & set(dumped)
    with_them = parse_detection({**BASE, "warm_start": {"epochs": 1}, "floor": 0.05}).model_dump()
    assert with_them["warm_start"]["arm"] == "yolo11n-noattn" and with_them["floor"] == 0.05


def test_the_generator_version_is_part_of_every_cell_identity(monkeypatch):
    import benchmarks.studies.detection.data.scenes as scenes

    before = {c.id for g in plan("t", _suite()) for c in g.cells}
    assert all(
        p["data"]["generated"]["version"] == scenes.GENERATOR_VERSION
        for p in detection_cells(parse_detection(BASE))
    )
    monkeypatch.setattr(scenes, "GENERATOR_VERSION", scenes.GENERATOR_VERSION + 1)
    after = {c.id for g in plan("t", _suite()) for c in g.cells}
    assert before.isdisjoint(after)


def test_the_generator_refuses_another_version(tmp_path):
    from benchmarks.studies.detection.data.scenes import GENERATOR_VERSION, make_scenes

    with pytest.raises(ValueError, match=f"draws version {GENERATOR_VERSION} scenes only"):
        make_scenes(tmp_path / "s", n_train=1, n_val=1, imgsz=64, version=1)


def test_missing_transfer_weights_are_one_line_not_a_silent_scratch_run(tmp_path):
    from benchmarks.studies.detection.section import check_data

    sec = parse_detection({**BASE, "train": {**BASE["train"], "pretrained": str(tmp_path / "yolo11n.pt")}})
    with pytest.raises(DataError, match="yolo11n.pt' not found .*remove 'pretrained' to train from scratch"):
        check_data(sec)


def test_trunk_cells_take_the_warm_starts_recipe():
    sec = parse_detection({**BASE, "warm_start": {"epochs": 5, "close_mosaic": 1, "lr0": 0.01, "threads": 2}})
    (t,) = trunk_cells(sec)
    assert (t["epochs"], t["train"]["close_mosaic"], t["train"]["lr0"], t["train"]["threads"]) == (
        5,
        1,
        0.01,
        2,
    )
    assert t["role"] == "trunk" and t["arm"] == "yolo11n-noattn"
    assert all(p["trunk_seed"] == 0 and p["epochs"] == 2 for p in detection_cells(sec))


def test_the_transfer_count_is_what_ultralytics_load_transfers(tmp_path, caplog):
    from tssa.offline import configure_offline

    configure_offline()
    import torch
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import LOGGER

    import tssa.ultralytics as tu
    from benchmarks.studies.detection.train import transfer_count

    # a trunk trained for 6 classes, as the study's data have
    trunk = DetectionModel(tu.model_yaml("yolo11-noattn", "n"), nc=6, verbose=False)
    path = tmp_path / "trunk.pt"
    torch.save({"model": trunk, "train_args": {}}, path)
    seen = {}
    for variant in ("yolo11-noattn", "yolo11-tssa", "yolo11"):
        cfg = tu.model_yaml(variant, "n")
        got = transfer_count(path, cfg, nc=6)
        fresh = DetectionModel(cfg, nc=6, verbose=False)  # what the trainer builds, then loads into
        LOGGER.addHandler(caplog.handler)
        try:
            with caplog.at_level(logging.INFO):
                caplog.clear()
                fresh.load(torch.load(path, weights_only=False))
        finally:
            LOGGER.removeHandler(caplog.handler)
        logged = [r.getMessage() for r in caplog.records if "Transferred" in r.getMessage()]
        assert logged[-1].startswith(f"Transferred {int(got['transferred'])}/{int(got['transfer_total'])} ")
        seen[variant] = got
    # the same architecture takes everything; the attention variants take all but their attention
    assert seen["yolo11-noattn"]["transferred"] == seen["yolo11-noattn"]["transfer_total"]
    for v in ("yolo11-tssa", "yolo11"):
        assert seen["yolo11-noattn"]["transferred"] - 60 < seen[v]["transferred"] < seen[v]["transfer_total"]
    # another class count: the class branch's last convolutions do not transfer
    assert (
        transfer_count(path, tu.model_yaml("yolo11-noattn", "n"), nc=80)["transferred"]
        < seen["yolo11-noattn"]["transferred"]
    )


def test_the_proxy_levels_are_set_on_train_and_its_agreement_reported_on_val(tmp_path):
    from benchmarks.studies.detection.coco_eval import (
        DEFAULT_LEVELS,
        calibrate_proxy_levels,
        level_of,
        proxy_agreement,
    )
    from benchmarks.studies.detection.data.scenes import make_scenes

    root = make_scenes(tmp_path / "s", n_train=40, n_val=40, imgsz=192, min_frac=0.055, max_frac=0.9,
                       overlap_prob=0.6, min_visible=0.15).parent  # fmt: skip
    train = json.loads((root / "annotations/train.json").read_text())
    cal = calibrate_proxy_levels(train)
    anns = train["annotations"]
    truth = pd.Series([level_of(a["visible_fraction"]) for a in anns]).value_counts()
    proxy = pd.Series([level_of(1 - a["occlusion_proxy"], cal) for a in anns]).value_counts()
    del truth, proxy
    from sklearn.metrics import cohen_kappa_score

    def kappa(levels):
        t = [level_of(a["visible_fraction"]) for a in anns]
        return cohen_kappa_score(t, [level_of(1 - a["occlusion_proxy"], levels) for a in anns])

    # the cuts agree with the truth on train at least as well as the fixed levels and as any other cuts
    best = kappa(cal)
    assert best >= kappa(DEFAULT_LEVELS)
    rng = np.random.default_rng(0)
    for _ in range(30):
        c1, c2 = sorted(rng.uniform(0, 1, 2))
        assert best >= kappa({"none": (c2, 1.0), "partial": (c1, c2), "heavy": (0.0, c1)}) - 0.02
    val = json.loads((root / "annotations/val.json").read_text())
    agree = proxy_agreement(val, DEFAULT_LEVELS, cal)

    t = [level_of(a["visible_fraction"]) for a in val["annotations"]]
    q = [level_of(1 - a["occlusion_proxy"], cal) for a in val["annotations"]]
    assert agree["kappa"] == pytest.approx(cohen_kappa_score(t, q))
    assert sum(v for k, v in agree.items() if k.startswith("confusion_")) == len(t)
    assert agree["confusion_heavy_heavy"] == sum(a == b == "heavy" for a, b in zip(t, q))


def test_the_cpu_profile_val_set_holds_100_objects_per_claim_stratum():
    from benchmarks.core.suites import load_suite
    from benchmarks.studies.detection.data.scenes import (
        ScenesConfig,
        area_thresholds,
        render_image,
        size_bucket,
    )

    gen = load_suite("cpu")["detection"]["data"]["generated"]
    cfg = ScenesConfig(**gen)
    assert cfg.min_frac * cfg.imgsz >= 10  # the smallest objects at least about 10 px
    n = {"small": 0, "large": 0, "partial": 0, "heavy": 0}
    for j in range(cfg.n_val):  # the val images exactly as the generator draws them (split 1)
        for o in render_image(np.random.default_rng([cfg.seed, 1, j]), cfg)[1]:
            b = size_bucket(o["area"], area_thresholds())
            v = o["visible_fraction"]
            n[b] = n.get(b, 0) + 1
            if v < 0.5:
                n["heavy"] += 1
            elif v < 0.9:
                n["partial"] += 1
    assert cfg.n_val >= 400 and all(n[k] >= 100 for k in ("small", "large", "partial", "heavy")), n
