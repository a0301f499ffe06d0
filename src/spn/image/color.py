"""BT.601 YCbCr, the full-range form of JPEG / JFIF.

``Y = 0.299 R + 0.587 G + 0.114 B``, ``Cb = 0.5 + (B - Y) / 1.772``, ``Cr = 0.5 + (R - Y) / 1.402``
with R, G, B, Y, Cb, Cr in [0, 1] (grey has ``Cb = Cr = 0.5``); :func:`ycbcr_to_rgb` is its exact
inverse.

Shape:
    - rgb: ``(3, H, W)`` or ``(B, 3, H, W)``; ycbcr: the same, channels ``(Y, Cb, Cr)``

Example:
    >>> import torch
    >>> from spn.image.color import rgb_to_ycbcr, ycbcr_to_rgb
    >>> rgb_to_ycbcr(torch.tensor([1.0, 1.0, 1.0]).view(3, 1, 1)).flatten().tolist()
    [1.0, 0.5, 0.5]
    >>> x = torch.rand(3, 4, 5)
    >>> bool(torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-6))
    True
"""
from __future__ import annotations

import torch

__all__ = ["KB", "KG", "KR", "check_rgb_like", "rgb_to_ycbcr", "ycbcr_to_rgb"]

KR, KB = 0.299, 0.114
KG = 1.0 - KR - KB
_CB = 2.0 * (1.0 - KB)  # 1.772
_CR = 2.0 * (1.0 - KR)  # 1.402


def check_rgb_like(x: torch.Tensor, what: str) -> int:
    """The number of batch dimensions (0 or 1) of a floating ``(3, H, W)`` or ``(B, 3, H, W)``
    tensor ``x``; TypeError / ValueError naming ``what`` otherwise."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"{what} must be (3, H, W) or (B, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{what} must be a floating tensor in [0, 1], got {x.dtype}")
    return x.dim() - 3


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> (Y, Cb, Cr) in [0, 1] (BT.601, full range). Shape kept."""
    a = check_rgb_like(rgb, "rgb")
    r, g, b = rgb.unbind(a)
    y = KR * r + KG * g + KB * b
    return torch.stack([y, 0.5 + (b - y) / _CB, 0.5 + (r - y) / _CR], dim=a)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    """(Y, Cb, Cr) in [0, 1] -> RGB (not clamped: out-of-gamut chroma gives values outside [0, 1])."""
    a = check_rgb_like(ycbcr, "ycbcr")
    y, cb, cr = ycbcr.unbind(a)
    b = y + _CB * (cb - 0.5)
    r = y + _CR * (cr - 0.5)
    g = (y - KR * r - KB * b) / KG
    return torch.stack([r, g, b], dim=a)
