"""Procedural segmentation scenes: the embedded dataset of the demo and the tests.

Each scene is a textured background with 3..6 objects of five classes painted one over the
other (later objects occlude earlier ones):

====  ==========  ===================================  =====================================
id    name        geometry                             appearance
====  ==========  ===================================  =====================================
0     background  whole image                          muted colour, gradient, soft waves
1     disc        rotated ellipse                      red, radial shading
2     box         rotated rectangle                    blue, checkerboard
3     bar         long thin rotated bar (1.5-4 px      yellow, stripes across its length
                  half-width at 256 px): thin parts
4     ring        annulus or crescent (curved          green, speckle noise
                  boundaries, holes)
5     star        star-shaped blob r(t) = R(1+a cos)   purple, diagonal stripes
====  ==========  ===================================  =====================================

Every object's colour varies per instance; mild Gaussian noise is added to the whole image.
The mask is computed from the same geometry as the paint, so it is exact.

**The hard family** (``--data synthetic:hard``, ``SyntheticScenes(family="hard")``,
:func:`render_hard_scene`) has the same classes and geometries, but colour edges lie:

- the background is cluttered: sharp-edged colour regions (half-planes, flat blobs shaped like
  the objects, high-contrast stripe patches) give strong edges that are not object boundaries;
- an object's colour is the local background colour plus a small offset (low colour contrast at
  its boundary); its class shows in its texture (the same per-class patterns, stronger), and
  "camouflaged" objects (35%) take the background colour exactly, so only the texture tells;
- the boxes' checks are high-contrast (strong edges inside objects), the bars are thinner
  (1-3 px half-width at 256 px), and there are more objects (4-8), hence more occlusions. Item ``i`` of
split ``s`` depends only on ``(seed, s, i)`` (``numpy.random.default_rng([seed, s_id, i])``,
``train`` = 0, ``val`` = 1, ``test`` = 2: disjoint streams). Sizes scale with the image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .base import SegmentationDataset

SYNTHETIC_CLASSES = ["background", "disc", "box", "bar", "ring", "star"]
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_NUM_IMAGES = {"train": 64, "val": 16, "test": 16}

# base colours (RGB in [0, 1]) of the object classes: distinct hues, saturated
_COLOURS = np.array([
    [0.0, 0.0, 0.0],      # background: drawn separately
    [0.85, 0.22, 0.20],   # disc: red
    [0.18, 0.35, 0.85],   # box: blue
    [0.92, 0.80, 0.15],   # bar: yellow
    [0.20, 0.72, 0.30],   # ring: green
    [0.68, 0.25, 0.80],   # star: purple
], dtype=np.float32)


@dataclass
class SyntheticConfig:
    """Scene parameters (sizes are for a 256 px image and scale with ``min(H, W) / 256``)."""

    min_objects: int = 3
    max_objects: int = 6
    noise: float = 0.02
    colour_jitter: float = 0.06


def _rot(xx, yy, cx, cy, theta):
    c, s = math.cos(theta), math.sin(theta)
    dx, dy = xx - cx, yy - cy
    return dx * c + dy * s, -dx * s + dy * c


def render_scene(rng: np.random.Generator, height: int, width: int,
                 cfg: SyntheticConfig = SyntheticConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: ``(image float32 (H, W, 3) in [0, 1], mask int64 (H, W))``."""
    H, W = int(height), int(width)
    s = min(H, W) / 256.0
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    xx += 0.5
    yy += 0.5

    # background: muted colour, linear gradient, two soft waves
    base = rng.uniform(0.35, 0.6) + rng.uniform(-0.06, 0.06, size=3)
    gx, gy = rng.uniform(-0.12, 0.12, size=2)
    shade = gx * (xx / W - 0.5) + gy * (yy / H - 0.5)
    for _ in range(2):
        f = rng.uniform(1.0, 3.0) * 2 * math.pi / (64 * s)
        t = rng.uniform(0, math.pi)
        shade = shade + 0.035 * np.sin(f * (xx * math.cos(t) + yy * math.sin(t)) + rng.uniform(0, 6.3))
    image = np.clip(base[None, None, :] + shade[:, :, None], 0, 1).astype(np.float32)
    mask = np.zeros((H, W), dtype=np.int64)

    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    classes = list(rng.permutation(5) + 1)
    while len(classes) < n:
        classes.append(int(rng.integers(1, 6)))
    classes = classes[:n]

    for cls in classes:
        cls = int(cls)
        cx = rng.uniform(0.1, 0.9) * W
        cy = rng.uniform(0.1, 0.9) * H
        theta = rng.uniform(0, math.pi)
        colour = np.clip(_COLOURS[cls] + rng.normal(0, cfg.colour_jitter, size=3), 0.05, 0.95).astype(np.float32)
        u, v = _rot(xx, yy, cx, cy, theta)
        if cls == 1:  # disc / ellipse, radial shading
            a, b = rng.uniform(16, 48, size=2) * s
            r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
            region = r <= 1.0
            tex = 0.78 + 0.22 * (1 - np.clip(r, 0, 1))
        elif cls == 2:  # rotated box, checks
            hw, hh = rng.uniform(14, 44, size=2) * s
            region = (np.abs(u) <= hw) & (np.abs(v) <= hh)
            p = rng.uniform(7, 14) * s
            tex = np.where(((np.floor(u / p) + np.floor(v / p)) % 2) == 0, 1.0, 0.78)
        elif cls == 3:  # thin bar, stripes across
            hl = rng.uniform(30, 100) * s
            hw = rng.uniform(1.5, 4.0) * s
            region = (np.abs(u) <= hl) & (np.abs(v) <= hw)
            p = rng.uniform(6, 12) * s
            tex = 0.88 + 0.12 * np.sin(2 * math.pi * u / p)
        elif cls == 4:  # ring or crescent
            R = rng.uniform(20, 50) * s
            r2 = u * u + v * v
            if rng.random() < 0.6:
                ri = R * rng.uniform(0.45, 0.72)
                region = (r2 <= R * R) & (r2 >= ri * ri)
            else:
                off = R * rng.uniform(0.35, 0.6)
                ri = R * rng.uniform(0.8, 1.0)
                region = (r2 <= R * R) & ((u - off) ** 2 + v * v > ri * ri)
            tex = 0.86 + 0.1 * rng.standard_normal((H, W), dtype=np.float32)
        else:  # star / blob
            R = rng.uniform(18, 42) * s
            k = int(rng.integers(5, 8))
            amp = rng.uniform(0.25, 0.5)
            rad = np.sqrt(u * u + v * v)
            ang = np.arctan2(v, u)
            region = rad <= R * (1 + amp * np.cos(k * ang))
            p = rng.uniform(6, 12) * s
            tex = 0.86 + 0.14 * np.sin(2 * math.pi * (xx + yy) / p)
        if not region.any():
            continue
        paint = colour[None, None, :] * np.asarray(tex, dtype=np.float32)[:, :, None]
        image[region] = paint[region]
        mask[region] = cls

    if cfg.noise > 0:
        image += cfg.noise * rng.standard_normal((H, W, 3), dtype=np.float32)
    np.clip(image, 0, 1, out=image)
    return image, mask


