"""The detection study's suite section: its schema, its metrics, its arms and the cells it expands to.

A cell is one (arm, seed): an arm is a YOLO11 model name, variant and scale in one
(``yolo11n``, ``yolo11n-tssa``, ``yolo11s-noattn``, ... : any of :data:`tssa.ultralytics.VARIANTS`
at any of :data:`tssa.ultralytics.SCALES`). Training and evaluation of a cell:
:mod:`benchmarks.studies.detection.train`.

>>> suite = parse_detection({"arms": ["yolo11n", "yolo11n-tssa"], "seeds": [0, 1],
...     "data": {"generated": {"n_train": 8, "n_val": 4, "imgsz": 128}}, "train": {"imgsz": 128, "epochs": 1}})
>>> [(c["arm"], c["seed"]) for c in detection_cells(suite)]
[('yolo11n', 0), ('yolo11n-tssa', 0), ('yolo11n', 1), ('yolo11n-tssa', 1)]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_serializer, model_validator

from benchmarks.core.schema import Section, validate
from benchmarks.studies.detection.coco_eval import DEFAULT_LEVELS

__all__ = [
    "DETECTION_METRICS",
    "SHARED_METRICS",
    "CELL_METRICS",
    "DetectionSection",
    "parse_detection",
    "detection_cells",
    "trunk_cells",
    "parse_arm",
    "check_data",
    "gpu_count",
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
        "latency_samples": _m("count", None, "latency samples behind the median", r"$n_{\mathrm{lat}}$", 0),
        "gt_small": _m("count", None, "val objects, small", r"$n_S$", 0),
        "gt_medium": _m("count", None, "val objects, medium", r"$n_M$", 0),
        "gt_large": _m("count", None, "val objects, large", r"$n_L$", 0),
        "map50_95_fce": _m(
            "1", True, "mAP50-95 (faster-coco-eval, cross-check)", r"mAP$_{50:95}^{\mathrm{fce}}$", 4
        ),
        "map50_fce": _m("1", True, "mAP50 (faster-coco-eval, cross-check)", r"mAP$_{50}^{\mathrm{fce}}$", 4),
        "transferred": _m("count", None, "tensors transferred from the trunk", r"$n_{\mathrm{transfer}}$", 0),
        "transfer_total": _m("count", None, "tensors of the model", r"$n_{\mathrm{tensors}}$", 0),
        "proxy_kappa": _m(
            "1",
            None,
            "Cohen's kappa, box proxy vs true occlusion level (val)",
            r"$\kappa_{\mathrm{proxy}}$",
            3,
        ),
    }
    for t in _LEVELS:
        for q in _LEVELS:
            out[f"proxy_confusion_{t}_{q}"] = _m(
                "count", None, f"val objects: true level {t}, proxy level {q}", rf"$n_{{{t},{q}}}$", 0
            )
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
# registered by the core (benchmarks.core.metrics): one convention for every study that trains
SHARED_METRICS = ("params", "gflops", "latency_ms", "train_time_s", "train_peak_mib")
CELL_METRICS = (*DETECTION_METRICS, *SHARED_METRICS)  # what one cell returns
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


class GeneratedData(Section):
    """Arguments of :func:`benchmarks.studies.detection.data.scenes.make_scenes` (defaults as there)."""

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
    fence_prob: float = Field(0.0, ge=0, le=1)

    @model_serializer(mode="wrap")
    def _drop_no_fence(self, handler):
        # without a fence the files are those of the generator before the option: so is the identity
        out = handler(self)
        if out.get("fence_prob") == 0.0:
            out.pop("fence_prob")
        return out

    @model_validator(mode="after")
    def _check(self):
        from benchmarks.studies.detection.data.scenes import ScenesConfig

        ScenesConfig(**self.model_dump()).check()  # ValueError naming the argument
        return self


class DataSpec(Section):
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


class TrainSpec(Section):
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


class EvalSpec(Section):
    """Validation (Ultralytics' NMS settings) and the COCO evaluation settings."""

    conf: float = Field(0.001, ge=0, lt=1)
    iou: float = Field(0.7, gt=0, le=1)
    max_det: int = Field(300, ge=1)
    max_dets: int = Field(100, ge=1, description="COCO's detections per image")
    recall_score: float = Field(0.3, ge=0, lt=1)
    recall_iou: float = Field(0.5, gt=0, le=1)


class LatencySpec(Section):
    """Latency: ``rounds`` x ``blocked_autorange(min_run_time)`` of the fused model at batch 1."""

    rounds: int = Field(3, ge=1)
    min_run_time: float = Field(0.5, gt=0)


class Claim(Section):
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


class WarmStart(Section):
    """A warm start: every (arm, seed) fine-tuned from a trunk trained first, in the same run.

    The public forks build the TSSA model and ``.load("yolo11n.pt")``: everything outside the
    attention transfers and the attention starts fresh. Here the trunk is a model *without*
    attention trained on the study's data (``arm``, default ``yolo11<scale>-noattn``), so that no
    attention arm starts with trained attention. ``mode``: ``shared`` (one trunk, seed ``seed``,
    for every seed: the estimand "fine-tuned from one common trunk, as users fine-tune from one
    public checkpoint") or ``per_seed`` (one trunk per seed, trained with that seed). The trunk
    trains with the section's ``train`` settings except ``epochs``, ``close_mosaic`` and ``lr0``
    given here, on ``threads`` torch threads (more than one: alone on the machine).
    """

    arm: str | None = None
    epochs: int = Field(ge=1)
    seed: int = Field(0, ge=0)
    mode: Literal["shared", "per_seed"] = "shared"
    close_mosaic: int | None = Field(None, ge=0)
    lr0: float | None = Field(None, gt=0)
    threads: int = Field(1, ge=1)

    @field_validator("arm")
    @classmethod
    def _trunk_arm(cls, v: str | None) -> str | None:
        return v if v is None else _arm(v)


_V2_KEYS = ("warm_start", "floor", "controls")  # written only when set: older runs keep their configuration


class DetectionSection(Section):
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
    warm_start: WarmStart | None = None
    floor: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="a claim whose metric both arms average under it is not testable (AP units)",
    )
    controls: list[str] | None = Field(
        None, description="further references every claim is tested against (default: the no-attention arm)"
    )

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler):
        out = handler(self)
        for k in _V2_KEYS:
            if out.get(k) is None:
                out.pop(k, None)
        return out

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
        for c in self.controls or []:
            if c not in self.arms or c == self.reference:
                raise ValueError(
                    f"control {c!r} must be one of the arms other than the reference {self.arms}"
                )
        ws = self.warm_start
        if ws is not None:
            if self.train.pretrained:
                raise ValueError(
                    "give train.pretrained (transfer from a file) or warm_start (a trunk), not both"
                )
            scale = parse_arm(self.reference)[1]
            if ws.arm is None:
                ws.arm = f"yolo11{scale}-noattn"
            t_variant, t_scale = parse_arm(ws.arm)
            p345 = t_variant.endswith("-p345")
            other = [
                a
                for a in self.arms
                if parse_arm(a)[1] != t_scale or parse_arm(a)[0].endswith("-p345") != p345
            ]
            if other:
                raise ValueError(
                    f"warm_start: arms {other} differ from the trunk {ws.arm!r} in scale or layer layout (the P3-P5 "
                    "variants move Detect from index 23 to 26, so an index-keyed transfer would drop their head); "
                    "give them a suite of their own with a trunk of their layout, or train them from scratch"
                )
        return self


