"""Scores of a chroma reconstruction: PSNR and SSIM of the RGB photo rebuilt from the luma and
the chroma, and of the chroma itself; per photo, and their mean and median over photos.

Example:
    >>> import torch
    >>> from spn.data.color import chroma_item
    >>> from spn.metrics.chroma import chroma_scores
    >>> image = torch.rand(3, 24, 24)
    >>> item = chroma_item(image, 4)
    >>> s = chroma_scores(item["luma"], item["chroma"], item["chroma"], image)
    >>> s["psnr_rgb"] > 100, round(s["ssim_chroma"], 6)
    (True, 1.0)
"""
from __future__ import annotations

import math
import statistics

import torch

from spn.image.color import ycbcr_to_rgb

from .image import psnr, ssim

__all__ = ["CHROMA_METRICS", "chroma_scores", "reconstruct_rgb", "summarize_scores"]

#: the keys of :func:`chroma_scores`
CHROMA_METRICS = ("psnr_rgb", "ssim_rgb", "psnr_chroma", "ssim_chroma")


def reconstruct_rgb(luma: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """RGB ``(3, H, W)`` in [0, 1] (clamped) from ``luma (1, H, W)`` and ``chroma (2, H, W)``."""
    return ycbcr_to_rgb(torch.cat([luma.float(), chroma.float()], dim=0)).clamp(0, 1)


def chroma_scores(luma: torch.Tensor, chroma: torch.Tensor, true_chroma: torch.Tensor,
                  true_rgb: torch.Tensor) -> dict:
    """``{"psnr_rgb", "ssim_rgb", "psnr_chroma", "ssim_chroma"}`` of a reconstructed chroma
    ``(2, H, W)`` against the photo's own chroma and its RGB ``(3, H, W)`` (data range 1; SSIM
    is the mean over the channels)."""
    if chroma.shape != true_chroma.shape:
        raise ValueError(f"chroma {tuple(chroma.shape)} and the true chroma {tuple(true_chroma.shape)} differ")
    rgb = reconstruct_rgb(luma, chroma)
    truth = true_rgb.float()
    return {"psnr_rgb": psnr(rgb, truth), "ssim_rgb": ssim(rgb, truth),
            "psnr_chroma": psnr(chroma.float(), true_chroma.float()),
            "ssim_chroma": ssim(chroma.float(), true_chroma.float())}


def summarize_scores(per_photo: list[dict], keys=CHROMA_METRICS) -> dict:
    """``{key: {"mean", "median"}}`` over photos (NaN stays NaN; an empty list -> NaN)."""
    out = {}
    for k in keys:
        vals = [float(p[k]) for p in per_photo if k in p]
        if not vals or any(math.isnan(v) for v in vals):
            out[k] = {"mean": float("nan"), "median": float("nan")}
        else:
            out[k] = {"mean": sum(vals) / len(vals), "median": statistics.median(vals)}
    return out
