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

Stored maps are read by one function whatever the command (:func:`read_coarse_file`), and
arrays from Python (:class:`spn.inference.Refiner`) are converted by the same one
(:func:`prepare_coarse`). What a map holds is declared, never guessed from its values:

- the *kind*: ``probs`` (``(K, h, w)`` probabilities), ``logits`` (``(K, h, w)`` scores, softmax
  over ``K``) or ``labels`` (``(h, w)`` class ids, the only kind of a ``.png``), optionally with a
  scale (``probs:255``: uint8 probabilities); integer data declared probs/logits need a scale;
- declared by the option (``--coarse-kind``, ``coarse_kind=``), else by a sidecar file
  ``coarse.json`` in the folder of the maps (``{"kind": "logits"}``, ``{"kind": "probs",
  "scale": 255}``); the option wins over the sidecar (with a warning when they differ);
- by default ``probs`` for ``.npy`` files and ``labels`` for ``.png`` files.

A map that contradicts its kind (probabilities that do not sum to one within ``1e-3``, negative
probabilities, uint8 values without a scale, a wrong class count) is an error that says what to
declare, and so is a map whose aspect ratio differs from its image's by more than 10 %
(:func:`check_coverage`).

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

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

COARSE_SOURCES = ("files", "gt-downsample:F", "none")

# wrapping coarse sources: prefix -> wrap(dataset, arg, **options) -> dataset
_WRAPPERS: dict[str, Callable] = {}

#: what a stored coarse map holds (declared, never guessed)
COARSE_KINDS = ("probs", "logits", "labels")
#: the sidecar file of a folder of coarse maps: {"kind": "probs" | "logits" | "labels", "scale": 255}
SIDECAR = "coarse.json"
#: largest relative difference between a coarse map's vertical and horizontal upsampling factors
ASPECT_TOLERANCE = 0.1
# tolerances of a declared probability map: values >= -1e-6, sums within 1e-3 of one
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
    ``"PREFIX:ARG"`` (``ARG`` is a path, e.g. a run directory). The dataset is built with coarse source ``"none"`` and handed to ``wrap``
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


def absolute_coarse_spec(spec):
    """``spec`` with the argument of a wrapping source (a run directory: ``baseline:RUN``) made
    absolute, so a run can be resumed from another directory; other specs unchanged."""
    import os

    found = wrapping_source(spec) if isinstance(spec, str) else None
    if found is None:
        return spec
    prefix = spec.partition(":")[0]
    return f"{prefix}:{os.path.abspath(os.path.expanduser(found[1]))}"


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


# ----------------------------------------------------------------------------------------------
# the kind of a stored coarse map, and the one conversion of a coarse array to probabilities

@dataclass(frozen=True)
class CoarseKind:
    """What a coarse array holds: ``kind`` is ``"probs"``, ``"logits"``, ``"labels"`` or None (by
    file type: ``.png`` labels, ``.npy`` probs); ``scale`` divides the values first (``probs:255``
    for uint8 probabilities); ``origin`` says where the declaration came from (for messages)."""

    kind: str | None = None
    scale: float | None = None
    origin: str = "default"

    def __str__(self) -> str:
        k = self.kind or "by file type"
        return f"{k}:{self.scale:g}" if self.scale is not None else k

    def same(self, other: "CoarseKind") -> bool:
        return (self.kind, self.scale) == (other.kind, other.scale)


def coarse_kind_option(group: str | None = None):
    """The ``coarse_kind`` field of a command's config (``--coarse-kind KIND[:SCALE]``)."""
    from ..utils.config import option

    return option(None, metavar="KIND", group=group,
                  help="what stored coarse files hold: probs | logits | labels, optionally KIND:SCALE "
                       "(probs:255 for uint8 probabilities); wins over a coarse.json beside the maps",
                  default_help="the coarse.json beside the maps, else probs for .npy and labels for .png")


