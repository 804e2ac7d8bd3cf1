"""The detection study: a suite's ``detection:`` section, its cells, and one cell trained and evaluated.

A cell is one (arm, seed): an arm is a YOLO11 model name, variant and scale in one
(``yolo11n``, ``yolo11n-tssa``, ``yolo11s-noattn``, ... : any of :data:`tssa.ultralytics.VARIANTS`
at any of :data:`tssa.ultralytics.SCALES`). :func:`run_detection_cell` trains it with
Ultralytics' own ``YOLO(...).train`` (seeded, ``deterministic=True``; the same seed gives every arm
the same data order and the same initial weights outside the changed block), validates the best
weights with ``val(save_json=True)`` and evaluates Ultralytics' ``predictions.json`` with
pycocotools (:mod:`benchmarks.coco_eval`): AP overall, by size and by occlusion level (true and
box proxy), recall per level at a fixed score; Ultralytics' own mAP is kept beside it under
separate names. It also records params, GFLOPs (counted by ``FlopCounterMode`` at the training
image size, 2 FLOPs per multiply-add, as :mod:`tssa.ultralytics.flops`), inference latency
(median over repeated calls of the fused eval model, batch 1, one thread, several rounds of
``torch.utils.benchmark.Timer.blocked_autorange``), training time (the training epochs,
validation excluded) and the peak memory of the first training step (forward + backward +
optimizer step; CPU: :class:`tssa.utils.LiveTensorTracker`, CUDA: ``max_memory_allocated``).

>>> suite = parse_detection({"arms": ["yolo11n", "yolo11n-tssa"], "seeds": [0, 1],
...     "data": {"generated": {"n_train": 8, "n_val": 4, "imgsz": 128}}, "train": {"imgsz": 128, "epochs": 1}})
>>> [(c["arm"], c["seed"]) for c in detection_cells(suite)]
[('yolo11n', 0), ('yolo11n-tssa', 0), ('yolo11n', 1), ('yolo11n-tssa', 1)]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from benchmarks.coco_eval import DEFAULT_LEVELS, evaluate_detections, gt_counts

__all__ = [
    "DETECTION_METRICS",
    "DetectionSection",
    "parse_detection",
    "detection_cells",
    "run_detection_cell",
    "parse_arm",
    "prepare_data",
    "check_data",
    "ACCURACY_METRICS",
]

_LEVELS = tuple(DEFAULT_LEVELS)


def _m(unit: str, hib: bool | None, label: str, latex: str, precision: int) -> dict[str, Any]:
    return dict(unit=unit, higher_is_better=hib, label=label, latex=latex, precision=precision)


def _metrics() -> dict[str, dict[str, Any]]:
    out = {
        "map50_95": _m("1", True, "mAP50-95 (pycocotools)", r"mAP$_{50:95}$", 4),
        "map50": _m("1", True, "mAP50 (pycocotools)", r"mAP$_{50}$", 4),
        "ap_small": _m("1", True, "AP small", r"AP$_S$", 4),
        "ap_medium": _m("1", True, "AP medium", r"AP$_M$", 4),
        "ap_large": _m("1", True, "AP large", r"AP$_L$", 4),
        "ul_map50_95": _m("1", True, "mAP50-95 (Ultralytics)", r"mAP$_{50:95}^{\mathrm{UL}}$", 4),
        "ul_map50": _m("1", True, "mAP50 (Ultralytics)", r"mAP$_{50}^{\mathrm{UL}}$", 4),
        "params": _m("count", None, "parameters", r"params", 0),
        "gflops": _m("GFLOPs", False, "GFLOPs (counted)", r"GFLOPs", 2),
        "latency_ms": _m("ms", False, "inference latency (median, batch 1)", r"latency (ms)", 2),
        "latency_samples": _m("count", None, "latency samples behind the median", r"$n_{\mathrm{lat}}$", 0),
        "train_time_s": _m("s", False, "training time", r"train time (s)", 1),
        "train_peak_mib": _m("MiB", False, "training-step peak memory", r"train peak (MiB)", 1),
        "gt_small": _m("count", None, "val objects, small", r"$n_S$", 0),
        "gt_medium": _m("count", None, "val objects, medium", r"$n_M$", 0),
        "gt_large": _m("count", None, "val objects, large", r"$n_L$", 0),
    }
    for lv in _LEVELS:
        for suffix, what, tex in (("", "", ""), ("_proxy", " (box proxy)", r"^{\mathrm{proxy}}")):
            out[f"ap_occ_{lv}{suffix}"] = _m(
                "1", True, f"AP, {lv} occlusion{what}", rf"AP$_{{\mathrm{{{lv}}}}}{tex}$", 4
            )
            out[f"recall_occ_{lv}{suffix}"] = _m(
                "1", True, f"recall at score>=thr, {lv} occlusion{what}", rf"R$_{{\mathrm{{{lv}}}}}{tex}$", 4
            )
            out[f"gt_occ_{lv}{suffix}"] = _m(
                "count", None, f"val objects, {lv} occlusion{what}", rf"$n_{{\mathrm{{{lv}}}}}{tex}$", 0
            )
    return out


# name -> unit, higher_is_better (None: neither), plain label, LaTeX label, printing precision (decimals)
DETECTION_METRICS: dict[str, dict[str, Any]] = _metrics()
ACCURACY_METRICS = tuple(
    k for k, v in DETECTION_METRICS.items() if v["unit"] == "1"
)  # must repeat exactly for the same params

_ARM = re.compile(r"^yolo11([a-z])(.*)$")


def parse_arm(arm: str) -> tuple[str, str]:
    """``"yolo11n-tssa"`` -> ``("yolo11-tssa", "n")``.

    Raises:
        ValueError: not a known variant at a known scale (the message lists them).
    """
    from tssa.ultralytics import SCALES, VARIANTS

    m = _ARM.match(arm)
    if m is None or m.group(1) not in SCALES or f"yolo11{m.group(2)}" not in VARIANTS:
        names = ", ".join(f"yolo11{{{','.join(SCALES)}}}{v[len('yolo11') :]}" for v in VARIANTS)
        raise ValueError(f"unknown arm {arm!r}; choose one of {names}")
    return f"yolo11{m.group(2)}", m.group(1)


def _arm(v: str) -> str:
    parse_arm(v)
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GeneratedData(_Strict):
    """Arguments of :func:`benchmarks.data.scenes.make_scenes` (defaults as there)."""

    n_train: int = Field(64, ge=1)
    n_val: int = Field(32, ge=1)
    imgsz: int = Field(320, ge=32)
    seed: int = Field(0, ge=0)
    n_classes: int = Field(8, ge=6, le=8)
    min_objects: int = Field(3, ge=1)
    max_objects: int = Field(10, ge=1)
    min_frac: float = Field(0.03, gt=0, le=0.9)
    max_frac: float = Field(0.5, gt=0, le=0.9)
    overlap_prob: float = Field(0.4, ge=0, le=1)
    min_visible: float = Field(0.2, gt=0, le=1)
    distractors: int = Field(6, ge=0)
    clutter: float = Field(1.0, ge=0, le=2)

    @model_validator(mode="after")
    def _check(self):
        from benchmarks.data.scenes import ScenesConfig

        ScenesConfig(**self.model_dump()).check()  # ValueError naming the argument
        return self


class DataSpec(_Strict):
    """Exactly one of ``generated`` (the scenes generator's arguments) or ``yaml`` (an Ultralytics data YAML)."""

    generated: GeneratedData | None = None
    yaml: str | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.generated is None) == (self.yaml is None):
            raise ValueError(
                "give exactly one of 'generated' (generator arguments) or 'yaml' (a data YAML path)"
            )
        return self


