"""README blocks: the one writer of generated text in the README, with one marker style.

A block is the text between ``<!-- <name>:begin -->`` and ``<!-- <name>:end -->``; the command
that writes it is named on its first line by the caller. Names: ``<study>:<suite>`` for
``derive``, ``report`` for the report, ``floor`` and ``yolo-table`` for the complexity study's
commands.

>>> import pathlib, tempfile
>>> p = pathlib.Path(tempfile.mkdtemp()) / "README.md"
>>> _ = p.write_text("a\\n<!-- x:begin -->\\nold\\n<!-- x:end -->\\nb\\n")
>>> write_block(p, "x", "new")
>>> p.read_text()
'a\\n<!-- x:begin -->\\nnew\\n<!-- x:end -->\\nb\\n'
"""

from __future__ import annotations

import os
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_block(readme, name: str, block: str) -> None:
    """Replace the text between the ``name`` markers of ``readme`` with ``block`` (atomically: temp
    file + rename); ValueError naming the markers when they are missing, repeated or out of order."""
    path = Path(readme)
    begin, end = markers(name)
    text = path.read_text(encoding="utf-8")
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"{path} needs exactly one '{begin}' followed by one '{end}'; add both marker lines "
                         "where the numbers go")  # fmt: skip
    i, j = text.index(begin), text.index(end)
    new = text[: i + len(begin)] + "\n" + block.strip() + "\n" + text[j:]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)
