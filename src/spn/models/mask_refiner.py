"""The class-agnostic mask refiner (task ``mask``): one RGB image and one soft or binary mask in,
the refined mask's logit out, at the image's resolution.

1. guidance: a U-Net (:class:`~spn.models.blocks.UNet`) sees the image and the coarse
   probability ``p``, area-downsampled by ``guidance_scale``. It gives, per direction, ``k`` gate
   logits (``k = 3`` three-way, 1 one-way; one gate map for the single propagated channel,
   ``Cg = 1``) and one correction map ``delta``. A softmax over the ``k`` logits and a fixed zero
   makes the gates non-negative with a sum below one (Theorem 3's stability, without
   normalisation); they are upsampled to full resolution with the aligned bilinear upsampling;
2. edge awareness (``edge_aware``): each gate is multiplied by ``exp(-lambda |Y(p) - Y(n)|)``, the
   full-resolution luma similarity of the pixel and the neighbour it reads (``lambda`` learned;
   :func:`spn.models.chroma.similarity_planes`), so the gates follow edges finer than the
   guidance network's resolution;
3. ``x = p - 1/2 + delta`` is propagated in the four directions by
   :class:`spn.nn.SpatialPropagation` (``normalize=None``, ``merge="none"``);
4. output: ``logit = gain * (mean of the four maps) + head(four maps, x)``, ``head`` two 1x1
   convolutions, the last starting at zero; ``gain`` starts at 10, so the untrained network
   returns a sharpened copy of the coarse mask.

Shape:
    - image: ``(B, 3, H, W)`` float in [0, 1]
    - coarse: ``(B, 1, H, W)`` probability in [0, 1]
    - output: ``(B, 1, H, W)`` logits

Example:
    >>> import torch
    >>> from spn.models import create_model
    >>> net = create_model("mask_refiner", guidance_width=4).eval()
    >>> coarse = torch.zeros(1, 1, 30, 45); coarse[..., 8:20, 10:30] = 1
    >>> out = net(torch.rand(1, 3, 30, 45), coarse)
    >>> out.shape, bool(((out > 0) == (coarse > 0.5)).all())  # untrained: the coarse mask
    (torch.Size([1, 1, 30, 45]), True)
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..nn import CONNECTIONS, SpatialPropagation
from ..utils.config import option
from .blocks import UNet, check_maps
from .chroma import gate_slots as _slots, similarity_planes
from .registry import register_model
from ..image.resample import area_downsample, bilinear_upsample

__all__ = ["HEAD_BLOCK", "MaskRefinerConfig", "MaskRefinerNet", "check_mask_inputs"]

#: pixels per block of the output head without autograd (its hidden maps stay in the cache)
HEAD_BLOCK = 8192


@dataclass
class MaskRefinerConfig:
    """The mask refiner's options (``--model-option KEY=VALUE``)."""

    connection: str = option("one_way", help="one_way (k = 1) or three_way (k = 3) propagation", cli=False)
    guidance_width: int = option(8, help="channels of the first level of the guidance U-Net", cli=False)
    guidance_depth: int = option(3, help="stride-2 levels of the guidance U-Net", cli=False)
    guidance_scale: int = option(2, help="the guidance network runs at 1/N of the image (1, 2 or 4)", cli=False)
    edge_aware: bool = option(True, help="multiply the gates by the full-resolution luma similarity", cli=False)
    edge_scale: float = option(10.0, help="initial lambda of the luma similarity exp(-lambda |dY|)", cli=False)
    head_width: int = option(8, help="hidden channels of the 1x1 output head", cli=False)
    gate_init_bias: float = option(-2.0, help="initial bias of the gate logits", cli=False)
    out_gain: float = option(10.0, help="initial gain from the propagated map to the logit", cli=False)

    def __post_init__(self):
        if self.connection not in CONNECTIONS:
            raise ValueError(f"connection must be one of {', '.join(CONNECTIONS)}, got {self.connection!r}")
        for name in ("guidance_width", "guidance_depth", "guidance_scale", "head_width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.guidance_scale not in (1, 2, 4):
            raise ValueError(f"guidance_scale must be 1, 2 or 4, got {self.guidance_scale}")
        if not isinstance(self.edge_aware, bool):
            raise TypeError(f"edge_aware must be a bool, got {self.edge_aware!r}")
        for name in ("edge_scale", "out_gain"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        v = self.gate_init_bias
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"gate_init_bias must be a finite number, got {v!r}")


def check_mask_inputs(image, coarse) -> None:
    """Clear errors for inputs that are not ``image (B, 3, H, W)`` and ``coarse (B, 1, H, W)``
    floating tensors."""
    check_maps(image=(image, 3), coarse=(coarse, 1))
    if image.shape[0] != coarse.shape[0] or image.shape[-2:] != coarse.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape)} and coarse {tuple(coarse.shape)} differ in batch or size")


