"""The classification study: ToST against its softmax (ViT-style) and XCA (XCiT-style) controls in timm.

One cell = one (task, model, seed): train a timm model from scratch with timm's own library, then
measure it. Everything that trains is timm's: ``timm.create_model``, ``timm.data`` (dataset,
transforms, loader, data config), ``timm.optim.create_optimizer_v2`` (no weight decay for 1-D
parameters, biases and the names of the model's ``no_weight_decay()``: the class token; the
temperatures are decayed, as the official vision recipe does, see ``ToST.no_weight_decay``),
``timm.scheduler.create_scheduler_v2``, ``timm.loss``, ``timm.data.Mixup``,
``timm.utils.random_seed`` / ``accuracy`` / ``dispatch_clip_grad``. The loop that calls them is the
few lines of :func:`train_model`.

Section schema (``classification:`` of a suite file; pydantic v2, unknown keys refused)::

    classification:
      seeds: [0, 1, 2]                    # every arm of every task at every seed
      measure: {batch: 64, min_run_time: 0.2, rounds: 3}
      tasks:
        digits:                           # path-safe task name
          arms: [tost_tiny_12_p8_224, tost_softmax_tiny_12_p8_224, tost_xca_tiny_12_p8_224]
          model: {depth: 4}               # keyword arguments for timm.create_model, shared by the arms
          data: {name: digits, image_size: 32}
          train: {epochs: 8, batch_size: 64, lr: 1.0e-3, ...}

Per cell (:func:`run_classification_cell`, names in :data:`CELL_METRICS`): ``top1``, ``top5``
(fractions, ``timm.utils.accuracy`` on the validation split), ``val_loss`` (cross-entropy, nats),
and, with the detection study's names and conventions, ``params``, ``gflops`` (one image's forward
pass at the suite's image size, :func:`benchmarks.core.flops.model_gflops`: FlopCounterMode, 2 FLOPs per
multiply-add, attention products included), ``images_per_s`` (eval mode, ``measure.batch`` images:
median of ``torch.utils.benchmark.Timer.blocked_autorange`` blocks over ``rounds``, never a single
call; ``throughput_samples`` blocks), ``train_time_s`` (the training loop) and ``train_peak_mib``
(extra peak memory of one training step, forward + backward, at the training batch size).

Recipe fidelity (the official ToST code, XCiT's ``main.py``): ``train.drop`` maps to timm's
``pos_drop_rate`` and ``proj_drop_rate``, ``train.drop_path`` to ``drop_path_rate``; the evaluated
model is the trained model, not an EMA, unless ``train.model_ema`` is set.

Determinism: ``timm.utils.random_seed(seed)`` before the model is built, again before training
(so augmentation draws do not depend on how many numbers the arm's initialisation used), a
``torch.Generator`` seeded with the cell's seed for the shuffling sampler (every arm sees the same
data order at the same seed), ``torch.use_deterministic_algorithms(True)``, no worker processes.
Same seed, same machine, same threads -> identical weights and metrics. The process's thread count
and deterministic flag are restored after each cell.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from benchmarks.core.metrics import Metric
from benchmarks.core.schema import DataError, Section, validate
from benchmarks.studies.classification.data.digits import create_datasets

KIND = "classification"

# --------------------------------------------------------------------------- metric registry entries
CLASSIFICATION_METRICS = (
    Metric("top1", "1", True, "top-1", r"top-1", 4),
    Metric("top5", "1", True, "top-5", r"top-5", 4),
    Metric("val_loss", "nat", False, "val cross-entropy", r"$\mathcal{L}_{\mathrm{val}}$", 3),
    Metric(
        "throughput_samples", "count", None, "timed blocks behind the throughput", r"$n_{\mathrm{blocks}}$", 0
    ),
    Metric("val_images", "count", None, "validation images", r"$n_{\mathrm{val}}$", 0),
)
# registered by the core (benchmarks.core.metrics), one convention with the detection study: params,
# gflops (FlopCounterMode, 2 per multiply-add, benchmarks.core.flops), images_per_s, train_time_s, train_peak_mib
SHARED_METRICS = ("params", "gflops", "images_per_s", "train_time_s", "train_peak_mib")
CELL_METRICS = (*(m.name for m in CLASSIFICATION_METRICS), *SHARED_METRICS)

_PATH_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ClassificationError(ValueError):
    """A classification section or cell that cannot run as written; the message is one line."""


# --------------------------------------------------------------------------- schema
class _Strict(Section):
    # frozen: a cell's parameters are values (hashable, never changed after validation)
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the images come from and the size the model sees."""

    name: str = "digits"  # digits | folder | any timm.data.create_dataset name (torch/cifar10, ...)
    root: str | None = None  # local folder (never downloaded); required unless name is digits
    image_size: int = Field(32, gt=0)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # digits only
    split_seed: int = 0  # digits only: the split is fixed, independent of the training seed
    train_split: str = "train"
    val_split: str = "validation"
    interpolation: str = "bicubic"
    crop_pct: float = Field(1.0, gt=0.0, le=1.0)


