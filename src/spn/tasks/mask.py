"""The mask task (``--task mask``): the class-agnostic mask refiner, ``spn refine IMAGE --mask
MASK --out OUT.png`` with the model shipped in the package, and its training.

Training (``spn train --task mask``; :class:`MaskTask`): the composites of real photos
(``--data composites:skimage`` or ``composites:PATH``, a folder of photos with ``splits/``;
:mod:`spn.data.composites`), one fresh ``--patch-size`` composite per training sample
(:class:`spn.data.composites.CompositePatches`), the class-agnostic refiner (``--model
mask_refiner``; the default segmentation names mean it too), the loss (binary cross-entropy on
the logit, pixels within two of the target's boundary weighted :data:`BOUNDARY_WEIGHT` times;
normalised by the total weight of the global batch) and the final evaluation
(:func:`spn.evaluation_mask.evaluate_masks` on the held-out composites of the validation photos:
IoU, boundary IoU and mBA of the coarse input and of the refined mask).

Refining (``spn refine``; :meth:`MaskTask.refine`, options :class:`MaskRefineOptions`): the
shipped refiner (:meth:`spn.inference_mask.MaskRefiner.pretrained`) or, with ``--checkpoint``,
the one of a ``spn train --task mask`` run; ``docs/refine.md`` is the reference.

Example:
    >>> import torch
    >>> from spn.tasks.mask import mask_loss_sum
    >>> t = torch.zeros(1, 1, 8, 8); t[..., 2:6, 2:6] = 1
    >>> s, w = mask_loss_sum(torch.zeros(1, 1, 8, 8), t)
    >>> round(float(s / w), 4)  # log 2 for a logit of zero
    0.6931
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spn.image import read_image, write_image, write_mask
from spn.image.io import MASK_FORMATS
from spn.image.mask import read_object_mask, write_object_mask
from spn.data.composites import CompositePatches
from spn.evaluation_mask import evaluate_masks
from spn.experiments.mask_demo import MaskDemoConfig, run_mask_demo
from spn.inference_mask import MaskRefiner, refine_tiled
from spn.models import model_config_class
from spn.models.mask_refiner import MaskRefinerConfig

from spn.training import distributed as D
from spn.utils.config import ConfigBase, option
from spn.viz import overlay

from . import BaseTask, register_task
from .datasets import train_val_datasets
from .jobs import plan_jobs, run_jobs, write_together

__all__ = ["BOUNDARY_WEIGHT", "MASK_DATA", "MaskRefineOptions", "MaskTask", "mask_loss_sum", "mask_model_name",
           "refine_mask_files"]

log = logging.getLogger(__name__)

MASK_DATA = ("composites",)
#: extra weight of the pixels within two pixels of the target's boundary
BOUNDARY_WEIGHT = 4.0
#: the segmentation model names, which mean the mask refiner under ``--task mask``
MASK_MODEL_ALIASES = {"spn_three_way": "mask_refiner", "spn_one_way": "mask_refiner"}


@dataclass
class MaskRefineOptions(ConfigBase):
    """The mask task's options of ``spn refine`` (``docs/refine.md``)."""

    mask: str | None = option(None, metavar="MASK",
                              help="the object's mask: a PNG (0/1, 0/255 or 8-bit soft 0..255 = probability) or "
                                   "a float .npy in [0, 1], at any resolution of the image's aspect ratio "
                                   "(a folder of NAME.png / NAME.npy with a folder of images)")
    soft: bool = option(False, help="write the refined probability (8-bit PNG, or float32 if --out ends in .npy) "
                                    "instead of a 0/255 mask")
    labels: bool = option(False, help="MASK is a label map of several objects (object ids; palette or grey PNG, "
                                      "or an integer .npy): each id is refined against the rest, then the argmax")
    overlay: str | None = option(None, help="also write the labels blended over the image", metavar="PNG")
    alpha: float = option(0.5, help="overlay opacity")
    confidence: float | None = option(None, metavar="C",
                                      help="change the mask's decision only where the refiner's probability is at "
                                           "least C away from 0.5 (0 <= C < 0.5; larger leaves a nearly right mask "
                                           "more as it is)", default_help="the model's stored setting, 0")
    snap: bool | None = option(None, help="end with the guided filter of the refined probability, guided by the photo "
                                          "at full resolution (spn.image.filters.guided_filter, radius 8)",
                               negative="--no-snap", negative_help="leave the refined probability unfiltered",
                               default_help="the model's stored setting")

    def validate(self) -> "MaskRefineOptions":
        if self.soft and self.labels:
            raise ValueError("--soft and --labels exclude each other (a label map has no probability)")
        if self.confidence is not None and not 0.0 <= self.confidence < 0.5:
            raise ValueError(f"--confidence must be in [0, 0.5), got {self.confidence}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {self.alpha}")
        return self


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