def parse_detection(section: Any, where: str = "detection") -> DetectionSection:
    """Validate a suite's ``detection:`` section.

    Raises:
        ValueError: one line naming the first bad key (``detection.train.epochs: ...``).
    """
    return validate(DetectionSection, section, where)


def trunk_cells(section: DetectionSection) -> list[dict[str, Any]]:
    """The warm start's trunks as cells of :func:`detection_cells`' form (``role`` ``"trunk"``): one
    (``shared``) or one per seed (``per_seed``); none without a warm start."""
    ws = section.warm_start
    if ws is None:
        return []
    seeds = [ws.seed] if ws.mode == "shared" else list(section.seeds)
    base = detection_cells(section.model_copy(update={"arms": [ws.arm], "seeds": seeds, "warm_start": None}))
    out = []
    for p in base:
        train = dict(p["train"], threads=ws.threads)
        if ws.close_mosaic is not None:
            train["close_mosaic"] = ws.close_mosaic
        if ws.lr0 is not None:
            train["lr0"] = ws.lr0
        out.append({**p, "epochs": ws.epochs, "train": train, "role": "trunk"})
    return out


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
    if "generated" in data:  # the generator's version is part of the data's identity
        from benchmarks.studies.detection.data.scenes import GENERATOR_VERSION

        data["generated"]["version"] = GENERATOR_VERSION
    ws = section.warm_start
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
            if ws is not None:  # fine-tuned from the trunk of this seed (its cell: trunk_cells)
                cells[-1]["trunk_seed"] = ws.seed if ws.mode == "shared" else seed
    return cells


def check_data(section: DetectionSection) -> None:
    """Check, without downloading or generating anything, that the section's data can be had.

    Generated data always can; a data YAML must exist with its train and val images, and weights
    to transfer from (``train.pretrained``) must be on disk: a run never trains from scratch in
    their place without saying so (for ``--dry-run`` too).

    Raises:
        benchmarks.core.schema.DataError: one line naming the missing file or folder.
    """
    from benchmarks.core.schema import DataError

    if section.data.yaml is not None:
        from benchmarks.studies.detection.data.real import resolve_data_yaml

        resolve_data_yaml(section.data.yaml)
    w = section.train.pretrained
    if w and not Path(w).expanduser().is_file():
        raise DataError(
            f"detection.train.pretrained: {w!r} not found (nothing is downloaded): put the weights there, "
            "or remove 'pretrained' to train from scratch"
        )


def gpu_count(device: str) -> int:
    """GPUs an Ultralytics ``device`` string names: ``"cpu"`` 0, ``"0"`` 1, ``"0,1,2,3"`` 4 (DDP).

    >>> gpu_count("cpu"), gpu_count("0"), gpu_count("0,1,2,3"), gpu_count("cuda:1")
    (0, 1, 4, 1)
    """
    d = device.strip().lower().removeprefix("cuda:")
    if d in ("cpu", "mps", ""):
        return 0
    if d == "cuda":
        return 1
    return len([x for x in d.replace("[", "").replace("]", "").split(",") if x.strip()])
