"""The chroma task (``--task chroma``): guided upsampling of the subsampled chroma of photos.

This module is the worked example of a task (``docs/architecture.md``, "Adding a task"). The
conditioning input is the photo's own chroma (BT.601 Cb, Cr), area-subsampled ``--factor``
times (:mod:`spn.data.photos`: ``photos:PATH``, ``photos:skimage``); the models are the chroma
SPNs (``chroma_three_way`` / ``chroma_one_way``; the segmentation names ``spn_three_way`` /
``spn_one_way``, the default, mean the chroma model of that connection); the loss is L1 or L2
on Cb and Cr (``--loss``), averaged over the elements of the global batch; the evaluation is
:func:`spn.evaluation_chroma.evaluate_chroma` (PSNR / SSIM of the rebuilt photo); the inference
wrapper is :class:`spn.inference_chroma.ChromaUpsampler`; the peers are the classical chroma
upsamplers of :mod:`spn.peers.chroma`; the demo and the comparison are :mod:`spn.experiments.chroma`.

Its own options, one dataclass per command: :class:`ChromaTrainOptions`,
:class:`ChromaEvalOptions`, :class:`ChromaCompareOptions`, :class:`ChromaRefineOptions` and
:class:`spn.experiments.chroma.ChromaDemoConfig`.

Example:
    >>> from spn.tasks import get_task
    >>> chroma = get_task("chroma")
    >>> chroma.model_name("spn_three_way")
    'chroma_three_way'
    >>> chroma.train_options({"factor": 4}).loss
    'l1'
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from spn.data import PhotoPatches, build_dataset, read_image, write_image
from spn.image.io import IMAGE_FORMATS, file_format
from spn.evaluation_chroma import evaluate_chroma, run_chroma_eval
from spn.experiments.chroma import ChromaDemoConfig, compare_chroma_from_config, run_chroma_demo
from spn.inference_chroma import ChromaUpsampler
from spn.models import model_config_class
from spn.models.chroma import ChromaSPNConfig
from spn.peers.chroma import list_chroma_peers
from spn.training import distributed as D
from spn.training.losses import regression_loss_sum
from spn.utils.config import ConfigBase, option

from . import BaseTask, register_task
from .datasets import train_val_datasets
from .jobs import plan_jobs, run_jobs

__all__ = ["CHROMA_MODEL_ALIASES", "ChromaCompareOptions", "ChromaEvalOptions", "ChromaRefineOptions", "ChromaTask",
           "ChromaTrainOptions", "chroma_model_name"]

#: the segmentation model names and the chroma model they mean under ``--task chroma``
CHROMA_MODEL_ALIASES = {"spn_three_way": "chroma_three_way", "spn_one_way": "chroma_one_way"}
CHROMA_DATA = ("photos",)
CHROMA_LOSSES = ("l1", "l2")


def _factor(v, allow_none=False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < 2:
        raise ValueError(f"--factor must be an int >= 2, got {v!r}")


@dataclass
class ChromaTrainOptions(ConfigBase):
    """The chroma task's options of ``spn train``."""

    factor: int = option(8, help="the chroma is area-downsampled by this factor F (2, 4, 8, ...)",
                         minimum=2, metavar="F", group="data")
    loss: str = option("l1", choices=CHROMA_LOSSES, help="the loss on Cb and Cr", group="optimisation")

    def validate(self) -> "ChromaTrainOptions":
        _factor(self.factor)
        if self.loss not in CHROMA_LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(CHROMA_LOSSES)}")
        return self


@dataclass
class ChromaEvalOptions(ConfigBase):
    """The chroma task's options of ``spn eval``."""

    factor: int | None = option(None, help="the chroma subsampling factor F", metavar="F", minimum=2,
                                default_help="the checkpoint's")

    def validate(self) -> "ChromaEvalOptions":
        _factor(self.factor, allow_none=True)
        return self


@dataclass
class ChromaCompareOptions(ConfigBase):
    """The chroma task's options of ``spn compare``."""

    factor: int | None = option(None, help="the chroma subsampling factor F", metavar="F", minimum=2,
                                default_help="the first checkpoint's, else 8")
    tune_peers: bool = option(False, help="tune the peers' parameters on the training photos first "
                                          "(peer_tuning.json)")

    def validate(self) -> "ChromaCompareOptions":
        _factor(self.factor, allow_none=True)
        return self


@dataclass
class ChromaRefineOptions(ConfigBase):
    """The chroma task's options of ``spn refine`` (``--out`` is then an image)."""

    factor: int | None = option(None, help="the chroma subsampling factor F", metavar="F", minimum=2,
                                default_help="the checkpoint's")

    def validate(self) -> "ChromaRefineOptions":
        _factor(self.factor, allow_none=True)
        return self


def chroma_model_name(name: str) -> str:
    """The chroma model ``name`` means (segmentation SPN names map to their chroma twin); a model
    that is not a chroma model -> ValueError naming the valid ones."""
    name = CHROMA_MODEL_ALIASES.get(name, name)
    if model_config_class(name) is not ChromaSPNConfig:
        raise ValueError(f"model {name!r} is a segmentation model; --task chroma trains "
                         f"{', '.join(sorted(set(CHROMA_MODEL_ALIASES.values())))}")
    return name


