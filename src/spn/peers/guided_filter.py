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
from dataclasses import dataclass

import torch

from ._base import Peer, renormalize


def _box1d(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Window sums ``out[i] = sum x[max(0, i-r) .. min(n-1, i+r)]`` along ``dim``."""
    n = x.shape[dim]
    c = x.cumsum(dim)
    last = c.narrow(dim, n - 1, 1)
    if r >= n - 1:
        upper = last.expand_as(c)
    else:  # c[min(i + r, n - 1)]
        upper = torch.cat([c.narrow(dim, r, n - r), last.expand(*[r if d == dim % x.dim() else -1
                                                                 for d in range(x.dim())])], dim)
    if r + 1 >= n:
        return upper.clone()
    shape = list(x.shape)
    shape[dim] = r + 1
    lower = torch.cat([x.new_zeros(shape), c.narrow(dim, 0, n - r - 1)], dim)  # c[i - r - 1]
    return upper - lower


def box_filter(x: torch.Tensor, r: int) -> torch.Tensor:
    """Sum over the ``(2r+1) x (2r+1)`` window around each pixel, clipped at the border.

    Separable running sums (cumulative sums), O(1) per pixel whatever ``r``.

    Args:
        x: ``(..., H, W)``.
    Returns:
        ``(..., H, W)`` window sums (divide by ``box_filter(ones, r)`` for means).
    """
    if r < 0:
        raise ValueError(f"box_filter: radius must be >= 0, got {r}")
    return _box1d(_box1d(x, r, -2), r, -1)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Colour guided filter.

    Args:
        guide: ``(3, H, W)`` guide image (float).
        src: ``(K, H, W)`` maps to filter.
        radius: window radius ``r`` (pixels).
        eps: regularisation (in squared guide units).
    Returns:
        ``(K, H, W)`` filtered maps, computed in the promoted dtype of ``guide`` and ``src``
        (float32 is accurate enough for images in [0, 1] and ``eps >= 1e-4``).
    """
    dtype = torch.promote_types(guide.dtype, src.dtype)
    I = guide.to(dtype)
    p = src.to(dtype)
    H, W = I.shape[-2:]
    n = box_filter(torch.ones(1, H, W, dtype=dtype), radius)  # (1, H, W)

    def mean(t):
        return box_filter(t, radius) / n

    mu = mean(I)                                   # (3, H, W)
    mp = mean(p)                                   # (K, H, W)
    # covariance of the guide + eps U: the 6 distinct entries of a symmetric 3x3, each (H, W)
    r, g, b = I[0], I[1], I[2]
    prods = torch.stack([r * r, r * g, r * b, g * g, g * b, b * b])
    m = mean(prods)
    vrr = m[0] - mu[0] * mu[0] + eps
    vrg = m[1] - mu[0] * mu[1]
    vrb = m[2] - mu[0] * mu[2]
    vgg = m[3] - mu[1] * mu[1] + eps
    vgb = m[4] - mu[1] * mu[2]
    vbb = m[5] - mu[2] * mu[2] + eps
    # inverse by the adjugate (symmetric positive definite, det > 0)
    irr = vgg * vbb - vgb * vgb
    irg = vgb * vrb - vrg * vbb
    irb = vrg * vgb - vgg * vrb
    igg = vrr * vbb - vrb * vrb
    igb = vrb * vrg - vrr * vgb
    ibb = vrr * vgg - vrg * vrg
    det = vrr * irr + vrg * irg + vrb * irb
    # cross covariance of guide channel c and every map: (3, K, H, W)
    cross = mean((I[:, None] * p[None]).reshape(-1, H, W)).reshape(3, -1, H, W) - mu[:, None] * mp[None]
    cr, cg, cb = cross[0], cross[1], cross[2]
    a = torch.stack([irr * cr + irg * cg + irb * cb,
                     irg * cr + igg * cg + igb * cb,
                     irb * cr + igb * cg + ibb * cb]) / det   # (3, K, H, W)
    b0 = mp - (a * mu[:, None]).sum(0)             # (K, H, W)
    K = p.shape[0]
    ma = mean(a.reshape(3 * K, H, W)).reshape(3, K, H, W)
    mb = mean(b0)
    q = (ma * I[:, None]).sum(0) + mb
    return q


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

    params_class = GuidedFilterParams

    def _refine(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        q = guided_filter(image, coarse, self.params.radius, float(self.params.eps))
        return renormalize(q, coarse)


def guided_filter_gray(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Guided filter with a one-channel guide (the grey case of He et al.).

    ``q = mean(a) I + mean(b)`` with ``a = cov_w(I, p) / (var_w(I) + eps)`` and
    ``b = mean_w(p) - a mean_w(I)`` in every ``(2r+1) x (2r+1)`` window ``w`` (box filters,
    clipped at the border).

    Args:
        guide: ``(1, H, W)`` (e.g. the luma).
        src: ``(K, H, W)`` maps to filter.
    Returns:
        ``(K, H, W)``.
    """
    if guide.dim() != 3 or guide.shape[0] != 1:
        raise ValueError(f"guided_filter_gray: guide must be (1, H, W), got {tuple(guide.shape)}")
    if src.dim() != 3 or src.shape[1:] != guide.shape[1:]:
        raise ValueError(f"guided_filter_gray: src must be (K, H, W) with the guide's H, W, got {tuple(src.shape)}")
    dtype = torch.promote_types(guide.dtype, src.dtype)
    I, p = guide.to(dtype), src.to(dtype)
    n = box_filter(torch.ones_like(I), radius)

    def mean(t):
        return box_filter(t, radius) / n

    mi, mp = mean(I), mean(p)
    a = (mean(I * p) - mi * mp) / (mean(I * I) - mi * mi + eps)
    b = mp - a * mi
    return mean(a) * I + mean(b)
