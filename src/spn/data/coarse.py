"""Coarse segmentation maps: where the SPN's input probabilities come from.

A *coarse source* names how a dataset fills the ``"coarse"`` key of its items:

``"files"``
    maps stored next to the data (``ROOT/coarse/NAME.npy`` or ``NAME.png`` for the folder
    dataset, ``coarse_dir=`` for VOC and HELEN), read by :func:`read_coarse_file`, the one
    reader of a stored coarse map (``spn refine`` reads its ``--coarse`` files with it too).
``"gt-downsample:F"``
    a simulated coarse segmentation made from the ground truth by
    :func:`make_coarse_from_mask` (one-hot, area-downsampled by ``F``, blurred a little,
    bilinearly upsampled back). Deterministic.
``"none"``
    no ``"coarse"`` key at all.
``"PREFIX:ARG"`` of a registered *wrapping* source
    the dataset is built with ``"none"`` and wrapped by the source's function
    (:func:`register_coarse_source`); ``"baseline:RUN_DIR"`` (the softmax of a trained
    baseline, :class:`spn.data.baseline.BaselineCoarse`) is one.

Every coarse map is a float32 ``(K, H, W)`` tensor of class probabilities (non-negative,
summing to one over ``K`` at every pixel) at the resolution of the image.

Shape:
    - mask: ``(H, W)`` int class ids (255 = ignore)
    - coarse: ``(K, H, W)`` float32 probabilities

Example:
    >>> import torch
    >>> from spn.data import make_coarse_from_mask
    >>> mask = torch.zeros(32, 32, dtype=torch.long)
    >>> mask[8:24, 8:24] = 1
    >>> coarse = make_coarse_from_mask(mask, num_classes=2, factor=8)
    >>> coarse.shape, bool(torch.allclose(coarse.sum(0), torch.ones(32, 32)))
    (torch.Size([2, 32, 32]), True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

COARSE_SOURCES = ("files", "gt-downsample:F", "none")

# wrapping coarse sources: prefix -> wrap(dataset, arg, **options) -> dataset
_WRAPPERS: dict[str, Callable] = {}

# tolerances of the "is this already a probability map?" test for stored scores
_PROB_NEG_TOL = 1e-6
_PROB_SUM_TOL = 1e-3


@dataclass(frozen=True)
class CoarseSource:
    """A parsed coarse source: ``kind`` is ``"files"``, ``"gt-downsample"`` or ``"none"``;
    ``factor`` is the downsampling factor of ``"gt-downsample"`` (else 0)."""

    kind: str
    factor: int = 0

    def __str__(self) -> str:
        return f"gt-downsample:{self.factor}" if self.kind == "gt-downsample" else self.kind


def parse_coarse_source(spec: str | CoarseSource) -> CoarseSource:
    """Parse ``"files"``, ``"none"`` or ``"gt-downsample:F"`` (``F`` a positive integer).

    Raises ValueError, listing the valid sources, for anything else.
    """
    if isinstance(spec, CoarseSource):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"coarse source must be a string, got {type(spec).__name__}")
    s = spec.strip().lower()
    if s in ("files", "none"):
        return CoarseSource(s)
    if s.startswith("gt-downsample"):
        rest = s[len("gt-downsample"):]
        if rest.startswith(":"):
            try:
                factor = int(rest[1:])
            except ValueError:
                factor = 0
            if factor >= 1:
                return CoarseSource("gt-downsample", factor)
        raise ValueError(
            f"bad coarse source {spec!r}: gt-downsample needs a positive integer factor, "
            "e.g. 'gt-downsample:8'")
    raise ValueError(
        f"unknown coarse source {spec!r}; valid sources: {', '.join(COARSE_SOURCES)} "
        "(e.g. 'gt-downsample:8')" + "".join(f", or '{p}:...'" for p in sorted(_WRAPPERS)))


def register_coarse_source(prefix: str):
    """Decorator: register ``wrap(dataset, arg, **options) -> dataset`` as the coarse source
    ``"PREFIX:ARG"``. The dataset is built with coarse source ``"none"`` and handed to ``wrap``
    with the text after the colon and the ``coarse_options`` of :func:`spn.data.build_dataset`."""
    if not isinstance(prefix, str) or not prefix or ":" in prefix:
        raise ValueError(f"coarse source prefix must be a non-empty string without ':', got {prefix!r}")

    def deco(wrap: Callable) -> Callable:
        _WRAPPERS[prefix] = wrap
        return wrap

    return deco


def wrapping_source(spec) -> tuple[Callable, str] | None:
    """``(wrap, arg)`` when ``spec`` is ``"PREFIX:ARG"`` of a registered wrapping source, else None.
    An empty ``ARG`` is a ValueError."""
    if not isinstance(spec, str):
        return None
    prefix, sep, arg = spec.partition(":")
    if not sep or prefix not in _WRAPPERS:
        return None
    if not arg:
        raise ValueError(f"coarse source '{prefix}:' needs an argument, e.g. '{prefix}:runs/{prefix}'")
    return _WRAPPERS[prefix], arg


def wrap_coarse_source(dataset, spec, **options):
    """``dataset`` wrapped by the coarse source ``spec`` when that is a registered wrapping source
    (with ``options``); otherwise ``dataset`` unchanged."""
    found = wrapping_source(spec)
    if found is None:
        return dataset
    wrap, arg = found
    return wrap(dataset, arg, **options)


def _gaussian_kernel1d(sigma: float, dtype=torch.float32) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` ``(K, h, w)`` per channel, replicate padding."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel1d(sigma, x.dtype)
    r = k.numel() // 2
    K = x.shape[0]
    y = x.unsqueeze(0)
    y = F.pad(y, (r, r, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(K, 1, 1, -1).contiguous(), groups=K)
    y = F.pad(y, (0, 0, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(K, 1, -1, 1).contiguous(), groups=K)
    return y.squeeze(0)


def _renormalize(p: torch.Tensor) -> torch.Tensor:
    """Clamp to >= 0 and rescale so the class axis (dim 0) sums to one."""
    p = p.clamp_min(0)
    s = p.sum(dim=0, keepdim=True)
    K = p.shape[0]
    return torch.where(s > 0, p / s.clamp_min(1e-12), torch.full_like(p, 1.0 / K))


def resize_probs(p: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize probabilities ``(K, h, w)`` to ``size = (H, W)`` (align_corners=False)
    and renormalise; a no-op when the size already matches."""
    if tuple(p.shape[-2:]) == tuple(size):
        return p
    q = F.interpolate(p.unsqueeze(0), size=tuple(size), mode="bilinear", align_corners=False)
    return _renormalize(q.squeeze(0))


