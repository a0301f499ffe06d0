"""Training patches cropped from a segmentation dataset (the paper, Sec. 5: 128 x 128 patches
from regions containing more than one ground-truth label)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .base import check_index


class CropSampler(Dataset):
    """What every training-crop dataset shares: ``patches_per_image`` crops of ``size`` pixels
    per item of ``base`` and epoch, patch ``index`` of item ``index // patches_per_image``, an
    epoch that selects the random stream (:meth:`set_epoch`)."""

    def __init__(self, base, size: int, patches_per_image: int, flip: bool, seed: int):
        if not hasattr(base, "__getitem__") or not hasattr(base, "__len__"):
            raise TypeError(f"base must be a dataset (with __getitem__ and __len__), got {type(base).__name__}")
        if int(size) < 1:
            raise ValueError(f"patch size must be >= 1, got {size}")
        if int(patches_per_image) < 1:
            raise ValueError(f"patches_per_image must be >= 1, got {patches_per_image}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if len(base) == 0:
            raise ValueError("base dataset is empty")
        self.base = base
        self.size = int(size)
        self.patches_per_image = int(patches_per_image)
        self.flip = bool(flip)
        self.seed = int(seed)
        self.epoch = 0

    def _info(self, **extra) -> dict:
        d = dict(self.base.info()) if hasattr(self.base, "info") else {}
        d.update(patch_size=self.size, patches_per_image=self.patches_per_image, flip=self.flip, **extra,
                 size=len(self))
        return d

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of an epoch (call before each epoch for fresh patches)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base) * self.patches_per_image


class PatchDataset(CropSampler):
    """``size x size`` crops of the items of ``base``, all keys cropped consistently.

    Item ``index`` is patch ``index % patches_per_image`` of base item
    ``index // patches_per_image``; it depends only on ``(seed, epoch, index)``
    (``numpy.random.default_rng([seed, epoch, index])``; change the epoch with
    :meth:`set_epoch`).

    Sampling: up to ``max_tries`` uniformly random positions are drawn; the first whose mask
    holds at least ``min_labels`` distinct labelled classes (255 not counted) is taken. If none
    does, one more position centred on a random label-boundary pixel is tried, and if that
    fails too, the best position seen (most labels, then most labelled pixels) is used, so
    an image of a single label still gives patches.

    Padding: an item smaller than ``size`` (in H or W) is padded symmetrically (extra pixel at
    the bottom/right) to at least ``size``: image with 0, mask with 255 (ignored by the loss),
    coarse with uniform probabilities ``1/K``.

    Flip: with ``flip=True`` a patch is mirrored left-right with probability 1/2 (every key).

    Items: the base item's keys cropped, ``"name"`` = ``"NAME@yY,xX"`` (+ ``",flip"``).

    Shape:
        - item["image"]: ``(3, size, size)``; item["mask"]: ``(size, size)``;
          item["coarse"]: ``(K, size, size)``

    Example:
        >>> from spn.data import PatchDataset, build_dataset
        >>> patches = PatchDataset(build_dataset("synthetic", num_images=2, size=64), size=32, patches_per_image=3)
        >>> len(patches), patches[4]["image"].shape, patches[4]["coarse"].shape
        (6, torch.Size([3, 32, 32]), torch.Size([6, 32, 32]))
    """

    def __init__(self, base, size: int = 128, patches_per_image: int = 4, flip: bool = True,
                 seed: int = 0, min_labels: int = 2, max_tries: int = 10):
        if int(min_labels) < 1:
            raise ValueError(f"min_labels must be >= 1, got {min_labels}")
        if int(max_tries) < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        super().__init__(base, size, patches_per_image, flip, seed)
        self.min_labels = int(min_labels)
        self.max_tries = int(max_tries)
        self._cache: tuple[int, dict] | None = None

    # mirror the base dataset's class information
    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.base.class_names

    @property
    def ignore_index(self) -> int:
        return getattr(self.base, "ignore_index", 255)

    def info(self) -> dict:
        return self._info(min_labels=self.min_labels)

    def _base_item(self, i: int) -> dict:
        if self._cache is not None and self._cache[0] == i:
            return self._cache[1]
        item = self.base[i]
        self._cache = (i, item)
        return item

    def _pad(self, item: dict) -> dict:
        H, W = item["mask"].shape[-2:]
        ph, pw = max(0, self.size - H), max(0, self.size - W)
        if ph == 0 and pw == 0:
            return item
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)  # left, right, top, bottom
        out = dict(item)
        out["image"] = F.pad(item["image"], pad, value=0.0)
        out["mask"] = F.pad(item["mask"], pad, value=self.ignore_index)
        if "coarse" in item:
            K = item["coarse"].shape[0]
            out["coarse"] = F.pad(item["coarse"], pad, value=1.0 / K)
        return out

    def _count(self, mask: torch.Tensor, y: int, x: int) -> tuple[int, int]:
        crop = mask[y:y + self.size, x:x + self.size].reshape(-1)
        counts = torch.bincount(crop, minlength=256)
        counts[self.ignore_index] = 0
        return int((counts > 0).sum()), int(counts.sum())

    def _choose(self, mask: torch.Tensor, rng: np.random.Generator) -> tuple[int, int]:
        H, W = mask.shape
        s = self.size
        best, best_score = (0, 0), (-1, -1)
        for _ in range(self.max_tries):
            y, x = int(rng.integers(0, H - s + 1)), int(rng.integers(0, W - s + 1))
            score = self._count(mask, y, x)
            if score[0] >= self.min_labels:
                return y, x
            if score > best_score:
                best, best_score = (y, x), score
        # one try centred on a label boundary
        m = mask
        edge = torch.zeros_like(m, dtype=torch.bool)
        dv = (m[1:, :] != m[:-1, :]) & (m[1:, :] != self.ignore_index) & (m[:-1, :] != self.ignore_index)
        dh = (m[:, 1:] != m[:, :-1]) & (m[:, 1:] != self.ignore_index) & (m[:, :-1] != self.ignore_index)
        edge[1:, :] |= dv
        edge[:, 1:] |= dh
        pts = edge.nonzero()
        if len(pts):
            py, px = pts[int(rng.integers(0, len(pts)))].tolist()
            y = min(max(py - s // 2, 0), H - s)
            x = min(max(px - s // 2, 0), W - s)
            score = self._count(mask, y, x)
            if score[0] >= self.min_labels or score > best_score:
                return y, x
        return best

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, len(self), "patches")
        item = self._pad(self._base_item(index // self.patches_per_image))
        rng = np.random.default_rng([self.seed, self.epoch, index])
        y, x = self._choose(item["mask"], rng)
        s = self.size
        flip = self.flip and bool(rng.random() < 0.5)
        out = {}
        for k, v in item.items():
            if isinstance(v, torch.Tensor) and v.dim() >= 2 and tuple(v.shape[-2:]) == tuple(item["mask"].shape):
                c = v[..., y:y + s, x:x + s]
                if flip:
                    c = torch.flip(c, dims=[-1])
                out[k] = c.contiguous()
            else:
                out[k] = v
        out["name"] = f"{item.get('name', index)}@y{y},x{x}" + (",flip" if flip else "")
        return out
