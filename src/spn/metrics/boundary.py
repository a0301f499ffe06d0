"""Boundary metrics: where refinement is judged.

Three scores of a predicted label map against the ground truth, accumulated over a dataset by
:class:`BoundaryScores` (what the protocols of :mod:`spn.metrics.protocols` add with
``boundary=True``, i.e. ``spn eval``, ``spn compare`` and ``spn demo``):

- **boundary IoU** (Cheng et al., CVPR 2021). For a class ``c``, the boundary region of a binary
  mask ``M`` is the part of ``M`` within distance ``d`` of a pixel outside ``M``:
  ``B_d(M) = M & dilate(~M, d)``, where ``dilate`` is ``d`` steps of a 3 x 3 square (chessboard
  distance, as the authors' ``cv2.erode`` with ``d`` iterations). ``d`` is ``ratio`` (0.02) of
  the image diagonal, rounded, at least 1. The IoU of ``B_d(gt == c)`` and ``B_d(pred == c)``
  (pixels whose ground truth is ``ignore_index`` left out) is accumulated over the dataset
  (intersections and unions summed, as for mIoU), and ``boundary_iou`` is the mean over the
  classes whose union is not empty. One departure from the authors' binary-mask code: the image
  frame is not a contour (outside the image counts as neither inside nor outside ``M``), so a
  background that touches the border adds no boundary there.
- **trimap accuracy** (Kraehenbuehl and Koltun 2011, Fig. 4 of the dense CRF paper): the pixel
  accuracy within bands around the ground-truth edges. An edge pixel is one with a 4-neighbour
  of another label (``ignore_index`` counts as a label, so VOC's void outlines are edges). The
  band of width ``w`` is every pixel whose chessboard distance to an edge pixel is below ``w``:
  ``w = 1`` is the edge pixels themselves (one on each side of a contour), ``w = 2`` adds their
  neighbours, and so on. Pixels of ``ignore_index`` are not scored. Correct and scored pixels are
  summed over the dataset for each ``w`` of ``widths`` (1..20).
- **mBA**, mean boundary accuracy (CascadePSP, Cheng et al., CVPR 2020): for ``steps`` (5)
  radii ``r_i = 1 + int((R - 1) / steps * i)``, ``R = (H + W) / 300``, the region where a disk of
  radius ``r_i`` (``x^2 + y^2 <= r^2``) around the pixel meets two labels or more (the
  morphological gradient of the label map); the accuracy in that region, averaged over the radii,
  then over the images (an image without any region is skipped). Small images get radius 1 only.

Shape: ``pred`` and ``target`` are ``(H, W)`` or ``(B, H, W)`` integer label maps.

Example:
    >>> import torch
    >>> from spn.metrics.boundary import BoundaryScores
    >>> gt = torch.zeros(8, 8, dtype=torch.long); gt[:, 4:] = 1
    >>> s = BoundaryScores(2, widths=(1, 2)); s.update(gt, gt)
    >>> m = s.compute(); m["boundary_iou"], m["trimap_accuracy"], m["mba"]
    (1.0, [1.0, 1.0], 1.0)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["BoundaryScores", "boundary_region", "edge_map", "trimap_band", "gradient_region",
           "boundary_width", "mba_radii", "DEFAULT_WIDTHS"]

DEFAULT_WIDTHS = tuple(range(1, 21))


def _dilate(mask: torch.Tensor, steps: int) -> torch.Tensor:
    """Chessboard dilation of a bool ``(H, W)`` map by ``steps`` pixels (outside: nothing)."""
    if steps <= 0:
        return mask
    x = mask[None, None].float()
    k = 2 * steps + 1  # the square is separable: a row maximum, then a column maximum
    x = F.max_pool2d(x, (1, k), stride=1, padding=(0, steps))
    x = F.max_pool2d(x, (k, 1), stride=1, padding=(steps, 0))
    return x[0, 0] > 0


def boundary_width(shape, ratio: float = 0.02) -> int:
    """``d`` of boundary IoU: ``round(ratio * diagonal)``, at least 1."""
    H, W = shape
    return max(1, int(round(ratio * math.hypot(H, W))))


def boundary_region(mask: torch.Tensor, d: int) -> torch.Tensor:
    """``M & dilate(~M, d)``: pixels of the bool map ``mask`` within chessboard ``d`` of a pixel
    outside it (inside the image)."""
    outside = ~mask
    return mask & _dilate(outside, d)


def edge_map(labels: torch.Tensor) -> torch.Tensor:
    """Pixels with a 4-neighbour (inside the image) of another label: bool ``(H, W)``."""
    e = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    dv = labels[1:, :] != labels[:-1, :]
    dh = labels[:, 1:] != labels[:, :-1]
    e[1:, :] |= dv
    e[:-1, :] |= dv
    e[:, 1:] |= dh
    e[:, :-1] |= dh
    return e


def trimap_band(edges: torch.Tensor, w: int) -> torch.Tensor:
    """Pixels at chessboard distance ``< w`` from an edge pixel (``w >= 1``)."""
    return _dilate(edges, w - 1)


def _disk(r: int, device=None) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    return ((x * x + y * y) <= r * r).float().to(device)


def gradient_region(labels: torch.Tensor, r: int, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Pixels whose radius-``r`` disk holds two labels or more (``ignore_index`` is no label)."""
    k = _disk(r, labels.device)[None, None]
    present = torch.zeros(labels.shape, dtype=torch.int32, device=labels.device)
    for c in torch.unique(labels).tolist():
        if c == ignore_index or not 0 <= c < num_classes:
            continue
        m = (labels == c).float()[None, None]
        present += (F.conv2d(m, k, padding=r)[0, 0] > 0.5).int()
    return present >= 2


