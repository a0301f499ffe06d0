"""Scores of the mask task: IoU, boundary IoU and mBA of refined masks against the ground truth,
for the coarse input and for a refiner, on a dataset of ``{"image", "coarse", "mask"}`` items
(the held-out composites of :mod:`spn.data.composites`, or any such dataset).

Per image: the object's IoU (``refined >= 0.5`` against the target), its boundary IoU
(:class:`spn.metrics.boundary.BoundaryScores`, the object class) and mBA (the same class's
``"mba"``); each is averaged over the images, as CascadePSP reports them.

Example:
    >>> import torch
    >>> from spn.evaluation_mask import mask_scores
    >>> gt = torch.zeros(32, 32, dtype=torch.long); gt[8:24, 8:24] = 1
    >>> s = mask_scores(gt.bool(), gt); s["iou"], s["boundary_iou"], s["mba"]
    (1.0, 1.0, 1.0)
"""
from __future__ import annotations

import math
import time

import torch

from spn.metrics.boundary import BoundaryScores

__all__ = ["evaluate_masks", "mask_scores"]


def mask_scores(pred: torch.Tensor, target: torch.Tensor) -> dict:
    """``{"iou", "boundary_iou", "mba"}`` of a bool prediction ``(H, W)`` against a 0/1 target."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    p, t = pred.bool(), target.long() == 1
    union = float((p | t).sum())
    iou = float((p & t).sum()) / union if union else 1.0
    b = BoundaryScores(2, widths=(1,))
    b.update(p.long(), t.long())
    m = b.compute()
    biou = m["per_class_boundary_iou"][1]
    return {"iou": iou, "boundary_iou": 1.0 if math.isnan(biou) else biou, "mba": m["mba"]}


def _mean(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if not math.isnan(r[key])]
    return sum(vals) / len(vals) if vals else float("nan")


def evaluate_masks(refine, dataset, limit: int | None = None, methods: dict | None = None) -> dict:
    """Scores of the coarse input and of ``refine(image (3, H, W), coarse (H, W)) -> probability
    (H, W)`` (and of every ``name -> function`` of ``methods``) over ``dataset``'s items (the
    first ``limit``). Returns ``{"items": n, "num_images": n, "coarse": {...}, "refined": {...},
    NAME: {...}, "seconds": {...}}``, each score dict ``{"iou", "boundary_iou", "mba"}`` (means
    over images; ``"mean_iou"`` repeats ``"iou"``)."""
    fns = {"refined": refine} if refine is not None else {}
    fns.update(methods or {})
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    rows: dict[str, list] = {"coarse": [], **{k: [] for k in fns}}
    secs = {k: 0.0 for k in fns}
    for i in range(n):
        item = dataset[i]
        target, coarse = item["mask"], item["coarse"][0]
        rows["coarse"].append(mask_scores(coarse >= 0.5, target))
        for k, fn in fns.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                prob = torch.as_tensor(fn(item["image"], coarse))
            secs[k] += time.perf_counter() - t0
            rows[k].append(mask_scores(prob >= 0.5, target))
    out = {"items": n, "num_images": n}
    for k, r in rows.items():
        out[k] = {key: _mean(r, key) for key in ("iou", "boundary_iou", "mba")}
        out[k]["mean_iou"] = out[k]["iou"]  # the name spn train's report reads
    out["seconds"] = secs
    return out
