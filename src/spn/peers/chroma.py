"""Classical chroma upsamplers, the peers of the chroma SPN (``spn compare --task chroma``).

Every peer is built with :func:`get_chroma_peer` ``(name, **params)`` and offers
``upsample(luma (1, H, W), chroma_low (2, ceil(H/F), ceil(W/F)), factor) -> chroma (2, H, W)``
(CPU, float32, no gradients; chroma in the [0, 1] convention, clamped to [0, 1]):

- ``"bilinear"``: :func:`spn.image.resample.bilinear_upsample` (aligned with the area
  subsampling), the SPN's own starting point;
- ``"bicubic"``: cubic convolution (Keys 1981, ``a = -0.5``: it reproduces linear and quadratic
  functions; ``a`` is a parameter) on the same grid, edges replicated;
- ``"guided_filter"``: the bilinear chroma filtered by the grey guided filter of He et al.,
  guided by the luma;
- ``"jbu"``: joint bilateral upsampling (Kopf, Cohen, Lischinski & Uyttendaele, SIGGRAPH 2007):
  ``S(p) = sum_q S_low(q) f(|p_low - q|) g(|Y(p) - Y_low(q)|) / sum_q f g`` over the low-resolution
  pixels ``q`` within ``radius`` of the one holding ``p``, ``p_low`` the position of ``p`` on the
  low-resolution grid, ``f`` and ``g`` Gaussians (``sigma_spatial`` in low-resolution pixels,
  ``sigma_range`` in luma units); the luma of ``q`` is the area-averaged luma of its block, the
  same averaging as its chroma;
- ``"domain_transform"``: the bilinear chroma filtered by the domain-transform recursive filter
  (Gastal & Oliveira 2011) built on ``spn.ops.propagate``, guided by the luma
  (:func:`spn.peers.domain_transform_filter`).

The default parameters were chosen by :func:`tune_chroma_peer` on the training photos of
``photos:skimage`` at factor 8 (the README lists the search); ``spn compare --task chroma
--tune-peers`` searches again on the training split of the data at hand.

Example:
    >>> import torch
    >>> from spn.peers.chroma import get_chroma_peer
    >>> y, low = torch.rand(1, 32, 40), torch.rand(2, 4, 5)
    >>> get_chroma_peer("jbu").upsample(y, low, 8).shape
    torch.Size([2, 32, 40])
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from spn.metrics.image import psnr
from spn.image.resample import area_downsample, bilinear_upsample, check_factor, low_size

from ._base import Configured
from .domain_transform import DomainTransformParams, domain_transform_filter
from .guided_filter import GuidedFilterParams, guided_filter_gray

__all__ = ["CHROMA_PEERS", "ChromaPeer", "get_chroma_peer", "joint_bilateral_upsample", "list_chroma_peers",
           "tune_chroma_peer"]


def _positive(who: str, name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{who}: {name} must be a positive number, got {v!r}")


def _check(luma, chroma_low, factor: int, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    check_factor(factor)
    for name, t, c in (("luma", luma, 1), ("chroma_low", chroma_low, 2)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{who}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3 or t.shape[0] != c:
            raise ValueError(f"{who}: {name} must be ({c}, H, W), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{who}: {name} must be floating point, got {t.dtype}")
    want = low_size(luma.shape[-2:], factor)
    if tuple(chroma_low.shape[-2:]) != want:
        raise ValueError(f"{who}: chroma_low is {tuple(chroma_low.shape[-2:])} but the factor-{factor} "
                         f"subsampling of a {tuple(luma.shape[-2:])} luma is {want}")
    luma = luma.detach().to("cpu", torch.float32).contiguous()
    chroma_low = chroma_low.detach().to("cpu", torch.float32).contiguous()
    if not bool(torch.isfinite(luma.sum())) or not bool(torch.isfinite(chroma_low.sum())):
        raise ValueError(f"{who}: luma or chroma_low has NaN/inf values")
    return luma, chroma_low


class ChromaPeer(Configured):
    """A chroma upsampler: ``upsample(luma (1, H, W), chroma_low (2, h, w), factor) -> (2, H, W)``.

    Subclasses set ``name``, ``title``, ``params_class`` and implement ``_upsample``; unknown
    parameters are a TypeError listing the valid ones.
    """

    def upsample(self, luma: torch.Tensor, chroma_low: torch.Tensor, factor: int) -> torch.Tensor:
        luma, chroma_low = _check(luma, chroma_low, factor, self.name)
        with torch.no_grad():
            return self._upsample(luma, chroma_low, int(factor)).clamp(0, 1)

    def _upsample(self, luma, chroma_low, factor):  # pragma: no cover
        raise NotImplementedError


@dataclass
class NoParams:
    """No parameters."""


class Bilinear(ChromaPeer):
    name, title, params_class = "bilinear", "bilinear", NoParams

    def _upsample(self, luma, chroma_low, factor):
        return bilinear_upsample(chroma_low[None], factor, luma.shape[-2:])[0]


def keys_weights(t: float, a: float = -0.5) -> list[float]:
    """Weights of the samples at offsets ``-1, 0, 1, 2`` for a point at ``t`` in ``[0, 1)`` past
    sample 0 (Keys' cubic convolution kernel with parameter ``a``)."""
    def k(x):
        x = abs(x)
        if x <= 1:
            return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
        if x < 2:
            return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
        return 0.0
    return [k(t + 1), k(t), k(t - 1), k(t - 2)]


def _cubic_1d(x: torch.Tensor, f: int, dim: int, a: float) -> torch.Tensor:
    n = x.shape[dim]
    xp = torch.cat([x.narrow(dim, 0, 1)] * 2 + [x] + [x.narrow(dim, n - 1, 1)] * 3, dim)  # 2 before, 3 after
    phases = []
    for r in range(f):
        u = (r + 0.5) / f - 0.5  # position of output f*q + r on the low grid, relative to q
        base = math.floor(u)
        w = keys_weights(u - base, a)
        # samples q + base - 1 .. q + base + 2, i.e. xp[q + base + 1 .. q + base + 4]
        phases.append(sum(wi * xp.narrow(dim, base + 1 + i, n) for i, wi in enumerate(w)))
    out = torch.stack(phases, dim=dim % x.dim() + 1)
    shape = list(x.shape)
    shape[dim] = n * f
    return out.reshape(shape)


def cubic_upsample(low: torch.Tensor, f: int, size, a: float = -0.5) -> torch.Tensor:
    """Cubic-convolution upsampling of ``(K, h, w)`` by ``f`` on the area grid (the grid of
    :func:`~spn.image.resample.bilinear_upsample`), edges replicated, cropped to ``size``."""
    up = _cubic_1d(_cubic_1d(low, f, -1, a), f, -2, a)
    return up[..., : size[0], : size[1]]


@dataclass
class BicubicParams:
    """``a``: the parameter of Keys' kernel (-0.5; -0.75 is OpenCV's and PyTorch's)."""

    a: float = -0.5

    def __post_init__(self):
        if isinstance(self.a, bool) or not isinstance(self.a, (int, float)) or not -1 <= self.a <= 0:
            raise ValueError(f"bicubic: a must be a number in [-1, 0], got {self.a!r}")


class Bicubic(ChromaPeer):
    name, title, params_class = "bicubic", "bicubic", BicubicParams

    def _upsample(self, luma, chroma_low, factor):
        return cubic_upsample(chroma_low, factor, luma.shape[-2:], float(self.params.a))


@dataclass
class ChromaGuidedFilterParams(GuidedFilterParams):
    """``radius`` in full-resolution pixels, ``eps`` in squared luma units (tuned for chroma)."""

    radius: int = 1
    eps: float = 1e-4


class GuidedFilterChroma(ChromaPeer):
    name, title, params_class = "guided_filter", "guided filter", ChromaGuidedFilterParams

    def _upsample(self, luma, chroma_low, factor):
        up = bilinear_upsample(chroma_low[None], factor, luma.shape[-2:])[0]
        return guided_filter_gray(luma, up, self.params.radius, float(self.params.eps))


@dataclass
class JBUParams:
    """``radius`` and ``sigma_spatial`` in low-resolution pixels, ``sigma_range`` in luma units."""

    radius: int = 1
    sigma_spatial: float = 0.5
    sigma_range: float = 0.1

    def __post_init__(self):
        if isinstance(self.radius, bool) or not isinstance(self.radius, int) or self.radius < 0:
            raise ValueError(f"jbu: radius must be an int >= 0, got {self.radius!r}")
        _positive("jbu", "sigma_spatial", self.sigma_spatial)
        _positive("jbu", "sigma_range", self.sigma_range)


def joint_bilateral_upsample(luma: torch.Tensor, chroma_low: torch.Tensor, factor: int, radius: int = 1,
                             sigma_spatial: float = 0.5, sigma_range: float = 0.1) -> torch.Tensor:
    """Joint bilateral upsampling (Kopf et al. 2007) of ``chroma_low (K, h, w)`` guided by
    ``luma (1, H, W)`` (see the module docstring). Returns ``(K, H, W)``.

    Full-resolution pixel ``p = (y, x)`` lies in low-resolution pixel ``(y // F, x // F)`` at the
    low-resolution position ``((y + 0.5)/F - 0.5, (x + 0.5)/F - 0.5)`` (the area grid); the
    low-resolution pixels ``q`` of the ``(2 radius + 1)^2`` window around it that lie inside
    the image are weighted.
    """
    f, r = int(factor), int(radius)
    H, W = luma.shape[-2:]
    h, w = chroma_low.shape[-2:]
    y_low = area_downsample(luma[None], f)[0]
    # padded low maps (a validity mask marks the pixels inside), nearest-upsampled once: every
    # window offset is then a slice of them
    vals = torch.cat([chroma_low, y_low, torch.ones_like(y_low)], 0)
    vals = F.pad(vals, (r, r, r, r))
    vals = vals.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)
    pos_y = (torch.arange(H, dtype=luma.dtype) + 0.5) / f - 0.5
    pos_x = (torch.arange(W, dtype=luma.dtype) + 0.5) / f - 0.5
    blk_y = torch.div(torch.arange(H), f, rounding_mode="floor").to(luma.dtype)
    blk_x = torch.div(torch.arange(W), f, rounding_mode="floor").to(luma.dtype)
    K = chroma_low.shape[0]
    num = torch.zeros(K, H, W, dtype=luma.dtype)
    den = torch.zeros(1, H, W, dtype=luma.dtype)
    inv_s = 1.0 / (2 * sigma_spatial ** 2)
    inv_r = 1.0 / (2 * sigma_range ** 2)
    for oy, ox in itertools.product(range(-r, r + 1), repeat=2):
        sl = vals[:, (r + oy) * f:(r + oy) * f + H, (r + ox) * f:(r + ox) * f + W]
        c, yq, valid = sl[:K], sl[K:K + 1], sl[K + 1:]
        wy = torch.exp(-((pos_y - blk_y - oy) ** 2) * inv_s)
        wx = torch.exp(-((pos_x - blk_x - ox) ** 2) * inv_s)
        wgt = valid * (wy[:, None] * wx[None, :]) * torch.exp(-((luma - yq) ** 2) * inv_r)
        num += wgt * c
        den += wgt
    # the pixel's own low-resolution block is always inside the image, and its range weight is
    # at least exp(-1 / (2 sigma_range^2)); guard the division all the same
    out = num / den.clamp_min(1e-30)
    fallback = bilinear_upsample(chroma_low[None], f, (H, W))[0]
    return torch.where(den > 1e-30, out, fallback)


