"""Metrics: boundary IoU, trimap accuracy and mBA (:mod:`spn.metrics.boundary`), PSNR and SSIM (:mod:`spn.metrics.image`, the chroma task), the confusion matrix, HELEN's group scores and the evaluation protocols of the paper
("plain", "voc", "helen").

Example:
    >>> import torch
    >>> from spn.metrics import get_protocol
    >>> proto = get_protocol("voc", num_classes=3)
    >>> coarse = torch.tensor([[[0.9]], [[0.0]], [[0.1]]])      # (K, H, W): class 0 present only
    >>> logits = proto.prepare(torch.tensor([[[0.0]], [[5.0]], [[1.0]]]), coarse)
    >>> proto.accumulate(logits.argmax(0), torch.tensor([[0]]))
    >>> proto.compute()["pixel_accuracy"]
    1.0
"""
from .boundary import BoundaryScores
from .confusion import ConfusionMatrix, group_scores
from .image import mse, psnr, ssim, ssim_map
from .protocols import (HELEN_CLASS_NAMES, HELEN_GROUPS, PROTOCOLS, HelenProtocol, Protocol, VOCProtocol, get_protocol,
                        helen_groups, list_protocols, restrict_to_coarse_classes)

__all__ = [
    "BoundaryScores", "ConfusionMatrix", "group_scores", "HELEN_CLASS_NAMES", "HELEN_GROUPS", "PROTOCOLS", "HelenProtocol", "Protocol",
    "VOCProtocol", "get_protocol", "helen_groups", "list_protocols", "restrict_to_coarse_classes",
    "mse", "psnr", "ssim", "ssim_map",
]