class TrainSpec(_Strict):
    """Ultralytics training arguments; ``overrides`` may set any other key of Ultralytics' ``default.yaml``."""

    imgsz: int = Field(640, ge=32)
    epochs: int = Field(100, ge=1)
    batch: int = Field(16, ge=1)
    optimizer: str = "auto"
    lr0: float = Field(0.01, gt=0)
    close_mosaic: int = Field(10, ge=0)
    device: str = "cpu"
    workers: int = Field(0, ge=0)
    threads: int = Field(
        0,
        ge=0,
        description="torch threads while training (0: Ultralytics' default, os.cpu_count() - 1 at most 8 on CPU)",
    )
    pretrained: str | None = Field(
        None, description="weights to transfer from, used only when the file exists"
    )
    overrides: dict[str, int | float | str | bool] = {}

    @field_validator("imgsz")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"must be a multiple of 32, got {v}")
        return v

    @field_validator("overrides")
    @classmethod
    def _known(cls, v: dict) -> dict:
        from tssa.offline import configure_offline

        configure_offline()
        from ultralytics.cfg import DEFAULT_CFG_DICT

        fixed = {
            "data",
            "model",
            "project",
            "name",
            "seed",
            "deterministic",
            "save_json",
            "exist_ok",
            "resume",
        }
        fixed |= set(TrainSpec.model_fields) - {"overrides"}
        for k in v:
            if k in fixed:
                raise ValueError(f"{k!r} is set by the suite or the harness, not through overrides")
            if k not in DEFAULT_CFG_DICT:
                raise ValueError(f"{k!r} is not an Ultralytics training argument")
        return v


