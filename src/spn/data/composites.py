"""Composites for the class-agnostic mask refiner (``--task mask``, ``--data composites:SOURCE``).

Every sample is made, deterministically from a seed, out of real photographs (a
:class:`~spn.data.photos.PhotoDataset`: ``SOURCE`` is ``skimage`` or a folder, as for
``photos:SOURCE``):

- **background**: a random crop of one photo, at a random scale, randomly flipped;
- **object**: when the photos' folder holds cut-outs (a corpus built with the stamps of
  ``tuxpaint-stamps-default``, :mod:`spn.data.cutouts`), one time in two a real object cut out
  by hand (:func:`place_cutout`: its own texture and its human-made alpha, scaled to cover 3 to
  45 % of the frame, flipped, placed anywhere with its centre inside, so it may leave the
  frame; with ``large``, a share, that share of them covers 45 to 90 % of it, centred in its
  middle 40 %: an object that fills the photo); otherwise a procedural shape, as follows;
- **object shape** (:func:`object_alpha`): a smooth star-shaped blob, a polygon with sharp
  corners, a union of two or three of them, or a region of another photo (its blurred luminance
  above a random level, inside a random ellipse); then thin parts (lines 1-5 pixels wide, bent
  once) and holes. Shapes are drawn at 4x and area-averaged: an anti-aliased coverage ``alpha``;
- **object texture**: a crop of another photo, or (camouflage) of the same photo elsewhere;
  optional colour gain, shading ramp and, in the low-contrast case, its mean colour moved
  towards the background's;
- **other objects** (with cut-outs, one time in two): one to three other cut-outs pasted next
  to the object, behind it or (one time in three) in front of it, occluding it; the target is
  then the visible part;
- **composite**: ``alpha * object + (1 - alpha) * background``, ``alpha`` optionally blurred
  (defocus, sigma <= 1.5 px), plus optional sensor noise. The target is ``alpha >= 0.5`` of the
  unblurred coverage;
- **coarse mask** (:func:`perturb_mask`, after CascadePSP's perturbations): dilation or erosion,
  boundary noise (a smooth random field added before thresholding), downsampling by 4 to 16 and
  upsampling back (bilinear: soft, or nearest: blocky), false blobs and holes near the
  boundary; then a hard (0/1) or soft (blurred, possibly under-confident) version. One
  composite in six gets a mild version (a nearly right mask). With ``near`` (a share; default
  0), that share of composites gets a mask whose boundary is already where it should be
  (:func:`near_mask`: the target itself, moved by at most one pixel or resampled by 2 or 3,
  hard or blurred), to teach a refiner to leave a right boundary where it is. With ``grabcut``
  (a share; default 0), that share of composites first gets OpenCV's GrabCut from the target's
  enlarged box (:func:`spn.data.grabcut.grabcut_mask`, a hard mask with a real segmenter's
  errors; needs ``opencv-python-headless``), kept when its IoU with the target is at least
  :data:`GRABCUT_MIN_IOU` (the perturbations' own floor), else the composite falls back to the
  perturbations above.

Items: ``{"image": (3, H, W) float32 in [0, 1], "coarse": (1, H, W) float32 in [0, 1], "mask":
(H, W) int64 in {0, 1}, "name": str}``. Item ``i`` of a dataset depends only on ``(seed,
split, epoch, i)``; :class:`CompositePatches` draws training samples the same way (one fresh
composite per index and epoch), so :mod:`spn.data.sampling` runs it as it runs other patches.

Example:
    >>> import torch
    >>> from spn.data.composites import perturb_mask, object_alpha
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> alpha = object_alpha(rng, (64, 64))
    >>> alpha.shape, bool(alpha.min() >= 0 and alpha.max() <= 1)
    (torch.Size([64, 64]), True)
    >>> coarse = perturb_mask((alpha >= 0.5).float(), np.random.default_rng(1))
    >>> coarse.shape, bool(coarse.min() >= 0 and coarse.max() <= 1)
    (torch.Size([64, 64]), True)
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from .base import check_index
from .coarse import gaussian_blur
from .patches import CropSampler

__all__ = ["GRABCUT", "GRABCUT_MIN_IOU", "LARGE", "NEAR", "near_mask", "CompositeDataset", "CompositePatches",
           "compose", "dilate", "erode", "object_alpha", "mask_iou", "perturb_mask", "place_cutout", "resample_blocky",
           "SPLIT_CODES"]

#: the split's number in the seed of its items (train and val never share a stream)
SPLIT_CODES = {"train": 1, "val": 2, "test": 3, "all": 4}
SUPERSAMPLE = 4
#: the default share of composites whose coarse mask is nearly exact (:func:`near_mask`): none.
#: ``near=1/6`` was tried for the shipped refiner: it kept right boundaries better but refined
#: wrong ones worse, and scored lower on held-out composites (docs/mask-refiner.md)
NEAR = 0.0
#: the default share of cut-out objects that fill the frame (45 to 90 % of it, :data:`LARGE_COVER`): none.
#: ``large=0.25`` (10000 steps) and ``large=0.1`` (16000 steps) were tried: better on objects that
#: fill the photo, worse on the held-out composites; the ``large=0.1`` run is the second shipped
#: file, used only for masks that cover most of the photo (docs/mask-refiner.md)
LARGE = 0.0
LARGE_COVER = (0.45, 0.9)
#: the default share of composites whose coarse mask is GrabCut's (:func:`spn.data.grabcut.grabcut_mask`): none
GRABCUT = 0.0
#: GrabCut's mask is used only when its IoU with the target is at least this (``perturb_mask``'s ``min_iou``)
GRABCUT_MIN_IOU = 0.4


# ----------------------------------------------------------------------------------------------
# morphology and resampling of (H, W) masks
def dilate(mask: torch.Tensor, ry: int, rx: int | None = None) -> torch.Tensor:
    """Maximum over a ``(2 ry + 1) x (2 rx + 1)`` rectangle: ``(H, W)`` float -> ``(H, W)``."""
    rx = ry if rx is None else rx
    if ry <= 0 and rx <= 0:
        return mask
    x = mask[None, None]
    if rx > 0:  # separable: a row maximum, then a column maximum
        x = F.max_pool2d(x, (1, 2 * rx + 1), stride=1, padding=(0, rx))
    if ry > 0:
        x = F.max_pool2d(x, (2 * ry + 1, 1), stride=1, padding=(ry, 0))
    return x[0, 0]


def erode(mask: torch.Tensor, ry: int, rx: int | None = None) -> torch.Tensor:
    """Minimum over the rectangle of :func:`dilate` (the image frame counts as inside)."""
    return 1.0 - dilate(1.0 - mask, ry, rx)


def resample_blocky(mask: torch.Tensor, factor: int, soft: bool) -> torch.Tensor:
    """Area-downsample ``(H, W)`` by ``factor`` and upsample back: bilinear (``soft``) or nearest
    (blocky steps of ``factor`` pixels)."""
    H, W = mask.shape
    h, w = max(1, math.ceil(H / factor)), max(1, math.ceil(W / factor))
    low = F.adaptive_avg_pool2d(mask[None, None], (h, w))
    if not soft:
        low = (low >= 0.5).float()
        return F.interpolate(low, size=(H, W), mode="nearest")[0, 0]
    return F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)


def _smooth_noise(rng: np.random.Generator, size, cell: float) -> torch.Tensor:
    """A smooth random field in about [-1, 1]: uniform noise on a grid of ``cell`` pixels,
    upsampled bicubically."""
    H, W = size
    h, w = max(2, int(H / cell) + 2), max(2, int(W / cell) + 2)
    low = torch.from_numpy(rng.uniform(-1, 1, (1, 1, h, w)).astype(np.float32))
    return F.interpolate(low, size=(H, W), mode="bicubic", align_corners=False)[0, 0].clamp(-1.5, 1.5)


# ----------------------------------------------------------------------------------------------
# object shapes
def _star(rng, cx, cy, r0, n=96, smooth=True):
    """Vertices of a star-shaped outline around ``(cx, cy)``: radius ``r0 (1 + sum_k a_k cos(k t
    + p_k))`` (smooth), or a polygon of 3-10 random vertices."""
    if smooth:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        r = np.ones_like(t)
        for k in range(2, 7):
            r += rng.uniform(0, 0.35 / k ** 0.8) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    else:
        m = int(rng.integers(3, 11))
        t = np.sort(rng.uniform(0, 2 * np.pi, m))
        r = rng.uniform(0.45, 1.0, m)
    r = np.clip(r, 0.2, None) * r0
    ar = rng.uniform(0.6, 1.0)  # a random squash and rotation
    rot = rng.uniform(0, 2 * np.pi)
    x, y = r * np.cos(t), r * np.sin(t) * ar
    xs = cx + x * math.cos(rot) - y * math.sin(rot)
    ys = cy + x * math.sin(rot) + y * math.cos(rot)
    return list(zip(xs.tolist(), ys.tolist()))


def _draw_shapes(rng: np.random.Generator, size) -> Image.Image:
    """Blobs / polygons, thin parts and holes drawn on an ``L`` image ``SUPERSAMPLE`` times larger."""
    H, W = size
    q = SUPERSAMPLE
    img = Image.new("L", (W * q, H * q), 0)
    d = ImageDraw.Draw(img)
    side = min(H, W) * q
    parts = 1 if rng.random() < 0.6 else int(rng.integers(2, 4))
    centres = []
    for _ in range(parts):
        cx = rng.uniform(0.25, 0.75) * W * q
        cy = rng.uniform(0.25, 0.75) * H * q
        r0 = rng.uniform(0.12, 0.35) * side / (1 + 0.3 * (parts - 1))
        d.polygon(_star(rng, cx, cy, r0, smooth=rng.random() < 0.6), fill=255)
        centres.append((cx, cy, r0))
    if rng.random() < 0.5:  # thin parts: legs, antennae, handles, branches
        for _ in range(int(rng.integers(1, 5))):
            cx, cy, r0 = centres[int(rng.integers(len(centres)))]
            a = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.6, 1.8) * r0
            mid = (cx + math.cos(a) * length * 0.6, cy + math.sin(a) * length * 0.6)
            b = a + rng.uniform(-0.8, 0.8)
            end = (mid[0] + math.cos(b) * length * 0.6, mid[1] + math.sin(b) * length * 0.6)
            width = int(round(rng.uniform(1, 5) * q))
            d.line([(cx, cy), mid, end], fill=255, width=width, joint="curve")
    if rng.random() < 0.2:  # holes
        for _ in range(int(rng.integers(1, 3))):
            cx, cy, r0 = centres[int(rng.integers(len(centres)))]
            hx = cx + rng.uniform(-0.4, 0.4) * r0
            hy = cy + rng.uniform(-0.4, 0.4) * r0
            d.polygon(_star(rng, hx, hy, rng.uniform(0.1, 0.35) * r0, smooth=rng.random() < 0.7), fill=0)
    return img


def _region_alpha(rng: np.random.Generator, photo: torch.Tensor) -> torch.Tensor:
    """A region of a real photo ``(3, H, W)``: its blurred luminance above (or below) a random
    quantile, inside a random ellipse; soft edges from a steep ramp around the level."""
    H, W = photo.shape[-2:]
    luma = (0.299 * photo[0] + 0.587 * photo[1] + 0.114 * photo[2])[None]
    luma = gaussian_blur(luma, float(rng.uniform(1.0, 3.0)))[0]
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    cy, cx = rng.uniform(0.35, 0.65) * H, rng.uniform(0.35, 0.65) * W
    ry, rx = rng.uniform(0.2, 0.45) * H, rng.uniform(0.2, 0.45) * W
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    vals = luma[inside]
    if vals.numel() < 16:
        return torch.zeros(H, W)
    level = float(torch.quantile(vals, float(rng.uniform(0.3, 0.7))))
    sign = 1.0 if rng.random() < 0.5 else -1.0
    ramp = ((luma - level) * sign / 0.01 + 0.5).clamp(0, 1)
    return ramp * inside.float()


def object_alpha(rng: np.random.Generator, size, photo: torch.Tensor | None = None) -> torch.Tensor:
    """An anti-aliased object coverage ``(H, W)`` in [0, 1] (see the module docstring); with
    ``photo`` (a ``(3, H, W)`` crop), one time in four a region of that photo."""
    H, W = size
    if photo is not None and rng.random() < 0.25:
        a = _region_alpha(rng, photo)
        if float((a >= 0.5).float().mean()) > 0.02:
            return a
    img = _draw_shapes(rng, (H, W))
    a = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return F.avg_pool2d(a[None, None], SUPERSAMPLE)[0, 0]


def place_cutout(rng: np.random.Generator, cutouts, size, centre=None, cover=(0.03, 0.45)):
    """One cut-out ``(4, h, w)`` uint8 RGBA (of the list ``cutouts``) scaled so that its alpha
    covers a random fraction in ``cover`` of the ``size = (H, W)`` frame (at most 1.3 times the
    frame's side), flipped at random and placed with its centre at ``centre = (y, x)`` (default:
    anywhere inside the frame). Returns ``(texture (3, H, W), alpha (H, W))`` in [0, 1]; the
    texture is zero where alpha is.

    Example:
        >>> import numpy as np, torch
        >>> c = torch.zeros(4, 20, 30, dtype=torch.uint8); c[:, 5:15, 5:25] = 255
        >>> fg, a = place_cutout(np.random.default_rng(0), [c], (64, 64))
        >>> fg.shape, a.shape, 0.02 < float((a >= 0.5).float().mean()) < 0.5
        (torch.Size([3, 64, 64]), torch.Size([64, 64]), True)
    """
    H, W = size
    c = cutouts[int(rng.integers(len(cutouts)))].float() / 255.0
    area = float(c[3].sum())
    h, w = c.shape[-2:]
    s = math.sqrt(rng.uniform(*cover) * H * W / max(area, 1.0))
    s = min(s, 1.3 * H / h, 1.3 * W / w)
    nh, nw = max(2, int(round(h * s))), max(2, int(round(w * s)))
    pre = torch.cat([c[:3] * c[3:], c[3:]])[None]  # premultiplied: no fringe of hidden colour
    pre = F.interpolate(pre, size=(nh, nw), mode="bilinear", align_corners=False, antialias=(s < 1))[0].clamp(0, 1)
    if rng.random() < 0.5:
        pre = torch.flip(pre, dims=[-1])
    cy, cx = (rng.uniform(0, H), rng.uniform(0, W)) if centre is None else centre
    y0, x0 = int(round(cy - nh / 2)), int(round(cx - nw / 2))
    fg, alpha = torch.zeros(3, H, W), torch.zeros(H, W)
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(H, y0 + nh), min(W, x0 + nw)
    if ye > ys and xe > xs:
        part = pre[:, ys - y0:ye - y0, xs - x0:xe - x0]
        alpha[ys:ye, xs:xe] = part[3]
        fg[:, ys:ye, xs:xe] = part[:3] / part[3:].clamp_min(1e-3)
    return fg.clamp(0, 1), alpha


def _near(rng: np.random.Generator, alpha: torch.Tensor) -> tuple[float, float]:
    """A point near the boundary of ``alpha`` (a random pixel of its edge, moved a little)."""
    m = (alpha >= 0.5).float()
    pts = ((dilate(m, 1) - erode(m, 1)) > 0).nonzero()
    H, W = alpha.shape
    if len(pts) == 0:
        return rng.uniform(0, H), rng.uniform(0, W)
    py, px = pts[int(rng.integers(len(pts)))].tolist()
    r = 0.15 * min(H, W)
    return py + rng.uniform(-r, r), px + rng.uniform(-r, r)


def _others(rng: np.random.Generator, cutouts, target: torch.Tensor, bg: torch.Tensor):
    """One to three other cut-outs next to the target: ``(behind, front)`` lists of ``(texture,
    alpha)``."""
    behind, front = [], []
    for _ in range(int(rng.integers(1, 4))):
        fg, a = place_cutout(rng, cutouts, target.shape, centre=_near(rng, target), cover=(0.03, 0.3))
        fg = _texture(rng, fg, bg, a) if rng.random() < 0.3 else fg
        (front if rng.random() < 1 / 3 else behind).append((fg, a))
    return behind, front


# ----------------------------------------------------------------------------------------------
# coarse masks
def _false_blobs(m: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Add and cut random ellipses centred near the boundary of ``m`` (false blobs and holes)."""
    H, W = m.shape
    edge = (dilate(m, 1) - erode(m, 1)) > 0
    pts = edge.nonzero()
    if len(pts) == 0:
        return m
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    out = m.clone()
    for _ in range(int(rng.integers(1, 4))):
        py, px = pts[int(rng.integers(len(pts)))].tolist()
        r = rng.uniform(0.02, 0.08) * min(H, W) + 1
        cy, cx = py + rng.uniform(-r, r), px + rng.uniform(-r, r)
        ell = ((yy - cy) / (r * rng.uniform(0.5, 1.5))) ** 2 + ((xx - cx) / r) ** 2 <= 1.0
        out[ell] = 1.0 if rng.random() < 0.5 else 0.0
    return out


