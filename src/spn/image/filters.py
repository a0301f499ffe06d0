"""Edge-preserving filters on images: box sums by running sums and the colour guided filter
(He, Sun & Tang, ECCV 2010 / TPAMI 2013), with the photo as guide.

:func:`guided_filter` is the guided filter peer's core (:mod:`spn.peers.guided_filter`) and the
mask refiner's final step (``MaskRefiner(snap=...)``, :mod:`spn.inference_mask`), which runs it
in strips (:func:`guided_filter_strips`: the same result in bounded memory).

Example:
    >>> import torch
    >>> from spn.image.filters import box_filter
    >>> box_filter(torch.ones(1, 3, 4), 1)[0, 0].tolist()  # window sums, clipped at the border
    [4.0, 6.0, 6.0, 4.0]
"""
from __future__ import annotations

import torch

__all__ = ["box_filter", "guided_filter", "guided_filter_strips"]


def _box1d(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Window sums ``out[i] = sum x[max(0, i-r) .. min(n-1, i+r)]`` along ``dim``: with the running
    sum ``c`` padded by ``r + 1`` zeros in front and ``r`` copies of its last value behind, ``out[i]
    = c[min(i + r, n - 1)] - c[i - r - 1]`` is the difference of two shifted slices."""
    n = x.shape[dim]
    c = x.cumsum(dim)
    front, back = list(x.shape), list(x.shape)
    front[dim], back[dim] = r + 1, r
    cp = torch.cat([x.new_zeros(front), c, c.narrow(dim, n - 1, 1).expand(*back)], dim)
    return cp.narrow(dim, 2 * r + 1, n) - cp.narrow(dim, 0, n)


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
    K = p.shape[0]

    def counts(n):  # pixels of each clipped window along one axis
        i = torch.arange(n)
        return ((i + radius).clamp(max=n - 1) - (i - radius).clamp(min=0) + 1).to(dtype)

    n = counts(H)[:, None] * counts(W)[None, :]   # (H, W) pixels of each clipped window
    r, g, b = I[0], I[1], I[2]
    # every window mean the filter needs, in one box filter: I (3), p (K), I I^T (6), I p (3K)
    first = torch.cat([I, p, torch.stack([r * r, r * g, r * b, g * g, g * b, b * b]),
                       (I[:, None] * p[None]).reshape(3 * K, H, W)])
    means = box_filter(first, radius) / n
    mu, mp, m = means[:3], means[3:3 + K], means[3 + K:9 + K]
    mip = means[9 + K:].reshape(3, K, H, W)
    # covariance of the guide + eps U: the 6 distinct entries of a symmetric 3x3, each (H, W)
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
    cross = mip - mu[:, None] * mp[None]
    cr, cg, cb = cross[0], cross[1], cross[2]
    a = torch.stack([irr * cr + irg * cg + irb * cb,
                     irg * cr + igg * cg + igb * cb,
                     irb * cr + igb * cg + ibb * cb]) / det   # (3, K, H, W)
    b0 = mp - (a * mu[:, None]).sum(0)             # (K, H, W)
    second = box_filter(torch.cat([a.reshape(3 * K, H, W), b0]), radius) / n
    ma, mb = second[:3 * K].reshape(3, K, H, W), second[3 * K:]
    return (ma * I[:, None]).sum(0) + mb


def guided_filter_strips(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float,
                         max_pixels: int = 1 << 17) -> torch.Tensor:
    """:func:`guided_filter` computed in horizontal strips of at most about ``max_pixels``
    pixels each (plus ``2 * radius`` rows of context on each side), so that its temporaries stay
    bounded whatever the image's size. The result equals the whole-image filter (an output
    pixel depends only on the inputs within ``2 * radius`` of it; windows are clipped at the
    image's border, never at a strip's)."""
    H, W = guide.shape[-2:]
    rows = max(1, max_pixels // max(1, W))
    if rows >= H:
        return guided_filter(guide, src, radius, eps)
    halo = 2 * radius
    out = []
    for y0 in range(0, H, rows):
        y1 = min(H, y0 + rows)
        a, b = max(0, y0 - halo), min(H, y1 + halo)
        q = guided_filter(guide[:, a:b], src[:, a:b], radius, eps)
        out.append(q[:, y0 - a:y1 - a])
    return torch.cat(out, 1)
