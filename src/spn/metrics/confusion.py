"""Segmentation metrics from a confusion matrix (the paper's Table 1-3 columns).

``ConfusionMatrix(num_classes, ignore_index=255)`` accumulates ``(target, prediction)`` pairs;
``compute()`` returns overall pixel accuracy, mean class accuracy, per-class IoU, mean IoU
and per-class F1. Classes absent from both target and prediction are left out of the means
(NaN in the per-class lists). :func:`group_scores` scores groups of classes as one region
(HELEN's Table 1 F-measures).

Shape:
    - target, pred: any shape, the same for both; integer class ids (255 = ignore in target)

Example:
    >>> import torch
    >>> from spn.metrics import ConfusionMatrix
    >>> cm = ConfusionMatrix(2)
    >>> cm.update(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]))
    >>> m = cm.compute()
    >>> m["pixel_accuracy"], m["per_class_iou"]
    (0.75, [0.5, 0.6666666666666666])
"""
from __future__ import annotations

import math

import numpy as np
import torch


class ConfusionMatrix:
    """``mat[t, p]`` counts pixels of true class ``t`` predicted as ``p``."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        """Add a batch: ``target`` and ``pred`` are integer tensors of one shape."""
        if target.shape != pred.shape:
            raise ValueError(f"target {tuple(target.shape)} and prediction {tuple(pred.shape)} differ in shape")
        t = target.reshape(-1).long().cpu()
        p = pred.reshape(-1).long().cpu()
        keep = t != self.ignore_index
        t, p = t[keep], p[keep]
        n = self.num_classes
        bad = (t < 0) | (t >= n)
        if bool(bad.any()):
            raise ValueError(f"target has class ids outside 0..{n - 1} (and {self.ignore_index} = ignore): "
                             f"{sorted(set(t[bad].tolist()))[:10]}")
        if bool(((p < 0) | (p >= n)).any()):
            raise ValueError(f"prediction has class ids outside 0..{n - 1}")
        self.mat += torch.bincount(t * n + p, minlength=n * n).reshape(n, n)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.mat += other.mat

    def compute(self) -> dict:
        m = self.mat.double()
        tp = m.diag()
        gt = m.sum(1)
        pr = m.sum(0)
        total = m.sum()
        union = gt + pr - tp
        present = gt > 0
        acc_c = torch.where(present, tp / gt.clamp(min=1), torch.full_like(tp, math.nan))
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
        f1 = torch.where(gt + pr > 0, 2 * tp / (gt + pr).clamp(min=1), torch.full_like(tp, math.nan))

        def nanmean(v):
            v = v[~torch.isnan(v)]
            return float(v.mean()) if v.numel() else math.nan

        return {
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
            "mean_accuracy": nanmean(acc_c),
            "mean_iou": nanmean(iou),
            "per_class_iou": iou.tolist(),
            "per_class_accuracy": acc_c.tolist(),
            "per_class_f1": f1.tolist(),
            "pixels": int(total),
        }


def group_scores(confusion, groups: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """F-measure and IoU of groups of classes from a confusion matrix ``mat[t, p]`` ``(K, K)``
    (a tensor/array, or a :class:`ConfusionMatrix`).
    A group is scored as one region: ``tp`` = pixels of the group predicted in the group."""
    mat = getattr(confusion, "mat", confusion)
    m = torch.as_tensor(np.asarray(mat), dtype=torch.float64)
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be (K, K), got {tuple(m.shape)}")
    out = {}
    for name, ids in groups.items():
        if any(not 0 <= i < m.shape[0] for i in ids):
            raise ValueError(f"group {name!r} has ids {ids} outside 0..{m.shape[0] - 1}")
        idx = torch.tensor(ids)
        tp = float(m[idx][:, idx].sum())
        gt = float(m[idx].sum())
        pr = float(m[:, idx].sum())
        f1 = 2 * tp / (gt + pr) if gt + pr > 0 else float("nan")
        iou = tp / (gt + pr - tp) if gt + pr - tp > 0 else float("nan")
        out[name] = {"f1": f1, "iou": iou}
    return out
