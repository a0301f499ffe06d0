"""Module form of the four-direction spatial propagation."""
from __future__ import annotations

import torch
from torch import nn

from ..ops import propagate4
from ..ops._validate import check_chunk
from ..ops.normalize import NORMALIZE_MODES
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


def reshape_input_weight(input_weight: torch.Tensor, channels: int) -> torch.Tensor:
    """Bring an input weight to ``(B, 4, Cl, H, W)``: as is, or from the flat ``(B, 4*Cl, H, W)``
    (channel ``d * Cl + c``), ``Cl`` in {1, C}."""
    if not isinstance(input_weight, torch.Tensor):
        raise TypeError(f"input_weight must be a torch.Tensor, got {type(input_weight).__name__}")
    if input_weight.dim() == 5:
        return input_weight
    if input_weight.dim() != 4 or input_weight.shape[1] not in (4, 4 * channels):
        raise ValueError(f"input_weight must be (B, 4, Cl, H, W) or flat (B, 4*Cl, H, W) with Cl in {{1, {channels}}} "
                         f"({4} or {4 * channels} channels), got shape {tuple(input_weight.shape)}")
    B, n, H, W = input_weight.shape
    return input_weight.reshape(B, 4, n // 4, H, W)


class SpatialPropagation(nn.Module):
    """Four-direction spatial propagation with a node-wise merge (the paper's SPN layer).

    The module form of :func:`spn.ops.propagate4`, whose contract it follows
    (``docs/spec/propagation.md``, version 2). Every direction runs, with the raw gates
    normalised over their ``K`` slots inside the kernel (``normalize``; Theorem 3's ``"clip"``
    by default)::

        h[k] = (1 - sum_j g_j[k]) x[k] + sum_j g_j[k] h_prev[j]      (no input weight)
        h[k] = l[k] x[k] + sum_j g_j[k] h_prev[j]                   (GSPN's input weight l)

    and the four maps are merged node-wise (``"max"`` in the paper; ``"none"`` stacks them
    for a learned merge). ``chunk`` scans groups of ``chunk`` lines independently (GSPN's local
    propagation).

    Args:
        connection: ``"three_way"`` (``K = 3``) or ``"one_way"`` (``K = 1``).
        merge: ``"max"``, ``"mean"``, ``"sum"`` or ``"none"``.
        normalize: ``"clip"`` (default), ``"always"``, ``"gspn"`` or ``None`` (gates as given).
        chunk: scan lines per chunk, or ``None`` (one chunk).

    Shape:
        - x: ``(B, C, H, W)``
        - gates: ``(B, 4, K, Cg, H, W)`` or the flat ``(B, 4*K*Cg, H, W)`` a CNN outputs
          (channel ``(d * K + j) * Cg + c``), ``Cg`` in {1, C}
        - input_weight (optional): ``(B, 4, Cl, H, W)`` or flat ``(B, 4*Cl, H, W)``, ``Cl`` in {1, C}
        - output: ``(B, C, H, W)``; ``(B, 4, C, H, W)`` for ``merge="none"``

    Example:
        >>> layer = SpatialPropagation("three_way")
        >>> x = torch.randn(2, 21, 32, 32)
        >>> raw = torch.randn(2, 4 * 3 * 21, 32, 32)       # a guidance CNN's output
        >>> layer(x, raw).shape
        torch.Size([2, 21, 32, 32])
    """

    def __init__(self, connection: str = "three_way", merge: str = "max", normalize: str | None = "clip",
                 chunk: int | None = None):
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
        self.chunk = check_chunk(chunk)

    def forward(self, x: torch.Tensor, gates: torch.Tensor, input_weight: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
        g = reshape_gates(gates, x.shape[1], self.k)
        if input_weight is not None:
            input_weight = reshape_input_weight(input_weight, x.shape[1])
        return propagate4(x, g, self.merge, normalize=self.normalize, input_weight=input_weight, chunk=self.chunk)

    def extra_repr(self) -> str:
        chunk = "" if self.chunk is None else f", chunk={self.chunk}"
        return f"connection={self.connection!r}, merge={self.merge!r}, normalize={self.normalize!r}{chunk}"
