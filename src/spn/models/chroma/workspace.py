"""Reused full-resolution buffers of the chroma SPN's fast inference path, per thread.

Example:
    >>> import torch
    >>> from spn.models.chroma.workspace import Buffers, release_workspace
    >>> buf = Buffers(torch.empty(0))
    >>> a = buf("gates", (2, 3)); b = buf("gates", (3,))       # the same storage, reused
    >>> a.data_ptr() == b.data_ptr()
    True
    >>> release_workspace()
"""
from __future__ import annotations

import math
import threading

import torch

__all__ = ["WORKSPACE_LIMIT_BYTES", "Buffers", "release_workspace"]

#: The fast inference path keeps its full-resolution buffers (the gates, the bilinear chroma,
#: the similarity maps: 78 MiB per megapixel for three-way, 38 MiB for one-way) between calls,
#: per thread, up to this many bytes in all (about 6.5 MP three-way); larger images get fresh
#: buffers. Reusing them matters on CPU:
#: a fresh large tensor costs a page fault per 4 KiB page when first written, which took longer
#: than the arithmetic on the gates.
WORKSPACE_LIMIT_BYTES = 512 * 2 ** 20
_WORKSPACE = threading.local()


def release_workspace() -> None:
    """Free this thread's buffers of the fast inference path (:meth:`ChromaSPN.forward` under
    ``torch.no_grad()``); the next call allocates them again."""
    _WORKSPACE.__dict__.clear()


class Buffers:
    """Named buffers for one call: cached per thread and reused (flat storages, grown as needed)
    while their total stays within :data:`WORKSPACE_LIMIT_BYTES`, else fresh."""

    def __init__(self, like: torch.Tensor):
        self.like = like
        self.cache = _WORKSPACE.__dict__.setdefault("storages", {})
        self.limit = WORKSPACE_LIMIT_BYTES

    def __call__(self, name: str, shape) -> torch.Tensor:
        n = math.prod(int(v) for v in shape)
        key = (name, self.like.dtype, self.like.device)
        flat = self.cache.get(key)
        if flat is not None and flat.is_inference() and not torch.is_inference_mode_enabled():
            flat = None  # made under torch.inference_mode(): not writable outside it
        if flat is None or flat.numel() < n:
            self.cache.pop(key, None)
            total = sum(t.numel() * t.element_size() for t in self.cache.values())
            size = self.like.element_size()
            # 25% headroom, so that a slightly larger next image reuses the buffer: untouched
            # pages of an allocation cost nothing until written
            cap = n + n // 4 if total + (n + n // 4) * size <= self.limit else n
            flat = self.like.new_empty(cap)
            if total + cap * size <= self.limit:
                self.cache[key] = flat
        return flat[:n].view(*shape)
