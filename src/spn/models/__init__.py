"""Segmentation models: the baseline CNN and the SPN refiners (one-way and three-way), their
registry (:func:`create_model`) and their checkpoint format (:mod:`spn.models.checkpoint`).

Every model is an ``nn.Module`` with ``forward(image (B, 3, H, W), coarse (B, K, H, W) or None)
-> logits (B, K, H, W)``, a ``.name`` and a ``.config`` (the JSON-able kwargs it was built with).
Models register themselves with :func:`register_model`.

Shape:
    - image: ``(B, 3, H, W)`` float in [0, 1]
    - coarse: ``(B, K, H, W)`` class probabilities (SPNs), or None (the baseline)
    - output: ``(B, K, H, W)`` logits

The chroma models (``chroma_one_way``, ``chroma_three_way``, task ``chroma``,
:mod:`spn.models.chroma`) take ``forward(luma (B, 1, H, W), chroma_low (B, 2, h, w)) -> chroma
(B, 2, H, W)`` instead, and say so with ``model.task == "chroma"``.

Example:
    >>> import torch
    >>> from spn.models import SPNConfig, create_model
    >>> cfg = SPNConfig.from_name("fast", num_classes=3)
    >>> model = create_model("spn_three_way", **vars(cfg)).eval()
    >>> coarse = torch.softmax(torch.randn(1, 3, 32, 32), 1)
    >>> model(torch.rand(1, 3, 32, 32), coarse).shape
    torch.Size([1, 3, 32, 32])
"""
from __future__ import annotations

from .registry import create_model, describe_models, list_models, make_config, model_config_class, register_model
from .config import SPN_PRESETS, BaselineConfig, SPNConfig, spn_preset
from .blocks import ConvBlock, UNet
from .baseline import BaselineNet
from .spn import GuidanceNet, SPNRefiner
from .chroma import ChromaSPN, ChromaSPNConfig
from .mask_refiner import MaskRefinerConfig, MaskRefinerNet

__all__ = [
    "SPN_PRESETS", "BaselineConfig", "BaselineNet", "ChromaSPN", "ChromaSPNConfig", "MaskRefinerConfig", "MaskRefinerNet", "ConvBlock", "GuidanceNet", "SPNConfig", "SPNRefiner",
    "UNet", "create_model", "describe_models", "list_models", "make_config", "model_config_class",
    "register_model", "spn_preset",
]
