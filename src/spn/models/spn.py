"""The SPN refinement network (paper Sec. 4-5): guidance U-Net + spatial propagation."""
from __future__ import annotations

import dataclasses
import torch
import torch.nn.functional as F
from torch import nn

from ..nn import CONNECTIONS, SpatialPropagation
from .baseline import check_image
from .blocks import UNet, down_conv
from .config import SPNConfig
from .registry import register_model
from ..image.resample import bilinear_upsample


class GuidanceNet(nn.Module):
    """The guidance network: a symmetric U-Net (skip links) from the RGB image (optionally
    concatenated with the coarse scores) to the gates of the four directions.

    ``forward(image (B, 3, H, W), coarse (B, K, H, W) or None) -> gates (B, 4*k*cg, h, w)`` with
    ``h = ceil(H/scale)``; channel index ``(d*k + j)*cg + c`` (direction d, slot j, channel c), the
    layout of :func:`spn.nn.reshape_gates`. The output layer starts with tiny weights and zero bias,
    so the initial gates are near zero and the propagation starts close to the identity.
    """

    def __init__(self, k: int, cg: int, width: int = 16, depth: int = 3, scale: int = 2,
                 coarse_channels: int = 0, init_std: float = 1e-3, aligned: bool = False):
        super().__init__()
        self.k, self.cg, self.scale = k, cg, scale
        self.coarse_channels = coarse_channels
        # the stem carries the stride: no full-resolution features are computed when scale = 2
        self.unet = UNet(3 + coarse_channels, 4 * k * cg, width=width, depth=depth, out_level=0,
                         stem_stride=scale, aligned=aligned)
        nn.init.normal_(self.unet.head.weight, std=init_std)
        nn.init.zeros_(self.unet.head.bias)

    def forward(self, image: torch.Tensor, coarse: torch.Tensor | None = None) -> torch.Tensor:
        x = image - 0.5
        if self.coarse_channels:
            if coarse is None:
                raise ValueError("this guidance network takes the coarse scores as input; got coarse=None")
            x = torch.cat([x, coarse], dim=1)
        return self.unet(x)


