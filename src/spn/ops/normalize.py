"""Gate normalisation for stability (Theorem 3)."""
from __future__ import annotations

import torch

NORMALIZE_MODES = ("clip", "always")


def normalize_gates(gates: torch.Tensor, mode: str = "clip", eps: float = 1e-6, dim: int = -4) -> torch.Tensor:
    """Scale gates so that ``sum_k |g_k| <= 1`` per pixel and channel (Theorem 3).

    Args:
        gates: ``(B, K, Cg, H, W)`` or ``(B, 4, K, Cg, H, W)``; the ``K`` axis is ``dim``
            (``-4`` for both layouts).
        mode: ``"clip"``: where ``s = sum_k |g_k| > 1`` divide by ``s``, elsewhere keep the
            gates; ``"always"``: divide by ``max(s, eps)`` everywhere.
        eps: floor of the divisor in ``"always"`` mode.

    Negative gates are allowed; their sign is kept.
    """
    if not isinstance(gates, torch.Tensor) or not gates.dtype.is_floating_point:
        raise TypeError("gates must be a floating torch.Tensor")
    if gates.dim() not in (5, 6):
        raise ValueError(f"gates must be (B, K, Cg, H, W) or (B, 4, K, Cg, H, W), got shape {tuple(gates.shape)}")
    s = gates.abs().sum(dim=dim, keepdim=True)
    if mode == "clip":
        return gates / torch.clamp(s, min=1.0)
    if mode == "always":
        return gates / torch.clamp(s, min=eps)
    raise ValueError(f"unknown normalisation mode {mode!r}; valid modes are {', '.join(NORMALIZE_MODES)}")
