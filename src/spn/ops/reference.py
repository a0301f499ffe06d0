"""Pure-PyTorch reference of the propagation operator: the readable definition.

Every fast backend is tested against these functions, for outputs and gradients. They are
written for clarity, not speed: a Python loop over scan lines, differentiable by autograd,
exact in float64.
"""
from __future__ import annotations

import torch

from ._validate import check_pair, direction_index


def _to_vertical(t: torch.Tensor, d: int) -> torch.Tensor:
    """Reorient ``(..., H, W)`` so that the scan runs over dim -2 from index 0 upward."""
    if d in (0, 1):  # horizontal scans: lines are columns
        t = t.transpose(-1, -2)
    if d in (1, 3):  # reverse scans
        t = t.flip(-2)
    return t


def _from_vertical(t: torch.Tensor, d: int) -> torch.Tensor:
    if d in (1, 3):
        t = t.flip(-2)
    if d in (0, 1):
        t = t.transpose(-1, -2)
    return t


def propagate_ref(x: torch.Tensor, gates: torch.Tensor, direction) -> torch.Tensor:
    """Reference linear propagation in one direction (Eq. 1, 9, 10).

    Args:
        x: ``(B, C, H, W)`` map to propagate.
        gates: ``(B, K, Cg, H, W)``, ``K`` in {1, 3}, ``Cg`` in {1, C}.
        direction: one of ``left_to_right``, ``right_to_left``, ``top_to_bottom``,
            ``bottom_to_top``.

    Returns:
        ``h`` of shape ``(B, C, H, W)`` with, for every line after the first,
        ``h[k] = (1 - sum_j g_j[k]) x[k] + sum_j g_j[k] h_prev[j]`` over valid neighbours ``j``.
    """
    K, Cg = check_pair(x, gates)
    d = direction_index(direction)
    B, C = x.shape[:2]
    xv = _to_vertical(x, d)  # (B, C, L, n)
    gv = _to_vertical(gates, d).expand(B, K, C, *xv.shape[-2:])  # (B, K, C, L, n)
    L, n = xv.shape[-2:]
    rows = [xv[:, :, 0]]
    for t in range(1, L):
        prev = rows[-1]
        xt = xv[:, :, t]
        if K == 1:
            g = gv[:, 0, :, t]
            rows.append((1 - g) * xt + g * prev)
            continue
        g0, g1, g2 = gv[:, 0, :, t], gv[:, 1, :, t], gv[:, 2, :, t]
        zero = prev.new_zeros(prev.shape[:-1] + (1,))
        # neighbour k-1 (slot 0) and k+1 (slot 2); out-of-range neighbours are dropped
        left = torch.cat([zero, prev[..., :-1]], dim=-1)
        right = torch.cat([prev[..., 1:], zero], dim=-1)
        valid_lo = torch.ones(n, dtype=x.dtype, device=x.device)
        valid_hi = torch.ones(n, dtype=x.dtype, device=x.device)
        valid_lo[0] = 0
        valid_hi[n - 1] = 0
        g0 = g0 * valid_lo
        g2 = g2 * valid_hi
        rows.append((1 - g0 - g1 - g2) * xt + g0 * left + g1 * prev + g2 * right)
    h = torch.stack(rows, dim=2)
    return _from_vertical(h, d).contiguous()


def propagate4_ref(x: torch.Tensor, gates: torch.Tensor, merge: str = "max") -> torch.Tensor:
    """Reference four-direction propagation and node-wise merge.

    Args:
        x: ``(B, C, H, W)``.
        gates: ``(B, 4, K, Cg, H, W)`` in the order left_to_right, right_to_left,
            top_to_bottom, bottom_to_top.
        merge: ``"max"`` (the paper; ties go to the first direction in that order),
            ``"mean"`` or ``"sum"``.
    """
    check_pair(x, gates, n_dirs=4)
    hs = torch.stack([propagate_ref(x, gates[:, d], d) for d in range(4)], dim=0)
    if merge == "max":
        return hs.max(dim=0).values
    if merge == "mean":
        return hs.mean(dim=0)
    if merge == "sum":
        return hs.sum(dim=0)
    raise ValueError(f"unknown merge {merge!r}; valid merges are 'max', 'mean', 'sum'")
