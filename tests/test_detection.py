"""The detection section's schema, its cells, and one tiny cell trained twice with identical accuracy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from benchmarks.studies.detection.section import (
    ACCURACY_METRICS,
    CELL_METRICS,
    DETECTION_METRICS,
    detection_cells,
    parse_arm,
    parse_detection,
)
from benchmarks.studies.detection.train import run_detection_cell

SUITES = Path(__file__).resolve().parent.parent / "benchmarks" / "suites"
BASE = {
    "arms": ["yolo11n", "yolo11n-tssa"],
    "seeds": [0, 1],
    "data": {"generated": {"n_train": 8, "n_val": 4}},
}


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"arms": ["yolo11n", "yolo11q-tssa"]},
            "detection.arms[1]: unknown arm 'yolo11q-tssa'; choose one of",
        ),
        ({"arms": ["yolo11n", "yolo11n-bogus"]}, "detection.arms[1]: unknown arm 'yolo11n-bogus'"),
        ({"seeds": [0, 0]}, "detection.seeds: seeds must be distinct integers >= 0"),
        ({"seeds": [0, -1]}, "detection.seeds: seeds must be distinct"),
        ({"seeds": "0,1"}, "detection.seeds: Input should be a valid list"),
        ({"seeds": []}, "detection.seeds: List should have at least 1 item"),
        ({"bogus": 1}, "detection.bogus: unknown key; allowed keys: ['alpha', 'arms',"),
        ({"train": {"epochz": 3}}, "detection.train.epochz: unknown key; allowed keys: ['batch',"),
        ({"train": {"imgsz": 100}}, "detection.train.imgsz: must be a multiple of 32, got 100"),
        ({"train": {"epochs": 0}}, "detection.train.epochs: Input should be greater than or equal to 1"),
        (
            {"train": {"overrides": {"foo": 1}}},
            "detection.train.overrides: 'foo' is not an Ultralytics training argument",
        ),
        ({"train": {"overrides": {"seed": 1}}}, "detection.train.overrides: 'seed' is set by the suite"),
        ({"data": {"generated": {"n_trian": 3}}}, "detection.data.generated.n_trian: unknown key"),
        (
            {"data": {"generated": {"n_classes": 3}}},
            "detection.data.generated.n_classes: Input should be greater than or equal to 6",
        ),
        ({"data": {}}, "detection.data: give exactly one of 'generated'"),
        ({"reference": "yolo11s"}, "detection: reference 'yolo11s' is not one of the arms"),
        (
            {"claims": [{"name": "x", "arm": "yolo11n-tssa", "metric": "apx"}]},
            "detection.claims[0].metric: unknown metric 'apx'",
        ),
        (
            {"claims": [{"name": "x", "arm": "yolo11n", "metric": "ap_small"}]},
            "detection: claim 'x': arm 'yolo11n' must be one",
        ),
        ({"holm_family": ["ap_tiny"]}, "detection.holm_family: unknown metric(s) ['ap_tiny']"),
        (
            {"occlusion_levels": {"none": [0.9, 1], "partial": [0.4, 0.9], "heavy": [0, 0.5]}},
            "detection.occlusion_levels: levels must cut",
        ),
        ({"rope": -1}, "detection.rope: Input should be greater than or equal to 0"),
    ],
)
def test_schema_errors_are_one_line_naming_the_key(change, message):
    with pytest.raises(ValueError) as e:
        parse_detection({**BASE, **change})
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(message), str(e.value)


def test_not_a_mapping():
    with pytest.raises(ValueError, match="^detection: must be a mapping, got list$"):
        parse_detection([1, 2])


def test_cells_are_seed_major_and_typed(tmp_path):
    weights = tmp_path / "w.pt"
    s = parse_detection({**BASE, "train": {"imgsz": 128, "pretrained": str(weights)}})
    cells = detection_cells(s)
    assert [(c["arm"], c["seed"]) for c in cells] == [
        ("yolo11n", 0),
        ("yolo11n-tssa", 0),
        ("yolo11n", 1),
        ("yolo11n-tssa", 1),
    ]
    c = cells[1]
    assert (c["variant"], c["scale"], c["imgsz"], c["epochs"], c["batch"]) == (
        "yolo11-tssa",
        "n",
        128,
        100,
        16,
    )
    assert c["train"]["pretrained"] is None  # the weights are not on disk: no transfer
    from benchmarks.studies.detection.data.scenes import GENERATOR_VERSION

    assert c["data"] == {"generated": {**s.data.generated.model_dump(), "version": GENERATOR_VERSION}}
    weights.write_bytes(b"x")
    assert detection_cells(s)[0]["train"]["pretrained"] == str(weights.resolve())
    assert s.reference == "yolo11n" and [c.metric for c in s.claims] == [
        "ap_small",
        "ap_large",
        "ap_occ_partial",
        "ap_occ_heavy",
    ]
    assert parse_arm("yolo11s-tssa-p345") == ("yolo11-tssa-p345", "s")


def test_every_metric_has_its_registry_fields():
    for name, m in DETECTION_METRICS.items():
        assert set(m) == {"unit", "higher_is_better", "label", "latex", "precision"}, name
        assert m["higher_is_better"] in (True, False, None)
    assert set(ACCURACY_METRICS) >= {
        "map50_95",
        "ap_small",
        "ap_occ_heavy",
        "recall_occ_heavy_proxy",
        "ul_map50",
    }


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu", "paper"])
def test_profile_sections_validate(profile):
    doc = yaml.safe_load((SUITES / f"{profile}.yaml").read_text())
    s = parse_detection(doc["detection"])
    assert len(detection_cells(s)) == len(s.arms) * len(s.seeds)


TINY = {
    "arms": ["yolo11n-tssa"],
    "seeds": [3],
    "data": {"generated": {"n_train": 8, "n_val": 12, "imgsz": 64, "min_frac": 0.06, "max_objects": 4}},
    "train": {"imgsz": 64, "epochs": 1, "batch": 4, "threads": 1},
    "latency": {"rounds": 1, "min_run_time": 0.02},
}


def test_tiny_cell_twice_gives_identical_accuracy(tmp_path, monkeypatch):
    from benchmarks.studies.detection import train

    (cell,) = detection_cells(parse_detection(TINY))
    runs = [run_detection_cell(cell, tmp_path / "run0", data_dir=tmp_path / "data")]
    # the second time the trainer's own validations see every val image, not the first 8: no number changes
    monkeypatch.setattr(train, "TRAINER_VAL_IMAGES", 10**6)
    runs.append(run_detection_cell(cell, tmp_path / "run1", data_dir=tmp_path / "data"))
    seen = sorted(
        len(list(p.glob("images/val/*.png"))) for p in (tmp_path / "data").glob("scenes-*-trainer*")
    )
    assert seen == [8, 12]
    transfer = {"transferred", "transfer_total"}  # recorded by a cell that transfers weights (a warm start)
    assert set(runs[0]) == {*CELL_METRICS, "deterministic"} - transfer
    assert runs[0]["deterministic"] == 1.0  # Ultralytics trained with deterministic algorithms on
    assert set(ACCURACY_METRICS) <= set(runs[0])
    same = [
        k
        for k in ACCURACY_METRICS
        if runs[0][k] == runs[1][k] or (math.isnan(runs[0][k]) and math.isnan(runs[1][k]))
    ]
    assert same == list(ACCURACY_METRICS), {
        k: (runs[0][k], runs[1][k]) for k in ACCURACY_METRICS if k not in same
    }
    r = runs[0]
    assert r["params"] > 2e6 and r["gflops"] > 0 and r["latency_ms"] > 0 and r["latency_samples"] >= 1
    assert r["train_time_s"] > 0 and r["train_peak_mib"] > 1
    assert (tmp_path / "run0" / "train" / "weights" / "best.pt").is_file()
    preds = [(tmp_path / f"run{i}" / "val" / "predictions.json").read_text() for i in range(2)]
    assert preds[0] == preds[1] and len(json.loads(preds[0])) > 0  # the same detections, not just zeros
    print(
        {k: r[k] for k in ("map50_95", "map50", "ul_map50", "train_time_s", "train_peak_mib", "latency_ms")}
    )


def test_missing_data_yaml_is_one_clear_line(tmp_path):
    from benchmarks.studies.detection.data.real import DataError
    from benchmarks.studies.detection.section import check_data

    s = parse_detection({**BASE, "data": {"yaml": str(tmp_path / "VOC.yaml")}})
    with pytest.raises(DataError) as e:
        check_data(s)
    assert "\n" not in str(e.value) and "VOC.yaml" in str(e.value) and "not found" in str(e.value)
    check_data(parse_detection(BASE))  # generated data: nothing to check


class _Killed(BaseException):
    """Stands for the end of a process (pre-emption), raised from inside Ultralytics' epoch loop."""