class EvalSpec(_Strict):
    """Validation (Ultralytics' NMS settings) and the COCO evaluation settings."""

    conf: float = Field(0.001, ge=0, lt=1)
    iou: float = Field(0.7, gt=0, le=1)
    max_det: int = Field(300, ge=1)
    max_dets: int = Field(100, ge=1, description="COCO's detections per image")
    recall_score: float = Field(0.3, ge=0, lt=1)
    recall_iou: float = Field(0.5, gt=0, le=1)


class LatencySpec(_Strict):
    """Latency: ``rounds`` x ``blocked_autorange(min_run_time)`` of the fused model at batch 1."""

    rounds: int = Field(3, ge=1)
    min_run_time: float = Field(0.5, gt=0)


class Claim(_Strict):
    """A claim tested by a paired comparison: ``arm`` is better than the reference on ``metric``."""

    name: str
    arm: str
    metric: str

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in DETECTION_METRICS or DETECTION_METRICS[v]["higher_is_better"] is None:
            ok = sorted(k for k, m in DETECTION_METRICS.items() if m["higher_is_better"] is not None)
            raise ValueError(f"unknown metric {v!r}; choose one of {ok}")
        return v


def _default_claims() -> list[Claim]:
    return [
        Claim(name="TSSA improves small objects", arm="yolo11n-tssa", metric="ap_small"),
        Claim(name="TSSA improves large objects", arm="yolo11n-tssa", metric="ap_large"),
        Claim(name="TSSA improves partially occluded objects", arm="yolo11n-tssa", metric="ap_occ_partial"),
        Claim(name="TSSA improves heavily occluded objects", arm="yolo11n-tssa", metric="ap_occ_heavy"),
    ]