class JBU(ChromaPeer):
    name, title, params_class = "jbu", "joint bilateral upsampling", JBUParams

    def _upsample(self, luma, chroma_low, factor):
        p = self.params
        return joint_bilateral_upsample(luma, chroma_low, factor, p.radius, float(p.sigma_spatial),
                                        float(p.sigma_range))


@dataclass
class ChromaDomainTransformParams(DomainTransformParams):
    """``sigma_s`` in full-resolution pixels, ``sigma_r`` in luma units (tuned for chroma)."""

    sigma_s: float = 8.0
    sigma_r: float = 0.01


class DomainTransformChroma(ChromaPeer):
    name, title, params_class = "domain_transform", "domain transform", ChromaDomainTransformParams

    def _upsample(self, luma, chroma_low, factor):
        p = self.params
        up = bilinear_upsample(chroma_low[None], factor, luma.shape[-2:])[0]
        return domain_transform_filter(luma, up, float(p.sigma_s), float(p.sigma_r), p.iterations)


CHROMA_PEERS = {p.name: p for p in (Bilinear, Bicubic, GuidedFilterChroma, JBU, DomainTransformChroma)}


def list_chroma_peers() -> list[str]:
    return list(CHROMA_PEERS)


def get_chroma_peer(name: str, **params) -> ChromaPeer:
    """A chroma peer by name (unknown name -> ValueError listing the valid ones)."""
    if name not in CHROMA_PEERS:
        raise ValueError(f"unknown chroma peer {name!r}; valid chroma peers are {', '.join(CHROMA_PEERS)}")
    return CHROMA_PEERS[name](**params)


