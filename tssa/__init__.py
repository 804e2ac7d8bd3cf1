"""Token Statistics Self-Attention (TSSA): the operator, swappable attention modules, and
integrations (``tssa.ultralytics``, ``tssa.timm``) that import their framework only when imported.

Wu et al., "Token Statistics Transformer: Linear-Time Attention via Variational Rate Reduction",
ICLR 2025 (arXiv 2412.17810). ``import tssa`` needs torch only.
"""

from .nn import SoftmaxAttention, TokenStatisticsAttention, build_attention
from .ops import available_impls, tssa

__version__ = "0.1.0"
__all__ = ["tssa", "available_impls", "TokenStatisticsAttention", "SoftmaxAttention", "build_attention"]
