"""Fully connected CRF (Kraehenbuehl & Koltun, NIPS 2011) on the coarse probabilities.

Energy ``E(x) = sum_i psi_u(x_i) + sum_{i<j} mu(x_i, x_j) k(f_i, f_j)`` with the unary
``psi_u = -log p_coarse`` and a Potts compatibility over two kernels (positions ``p`` in
pixels, colours ``I`` in 0..255):

- appearance (bilateral): ``w1 exp(-|p_i - p_j|^2 / (2 bil_sxy^2) - |I_i - I_j|^2 / (2 bil_srgb^2))``
- smoothness (Gaussian):  ``w2 exp(-|p_i - p_j|^2 / (2 gauss_sxy^2))``

solved by mean-field inference (``iterations`` steps) with the permutohedral lattice of
``pydensecrf`` (an optional dependency: ``pip install pydensecrf2`` or the ``crf`` extra).
Defaults are those of DeepLab's CRF post-processing (Chen et al.; the paper's [5]).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from ._base import Peer


def _import_densecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:
        raise RuntimeError(
            "the dense CRF peer needs pydensecrf: pip install pydensecrf2 "
            "(or install spn with the `crf` extra: pip install -e '.[crf]')"
        ) from exc
    return dcrf


def densecrf_available() -> bool:
    try:
        _import_densecrf()
    except RuntimeError:
        return False
    return True


@dataclass
class DenseCRFParams:
    """Kernel widths in pixels (``*_sxy``) and colour levels 0..255 (``bil_srgb``); weights ``*_compat``."""

    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bil_sxy: float = 80.0
    bil_srgb: float = 13.0
    bil_compat: float = 10.0
    iterations: int = 5
    min_prob: float = 1e-8  # the unary is -unary_scale * log(max(p, min_prob))
    unary_scale: float = 1.0  # the unary's confidence: > 1 trusts the coarse input more


    def __post_init__(self):
        for f in ("gauss_sxy", "bil_sxy", "bil_srgb"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"densecrf: {f} must be a positive number, got {v!r}")
        for f in ("gauss_compat", "bil_compat"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"densecrf: {f} must be a number >= 0, got {v!r}")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"densecrf: iterations must be an int >= 1, got {self.iterations!r}")
        if not (0 < self.min_prob < 1):
            raise ValueError(f"densecrf: min_prob must be in (0, 1), got {self.min_prob!r}")
        v = self.unary_scale
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"densecrf: unary_scale must be a positive number, got {v!r}")


class DenseCRF(Peer):
    """``refine(image (3,H,W) in [0,1], coarse (K,H,W)) -> probs (K,H,W)`` (the CRF's marginals)."""

    name = "densecrf"
    title = "dense CRF"

    params_class = DenseCRFParams

    def __init__(self, **params):
        super().__init__(**params)
        self._dcrf = _import_densecrf()

    def _refine(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        p = self.params
        K, H, W = coarse.shape
        probs = coarse.numpy().astype(np.float32)
        probs = probs / np.maximum(probs.sum(0, keepdims=True), 1e-12)
        unary = -float(p.unary_scale) * np.log(np.clip(probs, p.min_prob, 1.0)).reshape(K, H * W)
        rgb = np.ascontiguousarray(
            (image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy())
        crf = self._dcrf.DenseCRF2D(W, H, K)
        crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
        crf.addPairwiseGaussian(sxy=float(p.gauss_sxy), compat=float(p.gauss_compat))
        crf.addPairwiseBilateral(sxy=float(p.bil_sxy), srgb=float(p.bil_srgb), rgbim=rgb,
                                 compat=float(p.bil_compat))
        q = np.array(crf.inference(int(p.iterations)), dtype=np.float32).reshape(K, H, W)
        return torch.from_numpy(q)


# The default search, in two stages (each stage: every combination, around the best of the one
# before). Stage 1: the strengths, from off (compat 0: the CRF returns its input, so the tuned CRF
# never scores below its input on the tuning split) through weak to DeepLab's, with fewer
# iterations and a more confident unary. Stage 2: the kernel widths at the chosen strengths.
# 60 + 27 settings.
DEFAULT_CRF_GRID = [
    {
        "bil_compat": [0.0, 1.0, 3.0, 5.0, 10.0],
        "gauss_compat": [0.0, 1.0, 3.0],
        "iterations": [2, 5],
        "unary_scale": [1.0, 3.0],
    },
    {
        "bil_sxy": [20.0, 50.0, 80.0],
        "bil_srgb": [5.0, 13.0, 30.0],
        "gauss_sxy": [1.0, 3.0, 5.0],
    },
]


def grid_search(dataset, param_grid: dict | None = None, limit: int | None = 8, protocol: str = "plain",
                base: dict | None = None) -> dict:
    """Pick dense CRF parameters by mean IoU on (a part of) a dataset, e.g. the training split.

    Args:
        dataset: items with "image" (3, H, W), "coarse" (K, H, W) and "mask" (H, W); exposes
            ``num_classes`` (optional ``class_names``, ``ignore_index``).
        param_grid: parameter name -> list of values (every combination is tried), or a list of
            such dicts: stages searched in turn, each around the best of the previous one;
            default :data:`DEFAULT_CRF_GRID` (two stages, weak settings and "off" included).
        limit: the first ``limit`` items are used (None: all).
        protocol: the evaluation protocol ("plain", "voc", "helen") of the scores.
        base: parameters held fixed (overridden by the grid).
    Returns:
        ``{"best": params dict, "best_mean_iou": float, "input_mean_iou": float (the coarse input's
        argmax on the same images), "results": [{"params", "mean_iou"}, ...], "images": n}``;
        ties keep the first setting in grid order.
    """
    from spn.metrics import get_protocol

    stages = DEFAULT_CRF_GRID if param_grid is None else param_grid
    if isinstance(stages, dict):
        stages = [stages]
    if not isinstance(stages, (list, tuple)) or not stages or not all(isinstance(g, dict) and g for g in stages):
        raise ValueError("densecrf grid_search: empty param_grid")
    known = {f.name for f in fields(DenseCRFParams)}
    for grid in stages:
        for k, v in grid.items():
            if k not in known:
                raise ValueError(f"densecrf grid_search: unknown parameter {k!r}; valid are {sorted(known)}")
            if not isinstance(v, (list, tuple)) or not v:
                raise ValueError(f"densecrf grid_search: {k} must map to a non-empty list, got {v!r}")
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n < 1:
        raise ValueError("densecrf grid_search: the dataset is empty")
    items = []
    for i in range(n):
        item = dataset[i]
        if "coarse" not in item:
            raise ValueError(f"densecrf grid_search: item {i} ({item.get('name', '?')}) has no 'coarse' map")
        items.append(item)
    def new_protocol():
        return get_protocol(protocol, num_classes=int(dataset.num_classes),
                            class_names=getattr(dataset, "class_names", None),
                            ignore_index=getattr(dataset, "ignore_index", 255))

    proto = new_protocol()
    for item in items:
        co = item["coarse"].float()
        proto.accumulate(proto.prepare(co, co).argmax(0), item["mask"])
    input_miou = proto.compute()["mean_iou"]
    results = []
    best = None
    start = dict(base or {})
    for grid in stages:
        names = list(grid)
        for combo in itertools.product(*(grid[k] for k in names)):
            params = dict(start)
            params.update(dict(zip(names, combo)))
            peer = DenseCRF(**params)
            proto = new_protocol()
            for item in items:
                probs = peer.refine(item["image"], item["coarse"])
                scores = proto.prepare(probs, item["coarse"].float())
                proto.accumulate(scores.argmax(0), item["mask"])
            miou = proto.compute()["mean_iou"]
            full = asdict(peer.params)
            results.append({"params": full, "mean_iou": miou})
            if best is None or (miou > best["mean_iou"]):
                best = results[-1]
        start = dict(best["params"])
    return {"best": best["params"], "best_mean_iou": best["mean_iou"], "input_mean_iou": input_miou,
            "results": results, "images": n}
