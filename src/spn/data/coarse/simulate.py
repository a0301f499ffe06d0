"""The maths of simulated coarse maps: Gaussian blur, the resize of probability maps, one-hot
masks, and :func:`make_coarse_from_mask` (the ``"gt-downsample:F"`` source).

Example:
    >>> import torch
    >>> from spn.data.coarse import resize_probs
    >>> resize_probs(torch.full((2, 4, 4), 0.5), (8, 8)).shape
    torch.Size([2, 8, 8])
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _gaussian_kernel1d(sigma: float, dtype=torch.float32) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` ``(K, h, w)`` per channel, replicate padding."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel1d(sigma, x.dtype)
    r = k.numel() // 2
    K = x.shape[0]
    y = x.unsqueeze(0)
    y = F.pad(y, (r, r, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(K, 1, 1, -1).contiguous(), groups=K)
    y = F.pad(y, (0, 0, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(K, 1, -1, 1).contiguous(), groups=K)
    return y.squeeze(0)


def _renormalize(p: torch.Tensor) -> torch.Tensor:
    """Clamp to >= 0 and rescale so the class axis (dim 0) sums to one."""
    p = p.clamp_min(0)
    s = p.sum(dim=0, keepdim=True)
    K = p.shape[0]
    return torch.where(s > 0, p / s.clamp_min(1e-12), torch.full_like(p, 1.0 / K))


def resize_probs(p: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize probabilities ``(K, h, w)`` to ``size = (H, W)`` (align_corners=False)
    and renormalise; a no-op when the size already matches."""
    if tuple(p.shape[-2:]) == tuple(size):
        return p
    q = F.interpolate(p.unsqueeze(0), size=tuple(size), mode="bilinear", align_corners=False)
    return _renormalize(q.squeeze(0))


def one_hot_mask(mask: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """One-hot ``(K, H, W)`` float32 of an index mask ``(H, W)``; ignored pixels are all-zero."""
    valid = mask != ignore_index
    idx = torch.where(valid, mask, torch.zeros_like(mask)).long()
    oh = F.one_hot(idx, num_classes).permute(2, 0, 1).float()
    return oh * valid.unsqueeze(0)


def make_coarse_from_mask(mask, num_classes: int, factor: int = 8, sigma: float = 0.75,
                          ignore_index: int = 255) -> torch.Tensor:
    """A simulated coarse segmentation of a ground-truth mask.

    ``mask`` ``(H, W)`` integer class ids (``ignore_index`` = unlabelled) -> float32
    ``(num_classes, H, W)`` probabilities:

    1. one-hot the mask (ignored pixels contribute nothing);
    2. area-downsample by ``factor`` to ``(ceil(H/F), ceil(W/F))``, dividing by the fraction
       of labelled pixels in each cell (a cell with no labelled pixel gets uniform
       probabilities);
    3. Gaussian-blur by ``sigma`` low-resolution pixels (replicate borders);
    4. bilinearly upsample back to ``(H, W)`` and renormalise.

    The result is what an ideal network with output stride ``F`` would give: right in the
    interior of regions, soft and displaced at boundaries, thin parts washed out. No
    randomness: the same mask always gives the same map.

    Shape:
        - mask: ``(H, W)`` integer class ids
        - output: ``(num_classes, H, W)`` float32 probabilities

    Example:
        >>> import torch
        >>> from spn.data import make_coarse_from_mask
        >>> mask = torch.zeros(64, 64, dtype=torch.long)
        >>> mask[:, 30:34] = 1                        # a 4 px bar: thinner than a coarse cell
        >>> coarse = make_coarse_from_mask(mask, 2, factor=8)
        >>> coarse.argmax(0).sum().item()             # the bar is washed out
        0
    """
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"mask must be a (H, W) tensor, got shape {tuple(getattr(mask, 'shape', ()))}")
    if mask.is_floating_point():
        raise TypeError(f"mask must hold integer class ids, got dtype {mask.dtype}")
    num_classes = int(num_classes)
    factor = int(factor)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    mask = mask.long()
    bad = (mask != ignore_index) & ((mask < 0) | (mask >= num_classes))
    if bool(bad.any()):
        ids = sorted(set(mask[bad].unique().tolist()))
        raise ValueError(f"mask holds class ids {ids} outside [0, {num_classes}) (ignore = {ignore_index})")
    H, W = mask.shape
    oh = one_hot_mask(mask, num_classes, ignore_index)
    valid = (mask != ignore_index).float().unsqueeze(0)
    h, w = max(1, math.ceil(H / factor)), max(1, math.ceil(W / factor))
    if (h, w) != (H, W):
        oh = F.interpolate(oh.unsqueeze(0), size=(h, w), mode="area").squeeze(0)
        valid = F.interpolate(valid.unsqueeze(0), size=(h, w), mode="area").squeeze(0)
    low = torch.where(valid > 1e-6, oh / valid.clamp_min(1e-6), torch.full_like(oh, 1.0 / num_classes))
    low = gaussian_blur(low, sigma)
    return resize_probs(_renormalize(low), (H, W)).contiguous()
