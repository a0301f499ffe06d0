"""The items of the chroma task: an RGB image -> the full-resolution luma, the chroma
area-downsampled by ``F`` (:func:`spn.image.resample.area_downsample`) and the full-resolution
chroma (BT.601 YCbCr, :mod:`spn.image.color`).

Shape:
    - image: ``(3, H, W)``; luma ``(1, H, W)``; chroma ``(2, H, W)``; chroma_low ``(2, ceil(H/F), ceil(W/F))``

Example:
    >>> import torch
    >>> from spn.data.color import chroma_item
    >>> item = chroma_item(torch.rand(3, 10, 12), 4)
    >>> item["luma"].shape, item["chroma_low"].shape
    (torch.Size([1, 10, 12]), torch.Size([2, 3, 3]))
"""
from __future__ import annotations

import torch

from spn.image.color import check_rgb_like, rgb_to_ycbcr
from spn.image.resample import area_downsample, check_factor

__all__ = ["chroma_item"]


def chroma_item(image: torch.Tensor, factor: int) -> dict:
    """The chroma task's tensors of an RGB image ``(3, H, W)`` in [0, 1]:
    ``{"luma": (1, H, W), "chroma": (2, H, W), "chroma_low": (2, ceil(H/F), ceil(W/F)),
    "factor": F}`` (float32)."""
    check_factor(factor)
    if check_rgb_like(image, "image") != 0:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    ycc = rgb_to_ycbcr(image.float())
    chroma = ycc[1:].contiguous()
    return {"luma": ycc[:1].contiguous(), "chroma": chroma,
            "chroma_low": area_downsample(chroma[None], factor)[0].contiguous(), "factor": int(factor)}
