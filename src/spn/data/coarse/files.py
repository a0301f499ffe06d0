"""Reading stored coarse maps: the one reader of coarse files (:func:`read_coarse_file`), with the
``.npy`` header checked before anything is allocated.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...image.io import read_mask, read_npy
from .convert import ASPECT_TOLERANCE, prepare_coarse
from .kinds import CoarseKind, _declared, parse_coarse_kind, read_sidecar


def load_coarse_array(path, kind=None, *, max_pixels=None) -> tuple[np.ndarray, CoarseKind]:
    """The raw array of a coarse file and its kind: ``kind`` (a declaration) or, when None, the
    sidecar of the file's folder, else the file type's (``.png`` labels, ``.npy`` probs). A PNG
    holds class ids: declaring it ``probs``/``logits`` is an error. The header of either is
    checked before the array is allocated: its ``h x w`` against the pixel limit of
    :func:`spn.image.io.read_image` (``max_pixels``, ``SPN_MAX_PIXELS``), a ``.npy``'s size
    against the file's (:func:`spn.image.io.read_npy`)."""
    path = Path(path)
    k = parse_coarse_kind(kind) if kind is not None else (read_sidecar(path.parent) or CoarseKind())
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = read_npy(path, "coarse map", max_pixels=max_pixels)
        return arr, (k if k.kind is not None else CoarseKind("probs", k.scale, "the default for .npy"))
    if suffix == ".png":
        if k.kind not in (None, "labels"):
            raise ValueError(f"coarse map {path} is a PNG, which holds class ids (kind labels), but it is "
                             f"{_declared(k)}; store probabilities or logits as (K, h, w) .npy")
        return read_mask(path, max_pixels=max_pixels), CoarseKind("labels", None, k.origin if k.kind else "the default for .png")
    raise ValueError(f"coarse map {path}: unsupported file type {path.suffix!r} (use .npy or .png)")


def read_coarse_file(path, num_classes: int, size: tuple[int, int], ignore_index: int = 255, *,
                     kind=None, owner: str = "the dataset",
                     max_aspect_error: float | None = ASPECT_TOLERANCE) -> torch.Tensor:
    """Read a stored coarse map and return float32 ``(num_classes, H, W)`` probabilities at
    ``size = (H, W)``. This is the one reader of coarse files (datasets, ``spn refine``).

    - ``NAME.npy``: ``(K, h, w)`` probabilities (the default) or logits, or ``(h, w)`` labels, as
      declared by ``kind`` (``"probs"``, ``"logits"``, ``"labels"``, optionally ``KIND:SCALE``),
      else by ``coarse.json`` in the file's folder. Nothing is guessed: a map that contradicts
      its kind is an error (:func:`coarse_to_probs`).
    - ``NAME.png``: class indices (palette or greyscale PNG): one-hot probabilities
      (``ignore_index`` pixels uniform).

    The map may have any resolution of the image's aspect ratio (within ``max_aspect_error``,
    :func:`check_coverage`) and is bilinearly upsampled (:func:`prepare_coarse`). ``owner``
    names who fixes ``num_classes`` in the error messages (``"checkpoint RUN"`` for ``spn refine``).

    Shape:
        - output: ``(num_classes, H, W)`` float32, summing to one over the classes
    """
    arr, k = load_coarse_array(path, kind)
    return prepare_coarse(arr, k, num_classes, size, ignore_index=ignore_index, where=str(path), owner=owner,
                          max_aspect_error=max_aspect_error)