def _perturb_once(m: torch.Tensor, rng: np.random.Generator, strength: float) -> torch.Tensor:
    H, W = m.shape
    side = min(H, W)
    # the object's size bounds the damage: a radius-r object survives a resampling by about r
    r_eq = max(2.0, math.sqrt(float(m.sum()) / math.pi))
    if rng.random() < 0.6:  # dilation or erosion, possibly anisotropic
        r = max(1, int(rng.uniform(0.05, 0.3) * strength * r_eq))
        ry, rx = (r, r) if rng.random() < 0.6 else (r, max(0, int(r * rng.uniform(0, 1))))
        m = dilate(m, ry, rx) if rng.random() < 0.5 else erode(m, ry, rx)
    if rng.random() < 0.6:  # boundary noise
        amp = rng.uniform(0.15, 0.5) * strength
        soft = gaussian_blur(m[None], float(rng.uniform(1.0, 0.03 * side + 1.0)))[0]
        m = ((soft + amp * _smooth_noise(rng, (H, W), rng.uniform(0.03, 0.15) * side)) >= 0.5).float()
    if rng.random() < 0.4 * strength:
        m = _false_blobs(m, rng)
    soft_out = rng.random() < 0.5
    if rng.random() < 0.7:  # the resolution of a segmenter's output
        top = int(min(16, max(4, r_eq * strength / 1.5)))
        m = resample_blocky(m, int(rng.integers(4, top + 1)), soft=soft_out and rng.random() < 0.7)
    if soft_out:
        m = gaussian_blur(m[None], float(rng.uniform(0.5, 3.0)))[0]
        if rng.random() < 0.4:  # an under-confident segmenter
            lo, hi = rng.uniform(0.0, 0.25), rng.uniform(0.75, 1.0)
            m = lo + (hi - lo) * m
    else:
        m = (m >= 0.5).float()
    return m.clamp(0, 1).contiguous()


