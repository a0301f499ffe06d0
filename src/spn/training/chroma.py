"""The chroma task's part of the training loop (``spn train --task chroma``).

:class:`ChromaTask` gives :func:`spn.training.train` what differs from segmentation: the photo
datasets (``photos:PATH``, ``photos:skimage``) with the chroma subsampled ``--factor`` times,
their training crops (:class:`spn.data.PhotoPatches`: random crops, scales and flips), the
chroma model (``--model chroma_three_way`` / ``chroma_one_way``; the segmentation names
``spn_three_way`` / ``spn_one_way``, the default, mean the chroma model of that connection), the
loss (``--loss l1`` or ``l2`` on Cb and Cr, averaged over the elements of the global batch) and
the final evaluation (:func:`spn.evaluation_chroma.evaluate_chroma` on the full held-out photos).
"""
from __future__ import annotations

import torch

from spn.data import PhotoPatches, build_dataset
from spn.evaluation_chroma import evaluate_chroma
from spn.models import model_config_class
from spn.models.chroma import ChromaSPNConfig

from . import distributed as D

__all__ = ["CHROMA_MODEL_ALIASES", "ChromaTask", "chroma_loss_sum", "chroma_model_name"]

#: the segmentation model names and the chroma model they mean under ``--task chroma``
CHROMA_MODEL_ALIASES = {"spn_three_way": "chroma_three_way", "spn_one_way": "chroma_one_way"}
CHROMA_DATA = ("photos",)


def chroma_model_name(name: str) -> str:
    """The chroma model ``name`` means (segmentation SPN names map to their chroma twin); a model
    that is not a chroma model -> ValueError naming the valid ones."""
    name = CHROMA_MODEL_ALIASES.get(name, name)
    if model_config_class(name) is not ChromaSPNConfig:
        raise ValueError(f"model {name!r} is a segmentation model; --task chroma trains "
                         f"{', '.join(sorted(set(CHROMA_MODEL_ALIASES.values())))}")
    return name


def chroma_loss_sum(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Sum over every element of ``|pred - target|`` (``"l1"``) or ``(pred - target)^2`` (``"l2"``).

    Shape: ``pred``, ``target``: ``(B, 2, H, W)``; returns a 0-dim tensor.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    d = pred - target
    if kind == "l1":
        return d.abs().sum()
    if kind == "l2":
        return (d * d).sum()
    raise ValueError(f"unknown chroma loss {kind!r}; valid: l1, l2")


class ChromaTask:
    """The chroma task's datasets, patches, model options, loss and evaluation (see the module)."""

    name = "chroma"

    def build_datasets(self, cfg, device, run_dir, train_dataset=None, val_dataset=None, need_val=True):
        if cfg.coarse not in (None, "none"):
            raise ValueError(f"--coarse {cfg.coarse} does not apply to --task chroma (the input is the "
                             "subsampled chroma of the photo itself)")
        prefix = cfg.data.split(":", 1)[0].lower()
        if train_dataset is None and prefix not in CHROMA_DATA:
            raise ValueError(f"--task chroma trains on colour photos: --data photos:PATH or photos:skimage, "
                             f"got {cfg.data!r}")
        kw = dict(cfg.data_options)
        kw.setdefault("factor", cfg.factor)
        kw.setdefault("on_corrupt", cfg.on_corrupt)
        train = train_dataset if train_dataset is not None else build_dataset(cfg.data, split="train", **kw)
        val, note = val_dataset, None
        if val is None and need_val and cfg.val_split and train_dataset is None:
            try:
                val = build_dataset(cfg.data, split=cfg.val_split, **kw)
            except (ValueError, FileNotFoundError) as exc:
                note, val = f"no validation split {cfg.val_split!r}: {exc}", None
        if len(train) == 0:
            raise ValueError(f"the training dataset {cfg.data!r} is empty")
        if val is not None and len(val) == 0:
            note, val = (f"no final evaluation: the validation split {cfg.val_split!r} of {cfg.data} is empty"), None
        return train, val, note

    def data_info(self, ds) -> dict:
        info = dict(ds.info()) if hasattr(ds, "info") else {}
        info.update(task="chroma", factor=int(getattr(ds, "factor", None) or info.get("factor") or 0) or None)
        return info

    def patches(self, train_ds, cfg):
        return PhotoPatches(train_ds, size=cfg.patch_size, patches_per_image=cfg.patches_per_image,
                            flip=cfg.flip, seed=cfg.seed, factor=cfg.factor)

    def model_options(self, cfg, dinfo) -> tuple[str, dict]:
        name = chroma_model_name(cfg.model)
        mcfg = dict(cfg.model_cfg)
        if "factor" in mcfg and int(mcfg["factor"]) != cfg.factor:
            raise ValueError(f"model_cfg factor={mcfg['factor']} but --factor is {cfg.factor}")
        mcfg["factor"] = cfg.factor
        return name, mcfg

    def loss(self, dmodel, batch, device, ctx, cfg):
        """``(loss to backpropagate, global loss sum (float64), global element count)``."""
        luma = batch["luma"].to(device, non_blocking=True)
        low = batch["chroma_low"].to(device, non_blocking=True)
        target = batch["chroma"].to(device, non_blocking=True)
        count = D.all_reduce_sum(torch.tensor([float(target.numel())], dtype=torch.float64, device=device), ctx)
        pred = dmodel(luma, low)
        loss_sum = chroma_loss_sum(pred, target, cfg.loss)
        loss = loss_sum * (ctx.world_size / count.clamp_min(1).to(loss_sum.dtype))
        stat = D.all_reduce_sum(loss_sum.detach().to(torch.float64).reshape(1), ctx)
        return loss, stat, count

    def evaluate(self, model, val_ds, limit=None) -> dict:
        return evaluate_chroma(model, val_ds, limit=limit)
