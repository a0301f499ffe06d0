"""Base classes of the segmentation datasets.

Every dataset yields dict items (the shared contract):

- ``"image"``: float32 ``(3, H, W)`` in ``[0, 1]``
- ``"mask"``: int64 ``(H, W)`` class ids, ``255`` = ignore
- ``"coarse"``: float32 ``(K, H, W)`` class probabilities at image resolution (absent when the
  coarse source is ``"none"``)
- ``"name"``: str

and exposes ``num_classes``, ``class_names`` and ``ignore_index`` (255).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .coarse import (CoarseKind, CoarseSource, make_coarse_from_mask, parse_coarse_source, read_coarse_file,
                     resolve_coarse_kind)
from ..image.io import IGNORE_INDEX, CorruptFileError, read_image, read_mask

ON_CORRUPT = ("error", "skip")


def check_index(index, n: int, what: str = "items") -> int:
    """``index`` as a non-negative int in ``[0, n)`` (negative counts from the end)."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"index must be an int, got {type(index).__name__}")
    index = int(index)
    if index < 0:
        index += n
    if not 0 <= index < n:
        raise IndexError(f"index {index} out of range for {n} {what}")
    return index


def items_to_evaluate(dataset, limit=None) -> int:
    """How many items of ``dataset`` an evaluation reads: all of them, or the first ``limit``.

    Raises ``ValueError`` for a ``limit`` below 1 or an empty dataset.

    Example:
        >>> items_to_evaluate(range(5)), items_to_evaluate(range(5), limit=2)
        (5, 2)
    """
    n = len(dataset)
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        n = min(n, int(limit))
    if n == 0:
        raise ValueError("the dataset is empty")
    return n


def coarse_dir_for(coarse_dir, coarse, dataset: str) -> Path | None:
    """Validate the optional folder of coarse maps of a paper dataset (VOC, HELEN)."""
    if coarse_dir is not None:
        cdir = Path(coarse_dir)
        if not cdir.is_dir():
            raise FileNotFoundError(f"coarse_dir {cdir} is not a directory")
        return cdir
    if coarse == "files":
        raise ValueError(f"coarse='files' for {dataset} needs coarse_dir=PATH (a folder of NAME.npy or NAME.png)")
    return None


