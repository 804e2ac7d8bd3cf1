"""The COCO evaluator on constructed predictions whose AP is known by hand, and against plain pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from benchmarks.studies.detection.coco_eval import SubsetCOCOeval, evaluate_detections, load_gt
from benchmarks.studies.detection.data.scenes import make_scenes

# one image, two objects of one class: A fully visible, B 30% visible (heavy occlusion)
A, B = [0, 0, 10, 10], [50, 50, 10, 10]
GT = {
    "images": [{"id": 7, "file_name": "00007.png", "width": 100, "height": 100}],
    "categories": [{"id": 1, "name": "thing"}],
    "annotations": [
        {
            "id": 1,
            "image_id": 7,
            "category_id": 1,
            "bbox": A,
            "area": 100,
            "iscrowd": 0,
            "visible_fraction": 1.0,
        },
        {
            "id": 2,
            "image_id": 7,
            "category_id": 1,
            "bbox": B,
            "area": 100,
            "iscrowd": 0,
            "visible_fraction": 0.3,
        },
    ],
}


def det(box, score, image_id=7, cat=1):
    return {"image_id": image_id, "category_id": cat, "bbox": box, "score": score}


def test_perfect_detections_give_ap_one():
    r = evaluate_detections(GT, [det(A, 0.9), det(B, 0.8)])
    for k in ("map50_95", "map50", "ap_occ_none", "ap_occ_heavy"):
        assert r[k] == pytest.approx(1.0), k
    assert r["recall_occ_none"] == r["recall_occ_heavy"] == 1.0
    assert np.isnan(r["ap_occ_partial"]) and np.isnan(r["recall_occ_partial"])  # no ground truth there


def test_one_miss_halves_recall():
    r = evaluate_detections(GT, [det(A, 0.9)])
    # precision 1 up to recall 0.5 (51 of COCO's 101 recall points), 0 beyond
    assert r["map50_95"] == pytest.approx(51 / 101)
    assert r["ap_occ_none"] == pytest.approx(1.0) and r["ap_occ_heavy"] == 0.0
    assert r["recall_occ_none"] == 1.0 and r["recall_occ_heavy"] == 0.0


def test_one_false_positive_between_two_hits():
    # ranking: hit A (0.9), false positive (0.8), hit B (0.7): interpolated precision 1 up to
    # recall 0.5, then 2/3 up to recall 1
    r = evaluate_detections(GT, [det(A, 0.9), det([80, 80, 10, 10], 0.8), det(B, 0.7)])
    assert r["map50_95"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    # B's level: the unmatched detection has no level, so it is a false positive there too;
    # the detection on A (another level) is ignored: precision 1/2 at B's rank
    assert r["ap_occ_heavy"] == pytest.approx(0.5)


def test_detection_on_an_ignored_object_is_neither_hit_nor_miss():
    # the heavy level keeps B only; the top-scoring detection hits A, which is ignored, not deleted
    r = evaluate_detections(GT, [det(A, 0.9), det(B, 0.8)])
    assert r["ap_occ_heavy"] == pytest.approx(1.0)
    deleted = copy.deepcopy(GT)
    deleted["annotations"] = deleted["annotations"][1:]  # deleting A instead makes its hit a false positive
    assert evaluate_detections(deleted, [det(A, 0.9), det(B, 0.8)])["map50_95"] == pytest.approx(0.5)


def test_annotation_ignore_flag_is_kept_unlike_pycocotools():
    gt = copy.deepcopy(GT)
    gt["annotations"][0]["ignore"] = 1  # A to be ignored; only B is detected
    coco = load_gt(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes([det(B, 0.8)])
        fixed, plain = SubsetCOCOeval(coco, dt, "bbox"), COCOeval(coco, dt, "bbox")
        for E in (fixed, plain):
            E.evaluate()
            E.accumulate()
            E.summarize()
            if E is fixed:
                assert coco.anns[1]["ignore"] == 1  # the fixed evaluator leaves the ground truth as it was
    assert fixed.stats[0] == pytest.approx(1.0)
    # pycocotools overwrote ignore with iscrowd: A counts as missed
    assert plain.stats[0] == pytest.approx(51 / 101)
    assert coco.anns[1]["ignore"] == 0  # ... in the ground truth object itself


def test_recall_counts_only_confident_detections():
    r = evaluate_detections(GT, [det(A, 0.9), det(B, 0.2)])
    assert r["ap_occ_heavy"] == pytest.approx(1.0)  # AP uses every score
    assert r["recall_occ_heavy"] == 0.0 and r["recall_occ_none"] == 1.0  # recall at score >= 0.3
    assert evaluate_detections(GT, [det(A, 0.9), det(B, 0.2)], recall_score=0.1)["recall_occ_heavy"] == 1.0


def test_no_predictions_and_string_image_ids():
    assert evaluate_detections(GT, [])["map50_95"] == 0.0
    # Ultralytics names non-numeric files by their stem: mapped back by file name
    gt = copy.deepcopy(GT)
    gt["images"][0]["file_name"] = "img_a.jpg"
    assert evaluate_detections(gt, [det(A, 0.9, image_id="img_a"), det(B, 0.8, image_id="img_a")])[
        "map50"
    ] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no ground truth image"):
        evaluate_detections(gt, [det(A, 0.9, image_id="other")])


def test_size_strata_use_the_thresholds_of_the_ground_truth():
    gt = copy.deepcopy(GT)
    gt["info"] = {"area_thresholds": [50.0, 150.0]}
    gt["annotations"][1].update(bbox=[50, 50, 20, 20], area=400)  # B becomes large, A stays medium
    r = evaluate_detections(gt, [det(A, 0.9)])
    assert r["ap_medium"] == pytest.approx(1.0) and r["ap_large"] == 0.0 and np.isnan(r["ap_small"])


def test_overall_map_equals_unmodified_pycocotools(tmp_path):
    root = make_scenes(tmp_path / "s", n_train=1, n_val=30, imgsz=320, seed=4).parent
    gt_path = root / "annotations" / "val.json"
    gt = json.loads(gt_path.read_text())
    rng = np.random.default_rng(0)
    preds = []
    for a in gt["annotations"]:
        if rng.uniform() < 0.8:
            x, y, w, h = a["bbox"]
            j = rng.normal(0, 0.1, 4) * [w, h, w, h]
            cat = a["category_id"] if rng.uniform() < 0.9 else 1
            preds.append(
                det([x + j[0], y + j[1], w + j[2], h + j[3]], float(rng.uniform()), a["image_id"], cat)
            )
    for im in gt["images"]:
        for _ in range(20):
            box = [*rng.uniform(0, 300, 2), *rng.uniform(3, 100, 2)]
            preds.append(
                det([float(v) for v in box], float(rng.uniform(0, 0.5)), im["id"], int(rng.integers(1, 9)))
            )
    ours = evaluate_detections(gt_path, preds)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_path))
        E = COCOeval(coco, coco.loadRes(preds), "bbox")
        E.params.areaRng = [[0, 1e10], [0, 256.0], [256.0, 2304.0], [2304.0, 1e10]]  # the scaled thresholds
        E.evaluate()
        E.accumulate()
        E.summarize()
    assert 0.05 < E.stats[0] < 0.95
    assert ours["map50_95"] == E.stats[0] and ours["map50"] == E.stats[1]
    assert [ours["ap_small"], ours["ap_medium"], ours["ap_large"]] == list(E.stats[3:6])
