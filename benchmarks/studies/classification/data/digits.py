"""Image-classification data for the classification study: embedded digits, or a real dataset on disk.

**Embedded (default, never downloaded):** scikit-learn's copy of the UCI optical-recognition
handwritten digits (``sklearn.datasets.load_digits``: 1,797 real 8 x 8 grey images, 10 classes,
intensities 0..16), installed with scikit-learn. :func:`split_digits` makes a fixed, seeded,
stratified train/val split (``sklearn.model_selection.train_test_split(stratify=y)``); with the
default ``val_fraction=0.2`` that is 1,437 / 360 images, every class in the same proportion in
both. :class:`DigitsDataset` yields 8 x 8 RGB PIL images; timm's transforms (set by
``timm.data.create_loader``) upsample them to the suite's image size, e.g. 32 px (bicubic), and
normalise. Pixel value ``v`` in 0..16 is stored as ``round(v * 255 / 16)``.

**Real datasets by configuration** (:func:`create_datasets`): ``name="folder"`` with ``root`` (an
ImageFolder tree, ``root/train/<class>/*`` and ``root/val/<class>/*`` or ``validation``), or a timm
dataset name with a local ``root`` (``torch/cifar10``, ``torch/cifar100``, ``torch/imagenet``, ...),
always with ``download=False``. A missing path raises :class:`DataError` with one line.

>>> train, val = create_datasets("digits", seed=0)
>>> len(train), len(val), train.num_classes
(1437, 360, 10)
>>> img, target = train[0]
>>> img.size, img.mode
((8, 8), 'RGB')
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.core.schema import DataError

DIGITS_CLASSES = 10
DIGITS_MAX = 16  # load_digits intensities are 0..16


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits: images (1797, 8, 8) uint8 in 0..255 and labels (1797,) int64 in 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / DIGITS_MAX)).astype(np.uint8)  # (1797, 8, 8)
    return images, d.target.astype(np.int64)


def split_digits(val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of the digits: (train indices, val indices), each sorted ascending.

    The same ``(val_fraction, seed)`` always gives the same indices; class proportions in both parts
    equal the full set's up to one image per class.

    >>> tr, va = split_digits(0.2, seed=0)
    >>> len(tr), len(va), len(set(tr) & set(va))
    (1437, 360, 0)
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    _, labels = load_digits_uint8()
    idx = np.arange(len(labels))
    tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=labels)
    return np.sort(tr), np.sort(va)


class DigitsDataset(torch.utils.data.Dataset):
    """Digits as (8 x 8 RGB PIL image, label) pairs; ``transform`` is set by ``timm.data.create_loader``.

    ``indices`` selects the images (a split from :func:`split_digits`); ``None`` takes all 1,797.
    """

    num_classes = DIGITS_CLASSES

    def __init__(self, indices: np.ndarray | None = None, transform=None) -> None:
        images, labels = load_digits_uint8()
        if indices is not None:
            images, labels = images[indices], labels[indices]
        self.images = images  # (n, 8, 8) uint8
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index]).convert("RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]


def _num_classes(ds) -> int:
    for attr in ("num_classes",):
        if hasattr(ds, attr):
            return int(getattr(ds, attr))
    if hasattr(ds, "classes"):
        return len(ds.classes)
    reader = getattr(ds, "reader", None)
    if reader is not None and hasattr(reader, "class_to_idx"):
        return len(reader.class_to_idx)
    raise DataError(f"cannot tell the number of classes of dataset {type(ds).__name__}; set data.num_classes")


def create_datasets(
    name: str = "digits",
    root: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    train_split: str = "train",
    val_split: str = "validation",
):
    """(train, val) datasets, each with ``num_classes`` set.

    ``name``: ``"digits"`` (embedded; ``seed``/``val_fraction`` pick the split), ``"folder"`` (an
    ImageFolder tree under ``root``, read by timm's folder reader) or any ``timm.data.create_dataset``
    name (``torch/cifar10``, ``torch/cifar100``, ``torch/imagenet``, ...) with a local ``root``.
    Nothing is ever downloaded: a missing ``root`` raises :class:`DataError`.
    """
    if name == "digits":
        if root is not None:
            raise DataError("data.root is not used by the embedded 'digits' set; remove it or set data.name")
        tr, va = split_digits(val_fraction, seed)
        return DigitsDataset(tr), DigitsDataset(va)
    if root is None:
        raise DataError(
            f"data.name {name!r} needs data.root, the local folder that holds it (nothing is downloaded)"
        )
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(
            f"data.root {str(root)!r} does not exist; point it at a local copy of {name!r} "
            "(nothing is downloaded) or use data.name: digits"
        )
    from timm.data import create_dataset

    timm_name = "" if name == "folder" else name
    out = []
    for split in (train_split, val_split):
        try:
            ds = create_dataset(timm_name, root=str(root), split=split, download=False, is_training=False)
        except (AssertionError, RuntimeError, FileNotFoundError, OSError, ValueError) as exc:
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(f"cannot read {name!r} split {split!r} under {str(root)!r}: {msg}") from None
        ds.num_classes = _num_classes(ds)
        out.append(ds)
    return out[0], out[1]


def export_image_folder(root: str | os.PathLike, *, seed: int = 0, val_fraction: float = 0.2) -> Path:
    """Write the digits split as an ImageFolder tree of 8 x 8 PNGs: ``root/{train,validation}/<digit>/<i>.png``.

    For clients that read folders (timm's ``train.py`` / ``validate.py``). Same arguments ->
    byte-identical files. Returns ``root``.
    """
    root = Path(root)
    tr, va = split_digits(val_fraction, seed)
    images, labels = load_digits_uint8()
    for split, idx in (("train", tr), ("validation", va)):
        for i in idx:
            d = root / split / str(int(labels[i]))
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).convert("RGB").save(d / f"{int(i):04d}.png")
    return root


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.studies.classification.data.digits ROOT``: export the embedded digits as an ImageFolder tree."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.studies.classification.data.digits",
        description=export_image_folder.__doc__,
    )
    p.add_argument("root")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2)
    ns = p.parse_args(argv)
    out = export_image_folder(ns.root, seed=ns.seed, val_fraction=ns.val_fraction)
    print(out)


if __name__ == "__main__":
    main()
