"""Gate normalisation (Theorem 3 of the SPN paper, and GSPN's stability-context condition).

The readable, unfused twin of the ``normalize`` argument of :func:`spn.ops.propagate`.
"""
from __future__ import annotations

import torch

from ._codes import NORMALIZE_CODES
from ._validate import direction_index

NORMALIZE_MODES = tuple(m for m in sorted(NORMALIZE_CODES, key=NORMALIZE_CODES.get) if m is not None)

#: floor of the divisor of ``"always"`` (the Caffe prototxts' Divide layer)
ALWAYS_EPS = 1e-6
#: floor of the divisor of ``"gspn"``
GSPN_EPS = 1e-7


def check_normalize(normalize) -> None:
    """Raise a clear error unless ``normalize`` is ``None`` or one of :data:`NORMALIZE_MODES`."""
    if normalize is not None and normalize not in NORMALIZE_MODES:
        raise ValueError(
            f"unknown normalize {normalize!r}; valid modes are None, {', '.join(repr(m) for m in NORMALIZE_MODES)}"
        )


def valid_slots(K: int, direction, H: int, W: int, *, device=None) -> torch.Tensor:
    """Boolean ``(K, H, W)`` mask of the gate slots whose neighbour exists.

    Slot 0 reads lateral index ``k - 1`` and slot 2 reads ``k + 1`` of the previous line
    (three-way); the lateral index is the row for horizontal scans and the column for vertical
    ones. One-way gates (``K = 1``) read ``k`` and are always valid. The first scan line has no
    previous line at all; that is handled by the recurrence, not by this mask.
    """
    d = direction_index(direction)
    mask = torch.ones(K, H, W, dtype=torch.bool, device=device)
    if K == 3:
        if d < 2:  # horizontal scans: the lateral index is the row
            mask[0, 0, :] = False
            mask[2, H - 1, :] = False
        else:
            mask[0, :, 0] = False
            mask[2, :, W - 1] = False
    return mask


def _gspn(gates: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    # invalid slots are replaced before the sigmoid, so a non-finite raw value there neither
    # enters the sum nor receives a gradient
    r = torch.where(valid, gates, torch.zeros((), dtype=gates.dtype, device=gates.device))
    s = torch.where(valid, torch.sigmoid(r), torch.zeros((), dtype=gates.dtype, device=gates.device))
    return s / torch.clamp(s.sum(dim=dim, keepdim=True), min=GSPN_EPS)


def normalize_gates(gates: torch.Tensor, mode: str = "clip", eps: float = ALWAYS_EPS, dim: int = -4,
                    direction=None) -> torch.Tensor:
    """Normalise raw gates over their ``K`` slots, per pixel and channel.

    Modes (``s = sum_k |r_k|`` over all ``K`` slots):

    - ``"clip"`` (Theorem 3, the official SPN code): ``g_k = r_k / max(s, 1)``, so that
      ``sum_k |g_k| <= 1``; gates already inside that bound are kept.
    - ``"always"`` (the Caffe prototxts' Divide layer): ``g_k = r_k / max(s, eps)``.
    - ``"gspn"`` (GSPN's stability-context condition):
      ``g_k = sigmoid(r_k) / max(sum_{valid k'} sigmoid(r_k'), 1e-7)`` for the slots whose
      neighbour exists, ``0`` for the others. It needs the scan direction, because validity
      depends on it: ``direction`` for ``(B, K, Cg, H, W)`` gates; ``(B, 4, K, Cg, H, W)`` gates
      carry the four directions in dim 1.

    Negative gates keep their sign in ``"clip"`` and ``"always"``.

    Shape:
        - gates: ``(B, K, Cg, H, W)`` or ``(B, 4, K, Cg, H, W)``; the ``K`` axis is ``dim``
          (``-4`` for both layouts).
        - output: the same shape.

    Example:
        >>> g = torch.tensor([0.9, 0.6, -0.3]).view(1, 3, 1, 1, 1)
        >>> normalize_gates(g, "clip").flatten()
        tensor([ 0.5000,  0.3333, -0.1667])
    """
    if not isinstance(gates, torch.Tensor) or not gates.dtype.is_floating_point:
        raise TypeError("gates must be a floating torch.Tensor")
    if gates.dim() not in (5, 6):
        raise ValueError(f"gates must be (B, K, Cg, H, W) or (B, 4, K, Cg, H, W), got shape {tuple(gates.shape)}")
    check_normalize(mode)
    if mode is None:
        raise ValueError("normalize_gates needs a mode; valid modes are " + ", ".join(map(repr, NORMALIZE_MODES)))
    if mode == "clip":
        return gates / torch.clamp(gates.abs().sum(dim=dim, keepdim=True), min=1.0)
    if mode == "always":
        return gates / torch.clamp(gates.abs().sum(dim=dim, keepdim=True), min=eps)
    # gspn
    if dim != -4:
        raise ValueError("normalize_gates(..., 'gspn') expects the K axis at dim -4")
    K, H, W = gates.shape[-4], gates.shape[-2], gates.shape[-1]
    if K not in (1, 3):
        raise ValueError(f"gates must have K = 1 or K = 3 slots, got K = {K}")
    if gates.dim() == 6:
        if gates.shape[1] != 4:
            raise ValueError(f"(B, 4, K, Cg, H, W) gates must have 4 directions in dim 1, got {tuple(gates.shape)}")
        if direction is not None:
            raise ValueError("four-direction gates carry their directions in dim 1; do not pass direction")
        valid = torch.stack([valid_slots(K, d, H, W, device=gates.device) for d in range(4)])  # (4, K, H, W)
        return _gspn(gates, valid[:, :, None], dim)
    if direction is None:
        raise ValueError("normalize_gates(..., 'gspn') on (B, K, Cg, H, W) gates needs direction=: "
                         "which neighbours exist depends on the scan direction")
    return _gspn(gates, valid_slots(K, direction, H, W, device=gates.device)[:, None], dim)
