"""COCO box evaluation by pycocotools, by object size and by occlusion level, from Ultralytics' predictions.json.

Everything that matches detections to ground truth is pycocotools' ``COCOeval``; this module only
chooses which ground truth counts and reads the accumulated arrays.

- **Overall:** ``map50_95`` (AP averaged over IoU 0.50:0.05:0.95, 101 recall points, 100
  detections per image: COCO's AP) and ``map50``.
- **By size:** ``ap_small`` / ``ap_medium`` / ``ap_large`` with COCO's area ranges, or the scaled
  thresholds that the ground truth JSON names in ``info.area_thresholds`` (the generated data
  does: COCO's 32^2 / 96^2 times ``(imgsz/640)^2``). As in COCO, ground truth outside a range is
  ignored and so are unmatched detections whose box area is outside it.
- **By occlusion level** (default ``none``: visible >= 0.9, ``partial``: 0.5-0.9, ``heavy``:
  < 0.5): ``ap_occ_<level>`` from the annotated ``visible_fraction`` (generated data) and
  ``ap_occ_<level>_proxy`` from the box proxy ``1 - occlusion_proxy``
  (:func:`benchmarks.studies.detection.data.real.box_occlusion_proxy`). Ground truth outside the level is *ignored,
  not deleted* (a detection that matches it is neither a true nor a false positive), through
  :class:`SubsetCOCOeval`, whose ``_prepare`` keeps the annotation's own ``ignore`` flag
  (pycocotools overwrites it with ``iscrowd``: cocoapi issues #123 and #466). A detection that
  matches nothing has no occlusion level and counts as a false positive in every level.
- **Recall by occlusion level at a fixed score** (the Occluded-COCO protocol, with boxes):
  ``recall_occ_<level>[_proxy]`` = the fraction of the level's ground truth matched one-to-one by
  pycocotools (same class, IoU >= ``recall_iou``, default 0.5) by a detection with score >=
  ``recall_score`` (default 0.3). Recall needs no occlusion level for false positives.

A stratum without ground truth gives NaN (pycocotools' -1).

Ultralytics' ``predictions.json`` (``val(save_json=True)``) names an image by its file stem, as an
int when numeric, and a class ``c`` as ``c + 1`` (COCO's 91 ids for COCO itself); boxes are
``[x, y, w, h]`` in original pixels. :func:`load_predictions` maps string stems back to the ground
truth's image ids by file name.

:func:`faster_coco_map` cross-checks ``map50_95`` and ``map50`` with an independent implementation,
faster-coco-eval (the evaluator Ultralytics adopted), on the same ground truth and predictions.

>>> gt = {"images": [{"id": 1, "file_name": "1.png", "width": 10, "height": 10}],
...       "categories": [{"id": 1, "name": "a"}],
...       "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4],
...                        "area": 16, "iscrowd": 0, "visible_fraction": 1.0}]}
>>> dt = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "score": 0.9}]
>>> r = evaluate_detections(gt, dt)
>>> round(r["map50_95"], 6), round(r["ap_occ_none"], 6), r["recall_occ_none"]
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = [
    "DEFAULT_LEVELS",
    "SubsetCOCOeval",
    "load_gt",
    "load_predictions",
    "evaluate_detections",
    "faster_coco_map",
    "average_precision",
    "level_of",
    "calibrate_proxy_levels",
    "proxy_agreement",
]

# visible fraction in [low, high); "none" includes 1.0
DEFAULT_LEVELS: dict[str, tuple[float, float]] = {
    "none": (0.9, 1.0),
    "partial": (0.5, 0.9),
    "heavy": (0.0, 0.5),
}
COCO_AREA = (32.0**2, 96.0**2)
BIG = 1e10


def level_of(visible: float, levels: Mapping[str, tuple[float, float]] = DEFAULT_LEVELS) -> str | None:
    """The name of the level with ``low <= visible < high`` (``high == 1`` includes 1), else None."""
    for name, (lo, hi) in levels.items():
        if lo <= visible < hi or (hi >= 1.0 and lo <= visible):
            return name
    return None


class SubsetCOCOeval(COCOeval):
    """``COCOeval`` that honours each ground truth's ``ignore`` flag and can ignore a subset.

    pycocotools' ``_prepare`` sets ``gt["ignore"] = gt["iscrowd"]``, discarding the annotation's own
    ``ignore``. Here the effective flag is ``iscrowd or ignore or not keep(gt)``, written to copies
    of the annotations so the ground truth object is never changed. With ``keep=None`` and no
    ``ignore`` fields the result is exactly pycocotools'. Box, segm and keypoint types as upstream.
    """

    def __init__(
        self,
        cocoGt: COCO | None = None,
        cocoDt: COCO | None = None,
        iouType: str = "bbox",
        keep: Callable[[dict], bool] | None = None,
    ) -> None:
        super().__init__(cocoGt, cocoDt, iouType)
        self.keep = keep

    def _prepare(self) -> None:
        p = self.params
        gt_ids = self.cocoGt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds if p.useCats else [])
        dt_ids = self.cocoDt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds if p.useCats else [])
        gts = [dict(g) for g in self.cocoGt.loadAnns(gt_ids)]
        dts = self.cocoDt.loadAnns(dt_ids)
        if p.iouType == "segm":
            for ann, coco in [(g, self.cocoGt) for g in gts] + [(d, self.cocoDt) for d in dts]:
                ann["segmentation"] = coco.annToRLE(ann)
        for gt in gts:
            ignore = bool(gt.get("iscrowd", 0)) or bool(gt.get("ignore", 0))
            if p.iouType == "keypoints":
                ignore = ignore or gt["num_keypoints"] == 0
            if self.keep is not None and not self.keep(gt):
                ignore = True
            gt["ignore"] = int(ignore)
        self._gts = defaultdict(list)
        self._dts = defaultdict(list)
        for gt in gts:
            self._gts[gt["image_id"], gt["category_id"]].append(gt)
        for dt in dts:
            self._dts[dt["image_id"], dt["category_id"]].append(dt)
        self.evalImgs = defaultdict(list)
        self.eval = {}


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def load_gt(gt: str | os.PathLike | dict) -> COCO:
    """A pycocotools ``COCO`` from a path or a dict (copied), with ``occlusion_proxy`` on every annotation."""
    from benchmarks.studies.detection.data.real import add_occlusion_proxy

    data = json.loads(Path(gt).read_text()) if isinstance(gt, (str, os.PathLike)) else copy.deepcopy(gt)
    if data["annotations"] and "occlusion_proxy" not in data["annotations"][0]:
        add_occlusion_proxy(data)
    coco = COCO()
    coco.dataset = data
    with _quiet():
        coco.createIndex()
    return coco


def load_predictions(gt: COCO, predictions: str | os.PathLike | list[dict]) -> list[dict]:
    """Predictions as a list with the ground truth's image ids (string stems mapped by file name).

    Raises:
        ValueError: a prediction names an image that the ground truth does not have.
    """
    preds = (
        json.loads(Path(predictions).read_text())
        if isinstance(predictions, (str, os.PathLike))
        else predictions
    )
    ids = set(gt.getImgIds())
    by_stem = {Path(im["file_name"]).stem: im["id"] for im in gt.dataset["images"] if "file_name" in im}
    out = []
    for p in preds:
        iid = p["image_id"]
        if iid not in ids:
            key = str(iid)
            if key not in by_stem:
                raise ValueError(
                    f"prediction for image {iid!r} has no ground truth image (by id or file stem); "
                    "were the predictions made on this val split?"
                )
            iid = by_stem[key]
        out.append(
            {"image_id": iid, "category_id": p["category_id"], "bbox": list(p["bbox"]), "score": p["score"]}
        )
    return out


def _load_res(gt: COCO, preds: list[dict]) -> COCO:
    if preds:
        # loadRes only adds keys (segmentation, area, id, iscrowd) to each record: copies of the records do
        with _quiet():
            return gt.loadRes([dict(p) for p in preds])
    empty = COCO()  # pycocotools' loadRes cannot take an empty list
    empty.dataset = {
        "images": list(gt.dataset["images"]),
        "categories": gt.dataset["categories"],
        "annotations": [],
    }
    with _quiet():
        empty.createIndex()
    return empty


def average_precision(E: COCOeval, iou: float | None = None, area: int = 0, max_dets: int = -1) -> float:
    """AP from an accumulated ``COCOeval``: mean of ``precision[T, :, :, area, max_dets]`` over entries > -1.

    ``iou=None`` averages every IoU threshold (COCO's AP); otherwise the threshold ``iou``. NaN when
    no category has ground truth, as ``summarize`` prints -1.
    """
    p = E.eval["precision"]  # (T, R, K, A, M)
    if iou is not None:
        t = np.where(np.isclose(E.params.iouThrs, iou))[0]
        p = p[t]
    p = p[..., area, max_dets]
    p = p[p > -1]
    return float(p.mean()) if p.size else math.nan


def _run(E: COCOeval) -> COCOeval:
    with _quiet():
        E.evaluate()
        E.accumulate()
    return E


def _recall(E: COCOeval) -> float:
    """Fraction of non-ignored ground truth matched at the (single) IoU threshold of an evaluated E."""
    matched = total = 0
    for e in E.evalImgs:
        if e is None:
            continue
        keep = ~np.asarray(e["gtIgnore"], dtype=bool)
        total += int(keep.sum())
        matched += int((np.asarray(e["gtMatches"])[0][keep] > 0).sum())
    return matched / total if total else math.nan


def evaluate_detections(
    gt: str | os.PathLike | dict | COCO,
    predictions: str | os.PathLike | list[dict],
    *,
    levels: Mapping[str, tuple[float, float]] = DEFAULT_LEVELS,
    area_thresholds: tuple[float, float] | None = None,
    recall_score: float = 0.3,
    recall_iou: float = 0.5,
    max_dets: int = 100,
    proxy_levels: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, float]:
    """COCO box metrics overall, by size and by occlusion level (true and proxy); see the module doc.

    ``gt``: COCO ground truth (path, dict or ``COCO``); ``predictions``: Ultralytics'
    ``predictions.json`` (path or list). ``area_thresholds``: (small/medium, medium/large) areas in
    pixels; default ``info.area_thresholds`` of the ground truth, else COCO's (32^2, 96^2).
    ``proxy_levels``: the levels on the proxy's scale ``1 - occlusion_proxy`` (set on train by
    :func:`calibrate_proxy_levels`); default ``levels``. Returns ``{"map50_95", "map50", "ap_small", "ap_medium", "ap_large", "ap_occ_<level>",
    "recall_occ_<level>" (when ``visible_fraction`` is annotated), "ap_occ_<level>_proxy",
    "recall_occ_<level>_proxy"}``, values in [0, 1] or NaN.
    """
    coco_gt = gt if isinstance(gt, COCO) else load_gt(gt)
    if coco_gt.dataset["annotations"] and "occlusion_proxy" not in coco_gt.dataset["annotations"][0]:
        coco_gt = load_gt(coco_gt.dataset)
    preds = load_predictions(coco_gt, predictions)
    coco_dt = _load_res(coco_gt, preds)
    small, large = area_thresholds or tuple(coco_gt.dataset.get("info", {}).get("area_thresholds", COCO_AREA))

    # pycocotools sorts maxDets and evaluates images at the last: read the index of max_dets
    dets = sorted({1, 10, max_dets})
    md = dets.index(max_dets)

    def params(E: COCOeval, areas: list[list[float]], labels: list[str]) -> COCOeval:
        E.params.maxDets = list(dets)
        E.params.areaRng, E.params.areaRngLbl = areas, labels
        return E

    E = _run(
        params(
            SubsetCOCOeval(coco_gt, coco_dt, "bbox"),
            [[0, BIG], [0, small], [small, large], [large, BIG]],
            ["all", "small", "medium", "large"],
        )
    )
    out = {
        "map50_95": average_precision(E, max_dets=md),
        "map50": average_precision(E, iou=0.5, max_dets=md),
        "ap_small": average_precision(E, area=1, max_dets=md),
        "ap_medium": average_precision(E, area=2, max_dets=md),
        "ap_large": average_precision(E, area=3, max_dets=md),
    }
    confident = _load_res(coco_gt, [p for p in preds if p["score"] >= recall_score])
    anns = coco_gt.dataset["annotations"]
    fields = [("visible_fraction", "")] if anns and "visible_fraction" in anns[0] else []
    fields.append(("occlusion_proxy", "_proxy"))
    for field, suffix in fields:

        def visible(a: dict, field=field) -> float:
            return a[field] if field == "visible_fraction" else 1.0 - a[field]

        lv = levels if field == "visible_fraction" or proxy_levels is None else proxy_levels
        for name in levels:

            def keep(a: dict, name=name, visible=visible, lv=lv) -> bool:
                return level_of(visible(a), lv) == name

            E = _run(params(SubsetCOCOeval(coco_gt, coco_dt, "bbox", keep=keep), [[0, BIG]], ["all"]))
            out[f"ap_occ_{name}{suffix}"] = average_precision(E, max_dets=md)
            R = SubsetCOCOeval(coco_gt, confident, "bbox", keep=keep)
            R.params.iouThrs = np.array([recall_iou])
            R = params(R, [[0, BIG]], ["all"])
            R.params.maxDets = [max_dets]  # images are matched at the last entry
            with _quiet():
                R.evaluate()
            out[f"recall_occ_{name}{suffix}"] = _recall(R)
    return out


def calibrate_proxy_levels(
    gt: str | os.PathLike | dict | COCO, levels: Mapping[str, tuple[float, float]] = DEFAULT_LEVELS
) -> dict[str, tuple[float, float]]:
    """The occlusion levels on the box proxy's scale (``1 - occlusion_proxy``), set on ``gt`` (train):
    the cuts, among the midpoints between the proxy's distinct values (at most 41 candidates, at its
    quantiles), whose levels agree best with the true ones by Cohen's kappa (scikit-learn's
    ``cohen_kappa_score``), levels in order of their lower bound; the top level keeps its upper bound.

    >>> gt = {"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": [
    ...     {"id": i, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0,
    ...      "visible_fraction": v, "occlusion_proxy": q} for i, (v, q) in enumerate(
    ...      [(0.3, 0.9), (0.6, 0.6), (0.95, 0.2), (1.0, 0.0)], 1)]}
    >>> {k: tuple(round(x, 3) for x in v) for k, v in calibrate_proxy_levels(gt).items()}
    {'none': (0.6, 1.0), 'partial': (0.25, 0.6), 'heavy': (0.0, 0.25)}
    """
    import itertools

    from sklearn.metrics import cohen_kappa_score

    anns = (gt if isinstance(gt, COCO) else load_gt(gt)).dataset["annotations"]
    if not anns or "visible_fraction" not in anns[0]:
        raise ValueError("calibrating the box proxy needs ground truth with a visible_fraction per object")
    order = sorted(levels, key=lambda k: levels[k][0])
    truth = [level_of(a["visible_fraction"], levels) for a in anns]
    proxy = np.array([1.0 - a["occlusion_proxy"] for a in anns])
    u = np.unique(proxy)
    mids = (u[:-1] + u[1:]) / 2 if len(u) > 1 else u
    cands = np.unique(np.quantile(mids, np.linspace(0, 1, 41), method="nearest"))
    best, best_cuts = -np.inf, None
    for cuts in itertools.combinations(cands, len(order) - 1):
        pred = [order[i] for i in np.searchsorted(np.asarray(cuts), proxy, side="right")]
        k = cohen_kappa_score(truth, pred, labels=order)
        if k > best:  # the first best in candidate order: deterministic
            best, best_cuts = k, cuts
    bounds = [0.0, *map(float, best_cuts), levels[order[-1]][1]]
    out = {name: (bounds[i], bounds[i + 1]) for i, name in enumerate(order)}
    return {k: out[k] for k in levels}


def proxy_agreement(
    gt: str | os.PathLike | dict | COCO,
    levels: Mapping[str, tuple[float, float]] = DEFAULT_LEVELS,
    proxy_levels: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, float]:
    """How the box proxy's occlusion level agrees with the true one on ``gt`` (val): Cohen's kappa
    (``kappa``, scikit-learn's ``cohen_kappa_score``) and the confusion table (scikit-learn's
    ``confusion_matrix``) as ``confusion_<true>_<proxy>`` counts."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    anns = (gt if isinstance(gt, COCO) else load_gt(gt)).dataset["annotations"]
    lv = proxy_levels or levels
    truth = [level_of(a["visible_fraction"], levels) for a in anns]
    proxy = [level_of(1.0 - a["occlusion_proxy"], lv) for a in anns]
    names = list(levels)
    cm = confusion_matrix(truth, proxy, labels=names)
    out = {"kappa": float(cohen_kappa_score(truth, proxy, labels=names))}
    out.update(
        {f"confusion_{t}_{q}": float(cm[i, j]) for i, t in enumerate(names) for j, q in enumerate(names)}
    )
    return out


