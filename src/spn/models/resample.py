"""Consistent down/up sampling by an integer factor: area averaging down, bilinear up.

The two are aligned: low-resolution pixel ``q`` is the mean of the block of full-resolution
pixels ``f*q .. f*q + f - 1`` (centre ``f*q + (f - 1)/2``), and :func:`bilinear_upsample`
(``align_corners=False``) reads full-resolution pixel ``p`` at the low-resolution coordinate
``(p + 0.5)/f - 0.5``, which is where that centre lands. So a linear ramp, downsampled and
upsampled, comes back unchanged away from the borders (tested), and nothing is shifted by half
a pixel. Sizes that are not a multiple of ``f`` are padded at the bottom and right by edge
replication before the averaging, and the upsampled map is cropped back.

This is the chroma subsampling of ``spn``'s chroma task (4:2:0 at ``f = 2``) and the alignment
rule of every down/up pair of its model.

Shape:
    - :func:`area_downsample`: ``(B, C, H, W) -> (B, C, ceil(H/f), ceil(W/f))``
    - :func:`bilinear_upsample`: ``(B, C, h, w) -> (B, C, H, W)`` with ``h = ceil(H/f)``

Example:
    >>> import torch
    >>> from spn.models.resample import area_downsample, bilinear_upsample
    >>> ramp = torch.arange(32.0).expand(1, 1, 8, 32)
    >>> low = area_downsample(ramp, 4)
    >>> low[0, 0, 0].tolist()
    [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    >>> bilinear_upsample(low, 4, (8, 32))[0, 0, 0, 2:30].tolist() == list(range(2, 30))
    True
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["area_downsample", "bilinear_upsample", "check_factor", "low_size"]


def check_factor(f) -> int:
    """``f`` as an int >= 1 (a bool, float or smaller value -> an error naming it)."""
    if isinstance(f, bool) or not isinstance(f, int):
        raise TypeError(f"the factor must be an int, got {f!r}")
    if f < 1:
        raise ValueError(f"the factor must be >= 1, got {f}")
    return f


def low_size(size, f: int) -> tuple[int, int]:
    """``(ceil(H/f), ceil(W/f))`` of a full-resolution ``size = (H, W)``."""
    H, W = (int(s) for s in size)
    return math.ceil(H / f), math.ceil(W / f)


def area_downsample(x: torch.Tensor, f: int) -> torch.Tensor:
    """Mean over ``f x f`` blocks (edge-replicated up to a multiple of ``f``).

    Shape: ``(B, C, H, W) -> (B, C, ceil(H/f), ceil(W/f))``.
    """
    check_factor(f)
    if x.dim() != 4:
        raise ValueError(f"area_downsample expects (B, C, H, W), got {tuple(x.shape)}")
    if f == 1:
        return x
    H, W = x.shape[-2:]
    ph, pw = (-H) % f, (-W) % f
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return F.avg_pool2d(x, f)


def bilinear_upsample(low: torch.Tensor, f: int, size) -> torch.Tensor:
    """Bilinear upsampling by ``f`` (``align_corners=False``), cropped to ``size = (H, W)``.

    The inverse partner of :func:`area_downsample`: ``low`` must be ``(B, C, ceil(H/f),
    ceil(W/f))``. Shape: ``(B, C, h, w) -> (B, C, H, W)``.
    """
    check_factor(f)
    if low.dim() != 4:
        raise ValueError(f"bilinear_upsample expects (B, C, h, w), got {tuple(low.shape)}")
    H, W = (int(s) for s in size)
    h, w = low.shape[-2:]
    if (h, w) != low_size((H, W), f):
        raise ValueError(f"a {h}x{w} map is not the factor-{f} subsampling of {H}x{W} "
                         f"(expected {low_size((H, W), f)[0]}x{low_size((H, W), f)[1]})")
    if f == 1:
        return low
    up = F.interpolate(low, size=(h * f, w * f), mode="bilinear", align_corners=False)
    return up[..., :H, :W]
