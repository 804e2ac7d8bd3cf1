"""The paper's published figures, in one place: never measurements of this project.

Wu et al., *Token Statistics Transformer*, ICLR 2025, Table 2: ImageNet-1k top-1 at 224 px after
400 epochs, with parameter counts. ``arm`` is the closest configuration this project registers
in timm (``tssa.timm``). Every table, README block and ledger row that shows these numbers reads
them from :data:`TABLE2` and marks them as the paper's.

>>> [m.name for m in TABLE2]
['ToST-T', 'ToST-S', 'ToST-M', 'XCiT-S', 'ViT-S']
>>> table2("ToST-S").top1
77.9
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE2_SOURCE = "paper, Table 2 (ImageNet-1k)"


@dataclass(frozen=True)
class PaperModel:
    """One row of the paper's Table 2: top-1 in percent, parameters in millions."""

    name: str
    arm: str
    top1: float
    params_m: float


TABLE2 = (
    PaperModel("ToST-T", "tost_tiny_12_p16_224", 67.3, 5.8),
    PaperModel("ToST-S", "tost_small_12_p16_224", 77.9, 22.6),
    PaperModel("ToST-M", "tost_medium_24_p16_224", 80.3, 68.1),
    PaperModel("XCiT-S", "tost_xca_small_12_p16_224", 80.5, 24.9),
    PaperModel("ViT-S", "tost_softmax_small_12_p16_224", 79.8, 22.1),
)


def table2(name: str) -> PaperModel:
    """The row of :data:`TABLE2` named ``name`` (KeyError naming the rows otherwise)."""
    for m in TABLE2:
        if m.name == name:
            return m
    raise KeyError(f"{name!r} is not a row of the paper's Table 2: {[m.name for m in TABLE2]}")