class TrainConfig(_Strict):
    """Arguments of timm's optimizer, scheduler, loss, augmentation and loader factories."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    opt: str = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.05, ge=0.0)
    momentum: float = 0.9
    sched: str = "cosine"
    min_lr: float = Field(1e-5, ge=0.0)
    warmup_lr: float = Field(1e-5, ge=0.0)
    warmup_epochs: int = Field(0, ge=0)
    smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    clip_grad: float | None = None
    # Dropout as the official ToST main.py (XCiT's) sets it: --drop P is timm's pos_drop_rate=P and
    # proj_drop_rate=P (drop_rate, before the classifier, stays 0); --drop-path Q is drop_path_rate=Q.
    drop: float = Field(0.0, ge=0.0, lt=1.0)
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)
    # The evaluated model is the trained ``model`` (the official code reports it); with model_ema the
    # cell evaluates timm's ModelEmaV3 copy instead.
    model_ema: bool = False
    model_ema_decay: float = Field(0.99996, gt=0.0, lt=1.0)
    # augmentation (timm.data.create_transform through create_loader)
    no_aug: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    color_jitter: float = Field(0.4, ge=0.0)
    auto_augment: str | None = None
    re_prob: float = Field(0.0, ge=0.0, le=1.0)
    mixup: float = Field(0.0, ge=0.0)
    cutmix: float = Field(0.0, ge=0.0)
    workers: int = Field(0, ge=0)
    save_checkpoint: bool = False


class MeasureConfig(_Strict):
    """How throughput is timed: ``rounds`` x ``blocked_autorange(min_run_time)`` at ``batch`` images."""

    batch: int = Field(64, ge=1)
    min_run_time: float = Field(0.2, gt=0.0)
    rounds: int = Field(3, ge=1)


class TaskConfig(_Strict):
    arms: list[str] = Field(min_length=1)
    reference: str | None = None  # the arm the others are compared with (default: the first, ToST)
    model: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()

    @field_validator("arms")
    @classmethod
    def _known_models(cls, arms: list[str]) -> list[str]:
        import timm

        import tssa.timm  # noqa: F401  (registers the ToST family)

        unknown = [a for a in arms if not timm.is_model(a)]
        if unknown:
            tost = [n for n in timm.list_models("tost_*") if n.endswith("_p8_224")][:6]
            raise ValueError(
                f"unknown timm model {unknown[0]!r}; registered ToST names include {', '.join(tost)}, ..."
            )
        if len(set(arms)) != len(arms):
            raise ValueError(f"arms repeat a model: {arms}")
        return arms

    @model_validator(mode="after")
    def _buildable(self) -> TaskConfig:
        if self.reference is not None and self.reference not in self.arms:
            raise ValueError(f"reference {self.reference!r} is not one of the arms {self.arms}")
        # Build every arm on the meta device: bad model kwargs and image sizes fail here, not mid-run.
        for arm in self.arms:
            try:
                with torch.device("meta"):
                    _create_model(arm, self, num_classes=2)
            except (TypeError, ValueError, AssertionError) as exc:
                raise ValueError(
                    f"model {arm!r} with {self.model} at {self.data.image_size} px: {_one_line(exc)}"
                ) from None
        return self


class ClassificationSection(_Strict):
    """The ``classification:`` section of a suite file."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    measure: MeasureConfig = MeasureConfig()
    tasks: dict[str, TaskConfig] = Field(min_length=1)
    # region of practical equivalence for "a control matches ToST" on top-1, fixed before any result
    rope: float = Field(0.01, ge=0.0)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)

    @field_validator("tasks")
    @classmethod
    def _path_safe(cls, tasks: dict[str, TaskConfig]) -> dict[str, TaskConfig]:
        for name in tasks:
            if not _PATH_SAFE.match(name):
                raise ValueError(f"task name {name!r} is not path-safe (letters, digits, '.', '_', '-')")
        return tasks

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {seeds}")
        if any(isinstance(x, bool) or x < 0 for x in seeds):
            raise ValueError(f"seeds must be distinct integers >= 0, got {seeds}")
        return seeds