def mba_radii(shape, steps: int = 5) -> list[int]:
    """CascadePSP's radii: ``1 + int((R - 1) / steps * i)``, ``R = (H + W) / 300``."""
    H, W = shape
    R = (H + W) / 300
    return [1 + int((R - 1) / steps * i) for i in range(steps)]


class BoundaryScores:
    """Accumulates boundary IoU, trimap accuracy and mBA (see the module docstring).

    ``update(pred, target)``; ``compute() -> {"boundary_iou", "per_class_boundary_iou",
    "boundary_ratio", "trimap_widths", "trimap_accuracy", "mba", "mba_images"}`` (NaN where
    nothing was scored).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, widths=DEFAULT_WIDTHS,
                 ratio: float = 0.02, mba_steps: int = 5):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise ValueError(f"trimap widths must be ints >= 1, got {widths!r}")
        if not 0 < ratio < 1:
            raise ValueError(f"the boundary IoU ratio must lie in (0, 1), got {ratio!r}")
        if not isinstance(mba_steps, int) or mba_steps < 1:
            raise ValueError(f"mba_steps must be an int >= 1, got {mba_steps!r}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.widths, self.ratio, self.mba_steps = widths, ratio, mba_steps
        self.reset()

    def reset(self) -> None:
        K = self.num_classes
        self.inter = torch.zeros(K, dtype=torch.float64)
        self.union = torch.zeros(K, dtype=torch.float64)
        self.band_correct = torch.zeros(len(self.widths), dtype=torch.float64)
        self.band_total = torch.zeros(len(self.widths), dtype=torch.float64)
        self.mba_sum = 0.0
        self.mba_images = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError("pred and target must be torch.Tensors")
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        if pred.dim() == 3:
            for p, t in zip(pred, target):
                self.update(p, t)
            return
        if pred.dim() != 2:
            raise ValueError(f"pred and target must be (H, W) or (B, H, W), got {tuple(pred.shape)}")
        pred, target = pred.long().cpu(), target.long().cpu()
        valid = target != self.ignore_index
        # boundary IoU
        d = boundary_width(target.shape, self.ratio)
        for c in range(self.num_classes):
            g = target == c
            p = pred == c
            if not (g.any() or p.any()):
                continue
            bg = boundary_region(g, d) & valid
            bp = boundary_region(p, d) & valid
            self.inter[c] += float((bg & bp).sum())
            self.union[c] += float((bg | bp).sum())
        # trimap
        correct = (pred == target) & valid
        edges = edge_map(target)
        grown, at = edges, 1
        for i, w in enumerate(self.widths):
            if w >= at:  # grow the band step by step (widths are usually 1, 2, 3, ...)
                grown, at = _dilate(grown, w - at), w
            else:
                grown, at = trimap_band(edges, w), w
            band = grown & valid
            self.band_total[i] += float(band.sum())
            self.band_correct[i] += float((band & correct).sum())
        # mBA
        accs, seen = [], {}
        for r in mba_radii(target.shape, self.mba_steps):
            if r not in seen:  # small images repeat radius 1
                region = gradient_region(target, r, self.num_classes, self.ignore_index) & valid
                n = int(region.sum())
                seen[r] = float((region & correct).sum()) / n if n else None
            if seen[r] is not None:
                accs.append(seen[r])
        if accs:
            self.mba_sum += sum(accs) / len(accs)
            self.mba_images += 1

    def compute(self) -> dict:
        nan = float("nan")
        per = [float(i / u) if u > 0 else nan for i, u in zip(self.inter.tolist(), self.union.tolist())]
        seen = [v for v in per if not math.isnan(v)]
        acc = [float(c / t) if t > 0 else nan for c, t in zip(self.band_correct.tolist(), self.band_total.tolist())]
        return {
            "boundary_iou": sum(seen) / len(seen) if seen else nan,
            "per_class_boundary_iou": per,
            "boundary_ratio": self.ratio,
            "trimap_widths": list(self.widths),
            "trimap_accuracy": acc,
            "mba": self.mba_sum / self.mba_images if self.mba_images else nan,
            "mba_images": self.mba_images,
        }
