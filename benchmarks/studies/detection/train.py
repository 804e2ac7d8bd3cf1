"""The detection study's cell: one (arm, seed) trained and evaluated.

A cell is one (arm, seed): an arm is a YOLO11 model name, variant and scale in one
(``yolo11n``, ``yolo11n-tssa``, ``yolo11s-noattn``, ... : any of :data:`tssa.ultralytics.VARIANTS`
at any of :data:`tssa.ultralytics.SCALES`). :func:`run_detection_cell` trains it with
Ultralytics' own ``YOLO(...).train`` (seeded, ``deterministic=True``; the same seed gives every arm
the same data order and the same initial weights outside the changed block), validates the best
weights with ``val(save_json=True)`` and evaluates Ultralytics' ``predictions.json`` with
pycocotools (:mod:`benchmarks.studies.detection.coco_eval`): AP overall, by size and by occlusion level (true and
box proxy), recall per level at a fixed score; Ultralytics' own mAP is kept beside it under
separate names. It also records params, GFLOPs (counted by ``FlopCounterMode`` at the training
image size, 2 FLOPs per multiply-add, as :mod:`tssa.ultralytics.flops`), inference latency
(median over repeated calls of the fused eval model, batch 1, one thread, several rounds of
``torch.utils.benchmark.Timer.blocked_autorange``), training time (the training epochs,
validation excluded) and the peak memory of the first training step (forward + backward +
optimizer step; CPU: :class:`tssa.utils.LiveTensorTracker`, CUDA: ``max_memory_allocated``).

"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.core.impl import torch_device
from benchmarks.core.runner import POOL_THREADS_ENV
from benchmarks.studies.detection.coco_eval import (
    calibrate_proxy_levels,
    evaluate_detections,
    faster_coco_map,
    gt_counts,
    proxy_agreement,
)


def prepare_data(data: dict[str, Any], cache_dir: Path) -> tuple[Path, Path]:
    """``(data_yaml, coco_gt_json)`` for a cell's ``data``; generated data are made once under ``cache_dir``.

    A real data YAML is checked (:func:`benchmarks.studies.detection.data.real.resolve_data_yaml`; nothing is
    downloaded) and copied with absolute paths; its COCO ground truth is the YAML's ``coco_val``
    key, else ``annotations/instances_val2017.json`` for COCO, else converted from the YOLO labels.
    """
    from benchmarks.core.schema import DataError
    from benchmarks.studies.detection.data.real import resolve_data_yaml, yolo_val_to_coco

    cache_dir = Path(cache_dir)
    if "generated" in data:
        from benchmarks.studies.detection.data.scenes import make_scenes

        args = data["generated"]
        key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
        data_yaml = make_scenes(cache_dir / f"scenes-{key}", **args)  # built once, under its own lock
        cache_labels(data_yaml)
        return data_yaml, data_yaml.parent / "annotations" / "val.json"
    src = Path(data["yaml"]).expanduser()
    d = resolve_data_yaml(src)
    import yaml

    key = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:12]
    out = cache_dir / f"real-{key}"
    out.mkdir(parents=True, exist_ok=True)
    root = Path(d["path"])
    coco = None
    if d.get("coco_val"):
        coco = root / d["coco_val"]
        if not coco.is_file():
            raise DataError(f"data yaml {str(src)!r}: coco_val {str(coco)!r} not found")
    elif (
        str(d["val"]).endswith("val2017.txt") and (root / "annotations" / "instances_val2017.json").is_file()
    ):
        coco = root / "annotations" / "instances_val2017.json"
    if coco is None:
        coco = out / "val_gt.json"
        if not coco.is_file():
            yolo_val_to_coco(d, coco)
    doc = {"path": str(root), "train": d["train"], "val": d["val"], "names": d["names"]}
    (out / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    cache_labels(out / "data.yaml")
    return out / "data.yaml", coco


def cache_labels(data_yaml: Path) -> None:
    """Write Ultralytics' ``labels/*.cache`` of both splits once, under a lock beside ``data_yaml``.

    Every training and validation on a data set reads that cache and writes it when it is missing or
    stale (in place: a process reading it meanwhile can see a partial file). Written here first, it
    is valid for every later cell, which only reads it: cells in parallel never write it."""
    from benchmarks.core.store import file_lock

    with file_lock(data_yaml.with_name(".labels-cache.lock")):
        from tssa.offline import configure_offline

        configure_offline()
        from ultralytics.data.dataset import YOLODataset
        from ultralytics.data.utils import check_det_dataset

        d = check_det_dataset(str(data_yaml))
        for split in ("train", "val"):
            YOLODataset(img_path=d[split], data=d, task="detect", augment=False)


TRAINER_VAL_IMAGES = 8  # the val images the trainer's own validations see


def trainer_data(data_yaml: Path) -> Path:
    """A data YAML for Ultralytics' trainer: the same train split, and for val only the first
    :data:`TRAINER_VAL_IMAGES` val images (copied with their labels beside ``data_yaml``; made once,
    under a lock, and renamed into place when complete).

    With ``val=False`` the trainer still validates after the final epoch and again in its
    ``final_eval``; neither touches the weights (training has ended; ``best.pt`` is the final epoch's
    weights, the only ones validated), and the study evaluates the full val set itself
    (``val(save_json=True)``). On the full set those two validations cost as much as the study's own
    evaluation and change no number the study records."""
    import yaml

    from benchmarks.core.store import file_lock

    data_yaml = Path(data_yaml)
    out = data_yaml.parent.with_name(f"{data_yaml.parent.name}-trainer{TRAINER_VAL_IMAGES}")
    with file_lock(data_yaml.with_name(".trainer-data.lock")):
        if not (out / "data.yaml").is_file():
            from tssa.offline import configure_offline

            configure_offline()
            from ultralytics.data.dataset import YOLODataset
            from ultralytics.data.utils import check_det_dataset

            d = check_det_dataset(str(data_yaml))
            val = YOLODataset(img_path=d["val"], data=d, task="detect", augment=False)
            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            for sub in ("images/val", "labels/val"):
                (tmp / sub).mkdir(parents=True)
            for im, lb in list(zip(val.im_files, val.label_files))[:TRAINER_VAL_IMAGES]:
                shutil.copy2(im, tmp / "images" / "val" / Path(im).name)
                if Path(lb).is_file():
                    shutil.copy2(lb, tmp / "labels" / "val" / Path(lb).name)
            doc = {"path": str(out), "train": d["train"], "val": "images/val", "names": d["names"]}
            (tmp / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
            tmp.rename(out)
            cache_labels(out / "data.yaml")
    return out / "data.yaml"


def _latency(model, imgsz: int, device: str, rounds: int, min_run_time: float) -> tuple[float, int]:
    import torch
    from torch.utils.benchmark import Timer

    x = torch.zeros(1, 3, imgsz, imgsz, device=device)
    times: list[float] = []
    with torch.no_grad():
        model(x)  # warm-up
        for _ in range(rounds):
            m = Timer("model(x)", globals={"model": model, "x": x}, num_threads=1).blocked_autorange(
                min_run_time=min_run_time
            )
            times += m.times  # per-call times of each block
    return statistics.median(times) * 1e3, len(times)


def trained_weights(workdir: Path) -> Path:
    """The weights a trained cell evaluates: ``best.pt``, else ``last.pt``, under ``workdir/train``."""
    w = Path(workdir) / "train" / "weights"
    return w / "best.pt" if (w / "best.pt").is_file() else w / "last.pt"


def measure_latency(weights: Path, params: dict[str, Any]) -> dict[str, float]:
    """``latency_ms`` (median, batch 1, one thread) and ``latency_samples`` of the fused eval model
    of ``weights`` at the cell's image size: a measurement of time, run alone on the machine."""
    from tssa.offline import configure_offline

    configure_offline()
    from ultralytics import YOLO

    import tssa.ultralytics  # noqa: F401  (the TSSA modules a checkpoint names)

    if not Path(weights).is_file():
        raise FileNotFoundError(f"no trained weights at {weights}; the training cell must finish first")
    first = torch_device(params["train"]["device"])
    fused = YOLO(str(weights)).model.float().fuse().eval().to(first)
    lat = params["latency"]
    ms, n = _latency(
        fused, params["imgsz"], next(fused.parameters()).device.type, lat["rounds"], lat["min_run_time"]
    )
    return {"latency_ms": ms, "latency_samples": float(n)}