def parse_coarse_kind(spec, origin: str = "--coarse-kind") -> CoarseKind:
    """``"probs"``, ``"logits"``, ``"labels"``, ``"KIND:SCALE"`` (e.g. ``"probs:255"``), a dict
    ``{"kind": ..., "scale": ...}`` (a sidecar's content), a :class:`CoarseKind` or None (by file
    type) -> :class:`CoarseKind`. Anything else -> ValueError listing the kinds.

    Example:
        >>> from spn.data import parse_coarse_kind
        >>> k = parse_coarse_kind("probs:255")
        >>> k.kind, k.scale, str(k)
        ('probs', 255.0, 'probs:255')
    """
    if spec is None:
        return CoarseKind(None, None, "default")
    if isinstance(spec, CoarseKind):
        return spec
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"kind", "scale"})
        if unknown:
            raise ValueError(f"{origin}: unknown key(s) {unknown}; a coarse kind has 'kind' and optional 'scale'")
        kind, scale = spec.get("kind"), spec.get("scale")
    elif isinstance(spec, str):
        kind, _, scale = spec.strip().partition(":")
        scale = scale or None
    else:
        raise TypeError(f"{origin}: a coarse kind must be a string like 'probs' or 'probs:255', got {spec!r}")
    if kind not in COARSE_KINDS:
        raise ValueError(f"{origin}: unknown coarse kind {kind!r}; valid kinds: {', '.join(COARSE_KINDS)} "
                         "(optionally KIND:SCALE, e.g. probs:255 for uint8 probabilities)")
    if scale is not None:
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise ValueError(f"{origin}: the scale of {spec!r} must be a number, e.g. probs:255") from None
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"{origin}: the scale of {spec!r} must be a positive number")
        if kind == "labels":
            raise ValueError(f"{origin}: label maps take no scale (got {spec!r})")
    return CoarseKind(kind, scale, origin)


def read_sidecar(folder) -> CoarseKind | None:
    """The kind declared by ``FOLDER/coarse.json`` (``{"kind": "probs", "scale": 255}``), or None
    when the folder has no such file."""
    if folder is None:
        return None
    f = Path(folder) / SIDECAR
    if not f.is_file():
        return None
    from ..utils.io import read_json

    return parse_coarse_kind(read_json(f, "coarse sidecar"), origin=str(f))


def resolve_coarse_kind(option=None, folder=None, flag: str = "--coarse-kind") -> CoarseKind:
    """The kind of the coarse maps of ``folder``: the option when given (it wins over the sidecar;
    a sidecar that says otherwise gets a warning), else ``folder/coarse.json``, else by file type."""
    opt = parse_coarse_kind(option, flag) if option is not None else None
    side = read_sidecar(folder)
    if opt is not None and side is not None and not opt.same(side):
        log.warning(f"{flag} {opt} overrides {side.origin}, which declares {side}")
    return opt or side or CoarseKind(None, None, "default")


def _declared(kind: CoarseKind) -> str:
    if kind.origin.startswith("the default") or kind.origin == "default":
        return f"read as {kind.kind} ({'the default' if kind.origin == 'default' else kind.origin})"
    return f"declared {kind.kind} by {kind.origin}"


