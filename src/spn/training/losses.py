"""Losses: softmax cross-entropy with an ignore label (segmentation), L1 / L2 sums (regression).

The training loop divides :func:`cross_entropy_sum` by the labelled-pixel count of the whole
global batch (:func:`valid_pixels`, summed over the processes), so the data-parallel gradient
equals the single-process one.

Shape:
    - logits: ``(B, K, H, W)``
    - target: ``(B, H, W)`` int class ids (255 = ignore)

Example:
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from spn.training.losses import cross_entropy_sum, valid_pixels
    >>> logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    >>> target[0, 0] = 255
    >>> loss = cross_entropy_sum(logits, target) / valid_pixels(target)
    >>> bool(torch.allclose(loss.float(), F.cross_entropy(logits, target, ignore_index=255)))
    True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def check_logits_target(logits: torch.Tensor, target: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("logits and target must be torch.Tensors")
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, K, H, W), got {tuple(logits.shape)}")
    if target.shape != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ValueError(f"target must be (B, H, W) = {(logits.shape[0],) + tuple(logits.shape[2:])} "
                         f"for logits {tuple(logits.shape)}, got {tuple(target.shape)}")
    if target.is_floating_point():
        raise TypeError(f"target must hold integer class ids, got {target.dtype}")


def valid_pixels(target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Number of labelled pixels of ``target`` (a 0-dim float64 tensor)."""
    return (target != ignore_index).sum().to(torch.float64)


def cross_entropy_sum(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Sum over labelled pixels of ``-log softmax(logits)[target]``.

    ``logits (B, K, H, W)``, ``target (B, H, W)`` int64 (``ignore_index`` pixels contribute 0).
    Returns a 0-dim tensor. Class ids outside ``[0, K)`` (other than the ignore id) -> ValueError.
    """
    check_logits_target(logits, target)
    K = logits.shape[1]
    t = target.long()
    bad = (t != ignore_index) & ((t < 0) | (t >= K))
    if bool(bad.any()):
        ids = sorted(set(t[bad].unique().tolist()))[:10]
        raise ValueError(f"target holds class ids {ids} outside [0, {K}) (ignore = {ignore_index})")
    return F.cross_entropy(logits, t, ignore_index=ignore_index, reduction="sum")


def regression_loss_sum(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Sum over every element of ``|pred - target|`` (``"l1"``) or ``(pred - target)^2`` (``"l2"``):
    the chroma task's loss on Cb and Cr (divided by the element count of the global batch).

    Shape: ``pred``, ``target``: ``(B, C, H, W)``; returns a 0-dim tensor.

    Example:
        >>> import torch
        >>> regression_loss_sum(torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), "l2")
        tensor(8.)
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    d = pred - target
    if kind == "l1":
        return d.abs().sum()
    if kind == "l2":
        return (d * d).sum()
    raise ValueError(f"unknown regression loss {kind!r}; valid: l1, l2")
