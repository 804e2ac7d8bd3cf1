"""Run one of timm's command-line scripts with the ToST family registered.

timm's ``train.py``, ``validate.py`` and ``benchmark.py`` look models up by name in timm's
registry; this wrapper imports :mod:`tssa.timm` first, then runs the script as ``__main__`` with the
remaining arguments, so ``--model tost_tiny_12_p16_224`` resolves::

    python -m tssa.timm.run path/to/validate.py --model tost_tiny_12_p16_224 --device cpu ...

The scripts live in timm's git repository (tag ``v<timm version>``), not in its wheel or sdist.
"""

import argparse
import runpy
import sys
from pathlib import Path

import tssa.timm  # noqa: F401  (registers the family with timm)


def main(argv: list[str] | None = None) -> None:
    """``SCRIPT [ARGS...]``: run SCRIPT as ``__main__`` with ``sys.argv = [SCRIPT, *ARGS]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tssa.timm.run",
        description="Run a timm script (train.py, validate.py, benchmark.py) with the ToST models registered.",
    )
    parser.add_argument("script", help="path to the timm script, e.g. pytorch-image-models/train.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    ns = parser.parse_args(argv)
    script = Path(ns.script)
    if not script.is_file() or script.suffix != ".py":
        parser.error(
            f"script {str(script)!r} is not a Python file; pass the path of timm's train.py, validate.py or "
            "benchmark.py (from a checkout of timm's git repository at the installed version's tag)"
        )
    sys.argv = [str(script), *ns.args]
    sys.path.insert(0, str(script.resolve().parent))  # the scripts import their siblings
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