def coarse_to_probs(coarse, kind="probs", num_classes: int | None = None, *, ignore_index: int = 255,
                    where: str = "coarse map", owner: str = "the model") -> torch.Tensor:
    """Convert a coarse array of a declared kind to float32 class probabilities ``(K, h, w)`` at
    its own resolution. The one conversion of spn: the file reader (:func:`read_coarse_file`) and
    the Python API (:class:`spn.inference.Refiner`) both use it.

    - ``"probs"``: ``(K, h, w)`` non-negative values summing to one over ``K`` at every pixel
      (within ``1e-3``, plus the rounding of the declared scale); renormalised.
    - ``"logits"``: ``(K, h, w)`` finite scores; ``softmax`` over ``K``.
    - ``"labels"``: ``(h, w)`` (or ``(1, h, w)``) integer class ids in ``[0, K)``, ``ignore_index``
      = unknown; one-hot (unknown pixels uniform).

    ``kind`` is a string (``"probs:255"``: values divided by 255 first) or a :class:`CoarseKind`.
    Integer data declared ``probs``/``logits`` need a scale. A map that contradicts its kind
    (probabilities that do not sum to one, negative probabilities, a missing class axis, a class
    count other than ``num_classes``, NaN) is a ValueError naming ``where`` and what to declare.

    Shape:
        - coarse: ``(K, h, w)`` (probs, logits) or ``(h, w)`` (labels); numpy array or tensor
        - output: ``(K, h, w)`` float32, summing to one over ``K``

    Example:
        >>> import numpy as np
        >>> from spn.data import coarse_to_probs
        >>> u8 = np.array([[[255, 0]], [[0, 255]]], dtype=np.uint8)     # (K=2, 1, 2) probabilities x 255
        >>> coarse_to_probs(u8, "probs:255", 2).tolist()
        [[[1.0, 0.0]], [[0.0, 1.0]]]
        >>> coarse_to_probs(np.array([[0, 1]]), "labels", 2)[1].tolist()
        [[0.0, 1.0]]
    """
    k = parse_coarse_kind(kind, "kind") if not isinstance(kind, CoarseKind) else kind
    if k.kind is None:
        k = CoarseKind("probs", k.scale, k.origin)
    if isinstance(coarse, torch.Tensor):
        arr = coarse.detach().cpu().numpy()
    elif isinstance(coarse, np.ndarray):
        arr = coarse
    else:
        raise TypeError(f"{where}: expected a numpy array or a torch tensor, got {type(coarse).__name__}")
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{where}: expected numbers, got dtype {arr.dtype}")
    integer = np.issubdtype(arr.dtype, np.integer)
    K = None if num_classes is None else int(num_classes)
    if k.kind == "labels":
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            raise ValueError(f"{where}: {_declared(k)}, it must be a (h, w) map of class ids, got shape "
                             f"{tuple(arr.shape)}" + ("; (K, h, w) scores are probs or logits" if arr.ndim == 3 else ""))
        if not integer:
            raise TypeError(f"{where}: {_declared(k)}, it must hold integer class ids, got dtype {arr.dtype}; "
                            "(K, h, w) float scores are probs or logits")
        if K is None:
            raise ValueError(f"{where}: a label map needs the number of classes")
        m = torch.from_numpy(arr.astype(np.int64))
        bad = (m != ignore_index) & ((m < 0) | (m >= K))
        if bool(bad.any()):
            ids = sorted(set(m[bad].unique().tolist()))[:10]
            raise ValueError(f"coarse label map {where} holds class ids {ids}, but {owner} has {K} classes "
                             f"(0..{K - 1}, {ignore_index} = unknown)")
        _check_nonempty(where, m.shape)
        oh = one_hot_mask(m, K, ignore_index)
        return torch.where((m == ignore_index).unsqueeze(0), torch.full_like(oh, 1.0 / K), oh).contiguous()
    # probs / logits
    if arr.ndim != 3:
        hint = "; a (h, w) map of class ids is kind labels" if arr.ndim == 2 else ""
        raise ValueError(f"{where}: {_declared(k)}, it must be (K, h, w) scores, got shape {tuple(arr.shape)}{hint}")
    if K is not None and arr.shape[0] != K:
        hint = (" (channel-last? give (K, h, w))" if arr.shape[-1] == K else "")
        raise ValueError(f"{where} has {arr.shape[0]} classes but {owner} has {K} "
                         f"(shape {tuple(arr.shape)}: one channel per class){hint}")
    _check_nonempty(where, arr.shape[1:])
    if integer and k.scale is None:
        info = np.iinfo(arr.dtype)
        raise ValueError(f"{where} holds {arr.dtype} values ({int(arr.min())}..{int(arr.max())}), {_declared(k)}, "
                         f"without a scale: declare it, e.g. --coarse-kind {k.kind}:{info.max} or "
                         f'{{"kind": "{k.kind}", "scale": {info.max}}} in {SIDECAR} (or coarse_kind="{k.kind}:{info.max}")')
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64 if integer else np.float32)).float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{where} holds NaN or infinite values")
    if k.scale is not None:
        t = t / float(k.scale)
    if k.kind == "logits":
        return torch.softmax(t, dim=0).contiguous()
    # probabilities: check them, do not guess
    lo = float(t.min())
    if lo < -_PROB_NEG_TOL:
        raise ValueError(f"{where}, {_declared(k)}, holds negative values (min {lo:.4g}), which probabilities "
                         "cannot be; if it holds logits, declare --coarse-kind logits (or \"kind\": \"logits\" "
                         f"in {SIDECAR})")
    sums = t.double().sum(dim=0)
    eps = float(np.finfo(arr.dtype).eps) if not integer else 0.0
    tol = _PROB_SUM_TOL + arr.shape[0] * (eps + (0.5 / k.scale if integer else 0.0))
    err = (sums - 1).abs()
    if bool((err > tol).any()):
        y, x = divmod(int(err.argmax()), sums.shape[1])
        advice = []
        if float(sums.max()) > 1.5:
            scale = 255 if float(t.max()) > 1.5 and float(t.max()) <= 255 else None
            if scale:
                advice.append(f"if the values are probabilities times {scale}, declare probs:{scale}")
        advice.append("if it holds logits, declare --coarse-kind logits (or \"kind\": \"logits\" in "
                      f"{SIDECAR})")
        raise ValueError(f"{where}, {_declared(k)}, does not sum to one over its {arr.shape[0]} classes: "
                         f"{float(sums[y, x]):.6g} at pixel (y={y}, x={x}) (tolerance {tol:.2g}); "
                         + "; ".join(advice))
    return _renormalize(t).contiguous()