def _check_class_names(num_classes: int, class_names) -> list[str]:
    if class_names is None:
        return [f"class_{i}" for i in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(f"got {len(names)} class names for {num_classes} classes")
    return names


class SegmentationDataset(Dataset):
    """Common part: class list, coarse source, optional ``transform(item) -> item``."""

    ignore_index: int = IGNORE_INDEX
    #: coarse kinds this dataset can produce
    supported_coarse: tuple[str, ...] = ("gt-downsample", "none")

    def __init__(self, num_classes: int, class_names=None, coarse: str | CoarseSource = "none",
                 transform: Callable[[dict], dict] | None = None):
        num_classes = int(num_classes)
        if not 1 <= num_classes <= 255:
            raise ValueError(f"num_classes must lie in [1, 255] (255 is the ignore id), got {num_classes}")
        self.num_classes = num_classes
        self.class_names = _check_class_names(num_classes, class_names)
        self.coarse_source = parse_coarse_source(coarse)
        if self.coarse_source.kind not in self.supported_coarse:
            raise ValueError(
                f"{type(self).__name__} cannot provide coarse source {str(self.coarse_source)!r}; "
                f"available here: {self._coarse_choices()}")
        if transform is not None and not callable(transform):
            raise TypeError("transform must be callable")
        self.transform = transform

    def _coarse_choices(self) -> str:
        return ", ".join("gt-downsample:F" if k == "gt-downsample" else k for k in self.supported_coarse)

    @property
    def coarse(self) -> str:
        """The coarse source as a string (``"files"``, ``"gt-downsample:8"``, ``"none"``)."""
        return str(self.coarse_source)

    def info(self) -> dict:
        """JSON-able description (for checkpoints and reports)."""
        return {
            "dataset": type(self).__name__,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
            "coarse": self.coarse,
            "size": len(self),
        }

    def _finish(self, image: torch.Tensor, mask, coarse_file: torch.Tensor | None, name: str) -> dict:
        """Assemble an item: add the coarse map the coarse source asks for, apply transform."""
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(np.ascontiguousarray(mask))
        mask = mask.long()
        item = {"image": image.float().contiguous(), "mask": mask.contiguous(), "name": name}
        kind = self.coarse_source.kind
        if kind == "files":
            if coarse_file is None:  # guarded at construction; keep a clear message anyway
                raise FileNotFoundError(f"no coarse map for item {name!r}")
            item["coarse"] = coarse_file.float().contiguous()
        elif kind == "gt-downsample":
            item["coarse"] = make_coarse_from_mask(mask, self.num_classes, self.coarse_source.factor,
                                                   ignore_index=self.ignore_index)
        if self.transform is not None:
            item = self.transform(item)
        return item


@dataclass
class Record:
    """One item of a file-backed dataset."""

    name: str
    image: Path
    mask: Path | None
    coarse: Path | None = None


class FileSegmentationDataset(SegmentationDataset):
    """A dataset of :class:`Record` s read lazily from disk.

    ``on_corrupt``:
      ``"error"`` (default) raises CorruptFileError (a ValueError naming the file) when an image,
      mask or coarse file of an item cannot be decoded;
      ``"skip"`` validates lazily: the bad item is remembered, a ``warnings.warn`` names the
      file, and the next readable item (cyclically) is returned instead, so a DataLoader keeps
      running. ``len()`` still counts the bad item until :meth:`validate` is called, which
      decodes every item once and drops the bad ones. Size mismatches and out-of-range class
      ids are data errors, not corruption: they raise ValueError in both modes.

    ``coarse_kind`` declares what the coarse files hold (``"probs"``, ``"logits"``, ``"labels"``,
    optionally ``KIND:SCALE``); None: the sidecar ``coarse.json`` of ``coarse_folder``, else by
    file type (:mod:`spn.data.coarse`).
    """

    supported_coarse = ("files", "gt-downsample", "none")

    def __init__(self, records: list[Record], num_classes: int, class_names=None,
                 coarse: str | CoarseSource = "none", on_corrupt: str = "error",
                 transform=None, root: Path | None = None, coarse_hint: str = "", coarse_kind=None,
                 coarse_folder=None):
        super().__init__(num_classes, class_names, coarse, transform)
        self.coarse_kind: CoarseKind = resolve_coarse_kind(coarse_kind, coarse_folder, flag="coarse_kind")
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
        self.on_corrupt = on_corrupt
        self.records = list(records)
        self.root = Path(root) if root is not None else None
        self._bad: set[int] = set()
        if self.coarse_source.kind == "files":
            missing = [r for r in self.records if r.coarse is None]
            if missing:
                names = ", ".join(r.name for r in missing[:5])
                more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
                raise FileNotFoundError(
                    f"coarse source 'files' but no coarse map for {len(missing)} item(s): {names}{more}"
                    + (f"; expected {coarse_hint}" if coarse_hint else ""))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    # -- reading one record ------------------------------------------------------------
    def _read_mask(self, rec: Record) -> np.ndarray:
        return read_mask(rec.mask)

    def _check_mask(self, rec: Record, mask: np.ndarray, image: torch.Tensor) -> None:
        H, W = image.shape[-2:]
        if mask.shape != (H, W):
            raise ValueError(
                f"size mismatch for {rec.name!r}: image {rec.image} is {W}x{H} (WxH) but mask "
                f"{rec.mask} is {mask.shape[1]}x{mask.shape[0]}")
        bad = (mask != self.ignore_index) & (mask >= self.num_classes)
        if bad.any():
            ids = sorted(set(np.unique(mask[bad]).tolist()))
            raise ValueError(
                f"mask {rec.mask} holds class ids {ids} >= num_classes {self.num_classes} "
                f"(valid: 0..{self.num_classes - 1} and {self.ignore_index} = ignore)")

    def _postprocess(self, rec: Record, image, mask, coarse):
        """Hook for subclasses (e.g. HELEN's face crop)."""
        return image, mask, coarse

    def load(self, index: int) -> dict:
        """Read item ``index`` (no skipping: errors propagate)."""
        rec = self.records[index]
        image = read_image(rec.image)
        mask = self._read_mask(rec)
        self._check_mask(rec, mask, image)
        coarse = None
        if self.coarse_source.kind == "files":
            coarse = read_coarse_file(rec.coarse, self.num_classes, tuple(image.shape[-2:]),
                                      self.ignore_index, kind=self.coarse_kind)
        image, mask, coarse = self._postprocess(rec, image, mask, coarse)
        return self._finish(image, mask, coarse, rec.name)

    def __getitem__(self, index: int) -> dict:
        n = len(self.records)
        index = check_index(index, n)
        for k in range(n):
            j = (index + k) % n
            if j in self._bad:
                continue
            try:
                return self.load(j)
            except CorruptFileError as exc:
                if self.on_corrupt == "error":
                    raise
                self._bad.add(j)
                warnings.warn(f"skipping corrupt item {self.records[j].name!r}: {exc}", stacklevel=2)
        raise RuntimeError(f"every one of the {n} items of this dataset is unreadable")

    def validate(self) -> list[tuple[str, str]]:
        """Decode every item once. Returns ``[(name, error), ...]`` of the corrupt ones; in
        ``"skip"`` mode they are also removed from the dataset (so ``len`` is exact), in
        ``"error"`` mode the first one raises."""
        problems, keep = [], []
        for i, rec in enumerate(self.records):
            try:
                self.load(i)
                keep.append(rec)
            except CorruptFileError as exc:
                if self.on_corrupt == "error":
                    raise
                warnings.warn(f"skipping corrupt item {rec.name!r}: {exc}", stacklevel=2)
                problems.append((rec.name, str(exc)))
        self.records = keep
        self._bad = set()
        return problems


def infer_num_classes(mask_paths, on_corrupt: str = "error", ignore_index: int = IGNORE_INDEX,
                      reader=read_mask) -> int:
    """``1 + max`` class id over the masks (``ignore_index`` excluded); at least 2."""
    top = 0
    for p in mask_paths:
        try:
            m = reader(p)
        except CorruptFileError as exc:
            if on_corrupt == "error":
                raise
            warnings.warn(f"skipping corrupt mask while counting classes: {exc}", stacklevel=2)
            continue
        v = m[m != ignore_index]
        if v.size:
            top = max(top, int(v.max()))
    return max(2, top + 1)
