"""Real detection datasets given as Ultralytics data YAMLs on disk, and the box occlusion proxy.

- :func:`resolve_data_yaml` checks that a data YAML (COCO, VOC, a user's own) and its train/val
  images exist, resolving paths exactly as Ultralytics does, and never downloads: a missing file
  or folder is one :class:`DataError` line naming it.
- :func:`yolo_val_to_coco` writes the COCO ground truth of a YOLO-format val split (for data that
  has no COCO JSON), with image ids and category ids as Ultralytics writes them into
  ``predictions.json`` (id = the file stem when numeric; category = class index + 1).
- :func:`box_occlusion_proxy`: the fraction of each box covered by the union of the other boxes of
  its image. Data without visibility annotations only allows this *proxy*: it cannot tell which
  object is in front, and boxes overlap without pixels overlapping. It is computed for the
  generated data too, where it can be compared with the true visible fraction.

>>> box_occlusion_proxy(np.array([[0, 0, 10, 10], [5, 0, 20, 10]])).tolist()
[0.5, 0.3333333333333333]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.core.schema import DataError

__all__ = ["DataError", "box_occlusion_proxy", "resolve_data_yaml", "yolo_val_to_coco", "add_occlusion_proxy"]

IMAGE_SUFFIXES = {".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm", ".heic"}


def box_occlusion_proxy(boxes: np.ndarray) -> np.ndarray:
    """Fraction of each box covered by the union of the *other* boxes (an occlusion proxy).

    ``boxes``: (n, 4) ``[x1, y1, x2, y2]``. Returns (n,) in [0, 1]; 0 for a box of zero area.
    Exact: the plane inside box i is cut into the cells of the other boxes' edges, and a cell
    counts when any other box contains it, ``proxy_i = |B_i ∩ ∪_{j≠i} B_j| / |B_i|``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros(len(boxes))
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        area = (x2 - x1) * (y2 - y1)
        others = np.delete(boxes, i, axis=0)
        if area <= 0 or not len(others):
            continue
        clip = np.stack(
            [
                others[:, 0].clip(x1, x2),
                others[:, 1].clip(y1, y2),
                others[:, 2].clip(x1, x2),
                others[:, 3].clip(y1, y2),
            ],
            axis=1,
        )
        clip = clip[(clip[:, 2] > clip[:, 0]) & (clip[:, 3] > clip[:, 1])]
        if not len(clip):
            continue
        xs, ys = np.unique(clip[:, [0, 2]]), np.unique(clip[:, [1, 3]])
        cx, cy = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2  # cell centres
        inside_x = (clip[:, None, 0] <= cx) & (cx <= clip[:, None, 2])  # (m, nx)
        inside_y = (clip[:, None, 1] <= cy) & (cy <= clip[:, None, 3])  # (m, ny)
        covered = (inside_y[:, :, None] & inside_x[:, None, :]).any(axis=0)  # (ny, nx)
        cell = np.diff(ys)[:, None] * np.diff(xs)[None, :]
        out[i] = float((covered * cell).sum() / area)
    return out


def add_occlusion_proxy(coco: dict[str, Any]) -> dict[str, Any]:
    """Set ``occlusion_proxy`` (:func:`box_occlusion_proxy` over each image's boxes) on every annotation.

    Crowd regions take part as occluders. Returns ``coco`` (changed in place).
    """
    by_image: dict[Any, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for anns in by_image.values():
        xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float64)
        for a, p in zip(anns, box_occlusion_proxy(xyxy)):
            a["occlusion_proxy"] = round(float(p), 6)
    return coco


