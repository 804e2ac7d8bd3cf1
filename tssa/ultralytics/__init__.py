"""YOLO11 variants with TSSA, softmax or no attention, as a plug-in to Ultralytics.

``import tssa.ultralytics`` applies the offline settings (:func:`tssa.offline.configure_offline`;
``TSSA_OFFLINE=0`` opts out), imports ultralytics, and registers the modules of
:mod:`tssa.ultralytics.modules` and the model YAMLs in ``tssa/ultralytics/cfg/``; no file of the
installed ultralytics package is edited. Needs Ultralytics >= 8.4.113 (tagged optimizer parameter
groups since 8.4.3, see :func:`exempt_from_weight_decay`; ``C2PSA`` below 64 channels since 8.4.113);
the import refuses older releases.
Every variant comes at the scales n/s/m/l/x (the scale is read from the file name, as for stock
models):

=====================  ==================================================================
``yolo11``             stock (Ultralytics' own YAML, untouched): softmax ``C2PSA`` at P5
``yolo11-tssa``        ``C2PSA``'s attention replaced by TSSA (:class:`C2TSSA`), same heads
``yolo11-noattn``      the same block without a token mixer (:class:`C2NoAttn`), ffn kept
``yolo11-softmax-p345`` stock plus a softmax ``C2PSA`` (n=1) on each of the P3/P4/P5 head inputs
``yolo11-tssa-p345``   ``yolo11-tssa`` plus a :class:`C2TSSA` (n=1) on each of the P3/P4/P5 inputs
=====================  ==================================================================

How the registration works: ``parse_model`` resolves a YAML module name through the globals of
``ultralytics.nn.tasks`` and fills in channel and repeat arguments only for a fixed set of stock
classes. The names are therefore added to those globals, and ``parse_model`` is wrapped: a layer
naming one of our modules is built by the stock code as ``C2PSA`` (same arguments: ``c1, c2, n, e``)
and then replaced by our module with the same arguments, which takes over the stand-in's weights
outside the token mixer (``cv1``, ``cv2``, ``m.*.ffn``). So under the same seed every weight outside
``attn`` starts equal to stock YOLO11's, and the variants differ from stock only in the mixer.

What the import changes in the process, all of it no-ops for stock models:

- the environment and fonts of :mod:`tssa.offline` (unless ``TSSA_OFFLINE=0``);
- ``ultralytics.nn.tasks``: the names in :data:`MODULES` become globals, ``parse_model`` is wrapped
  (above) and ``check_yaml`` is wrapped so that bare names like ``yolo11n-tssa.yaml`` resolve to the
  files shipped here when no such file exists in the working directory;
- ``BaseTrainer.build_optimizer`` is wrapped so that TSSA's temperatures skip weight decay
  (:func:`exempt_from_weight_decay`), whichever optimizer Ultralytics builds, as the official ToST
  language recipe does; its vision recipe decays them.

>>> import tssa.ultralytics
>>> from ultralytics import YOLO
>>> model = YOLO("yolo11n-tssa.yaml")
>>> type(model.model.model[10]).__name__
'C2TSSA'
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
from copy import deepcopy
from pathlib import Path

from tssa.offline import TRAIN_DEFAULTS, configure_offline, offline_enabled, place_fonts

if offline_enabled():
    configure_offline()  # before ultralytics is imported: it reads its environment at import

# keep equal to the lower bound in pyproject.toml: 8.4.3 is the first release whose optimizer builder tags its
# parameter groups (exempt_from_weight_decay needs them), 8.4.113 the first whose C2PSA builds below 64 channels
# (the stand-in of every -p345 layer at scale n)
MIN_ULTRALYTICS = (8, 4, 113)


def _check_version(version: str) -> None:
    found = tuple(int(x) for x in re.findall(r"\d+", version)[:3])
    if found < MIN_ULTRALYTICS:
        need = ".".join(map(str, MIN_ULTRALYTICS))
        raise ImportError(
            f"tssa.ultralytics needs ultralytics>={need}, found "
            f"{version}; upgrade with: pip install 'ultralytics>={need}'"
        )


_check_version(importlib.metadata.version("ultralytics"))

import ultralytics.nn.tasks as _tasks  # noqa: E402
from ultralytics.engine.trainer import BaseTrainer as _BaseTrainer  # noqa: E402
from ultralytics.nn.modules import C2PSA  # noqa: E402
from ultralytics.utils import USER_CONFIG_DIR as _USER_CONFIG_DIR  # noqa: E402

if offline_enabled():
    place_fonts(_USER_CONFIG_DIR)  # in the config dir Ultralytics uses, so it never downloads them

from tssa.nn import TokenStatisticsAttention  # noqa: E402

from .modules import C2TSSA, C2NoAttn, MixerPSABlock, TokenStatisticsAttention2d  # noqa: E402

__all__ = [
    "C2TSSA",
    "C2NoAttn",
    "MixerPSABlock",
    "TokenStatisticsAttention2d",
    "CFG_DIR",
    "VARIANTS",
    "SCALES",
    "MODULES",
    "model_yaml",
    "configure_offline",
    "TRAIN_DEFAULTS",
    "exempt_from_weight_decay",
]

CFG_DIR = Path(__file__).resolve().parent / "cfg"
SCALES = ("n", "s", "m", "l", "x")
VARIANTS = ("yolo11", "yolo11-tssa", "yolo11-noattn", "yolo11-softmax-p345", "yolo11-tssa-p345")
# YAML name -> class; each is built by parse_model in the place of the stock class it mirrors.
MODULES: dict[str, type] = {"C2TSSA": C2TSSA, "C2NoAttn": C2NoAttn}
_STAND_IN = "C2PSA"


def model_yaml(variant: str, scale: str) -> str:
    """The name to load with ``YOLO(...)``: ``model_yaml("yolo11-tssa", "n") == "yolo11n-tssa.yaml"``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {list(SCALES)}")
    return f"yolo11{scale}{variant[len('yolo11') :]}.yaml"