class DetectionSection(_Strict):
    """The ``detection:`` section of a suite file."""

    arms: list[Annotated[str, AfterValidator(_arm)]] = Field(min_length=1)
    reference: str | None = Field(
        None, description="the arm every other arm is compared with (default: the first)"
    )
    seeds: list[int] = Field(min_length=1)
    data: DataSpec
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()
    latency: LatencySpec = LatencySpec()
    occlusion_levels: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_LEVELS))
    rope: float = Field(
        0.005, ge=0, description="region of practical equivalence, +-rope in AP units (0.005 = 0.5 AP points)"
    )
    alpha: float = Field(0.05, gt=0, lt=1)
    holm_family: list[str] = Field(
        default_factory=lambda: ["ap_small", "ap_medium", "ap_large", *(f"ap_occ_{lv}" for lv in _LEVELS)]
    )
    claims: list[Claim] | None = None

    @field_validator("arms")
    @classmethod
    def _arms(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"arms repeat: {v}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if any(s < 0 for s in v) or len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct integers >= 0, got {v}")
        return v

    @field_validator("occlusion_levels")
    @classmethod
    def _levels(cls, v: dict) -> dict:
        if set(v) != set(DEFAULT_LEVELS):
            raise ValueError(f"levels must be exactly {list(DEFAULT_LEVELS)}, got {list(v)}")
        spans = sorted(v.values())
        if spans[0][0] != 0.0 or spans[-1][1] != 1.0 or any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
            raise ValueError(f"levels must cut [0, 1] into adjacent [low, high) ranges, got {v}")
        return v

    @field_validator("holm_family")
    @classmethod
    def _family(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in DETECTION_METRICS]
        if bad:
            raise ValueError(f"unknown metric(s) {bad}; choose from {sorted(DETECTION_METRICS)}")
        return v

    @model_validator(mode="after")
    def _cross(self):
        if self.reference is None:
            self.reference = self.arms[0]
        if self.reference not in self.arms:
            raise ValueError(f"reference {self.reference!r} is not one of the arms {self.arms}")
        if self.claims is None:  # the default claims, for the TSSA arm of the reference's scale when present
            scale = parse_arm(self.reference)[1]
            tssa = f"yolo11{scale}-tssa"
            self.claims = (
                [c.model_copy(update={"arm": tssa}) for c in _default_claims()]
                if tssa in self.arms and tssa != self.reference
                else []
            )
        for c in self.claims:
            if c.arm not in self.arms or c.arm == self.reference:
                raise ValueError(
                    f"claim {c.name!r}: arm {c.arm!r} must be one of the arms other than the reference"
                )
        return self


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def parse_detection(section: Any, where: str = "detection") -> DetectionSection:
    """Validate a suite's ``detection:`` section.

    Raises:
        ValueError: one line naming the first bad key (``detection.train.epochs: ...``).
    """
    if not isinstance(section, dict):
        raise ValueError(f"{where}: must be a mapping, got {type(section).__name__}")
    try:
        return DetectionSection.model_validate(section)
    except ValidationError as e:
        err = e.errors()[0]
        key = _loc(tuple(p for p in err["loc"] if p not in ("function-after",)))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parent = DetectionSection
            for p in err["loc"][:-1]:
                field = parent.model_fields.get(p) if isinstance(p, str) else None
                ann = getattr(field, "annotation", None)
                parent = next(
                    (
                        t
                        for t in getattr(ann, "__args__", (ann,))
                        if isinstance(t, type) and issubclass(t, BaseModel)
                    ),
                    None,
                )
                if parent is None:
                    break
            allowed = f"; allowed: {sorted(parent.model_fields)}" if parent is not None else ""
            msg = f"unknown key{allowed}"
        path = f"{where}.{key}" if key else where
        raise ValueError(f"{path}: {msg}") from None


def detection_cells(section: DetectionSection) -> list[dict[str, Any]]:
    """The cells of a section, seed-major (every arm of seed 0, then of seed 1, ...): plain typed dicts.

    Each: ``arm``, ``variant``, ``scale``, ``seed``, ``imgsz``, ``epochs``, ``batch`` (the identity),
    and ``data``, ``train``, ``eval``, ``latency``, ``occlusion_levels`` (everything else that
    changes the numbers; ``train.pretrained`` is kept only when that file exists now).
    """
    train = section.train.model_dump()
    if train["pretrained"] and not Path(train["pretrained"]).expanduser().is_file():
        train["pretrained"] = None  # transfer only from weights on disk
    elif train["pretrained"]:
        train["pretrained"] = str(Path(train["pretrained"]).expanduser().resolve())
    data = section.data.model_dump(exclude_none=True)
    cells = []
    for seed in section.seeds:
        for arm in section.arms:
            variant, scale = parse_arm(arm)
            cells.append(
                {
                    "arm": arm,
                    "variant": variant,
                    "scale": scale,
                    "seed": seed,
                    "imgsz": section.train.imgsz,
                    "epochs": section.train.epochs,
                    "batch": section.train.batch,
                    "data": data,
                    "train": train,
                    "eval": section.eval.model_dump(),
                    "latency": section.latency.model_dump(),
                    "occlusion_levels": {k: list(v) for k, v in section.occlusion_levels.items()},
                }
            )
    return cells


