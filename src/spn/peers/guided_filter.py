"""The guided filter (He, Sun & Tang, ECCV 2010 / TPAMI 2013) of each class probability map.

With the colour image ``I`` (3 channels) as guide, each output pixel is a local linear function
of the guide, ``q_i = mean_{k: i in w_k}(a_k)^T I_i + mean_{k: i in w_k}(b_k)``, where for every
``(2r+1) x (2r+1)`` window ``w_k``::

    a_k = (Sigma_k + eps U)^-1 (mean_{w_k}(I p) - mu_k mean_{w_k}(p))      (3-vector)
    b_k = mean_{w_k}(p) - a_k^T mu_k

(``mu_k``, ``Sigma_k``: mean and 3x3 covariance of ``I`` in ``w_k``). All window means are box
filters computed with cumulative sums (O(1) per pixel, windows clipped at the border). Each of
the ``K`` class maps is filtered, then the result is clamped to >= 0 and renormalised to sum 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from ._base import Peer, renormalize


def box_filter(x: torch.Tensor, r: int) -> torch.Tensor:
    """Sum over the ``(2r+1) x (2r+1)`` window around each pixel, clipped at the border.

    Args:
        x: ``(..., H, W)``.
    Returns:
        ``(..., H, W)`` window sums (divide by ``box_filter(ones, r)`` for means).
    """
    if r < 0:
        raise ValueError(f"box_filter: radius must be >= 0, got {r}")
    H, W = x.shape[-2:]
    # cumulative sums with a leading zero row/column: S[i, j] = sum x[:i, :j]
    c = torch.nn.functional.pad(x, (1, 0, 1, 0)).cumsum(-2).cumsum(-1)
    i0 = torch.arange(H).sub(r).clamp(min=0)
    i1 = torch.arange(H).add(r + 1).clamp(max=H)
    j0 = torch.arange(W).sub(r).clamp(min=0)
    j1 = torch.arange(W).add(r + 1).clamp(max=W)
    rows1 = c.index_select(-2, i1)
    rows0 = c.index_select(-2, i0)
    return (rows1.index_select(-1, j1) - rows1.index_select(-1, j0)
            - rows0.index_select(-1, j1) + rows0.index_select(-1, j0))


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Colour guided filter.

    Args:
        guide: ``(3, H, W)`` guide image (float).
        src: ``(K, H, W)`` maps to filter.
        radius: window radius ``r`` (pixels).
        eps: regularisation (in squared guide units).
    Returns:
        ``(K, H, W)`` filtered maps (float64 internally, returned in ``src.dtype``).
    """
    dtype = src.dtype
    I = guide.double()
    p = src.double()
    H, W = I.shape[-2:]
    n = box_filter(torch.ones(1, H, W, dtype=torch.float64), radius)  # (1, H, W)

    def mean(t):
        return box_filter(t, radius) / n

    mu = mean(I)                                   # (3, H, W)
    mp = mean(p)                                   # (K, H, W)
    # covariance of the guide, (H, W, 3, 3)
    II = I[:, None] * I[None, :]                   # (3, 3, H, W)
    cov = mean(II.reshape(9, H, W)).reshape(3, 3, H, W) - mu[:, None] * mu[None, :]
    cov = cov.permute(2, 3, 0, 1) + eps * torch.eye(3, dtype=torch.float64)
    # cross covariance guide / maps, (H, W, 3, K)
    Ip = I[:, None] * p[None, :]                   # (3, K, H, W)
    K = p.shape[0]
    cross = mean(Ip.reshape(3 * K, H, W)).reshape(3, K, H, W) - mu[:, None] * mp[None, :]
    cross = cross.permute(2, 3, 0, 1)
    a = torch.linalg.solve(cov, cross)             # (H, W, 3, K)
    a = a.permute(2, 3, 0, 1)                      # (3, K, H, W)
    b = mp - (a * mu[:, None]).sum(0)              # (K, H, W)
    ma = mean(a.reshape(3 * K, H, W)).reshape(3, K, H, W)
    mb = mean(b)
    q = (ma * I[:, None]).sum(0) + mb
    return q.to(dtype)


@dataclass
class GuidedFilterParams:
    """``radius`` in pixels, ``eps`` in squared intensity units (image in [0, 1])."""

    radius: int = 8
    eps: float = 1e-3

    def __post_init__(self):
        if not isinstance(self.radius, int) or self.radius < 1:
            raise ValueError(f"guided_filter: radius must be an int >= 1, got {self.radius!r}")
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"guided_filter: eps must be a positive number, got {self.eps!r}")


class GuidedFilter(Peer):
    """``refine(image (3,H,W) in [0,1], coarse (K,H,W)) -> probs (K,H,W)``: guided filter per class."""

    name = "guided_filter"
    title = "guided filter"

    def __init__(self, **params):
        known = {f.name for f in fields(GuidedFilterParams)}
        bad = sorted(set(params) - known)
        if bad:
            raise TypeError(f"guided_filter: unknown parameters {bad}; valid are {sorted(known)}")
        super().__init__(GuidedFilterParams(**params))

    def _refine(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        q = guided_filter(image, coarse, self.params.radius, float(self.params.eps))
        return renormalize(q, coarse)