def faster_coco_map(
    gt: str | os.PathLike | dict | COCO,
    predictions: str | os.PathLike | list[dict],
    *,
    max_dets: int = 100,
) -> dict[str, float]:
    """``{"map50_95", "map50"}`` by faster-coco-eval's own ``COCO`` and ``COCOeval_faster``.

    Same inputs as :func:`evaluate_detections`, whose overall values it should reproduce: the ground
    truth is read by faster-coco-eval (from the file, or a copy of the dict); the predictions go
    through :func:`load_predictions`, so string stems map to the same image ids. Without
    predictions the value is 0.0 and without ground truth NaN, as in :func:`evaluate_detections`.
    faster-coco-eval, like plain pycocotools, ignores a ground truth only when ``iscrowd``: with
    annotations flagged ``ignore`` the two differ (see :class:`SubsetCOCOeval`).
    """
    from faster_coco_eval import COCO as FCOCO
    from faster_coco_eval import COCOeval_faster

    src = gt.dataset if isinstance(gt, COCO) else gt
    preds = load_predictions(load_gt(src), predictions)
    with _quiet():
        coco_gt = FCOCO(src if isinstance(src, dict) else str(src), use_deepcopy=True)
        E = COCOeval_faster(coco_gt, coco_gt.loadRes(preds), "bbox")
        E.params.maxDets = [max_dets]
        E.evaluate()
        E.accumulate()
    p = np.asarray(E.eval["precision"])[..., 0, -1]  # (T, R, K) at area "all" and max_dets

    def mean(a: np.ndarray) -> float:
        return float(a[a > -1].mean()) if (a > -1).any() else math.nan

    return {"map50_95": mean(p), "map50": mean(p[np.isclose(E.params.iouThrs, 0.5)])}