def check_data(section: DetectionSection) -> None:
    """Check, without downloading or generating anything, that the section's data can be had.

    Generated data always can; a data YAML must exist with its train and val images (for
    ``--dry-run``).

    Raises:
        benchmarks.data.real.DataError: one line naming the missing file or folder.
    """
    if section.data.yaml is not None:
        from benchmarks.data.real import resolve_data_yaml

        resolve_data_yaml(section.data.yaml)


def prepare_data(data: dict[str, Any], cache_dir: Path) -> tuple[Path, Path]:
    """``(data_yaml, coco_gt_json)`` for a cell's ``data``; generated data are made once under ``cache_dir``.

    A real data YAML is checked (:func:`benchmarks.data.real.resolve_data_yaml`; nothing is
    downloaded) and copied with absolute paths; its COCO ground truth is the YAML's ``coco_val``
    key, else ``annotations/instances_val2017.json`` for COCO, else converted from the YOLO labels.
    """
    from benchmarks.data.real import DataError, resolve_data_yaml, yolo_val_to_coco

    cache_dir = Path(cache_dir)
    if "generated" in data:
        from benchmarks.data.scenes import make_scenes

        args = data["generated"]
        key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
        data_yaml = make_scenes(cache_dir / f"scenes-{key}", **args)
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
    return out / "data.yaml", coco


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


def torch_device(device: str) -> str:
    """The torch device of an Ultralytics ``device`` string (the first GPU of a DDP list).

    >>> torch_device("cpu"), torch_device("0"), torch_device("2,3"), torch_device("cuda:1")
    ('cpu', 'cuda:0', 'cuda:2', 'cuda:1')
    """
    d = device.strip().lower().strip("[]")
    if d in ("cpu", "mps"):
        return d
    d = d.removeprefix("cuda:").removeprefix("cuda").split(",")[0].strip()
    return f"cuda:{d or 0}"


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
    from benchmarks.flops import model_gflops
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
    tr, ev, lat = params["train"], params["eval"], params["latency"]
    device = tr["device"]
    first = torch_device(device)
    threads_before = torch.get_num_threads()
    if tr.get("threads"):
        torch.set_num_threads(tr["threads"])

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
        if tr.get("threads"):
            torch.set_num_threads(tr["threads"])

    def epoch_start(trainer):
        peak["t0"] = time.perf_counter()
        del epoch_times[trainer.epoch :]  # a resumed epoch replaces the one that was cut short

    def epoch_end(trainer):
        epoch_times.append(time.perf_counter() - peak.pop("t0"))
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
        data=str(data_yaml),
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
    if tr.get("pretrained"):
        args["pretrained"] = tr["pretrained"]
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
        weights = workdir / "train" / "weights" / "best.pt"
        if not weights.is_file():
            weights = workdir / "train" / "weights" / "last.pt"
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
        levels = {k: tuple(v) for k, v in params["occlusion_levels"].items()}
        out: dict[str, float] = {
            k: float(v)
            for k, v in evaluate_detections(
                gt_json,
                preds if preds.is_file() else [],
                levels=levels,
                recall_score=ev["recall_score"],
                recall_iou=ev["recall_iou"],
                max_dets=ev["max_dets"],
            ).items()
        }
        out.update({k: float(v) for k, v in gt_counts(gt_json, levels).items()})
        out["ul_map50_95"] = float(val.box.map)
        out["ul_map50"] = float(val.box.map50)
        net = trained.model.float()
        out["params"] = float(count_params(net))
        out["gflops"] = float(model_gflops(net, params["imgsz"]))  # the project's FLOP convention
        fused = YOLO(str(weights)).model.float().fuse().eval().to(first)
        out["latency_ms"], n = _latency(
            fused, params["imgsz"], next(fused.parameters()).device.type, lat["rounds"], lat["min_run_time"]
        )
        out["latency_samples"] = float(n)
        out["train_time_s"] = float(sum(epoch_times))
        if "bytes" in peak:  # not measured here when DDP trained in child processes
            out["train_peak_mib"] = float(peak["bytes"]) / 2**20
    finally:
        if "tracker" in peak and peak["tracker"] is not None:
            peak.pop("tracker").__exit__(None, None, None)
        torch.set_num_threads(threads_before)
    return out