def one_hot_mask(mask: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """One-hot ``(K, H, W)`` float32 of an index mask ``(H, W)``; ignored pixels are all-zero."""
    valid = mask != ignore_index
    idx = torch.where(valid, mask, torch.zeros_like(mask)).long()
    oh = F.one_hot(idx, num_classes).permute(2, 0, 1).float()
    return oh * valid.unsqueeze(0)


def make_coarse_from_mask(mask, num_classes: int, factor: int = 8, sigma: float = 0.75,
                          ignore_index: int = 255) -> torch.Tensor:
    """A simulated coarse segmentation of a ground-truth mask.

    ``mask`` ``(H, W)`` integer class ids (``ignore_index`` = unlabelled) -> float32
    ``(num_classes, H, W)`` probabilities:

    1. one-hot the mask (ignored pixels contribute nothing);
    2. area-downsample by ``factor`` to ``(ceil(H/F), ceil(W/F))``, dividing by the fraction
       of labelled pixels in each cell (a cell with no labelled pixel gets uniform
       probabilities);
    3. Gaussian-blur by ``sigma`` low-resolution pixels (replicate borders);
    4. bilinearly upsample back to ``(H, W)`` and renormalise.

    The result is what an ideal network with output stride ``F`` would give: right in the
    interior of regions, soft and displaced at boundaries, thin parts washed out. No
    randomness: the same mask always gives the same map.

    Shape:
        - mask: ``(H, W)`` integer class ids
        - output: ``(num_classes, H, W)`` float32 probabilities

    Example:
        >>> import torch
        >>> from spn.data import make_coarse_from_mask
        >>> mask = torch.zeros(64, 64, dtype=torch.long)
        >>> mask[:, 30:34] = 1                        # a 4 px bar: thinner than a coarse cell
        >>> coarse = make_coarse_from_mask(mask, 2, factor=8)
        >>> coarse.argmax(0).sum().item()             # the bar is washed out
        0
    """
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise ValueError(f"mask must be a (H, W) tensor, got shape {tuple(getattr(mask, 'shape', ()))}")
    if mask.is_floating_point():
        raise TypeError(f"mask must hold integer class ids, got dtype {mask.dtype}")
    num_classes = int(num_classes)
    factor = int(factor)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    mask = mask.long()
    bad = (mask != ignore_index) & ((mask < 0) | (mask >= num_classes))
    if bool(bad.any()):
        ids = sorted(set(mask[bad].unique().tolist()))
        raise ValueError(f"mask holds class ids {ids} outside [0, {num_classes}) (ignore = {ignore_index})")
    H, W = mask.shape
    oh = one_hot_mask(mask, num_classes, ignore_index)
    valid = (mask != ignore_index).float().unsqueeze(0)
    h, w = max(1, math.ceil(H / factor)), max(1, math.ceil(W / factor))
    if (h, w) != (H, W):
        oh = F.interpolate(oh.unsqueeze(0), size=(h, w), mode="area").squeeze(0)
        valid = F.interpolate(valid.unsqueeze(0), size=(h, w), mode="area").squeeze(0)
    low = torch.where(valid > 1e-6, oh / valid.clamp_min(1e-6), torch.full_like(oh, 1.0 / num_classes))
    low = gaussian_blur(low, sigma)
    return resize_probs(_renormalize(low), (H, W)).contiguous()


def scores_to_probs(scores: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Return ``(probs, was_softmaxed)``: ``scores`` ``(K, h, w)`` unchanged (renormalised) when
    they already are probabilities (all >= 0 and summing to 1 within 1e-3 at every pixel),
    else ``softmax`` over ``K``."""
    is_prob = bool((scores >= -_PROB_NEG_TOL).all()) and bool(
        ((scores.sum(dim=0) - 1).abs() <= _PROB_SUM_TOL).all())
    if is_prob:
        return _renormalize(scores), False
    return torch.softmax(scores, dim=0), True


def read_coarse_file(path, num_classes: int, size: tuple[int, int], ignore_index: int = 255, *,
                     owner: str = "the dataset", max_aspect_error: float | None = None) -> torch.Tensor:
    """Read a stored coarse map and return float32 ``(num_classes, H, W)`` probabilities at
    ``size = (H, W)``. This is the one reader of coarse files (datasets and ``spn refine``).

    - ``NAME.npy``: float scores ``(K, h, w)`` at any resolution. When they are not already
      probabilities (a negative value, or a pixel whose sum over ``K`` is not 1 within 1e-3)
      they are taken as logits and ``softmax`` is applied over ``K``. The probabilities are
      then bilinearly upsampled to the image (a convex combination, so they stay
      probabilities). ``K`` must equal ``num_classes``.
    - ``NAME.png``: class indices (palette or greyscale PNG), turned into one-hot
      probabilities (``ignore_index`` pixels -> uniform), then bilinearly resized if the
      resolution differs from the image.

    ``owner`` names who fixes ``num_classes`` in the error messages (``"checkpoint RUN"`` for
    ``spn refine``). With ``max_aspect_error`` the map must cover the image: its vertical and
    horizontal upsampling factors may differ by at most that fraction (``spn refine``: 0.1).

    Shape:
        - output: ``(num_classes, H, W)`` float32, summing to one over the classes
    """
    from .io import CorruptFileError, read_mask

    path = Path(path)
    H, W = int(size[0]), int(size[1])
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"coarse map {path} does not exist") from None
        except (ValueError, OSError, EOFError) as exc:
            raise CorruptFileError(f"cannot read coarse map {path}: {exc}") from exc
        if arr.ndim != 3:
            raise ValueError(f"coarse map {path} must be (K, h, w) scores, got shape {tuple(arr.shape)}")
        if arr.shape[0] != num_classes:
            raise ValueError(f"coarse map {path} has {arr.shape[0]} classes but {owner} has {num_classes} "
                             f"(shape {tuple(arr.shape)}: one channel per class)")
        if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"coarse map {path} must hold numbers, got dtype {arr.dtype}")
        _check_coverage(path, arr.shape[1:], (H, W), max_aspect_error)
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"coarse map {path} holds NaN or infinite values")
        probs, _ = scores_to_probs(t)
        return resize_probs(probs, (H, W)).contiguous()
    if suffix == ".png":
        m = torch.from_numpy(read_mask(path))
        bad = (m != ignore_index) & (m >= num_classes)
        if bool(bad.any()):
            ids = sorted(set(m[bad].unique().tolist()))[:10]
            raise ValueError(f"coarse label map {path} holds class ids {ids}, but {owner} has {num_classes} "
                             f"classes (0..{num_classes - 1}, {ignore_index} = unknown)")
        _check_coverage(path, tuple(m.shape), (H, W), max_aspect_error)
        oh = one_hot_mask(m, num_classes, ignore_index)
        oh = torch.where((m == ignore_index).unsqueeze(0), torch.full_like(oh, 1.0 / num_classes), oh)
        return resize_probs(oh, (H, W)).contiguous()
    raise ValueError(f"coarse map {path}: unsupported file type {path.suffix!r} (use .npy or .png)")


def _check_coverage(path, hw, size, max_aspect_error) -> None:
    """A coarse map of ``hw = (h, w)`` must be non-empty and, with ``max_aspect_error``, have the
    aspect ratio of the image ``size``."""
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1:
        raise ValueError(f"coarse map {path} is empty ({h} x {w})")
    if max_aspect_error is None:
        return
    H, W = size
    fy, fx = H / h, W / w
    if abs(fy - fx) > max_aspect_error * max(fy, fx):
        raise ValueError(f"coarse map {path} is {h} x {w} but the image is {H} x {W}: not the same aspect "
                         f"ratio (upsampling factors {fy:.3g} and {fx:.3g}); it must cover the whole image")
