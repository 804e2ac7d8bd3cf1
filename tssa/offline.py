"""Offline settings for Ultralytics, applied in one place before ``ultralytics`` is imported.

Ultralytics reads its environment when it is first imported: ``YOLO_OFFLINE`` (skip the online
probe, so no telemetry or hub calls), ``YOLO_AUTOINSTALL`` (no pip installs at run time) and
``YOLO_CONFIG_DIR`` (where ``settings.json`` and fonts live). Dataset checks ask for
``Arial.ttf`` in that directory and download it when it is missing, so a local font (matplotlib's
DejaVuSans) is put there under that name. Training must also pass ``amp=False`` (the CUDA AMP check
downloads weights); :data:`TRAIN_DEFAULTS` holds the arguments every offline run in this project
passes.

The same call sets ``HF_HUB_OFFLINE=1`` so that nothing reaches for hub weights either. This module
imports neither ultralytics nor timm, so the benchmark harness calls it first; ``import
tssa.ultralytics`` calls it (with the default config dir) before it imports ultralytics.

>>> import tempfile
>>> cfg = configure_offline(tempfile.mkdtemp())
>>> (cfg / "Ultralytics" / "Arial.ttf").exists()
True
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path

__all__ = ["configure_offline", "default_config_dir", "TRAIN_DEFAULTS", "FONT_NAMES"]

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")  # the fonts Ultralytics' checks and plots look for
ENV_CONFIG_DIR = "TSSA_YOLO_CONFIG_DIR"  # overrides the default private config dir

# Arguments for model.train/val/export that keep a run offline and reproducible on CPU.
TRAIN_DEFAULTS = {"amp": False, "plots": False, "deterministic": True, "workers": 0, "device": "cpu"}


def default_config_dir() -> Path:
    """The private Ultralytics config dir: ``$TSSA_YOLO_CONFIG_DIR``, else ``$XDG_CACHE_HOME/tssa-bench``."""
    if os.environ.get(ENV_CONFIG_DIR):
        return Path(os.environ[ENV_CONFIG_DIR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tssa-bench" / "ultralytics"


def _local_font() -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return font if font.exists() else None


def configure_offline(config_dir: str | os.PathLike | None = None) -> Path:
    """Make Ultralytics run offline; call before ``import ultralytics``. Returns the config dir.

    Sets ``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=0``, ``HF_HUB_OFFLINE=1`` and ``YOLO_CONFIG_DIR`` (``config_dir``, else an
    already set ``YOLO_CONFIG_DIR``, else :func:`default_config_dir`), and copies a local font to
    ``<config_dir>/Ultralytics/{Arial.ttf, Arial.Unicode.ttf}`` so no font is downloaded. Calling it
    again is harmless. Called after ultralytics was imported, it still places the fonts but warns,
    because the environment has already been read.

    Raises:
        ValueError: ``config_dir`` exists and is not a directory.
    """
    if config_dir is not None:
        root = Path(config_dir).expanduser()
    elif os.environ.get("YOLO_CONFIG_DIR"):
        root = Path(os.environ["YOLO_CONFIG_DIR"]).expanduser()
    else:
        root = default_config_dir()
    if root.exists() and not root.is_dir():
        raise ValueError(f"config_dir {str(root)!r} is a file; pass a directory (it is created if missing)")

    imported = "ultralytics" in sys.modules
    if imported:
        from ultralytics import utils as ul_utils  # already imported: no import-time side effects

        if ul_utils.ONLINE or ul_utils.AUTOINSTALL:
            warnings.warn(
                "configure_offline() ran after ultralytics was imported, which already read its environment "
                "(online checks or auto-install are on); call it (or import tssa.ultralytics) first",
                RuntimeWarning,
                stacklevel=2,
            )
        root = Path(ul_utils.USER_CONFIG_DIR).parent  # where the imported package looks for fonts
    else:
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ["YOLO_AUTOINSTALL"] = "0"
        os.environ["YOLO_CONFIG_DIR"] = str(root)
    os.environ["HF_HUB_OFFLINE"] = "1"

    fonts = root / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    source = _local_font()
    for name in FONT_NAMES:
        target = fonts / name
        if source is not None and not target.exists():
            tmp = target.with_name(
                f".{name}.{os.getpid()}.tmp"
            )  # atomic: concurrent callers never see half a file
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)
    return root
