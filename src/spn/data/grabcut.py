"""GrabCut's mask of one object from its enlarged box: a classical segmenter's coarse mask.

OpenCV's ``cv2.grabCut`` (5 iterations, initialised with a rectangle) is given the object's
bounding box enlarged by :data:`BOX_GROW` of its width and height, as a user would draw it. Its
errors are those of a colour model (whole parts missed or taken, boundaries on colour edges), not
those of a perturbed mask. The zero-shot evaluation's ``grabcut`` coarse source
(:mod:`spn.experiments.mask_zero_shot`) and the composites' ``grabcut`` share
(:class:`spn.data.composites.CompositeDataset`) both call :func:`grabcut_mask`.

Needs ``opencv-python-headless`` (imported when called).

Example:
    >>> import torch
    >>> from spn.data.grabcut import grown_box
    >>> m = torch.zeros(40, 60, dtype=torch.bool); m[10:30, 20:40] = True
    >>> grown_box(m.numpy())  # 20 x 20 box grown by 1 pixel on each side
    (19, 9, 41, 31)
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["BOX_GROW", "grabcut_mask", "grown_box"]

#: GrabCut's box: the object's box enlarged by this fraction of its width and height
BOX_GROW = 0.10


def grown_box(mask: np.ndarray, grow: float = BOX_GROW) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (exclusive ends) of ``mask``'s box enlarged by ``grow`` (half on each
    side), clamped to the image. ``mask`` must hold at least one True pixel."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        raise ValueError("grown_box: the mask is empty (no object to box)")
    H, W = mask.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    dy, dx = (y1 - y0) * grow / 2, (x1 - x0) * grow / 2
    return (max(0, int(math.floor(x0 - dx))), max(0, int(math.floor(y0 - dy))),
            min(W, int(math.ceil(x1 + dx))), min(H, int(math.ceil(y1 + dy))))


def grabcut_mask(image: torch.Tensor, target: torch.Tensor, seed: int, iterations: int = 5) -> torch.Tensor:
    """OpenCV's GrabCut of ``image`` ``(3, H, W)`` in [0, 1] from ``target``'s box enlarged by
    :data:`BOX_GROW` (``target``: ``(H, W)``, nonzero on the object). Returns a float ``(H, W)``
    0/1 mask (definite and probable foreground). ``seed`` seeds OpenCV's RNG, so the result is
    deterministic. A box that covers the whole image is shrunk by one pixel on each side
    (GrabCut needs some background)."""
    import cv2

    rgb = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    x0, y0, x1, y1 = grown_box(target.numpy() > 0)
    if x1 - x0 >= bgr.shape[1] and y1 - y0 >= bgr.shape[0]:
        x0, y0, x1, y1 = 1, 1, bgr.shape[1] - 1, bgr.shape[0] - 1
    mask = np.zeros(bgr.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(int(seed))
    cv2.grabCut(bgr, mask, (x0, y0, x1 - x0, y1 - y0), bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    return torch.from_numpy(((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.float32))