class MaskTask(BaseTask):
    """The mask task (see the module docstring)."""

    name = "mask"
    help = ("mask: refine one object's mask (binary or soft) on any photo, class-agnostic; trains on "
            "--data composites:skimage or composites:PATH")
    options = {"refine": MaskRefineOptions, "demo": MaskDemoConfig}
    #: ``spn refine`` without ``--checkpoint`` uses the model shipped in the package
    ships_model = True

    def build_datasets(self, cfg, device, run_dir, train_dataset=None, val_dataset=None, need_val=True):
        prefix = cfg.data.split(":", 1)[0].lower()
        if train_dataset is None and prefix not in MASK_DATA:
            raise ValueError(f"--task mask trains on composites of photos: --data composites:skimage or "
                             f"composites:PATH, got {cfg.data!r}")
        kw = dict(cfg.data_options)
        return train_val_datasets(cfg, kw, train_dataset, val_dataset, need_val)

    def refine(self, cfg, opts: MaskRefineOptions) -> str:
        return refine_mask_files(cfg, opts)

    def demo(self, opts: MaskDemoConfig) -> dict:
        return run_mask_demo(opts)

    def data_info(self, ds) -> dict:
        info = dict(ds.info()) if hasattr(ds, "info") else {}
        info.update(task=self.name, num_classes=2)
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


def _refine_job(refiner: MaskRefiner, job, opts: MaskRefineOptions) -> None:
    """Refine one image's mask and write its outputs (the mask and its overlay, together)."""
    image = read_image(job.image)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if opts.labels:
            result = refiner.refine_labels(image, read_object_mask(job.coarse, labels=True))
        else:
            result = refiner.refine_proba(image, read_object_mask(job.coarse))
    for w in caught:
        log.warning(f"{job.image.name}: {w.message}")
    labels = result if opts.labels else (result >= 0.5).astype(np.int64)
    shown = overlay(image, torch.from_numpy(labels), alpha=opts.alpha) if job.overlay is not None else None
    if opts.labels:
        write_out = lambda p: write_mask(p, labels)  # noqa: E731
    else:
        write_out = lambda p: write_object_mask(p, result, soft=opts.soft)  # noqa: E731
    write_together([(job.out, write_out), (job.overlay, lambda p: write_image(p, shown))])


def refine_mask_files(cfg, opts: MaskRefineOptions) -> str:
    """``spn refine`` of the mask task: the mask of an image (or of every image of a folder)
    refined by the shipped refiner, or by ``cfg.checkpoint``'s; returns the line to print."""
    if opts.mask is None:
        raise ValueError("pass --mask MASK: the object's mask to refine (a PNG or a float .npy; a folder of "
                         "them with a folder of images)")
    soft_npy = opts.soft and Path(cfg.out).suffix.lower() == ".npy" and Path(cfg.image).is_file()
    formats = {".npy": "NPY", **MASK_FORMATS} if soft_npy else MASK_FORMATS
    jobs = plan_jobs(cfg.image, opts.mask, cfg.out, opts.overlay, True, flag="--mask", out_formats=formats)
    kw = {} if opts.confidence is None else {"confidence": float(opts.confidence)}
    if opts.snap is not None:
        kw["snap"] = bool(opts.snap)
    refiner = (MaskRefiner.pretrained(**kw) if cfg.checkpoint is None
               else MaskRefiner.from_checkpoint(cfg.checkpoint, **kw))
    run_jobs(jobs, lambda job: _refine_job(refiner, job, opts), on_error=cfg.on_error, show=cfg.progress)
    if len(jobs) == 1:
        return f"wrote {jobs[0].out}" + (f" and {jobs[0].overlay}" if jobs[0].overlay else "")
    return f"refined {len(jobs)} masks into {Path(cfg.out)}"


register_task(MaskTask())