def near_mask(target: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A coarse mask ``(H, W)`` in [0, 1] whose 0.5 contour is within about a pixel of the binary
    ``target``'s: the target itself (one time in five), dilated or eroded by one pixel, or
    resampled by 2 or 3 (bilinear); then hard, or blurred (sigma 0.5 to 2 pixels) and possibly
    under-confident. What a good segmenter gives: the refiner must keep its boundary.

    Example:
        >>> import numpy as np, torch
        >>> from spn.data.composites import near_mask
        >>> t = torch.zeros(32, 32); t[8:24, 6:20] = 1
        >>> m = near_mask(t, np.random.default_rng(0))
        >>> int(((m >= 0.5) != (t >= 0.5)).sum()) <= 2 * (16 + 14) + 4
        True
    """
    m = target.float()
    k = rng.random()
    if 0.2 <= k < 0.4:
        m = dilate(m, 1) if rng.random() < 0.5 else erode(m, 1)
    elif k >= 0.4 and rng.random() < 0.6:
        m = (resample_blocky(m, int(rng.integers(2, 4)), soft=True) >= 0.5).float()
    if rng.random() < 0.5:
        m = gaussian_blur(m[None], float(rng.uniform(0.5, 2.0)))[0]
        if rng.random() < 0.4:
            lo, hi = rng.uniform(0.0, 0.25), rng.uniform(0.75, 1.0)
            m = lo + (hi - lo) * m
    return m.clamp(0, 1).contiguous()


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two bool maps (1.0 when both are empty)."""
    u = float((a | b).sum())
    return float((a & b).sum()) / u if u else 1.0


def perturb_mask(target: torch.Tensor, rng: np.random.Generator, min_iou: float = 0.4,
                 strength: float = 1.0) -> torch.Tensor:
    """A coarse mask ``(H, W)`` in [0, 1] from a binary target ``(H, W)`` (float 0/1), by a random
    subset of CascadePSP-style perturbations (see the module docstring); a draw whose IoU with
    the target (at 0.5) is below ``min_iou`` is redrawn with milder perturbations. ``strength``
    (0, 1] scales the damage (the training composites draw a mild one, 0.1 to 0.4, one time in
    six, so that a nearly right mask is kept nearly as it is)."""
    m = target.float()
    out = m
    for _ in range(4):
        out = _perturb_once(m, rng, strength)
        if mask_iou(out >= 0.5, m >= 0.5) >= min_iou:
            break
        strength *= 0.6
    return out


# ----------------------------------------------------------------------------------------------
# composites
def _crop(rng: np.random.Generator, photo: torch.Tensor, size) -> torch.Tensor:
    """A random crop of ``photo (3, H, W)`` at a random scale, resized to ``size``, randomly flipped."""
    H, W = photo.shape[-2:]
    h, w = size
    big = min(H / h, W / w)  # the largest crop of the output's aspect ratio
    s = rng.uniform(min(1.0, big) * 0.5, big) if big > 0.5 else big
    ch, cw = max(2, min(H, int(round(h * s)))), max(2, min(W, int(round(w * s))))
    y, x = int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1))
    c = photo[None, :, y:y + ch, x:x + cw]
    if c.dtype == torch.uint8:
        c = c.float() / 255.0
    c = F.interpolate(c, size=(h, w), mode="bilinear", align_corners=False, antialias=(ch > h or cw > w))[0]
    if rng.random() < 0.5:
        c = torch.flip(c, dims=[-1])
    if rng.random() < 0.2:
        c = torch.flip(c, dims=[-2])
    return c.clamp(0, 1)


