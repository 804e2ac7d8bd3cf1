"""The COCO evaluator on cases whose AP is known by hand, against plain pycocotools and faster-coco-eval."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from benchmarks.studies.detection.coco_eval import (
    SubsetCOCOeval,
    _load_res,
    evaluate_detections,
    faster_coco_map,
    load_gt,
)
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


def test_the_callers_predictions_are_left_as_they_were():
    # pycocotools' loadRes adds keys (segmentation, area, id, iscrowd) to every record it is given: the
    # evaluator hands it copies, so the records it loads twice (all, and the confident ones for recall)
    # keep their own ids, and the same list evaluates again to the same numbers
    preds = [det(A, 0.9), det([80, 0, 10, 10], 0.95), det(B, 0.8)]
    before = copy.deepcopy(preds)
    coco = _load_res(load_gt(GT), preds)
    assert preds == before and len(coco.dataset["annotations"]) == 3
    first = evaluate_detections(GT, preds)
    assert preds == before
    again = evaluate_detections(GT, preds)
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert first["map50_95"] < 1.0  # the confident false positive counts


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
        # the generated data use COCO's own area ranges: pycocotools' defaults
        E.evaluate()
        E.accumulate()
        E.summarize()
    assert 0.05 < E.stats[0] < 0.95
    assert ours["map50_95"] == E.stats[0] and ours["map50"] == E.stats[1]
    assert [ours["ap_small"], ours["ap_medium"], ours["ap_large"]] == list(E.stats[3:6])


def random_case(seed: int, n_images: int = 12, n_classes: int = 4) -> tuple[dict, list[dict]]:
    """Ground truth (a few crowds) and predictions: jittered hits, misses, false positives, random scores.

    Odd images are named by their file stem in the predictions, as Ultralytics does for non-numeric names.
    """
    rng = np.random.default_rng(seed)
    W, H = 640, 480
    images, anns, preds = [], [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "file_name": f"img_{i}.jpg", "width": W, "height": H})
        name = f"img_{i}" if i % 2 else i
        for _ in range(int(rng.integers(1, 9))):
            w, h = rng.uniform(6, 250, 2)
            x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
            cat = int(rng.integers(1, n_classes + 1))
            crowd = int(rng.uniform() < 0.08)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": crowd,
                }
            )
            if rng.uniform() < 0.75:  # detected (else missed), jittered, sometimes twice or as another class
                for _ in range(1 + int(rng.uniform() < 0.15)):
                    j = rng.normal(0, 0.12, 4) * [w, h, w, h]
                    c = cat if rng.uniform() < 0.9 else int(rng.integers(1, n_classes + 1))
                    box = [float(v) for v in (x + j[0], y + j[1], max(w + j[2], 1.0), max(h + j[3], 1.0))]
                    preds.append(det(box, float(rng.uniform(0.05, 1.0)), name, c))
        for _ in range(int(rng.integers(0, 8))):  # false positives
            w, h = rng.uniform(4, 200, 2)
            box = [float(rng.uniform(0, W - w)), float(rng.uniform(0, H - h)), float(w), float(h)]
            preds.append(det(box, float(rng.uniform(0, 0.8)), name, int(rng.integers(1, n_classes + 1))))
    cats = [{"id": c, "name": f"class{c}"} for c in range(1, n_classes + 1)]
    return {"images": images, "categories": cats, "annotations": anns}, preds


def test_pycocotools_and_faster_coco_eval_are_distinct_implementations():
    from faster_coco_eval import COCO as FCOCO
    from faster_coco_eval import COCOeval_faster

    # neither replaced by the other (faster_coco_eval.init_as_pycocotools would alias the modules)
    assert COCO.__module__ == "pycocotools.coco" and COCOeval.__module__ == "pycocotools.cocoeval"
    assert not issubclass(FCOCO, COCO) and not issubclass(COCOeval_faster, COCOeval)


# one class and max_dets=10: more detections than max_dets on some images, so the cut matters
@pytest.mark.parametrize("seed,n_classes,max_dets", [(0, 4, 100), (1, 4, 100), (2, 4, 100), (3, 1, 10)])
def test_faster_coco_eval_agrees_with_our_evaluator(seed, n_classes, max_dets):
    gt, preds = random_case(seed, n_classes=n_classes)
    gt_before = copy.deepcopy(gt)
    ours = evaluate_detections(gt, preds, max_dets=max_dets)
    if max_dets < 100:
        assert ours["map50_95"] != evaluate_detections(gt, preds)["map50_95"]
    theirs = faster_coco_map(gt, preds, max_dets=max_dets)
    assert gt == gt_before  # neither evaluator changed the ground truth it was given
    assert 0.05 < ours["map50_95"] < ours["map50"] < 0.95  # a case where a mismatch can show
    assert set(theirs) == {"map50_95", "map50"}
    for k in theirs:
        assert abs(theirs[k] - ours[k]) <= 1e-10, (k, theirs[k], ours[k])


def test_faster_coco_map_reads_files_and_evaluates_without_pycocotools(tmp_path, monkeypatch):
    gt, preds = random_case(5)
    ours = evaluate_detections(gt, preds)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "predictions.json").write_text(json.dumps(preds))

    def refuse(*args, **kwargs):
        raise AssertionError("pycocotools used for evaluation")

    # pycocotools only reads the ground truth to map image ids; loading results and evaluating is
    # faster-coco-eval's own, on the ground truth its own COCO class read
    for name in ("loadRes", "loadAnns", "getAnnIds"):
        monkeypatch.setattr(COCO, name, refuse)
    for name in ("evaluate", "evaluateImg", "computeIoU", "accumulate"):
        monkeypatch.setattr(COCOeval, name, refuse)
    theirs = faster_coco_map(tmp_path / "gt.json", str(tmp_path / "predictions.json"))
    for k in theirs:
        assert abs(theirs[k] - ours[k]) <= 1e-10, k
    with pytest.raises(AssertionError, match="pycocotools used"):
        evaluate_detections(gt, preds)


def test_the_cross_check_notices_one_moved_box():
    gt, preds = random_case(0)
    ours = evaluate_detections(gt, preds)
    # move the top-scoring detection off its object (the random false positives score < 0.8)
    i = int(np.argmax([p["score"] for p in preds]))
    assert preds[i]["score"] > 0.8
    moved = copy.deepcopy(preds)
    x, y, w, h = moved[i]["bbox"]
    moved[i]["bbox"] = [x + 2 * w, y, w, h]
    theirs = faster_coco_map(gt, moved)
    assert abs(theirs["map50_95"] - ours["map50_95"]) > 1e-4  # the check would fail on a changed input
    assert abs(theirs["map50"] - ours["map50"]) > 1e-4
    again = evaluate_detections(gt, moved)
    for k in theirs:
        assert abs(theirs[k] - again[k]) <= 1e-10, k  # ... and both see the same change


def test_faster_coco_map_without_predictions_or_ground_truth():
    gt, _ = random_case(0)
    ours, theirs = evaluate_detections(gt, []), faster_coco_map(gt, [])
    assert theirs == {"map50_95": 0.0, "map50": 0.0} and ours["map50_95"] == ours["map50"] == 0.0
    gt["annotations"] = []
    ours, theirs = evaluate_detections(gt, []), faster_coco_map(gt, [])
    assert all(np.isnan(theirs[k]) and np.isnan(ours[k]) for k in ("map50_95", "map50"))
    with pytest.raises(ValueError, match="no ground truth image"):  # the same loader as evaluate_detections
        faster_coco_map(GT, [det(A, 0.9, image_id="other")])
