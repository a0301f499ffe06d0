"""The mask task's part of the training loop (``spn train --task mask``).

:class:`MaskTask` gives :func:`spn.training.train` what differs from segmentation: the
composites of real photos (``--data composites:skimage`` or ``composites:PATH``, a folder of
photos with ``splits/``; :mod:`spn.data.composites`), one fresh ``--patch-size`` composite per
training sample (:class:`spn.data.composites.CompositePatches`), the class-agnostic refiner
(``--model mask_refiner``; the default segmentation names mean it too), the loss (binary
cross-entropy on the logit, pixels within two of the target's boundary weighted
:data:`BOUNDARY_WEIGHT` times; normalised by the total weight of the global batch) and the final
evaluation (:func:`spn.evaluation_mask.evaluate_masks` on the held-out composites of the
validation photos: IoU, boundary IoU and mBA of the coarse input and of the refined mask).

Example:
    >>> import torch
    >>> from spn.training.mask import mask_loss_sum
    >>> t = torch.zeros(1, 1, 8, 8); t[..., 2:6, 2:6] = 1
    >>> s, w = mask_loss_sum(torch.zeros(1, 1, 8, 8), t)
    >>> round(float(s / w), 4)  # log 2 for a logit of zero
    0.6931
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from spn.data import build_dataset
from spn.data.composites import CompositePatches
from spn.evaluation_mask import evaluate_masks
from spn.inference_mask import refine_tiled
from spn.models import model_config_class
from spn.models.mask_refiner import MaskRefinerConfig

from . import distributed as D

__all__ = ["BOUNDARY_WEIGHT", "MASK_DATA", "MaskTask", "mask_loss_sum", "mask_model_name"]

MASK_DATA = ("composites",)
#: extra weight of the pixels within two pixels of the target's boundary
BOUNDARY_WEIGHT = 4.0
#: the segmentation model names, which mean the mask refiner under ``--task mask``
MASK_MODEL_ALIASES = {"spn_three_way": "mask_refiner", "spn_one_way": "mask_refiner"}


def mask_model_name(name: str) -> str:
    """The mask model ``name`` means; a model that is not one -> ValueError naming the valid one."""
    name = MASK_MODEL_ALIASES.get(name, name)
    if model_config_class(name) is not MaskRefinerConfig:
        raise ValueError(f"model {name!r} is not a mask refiner; --task mask trains mask_refiner")
    return name


def mask_loss_sum(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of w * BCE(logit, target), sum of w)``, ``w = 1 + BOUNDARY_WEIGHT`` within two pixels
    of the target's boundary, else 1.

    Shape: ``logits``, ``target``: ``(B, 1, H, W)``; returns two 0-dim tensors.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
    t = target.to(logits.dtype)
    band = F.max_pool2d(t, 5, 1, 2) + F.max_pool2d(-t, 5, 1, 2)  # 1 where both labels are near
    w = 1.0 + BOUNDARY_WEIGHT * band.detach()
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    return (bce * w).sum(), w.sum()


class MaskTask:
    """The mask task's datasets, patches, model options, loss and evaluation (see the module)."""

    name = "mask"

    def build_datasets(self, cfg, device, run_dir, train_dataset=None, val_dataset=None, need_val=True):
        if cfg.coarse not in (None, "none"):
            raise ValueError(f"--coarse {cfg.coarse} does not apply to --task mask (the composites make "
                             "their own coarse masks)")
        prefix = cfg.data.split(":", 1)[0].lower()
        if train_dataset is None and prefix not in MASK_DATA:
            raise ValueError(f"--task mask trains on composites of photos: --data composites:skimage or "
                             f"composites:PATH, got {cfg.data!r}")
        kw = dict(cfg.data_options)
        train = train_dataset if train_dataset is not None else build_dataset(cfg.data, split="train", **kw)
        val, note = val_dataset, None
        if val is None and need_val and cfg.val_split and train_dataset is None:
            try:
                val = build_dataset(cfg.data, split=cfg.val_split, **kw)
            except (ValueError, FileNotFoundError) as exc:
                note, val = f"no validation split {cfg.val_split!r}: {exc}", None
        if len(train) == 0:
            raise ValueError(f"the training dataset {cfg.data!r} is empty")
        return train, val, note

    def data_info(self, ds) -> dict:
        info = dict(ds.info()) if hasattr(ds, "info") else {}
        info.update(task="mask", num_classes=2)
        return info

    def patches(self, train_ds, cfg):
        return CompositePatches(train_ds, size=cfg.patch_size, patches_per_image=cfg.patches_per_image,
                                flip=cfg.flip, seed=cfg.seed)

    def model_options(self, cfg, dinfo) -> tuple[str, dict]:
        return mask_model_name(cfg.model), dict(cfg.model_cfg)

    def loss(self, dmodel, batch, device, ctx, cfg):
        """``(loss to backpropagate, global weighted loss sum (float64), global weight sum)``."""
        image = batch["image"].to(device, non_blocking=True)
        coarse = batch["coarse"].to(device, non_blocking=True)
        target = batch["mask"].to(device, non_blocking=True)[:, None]
        logits = dmodel(image, coarse)
        loss_sum, weight = mask_loss_sum(logits, target)
        count = D.all_reduce_sum(weight.detach().to(torch.float64).reshape(1), ctx)
        loss = loss_sum * (ctx.world_size / count.clamp_min(1).to(loss_sum.dtype))
        stat = D.all_reduce_sum(loss_sum.detach().to(torch.float64).reshape(1), ctx)
        return loss, stat, count

    def evaluate(self, model, val_ds, limit=None) -> dict:
        model.eval()
        return evaluate_masks(lambda image, coarse: refine_tiled(model, image, coarse), val_ds, limit=limit)
