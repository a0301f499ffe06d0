"""Module form of the four-direction spatial propagation."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import propagate4
from ..ops.normalize import NORMALIZE_MODES, normalize_gates
from ..ops.propagation import MERGES

CONNECTIONS = {"three_way": 3, "one_way": 1}


def reshape_gates(gates: torch.Tensor, channels: int, k: int) -> torch.Tensor:
    """Bring gates to ``(B, 4, K, Cg, H, W)``.

    Accepts that layout as is, or the flat ``(B, 4*K*Cg, H, W)`` a CNN outputs, whose
    channel index is ``(d * K + j) * Cg + c`` (direction ``d``, gate slot ``j``, channel ``c``).
    """
    if not isinstance(gates, torch.Tensor):
        raise TypeError(f"gates must be a torch.Tensor, got {type(gates).__name__}")
    if gates.dim() == 6:
        if gates.shape[2] != k:
            raise ValueError(f"gates have K = {gates.shape[2]} but this module uses K = {k}")
        return gates
    if gates.dim() != 4:
        raise ValueError(
            f"gates must be (B, 4, K, Cg, H, W) or flat (B, 4*K*Cg, H, W), got shape {tuple(gates.shape)}"
        )
    B, n, H, W = gates.shape
    if n == 4 * k * channels:
        cg = channels
    elif n == 4 * k:
        cg = 1
    else:
        raise ValueError(
            f"flat gates must have 4*K*Cg channels with K = {k} and Cg in {{1, {channels}}} "
            f"({4 * k} or {4 * k * channels}), got {n}"
        )
    return gates.reshape(B, 4, k, cg, H, W)


class SpatialPropagation(nn.Module):
    """Four-direction spatial propagation with a node-wise merge (the paper's SPN layer).

    ``forward(x, gates)``: ``x`` is ``(B, C, H, W)``; ``gates`` is ``(B, 4, K, Cg, H, W)`` or
    the flat ``(B, 4*K*Cg, H, W)``. Gates are normalised (Theorem 3) with ``normalize``
    (``"clip"``, ``"always"`` or ``None``), then every direction runs
    ``h[k] = (1 - sum_j g_j[k]) x[k] + sum_j g_j[k] h_prev[j]`` and the four maps are merged
    (``"max"`` in the paper). Output ``(B, C, H, W)``.
    """

    def __init__(self, connection: str = "three_way", merge: str = "max", normalize: str | None = "clip"):
        super().__init__()
        if connection not in CONNECTIONS:
            raise ValueError(f"unknown connection {connection!r}; valid connections are {', '.join(CONNECTIONS)}")
        if merge not in MERGES:
            raise ValueError(f"unknown merge {merge!r}; valid merges are {', '.join(MERGES)}")
        if normalize is not None and normalize not in NORMALIZE_MODES:
            raise ValueError(f"unknown normalize {normalize!r}; valid are {', '.join(NORMALIZE_MODES)} or None")
        self.connection = connection
        self.k = CONNECTIONS[connection]
        self.merge = merge
        self.normalize = normalize

    def forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
        g = reshape_gates(gates, x.shape[1], self.k)
        if self.normalize is not None:
            g = normalize_gates(g, self.normalize)
        return propagate4(x, g, self.merge)

    def extra_repr(self) -> str:
        return f"connection={self.connection!r}, merge={self.merge!r}, normalize={self.normalize!r}"