def _texture(rng, fg: torch.Tensor, bg: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The object's texture: colour gain, shading, and (low contrast) its mean moved towards the
    background's mean around the object."""
    H, W = fg.shape[-2:]
    if rng.random() < 0.5:
        fg = fg * torch.from_numpy(rng.uniform(0.75, 1.25, (3, 1, 1)).astype(np.float32))
    if rng.random() < 0.3:
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
        fg = fg * (1.0 + rng.uniform(0.1, 0.4) * (math.cos(a) * xx + math.sin(a) * yy))
    if rng.random() < 0.25:
        w = alpha[None]
        ring = (dilate(alpha, 8) - alpha).clamp(0, 1)[None]
        mb = (bg * ring).sum((1, 2), keepdim=True) / ring.sum().clamp_min(1.0)
        mf = (fg * w).sum((1, 2), keepdim=True) / w.sum().clamp_min(1.0)
        t = rng.uniform(0.5, 0.95)
        fg = fg - t * (mf - mb)
    return fg.clamp(0, 1)


class _OneThread:
    """Run torch on one thread inside the block: these small operations are several times slower
    on two threads than on one (the threads' synchronisation costs more than the work)."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        if self.n != 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.n != 1:
            torch.set_num_threads(self.n)


def compose(rng: np.random.Generator, photos, size, cutouts=(), near: float = NEAR, large: float = LARGE,
            grabcut: float = GRABCUT) -> dict:
    """One composite of size ``size = (H, W)`` from the list of photos ``(3, h, w)`` (and of
    cut-outs ``(4, h, w)``, :func:`place_cutout`): ``{"image", "coarse" (1, H, W), "mask" (H, W)
    int64, "alpha" (H, W)}`` (see the module docstring). ``near``: the share of nearly exact
    coarse masks (:func:`near_mask`; default :data:`NEAR`, none). ``grabcut``: the share of GrabCut
    coarse masks (:data:`GRABCUT`, none). ``large``: the share of cut-out
    objects that cover :data:`LARGE_COVER` of the frame (default :data:`LARGE`, none; 0 draws the
    same composites as before it existed)."""
    with _OneThread():
        return _compose(rng, photos, size, cutouts, near, large, grabcut)


def _object(rng: np.random.Generator, photos, size, i: int, cutouts,
            large: float = LARGE) -> tuple[torch.Tensor, torch.Tensor]:
    """The object's ``(texture (3, H, W), alpha (H, W))``: a cut-out or a procedural shape."""
    n = len(photos)
    if len(cutouts) and rng.random() < 0.5:
        # no draw when large is 0: the stream (and every composite) stays as it was without it
        big = large > 0 and rng.random() < large
        H, W = size
        for _ in range(6):
            if big:  # centred in the middle 40 % of the frame: an object that fills the photo
                centre = (rng.uniform(0.3, 0.7) * H, rng.uniform(0.3, 0.7) * W)
                fg, alpha = place_cutout(rng, cutouts, size, centre=centre, cover=LARGE_COVER)
            else:
                fg, alpha = place_cutout(rng, cutouts, size)
            if float((alpha >= 0.5).float().mean()) >= 0.02:
                return fg, alpha
    alpha = None
    for _ in range(6):  # an object of a sensible size
        region = _crop(rng, photos[int(rng.integers(n))], size)
        alpha = object_alpha(rng, size, region)
        frac = float((alpha >= 0.5).float().mean())
        if 0.02 <= frac <= 0.8:
            break
    if rng.random() < 0.15:  # camouflage: the texture of the same photo
        return _crop(rng, photos[i], size), alpha
    return _crop(rng, photos[int(rng.integers(n))], size), alpha


def _grabcut_coarse(rng: np.random.Generator, image: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """GrabCut's mask of ``target`` in ``image``, or None when it is not a usable coarse mask."""
    from .grabcut import grabcut_mask

    seed = int(rng.integers(2**31))  # drawn before the test below: the stream does not depend on the image
    if not bool(target.any()):
        return None
    g = grabcut_mask(image, target, seed)  # it clamps the image to [0, 1] itself
    return g if mask_iou(g >= 0.5, target >= 0.5) >= GRABCUT_MIN_IOU else None


def _compose(rng: np.random.Generator, photos, size, cutouts=(), near: float = NEAR, large: float = LARGE,
             grabcut: float = GRABCUT) -> dict:
    n = len(photos)
    i = int(rng.integers(n))
    bg = _crop(rng, photos[i], size)
    fg, alpha = _object(rng, photos, size, i, cutouts, large)
    fg = _texture(rng, fg, bg, alpha)
    behind, front = _others(rng, cutouts, alpha, bg) if len(cutouts) and rng.random() < 0.5 else ([], [])
    for ofg, oa in behind:
        bg = oa[None] * ofg + (1 - oa[None]) * bg
    a = alpha
    if rng.random() < 0.4:  # defocus of the boundary
        a = gaussian_blur(alpha[None], float(rng.uniform(0.3, 1.5)))[0]
    image = a[None] * fg + (1 - a[None]) * bg
    for ofg, oa in front:  # occluders: the target is what stays visible
        visible = alpha * (1 - oa)
        if float((visible >= 0.5).float().mean()) < 0.01:
            continue
        image = oa[None] * ofg + (1 - oa[None]) * image
        alpha = visible
    if rng.random() < 0.5:
        image = image + float(rng.uniform(0.002, 0.02)) * torch.from_numpy(
            rng.standard_normal(image.shape).astype(np.float32))
    target = (alpha >= 0.5).float()
    # no draw when grabcut is 0: the stream (and every composite) stays as it was without it
    coarse = _grabcut_coarse(rng, image, target) if grabcut > 0 and rng.random() < grabcut else None
    if coarse is None:
        u = rng.random()
        if u < near:
            coarse = near_mask(target, rng)
        else:
            coarse = perturb_mask(target, rng, strength=float(rng.uniform(0.1, 0.4)) if u < near + 1 / 6 else 1.0)
    return {"image": image.clamp(0, 1).contiguous(), "coarse": coarse[None], "mask": target.long(),
            "alpha": alpha}


def _stored(img: torch.Tensor, max_side: int) -> torch.Tensor:
    """A photo ``(3, H, W)`` in [0, 1] as uint8, shrunk (antialiased) to at most ``max_side``."""
    H, W = img.shape[-2:]
    if max(H, W) > max_side:
        s = max_side / max(H, W)
        img = F.interpolate(img[None], size=(max(2, round(H * s)), max(2, round(W * s))), mode="bilinear",
                            align_corners=False, antialias=True)[0]
    return (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8).contiguous()


def _photos_of(source: str, split: str, on_corrupt: str = "error",
               max_side: int = 1024) -> tuple[list[torch.Tensor], list[str]]:
    """The photos of ``photos:SOURCE``'s ``split`` (stored as uint8, at most ``max_side`` pixels)
    and their names."""
    from .photos import PhotoDataset

    ds = PhotoDataset(source, split=split, factor=None, on_corrupt=on_corrupt, cache=False)
    if len(ds) == 0:
        raise ValueError(f"composites:{source}: the {split!r} split has no photos")
    items = [ds[i] for i in range(len(ds))]
    return [_stored(it["image"], max_side) for it in items], [str(it["name"]) for it in items]


def _cutouts_of(source, split: str) -> list[torch.Tensor]:
    """The cut-outs of ``source`` when it is a folder that holds some (a corpus), else ``[]``."""
    from pathlib import Path

    from .cutouts import load_cutouts

    if str(source) == "skimage":
        return []
    return load_cutouts(Path(source), split) if Path(source).is_dir() else []


def _check_size(size) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be an int or (H, W), got {size!r}") from None
    if h < 16 or w < 16:
        raise ValueError(f"composites must be at least 16 x 16 pixels, got {h} x {w}")
    return h, w


class CompositeDataset(Dataset):
    """``length`` composites of ``size`` from the photos of ``source``'s ``split`` (see the module).

    Args:
        source: ``"skimage"``, ``"corpus"`` (the folder of ``spn corpus build``) or a folder of photos.
        split: the photos' split (``"train"``, ``"val"``, ...).
        size: ``(H, W)`` or an int.
        length: number of items (default: 48 for validation splits, 64 per photo for ``train``).
        seed: item ``i`` is drawn with ``numpy.random.default_rng([seed, split code, epoch, i])``.
        photos: a list of ``(3, h, w)`` tensors (float in [0, 1] or uint8) instead of a source.
        cutouts: a list of ``(4, h, w)`` uint8 RGBA objects; default: the cut-outs of ``source``'s
            split when it is a corpus folder holding some (:func:`spn.data.cutouts.load_cutouts`).
        max_side: photos of a source are stored as uint8, shrunk to at most this many pixels.
        near: the share of nearly exact coarse masks (:func:`near_mask`; default :data:`NEAR`).
        large: the share of cut-out objects that fill the frame (:data:`LARGE_COVER` of it; default
            :data:`LARGE`).
        grabcut: the share of GrabCut coarse masks (:func:`spn.data.grabcut.grabcut_mask`; default
            :data:`GRABCUT`; needs ``opencv-python-headless``).

    Shape:
        - item["image"]: ``(3, H, W)``; item["coarse"]: ``(1, H, W)``; item["mask"]: ``(H, W)``
    """

    task = "mask"
    num_classes = 2
    class_names = ["background", "object"]
    ignore_index = 255

    def __init__(self, source="skimage", split: str = "train", size=(384, 512), length: int | None = None,
                 seed: int = 0, photos=None, on_corrupt: str = "error", coarse=None, max_side: int = 1024,
                 cutouts=None, near: float = NEAR, large: float = LARGE, grabcut: float = GRABCUT):
        if coarse not in (None, "none"):
            raise ValueError(f"composites make their own coarse masks; got coarse source {coarse!r}")
        self.size = _check_size(size)
        if photos is not None:
            self.photos, self.names = list(photos), [f"photo{i}" for i in range(len(photos))]
            found = []
        else:
            from .photos import resolve_source

            source = resolve_source(source)
            self.photos, self.names = _photos_of(str(source), split, on_corrupt, int(max_side))
            found = _cutouts_of(source, split)
        if not self.photos:
            raise ValueError("CompositeDataset needs at least one photo")
        self.cutouts = list(cutouts) if cutouts is not None else found
        self.source = "custom" if photos is not None else str(source)
        self.split = split
        default = 64 * len(self.photos) if split == "train" else 48
        self.length = int(length) if length is not None else default
        if self.length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.seed = int(seed)
        self.epoch = 0
        if isinstance(near, bool) or not isinstance(near, (int, float)) or not 0 <= near <= 5 / 6:
            raise ValueError(f"near must be a share in [0, 5/6], got {near!r}")
        self.near = float(near)
        if isinstance(large, bool) or not isinstance(large, (int, float)) or not 0 <= large <= 1:
            raise ValueError(f"large must be a share in [0, 1], got {large!r}")
        self.large = float(large)
        if isinstance(grabcut, bool) or not isinstance(grabcut, (int, float)) or not 0 <= grabcut <= 1:
            raise ValueError(f"grabcut must be a share in [0, 1], got {grabcut!r}")
        if grabcut > 0:
            from importlib.util import find_spec

            if find_spec("cv2") is None:
                raise ValueError("grabcut needs OpenCV: pip install opencv-python-headless")
        self.grabcut = float(grabcut)

    def __len__(self) -> int:
        return self.length

    def info(self) -> dict:
        return {"dataset": type(self).__name__, "source": self.source, "split": self.split,
                "size": self.length, "item_size": list(self.size), "photos": len(self.photos),
                "photo_names": list(self.names), "cutouts": len(self.cutouts), "seed": self.seed, "near": self.near,
                "large": self.large, "grabcut": self.grabcut, "num_classes": 2}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, self.length, "composites")
        rng = np.random.default_rng([self.seed, SPLIT_CODES.get(self.split, 9), self.epoch, index])
        item = compose(rng, self.photos, self.size, self.cutouts, self.near, self.large, self.grabcut)
        item.pop("alpha")
        item["name"] = f"composite-{self.split}-{index:05d}"
        return item


class CompositePatches(CropSampler):
    """Training samples of ``--task mask``: patch ``index`` of epoch ``e`` is a fresh ``size x
    size`` composite of the photos of ``base`` (a :class:`CompositeDataset`), drawn with
    ``numpy.random.default_rng([seed, e, index])``. ``patches_per_image`` samples per item of
    ``base`` and epoch; ``flip`` is part of the composition already.

    Example:
        >>> import torch
        >>> from spn.data.composites import CompositeDataset, CompositePatches
        >>> base = CompositeDataset(photos=[torch.rand(3, 80, 90)], size=32, length=2)
        >>> p = CompositePatches(base, size=24, patches_per_image=2)
        >>> len(p), p[3]["image"].shape, p[3]["coarse"].shape
        (4, torch.Size([3, 24, 24]), torch.Size([1, 24, 24]))
    """

    def __init__(self, base, size: int = 128, patches_per_image: int = 4, flip: bool = True, seed: int = 0):
        super().__init__(base, size, patches_per_image, flip, seed)
        _check_size(self.size)

    num_classes = 2
    class_names = CompositeDataset.class_names
    ignore_index = 255

    def info(self) -> dict:
        return self._info()

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, len(self), "patches")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        item = compose(rng, self.base.photos, (self.size, self.size), self.base.cutouts, self.base.near,
                       self.base.large, self.base.grabcut)
        item.pop("alpha")
        item["name"] = f"composite-e{self.epoch}-{index}"
        return item


def build_composites(arg, split="train", coarse=None, **kw):
    """The ``composites:SOURCE`` dataset (``SOURCE``: ``skimage`` or a folder of photos;
    ``photos:`` in front is accepted)."""
    source = str(arg)
    if source.lower().startswith("photos:"):
        source = source.split(":", 1)[1]
    return CompositeDataset(source, split=split, coarse=coarse, **kw)
