"""Small helpers the ToST models need and timm offers only in private modules.

timm's ``feature_take_indices`` lives in ``timm.models._features`` and its ``checkpoint`` wrapper
only became public (``timm.models.checkpoint``) in later 1.0 releases, so importing them would tie
the package to timm internals. Both are a few lines on top of public APIs:

- :func:`feature_take_indices`: which blocks ``forward_intermediates`` returns, with timm's meaning of
  ``indices`` (an int n: the last n; a list: those indices, negative ones counted from the end;
  None: all).
- :func:`checkpoint`: ``torch.utils.checkpoint.checkpoint`` with the non-reentrant variant, which
  timm also uses by default.

>>> feature_take_indices(12, 3)
([9, 10, 11], 11)
>>> feature_take_indices(12, [0, -1])
([0, 11], 11)
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint

__all__ = ["feature_take_indices", "checkpoint"]


def feature_take_indices(num_features: int, indices: int | list[int] | tuple[int, ...] | None = None):
    """``(take, max_index)``: the absolute indices out of ``num_features`` that ``indices`` selects.

    ``None``: all; an int ``n`` (1 <= n <= num_features): the last n; a sequence: each index, a negative
    one counted from the end. Raises ``ValueError`` for an index out of range.
    """
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"last-n indices {indices} out of range: use 1 to {num_features}")
        take = list(range(num_features - indices, num_features))
    else:
        take = []
        for i in indices:
            idx = num_features + i if i < 0 else i
            if not 0 <= idx < num_features:
                raise ValueError(f"feature index {i} out of range for {num_features} blocks")
            take.append(idx)
        if not take:
            raise ValueError("indices is empty: name at least one block")
    return take, max(take)


def checkpoint(function, *args, **kwargs) -> torch.Tensor:
    """Activation checkpointing of ``function(*args)`` (recomputed in backward), non-reentrant."""
    return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False, **kwargs)
