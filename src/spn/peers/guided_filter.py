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

from spn.image.filters import box_filter, guided_filter  # noqa: F401 (re-exported)

from ._base import Peer, renormalize


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
