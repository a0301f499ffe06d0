"""Boundary metrics: where refinement is judged, computed as their authors' code computes them.

Three scores of a predicted label map against the ground truth, accumulated over a dataset by
:class:`BoundaryScores` (what the protocols of :mod:`spn.metrics.protocols` add with
``boundary=True``, i.e. ``spn eval``, ``spn compare`` and ``spn demo``):

- **boundary IoU** (Cheng et al., CVPR 2021; the authors' ``mask_to_boundary`` of
  bowenc0221/boundary-iou-api). The boundary of a binary mask ``M`` is the part of ``M`` within
  chessboard distance ``d`` of a pixel outside ``M``, where the image frame counts as outside (the
  authors pad the mask with one row and column of zeros before ``d`` erosions by a 3 x 3
  square): ``B_d(M) = M & dilate(pad(~M, True), d)``. ``d`` is ``ratio`` (0.02) of the image
  diagonal, ``int(round(ratio * sqrt(H^2 + W^2)))``, at least 1. For one object (class) ``c`` of
  one image, the score is ``|B_d(gt == c) & B_d(pred == c)| / |B_d(gt == c) | B_d(pred == c)|``,
  pixels whose ground truth is ``ignore_index`` left out (as the authors' panoptic code leaves
  out VOID). The authors' API scores one mask pair and has no dataset mean of its own (it feeds
  AP and PQ); the refinement literature averages it over images (HQ-SAM's mBIoU), and so does
  ``boundary_iou``: per image, the mean over the object classes present in its ground truth or
  prediction; then the mean over the images that have one (an image with none, where the
  per-image code would give NaN, is skipped and not counted in ``boundary_iou_images``). The
  object classes are every class, except for two classes: a binary mask's object is class 1,
  the background is not scored. ``frame=False`` gives the frame-free variant (outside the image
  is neither inside nor outside ``M``, so a mask that touches the border has no boundary there).
- **trimap accuracy** (Kraehenbuehl and Koltun 2011, Fig. 4 of the dense CRF paper): the pixel
  accuracy within bands around the ground-truth edges. An edge pixel is one with a 4-neighbour
  of another label (``ignore_index`` counts as a label, so VOC's void outlines are edges). The
  band of width ``w`` is every pixel whose chessboard distance to an edge pixel is below ``w``:
  ``w = 1`` is the edge pixels themselves (one on each side of a contour), ``w = 2`` adds their
  neighbours, and so on. Pixels of ``ignore_index`` are not scored. Correct and scored pixels are
  summed over the dataset for each ``w`` of ``widths`` (1..20).
- **mBA**, mean boundary accuracy (CascadePSP, Cheng et al., CVPR 2020, ``compute_boundary_acc``
  and its multi-class form): for ``steps`` (5) radii ``r_i = 1 + int((R - 1) / steps * i)``,
  ``R = (H + W) / 300``, the region where the morphological gradient of the ground truth is not
  zero, with OpenCV's elliptic structuring element of size ``2 r + 1``
  (:func:`ellipse_kernel`; the image frame is no contour): the pixels whose ellipse holds two
  different values, ``ignore_index`` counting as one. The accuracy in that region (pixels of
  ``ignore_index`` not scored) is averaged over the radii (a repeated radius counts each time),
  then over the images. An image without any scored pixel in the region is skipped (the
  authors' code would return NaN for it and for the dataset); ``mba_images`` counts the others.

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
import numbers

import torch

__all__ = ["BoundaryScores", "boundary_region", "edge_map", "trimap_band", "gradient_region",
           "ellipse_kernel", "boundary_width", "mba_radii", "DEFAULT_WIDTHS"]

DEFAULT_WIDTHS = tuple(range(1, 21))


def _run_any(mask: torch.Tensor, s: int, dim: int) -> torch.Tensor:
    """Whether a bool map holds a True within ``s`` pixels along ``dim`` (outside the image:
    nothing). Windows of 1, 2, 4, ... pixels, each two of the previous one: ``log2(2s+1)`` steps."""
    if s <= 0:
        return mask
    n, L = mask.shape[dim], 2 * s + 1
    shape = list(mask.shape)
    shape[dim] = s
    w = torch.cat([mask.new_zeros(shape), mask, mask.new_zeros(shape)], dim=dim)
    N, P = n + 2 * s, 1  # w[j]: a True in j .. j + P - 1 (of the padded map)
    while P < L:
        k = min(P, L - P)  # the last step overlaps two windows of P to make one of L
        nxt = w.clone()
        nxt.narrow(dim, 0, N - k).logical_or_(w.narrow(dim, k, N - k))
        w, P = nxt, P + k
    return w.narrow(dim, 0, n)  # padded j .. j + 2s is j - s .. j + s of the image


def _values(labels: torch.Tensor) -> list[int]:
    """The distinct values of an integer map (a count for small non-negative labels, faster
    than ``torch.unique``)."""
    if labels.numel() and 0 <= int(labels.min()) and int(labels.max()) < 65536:
        return torch.bincount(labels.flatten()).nonzero().flatten().tolist()
    return torch.unique(labels).tolist()


def _dilate(mask: torch.Tensor, steps: int) -> torch.Tensor:
    """Chessboard dilation of a bool ``(H, W)`` map by ``steps`` pixels (outside: nothing)."""
    if steps <= 0:
        return mask
    return _run_any(_run_any(mask, steps, 1), steps, 0)  # the square is separable


def boundary_width(shape, ratio: float = 0.02) -> int:
    """``d`` of boundary IoU: ``int(round(ratio * sqrt(H^2 + W^2)))``, at least 1."""
    H, W = shape
    return max(1, int(round(ratio * math.sqrt(H * H + W * W))))


def boundary_region(mask: torch.Tensor, d: int, frame: bool = True) -> torch.Tensor:
    """``B_d(M)``: the pixels of the bool ``(H, W)`` map ``mask`` within chessboard distance ``d``
    of a pixel outside it. With ``frame`` (the authors' definition) the image frame is outside
    ``M``, so the ``d`` rows and columns along the border are boundary where ``M`` has them;
    without, outside the image counts as nothing.

    Shape:
        - mask: ``(H, W)`` bool
        - output: ``(H, W)`` bool

    Example:
        >>> import torch
        >>> from spn.metrics.boundary import boundary_region
        >>> m = torch.zeros(3, 6, dtype=torch.bool); m[:, 2:] = True   # touches the frame
        >>> boundary_region(m, 1).int().tolist()
        [[0, 0, 1, 1, 1, 1], [0, 0, 1, 0, 0, 1], [0, 0, 1, 1, 1, 1]]
        >>> boundary_region(m, 1, frame=False).int().tolist()
        [[0, 0, 1, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 1, 0, 0, 0]]
    """
    outside = ~mask
    if not frame:
        return mask & _dilate(outside, d)
    padded = torch.ones(mask.shape[0] + 2, mask.shape[1] + 2, dtype=torch.bool, device=mask.device)
    padded[1:-1, 1:-1] = outside
    return mask & _dilate(padded, d)[1:-1, 1:-1]


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


def _ellipse_halfwidths(r: int) -> list[int]:
    """Row ``dy = -r .. r`` of OpenCV's ``MORPH_ELLIPSE`` of size ``(2r+1, 2r+1)`` spans
    ``|dx| <= round(r * sqrt((r^2 - dy^2) / r^2))`` (rounded half to even, as ``cvRound``)."""
    if r == 0:
        return [0]
    inv_r2 = 1.0 / (r * r)
    return [int(round(r * math.sqrt((r * r - dy * dy) * inv_r2))) for dy in range(-r, r + 1)]


def ellipse_kernel(r: int) -> torch.Tensor:
    """OpenCV's ``getStructuringElement(MORPH_ELLIPSE, (2r+1, 2r+1))`` as a bool tensor.

    It differs from the disk ``x^2 + y^2 <= r^2`` from ``r = 2`` on (rows are rounded, not
    floored: the ``r = 2`` ellipse has 17 pixels, the disk 13).

    Shape:
        - output: ``(2r+1, 2r+1)`` bool

    Example:
        >>> from spn.metrics.boundary import ellipse_kernel
        >>> ellipse_kernel(2).int().tolist()
        [[0, 0, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]]
    """
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 0:
        raise ValueError(f"the ellipse radius must be an int >= 0, got {r!r}")
    r = int(r)
    k = torch.zeros(2 * r + 1, 2 * r + 1, dtype=torch.bool)
    for i, dx in enumerate(_ellipse_halfwidths(r)):
        k[i, r - dx:r + dx + 1] = True
    return k


def _ellipse_dilate(mask: torch.Tensor, r: int) -> torch.Tensor:
    """Dilation of a bool ``(H, W)`` map by :func:`ellipse_kernel` ``(r)``, outside the image
    left out: a run along the rows for each half-width, then the rows shifted and combined."""
    H = mask.shape[0]
    rows, out = {}, torch.zeros_like(mask)
    for i, dx in enumerate(_ellipse_halfwidths(r)):
        dy = i - r  # row y of the result takes row y + dy of the image
        if abs(dy) >= H:
            continue
        if dx not in rows:
            rows[dx] = _run_any(mask, dx, 1)
        if dy >= 0:
            out[:H - dy] |= rows[dx][dy:]
        else:
            out[-dy:] |= rows[dx][:H + dy]
    return out


def gradient_region(labels: torch.Tensor, r: int) -> torch.Tensor:
    """CascadePSP's boundary region: the pixels where the morphological gradient of the label
    map with :func:`ellipse_kernel` ``(r)`` is not zero, i.e. whose ellipse (inside the image)
    holds two different values. Every value counts, ``ignore_index`` too (the multi-class mBA
    takes the gradient of every non-void class mask and so marks the pixels next to void).

    Shape:
        - labels: ``(H, W)`` integer
        - output: ``(H, W)`` bool

    Example:
        >>> import torch
        >>> from spn.metrics.boundary import gradient_region
        >>> gradient_region(torch.tensor([[0, 0, 0, 1, 1, 1]]), 1).int().tolist()
        [[0, 0, 1, 1, 0, 0]]
    """
    values = _values(labels)
    if len(values) < 2:
        return torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    if len(values) == 2:  # a binary map: both values in the window
        m = labels == values[0]
        return _ellipse_dilate(m, r) & _ellipse_dilate(~m, r)
    seen = torch.zeros(labels.shape, dtype=torch.int32, device=labels.device)
    for v in values:
        seen += _ellipse_dilate(labels == v, r)
    return seen >= 2


def mba_radii(shape, steps: int = 5) -> list[int]:
    """CascadePSP's radii: ``1 + int((R - 1) / steps * i)``, ``R = (H + W) / 300``."""
    H, W = shape
    R = (H + W) / 300
    return [1 + int((R - 1) / steps * i) for i in range(steps)]


class BoundaryScores:
    """Accumulates boundary IoU, trimap accuracy and mBA (see the module docstring).

    ``update(pred, target)``; ``compute() -> {"boundary_iou", "boundary_iou_images",
    "per_class_boundary_iou", "boundary_ratio", "boundary_frame", "boundary_objects",
    "trimap_widths", "trimap_accuracy", "mba", "mba_images"}`` (NaN where nothing was scored).
    ``per_class_boundary_iou[c]`` is the mean of class ``c``'s boundary IoU over the images
    where ``c`` is in the ground truth or the prediction.

    Args:
        num_classes: the number of classes.
        ignore_index: the ground-truth label of pixels left out.
        widths: the trimap band widths.
        ratio: boundary IoU's ``d`` as a fraction of the image diagonal (0.02, the authors').
        mba_steps: the number of mBA radii (5, CascadePSP's).
        frame: the image frame is a contour for boundary IoU (True, the authors' definition).
        objects: the classes that boundary IoU scores as objects (default: every class; class 1
            alone when ``num_classes == 2``).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, widths=DEFAULT_WIDTHS,
                 ratio: float = 0.02, mba_steps: int = 5, frame: bool = True, objects=None):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise ValueError(f"trimap widths must be ints >= 1, got {widths!r}")
        if not 0 < ratio < 1:
            raise ValueError(f"the boundary IoU ratio must lie in (0, 1), got {ratio!r}")
        if not isinstance(mba_steps, int) or mba_steps < 1:
            raise ValueError(f"mba_steps must be an int >= 1, got {mba_steps!r}")
        if objects is None:
            objects = [1] if num_classes == 2 else list(range(num_classes))
        objects = sorted({int(c) for c in objects})
        if not objects or objects[0] < 0 or objects[-1] >= num_classes:
            raise ValueError(f"boundary IoU objects must be classes in 0..{num_classes - 1}, got {objects!r}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.widths, self.ratio, self.mba_steps = widths, ratio, mba_steps
        self.frame, self.objects = bool(frame), objects
        self.reset()

    def reset(self) -> None:
        K = self.num_classes
        self.class_sum = torch.zeros(K, dtype=torch.float64)
        self.class_images = torch.zeros(K, dtype=torch.int64)
        self.biou_sum, self.biou_images = 0.0, 0
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
        if pred.numel() == 0:
            raise ValueError(f"pred and target are empty label maps {tuple(pred.shape)}")
        pred, target = pred.long().cpu(), target.long().cpu()
        valid = target != self.ignore_index
        correct = (pred == target) & valid
        self._boundary_iou(pred, target, valid)
        self._trimap(target, valid, correct)
        self._mba(target, valid, correct)

    def _boundary_iou(self, pred, target, valid) -> None:
        d = boundary_width(target.shape, self.ratio)
        present = sorted(set(_values(target)) | set(_values(pred)))
        scores = []
        for c in present:
            if not 0 <= c < self.num_classes or c == self.ignore_index:
                continue
            bg = boundary_region(target == c, d, self.frame) & valid
            bp = boundary_region(pred == c, d, self.frame) & valid
            union = int((bg | bp).sum())
            if union == 0:  # frame-free and both masks fill the image, or pred only on ignored pixels
                continue
            iou = int((bg & bp).sum()) / union
            self.class_sum[c] += iou
            self.class_images[c] += 1
            if c in self.objects:
                scores.append(iou)
        if scores:
            self.biou_sum += sum(scores) / len(scores)
            self.biou_images += 1

    def _trimap(self, target, valid, correct) -> None:
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

    def _mba(self, target, valid, correct) -> None:
        accs, seen = [], {}
        for r in mba_radii(target.shape, self.mba_steps):
            if r not in seen:  # small images repeat radius 1
                region = gradient_region(target, r) & valid
                n = int(region.sum())
                seen[r] = int((region & correct).sum()) / n if n else None
            if seen[r] is not None:
                accs.append(seen[r])
        if accs:
            self.mba_sum += sum(accs) / len(accs)
            self.mba_images += 1

    def compute(self) -> dict:
        nan = float("nan")
        per = [s / n if n else nan for s, n in zip(self.class_sum.tolist(), self.class_images.tolist())]
        acc = [float(c / t) if t > 0 else nan for c, t in zip(self.band_correct.tolist(), self.band_total.tolist())]
        return {
            "boundary_iou": self.biou_sum / self.biou_images if self.biou_images else nan,
            "boundary_iou_images": self.biou_images,
            "per_class_boundary_iou": per,
            "boundary_ratio": self.ratio,
            "boundary_frame": self.frame,
            "boundary_objects": list(self.objects),
            "trimap_widths": list(self.widths),
            "trimap_accuracy": acc,
            "mba": self.mba_sum / self.mba_images if self.mba_images else nan,
            "mba_images": self.mba_images,
        }
