"""The baseline segmentation CNN (paper Sec. 5): a symmetric U-Net working at 1/8 resolution."""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import UNet
from .config import BaselineConfig
from .registry import register_model


def check_image(image, name: str = "image") -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"{name} must be (B, 3, H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {image.dtype}")


@register_model("baseline", BaselineConfig, "baseline CNN: symmetric U-Net at 1/8 resolution (ignores coarse)")
class BaselineNet(nn.Module):
    """Image -> class logits. The image is area-downsampled by ``factor`` (8), a U-Net computes
    logits at that resolution, and they are bilinearly upsampled to the input size. ``coarse`` is
    ignored (accepted for the common model interface).

    Shape:
        - image: ``(B, 3, H, W)``, any ``H, W``
        - output: ``(B, K, H, W)`` logits

    Example:
        >>> import torch
        >>> from spn.models import BaselineConfig, BaselineNet
        >>> net = BaselineNet(BaselineConfig(num_classes=4, width=4, depth=2))
        >>> net(torch.rand(2, 3, 40, 56)).shape
        torch.Size([2, 4, 40, 56])
    """

    name = "baseline"
    needs_coarse = False

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        self.config = dataclasses.asdict(cfg)
        self.num_classes = cfg.num_classes
        self.unet = UNet(3, cfg.num_classes, width=cfg.width, depth=cfg.depth, out_level=0,
                         max_width=cfg.max_width)

    def forward_low(self, image: torch.Tensor) -> torch.Tensor:
        """Logits at the working resolution: ``(B, K, ceil(H/factor), ceil(W/factor))``."""
        check_image(image)
        H, W = image.shape[-2:]
        f = self.cfg.factor
        size = (max(1, math.ceil(H / f)), max(1, math.ceil(W / f)))
        x = image if size == (H, W) else F.interpolate(image, size=size, mode="area")
        return self.unet(x - 0.5)

    def upsample(self, low: torch.Tensor, size) -> torch.Tensor:
        """Bilinearly resize low-resolution logits ``(B, K, h, w)`` to ``size = (H, W)``."""
        if tuple(low.shape[-2:]) == tuple(size):
            return low
        return F.interpolate(low, size=tuple(size), mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor, coarse: torch.Tensor | None = None) -> torch.Tensor:
        return self.upsample(self.forward_low(image), image.shape[-2:])
