"""Offline settings for Ultralytics, applied in one place before ``ultralytics`` is imported.

Ultralytics reads its environment when it is first imported. :func:`configure_offline` changes only
what offline use needs, and each change is process-wide:

===========================  =====================================================================
``YOLO_OFFLINE=true``        skip the online probe, so no telemetry, hub or update calls
``YOLO_AUTOINSTALL=false``   no pip installs at run time
fonts                        dataset checks and plots ask for ``Arial.ttf`` / ``Arial.Unicode.ttf``
                             in Ultralytics' config dir and download them when missing, so a
                             local font (matplotlib's DejaVuSans) is copied there under those names
``YOLO_CONFIG_DIR``          set only when asked: ``config_dir=...`` or ``$TSSA_YOLO_CONFIG_DIR``
                             (a private settings dir for reproducible runs); otherwise Ultralytics
                             keeps its own (``$YOLO_CONFIG_DIR`` or the user's config dir)
``HF_HUB_OFFLINE=1``         set only when asked (``hf_hub_offline=True``)
===========================  =====================================================================

The values ``true`` / ``false`` are the spellings every Ultralytics release parses (releases before
8.4 read ``YOLO_OFFLINE`` as on only when it is ``true``). ``import tssa.ultralytics`` calls
:func:`configure_offline` before it imports ultralytics; set ``TSSA_OFFLINE=0`` to opt out (the import
then changes no environment variable and writes no file; the modules are registered all the same).
Training must also pass ``amp=False`` (the CUDA AMP check downloads weights); :data:`TRAIN_DEFAULTS`
holds the arguments every offline run in this project passes. It names no device: pass ``device=``
yourself (Ultralytics' default is the first GPU if there is one, else the CPU).

This module imports neither ultralytics nor timm, so the benchmark harness can call it first.

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

__all__ = [
    "configure_offline",
    "offline_enabled",
    "default_config_dir",
    "place_fonts",
    "TRAIN_DEFAULTS",
    "FONT_NAMES",
]

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")  # the fonts Ultralytics' checks and plots look for
ENV_CONFIG_DIR = "TSSA_YOLO_CONFIG_DIR"  # a private Ultralytics config dir, used when set
ENV_OPT_OUT = "TSSA_OFFLINE"  # "0" / "false": import tssa.ultralytics leaves the environment alone

# Arguments for model.train/val/export that keep a run offline and reproducible; no device (see above).
TRAIN_DEFAULTS = {"amp": False, "plots": False, "deterministic": True, "workers": 0}


def offline_enabled() -> bool:
    """False when ``$TSSA_OFFLINE`` is ``0``, ``false``, ``no`` or ``off``: ``import tssa.ultralytics``
    then applies no offline setting."""
    return os.environ.get(ENV_OPT_OUT, "1").strip().lower() not in ("0", "false", "no", "off")


def default_config_dir() -> Path:
    """The private Ultralytics config dir the harness uses: ``$TSSA_YOLO_CONFIG_DIR``, else
    ``$XDG_CACHE_HOME/tssa-bench/ultralytics``. Applied only when passed to :func:`configure_offline`."""
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


def place_fonts(user_config_dir: str | os.PathLike) -> None:
    """Copy a local font to ``<user_config_dir>/{Arial.ttf, Arial.Unicode.ttf}`` where missing (atomic)."""
    fonts = Path(user_config_dir)
    fonts.mkdir(parents=True, exist_ok=True)
    source = _local_font()
    for name in FONT_NAMES:
        target = fonts / name
        if source is not None and not target.exists():
            tmp = target.with_name(f".{name}.{os.getpid()}.tmp")  # concurrent callers never see half a file
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)


def configure_offline(
    config_dir: str | os.PathLike | None = None, *, hf_hub_offline: bool = False
) -> Path | None:
    """Make Ultralytics run offline; call before ``import ultralytics``. Returns the config dir set, or None.

    Sets ``YOLO_OFFLINE=true`` and ``YOLO_AUTOINSTALL=false``. With ``config_dir`` (or
    ``$TSSA_YOLO_CONFIG_DIR``) it also sets ``YOLO_CONFIG_DIR`` and copies a local font to
    ``<config_dir>/Ultralytics/{Arial.ttf, Arial.Unicode.ttf}``; without, Ultralytics keeps its config dir and
    :func:`place_fonts` must run on ``ultralytics.utils.USER_CONFIG_DIR`` after the import (``import
    tssa.ultralytics`` does). ``hf_hub_offline=True`` also sets ``HF_HUB_OFFLINE=1``. Calling it again is
    harmless. Called after ultralytics was imported, it places the fonts in the imported package's
    config dir but warns, because the environment has already been read.

    Raises:
        ValueError: ``config_dir`` exists and is not a directory.
    """
    if config_dir is None and os.environ.get(ENV_CONFIG_DIR):
        config_dir = os.environ[ENV_CONFIG_DIR]
    root = Path(config_dir).expanduser() if config_dir is not None else None
    if root is not None and root.exists() and not root.is_dir():
        raise ValueError(f"config_dir {str(root)!r} is a file; pass a directory (it is created if missing)")
    if hf_hub_offline:
        os.environ["HF_HUB_OFFLINE"] = "1"

    if "ultralytics" in sys.modules:
        from ultralytics import utils as ul_utils  # already imported: no import-time side effects

        if ul_utils.ONLINE or ul_utils.AUTOINSTALL:
            warnings.warn(
                "configure_offline() ran after ultralytics was imported, which already read its environment "
                "(online checks or auto-install are on); call it (or import tssa.ultralytics) first",
                RuntimeWarning,
                stacklevel=2,
            )
        place_fonts(ul_utils.USER_CONFIG_DIR)  # where the imported package looks for fonts
        return Path(ul_utils.USER_CONFIG_DIR).parent
    os.environ["YOLO_OFFLINE"] = "true"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    if root is None:
        return None
    os.environ["YOLO_CONFIG_DIR"] = str(root)
    place_fonts(root / "Ultralytics")
    return root
