"""What every generated dataset shares: atomic writing with reuse, and a command line from its config.

A generator supplies a config dataclass (with ``check()``), ``write(dir, cfg)`` and
``yaml_text(root, cfg)``; :func:`build` writes into a temporary sibling directory renamed to
``root`` when complete (an interrupted run leaves no partial dataset) and reuses ``root`` when it
already holds a dataset made with the same arguments. Several processes building the same
``root`` at once (parallel cells) take turns under a lock beside it: one writes, the others reuse.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.core.store import file_lock


def build(
    root: str | os.PathLike,
    config_cls: type,
    kwargs: dict[str, Any],
    write: Callable[[Path, Any], None],
    yaml_text: Callable[[Path, Any], str],
    what: str,
) -> Path:
    """Write (or reuse) the dataset at ``root``; return its ``data.yaml``.

    Raises:
        ValueError: an unknown or bad argument, or ``root`` exists and is not a ``what`` dataset made
            with these arguments.
    """
    fields = list(config_cls.__dataclass_fields__)
    unknown = set(kwargs) - set(fields)
    if unknown:
        raise ValueError(f"unknown argument(s) {sorted(unknown)}; choose from {fields}")
    cfg = config_cls(**kwargs)
    cfg.check()
    root = Path(root).expanduser().resolve()
    with file_lock(root.parent / f".{root.name}.lock"):
        return _build(root, cfg, write, yaml_text, what)


def _build(root: Path, cfg: Any, write, yaml_text, what: str) -> Path:
    data_yaml = root / "data.yaml"
    if root.exists():
        if data_yaml.is_file() and data_yaml.read_text() == yaml_text(root, cfg):
            return data_yaml
        raise ValueError(
            f"{root} exists and is not a {what} dataset made with {asdict(cfg)}; remove it or pass another root"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp, cfg)
        (tmp / "data.yaml").write_text(yaml_text(root, cfg))
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data_yaml


def cli(
    prog: str, description: str, config_cls: type, make: Callable[..., Path], argv: list[str] | None
) -> int:
    """``prog ROOT [--<field> value ...]``: one option per config field; a bad argument is one line, exit 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("root", help="directory to create (its parent is created too)")
    for name, value in asdict(config_cls()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    root = args.pop("root")
    try:
        print(make(root, **args))
    except ValueError as e:
        parser.error(str(e))
    return 0
