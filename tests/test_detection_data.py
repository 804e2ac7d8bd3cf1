"""The generated scenes dataset, the box occlusion proxy and the YOLO -> COCO conversion of real data."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks.studies.detection.data.real import (
    DataError,
    box_occlusion_proxy,
    resolve_data_yaml,
    yolo_val_to_coco,
)
from benchmarks.studies.detection.data.scenes import (
    CLASSES,
    annotate,
    area_thresholds,
    make_scenes,
    size_bucket,
)


def _digest(root: Path) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "data.yaml")
    return hashlib.sha256(
        b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes() for p in files)
    ).hexdigest()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return make_scenes(tmp_path_factory.mktemp("scenes") / "d", n_train=4, n_val=60, imgsz=320, seed=3)


def test_same_arguments_same_bytes(tmp_path):
    kw = dict(n_train=5, n_val=4, imgsz=128, seed=1)
    a, b = make_scenes(tmp_path / "a", **kw), make_scenes(tmp_path / "b", **kw)
    c = make_scenes(tmp_path / "c", **{**kw, "seed": 2})
    assert _digest(a.parent) == _digest(b.parent) != _digest(c.parent)
    # the val images do not depend on n_train
    d = make_scenes(tmp_path / "d", **{**kw, "n_train": 2})
    assert _digest(a.parent / "images/val") == _digest(d.parent / "images/val")
    ja, jd = (json.loads((x.parent / "annotations/val.json").read_text()) for x in (a, d))
    assert ja["images"] == jd["images"] and ja["annotations"] == jd["annotations"]
    assert make_scenes(tmp_path / "a", **kw) == a  # reused as it is
    with pytest.raises(ValueError, match="exists and is not a scenes dataset"):
        make_scenes(tmp_path / "a", **{**kw, "seed": 9})


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_classes=5), "n_classes"),
        (dict(imgsz=16), "imgsz"),
        (dict(min_frac=0.6, max_frac=0.5), "min_frac"),
        (dict(min_objects=4, max_objects=2), "min_objects"),
        (dict(n_imgs=3), "unknown argument"),
        (dict(fence_prob=1.5), "fence_prob"),
    ],
)
def test_bad_arguments_name_the_argument(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        make_scenes(tmp_path / "x", **kw)
    assert not (tmp_path / "x").exists()


def test_cli_writes_the_dataset(tmp_path):
    args = [
        sys.executable,
        "-m",
        "benchmarks.studies.detection.data.scenes",
        str(tmp_path / "cli"),
        "--n-train",
        "2",
        "--n-val",
        "1",
    ]
    r = subprocess.run([*args, "--imgsz", "128"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == tmp_path / "cli" / "data.yaml"
    r = subprocess.run([*args, "--imgsz", "8"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "imgsz" in r.stderr.strip().splitlines()[-1]


def test_half_covered_object_records_half_visible():
    square = CLASSES.index("square")
    back, front = annotate([(square, 10, 10, 20, 20), (square, 20, 10, 20, 20)], 64)
    assert back["visible_fraction"] == 0.5
    assert back["amodal_box"] == [10, 10, 30, 30] and back["box"] == [10, 10, 20, 30]
    assert back["area"] == 200 and back["amodal_area"] == 400
    assert front["visible_fraction"] == 1.0 and front["box"] == front["amodal_box"] == [20, 10, 40, 30]
    # a circle hidden on its right half by a square: about half of its pixels stay visible
    circle = CLASSES.index("circle")
    c, _ = annotate([(circle, 0, 0, 40, 40), (square, 20, 0, 20, 40)], 64)
    assert c["visible_fraction"] == pytest.approx(0.5, abs=0.01)
    assert c["amodal_box"] == [0, 0, 40, 40] and c["box"][2] == 20


def test_a_fence_hides_much_of_an_object_and_leaves_its_outline(tmp_path):
    kw = dict(n_train=1, n_val=40, imgsz=160, seed=5, min_visible=0.3)
    plain = json.loads((make_scenes(tmp_path / "p", **kw).parent / "annotations/val.json").read_text())
    fenced = json.loads(
        (make_scenes(tmp_path / "f", **kw, fence_prob=1.0).parent / "annotations/val.json").read_text()
    )
    vis = lambda doc: np.array([a["visible_fraction"] for a in doc["annotations"]])  # noqa: E731
    assert vis(fenced).min() >= 0.3 and vis(plain).min() >= 0.3  # min_visible still holds under a fence
    assert (vis(fenced) < 0.5).sum() > (vis(plain) < 0.5).sum()  # more heavily occluded objects

    # behind bars an object keeps under half of its pixels but nearly all of its box: its outline shows
    # (measured: 27 such objects with the fence, 8 without it, hidden in the middle by another object)
    def behind_bars(doc):
        return sum(
            a["visible_fraction"] < 0.5
            and a["bbox"][2] * a["bbox"][3] >= 0.9 * a["amodal_bbox"][2] * a["amodal_bbox"][3]
            for a in doc["annotations"]
        )

    assert behind_bars(fenced) > 2 * behind_bars(plain)


def test_proxy_is_the_covered_fraction_of_the_box():
    assert box_occlusion_proxy(np.array([[0, 0, 10, 10], [5, 0, 20, 10]])).tolist() == [0.5, 1 / 3]
    # the union of the other boxes counts, not their sum
    p = box_occlusion_proxy(np.array([[0, 0, 10, 10], [0, 0, 5, 10], [0, 0, 5, 10], [100, 100, 110, 110]]))
    assert p.tolist() == [0.5, 1.0, 1.0, 0.0]
    assert box_occlusion_proxy(np.array([[0, 0, 10, 10], [2, 2, 4, 4], [3, 3, 6, 6]]))[0] == pytest.approx(
        (4 + 9 - 1) / 100
    )
    assert box_occlusion_proxy(np.zeros((0, 4))).shape == (0,)


def test_val_metadata_is_consistent(scenes):
    coco = json.loads((scenes.parent / "annotations/val.json").read_text())
    thresholds = area_thresholds()  # COCO's own pixel thresholds at the network's input
    assert thresholds == (1024.0, 9216.0) and coco["info"]["area_thresholds"] == [1024.0, 9216.0]
    anns = coco["annotations"]
    assert len(coco["categories"]) == len(CLASSES) >= 6
    assert {a["category_id"] for a in anns} == set(range(1, len(CLASSES) + 1))
    by_image: dict[int, list[dict]] = {}
    for a in anns:
        x, y, w, h = a["bbox"]
        ax, ay, aw, ah = a["amodal_bbox"]
        assert ax <= x and ay <= y and x + w <= ax + aw and y + h <= ay + ah  # visible box inside amodal box
        assert a["area"] <= a["amodal_area"] and a["area"] <= w * h
        assert a["visible_fraction"] == pytest.approx(a["area"] / a["amodal_area"], abs=1e-6)
        assert a["visible_fraction"] >= 0.2 - 1e-9
        assert a["size_bucket"] == size_bucket(a["area"], thresholds)
        by_image.setdefault(a["image_id"], []).append(a)
    for image_id, group in by_image.items():
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in group)])
        assert [a["occlusion_proxy"] for a in group] == pytest.approx(
            box_occlusion_proxy(boxes).tolist(), abs=1e-6
        )
        lines = (scenes.parent / f"labels/val/{image_id:05d}.txt").read_text().splitlines()
        yolo = np.array([[float(v) for v in line.split()] for line in lines])
        assert yolo[:, 0].astype(int).tolist() == [a["category_id"] - 1 for a in group]
        xyxy = np.c_[
            yolo[:, 1] - yolo[:, 3] / 2,
            yolo[:, 2] - yolo[:, 4] / 2,
            yolo[:, 1] + yolo[:, 3] / 2,
            yolo[:, 2] + yolo[:, 4] / 2,
        ]
        np.testing.assert_allclose(xyxy * 320, boxes, atol=1e-3)
    # every size bucket and occlusion level is well populated; sizes span >= 16x
    n = len(anns)
    # COCO's pixel thresholds at 320 px and the default sizes (9.6-160 px): few objects reach 96^2
    for bucket, share in (("small", 0.15), ("medium", 0.15), ("large", 0.05)):
        assert sum(a["size_bucket"] == bucket for a in anns) >= share * n, bucket
    vis = np.array([a["visible_fraction"] for a in anns])
    assert (
        (vis >= 0.9).sum() >= 0.3 * n
        and ((vis >= 0.5) & (vis < 0.9)).sum() >= 0.08 * n
        and (vis < 0.5).sum() >= 0.04 * n
    )
    sides = np.array([max(a["amodal_bbox"][2:]) for a in anns])
    assert sides.max() / sides.min() >= 16


def test_yolo_val_split_to_coco(scenes, tmp_path):
    data = resolve_data_yaml(scenes)
    out = yolo_val_to_coco(data, tmp_path / "gt.json")
    got = json.loads(out.read_text())
    ref = json.loads((scenes.parent / "annotations/val.json").read_text())
    assert [im["id"] for im in got["images"]] == [im["id"] for im in ref["images"]]
    assert [c["id"] for c in got["categories"]] == [c["id"] for c in ref["categories"]]
    assert len(got["annotations"]) == len(ref["annotations"])
    for g, r in zip(got["annotations"], ref["annotations"]):
        assert (g["image_id"], g["category_id"]) == (r["image_id"], r["category_id"])
        assert g["bbox"] == pytest.approx(r["bbox"], abs=1e-3)
        assert g["occlusion_proxy"] == pytest.approx(r["occlusion_proxy"], abs=1e-4)


def test_missing_data_is_one_clear_line(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        resolve_data_yaml(tmp_path / "nope.yaml")
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "path": str(tmp_path / "nowhere"),
                "train": "images/train",
                "val": "images/val",
                "names": {0: "a"},
                "download": "https://example.invalid/x.zip",
            }
        )
    )
    with pytest.raises(DataError) as e:
        resolve_data_yaml(bad)
    msg = str(e.value)
    assert "\n" not in msg and "nothing is downloaded" in msg and "nowhere" in msg
    assert not (tmp_path / "nowhere").exists()
