"""A generated detection dataset with textured objects, clutter, a 16x size range and recorded occlusion.

Each image (``imgsz`` x ``imgsz``, RGB, PNG) has a cluttered background (a smooth random colour
field, pixel noise and ``distractors``: lines, wavy bands and elongated irregular blobs that belong to no class)
and ``min_objects``..``max_objects`` objects. An object's class is its shape (``circle``, ``square``,
``triangle``, ``diamond``, ``cross``, ``ring``, ``star``, ``hexagon``; the first ``n_classes`` are
used); its colour, texture (plain, stripes at any angle, checks, dots, gradient) and aspect ratio
(up to 1.3:1) vary freely, so neither colour nor texture gives the class away. The side of an
object is drawn log-uniformly from ``[min_frac, max_frac] * imgsz`` (the defaults span 16.7x).

Objects are painted in order, later ones in front; with probability ``overlap_prob`` an object is
placed over an earlier one so that occlusion is common. With probability ``fence_prob`` an image
also gets a fence on top (parallel bars, a railing or a grille, over part of the image, covering 45-75%
of what lies behind it): occlusion that hides most of an object while its outline shows between the
bars, as a pedestrian behind railings, where an object covered by another keeps only a fragment. Every object records:

- its *amodal* box (the box of all its pixels) and its amodal area (pixels),
- its *visible* box and area (pixels not hidden by a later object or a distractor drawn on top),
- ``visible_fraction = visible area / amodal area`` (a placement that would leave any object
  under ``min_visible`` is drawn again elsewhere, or the object is dropped),
- ``size_bucket`` (small / medium / large) from its visible area with COCO's own pixel
  thresholds at the network's input (the images are made at the training size):
  ``small < 32^2 <= medium < 96^2 <= large`` pixels, as COCO defines them. (Thresholds scaled to
  the image would call "small" what is under one stride-8 cell of the detector's finest level:
  the network's strides do not scale with the image.)
- ``occlusion_proxy``: the fraction of its visible box covered by the other objects' visible boxes
  (:func:`benchmarks.studies.detection.data.real.box_occlusion_proxy`; a proxy, the only occlusion measure that
  real data without visibility annotations allows, recorded here to be compared with the truth).

As in COCO, the training label is the visible box and ``area`` is the visible pixel area.
Same arguments -> byte-identical files. ``version`` (:data:`GENERATOR_VERSION`) is part of the
arguments, so scenes drawn by a changed generator never share an identity with older ones
(version 1: thresholds scaled to the image, no train ground truth). Each image draws from its own random stream
(``seed``, split, index), so the validation images do not change with ``n_train``.

Layout::

    root/data.yaml                       path (absolute), train, val, names, coco_val, generator args
    root/images/{train,val}/00000.png    (the stem is the COCO image id)
    root/labels/{train,val}/00000.txt    "class x_center y_center width height" (0..1), visible box
    root/annotations/val.json            COCO ground truth of val with the fields listed above
    root/annotations/train.json          the same for train (the occlusion proxy's levels are set on it)

>>> import tempfile
>>> data_yaml = make_scenes(tempfile.mkdtemp() + "/scenes", n_train=2, n_val=1, imgsz=128)
>>> data_yaml.name
'data.yaml'
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from benchmarks.studies.detection.data._build import build, cli

__all__ = [
    "ScenesConfig",
    "make_scenes",
    "area_thresholds",
    "size_bucket",
    "GENERATOR_VERSION",
    "CLASSES",
    "render_image",
    "annotate",
]

CLASSES = ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "hexagon")
COCO_SMALL, COCO_LARGE = 32, 96  # COCO's area thresholds (sides, pixels)
GENERATOR_VERSION = 2  # what the scenes are: bumped whenever the same arguments would draw other files


@dataclass(frozen=True)
class ScenesConfig:
    """Generator arguments (validated by :meth:`check`)."""

    n_train: int = 64
    n_val: int = 32
    imgsz: int = 320
    seed: int = 0
    n_classes: int = 8
    min_objects: int = 3
    max_objects: int = 10
    min_frac: float = 0.03
    max_frac: float = 0.5
    overlap_prob: float = 0.4
    min_visible: float = 0.2
    distractors: int = 6
    clutter: float = 1.0
    fence_prob: float = 0.0
    version: int | None = None  # None: this generator's (GENERATOR_VERSION)

    def __post_init__(self) -> None:
        if self.version is None:
            object.__setattr__(self, "version", GENERATOR_VERSION)

    def check(self) -> None:
        """Raise ValueError naming the first bad argument."""
        if self.version != GENERATOR_VERSION:
            raise ValueError(
                f"version {self.version}: this generator draws version {GENERATOR_VERSION} scenes only; "
                f"drop 'version' or set it to {GENERATOR_VERSION}"
            )
        if self.n_train < 1 or self.n_val < 1:
            raise ValueError(f"n_train and n_val must be >= 1, got {self.n_train} and {self.n_val}")
        if self.imgsz < 32:
            raise ValueError(f"imgsz must be >= 32 pixels, got {self.imgsz}")
        if not 6 <= self.n_classes <= len(CLASSES):
            raise ValueError(f"n_classes must be in 6..{len(CLASSES)}, got {self.n_classes}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got min_objects={self.min_objects}, "
                f"max_objects={self.max_objects}"
            )
        if not 0.0 < self.min_frac <= self.max_frac <= 0.9:
            raise ValueError(
                f"need 0 < min_frac <= max_frac <= 0.9, got min_frac={self.min_frac}, max_frac={self.max_frac}"
            )
        if self.min_frac * self.imgsz < 3:
            raise ValueError(f"min_frac * imgsz must be >= 3 pixels, got {self.min_frac * self.imgsz:.2f}")
        if not 0.0 <= self.overlap_prob <= 1.0:
            raise ValueError(f"overlap_prob must be in [0, 1], got {self.overlap_prob}")
        if not 0.0 < self.min_visible <= 1.0:
            raise ValueError(f"min_visible must be in (0, 1], got {self.min_visible}")
        if self.distractors < 0:
            raise ValueError(f"distractors must be >= 0, got {self.distractors}")
        if not 0.0 <= self.clutter <= 2.0:
            raise ValueError(f"clutter must be in [0, 2], got {self.clutter}")
        if not 0.0 <= self.fence_prob <= 1.0:
            raise ValueError(f"fence_prob must be in [0, 1], got {self.fence_prob}")


def area_thresholds() -> tuple[float, float]:
    """COCO's small/large area thresholds in pixels at the network's input: ``(32^2, 96^2)``."""
    return float(COCO_SMALL**2), float(COCO_LARGE**2)


def size_bucket(area: float, thresholds: tuple[float, float]) -> str:
    """``"small"`` if ``area < thresholds[0]``, ``"large"`` if ``area >= thresholds[1]``, else ``"medium"``."""
    return "small" if area < thresholds[0] else "large" if area >= thresholds[1] else "medium"


def _shape_mask(cls: int, h: int, w: int) -> np.ndarray:
    """Boolean mask (h, w) of class ``cls`` filling an h x w window (pixel centres in [-1, 1]^2)."""
    v = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h * 2 - 1  # (h, 1)
    u = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w * 2 - 1  # (1, w)
    name = CLASSES[cls]
    if name == "circle":
        m = u**2 + v**2 <= 1
    elif name == "square":
        m = np.ones((h, w), dtype=bool)
    elif name == "triangle":  # apex at the top, base at the bottom
        m = (np.abs(u) <= (v + 1) / 2) & (v <= 1)
    elif name == "diamond":
        m = np.abs(u) + np.abs(v) <= 1
    elif name == "cross":
        m = (np.abs(u) <= 0.34) | (np.abs(v) <= 0.34)
    elif name == "ring":
        r2 = u**2 + v**2
        m = (r2 <= 1) & (r2 >= 0.3)
    elif name == "star":  # five points
        r, t = np.sqrt(u**2 + v**2), np.arctan2(u, -v)
        m = r <= 0.45 + 0.55 * np.abs(np.cos(2.5 * t)) ** 3
    else:  # hexagon, flat top and bottom
        m = (np.abs(v) <= 0.87) & (0.87 * np.abs(u) + 0.5 * np.abs(v) <= 0.87)
    return np.broadcast_to(m, (h, w))


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random texture (h, w, 3) float32: two colours mixed by a random pattern."""
    c1 = rng.uniform(0, 255, size=3).astype(np.float32)
    c2 = np.clip(c1 + rng.choice([-1.0, 1.0], size=3) * rng.uniform(40, 140, size=3), 0, 255).astype(
        np.float32
    )
    kind = int(rng.integers(0, 5))
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    period = float(rng.uniform(3, 9))
    if kind == 0:  # plain
        a = np.zeros((h, w), dtype=np.float32)
    elif kind == 1:  # stripes at a random angle
        t = rng.uniform(0, np.pi)
        a = (np.sin((x * np.cos(t) + y * np.sin(t)) * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == 2:  # checks
        a = (((x // period) + (y // period)) % 2).astype(np.float32)
    elif kind == 3:  # dots
        a = ((np.sin(x * 2 * np.pi / period) * np.sin(y * 2 * np.pi / period)) > 0.5).astype(np.float32)
    else:  # gradient
        t = rng.uniform(0, 2 * np.pi)
        g = x * np.cos(t) + y * np.sin(t)
        a = (g - g.min()) / max(float(g.max() - g.min()), 1.0)
    a = np.broadcast_to(a, (h, w))
    return c1 + a[..., None] * (c2 - c1)


def _background(rng: np.random.Generator, s: int, clutter: float) -> np.ndarray:
    grid = int(rng.integers(2, 6))
    field = rng.uniform(0, 255, size=(grid, grid, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(field).resize((s, s), Image.BILINEAR), dtype=np.float32)
    noise = rng.normal(0, 10 * clutter, size=(s, s, 1)).astype(np.float32)
    return img + noise  # (s, s, 3)


def _distractor(rng: np.random.Generator, s: int) -> tuple[int, int, np.ndarray]:
    """A non-object: (y0, x0, mask) of a line, a wavy band or an elongated blob, clipped to the image."""
    kind = int(rng.integers(0, 3))
    size = int(rng.uniform(0.08, 0.45) * s) + 4
    h = w = size
    v = np.arange(h, dtype=np.float32)[:, None] - h / 2
    u = np.arange(w, dtype=np.float32)[None, :] - w / 2
    t = rng.uniform(0, np.pi)
    along, across = u * np.cos(t) + v * np.sin(t), -u * np.sin(t) + v * np.cos(t)
    width = rng.uniform(0.6, 2.0)
    if kind == 0:  # straight line
        m = (np.abs(across) <= width) & (np.abs(along) <= size / 2)
    elif kind == 1:  # wavy band
        amp, freq = rng.uniform(0.05, 0.2) * size, rng.uniform(1.5, 4) * 2 * np.pi / size
        m = (np.abs(across - amp * np.sin(freq * along)) <= width) & (np.abs(along) <= size / 2)
    else:  # elongated irregular blob (2-4 times longer than wide)
        stretch = rng.uniform(2, 4)
        r = np.sqrt((along / (size / 2)) ** 2 + (across * stretch / (size / 2)) ** 2)
        a = np.arctan2(across * stretch, along)
        edge = 0.8 + 0.12 * np.sin(2 * a + rng.uniform(0, 6.3)) + 0.08 * np.sin(3 * a + rng.uniform(0, 6.3))
        m = r <= edge
    y0, x0 = (int(c) for c in rng.integers(-size // 2, s - size // 2, size=2))
    ys, xs = slice(max(0, -y0), min(h, s - y0)), slice(max(0, -x0), min(w, s - x0))
    return max(0, y0), max(0, x0), m[ys, xs]


def _fence(rng: np.random.Generator, s: int) -> tuple[int, int, np.ndarray]:
    """A fence over part of the image: (y0, x0, mask) of parallel bars (a railing, a grille) at a random
    angle, period 5-9 px, the bars covering 45-75% of each period, over a region 0.35-0.7 of the side."""
    h, w = (int(rng.uniform(0.35, 0.7) * s) for _ in range(2))
    y0, x0 = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
    t = rng.uniform(0, np.pi)
    period, duty = rng.uniform(5, 9), rng.uniform(0.45, 0.75)
    v = np.arange(h, dtype=np.float32)[:, None]
    u = np.arange(w, dtype=np.float32)[None, :]
    phase = ((u * np.cos(t) + v * np.sin(t)) / period + rng.uniform(0, 1)) % 1.0
    return y0, x0, phase < duty


def render_image(rng: np.random.Generator, cfg: ScenesConfig) -> tuple[np.ndarray, list[dict]]:
    """One image (imgsz, imgsz, 3) uint8 and its objects.

    Each object is ``{"cls", "amodal_box", "amodal_area", "box", "area", "visible_fraction"}`` with
    boxes ``[x1, y1, x2, y2]`` in pixel edges (``x2`` exclusive) and areas in pixels.
    """
    s = cfg.imgsz
    img = _background(rng, s, cfg.clutter)
    owner = np.zeros((s, s), dtype=np.int16)  # which object (1-based) shows at each pixel; 0: none

    def paint_distractor():
        y0, x0, m = _distractor(rng, s)
        h, w = m.shape
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        img[y0 : y0 + h, x0 : x0 + w][m] = colour
        return y0, x0, m

    n_under = int(rng.integers(0, cfg.distractors + 1))
    for _ in range(n_under):
        paint_distractor()
    objects: list[dict] = []
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        cls = int(rng.integers(0, cfg.n_classes))
        side = s * float(np.exp(rng.uniform(np.log(cfg.min_frac), np.log(cfg.max_frac))))
        aspect = float(np.exp(rng.uniform(-np.log(1.3), np.log(1.3))))
        w = int(np.clip(round(side * np.sqrt(aspect)), 3, s))
        h = int(np.clip(round(side / np.sqrt(aspect)), 3, s))
        mask = _shape_mask(cls, h, w)
        tex = _texture(rng, h, w)
        k = len(objects) + 1
        for _try in range(8):
            if objects and rng.uniform() < cfg.overlap_prob:  # over an earlier object
                other = objects[int(rng.integers(0, len(objects)))]["amodal_box"]
                cx = rng.uniform(other[0], other[2])
                cy = rng.uniform(other[1], other[3])
                x0 = int(np.clip(round(cx - w / 2), 0, s - w))
                y0 = int(np.clip(round(cy - h / 2), 0, s - h))
            else:
                x0, y0 = int(rng.integers(0, s - w + 1)), int(rng.integers(0, s - h + 1))
            window = owner[y0 : y0 + h, x0 : x0 + w]
            hidden = np.bincount(window[mask], minlength=k)[1:k]  # pixels each earlier object would lose
            ok = all(
                o["visible"] - hidden[j] >= cfg.min_visible * o["amodal_area"] for j, o in enumerate(objects)
            )
            if ok:
                break
        else:
            continue  # no placement keeps every object visible enough: drop this one
        window[mask] = k
        img[y0 : y0 + h, x0 : x0 + w][mask] = tex[mask]
        for j in range(len(objects)):
            objects[j]["visible"] -= int(hidden[j])
        amodal = int(mask.sum())
        ys, xs = np.nonzero(mask)
        box = [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1]
        objects.append({"cls": cls, "amodal_box": box, "amodal_area": amodal, "visible": amodal})
    # thin distractors on top hide a little of some objects, and (with probability fence_prob) a fence
    # hides much of the objects behind it while their outline shows between the bars (each drawn only
    # where no object drops below min_visible; a fence gets up to 4 tries)
    n_top = int(rng.integers(0, cfg.distractors // 3 + 1))
    n_fence = 4 if cfg.fence_prob > 0 and rng.uniform() < cfg.fence_prob else 0
    for i in range(n_top + n_fence):
        if i < n_top:
            y0, x0, m = _distractor(rng, s)
        else:
            y0, x0, m = _fence(rng, s)
        h, w = m.shape
        window = owner[y0 : y0 + h, x0 : x0 + w]
        hidden = np.bincount(window[m], minlength=len(objects) + 1)[1:]
        if all(o["visible"] - hidden[j] >= cfg.min_visible * o["amodal_area"] for j, o in enumerate(objects)):
            img[y0 : y0 + h, x0 : x0 + w][m] = rng.uniform(0, 255, size=3).astype(np.float32)
            window[m] = 0
            for j in range(len(objects)):
                objects[j]["visible"] -= int(hidden[j])
            if i >= n_top:  # one fence at most
                break
    out = _annotations(owner, [(o["cls"], o["amodal_box"], o["amodal_area"]) for o in objects])
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), out


def _annotations(owner: np.ndarray, objects: list[tuple[int, list[int], int]]) -> list[dict]:
    """Visible box, area and fraction of each object (1-based ``owner`` labels) given (cls, amodal box, amodal area)."""
    out = []
    for k, (cls, amodal_box, amodal_area) in enumerate(objects, start=1):
        ys, xs = np.nonzero(owner == k)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        out.append(
            {
                "cls": cls,
                "amodal_box": amodal_box,
                "amodal_area": amodal_area,
                "box": box,
                "area": int(len(xs)),
                "visible_fraction": len(xs) / amodal_area,
            }
        )
    return out


def annotate(placements: list[tuple[int, int, int, int, int]], imgsz: int) -> list[dict]:
    """Metadata of objects placed explicitly: ``(cls, x0, y0, w, h)`` each, painted in order (later in front).

    The same bookkeeping as :func:`render_image` (which draws the placements at random), for
    constructed cases: two 20x20 squares offset by 10 pixels leave the first one 0.5 visible.

    >>> annotate([(1, 10, 10, 20, 20), (1, 20, 10, 20, 20)], 64)[0]["visible_fraction"]
    0.5
    """
    owner = np.zeros((imgsz, imgsz), dtype=np.int16)
    objects = []
    for k, (cls, x0, y0, w, h) in enumerate(placements, start=1):
        mask = _shape_mask(cls, h, w)
        owner[y0 : y0 + h, x0 : x0 + w][mask] = k
        ys, xs = np.nonzero(mask)
        box = [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1]
        objects.append((cls, box, int(mask.sum())))
    return _annotations(owner, objects)


def _xywh(b: list[int]) -> list[int]:
    return [b[0], b[1], b[2] - b[0], b[3] - b[1]]


def _write(root: Path, cfg: ScenesConfig) -> None:
    from .real import box_occlusion_proxy

    s = cfg.imgsz
    thresholds = area_thresholds()

    def coco_doc(split: str) -> dict:
        return {
            "info": {
                "description": f"benchmarks.studies.detection.data.scenes {split} ground truth",
                "generator": asdict(cfg),
                "area_thresholds": list(thresholds),
                "area_scaling": "none: COCO's own 32^2 / 96^2 pixel thresholds at the network's input",
                "bbox": "visible box; amodal_bbox: box of the whole object; areas in pixels",
                "occlusion_proxy": "proxy: fraction of the visible box covered by other objects' visible boxes",
            },
            "images": [],
            "annotations": [],
            "categories": [{"id": c + 1, "name": n} for c, n in enumerate(CLASSES[: cfg.n_classes])],
        }

    (root / "annotations").mkdir(parents=True)
    for split_id, (split, count) in enumerate((("train", cfg.n_train), ("val", cfg.n_val))):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        coco = coco_doc(split)
        for j in range(count):
            img, objects = render_image(np.random.default_rng([cfg.seed, split_id, j]), cfg)
            Image.fromarray(img).save(root / "images" / split / f"{j:05d}.png", compress_level=1)
            lines = [
                f"{o['cls']} {(o['box'][0] + o['box'][2]) / 2 / s:.6f} {(o['box'][1] + o['box'][3]) / 2 / s:.6f} "
                f"{(o['box'][2] - o['box'][0]) / s:.6f} {(o['box'][3] - o['box'][1]) / s:.6f}\n"
                for o in objects
            ]
            (root / "labels" / split / f"{j:05d}.txt").write_text("".join(lines))
            coco["images"].append({"id": j, "file_name": f"{j:05d}.png", "width": s, "height": s})
            proxy = box_occlusion_proxy(
                np.array([o["box"] for o in objects], dtype=np.float64).reshape(-1, 4)
            )
            for o, p in zip(objects, proxy):
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": j,
                        "category_id": o["cls"] + 1,
                        "bbox": _xywh(o["box"]),
                        "area": o["area"],
                        "iscrowd": 0,
                        "visible_fraction": round(o["visible_fraction"], 6),
                        "size_bucket": size_bucket(o["area"], thresholds),
                        "amodal_bbox": _xywh(o["amodal_box"]),
                        "amodal_area": o["amodal_area"],
                        "occlusion_proxy": round(float(p), 6),
                    }
                )
        (root / "annotations" / f"{split}.json").write_text(json.dumps(coco, separators=(",", ":")))


def _yaml_text(root: Path, cfg: ScenesConfig) -> str:
    doc = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(CLASSES[: cfg.n_classes])),
        "coco_val": "annotations/val.json",
        "coco_train": "annotations/train.json",
        "generator": {"name": "benchmarks.studies.detection.data.scenes", **asdict(cfg)},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def make_scenes(root: str | os.PathLike, **kwargs) -> Path:
    """Write the dataset to ``root`` (created) and return the path of its ``data.yaml``.

    Keyword arguments are the fields of :class:`ScenesConfig`. When ``root`` already holds a
    dataset made with the same arguments it is reused as it is. Files are written to a temporary
    sibling directory renamed to ``root`` when complete, so an interrupted run leaves no partial
    dataset.

    Raises:
        ValueError: a bad argument, or ``root`` exists and is not a dataset made with these arguments.
    """
    return build(root, ScenesConfig, kwargs, _write, _yaml_text, "scenes")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.studies.detection.data.scenes ROOT [--n-train 64 --n-val 32 --imgsz 320 --seed 0 ...]``."""
    return cli(
        "python -m benchmarks.studies.detection.data.scenes",
        __doc__.split("\n")[0],
        ScenesConfig,
        make_scenes,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