def transfer_count(weights: str | os.PathLike, cfg: str, nc: int) -> dict[str, float]:
    """What Ultralytics' ``load`` transfers from ``weights`` into the model the trainer builds from the
    YAML ``cfg`` for ``nc`` classes: ``transferred`` (tensors whose name and shape match: Ultralytics'
    own ``intersect_dicts``, the rule its ``load`` applies) of ``transfer_total`` (the model's tensors)."""
    from ultralytics.nn.tasks import DetectionModel, load_checkpoint
    from ultralytics.utils.torch_utils import intersect_dicts

    src, _ = load_checkpoint(str(weights))
    mine = DetectionModel(cfg, nc=nc, verbose=False).state_dict()
    return {"transferred": float(len(intersect_dicts(src.float().state_dict(), mine))),
            "transfer_total": float(len(mine))}  # fmt: skip


@functools.lru_cache(maxsize=8)
def _proxy_levels(train_gt: str, levels: tuple) -> dict[str, tuple[float, float]]:
    """:func:`calibrate_proxy_levels` once per worker process and data set (its files never change)."""
    return calibrate_proxy_levels(Path(train_gt), dict(levels))


def _epoch_times_from_csv(path: Path) -> list[float]:
    """Per-epoch wall times from Ultralytics' ``results.csv`` (its ``time`` column is the time since
    training (re)started; a drop marks a resume)."""
    import csv

    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as fh:
        t = [float(r["time"]) for r in csv.DictReader(fh) if r.get("time")]
    return [b - a if b >= a else b for a, b in zip([0.0, *t[:-1]], t)]