#: the grids :func:`tune_chroma_peer` searches by default
DEFAULT_GRIDS = {
    "guided_filter": {"radius": [1, 2, 4, 8], "eps": [1e-5, 1e-4, 1e-3, 1e-2]},
    "jbu": {"radius": [1, 2], "sigma_spatial": [0.25, 0.5, 1.0, 2.0], "sigma_range": [0.025, 0.05, 0.1, 0.2, 0.4]},
    "domain_transform": {"sigma_s": [1.0, 2.0, 4.0, 8.0, 16.0], "sigma_r": [0.005, 0.01, 0.02, 0.05, 0.1]},
}


def tune_chroma_peer(name: str, items, grid: dict | None = None) -> dict:
    """Grid search of a peer's parameters by mean chroma PSNR over ``items`` (dicts with
    ``"luma"``, ``"chroma_low"``, ``"chroma"``, ``"factor"``: crops of the training photos).

    Returns ``{"best": params, "best_psnr": float, "results": [{"params", "psnr"}, ...]}``;
    a peer without parameters returns its (empty) defaults. Ties keep the first setting.
    """
    grid = dict(DEFAULT_GRIDS.get(name, {}) if grid is None else grid)
    known = {f.name for f in fields(CHROMA_PEERS[name].params_class)} if name in CHROMA_PEERS else set()
    get_chroma_peer(name)  # validates the name
    for k in grid:
        if k not in known:
            raise ValueError(f"tune_chroma_peer: {name} has no parameter {k!r}; valid are {sorted(known)}")
    items = list(items)
    if not items:
        raise ValueError("tune_chroma_peer: no items")
    names = list(grid)
    results, best = [], None
    for combo in itertools.product(*(grid[k] for k in names)) if names else [()]:
        peer = get_chroma_peer(name, **dict(zip(names, combo)))
        score = sum(psnr(peer.upsample(it["luma"], it["chroma_low"], it["factor"]), it["chroma"])
                    for it in items) / len(items)
        results.append({"params": asdict(peer.params), "psnr": score})
        if best is None or score > best["psnr"]:
            best = results[-1]
    return {"best": best["params"], "best_psnr": best["psnr"], "results": results}
