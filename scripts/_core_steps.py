"""The TSSA core's inputs and calls as the layer makes them, for the scripts that time it.

A token-major (1, N, H * D) leaf as the layer's projection gives it (seeded), its (1, H, N, D) head
split, a temperature of ones and an upstream gradient; ``forward(impl)`` and ``forward_backward(impl)``
return the calls (no grad; ``torch.autograd.grad`` back to the leaf).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class CoreSteps:
    wt: Any
    heads_view: Callable[[], Any]
    forward: Callable[[str], Callable[[], None]]
    forward_backward: Callable[[str], Callable[[], None]]


def core_steps(n: int, heads: int, dim: int) -> CoreSteps:
    import torch

    from tssa.ops import tssa

    g = torch.Generator().manual_seed(0)
    wt = torch.randn(1, n, heads * dim, generator=g, requires_grad=True)
    tau = torch.ones(heads)
    gy = torch.randn(1, n, heads, dim, generator=g).transpose(1, 2)

    def heads_view():
        return wt.view(1, n, heads, dim).transpose(1, 2)

    def forward(impl):
        def step():
            with torch.no_grad():
                tssa(heads_view(), tau, impl=impl)

        return step

    def forward_backward(impl):
        return lambda: torch.autograd.grad(tssa(heads_view(), tau, impl=impl), wt, gy)

    return CoreSteps(wt, heads_view, forward, forward_backward)