class CellParams(_Strict):
    """One cell's typed parameters (what :func:`expand_cells` produces, flattened)."""

    task: str
    variant: str
    seed: int
    device: str = "cpu"
    threads: int = Field(1, ge=1)
    model: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    measure: MeasureConfig = MeasureConfig()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def parse_classification(section: Any) -> ClassificationSection:
    """Validate a suite's ``classification:`` section (the suite loader calls this).

    Raises:
        ClassificationError: (a ValueError) one line naming the first bad key.
    """
    return validate_section(section)


def check_data(section: ClassificationSection) -> None:
    """Check, without reading or downloading anything, that every task's data can be had.

    Raises:
        DataError: one line naming the missing folder (the embedded digits always exist).
    """
    for name, task in section.tasks.items():
        d = task.data
        if d.name == "digits":
            if d.root is not None:
                raise DataError(f"classification.tasks.{name}.data.root: not used by 'digits'; remove it")
            continue
        if d.root is None:
            raise DataError(
                f"classification.tasks.{name}.data.root: {d.name!r} needs the local folder that holds it "
                "(nothing is downloaded)"
            )
        if not Path(d.root).expanduser().exists():
            raise DataError(
                f"classification.tasks.{name}.data.root: {d.root!r} does not exist; point it at a local copy "
                f"of {d.name!r} (nothing is downloaded) or use data.name: digits"
            )


def validate_section(section: Any) -> ClassificationSection:
    """Validate a ``classification:`` mapping; any error is one :class:`ClassificationError` line.

    >>> validate_section({"tasks": {"d": {"arms": ["tost_tiny_12_p8_224"], "bogus": 1}}})
    Traceback (most recent call last):
    ...
    benchmarks.studies.classification.train.ClassificationError: classification.tasks.d.bogus: unknown key; allowed keys: ['arms', 'data', 'model', 'reference', 'train']
    """
    return validate(ClassificationSection, section, "classification", ClassificationError)


def _flat(prefix: str, model: BaseModel | dict) -> dict[str, Any]:
    items = model.model_dump().items() if isinstance(model, BaseModel) else model.items()
    return {f"{prefix}.{k}": (list(v) if isinstance(v, tuple) else v) for k, v in items}


def expand_cells(section: Any, *, device: str = "cpu", threads: int = 1) -> list[dict[str, Any]]:
    """Cells of a section: one flat dict of typed parameters per (task, arm, seed), in that order.

    Keys: ``kind``, ``task``, ``variant`` (the timm model name), ``seed``, ``device``, ``threads``,
    ``data.*``, ``train.*``, ``measure.*`` and ``model.*`` (the create_model keyword arguments); every
    value is a JSON scalar or a list of scalars. Every key changes the cell's numbers.

    >>> cells = expand_cells({"seeds": [0, 1], "tasks": {"digits": {"arms": ["tost_tiny_12_p8_224"]}}})
    >>> [(c["variant"], c["seed"], c["data.image_size"]) for c in cells]
    [('tost_tiny_12_p8_224', 0, 32), ('tost_tiny_12_p8_224', 1, 32)]
    """
    sec = section if isinstance(section, ClassificationSection) else validate_section(section)
    cells = []
    for task_name, task in sec.tasks.items():
        for arm in task.arms:
            for seed in sec.seeds:
                cells.append(
                    {
                        "kind": KIND,
                        "task": task_name,
                        "variant": arm,
                        "seed": seed,
                        "device": device,
                        "threads": threads,
                        **_flat("data", task.data),
                        **_flat("train", task.train),
                        **_flat("measure", sec.measure),
                        **_flat("model", task.model),
                    }
                )
    return cells