class _Capture(logging.Filter):
    """Holds back log records while the stock parser prints its layer table."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(record.getMessage())
        return False


def _table_line(line: str, layer) -> str:
    # parse_model prints f"{i:>3}{f!s:>20}{n:>3}{np:10.0f}  {type:<45}{args!s:<30}"; swap np and type.
    return f"{line[:26]}{layer.np:10.0f}  {layer.type:<45}{line[83:]}"


def _parse_model(d, ch, verbose=True):
    """``parse_model`` that also builds the modules in :data:`MODULES` (see the module docstring)."""
    rows = d.get("backbone", []) + d.get("head", [])
    ours = {i: row[2] for i, row in enumerate(rows) if row[2] in MODULES}
    if not ours:
        return _stock_parse_model(d, ch, verbose)
    d = deepcopy(d)
    for row in d["backbone"] + d["head"]:
        if row[2] in MODULES:
            row[2] = _STAND_IN
    logger = logging.getLogger(_tasks.LOGGER.name)
    capture = _Capture()
    logger.addFilter(capture)
    try:
        layers, save = _stock_parse_model(d, ch, verbose)
    finally:
        logger.removeFilter(capture)
    for i, name in ours.items():
        stock, args = layers[i], rows[i][3]
        if not isinstance(stock, C2PSA):
            raise ValueError(
                f"layer {i} ({name}): expected the stand-in {_STAND_IN}, got {type(stock).__name__}"
            )
        cls = MODULES[name]
        c1, c2 = stock.cv1.conv.in_channels, stock.cv2.conv.out_channels
        layer = cls(c1, c2, n=len(stock.m), e=float(args[1]) if len(args) > 1 else 0.5)  # C2PSA(c1, c2, n, e)
        if layer.c != stock.c:
            raise ValueError(
                f"layer {i} ({name}): hidden channels {layer.c} differ from {_STAND_IN}'s {stock.c}"
            )
        shared = {k: v for k, v in stock.state_dict().items() if ".attn." not in k}
        missing, unexpected = layer.load_state_dict(shared, strict=False)  # stock init outside the mixer
        if unexpected or any(".attn." not in k for k in missing):
            raise ValueError(
                f"layer {i} ({name}): parameters differ from {_STAND_IN}'s outside attn: {unexpected}"
            )
        layer.np = sum(p.numel() for p in layer.parameters())
        layer.i, layer.f, layer.type = stock.i, stock.f, f"{cls.__module__}.{cls.__qualname__}"
        layers[i] = layer
    for message in capture.messages:  # the stock table, with our layers' names and sizes
        idx = message[:3].strip()
        if idx.isdigit() and int(idx) in ours and _STAND_IN in message:
            message = _table_line(message, layers[int(idx)])
        _tasks.LOGGER.info(message)
    return layers, save


def _check_yaml(file, suffix=(".yaml", ".yml"), hard=True):
    """``check_yaml`` that also finds the model YAMLs shipped in :data:`CFG_DIR` by bare name."""
    name = str(file).strip()
    if name and os.path.basename(name) == name and not os.path.exists(name) and (CFG_DIR / name).is_file():
        return str(CFG_DIR / name)
    return _stock_check_yaml(file, suffix=suffix, hard=hard)


def exempt_from_weight_decay(optimizer, model) -> int:
    """Move the parameters that ``no_weight_decay()`` of the TSSA layers names (the temperatures) into
    the optimizer's no-decay group, as the official ToST language recipe does (its vision recipe
    decays them; this plug-in's choice). Returns how many were moved.

    Ultralytics' ``build_optimizer`` decays every weight that is not a norm weight or a bias, so the
    temperature ``temp`` (H, 1) would otherwise be decayed (and, under ``MuSGD``, orthogonalised as a
    matrix). Each decayed group (``param_group`` ``"weight"`` or ``"muon"``) hands its temperatures to
    the ``"bn"`` group of the same learning rate (``MuSGD`` splits groups by learning rate), which
    keeps their warm-up and schedule. Call before the first step.

    Raises:
        ValueError: the optimizer has decayed groups but no matching no-decay ``"bn"`` group (an
            optimizer not built by Ultralytics >= 8.4.3, whose builder tags its groups).
    """
    exempt = {
        id(getattr(m, name))
        for m in model.modules()
        if isinstance(m, TokenStatisticsAttention)
        for name in m.no_weight_decay()
        if getattr(m, name, None) is not None
    }
    moved = 0
    for group in optimizer.param_groups:
        if group.get("weight_decay", 0.0) == 0.0:
            continue
        keep = [p for p in group["params"] if id(p) not in exempt]
        if len(keep) == len(group["params"]):
            continue
        target = next(
            (
                g
                for g in optimizer.param_groups
                if g.get("param_group") == "bn" and g.get("lr") == group.get("lr") and not g.get("use_muon")
            ),
            None,
        )
        if target is None:
            raise ValueError(
                "exempt_from_weight_decay: the optimizer has no no-decay parameter group tagged "
                "param_group='bn' with this learning rate; build it with Ultralytics' own "
                "BaseTrainer.build_optimizer (pip install 'ultralytics>=8.4.113')"
            )
        target["params"].extend(p for p in group["params"] if id(p) in exempt)
        moved += len(group["params"]) - len(keep)
        group["params"] = keep
    return moved


def _build_optimizer(self, model, *args, **kwargs):
    """``BaseTrainer.build_optimizer``, then :func:`exempt_from_weight_decay` (a no-op for stock models)."""
    optimizer = _stock_build_optimizer(self, model, *args, **kwargs)
    if exempt_from_weight_decay(optimizer, model):
        _tasks.LOGGER.info("optimizer: TSSA temperatures moved to the no-decay group")
    return optimizer


def _register() -> None:
    global _stock_parse_model, _stock_check_yaml, _stock_build_optimizer
    if getattr(_tasks.parse_model, "_tssa_wrapped", False):  # already registered in this process
        _stock_parse_model = _tasks.parse_model._tssa_stock
        _stock_check_yaml = _tasks.check_yaml._tssa_stock
        _stock_build_optimizer = _BaseTrainer.build_optimizer._tssa_stock
        return
    _stock_parse_model, _stock_check_yaml = _tasks.parse_model, _tasks.check_yaml
    _stock_build_optimizer = _BaseTrainer.build_optimizer
    for name, cls in MODULES.items():
        setattr(_tasks, name, cls)
    for wrapper, stock in (
        (_parse_model, _stock_parse_model),
        (_check_yaml, _stock_check_yaml),
        (_build_optimizer, _stock_build_optimizer),
    ):
        wrapper._tssa_wrapped, wrapper._tssa_stock = True, stock
    _tasks.parse_model = _parse_model
    _tasks.check_yaml = _check_yaml
    _BaseTrainer.build_optimizer = _build_optimizer


_stock_parse_model = _tasks.parse_model
_stock_check_yaml = _tasks.check_yaml
_stock_build_optimizer = _BaseTrainer.build_optimizer
_register()