def resolve_data_yaml(data_yaml: str | os.PathLike) -> dict[str, Any]:
    """Read an Ultralytics data YAML and check that its images exist; never download.

    Paths are resolved by Ultralytics' own ``check_det_dataset(..., autodownload=False)``
    (``path`` relative to the working directory, else to Ultralytics' datasets dir). Returns its
    dict (``path``, ``train``, ``val`` as absolute paths, ``names``, ``nc``, ...).

    Raises:
        DataError: the YAML, its ``train`` or its ``val`` images are missing, or it is malformed.
    """
    p = Path(data_yaml).expanduser()
    if not p.is_file():
        raise DataError(f"data yaml {str(p)!r} not found; give the path of an Ultralytics data YAML on disk")
    from tssa.offline import configure_offline

    configure_offline()  # before ultralytics is first imported
    from ultralytics.data.utils import check_det_dataset

    try:
        data = check_det_dataset(str(p), autodownload=False)
    except FileNotFoundError as e:
        first = str(e).splitlines()[0]
        raise DataError(
            f"data yaml {str(p)!r}: {first}; put the dataset there or fix 'path'/'val' (nothing is downloaded)"
        ) from None
    except (SyntaxError, TypeError, ValueError) as e:
        raise DataError(
            f"data yaml {str(p)!r} is not a valid Ultralytics data YAML: {str(e).splitlines()[0]}"
        ) from None
    for key in ("train", "val"):
        paths = data[key] if isinstance(data[key], list) else [data[key]]
        missing = [x for x in paths if not Path(x).exists()]
        if missing:
            raise DataError(
                f"data yaml {str(p)!r}: {key} images {missing[0]!r} not found; "
                "put the dataset there or fix 'path'/'{key}' (nothing is downloaded)"
            )
    return data


def _image_files(source: str | list[str]) -> list[Path]:
    """The image files of an Ultralytics split: folders (searched recursively), list files, or a list."""
    files: list[Path] = []
    for s in source if isinstance(source, list) else [source]:
        p = Path(s)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():  # a list of images, relative to the list file's folder when starting with ./
            for line in p.read_text().splitlines():
                line = line.strip()
                if line:
                    files.append((p.parent / line[2:]).resolve() if line.startswith("./") else Path(line))
        else:
            raise DataError(f"val source {s!r} not found")
    return sorted(f for f in files if f.suffix.lower() in IMAGE_SUFFIXES)


def image_id(stem: str, index: int) -> int:
    """The COCO image id of a file: its stem when numeric (as Ultralytics writes it), else ``index``."""
    return int(stem) if stem.isnumeric() else index


def yolo_val_to_coco(data: dict[str, Any], out: str | os.PathLike) -> Path:
    """Write the COCO ground truth of the YOLO-format val split of a resolved data dict to ``out``.

    ``data``: the dict from :func:`resolve_data_yaml`. Boxes are converted from normalised
    ``(x_c, y_c, w, h)`` to pixels of the EXIF-corrected image; ``area`` is the box area (no masks),
    ``category_id = class + 1`` as Ultralytics writes it for non-COCO data; every annotation carries
    ``occlusion_proxy`` (:func:`add_occlusion_proxy`). Image ids: the numeric stem, else the index
    in the sorted file list (predictions with a string ``image_id`` are mapped back by file stem).

    Raises:
        DataError: no val images, two images with the same stem, or a malformed label line.
    """
    from PIL import Image
    from ultralytics.data.utils import exif_size, img2label_paths

    files = _image_files(data["val"])
    if not files:
        raise DataError(f"no val images under {data['val']!r}")
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise DataError(f"two val images share the stem {dup!r}; predictions.json names images by stem")
    names = data["names"]
    coco: dict[str, Any] = {
        "info": {"description": f"COCO ground truth converted from the YOLO labels of {data['val']}"},
        "images": [],
        "annotations": [],
        "categories": [{"id": int(c) + 1, "name": n} for c, n in names.items()],
    }
    for index, (f, lf) in enumerate(zip(files, img2label_paths([str(x) for x in files]))):
        with Image.open(f) as im:
            w, h = exif_size(im)
        iid = image_id(f.stem, index)
        coco["images"].append({"id": iid, "file_name": f.name, "width": w, "height": h})
        lf = Path(lf)
        rows = lf.read_text().splitlines() if lf.is_file() else []
        for line_no, line in enumerate(rows, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise DataError(f"{lf}:{line_no}: expected 'class x y w h', got {line!r}")
            c, xc, yc, bw, bh = int(parts[0]), *(float(v) for v in parts[1:])
            x, y, bw, bh = (xc - bw / 2) * w, (yc - bh / 2) * h, bw * w, bh * h
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": iid,
                    "category_id": c + 1,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    add_occlusion_proxy(coco)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(coco, separators=(",", ":")))
    os.replace(tmp, out)
    return out
