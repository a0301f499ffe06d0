"""Dense matrices of the propagation, for small maps (Theorems 1 and 2).

For one ``(b, c)`` slice and one direction the operator is linear in ``x``:
``h.flatten() = G @ x.flatten()`` (row-major flatten of ``(H, W)``). With ``G = I - D + A``
(Eq. 8), ``A`` is the off-diagonal part of ``G`` (the affinity), ``D`` its degree matrix and
``L = D - A = I - G`` a graph Laplacian.
"""
from __future__ import annotations

import torch

from ._validate import direction_index

MAX_PIXELS = 4096


def _slice_gates(gates: torch.Tensor, b: int, c: int) -> torch.Tensor:
    if gates.dim() != 5:
        raise ValueError(f"gates must be (B, K, Cg, H, W), got shape {tuple(gates.shape)}")
    K, Cg = gates.shape[1], gates.shape[2]
    if K not in (1, 3):
        raise ValueError(f"gates must have K = 1 or 3, got K = {K}")
    if not (0 <= b < gates.shape[0] and (Cg == 1 or 0 <= c < Cg)):
        raise ValueError(f"slice b = {b}, c = {c} is out of range for gates of shape {tuple(gates.shape)}")
    return gates[b, :, 0 if Cg == 1 else c]


def transformation_matrix(gates: torch.Tensor, direction, b: int = 0, c: int = 0) -> torch.Tensor:
    """Dense ``G`` (``HW x HW``) of the propagation of slice ``(b, c)`` in ``direction``.

    ``G`` is built row by row from the recurrence: the row of a pixel is its own
    ``(1 - sum g)`` on the diagonal plus ``g_j`` times the row of neighbour ``j``. It is
    lower-triangular in scan order and its rows sum to one (Theorem 1).
    """
    d = direction_index(direction)
    g = _slice_gates(gates, b, c).detach()
    K, H, W = g.shape
    N = H * W
    if N > MAX_PIXELS:
        raise ValueError(f"transformation_matrix builds a dense {N}x{N} matrix; maps are limited to {MAX_PIXELS} pixels")
    dtype = g.dtype
    G = torch.zeros(N, N, dtype=dtype)
    vert = d >= 2
    L, n = (H, W) if vert else (W, H)
    rev = d in (1, 3)

    def pix(t: int, k: int) -> int:
        line = L - 1 - t if rev else t
        r, col = (line, k) if vert else (k, line)
        return r * W + col

    for k in range(n):
        p = pix(0, k)
        G[p, p] = 1
    for t in range(1, L):
        for k in range(n):
            p = pix(t, k)
            r, col = divmod(p, W)
            nbrs = [(0, k)] if K == 1 else [(0, k - 1), (1, k), (2, k + 1)]
            total = torch.zeros((), dtype=dtype)
            for slot, j in nbrs:
                if 0 <= j < n:
                    gj = g[slot, r, col]
                    total = total + gj
                    G[p] += gj * G[pix(t - 1, j)]
            G[p, p] += 1 - total
    return G


def affinity_matrix(gates: torch.Tensor, direction, b: int = 0, c: int = 0) -> torch.Tensor:
    """Affinity ``A``: the off-diagonal part of ``G`` (Eq. 8)."""
    G = transformation_matrix(gates, direction, b, c)
    return G - torch.diag(torch.diagonal(G))


def degree_matrix(gates: torch.Tensor, direction, b: int = 0, c: int = 0) -> torch.Tensor:
    """Degree matrix ``D = diag(A 1)`` of the affinity (Eq. 8)."""
    A = affinity_matrix(gates, direction, b, c)
    return torch.diag(A.sum(dim=1))


def laplacian_matrix(gates: torch.Tensor, direction, b: int = 0, c: int = 0) -> torch.Tensor:
    """Graph Laplacian ``L = I - G = D - A`` (Theorem 2); its rows sum to zero."""
    G = transformation_matrix(gates, direction, b, c)
    return torch.eye(G.shape[0], dtype=G.dtype) - G
