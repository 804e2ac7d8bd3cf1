"""Peak live tensor memory on any device, measured at the dispatcher.

``torch.cuda.max_memory_allocated`` has no CPU counterpart and ``tracemalloc`` does not see torch's
allocator, so :class:`LiveTensorTracker` watches every tensor an operator returns: each new storage
adds its ``nbytes`` when it appears and gives them back when Python frees it. ``peak`` is the
highest total seen, ``allocated`` the sum of every new storage. Storages that existed before the
tracker started (inputs, parameters) are never counted, not even when an operator returns a view of
them (``x.reshape``, ``weight.t()`` inside ``F.linear``): any storage first met as an operator
*input* is marked as pre-existing. The figure is the extra memory of the work. Autograd's saved
tensors and gradients count, because operators create them.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorTracker(TorchDispatchMode):
    """Context manager recording live and peak bytes of storages created inside it.

    >>> with LiveTensorTracker() as t:
    ...     x = torch.empty(1024, dtype=torch.float32)
    >>> t.peak
    4096
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.device = torch.device(device).type if device is not None else None
        self.live = 0
        self.peak = 0
        self.allocated = 0
        self.count = 0
        self._seen: dict[int, int] = {}  # id of a storage's c++ object -> its bytes

    def _release(self, key: int) -> None:
        self.live -= self._seen.pop(key, 0)

    def _track(self, t: torch.Tensor, existing: bool = False) -> None:
        if t.is_meta or (self.device is not None and t.device.type != self.device):
            return
        st = t.untyped_storage()
        key = st._cdata
        if key in self._seen:
            return
        nbytes = 0 if existing else st.nbytes()
        self._seen[key] = nbytes
        self.live += nbytes
        self.allocated += nbytes
        self.count += nbytes > 0
        self.peak = max(self.peak, self.live)
        weakref.finalize(st, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, existing=True)  # no-op for storages created inside the tracker
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def reset_peak(self) -> None:
        """Start a new peak from the bytes live now."""
        self.peak = self.live