def test_a_requeued_cell_resumes_training_from_its_own_last_checkpoint(tmp_path):
    (cell,) = detection_cells(parse_detection({**TINY, "train": {**TINY["train"], "epochs": 3}}))
    seen: list[int] = []

    def killed_after_second_epoch(epoch, epochs, seconds):
        seen.append(epoch)
        if epoch == 2:  # last.pt of epoch 2 is not written yet: the resumed job repeats that epoch
            raise _Killed

    with pytest.raises(_Killed):
        run_detection_cell(
            cell, tmp_path / "w", data_dir=tmp_path / "data", on_epoch=killed_after_second_epoch
        )
    assert seen == [1, 2] and (tmp_path / "w" / "train" / "weights" / "last.pt").is_file()
    seen.clear()
    out = run_detection_cell(cell, tmp_path / "w", data_dir=tmp_path / "data", on_epoch=lambda e, n, s: seen.append(e),
                             resume=True)  # fmt: skip
    assert seen == [2, 3]  # epoch 1 was not trained again; at most the epoch in progress was lost
    times = json.loads((tmp_path / "w" / "epoch_times.json").read_text())
    assert len(times) == 3 and out["train_time_s"] == pytest.approx(sum(times))
    assert set(ACCURACY_METRICS) <= set(out) and out["params"] > 2e6
    # a finished training is only evaluated again, never retrained
    seen.clear()
    again = run_detection_cell(cell, tmp_path / "w", data_dir=tmp_path / "data", on_epoch=lambda e, n, s: seen.append(e),
                               resume=True)  # fmt: skip
    assert seen == [] and again["map50_95"] == out["map50_95"]


def test_training_runs_with_the_requested_thread_count(tmp_path):
    """Ultralytics' device selection resets torch's threads to its NUM_THREADS; `train.threads` wins."""
    import torch
    from ultralytics.utils import NUM_THREADS

    want = NUM_THREADS + 1  # differs from what Ultralytics would set on any machine
    (cell,) = detection_cells(parse_detection({**TINY, "train": {**TINY["train"], "threads": want}}))
    before = torch.get_num_threads()
    during: list[int] = []
    run_detection_cell(
        cell,
        tmp_path / "w",
        data_dir=tmp_path / "data",
        on_epoch=lambda e, n, s: during.append(torch.get_num_threads()),
    )
    assert during == [want]
    assert torch.get_num_threads() == before  # restored after the cell