class SPNRefiner(nn.Module):
    """Refine coarse class probabilities with a learned spatial propagation.

    1. embed: ``coarse (B, K, H, W)`` -> ``x (B, C', ceil(H/s), ceil(W/s))`` by a conv with stride
       ``s`` (``scale``) and a 1x1 conv. With ``aligned`` (the default) and ``s = 2`` it is a 4x4
       conv (padding 1, the input edge-padded to an even size), so pixel ``i`` is centred on
       ``2i + 0.5``: where step 4's bilinear upsampling reads it (no half-pixel shift);
    2. gates: ``GuidanceNet(image[, coarse])`` -> ``(B, 4*k*Cg, H/s, W/s)``, ``Cg = C'`` (or 1 with
       ``shared_gates``);
    3. ``h = SpatialPropagation(x, gates)`` (normalize "clip", merge "max"), ``propagations`` times;
    4. back to full resolution: bilinear upsampling by 2, cropped to ``H, W``
       (:func:`spn.image.resample.bilinear_upsample`), 3x3 conv + ReLU, 1x1 conv to K logits;
    5. ``residual``: ``logits += log(coarse + eps)``. The last conv starts at zero, so the untrained
       network returns ``log(coarse + eps)``: its softmax is the coarse input.

    ``connection`` is ``"three_way"`` (model "spn_three_way") or ``"one_way"`` ("spn_one_way"): the
    two differ only in the number of gates per pixel and direction (k = 3 or 1).

    Shape:
        - image: ``(B, 3, H, W)``, any ``H, W``
        - coarse: ``(B, K, H, W)`` class probabilities
        - output: ``(B, K, H, W)`` logits

    Example:
        >>> import torch
        >>> from spn.models import SPNConfig, SPNRefiner
        >>> net = SPNRefiner(SPNConfig.from_name("fast", num_classes=3), "three_way").eval()
        >>> coarse = torch.softmax(torch.randn(1, 3, 30, 45), 1)
        >>> logits = net(torch.rand(1, 3, 30, 45), coarse)
        >>> logits.shape, bool((logits.argmax(1) == coarse.argmax(1)).all())  # untrained: the coarse input
        (torch.Size([1, 3, 30, 45]), True)
    """

    needs_coarse = True

    def __init__(self, cfg: SPNConfig, connection: str = "three_way"):
        super().__init__()
        if connection not in CONNECTIONS:
            raise ValueError(f"unknown connection {connection!r}; valid: {', '.join(CONNECTIONS)}")
        self.cfg = cfg
        self.config = dataclasses.asdict(cfg)
        self.connection = connection
        self.name = f"spn_{connection}"
        self.num_classes = cfg.num_classes
        k = CONNECTIONS[connection]
        C = cfg.channels
        cg = 1 if cfg.shared_gates else C
        s = cfg.scale
        self.embed = nn.Sequential(
            down_conv(cfg.num_classes, C, s, cfg.aligned),
            nn.ReLU(inplace=True),
            nn.Conv2d(C, C, 1),
        )
        self.guidance = GuidanceNet(k, cg, width=cfg.guidance_width, depth=cfg.guidance_depth, scale=s,
                                    coarse_channels=cfg.num_classes if cfg.guidance_coarse else 0,
                                    init_std=cfg.gate_init_std, aligned=cfg.aligned)
        self.propagation = SpatialPropagation(connection, merge=cfg.merge, normalize=cfg.normalize)
        self.head = nn.Sequential(
            nn.Conv2d(C, C, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(C, cfg.num_classes, 1),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def check_inputs(self, image, coarse) -> None:
        check_image(image)
        if coarse is None:
            raise ValueError(f"model {self.name!r} refines a coarse segmentation: coarse (B, K, H, W) is required")
        if not isinstance(coarse, torch.Tensor):
            raise TypeError(f"coarse must be a torch.Tensor, got {type(coarse).__name__}")
        B, _, H, W = image.shape
        if tuple(coarse.shape) != (B, self.num_classes, H, W):
            raise ValueError(f"coarse must be (B, K, H, W) = {(B, self.num_classes, H, W)} for image "
                             f"{tuple(image.shape)} and K = {self.num_classes}, got {tuple(coarse.shape)}")

    def gates(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Flat gates ``(B, 4*k*Cg, ceil(H/s), ceil(W/s))`` from the guidance network."""
        return self.guidance(image, coarse if self.cfg.guidance_coarse else None)

    def forward(self, image: torch.Tensor, coarse: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(image, coarse)
        coarse = coarse.to(image.dtype)
        H, W = image.shape[-2:]
        if self.cfg.aligned and self.cfg.scale == 2 and (H % 2 or W % 2):
            x = self.embed(F.pad(coarse, (0, W % 2, 0, H % 2), mode="replicate"))
        else:
            x = self.embed(coarse)
        g = self.gates(image, coarse)
        if g.shape[-2:] != x.shape[-2:]:  # cannot happen with the padding rules; keep a clear error
            raise RuntimeError(f"gates {tuple(g.shape)} and hidden map {tuple(x.shape)} differ in size")
        h = x
        for _ in range(self.cfg.propagations):
            h = self.propagation(h, g)
        if self.cfg.scale != 1 and self.cfg.aligned:
            h = bilinear_upsample(h, self.cfg.scale, (H, W))
        elif self.cfg.scale != 1:  # the unaligned ablation (3x3 stride-2 embedding)
            h = F.interpolate(h, size=(H, W), mode="bilinear", align_corners=False)
        logits = self.head(h)
        if self.cfg.residual:
            logits = logits + torch.log(coarse.clamp_min(0) + self.cfg.eps)
        return logits


@register_model("spn_one_way", SPNConfig, "SPN refiner, one-way connection (k = 1)")
def spn_one_way(cfg: SPNConfig) -> SPNRefiner:
    """The SPN refiner with the one-way connection (one gate per pixel and direction)."""
    return SPNRefiner(cfg, "one_way")


@register_model("spn_three_way", SPNConfig, "SPN refiner, three-way connection (k = 3)")
def spn_three_way(cfg: SPNConfig) -> SPNRefiner:
    """The SPN refiner with the three-way connection (three gates per pixel and direction)."""
    return SPNRefiner(cfg, "three_way")