def _check_nonempty(where, hw) -> None:
    h, w = int(hw[-2]), int(hw[-1])
    if h < 1 or w < 1:
        raise ValueError(f"coarse map {where} is empty ({h} x {w})")


def check_coverage(where, hw, size, max_aspect_error: float | None = ASPECT_TOLERANCE) -> None:
    """A coarse map of ``hw = (h, w)`` must have the aspect ratio of the image ``size = (H, W)``:
    its vertical and horizontal upsampling factors ``H/h`` and ``W/w`` may differ by at most
    ``max_aspect_error`` (a fraction of the larger one) plus one coarse pixel of rounding
    (``H/h^2 + W/w^2``, which matters for small maps); else ValueError."""
    h, w = int(hw[0]), int(hw[1])
    _check_nonempty(where, (h, w))
    if max_aspect_error is None:
        return
    H, W = int(size[0]), int(size[1])
    fy, fx = H / h, W / w
    allowed = max_aspect_error * max(fy, fx) + fy / h + fx / w
    if abs(fy - fx) > allowed:
        raise ValueError(f"coarse map {where} is {h} x {w} but the image is {H} x {W}: not the same aspect "
                         f"ratio (upsampling factors {fy:.3g} and {fx:.3g}); it must cover the whole image")


def prepare_coarse(coarse, kind, num_classes: int, size: tuple[int, int], *, ignore_index: int = 255,
                   where: str = "coarse map", owner: str = "the model",
                   max_aspect_error: float | None = ASPECT_TOLERANCE) -> torch.Tensor:
    """A coarse array of any resolution (a segmenter's 1/8 output) -> float32 ``(K, H, W)``
    probabilities at the image's ``size``: :func:`coarse_to_probs`, the aspect-ratio check
    (:func:`check_coverage`), then :func:`resize_probs` (bilinear, align_corners=False). What
    every coarse map of spn goes through, from a file or from a Python array.

    Shape:
        - coarse: ``(K, h, w)`` or ``(h, w)`` (labels)
        - output: ``(K, H, W)`` float32

    Example:
        >>> import numpy as np
        >>> from spn.data import prepare_coarse
        >>> labels = np.zeros((4, 6), dtype=np.int64); labels[:, 3:] = 1
        >>> prepare_coarse(labels, "labels", 2, (32, 48)).argmax(0)[0, ::8].tolist()
        [0, 0, 0, 1, 1, 1]
    """
    probs = coarse_to_probs(coarse, kind, num_classes, ignore_index=ignore_index, where=where, owner=owner)
    check_coverage(where, probs.shape[1:], size, max_aspect_error)
    return resize_probs(probs, (int(size[0]), int(size[1]))).contiguous()