def _hard_background(rng, xx, yy, H, W, s):
    """A cluttered background: flat colour, half-plane steps, flat object-shaped blobs, stripes."""
    base = rng.uniform(0.3, 0.65, size=3)
    image = np.broadcast_to(base, (H, W, 3)).astype(np.float32).copy()
    for _ in range(int(rng.integers(3, 6))):  # half-planes: long straight edges
        t = rng.uniform(0, 2 * math.pi)
        c = rng.uniform(0.2, 0.8) * np.array([W, H])
        side = (xx - c[0]) * math.cos(t) + (yy - c[1]) * math.sin(t) > 0
        image[side] += rng.uniform(-0.18, 0.18, size=3).astype(np.float32)
    for _ in range(int(rng.integers(3, 7))):  # flat blobs shaped like objects (but background)
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        u, v = _rot(xx, yy, cx, cy, rng.uniform(0, math.pi))
        a, b = rng.uniform(10, 40, size=2) * s
        if rng.random() < 0.5:
            region = (u / a) ** 2 + (v / b) ** 2 <= 1
        else:
            region = (np.abs(u) <= a) & (np.abs(v) <= b)
        image[region] = np.clip(rng.uniform(0.15, 0.85, size=3), 0, 1).astype(np.float32)
    for _ in range(int(rng.integers(1, 4))):  # high-contrast stripe patches
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        u, v = _rot(xx, yy, cx, cy, rng.uniform(0, math.pi))
        a, b = rng.uniform(20, 60, size=2) * s
        region = (np.abs(u) <= a) & (np.abs(v) <= b)
        p = rng.uniform(5, 12) * s
        stripes = (np.sin(2 * math.pi * u / p) > 0).astype(np.float32)
        amp = rng.uniform(0.2, 0.35)
        image[region] += (amp * (stripes[region] - 0.5))[:, None]
    return np.clip(image, 0, 1)


