"""The one conversion of a coarse array of a declared kind to class probabilities
(:func:`coarse_to_probs`), the aspect-ratio check (:func:`check_coverage`) and both with the
resize to the image (:func:`prepare_coarse`).
"""
from __future__ import annotations

import numpy as np
import torch

from .kinds import SIDECAR, CoarseKind, _declared, parse_coarse_kind
from .simulate import _renormalize, one_hot_mask, resize_probs

#: largest relative difference between a coarse map's vertical and horizontal upsampling factors
ASPECT_TOLERANCE = 0.1
# tolerances of a declared probability map: values >= -1e-6, sums within 1e-3 of one
_PROB_NEG_TOL = 1e-6
_PROB_SUM_TOL = 1e-3


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
    arr = _as_array(coarse, where)
    K = None if num_classes is None else int(num_classes)
    if k.kind == "labels":
        return _labels_to_probs(arr, k, K, ignore_index, where, owner)
    t = _scores_tensor(arr, k, K, where, owner)
    if k.kind == "logits":
        return torch.softmax(t, dim=0).contiguous()
    _check_probabilities(t, arr, k, where)
    return _renormalize(t).contiguous()


def _as_array(coarse, where: str) -> np.ndarray:
    """A numpy view of a coarse array (tensor or array) of numbers; TypeError otherwise."""
    if isinstance(coarse, torch.Tensor):
        arr = coarse.detach().cpu().numpy()
    elif isinstance(coarse, np.ndarray):
        arr = coarse
    else:
        raise TypeError(f"{where}: expected a numpy array or a torch tensor, got {type(coarse).__name__}")
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{where}: expected numbers, got dtype {arr.dtype}")
    return arr


def _labels_to_probs(arr: np.ndarray, k: CoarseKind, K, ignore_index: int, where: str, owner: str) -> torch.Tensor:
    """A ``(h, w)`` map of class ids -> one-hot ``(K, h, w)`` (``ignore_index`` pixels uniform)."""
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"{where}: {_declared(k)}, it must be a (h, w) map of class ids, got shape "
                         f"{tuple(arr.shape)}" + ("; (K, h, w) scores are probs or logits" if arr.ndim == 3 else ""))
    if not np.issubdtype(arr.dtype, np.integer):
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


def _scores_tensor(arr: np.ndarray, k: CoarseKind, K, where: str, owner: str) -> torch.Tensor:
    """A ``(K, h, w)`` array of probabilities or logits, checked (shape, class count, a scale for
    integers, finite) and divided by its scale: float32."""
    if arr.ndim != 3:
        hint = "; a (h, w) map of class ids is kind labels" if arr.ndim == 2 else ""
        raise ValueError(f"{where}: {_declared(k)}, it must be (K, h, w) scores, got shape {tuple(arr.shape)}{hint}")
    if K is not None and arr.shape[0] != K:
        hint = (" (channel-last? give (K, h, w))" if arr.shape[-1] == K else "")
        raise ValueError(f"{where} has {arr.shape[0]} classes but {owner} has {K} "
                         f"(shape {tuple(arr.shape)}: one channel per class){hint}")
    _check_nonempty(where, arr.shape[1:])
    integer = np.issubdtype(arr.dtype, np.integer)
    if integer and k.scale is None:
        info = np.iinfo(arr.dtype)
        raise ValueError(f"{where} holds {arr.dtype} values ({int(arr.min())}..{int(arr.max())}), {_declared(k)}, "
                         f"without a scale: declare it, e.g. --coarse-kind {k.kind}:{info.max} or "
                         f'{{"kind": "{k.kind}", "scale": {info.max}}} in {SIDECAR} (or coarse_kind="{k.kind}:{info.max}")')
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64 if integer else np.float32)).float()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{where} holds NaN or infinite values")
    return t / float(k.scale) if k.scale is not None else t


def _check_probabilities(t: torch.Tensor, arr: np.ndarray, k: CoarseKind, where: str) -> None:
    """Declared probabilities must be non-negative and sum to one over the classes (within
    ``1e-3`` plus the rounding of the dtype and of the declared scale); else a ValueError saying
    what to declare instead."""
    lo = float(t.min())
    if lo < -_PROB_NEG_TOL:
        raise ValueError(f"{where}, {_declared(k)}, holds negative values (min {lo:.4g}), which probabilities "
                         "cannot be; if it holds logits, declare --coarse-kind logits (or \"kind\": \"logits\" "
                         f"in {SIDECAR})")
    integer = np.issubdtype(arr.dtype, np.integer)
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
