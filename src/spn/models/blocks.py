"""Building blocks shared by the models: conv blocks and a symmetric U-Net.

Normalisation is GroupNorm (per-sample), never BatchNorm: a model then computes the same thing
in one process or split over several data-parallel processes, and in train or eval mode.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _groups(channels: int, max_groups: int = 8) -> int:
    g = min(max_groups, channels)
    while channels % g:
        g -= 1
    return g


def down_conv(cin: int, cout: int, stride: int = 1, aligned: bool = False, bias: bool = True) -> nn.Conv2d:
    """A 3x3 conv (padding 1) with ``stride``; with ``aligned`` and stride 2, a 4x4 conv (padding 1).

    Alignment: a 3x3 stride-2 conv centres output pixel ``i`` on input pixel ``2i``, but bilinear
    upsampling (``align_corners=False``) reads it at ``2i + 0.5``: half a pixel off. A 4x4
    stride-2 conv with padding 1 covers inputs ``2i-1 .. 2i+2``, centred on ``2i + 0.5`` (the
    official VOC SPN's embedding); on an even-sized input it gives exactly ``H/2`` outputs.
    """
    if aligned and stride == 2:
        return nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=bias)
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class ConvBlock(nn.Module):
    """``conv3x3 -> GroupNorm -> ReLU`` twice. ``(B, cin, H, W) -> (B, cout, H/stride, W/stride)``;
    the first conv carries the stride (a 4x4 conv when ``aligned`` and strided: :func:`down_conv`;
    ``H, W`` must then be even)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, aligned: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            down_conv(cin, cout, stride, aligned, bias=False),
            nn.GroupNorm(_groups(cout), cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(cout), cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def level_channels(width: int, depth: int, max_width: int | None = None) -> list[int]:
    """Channels per encoder level: ``width * 2**i`` for ``i = 0..depth``, capped at ``max_width``."""
    chans = [width * 2 ** i for i in range(depth + 1)]
    if max_width:
        chans = [min(c, max_width) for c in chans]
    return chans


class UNet(nn.Module):
    """A symmetric encoder-decoder with skip links.

    The stem (stride ``stem_stride``, 1 or 2) makes level 0 at ``1/stem_stride`` of the input, then
    ``depth`` stride-2 encoder levels go down to ``1/(stem_stride * 2**depth)``;
    the decoder comes back up with bilinear upsampling, concatenation of the encoder feature of the
    same level, and a :class:`ConvBlock`, stopping after ``depth - out_level`` levels, i.e. at
    ``1/f`` of the input resolution, ``f = stem_stride * 2**out_level``. A 1x1 conv maps to
    ``out_channels``.

    ``forward(x (B, in_channels, H, W)) -> (B, out_channels, ceil(H/f), ceil(W/f))``.
    Inputs of any size are accepted: they are padded (replicate) to a multiple of
    ``stem_stride * 2**depth`` and the output is cropped back.

    ``aligned``: every stride-2 conv is 4x4 (:func:`down_conv`), so each level's pixel ``i`` is
    centred where the decoder's bilinear upsampling (and a caller's) expects it. False keeps the
    3x3 stride-2 convs of older checkpoints (half a pixel off per level).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 16, depth: int = 3,
                 out_level: int = 0, max_width: int | None = 256, stem_stride: int = 1,
                 aligned: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if not 0 <= out_level <= depth:
            raise ValueError(f"out_level must lie in [0, depth={depth}], got {out_level}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        self.depth = depth
        self.out_level = out_level
        self.stem_stride = stem_stride
        ch = level_channels(width, depth, max_width)
        self.aligned = aligned
        self.stem = ConvBlock(in_channels, ch[0], stride=stem_stride, aligned=aligned)
        self.down = nn.ModuleList(ConvBlock(ch[i], ch[i + 1], stride=2, aligned=aligned) for i in range(depth))
        # decoder level i goes from level i+1 to level i, for i = depth-1 .. out_level
        self.up = nn.ModuleList(ConvBlock(ch[i + 1] + ch[i], ch[i]) for i in range(out_level, depth))
        self.head = nn.Conv2d(ch[out_level], out_channels, 1)
        self.out_channels = out_channels
        self.feature_channels = ch[out_level]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder features ``(B, feature_channels, H/2**out_level, W/2**out_level)`` before the head
        (``x`` already padded to a multiple of ``2**depth``)."""
        skips = [self.stem(x)]
        for d in self.down:
            skips.append(d(skips[-1]))
        y = skips[-1]
        for i in reversed(range(self.out_level, self.depth)):
            s = skips[i]
            y = F.interpolate(y, size=s.shape[-2:], mode="bilinear", align_corners=False)
            y = self.up[i - self.out_level](torch.cat([y, s], dim=1))
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        m = self.stem_stride * 2 ** self.depth
        ph, pw = (-H) % m, (-W) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        y = self.head(self.features(x))
        f = self.stem_stride * 2 ** self.out_level
        return y[..., : math.ceil(H / f), : math.ceil(W / f)]


def check_maps(**named: tuple[torch.Tensor, int]) -> None:
    """Clear errors for model inputs that are not floating ``(B, C, H, W)`` tensors with the
    given channel counts: ``check_maps(image=(image, 3), coarse=(coarse, 1))``."""
    for name, (t, c) in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4 or t.shape[1] != c:
            raise ValueError(f"{name} must be (B, {c}, H, W), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