def gt_counts(
    gt: str | os.PathLike | dict | COCO,
    levels: Mapping[str, tuple[float, float]] = DEFAULT_LEVELS,
    area_thresholds: tuple[float, float] | None = None,
    proxy_levels: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, int]:
    """Number of non-crowd ground truth objects per size bucket and occlusion level (true and proxy;
    the proxy's levels ``proxy_levels``, default ``levels``)."""
    coco_gt = gt if isinstance(gt, COCO) else load_gt(gt)
    small, large = area_thresholds or tuple(coco_gt.dataset.get("info", {}).get("area_thresholds", COCO_AREA))
    anns = [a for a in coco_gt.dataset["annotations"] if not a.get("iscrowd", 0)]
    out = {
        "gt_small": sum(a["area"] < small for a in anns),
        "gt_medium": sum(small <= a["area"] < large for a in anns),
        "gt_large": sum(a["area"] >= large for a in anns),
    }
    for name in levels:
        if anns and "visible_fraction" in anns[0]:
            out[f"gt_occ_{name}"] = sum(level_of(a["visible_fraction"], levels) == name for a in anns)
        if anns and "occlusion_proxy" in anns[0]:
            out[f"gt_occ_{name}_proxy"] = sum(
                level_of(1 - a["occlusion_proxy"], proxy_levels or levels) == name for a in anns
            )
    return out