def parse_cell(params: dict[str, Any]) -> CellParams:
    """Flat cell dict (from :func:`expand_cells`, possibly through JSON) -> :class:`CellParams`."""
    nested: dict[str, Any] = {"model": {}, "data": {}, "train": {}, "measure": {}}
    for key, value in params.items():
        head, dot, rest = key.partition(".")
        if dot and head in nested:
            nested[head][rest] = value
        elif key != "kind":
            nested[key] = value
    return validate(CellParams, nested, "cell", ClassificationError)


# --------------------------------------------------------------------------- building blocks
def _create_model(arm: str, task: TaskConfig | CellParams, num_classes: int, **extra):
    import timm

    import tssa.timm  # noqa: F401

    kwargs = dict(task.model)
    kwargs.setdefault("img_size", task.data.image_size)
    if task.train.drop:  # the official --drop (see TrainConfig)
        kwargs.setdefault("pos_drop_rate", task.train.drop)
        kwargs.setdefault("proj_drop_rate", task.train.drop)
    if task.train.drop_path:
        kwargs.setdefault("drop_path_rate", task.train.drop_path)
    return timm.create_model(arm, pretrained=False, num_classes=num_classes, **kwargs, **extra)


def set_deterministic(seed: int, threads: int, device: str) -> None:
    """Seed python, numpy and torch (``timm.utils.random_seed``), pin threads, deterministic kernels."""
    from timm.utils import random_seed

    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    random_seed(seed)


def cell_datasets(cell: CellParams):
    """(train, val) datasets of a cell (:func:`benchmarks.studies.classification.data.digits.create_datasets`)."""
    d = cell.data
    return create_datasets(
        d.name,
        d.root,
        seed=d.split_seed,
        val_fraction=d.val_fraction,
        train_split=d.train_split,
        val_split=d.val_split,
    )


def create_loaders(cell: CellParams, model: torch.nn.Module, datasets=None):
    """(train loader, val loader) from ``timm.data``; the train sampler is seeded with the cell's seed.

    The data config (mean, std, interpolation, crop) is ``timm.data.resolve_data_config`` of the
    model's pretrained config with the suite's image size; images are resized to
    ``(3, image_size, image_size)`` by timm's transforms (the 8 x 8 digits are upsampled).
    """
    from timm.data import create_loader, resolve_data_config

    d, t = cell.data, cell.train
    train_ds, val_ds = datasets if datasets is not None else cell_datasets(cell)
    cfg = resolve_data_config(
        {
            "input_size": (3, d.image_size, d.image_size),
            "interpolation": d.interpolation,
            "crop_pct": d.crop_pct,
        },
        model=model,
    )
    common = dict(
        input_size=cfg["input_size"],
        interpolation=cfg["interpolation"],
        mean=cfg["mean"],
        std=cfg["std"],
        num_workers=t.workers,
        use_prefetcher=False,
        persistent_workers=False,
        device=torch.device(cell.device),
    )
    train_loader = create_loader(
        train_ds,
        batch_size=t.batch_size,
        is_training=True,
        no_aug=t.no_aug,
        scale=t.scale,
        ratio=t.ratio,
        hflip=t.hflip,
        color_jitter=t.color_jitter,
        auto_augment=t.auto_augment,
        re_prob=t.re_prob,
        **common,
    )
    # Same seed -> same order for every arm, whatever else consumed the global generator.
    train_loader.sampler.generator = torch.Generator().manual_seed(cell.seed)
    val_loader = create_loader(
        val_ds, batch_size=t.eval_batch_size, is_training=False, crop_pct=cfg["crop_pct"], **common
    )
    return train_loader, val_loader