class ChromaTask(BaseTask):
    """The chroma task (see the module docstring)."""

    name = "chroma"
    help = "chroma: upsample the subsampled chroma of colour photos (--data photos:PATH or photos:skimage)"
    options = {"train": ChromaTrainOptions, "eval": ChromaEvalOptions, "compare": ChromaCompareOptions,
               "refine": ChromaRefineOptions, "demo": ChromaDemoConfig}

    # -- spn train (the loop's part, spn.training.TrainingTask) ---------------------------------
    def prepare(self, cfg):
        opts = self.train_options(cfg.task_options)
        if cfg.patch_size % opts.factor:
            raise ValueError(f"--patch-size {cfg.patch_size} must be a multiple of --factor {opts.factor}")
        return cfg.replace(task=self.name, task_options=opts.to_dict())

    def build_datasets(self, cfg, device, run_dir, train_dataset=None, val_dataset=None, need_val=True):
        opts = self.train_options(cfg.task_options)
        prefix = cfg.data.split(":", 1)[0].lower()
        if train_dataset is None and prefix not in CHROMA_DATA:
            raise ValueError(f"--task chroma trains on colour photos: --data photos:PATH or photos:skimage, "
                             f"got {cfg.data!r}")
        kw = dict(cfg.data_options)
        kw.setdefault("factor", opts.factor)
        kw.setdefault("on_corrupt", cfg.on_corrupt)
        return train_val_datasets(cfg, kw, train_dataset, val_dataset, need_val)

    def data_info(self, ds) -> dict:
        info = dict(ds.info()) if hasattr(ds, "info") else {}
        info.update(task=self.name, factor=int(getattr(ds, "factor", None) or info.get("factor") or 0) or None)
        return info

    def patches(self, train_ds, cfg):
        return PhotoPatches(train_ds, size=cfg.patch_size, patches_per_image=cfg.patches_per_image,
                            flip=cfg.flip, seed=cfg.seed, factor=self.train_options(cfg.task_options).factor)

    def model_options(self, cfg, dinfo) -> tuple[str, dict]:
        factor = self.train_options(cfg.task_options).factor
        name = chroma_model_name(cfg.model)
        mcfg = dict(cfg.model_cfg)
        if "factor" in mcfg and int(mcfg["factor"]) != factor:
            raise ValueError(f"model_cfg factor={mcfg['factor']} but --factor is {factor}")
        mcfg["factor"] = factor
        return name, mcfg

    def loss(self, dmodel, batch, device, ctx, cfg):
        """``(loss to backpropagate, global loss sum (float64), global element count)``."""
        luma = batch["luma"].to(device, non_blocking=True)
        low = batch["chroma_low"].to(device, non_blocking=True)
        target = batch["chroma"].to(device, non_blocking=True)
        count = D.all_reduce_sum(torch.tensor([float(target.numel())], dtype=torch.float64, device=device), ctx)
        pred = dmodel(luma, low)
        loss_sum = regression_loss_sum(pred, target, cfg.task_options.get("loss", "l1"))
        loss = loss_sum * (ctx.world_size / count.clamp_min(1).to(loss_sum.dtype))
        stat = D.all_reduce_sum(loss_sum.detach().to(torch.float64).reshape(1), ctx)
        return loss, stat, count

    def evaluate(self, model, val_ds, limit=None) -> dict:
        return evaluate_chroma(model, val_ds, limit=limit)

    # -- the rest of the Task protocol ----------------------------------------------------------
    def model_name(self, name: str) -> str:
        return chroma_model_name(name)

    def dataset(self, data: str, split: str, opts, **kw):
        return build_dataset(data, split=split, factor=opts.factor, **kw)

    def peers(self) -> list[str]:
        return list_chroma_peers()

    def train_summary(self, summary: dict) -> str | None:
        val = summary.get("val")
        if not val:
            return None
        b, m = val["bilinear"]["median"], val["model"]["median"]
        return (f"val ({val['num_images']} photos, medians): {summary['model']} PSNR RGB {m['psnr_rgb']:.2f} dB, "
                f"bilinear {b['psnr_rgb']:.2f} dB; SSIM RGB {m['ssim_rgb']:.4f} vs {b['ssim_rgb']:.4f}")

    def eval(self, cfg, opts: ChromaEvalOptions) -> tuple[dict, str]:
        return run_chroma_eval(cfg, opts)

    def compare(self, cfg, opts: ChromaCompareOptions) -> dict:
        return compare_chroma_from_config(cfg, opts)

    def refine(self, cfg, opts: ChromaRefineOptions) -> str:
        """Rebuild photos from their luma and their own chroma subsampled ``--factor`` times."""
        up = ChromaUpsampler.from_checkpoint(cfg.checkpoint, factor=opts.factor)
        jobs = plan_jobs(cfg.image, None, cfg.out, None, needs_coarse=False)
        if Path(cfg.image).is_file():
            file_format(cfg.out, IMAGE_FORMATS, "image")  # before the work: png, jpg, bmp, tif or webp
        run_jobs(jobs, lambda job: write_image(job.out, up.reconstruct(read_image(job.image))),
                 on_error=cfg.on_error, show=cfg.progress)
        if len(jobs) == 1:
            return f"wrote {jobs[0].out} (chroma rebuilt from its {up.factor}x subsampling)"
        return f"rebuilt {len(jobs)} photos into {Path(cfg.out)}"

    def demo(self, opts: ChromaDemoConfig) -> dict:
        return run_chroma_demo(opts, self)


register_task(ChromaTask())
