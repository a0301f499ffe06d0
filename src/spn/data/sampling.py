"""Sampling for training: an in-memory cache, and the deterministic map from a run's global
sample number to a training patch (what makes a resumed or data-parallel run draw exactly the
batches of an uninterrupted single-process one).

Global sample ``n`` (``n = step * global_batch + position``) is patch ``perm_e[n mod L]`` of
epoch ``e = n div L`` of a :class:`~spn.data.PatchDataset` (``L`` patches, ``perm_e`` a
permutation seeded by ``(seed, e)``). :class:`StepSampler` yields the sample numbers of one
rank; :class:`SampleView` turns them into patches.

Example:
    >>> from spn.data import PatchDataset, build_dataset
    >>> from spn.data.sampling import SampleView, StepSampler
    >>> patches = PatchDataset(build_dataset("synthetic", num_images=2, size=32), size=16)
    >>> list(StepSampler(start=1, total=2, batch_size=2, rank=1, world_size=2))
    [6, 7]
    >>> SampleView(patches, seed=0)[6]["image"].shape
    torch.Size([3, 16, 16])
"""
from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Sampler

__all__ = ["MemoryCache", "SampleView", "StepSampler"]


class MemoryCache(Dataset):
    """Keep every item of ``base`` in memory after its first load (small datasets only)."""

    def __init__(self, base):
        self.base = base
        self._items: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name):  # num_classes, class_names, ignore_index, info, ...
        if name in ("base", "_items"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index not in self._items:
            self._items[index] = self.base[index]
        return self._items[index]


class SampleView(Dataset):
    """Global sample number ``n`` -> a training patch (see :mod:`spn.data.sampling`).

    ``patches`` is a :class:`spn.data.PatchDataset` (or any dataset with ``set_epoch``); the
    view is infinite in principle, ``__len__`` is only a bound for the DataLoader.
    """

    def __init__(self, patches, seed: int):
        self.patches = patches
        self.seed = int(seed)
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return 2 ** 62

    def permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng([self.seed, 0x5350, epoch])
            self._perm = (epoch, rng.permutation(len(self.patches)))
        return self._perm[1]

    def locate(self, n: int) -> tuple[int, int]:
        """``(epoch, patch index)`` of global sample ``n``."""
        L = len(self.patches)
        e, p = divmod(int(n), L)
        return e, int(self.permutation(e)[p])

    def __getitem__(self, n: int) -> dict:
        e, idx = self.locate(n)
        if hasattr(self.patches, "set_epoch"):
            self.patches.set_epoch(e)
        return self.patches[idx]


class StepSampler(Sampler):
    """Yields this rank's global sample numbers for steps ``start .. total-1``:
    ``step * batch_size * world_size + rank * batch_size + i``, ``i < batch_size``."""

    def __init__(self, start: int, total: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start, self.total = int(start), int(total)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)

    def __len__(self) -> int:
        return max(0, self.total - self.start) * self.batch_size

    def __iter__(self):
        G = self.batch_size * self.world_size
        for step in range(self.start, self.total):
            base = step * G + self.rank * self.batch_size
            yield from range(base, base + self.batch_size)
