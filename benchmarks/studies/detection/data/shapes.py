"""A generated detection dataset in YOLO format: coloured shapes at several scales, some occluded.

Each image (``imgsz`` x ``imgsz``, RGB, PNG) has a noisy two-tone background and 1..``max_objects``
filled shapes (classes ``circle``, ``square``, ``triangle``) whose side is drawn log-uniformly from
``[min_frac, max_frac] * imgsz``, so small, medium and large objects all occur. Shapes are painted
in order, so later ones may hide parts of earlier ones. A shape's label is the bounding box of its
*visible* pixels (as COCO boxes are); a shape with less than ``min_visible`` of its area visible is
painted but not labelled. Same arguments -> byte-identical files.

Layout (what Ultralytics expects)::

    root/data.yaml                 path (absolute), train, val, names, and the generator arguments
    root/images/{train,val}/*.png
    root/labels/{train,val}/*.txt  one "class x_center y_center width height" line per object (0..1)

>>> import tempfile
>>> data_yaml = make_shapes(tempfile.mkdtemp() + "/shapes", n_train=2, n_val=1, imgsz=64)
>>> data_yaml.name
'data.yaml'
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from benchmarks.studies.detection.data._build import build, cli

__all__ = ["ShapesConfig", "make_shapes", "CLASSES"]

CLASSES = ("circle", "square", "triangle")


@dataclass(frozen=True)
class ShapesConfig:
    """Generator arguments (all validated by :meth:`check`)."""

    n_train: int = 8
    n_val: int = 4
    imgsz: int = 96
    seed: int = 0
    max_objects: int = 4
    min_frac: float = 0.12
    max_frac: float = 0.5
    min_visible: float = 0.25

    def check(self) -> None:
        """Raise ValueError naming the first bad argument."""
        if self.n_train < 1 or self.n_val < 1:
            raise ValueError(f"n_train and n_val must be >= 1, got {self.n_train} and {self.n_val}")
        if self.imgsz < 32:
            raise ValueError(f"imgsz must be >= 32 pixels, got {self.imgsz}")
        if self.max_objects < 1:
            raise ValueError(f"max_objects must be >= 1, got {self.max_objects}")
        if not 0.0 < self.min_frac <= self.max_frac <= 1.0:
            raise ValueError(
                f"need 0 < min_frac <= max_frac <= 1, got min_frac={self.min_frac}, max_frac={self.max_frac}"
            )
        if not 0.0 < self.min_visible <= 1.0:
            raise ValueError(f"min_visible must be in (0, 1], got {self.min_visible}")


def _paint(draw: ImageDraw.ImageDraw, cls: int, x0: int, y0: int, side: int, fill) -> None:
    box = (x0, y0, x0 + side - 1, y0 + side - 1)
    if cls == 0:
        draw.ellipse(box, fill=fill)
    elif cls == 1:
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x0 + side // 2, y0), (x0, y0 + side - 1), (x0 + side - 1, y0 + side - 1)], fill=fill)


def _image(rng: np.random.Generator, cfg: ShapesConfig) -> tuple[Image.Image, list[tuple]]:
    s = cfg.imgsz
    base = rng.integers(0, 256, size=(2, 3))
    split = int(rng.integers(s // 4, 3 * s // 4))
    img = np.empty((s, s, 3), dtype=np.int16)  # (H, W, RGB)
    img[:, :split], img[:, split:] = base[0], base[1]
    img += rng.integers(-20, 21, size=(s, s, 3), dtype=np.int16)
    canvas = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    owner = Image.new("I", (s, s), 0)  # which object (1-based) is visible at each pixel
    draw, draw_owner = ImageDraw.Draw(canvas), ImageDraw.Draw(owner)
    objects = []  # (class, full area in pixels)
    for k in range(1, int(rng.integers(1, cfg.max_objects + 1)) + 1):
        cls = int(rng.integers(0, len(CLASSES)))
        side = max(4, int(round(s * np.exp(rng.uniform(np.log(cfg.min_frac), np.log(cfg.max_frac))))))
        x0, y0 = (int(v) for v in rng.integers(0, s - side + 1, size=2))
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        alone = Image.new("L", (s, s), 0)
        _paint(ImageDraw.Draw(alone), cls, x0, y0, side, 1)
        _paint(draw, cls, x0, y0, side, fill)
        _paint(draw_owner, cls, x0, y0, side, k)
        objects.append((cls, int(np.asarray(alone).sum())))
    owner_np = np.asarray(owner)  # (H, W)
    labels = []
    for k, (cls, area) in enumerate(objects, start=1):
        ys, xs = np.nonzero(owner_np == k)  # visible pixels of object k
        if len(xs) == 0 or len(xs) < cfg.min_visible * area:
            continue
        x1, x2, y1, y2 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
        labels.append((cls, (x1 + x2) / 2 / s, (y1 + y2) / 2 / s, (x2 - x1) / s, (y2 - y1) / s))
    return canvas, labels


def _write(root: Path, cfg: ShapesConfig) -> None:
    rng = np.random.default_rng(cfg.seed)
    for split, count in (("train", cfg.n_train), ("val", cfg.n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for j in range(count):
            img, labels = _image(rng, cfg)
            img.save(root / "images" / split / f"{j:05d}.png", optimize=False)
            lines = [f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels]
            (root / "labels" / split / f"{j:05d}.txt").write_text("".join(lines))


def _yaml_text(root: Path, cfg: ShapesConfig) -> str:
    doc = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(CLASSES)),
        "generator": {"name": "benchmarks.studies.detection.data.shapes", **asdict(cfg)},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def make_shapes(root: str | os.PathLike, **kwargs) -> Path:
    """Write the dataset to ``root`` (created) and return the path of its ``data.yaml``.

    Keyword arguments are the fields of :class:`ShapesConfig`. When ``root`` already holds a
    dataset made with the same arguments, it is reused as it is. The files are written to a
    temporary sibling directory that is renamed to ``root`` when complete, so an interrupted run
    leaves no partial dataset.

    Raises:
        ValueError: a bad argument, or ``root`` exists and is not a dataset made with these arguments.
    """
    return build(root, ShapesConfig, kwargs, _write, _yaml_text, "shapes")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.studies.detection.data.shapes ROOT [--n-train 8 --n-val 4 --imgsz 96 --seed 0 ...]``."""
    return cli(
        "python -m benchmarks.studies.detection.data.shapes",
        __doc__.split("\n")[0],
        ShapesConfig,
        make_shapes,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