def run_detection_cell(
    params: dict[str, Any],
    workdir: Path,
    *,
    data_dir: Path | None = None,
    on_epoch: Callable[[int, int, float], None] | None = None,
    resume: bool = False,
) -> dict[str, float]:
    """Train and evaluate one cell of :func:`detection_cells`; returns ``{metric: value}`` (see :data:`DETECTION_METRICS`).

    Training artefacts (weights, ``results.csv``, ``predictions.json``) go under ``workdir``
    (``train/`` and ``val/``, replaced when present). Generated data are cached under ``data_dir``
    (default ``workdir / "data"``). ``on_epoch(epoch, epochs, seconds)`` is called after every training
    epoch (1-based epoch, that epoch's wall time). The same params on the same machine give identical accuracy
    metrics (:data:`ACCURACY_METRICS`).

    ``resume`` (a requeued cluster job): continue training from ``workdir/train/weights/last.pt``
    (Ultralytics ``resume``; saved after every epoch, so at most the epoch in progress is lost), or
    only evaluate when that training had finished; without ``last.pt`` the cell trains from scratch.
    Per-epoch times are kept in ``workdir/epoch_times.json`` so ``train_time_s`` counts every epoch
    once. A ``train.device`` such as ``"0,1,2,3"`` trains through Ultralytics' own DDP (it starts
    ``torch.distributed.run`` itself); evaluation and latency then use the first of those GPUs.
    """
    from tssa.offline import TRAIN_DEFAULTS, configure_offline

    configure_offline()
    import torch
    from ultralytics import YOLO

    import tssa.ultralytics as tu
    from benchmarks.core.flops import model_gflops
    from tssa.ultralytics.flops import params as count_params
    from tssa.utils import LiveTensorTracker

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data_yaml, gt_json = prepare_data(params["data"], Path(data_dir) if data_dir else workdir / "data")
    last = workdir / "train" / "weights" / "last.pt"
    resume = resume and last.is_file()
    for sub in ("val",) if resume else ("train", "val"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
    times_file = workdir / "epoch_times.json"
    tr, ev = params["train"], params["eval"]
    device = tr["device"]
    first = torch_device(device)
    threads_before = torch.get_num_threads()
    threads = tr.get("threads") or int(os.environ.get(POOL_THREADS_ENV, 0))  # in a pool, 0 means 1
    if threads:
        torch.set_num_threads(threads)

    finished = False
    if resume:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        finished = ckpt.get("epoch", -1) < 0 or ckpt.get("optimizer") is None  # stripped: training ended
        model = YOLO(str(last))
    else:
        times_file.unlink(missing_ok=True)
        model = YOLO(tu.model_yaml(params["variant"], params["scale"]))
    epoch_times: list[float] = json.loads(times_file.read_text()) if resume and times_file.is_file() else []
    peak: dict[str, Any] = {}

    def pretrain_start(trainer):
        # Ultralytics' select_device (in the trainer's constructor) sets torch's thread count to its own
        # NUM_THREADS (os.cpu_count() - 1, at most 8: one thread on a 2-core machine); the requested
        # count is applied here, after it, so that `threads` is the count the training really runs with
        if threads:
            torch.set_num_threads(threads)

    def epoch_start(trainer):
        peak["t0"] = time.perf_counter()
        del epoch_times[trainer.epoch :]  # a resumed epoch replaces the one that was cut short

    def epoch_end(trainer):
        epoch_times.append(time.perf_counter() - peak.pop("t0"))
        peak["deterministic"] = torch.are_deterministic_algorithms_enabled()  # as Ultralytics set it
        if int(os.environ.get("RANK", -1)) not in (-1, 0):  # under DDP the callbacks run in every rank
            return
        times_file.write_text(json.dumps(epoch_times))
        if on_epoch is not None:
            on_epoch(trainer.epoch + 1, params["epochs"], epoch_times[-1])

    def batch_start(trainer):
        if "bytes" in peak or "tracker" in peak:
            return
        if first.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            peak["base"] = torch.cuda.memory_allocated()
            peak["tracker"] = None
        else:
            peak["tracker"] = LiveTensorTracker(device="cpu").__enter__()

    def batch_end(trainer):
        if "tracker" not in peak or "bytes" in peak:
            return
        t = peak.pop("tracker")
        if t is None:
            torch.cuda.synchronize()
            peak["bytes"] = torch.cuda.max_memory_allocated() - peak["base"]
        else:
            t.__exit__(None, None, None)
            peak["bytes"] = t.peak

    for event, fn in (
        ("on_pretrain_routine_start", pretrain_start),
        ("on_train_epoch_start", epoch_start),
        ("on_train_epoch_end", epoch_end),
        ("on_train_batch_start", batch_start),
        ("on_train_batch_end", batch_end),
    ):
        model.add_callback(event, fn)
    args = {**TRAIN_DEFAULTS, **tr["overrides"]}
    args.update(
        data=str(trainer_data(data_yaml)),  # the trainer's own validations on a few images: see trainer_data
        epochs=params["epochs"],
        imgsz=params["imgsz"],
        batch=params["batch"],
        optimizer=tr["optimizer"],
        lr0=tr["lr0"],
        close_mosaic=tr["close_mosaic"],
        device=device,
        workers=tr["workers"],
        seed=params["seed"],
        deterministic=True,
        val=False,  # the final epoch is still validated (best.pt = last.pt)
        project=str(workdir),
        name="train",
        exist_ok=True,
        verbose=False,
    )
    transfer: dict[str, float] = {}
    if tr.get("pretrained"):
        args["pretrained"] = tr["pretrained"]
        import yaml

        nc = len(yaml.safe_load(Path(data_yaml).read_text())["names"])
        transfer = transfer_count(tr["pretrained"], tu.model_yaml(params["variant"], params["scale"]), nc)
    if resume:  # the checkpoint carries every other argument; these may differ on the new node
        args = {"resume": True, "data": args["data"], "device": device, "workers": tr["workers"],
                "batch": params["batch"], "imgsz": params["imgsz"], "verbose": False}  # fmt: skip
    try:
        if not finished:
            model.train(**args)
        if times_file.is_file():  # every epoch's time, written by this process or (DDP) by rank 0
            epoch_times[:] = json.loads(times_file.read_text())
        elif not epoch_times:  # no callback ran here: Ultralytics' own log
            epoch_times[:] = _epoch_times_from_csv(workdir / "train" / "results.csv")
        weights = trained_weights(workdir)
        trained = YOLO(str(weights))
        val_args = {k: v for k, v in TRAIN_DEFAULTS.items() if k != "deterministic"}
        val_args.update(device=first.removeprefix("cuda:"), workers=tr["workers"])
        val = trained.val(
            data=str(data_yaml),
            imgsz=params["imgsz"],
            batch=params["batch"],
            conf=ev["conf"],
            iou=ev["iou"],
            max_det=ev["max_det"],
            save_json=True,
            project=str(workdir),
            name="val",
            exist_ok=True,
            verbose=False,
            **val_args,
        )
        preds = Path(val.save_dir) / "predictions.json"
        preds = preds if preds.is_file() else []
        levels = {k: tuple(v) for k, v in params["occlusion_levels"].items()}
        # the box proxy's levels are set on train where train has true visibility (generated data)
        train_gt = gt_json.with_name("train.json")
        proxy_levels = _proxy_levels(str(train_gt), tuple(levels.items())) if train_gt.is_file() else None
        out: dict[str, float] = {
            k: float(v)
            for k, v in evaluate_detections(
                gt_json,
                preds,
                levels=levels,
                recall_score=ev["recall_score"],
                recall_iou=ev["recall_iou"],
                max_dets=ev["max_dets"],
                proxy_levels=proxy_levels,
            ).items()
        }
        out.update({k: float(v) for k, v in gt_counts(gt_json, levels, proxy_levels=proxy_levels).items()})
        if proxy_levels is not None:
            agree = proxy_agreement(gt_json, levels, proxy_levels)
            out["proxy_kappa"] = agree.pop("kappa")
            out.update({f"proxy_{k}": v for k, v in agree.items()})
        fce = faster_coco_map(gt_json, preds, max_dets=ev["max_dets"])  # the evaluator, cross-checked
        out["map50_95_fce"], out["map50_fce"] = fce["map50_95"], fce["map50"]
        out.update(transfer)
        out["ul_map50_95"] = float(val.box.map)
        out["ul_map50"] = float(val.box.map50)
        net = trained.model.float()
        out["params"] = float(count_params(net))
        out["gflops"] = float(model_gflops(net, params["imgsz"]))  # the project's FLOP convention
        if params.get("latency"):  # a cell run on its own; the runner times latency in a cell of its own
            out.update(measure_latency(weights, params))
        out["train_time_s"] = float(sum(epoch_times))
        if "deterministic" in peak:
            out["deterministic"] = float(peak["deterministic"])
        if "bytes" in peak:  # not measured here when DDP trained in child processes
            out["train_peak_mib"] = float(peak["bytes"]) / 2**20
    finally:
        if "tracker" in peak and peak["tracker"] is not None:
            peak.pop("tracker").__exit__(None, None, None)
        torch.set_num_threads(threads_before)
    return out