def train_model(
    cell: CellParams, workdir: Path | None = None
) -> tuple[torch.nn.Module, Any, dict[str, float]]:
    """Build and train one cell's model: (model in eval mode, val loader, {"train_time", "train_loss"}).

    Per update: forward, timm loss, backward, optional ``dispatch_clip_grad``, optimizer step,
    ``scheduler.step_update``; per epoch ``scheduler.step`` (timm's train.py convention).
    """
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import dispatch_clip_grad, random_seed

    t = cell.train
    device = torch.device(cell.device)
    set_deterministic(cell.seed, cell.threads, cell.device)
    datasets = cell_datasets(cell)
    num_classes = int(datasets[0].num_classes)
    model = _create_model(cell.variant, cell, num_classes=num_classes).to(device)
    train_loader, val_loader = create_loaders(cell, model, datasets)
    optimizer = create_optimizer_v2(
        model, opt=t.opt, lr=t.lr, weight_decay=t.weight_decay, momentum=t.momentum
    )
    scheduler, epochs = create_scheduler_v2(
        optimizer,
        sched=t.sched,
        num_epochs=t.epochs,
        min_lr=t.min_lr,
        warmup_lr=t.warmup_lr,
        warmup_epochs=t.warmup_epochs,
        step_on_epochs=False,
        updates_per_epoch=len(train_loader),
    )
    mixup = None
    if t.mixup > 0 or t.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=t.mixup, cutmix_alpha=t.cutmix, label_smoothing=t.smoothing, num_classes=num_classes
        )
        loss_fn: torch.nn.Module = SoftTargetCrossEntropy()
    elif t.smoothing > 0:
        loss_fn = LabelSmoothingCrossEntropy(smoothing=t.smoothing)
    else:
        loss_fn = torch.nn.CrossEntropyLoss()

    ema = None
    if t.model_ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=t.model_ema_decay)
    random_seed(cell.seed)  # augmentation draws independent of the arm's initialisation
    model.train()
    updates, last_loss = 0, math.nan
    start = time.perf_counter()
    for epoch in range(epochs):
        for images, targets in train_loader:
            images, targets = images.to(device), targets.to(device)
            if mixup is not None:
                images, targets = mixup(images, targets)
            loss = loss_fn(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.clip_grad is not None:
                dispatch_clip_grad(model.parameters(), t.clip_grad)
            optimizer.step()
            updates += 1
            if ema is not None:
                ema.update(model, step=updates)
            scheduler.step_update(num_updates=updates)
            last_loss = float(loss.detach())
        scheduler.step(epoch + 1)
        if not math.isfinite(last_loss):
            raise ClassificationError(
                f"{cell.variant} seed {cell.seed}: training loss is {last_loss} in epoch {epoch}"
            )
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_time = time.perf_counter() - start
    if ema is not None:
        model = ema.module  # the suite asked for the EMA weights to be evaluated
    model.eval()
    if t.save_checkpoint and workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), workdir / "model.pth")
    return model, val_loader, {"train_time": train_time, "train_loss": last_loss}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: str) -> dict[str, float]:
    """``top1``, ``top5`` (fractions, ``timm.utils.accuracy``) and ``val_loss`` (mean cross-entropy, nats)."""
    from timm.utils import accuracy

    model.eval()
    n, loss_sum, c1, c5 = 0, 0.0, 0, 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        logits = model(images)
        k = min(5, logits.shape[-1])
        a1, a5 = accuracy(logits, targets, topk=(1, k))  # percentages of the batch
        b = targets.shape[0]
        loss_sum += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        c1 += round(float(a1) * b / 100.0)  # accuracy() gives percentages; counts are integers
        c5 += round(float(a5) * b / 100.0)
        n += b
    return {"top1": c1 / n, "top5": c5 / n, "val_loss": loss_sum / n, "val_images": float(n)}


def train_step_peak_mib(
    model: torch.nn.Module, batch: int, image_size: int, num_classes: int, device: str
) -> float:
    """Extra peak memory (MiB) of one forward + backward at ``batch`` images, beyond weights and inputs.

    CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats`` minus what was allocated
    before. CPU: :class:`tssa.utils.memory.LiveTensorTracker` (storages created during the step:
    activations, autograd's saved tensors, gradients); both through
    :func:`benchmarks.core.measure.measure_peak_bytes`. Gradients are cleared before and after.
    """
    from benchmarks.core.measure import measure_peak_bytes

    x = torch.randn(batch, 3, image_size, image_size, device=device, generator=None)
    y = torch.arange(batch, device=device) % num_classes
    was_training = model.training
    model.train()
    model.zero_grad(set_to_none=True)

    def step():
        torch.nn.functional.cross_entropy(model(x), y).backward()

    try:
        peak = measure_peak_bytes(step, device)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return peak / 2**20


