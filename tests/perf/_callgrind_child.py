"""Run under callgrind by ``test_operator_instructions.py``: instruction counts of the TSSA core.

Usage: ``valgrind --tool=callgrind --instr-atstart=no --collect-atstart=no
--callgrind-out-file=DIR/cg.out python _callgrind_child.py DIR``. Imports torch uninstrumented
(the slow part under valgrind), warms up, switches instrumentation on (``callgrind_control -i on``)
and then collects each measurement between two toggles of ``torch._C._valgrind_toggle``, one dump
per measurement; writes the measurement names in dump order to ``DIR/names.json``. Honours
``TSSA_PERF_PLANT`` like the in-process checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import _plant
import torch

from tssa.ops import tssa

B, H, N, D = 1, 8, 4096, 48  # the timing checks' shape: per-element work, not call overhead, dominates
CALLS = 4


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    saved = _plant.apply(_plant.requested())
    g = torch.Generator().manual_seed(0)
    wt = torch.randn(B, N, H * D, generator=g, requires_grad=True)  # (B, N, C) token-major, as in the layer
    tau = torch.ones(H)
    gy = torch.randn(B, N, H, D, generator=g).transpose(1, 2)  # (B, H, N, D)

    def forward():
        with torch.no_grad():
            tssa(wt.view(B, N, H, D).transpose(1, 2), tau)

    def forward_backward():
        torch.autograd.grad(tssa(wt.view(B, N, H, D).transpose(1, 2), tau), wt, gy)

    work = {"core_forward": forward, "core_forward_backward": forward_backward}
    for fn in work.values():
        for _ in range(3):
            fn()
    subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True)
    for fn in work.values():
        torch._C._valgrind_toggle()
        for _ in range(CALLS):
            fn()
        torch._C._valgrind_toggle_and_dump_stats()
    (out_dir / "names.json").write_text(json.dumps(list(work)))
    _plant.restore(saved)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