def render_hard_scene(rng: np.random.Generator, height: int, width: int,
                      cfg: SyntheticConfig = SyntheticConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene of the hard family (see the module docstring): ``(image, mask)`` as
    :func:`render_scene`."""
    H, W = int(height), int(width)
    s = min(H, W) / 256.0
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    xx += 0.5
    yy += 0.5
    image = _hard_background(rng, xx, yy, H, W, s)
    mask = np.zeros((H, W), dtype=np.int64)
    lo, hi = cfg.min_objects + 1, cfg.max_objects + 2
    n = int(rng.integers(lo, hi + 1))
    classes = list(rng.permutation(5) + 1)
    while len(classes) < n:
        classes.append(int(rng.integers(1, 6)))
    for cls in classes[:n]:
        cls = int(cls)
        cx = rng.uniform(0.1, 0.9) * W
        cy = rng.uniform(0.1, 0.9) * H
        theta = rng.uniform(0, math.pi)
        u, v = _rot(xx, yy, cx, cy, theta)
        if cls == 1:  # ellipse, radial shading (strong)
            a, b = rng.uniform(16, 48, size=2) * s
            r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
            region = r <= 1.0
            tex = 0.7 + 0.45 * (1 - np.clip(r, 0, 1))
        elif cls == 2:  # box, high-contrast checks
            hw, hh = rng.uniform(14, 44, size=2) * s
            region = (np.abs(u) <= hw) & (np.abs(v) <= hh)
            p = rng.uniform(5, 10) * s
            tex = np.where(((np.floor(u / p) + np.floor(v / p)) % 2) == 0, 1.25, 0.75)
        elif cls == 3:  # thin bar, stripes across
            hl = rng.uniform(30, 100) * s
            hw = rng.uniform(1.0, 3.0) * s
            region = (np.abs(u) <= hl) & (np.abs(v) <= hw)
            p = rng.uniform(4, 8) * s
            tex = 1.0 + 0.3 * np.sin(2 * math.pi * u / p)
        elif cls == 4:  # ring or crescent, speckle
            R = rng.uniform(20, 50) * s
            r2 = u * u + v * v
            if rng.random() < 0.6:
                ri = R * rng.uniform(0.45, 0.72)
                region = (r2 <= R * R) & (r2 >= ri * ri)
            else:
                off = R * rng.uniform(0.35, 0.6)
                ri = R * rng.uniform(0.8, 1.0)
                region = (r2 <= R * R) & ((u - off) ** 2 + v * v > ri * ri)
            tex = 1.0 + 0.25 * rng.standard_normal((H, W), dtype=np.float32)
        else:  # star, diagonal stripes
            R = rng.uniform(18, 42) * s
            k = int(rng.integers(5, 8))
            amp = rng.uniform(0.25, 0.5)
            rad = np.sqrt(u * u + v * v)
            ang = np.arctan2(v, u)
            region = rad <= R * (1 + amp * np.cos(k * ang))
            p = rng.uniform(5, 9) * s
            tex = 1.0 + 0.3 * np.sin(2 * math.pi * (xx + yy) / p)
        if not region.any():
            continue
        local = image[region].mean(axis=0)  # the colour under the object: low contrast at its edge
        if rng.random() < 0.35:  # camouflage: the background itself, modulated by the texture
            paint = image * np.asarray(tex, dtype=np.float32)[:, :, None]
        else:
            colour = np.clip(local + rng.uniform(-0.08, 0.08, size=3) + 0.4 * cfg.colour_jitter
                             * (_COLOURS[cls] - 0.5), 0.05, 0.95).astype(np.float32)
            paint = colour[None, None, :] * np.asarray(tex, dtype=np.float32)[:, :, None]
        image[region] = paint[region]
        mask[region] = cls
    noise = max(cfg.noise, 0.03)
    image = image + noise * rng.standard_normal((H, W, 3), dtype=np.float32)
    return np.clip(image, 0, 1).astype(np.float32), mask


#: the scene families: ``--data synthetic`` (simple) and ``--data synthetic:hard``
FAMILIES = {"simple": render_scene, "hard": render_hard_scene}


class SyntheticScenes(SegmentationDataset):
    """Seeded procedural scenes (see the module docstring).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint random streams).
        num_images: items in the split (default 64 train, 16 val, 16 test).
        size: ``int`` (square) or ``(H, W)``; default 256.
        seed: base seed.
        coarse: ``"gt-downsample:F"`` (default ``gt-downsample:8``) or ``"none"``.
        transform: optional ``item -> item`` callable.
        family: ``"simple"`` (the default scenes) or ``"hard"`` (cluttered backgrounds, low-contrast
            and camouflaged objects: :func:`render_hard_scene`); ``--data synthetic:hard``.
    """

    def __init__(self, split: str = "train", num_images: int | None = None, size=256, seed: int = 0,
                 coarse: str | None = None, transform=None, config: SyntheticConfig | None = None,
                 family: str = "simple"):
        if family not in FAMILIES:
            raise ValueError(f"unknown synthetic family {family!r}; valid: {', '.join(FAMILIES)}")
        if split not in SPLIT_IDS:
            raise ValueError(f"unknown split {split!r} for the synthetic dataset; valid: {list(SPLIT_IDS)}")
        if coarse == "files":
            raise ValueError("the synthetic dataset has no coarse files; use 'gt-downsample:F' or 'none'")
        super().__init__(len(SYNTHETIC_CLASSES), SYNTHETIC_CLASSES,
                         "gt-downsample:8" if coarse is None else coarse, transform)
        if num_images is None:
            num_images = DEFAULT_NUM_IMAGES[split]
        if int(num_images) < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        if isinstance(size, (int, np.integer)):
            size = (int(size), int(size))
        size = tuple(int(v) for v in size)
        if len(size) != 2 or min(size) < 16:
            raise ValueError(f"size must be an int or (H, W) with both >= 16, got {size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.split = split
        self.family = family
        self.num_images = int(num_images)
        self.size = size
        self.seed = int(seed)
        self.config = config or SyntheticConfig()
        if not 1 <= self.config.min_objects <= self.config.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.config}")

    def __len__(self) -> int:
        return self.num_images

    def info(self) -> dict:
        d = super().info()
        d.update(split=self.split, seed=self.seed, image_size=list(self.size))
        if self.family != "simple":
            d.update(family=self.family)
        return d

    def __getitem__(self, index: int) -> dict:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += self.num_images
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} synthetic images")
        rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], index])
        image, mask = FAMILIES[self.family](rng, self.size[0], self.size[1], self.config)
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        tag = "synthetic" if self.family == "simple" else f"synthetic_{self.family}"
        return self._finish(image_t, torch.from_numpy(mask), None, f"{tag}_{self.split}_{index:05d}")
