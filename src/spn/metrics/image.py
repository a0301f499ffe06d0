"""Image fidelity: PSNR and SSIM (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004).

SSIM follows the paper's reference settings: an 11 x 11 Gaussian window of standard deviation
1.5 (normalised to sum 1), ``C1 = (K1 L)^2`` and ``C2 = (K2 L)^2`` with ``K1 = 0.01``,
``K2 = 0.03`` and ``L`` the data range; local means, variances and the covariance are Gaussian-
weighted (population, not sample, moments), and the SSIM map is averaged over the positions
where the window lies inside the image (the "valid" part, as the authors' MATLAB code does).
For several channels it is the mean of the channels' SSIM. scikit-image's
``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1)`` computes the same number (checked in the tests when it is installed).

Shape:
    - a, b: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` (the same shape); a batch gives one
      value per item

Example:
    >>> import torch
    >>> from spn.metrics.image import psnr, ssim
    >>> a = torch.zeros(1, 16, 16)
    >>> round(psnr(a, a + 0.1), 6)
    20.0
    >>> round(ssim(a + 0.5, a + 0.5), 6)
    1.0
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["SSIM_K1", "SSIM_K2", "SSIM_SIGMA", "SSIM_WINDOW", "gaussian_window", "mse", "psnr", "ssim", "ssim_map"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _pair(a, b, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{who}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{who}: the two images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() not in (2, 3, 4):
        raise ValueError(f"{who}: images must be (H, W), (C, H, W) or (B, C, H, W), got {tuple(a.shape)}")
    a = a.detach().to(torch.float64)
    b = b.detach().to(torch.float64)
    while a.dim() < 4:
        a, b = a[None], b[None]
    return a, b


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared difference over every element."""
    a, b = _pair(a, b, "mse")
    return float(((a - b) ** 2).mean())


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """``10 log10(L^2 / MSE)`` in dB over every element (``inf`` for identical images).

    A NaN anywhere gives NaN.
    """
    if not data_range > 0:
        raise ValueError(f"psnr: data_range must be > 0, got {data_range}")
    m = mse(a, b)
    if math.isnan(m):
        return float("nan")
    if m == 0:
        return float("inf")
    return 10.0 * math.log10(data_range ** 2 / m)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float64) -> torch.Tensor:
    """The normalised 1-D Gaussian ``(size,)``, centred, summing to one."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"the window size must be odd and >= 1, got {size}")
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    w = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return w / w.sum()


def _filter(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filter of ``(N, 1, H, W)``."""
    n = w.numel()
    x = F.conv2d(x, w.view(1, 1, n, 1))
    return F.conv2d(x, w.view(1, 1, 1, n))


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = SSIM_WINDOW,
             sigma: float = SSIM_SIGMA, k1: float = SSIM_K1, k2: float = SSIM_K2) -> torch.Tensor:
    """The local SSIM ``(B, C, H - window + 1, W - window + 1)`` (float64) of two images."""
    a, b = _pair(a, b, "ssim")
    B, C, H, W = a.shape
    if H < window or W < window:
        raise ValueError(f"ssim: images of {H}x{W} are smaller than the {window}x{window} window")
    w = gaussian_window(window, sigma)
    x, y = a.reshape(B * C, 1, H, W), b.reshape(B * C, 1, H, W)
    mx, my = _filter(x, w), _filter(y, w)
    sxx = _filter(x * x, w) - mx * mx
    syy = _filter(y * y, w) - my * my
    sxy = _filter(x * y, w) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.reshape(B, C, *s.shape[-2:])


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, **kw):
    """Mean SSIM (mean over positions and channels): a float, or a list of floats for a
    ``(B, C, H, W)`` batch. Keyword options: those of :func:`ssim_map`."""
    batched = a.dim() == 4
    if not data_range > 0:
        raise ValueError(f"ssim: data_range must be > 0, got {data_range}")
    m = ssim_map(a, b, data_range, **kw).mean(dim=(1, 2, 3))
    return [float(v) for v in m] if batched else float(m[0])