def load_coarse_array(path, kind=None) -> tuple[np.ndarray, CoarseKind]:
    """The raw array of a coarse file and its kind: ``kind`` (a declaration) or, when None, the
    sidecar of the file's folder, else the file type's (``.png`` labels, ``.npy`` probs). A PNG
    holds class ids: declaring it ``probs``/``logits`` is an error."""
    from ..image.io import CorruptFileError, read_mask

    path = Path(path)
    k = parse_coarse_kind(kind) if kind is not None else (read_sidecar(path.parent) or CoarseKind())
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"coarse map {path} does not exist") from None
        except PermissionError:
            raise
        except (ValueError, OSError, EOFError) as exc:
            raise CorruptFileError(f"cannot read coarse map {path}: {exc}") from exc
        return arr, (k if k.kind is not None else CoarseKind("probs", k.scale, "the default for .npy"))
    if suffix == ".png":
        if k.kind not in (None, "labels"):
            raise ValueError(f"coarse map {path} is a PNG, which holds class ids (kind labels), but it is "
                             f"{_declared(k)}; store probabilities or logits as (K, h, w) .npy")
        return read_mask(path), CoarseKind("labels", None, k.origin if k.kind else "the default for .png")
    raise ValueError(f"coarse map {path}: unsupported file type {path.suffix!r} (use .npy or .png)")


def read_coarse_file(path, num_classes: int, size: tuple[int, int], ignore_index: int = 255, *,
                     kind=None, owner: str = "the dataset",
                     max_aspect_error: float | None = ASPECT_TOLERANCE) -> torch.Tensor:
    """Read a stored coarse map and return float32 ``(num_classes, H, W)`` probabilities at
    ``size = (H, W)``. This is the one reader of coarse files (datasets, ``spn refine``).

    - ``NAME.npy``: ``(K, h, w)`` probabilities (the default) or logits, or ``(h, w)`` labels, as
      declared by ``kind`` (``"probs"``, ``"logits"``, ``"labels"``, optionally ``KIND:SCALE``),
      else by ``coarse.json`` in the file's folder. Nothing is guessed: a map that contradicts
      its kind is an error (:func:`coarse_to_probs`).
    - ``NAME.png``: class indices (palette or greyscale PNG): one-hot probabilities
      (``ignore_index`` pixels uniform).

    The map may have any resolution of the image's aspect ratio (within ``max_aspect_error``,
    :func:`check_coverage`) and is bilinearly upsampled (:func:`prepare_coarse`). ``owner``
    names who fixes ``num_classes`` in the error messages (``"checkpoint RUN"`` for ``spn refine``).

    Shape:
        - output: ``(num_classes, H, W)`` float32, summing to one over the classes
    """
    arr, k = load_coarse_array(path, kind)
    return prepare_coarse(arr, k, num_classes, size, ignore_index=ignore_index, where=str(path), owner=owner,
                          max_aspect_error=max_aspect_error)