class MaskRefinerNet(nn.Module):
    """Refine one mask on its image (see the module docstring).

    Shape:
        - image: ``(B, 3, H, W)``; coarse: ``(B, 1, H, W)``; output: ``(B, 1, H, W)`` logits

    Example:
        >>> import torch
        >>> from spn.models.mask_refiner import MaskRefinerConfig, MaskRefinerNet
        >>> net = MaskRefinerNet(MaskRefinerConfig(connection="three_way", guidance_width=4))
        >>> net(torch.rand(2, 3, 17, 23), torch.rand(2, 1, 17, 23)).shape
        torch.Size([2, 1, 17, 23])
    """

    task = "mask"
    needs_coarse = True
    num_classes = 1

    def __init__(self, cfg: MaskRefinerConfig):
        super().__init__()
        self.cfg = cfg
        self.config = dataclasses.asdict(cfg)
        self.name = "mask_refiner"
        self.k = CONNECTIONS[cfg.connection]
        self.ng = 4 * self.k
        self.guidance = UNet(4, self.ng + 1, width=cfg.guidance_width, depth=cfg.guidance_depth, out_level=0,
                             stem_stride=1)
        nn.init.normal_(self.guidance.head.weight, std=1e-3)
        nn.init.zeros_(self.guidance.head.bias)
        nn.init.constant_(self.guidance.head.bias[:self.ng], cfg.gate_init_bias)
        self.log_edge_scale = nn.Parameter(torch.tensor(math.log(cfg.edge_scale)))
        self.propagation = SpatialPropagation(cfg.connection, merge="none", normalize=None)
        self.gain = nn.Parameter(torch.tensor(float(cfg.out_gain)))
        self.head = nn.Sequential(nn.Conv2d(5, cfg.head_width, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(cfg.head_width, 1, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def guide(self, image: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gates (B, 4, k, 1, H, W), delta (B, 1, H, W))`` from the guidance network."""
        B, _, H, W = image.shape
        s, k = self.cfg.guidance_scale, self.k
        x = torch.cat([area_downsample(image, s), area_downsample(p, s)], dim=1) - 0.5
        if not torch.is_grad_enabled():  # channels-last: faster on CPU for these narrow layers
            x = x.contiguous(memory_format=torch.channels_last)
        raw = self.guidance(x).contiguous()
        h, w = raw.shape[-2:]
        logits = raw[:, :self.ng].reshape(B, 4, k, h, w)
        logits = torch.cat([logits, logits.new_zeros(B, 4, 1, h, w)], dim=2)
        low = torch.softmax(logits, dim=2)[:, :, :k].reshape(B, self.ng, h, w)
        full = bilinear_upsample(torch.cat([low, raw[:, self.ng:]], dim=1), s, (H, W))
        gates = full[:, :self.ng].reshape(B, 4, k, 1, H, W)
        if self.cfg.edge_aware:
            luma = 0.299 * image[:, 0:1] + 0.587 * image[:, 1:2] + 0.114 * image[:, 2:3]
            planes = similarity_planes(luma, k, self.log_edge_scale.exp())
            if torch.is_grad_enabled():
                sim = torch.stack([planes[off] for _, _, off in _slots(k)], dim=1).reshape(B, 4, k, 1, H, W)
                gates = gates * sim
            else:  # the same product, in place, without stacking the planes
                gates = gates.contiguous()
                for d, j, off in _slots(k):
                    gates[:, d, j].mul_(planes[off])
        return gates.contiguous(), full[:, self.ng:]

    def _head(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The 1x1 head on the four maps ``h (B, 4, H, W)`` and ``x (B, 1, H, W)``, as matrix
        products over the flattened pixels (a 1x1 convolution of so few channels is slow on CPU);
        without autograd in blocks of :data:`HEAD_BLOCK` pixels, so that the hidden maps stay in
        the cache."""
        B, _, H, W = h.shape
        c1, c2 = self.head[0], self.head[2]
        w1 = c1.weight.reshape(c1.out_channels, 5)
        w2 = c2.weight.reshape(1, -1)
        feats = torch.cat([h, x], dim=1).reshape(B, 5, H * W)
        if torch.is_grad_enabled():
            z = torch.relu(torch.matmul(w1, feats) + c1.bias[:, None])
            return (torch.matmul(w2, z) + c2.bias[:, None]).reshape(B, 1, H, W)
        out = feats.new_empty(B, 1, H * W)
        z = feats.new_empty(c1.out_channels, min(HEAD_BLOCK, H * W))
        for b in range(B):
            for i in range(0, H * W, HEAD_BLOCK):
                j = min(H * W, i + HEAD_BLOCK)
                zi = torch.addmm(c1.bias[:, None], w1, feats[b, :, i:j], out=z[:, :j - i]).relu_()
                torch.addmm(c2.bias[:, None], w2, zi, out=out[b, :, i:j])
        return out.reshape(B, 1, H, W)

    def forward(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        check_mask_inputs(image, coarse)
        p = coarse.to(image.dtype).clamp(0, 1)
        gates, delta = self.guide(image, p)
        x = (p - 0.5 + delta).contiguous()
        h = self.propagation(x, gates)  # (B, 4, 1, H, W)
        B, _, H, W = image.shape
        h = h.reshape(B, 4, H, W)
        return self.gain * h.mean(dim=1, keepdim=True) + self._head(h, x)


@register_model("mask_refiner", MaskRefinerConfig, "class-agnostic mask refiner (image + one mask -> mask)")
def mask_refiner(cfg: MaskRefinerConfig) -> MaskRefinerNet:
    """The class-agnostic mask refiner."""
    return MaskRefinerNet(cfg)