@torch.no_grad()
def inference_throughput(
    model: torch.nn.Module,
    batch: int,
    image_size: int,
    device: str,
    *,
    min_run_time: float = 0.2,
    rounds: int = 3,
) -> tuple[float, int]:
    """(images/s, number of timed blocks): ``batch / median`` of the per-call times of ``rounds``
    ``torch.utils.benchmark.Timer.blocked_autorange(min_run_time)`` measurements (eval mode, no_grad).
    """
    from torch.utils.benchmark import Timer

    model.eval()
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    model(x)  # warm-up, not timed
    timer = Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=torch.get_num_threads())
    times: list[float] = []
    for _ in range(rounds):
        times.extend(timer.blocked_autorange(min_run_time=min_run_time).times)
    return batch / statistics.median(times), len(times)


def run_classification_cell(
    params: dict[str, Any], workdir: Path | None = None, throughput: bool = True
) -> dict[str, float]:
    """Train and measure one cell; returns every metric of :data:`CELL_METRICS` as floats
    (without ``images_per_s`` and ``throughput_samples`` when ``throughput`` is False: the runner
    times them in a cell of their own, :func:`measure_throughput`). With ``workdir``, the trained
    weights are kept there (``model.pt``).

    ``params``: a dict from :func:`expand_cells`. Raises :class:`ClassificationError` /
    :class:`benchmarks.core.schema.DataError` (one line) before any training for a bad cell.
    """
    from benchmarks.core.flops import model_gflops

    cell = parse_cell(params)
    if cell.device.startswith("cuda") and not torch.cuda.is_available():
        raise ClassificationError(
            f"device {cell.device!r} requested but CUDA is not available; use device: cpu"
        )
    state = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    try:
        return _run_cell(cell, Path(workdir) if workdir is not None else None, model_gflops, throughput)
    finally:  # the process's torch settings as they were (other studies run in the same process)
        torch.set_num_threads(state[0])
        torch.use_deterministic_algorithms(state[1])


def _run_cell(
    cell: CellParams, workdir: Path | None, model_gflops, throughput: bool = True
) -> dict[str, float]:
    model, val_loader, train_stats = train_model(cell, workdir)
    out = evaluate(model, val_loader, cell.device)
    size = cell.data.image_size
    num_classes = int(getattr(model, "num_classes", 0)) or 1
    out["params"] = float(sum(p.numel() for p in model.parameters()))
    out["train_peak_mib"] = train_step_peak_mib(model, cell.train.batch_size, size, num_classes, cell.device)
    model.eval()
    out["gflops"] = model_gflops(model, size)  # the project's FLOP convention (benchmarks.core.flops)
    if workdir is not None:
        torch.save({"state_dict": model.state_dict(), "num_classes": num_classes}, workdir / "model.pt")
    if throughput:
        out.update(_throughput(model, cell))
    out["train_time_s"] = train_stats["train_time"]
    return {k: float(v) for k, v in out.items()}


def _throughput(model: torch.nn.Module, cell: CellParams) -> dict[str, float]:
    tput, n = inference_throughput(model, cell.measure.batch, cell.data.image_size, cell.device,
                                   min_run_time=cell.measure.min_run_time, rounds=cell.measure.rounds)  # fmt: skip
    return {"images_per_s": tput, "throughput_samples": float(n)}


def measure_throughput(params: dict[str, Any], weights: Path) -> dict[str, float]:
    """``images_per_s`` and ``throughput_samples`` of the trained model a training cell kept at
    ``weights`` (``model.pt``), on the cell's threads: a measurement of time, run alone on the machine."""
    cell = parse_cell(params)
    if not Path(weights).is_file():
        raise FileNotFoundError(f"no trained weights at {weights}; the training cell must finish first")
    saved = torch.load(weights, map_location=cell.device, weights_only=True)
    model = _create_model(cell.variant, cell, num_classes=int(saved["num_classes"])).to(cell.device)
    model.load_state_dict(saved["state_dict"])
    before = torch.get_num_threads()
    torch.set_num_threads(cell.threads)
    try:
        return {k: float(v) for k, v in _throughput(model.eval(), cell).items()}
    finally:
        torch.set_num_threads(before)
