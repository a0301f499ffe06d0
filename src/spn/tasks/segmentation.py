"""The segmentation task (``--task seg``, the default): refine coarse segmentations.

The conditioning input is a coarse map per image (``--coarse``: the dataset's files,
``gt-downsample:F``, ``baseline:RUN``; :mod:`spn.data.coarse`); the models are the baseline CNN
and the SPN refiners (``spn_one_way`` / ``spn_three_way``); the loss is softmax cross-entropy
with ignore index 255; the evaluation is :func:`spn.evaluation.evaluate` (mIoU and the boundary
metrics); the inference wrapper is :class:`spn.inference.Refiner`; the peers are those of
:mod:`spn.peers` (dense CRF, guided filter, ...); the demo is :mod:`spn.experiments.demo`.

Its own options, one dataclass per command: :class:`SegTrainOptions`, :class:`SegEvalOptions`,
:class:`SegCompareOptions`, :class:`SegRefineOptions` and :class:`spn.experiments.demo.DemoConfig`.

Example:
    >>> from spn.tasks import get_task
    >>> seg = get_task("seg")
    >>> seg.train_options({"coarse": "gt-downsample:8"}).coarse
    'gt-downsample:8'
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from spn.data import (PatchDataset, absolute_coarse_spec, build_dataset, load_coarse_array, read_image,
                      resolve_coarse_kind, wrap_coarse_source, write_image, write_mask)
from spn.data.coarse import coarse_kind_option, parse_coarse_kind
from spn.evaluation import evaluate, run_eval
from spn.experiments.compare import compare_from_config
from spn.experiments.demo import DemoConfig, run_demo
from spn.inference import Refiner
from spn.metrics import PROTOCOLS
from spn.peers import DenseCRFParams, list_peers
from spn.training import distributed as D
from spn.training.losses import cross_entropy_sum, valid_pixels
from spn.utils.config import ConfigBase, option
from spn.viz import overlay

from . import BaseTask, register_task
from .jobs import plan_jobs, run_jobs, write_together

log = logging.getLogger(__name__)

__all__ = ["SegCompareOptions", "SegEvalOptions", "SegRefineOptions", "SegTrainOptions", "SegmentationTask",
           "build_datasets", "data_info"]

#: datasets read from files (they take ``on_corrupt``)
FILE_BACKED = ("folder", "voc", "helen")
_COARSE_HELP = "coarse maps: files | gt-downsample:F | none | baseline:RUN_DIR"


def _check_coarse_kind(opts) -> None:
    if opts.coarse is not None and not isinstance(opts.coarse, str):
        raise TypeError(f"coarse must be a string or None, got {opts.coarse!r}")
    if opts.coarse_kind is not None:
        parse_coarse_kind(opts.coarse_kind, "coarse_kind")


@dataclass
class SegTrainOptions(ConfigBase):
    """The segmentation task's options of ``spn train``."""

    coarse: str | None = option(None, help=_COARSE_HELP, metavar="SRC", default_help="the dataset's", group="data")
    coarse_kind: str | None = coarse_kind_option(group="data")

    def validate(self) -> "SegTrainOptions":
        _check_coarse_kind(self)
        return self


@dataclass
class SegEvalOptions(ConfigBase):
    """The segmentation task's options of ``spn eval``."""

    coarse: str | None = option(None, help="coarse source: files | gt-downsample:F | none | baseline:RUN_DIR",
                                metavar="SRC", default_help="the dataset's")
    coarse_kind: str | None = coarse_kind_option()
    protocol: str = option("plain", help="evaluation protocol (voc restricts the refined classes to those "
                                         "of the coarse input; helen: the F-measures of Table 1)",
                           choices=tuple(PROTOCOLS))
    restrict_to_present: bool = option(False, help="restrict the refined output to the classes present in "
                                                   "the coarse input (the restriction of --protocol voc)")

    def validate(self) -> "SegEvalOptions":
        _check_coarse_kind(self)
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; valid protocols are {', '.join(PROTOCOLS)}")
        return self


@dataclass
class SegCompareOptions(ConfigBase):
    """The segmentation task's options of ``spn compare``."""

    coarse: str | None = option(None, metavar="SRC", default_help="the dataset's",
                                help="coarse source: files | gt-downsample:F | baseline:RUN_DIR")
    coarse_kind: str | None = coarse_kind_option()
    protocol: str = option("plain", choices=tuple(PROTOCOLS),
                           help="evaluation protocol (voc: classes restricted to those of the coarse input; "
                                "helen: F-measures of Table 1)")
    crf_grid: bool | None = option(None, negative="--no-crf-grid", negative_value=False,
                                   negative_help="use the dense CRF's default (or --crf) parameters, untuned",
                                   default_help="on when the dense CRF is compared",
                                   help="tune the dense CRF by a two-stage grid search (mean IoU) on the training "
                                        "split first (spn.peers.densecrf.DEFAULT_CRF_GRID: 87 settings, from off "
                                        "and weak to strong); --crf values are the starting point")
    crf_grid_limit: int = option(8, help="training images used by the dense CRF search", metavar="N")
    crf: list = option(default_factory=list, metavar="KEY=VALUE",
                       help="a dense CRF parameter (" + ", ".join(DenseCRFParams.__dataclass_fields__)
                            + "), e.g. --crf bil_sxy=60; repeat for several")

    def validate(self) -> "SegCompareOptions":
        _check_coarse_kind(self)
        if self.crf_grid_limit < 1:
            raise ValueError(f"--crf-grid-limit must be >= 1, got {self.crf_grid_limit}")
        return self


@dataclass
class SegRefineOptions(ConfigBase):
    """The segmentation task's options of ``spn refine``."""

    coarse: str | None = option(None, metavar="COARSE",
                                help="a label PNG or (K, h, w) .npy scores (a folder of NAME.png / NAME.npy with a "
                                     "folder of images); not needed for a baseline checkpoint")
    coarse_kind: str | None = coarse_kind_option()
    overlay: str | None = option(None, help="also write the labels blended over the image", metavar="PNG")
    alpha: float = option(0.5, help="overlay opacity")
    restrict_to_present: bool = option(False, help="only keep the classes present in the coarse input "
                                                   "(the VOC protocol)")

    def validate(self) -> "SegRefineOptions":
        _check_coarse_kind(self)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {self.alpha}")
        return self


# ----------------------------------------------------------------------------------------------
# training data
def _build_split(cfg, opts: SegTrainOptions, split: str, coarse: str | None, coarse_options: dict):
    kw = dict(cfg.data_options)
    if cfg.data.split(":", 1)[0].lower() in FILE_BACKED:
        kw.setdefault("on_corrupt", cfg.on_corrupt)
    return build_dataset(cfg.data, split=split, coarse=coarse, coarse_options=coarse_options,
                         coarse_kind=opts.coarse_kind, **kw)


def needs_coarse(model_name: str) -> bool:
    """Whether the model refines a coarse map (every model but the baseline CNN)."""
    return model_name != "baseline"


def _check_coarse_present(ds, cfg, opts: SegTrainOptions, where: str) -> None:
    if len(ds) == 0:
        raise ValueError(f"the {where} dataset {cfg.data!r} is empty")
    item = ds[0]
    if "coarse" not in item:
        raise ValueError(
            f"model {cfg.model!r} refines coarse segmentations, but dataset {cfg.data!r} gives no coarse "
            f"maps (coarse source {opts.coarse or 'default'!s}). Train the baseline first and use its "
            f"output: `spn train --data {cfg.data} --model baseline --out runs/baseline`, then "
            f"`--coarse baseline:runs/baseline`; or simulate coarse maps with `--coarse gt-downsample:8`"
            " (or put coarse maps in the dataset and pass `--coarse files`)")


def build_datasets(cfg, device, run_dir: Path, train_dataset=None, val_dataset=None, need_val: bool = True):
    """``(train, val or None, note)`` per ``cfg`` (a resolved :class:`~spn.training.TrainConfig`;
    datasets of the common contract); ``note`` says why there is no validation set when one was
    asked for (a missing or empty split).

    A ``baseline:RUN`` coarse source caches the baseline's outputs in ``run_dir/coarse_cache``.
    """
    opts = SegTrainOptions.from_dict(cfg.task_options)
    # the baseline ignores coarse maps: do not compute them
    coarse = "none" if not needs_coarse(cfg.model) and opts.coarse is None else opts.coarse
    cache = run_dir / "coarse_cache"
    # DataLoader workers are forked processes: they cannot use CUDA, run the baseline on the CPU
    bdev = device if cfg.num_workers == 0 else torch.device("cpu")
    note = None
    if train_dataset is not None:
        train_ds = wrap_coarse_source(train_dataset, coarse, device=bdev, cache_dir=cache)
    else:
        train_ds = _build_split(cfg, opts, "train", coarse, {"device": bdev, "cache_dir": cache})
    val_ds = None
    if val_dataset is not None:
        val_ds = wrap_coarse_source(val_dataset, coarse, device=device, cache_dir=cache)
    elif need_val and cfg.val_split and train_dataset is None:
        try:
            val_ds = _build_split(cfg, opts, cfg.val_split, coarse, {"device": device, "cache_dir": cache})
        except (ValueError, FileNotFoundError) as exc:
            note = (f"no final evaluation: the validation split {cfg.val_split!r} of {cfg.data} cannot be "
                    f"built ({str(exc).splitlines()[0]}); pass --val-split NAME or --no-val")
            val_ds = None
    if needs_coarse(cfg.model):
        _check_coarse_present(train_ds, cfg, opts, "training")
    if val_ds is not None and len(val_ds) == 0:
        name = cfg.val_split if val_dataset is None else "val_dataset"
        note = (f"no final evaluation: the validation split {name!r} of {cfg.data} is empty "
                f"({len(train_ds)} training images); pass --val-split NAME or --no-val")
        val_ds = None
    return train_ds, val_ds, note


def data_info(ds) -> dict:
    """What a run stores about its training data: the dataset's ``info()``, the classes, the ignore index."""
    info = {}
    if hasattr(ds, "info"):
        try:
            info = dict(ds.info())
        except Exception:  # info is descriptive only
            info = {}
    K = int(ds.num_classes)
    info["num_classes"] = K
    info["class_names"] = list(getattr(ds, "class_names", None) or [f"class_{i}" for i in range(K)])
    info["ignore_index"] = int(getattr(ds, "ignore_index", 255))
    return info


# ----------------------------------------------------------------------------------------------
class SegmentationTask(BaseTask):
    """The segmentation task (see the module docstring)."""

    name = "seg"
    help = "seg: refine coarse segmentations (the default)"
    options = {"train": SegTrainOptions, "eval": SegEvalOptions, "compare": SegCompareOptions,
               "refine": SegRefineOptions, "demo": DemoConfig}

    # -- spn train (the loop's part, spn.training.TrainingTask) ---------------------------------
    def prepare(self, cfg):
        opts = self.train_options(cfg.task_options)
        opts = opts.replace(coarse=absolute_coarse_spec(opts.coarse))
        return cfg.replace(task=self.name, task_options=opts.to_dict())

    def build_datasets(self, cfg, device, run_dir, train_dataset=None, val_dataset=None, need_val=True):
        return build_datasets(cfg, device, run_dir, train_dataset, val_dataset, need_val)

    def data_info(self, ds) -> dict:
        return data_info(ds)

    def patches(self, train_ds, cfg):
        return PatchDataset(train_ds, size=cfg.patch_size, patches_per_image=cfg.patches_per_image,
                            flip=cfg.flip, seed=cfg.seed)

    def model_options(self, cfg, dinfo) -> tuple[str, dict]:
        K = dinfo["num_classes"]
        mcfg = dict(cfg.model_cfg)
        if "num_classes" in mcfg and int(mcfg["num_classes"]) != K:
            raise ValueError(f"model_cfg num_classes={mcfg['num_classes']} but dataset {cfg.data!r} has {K} classes")
        mcfg["num_classes"] = K
        return cfg.model, mcfg

    def loss(self, dmodel, batch, device, ctx, cfg):
        """``(loss to backpropagate, global loss sum (float64), global labelled-pixel count)``."""
        image = batch["image"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        refines = needs_coarse(cfg.model)
        coarse = batch.get("coarse") if refines else None
        if refines and coarse is None:
            raise ValueError("a training batch has no coarse maps")
        if coarse is not None:
            coarse = coarse.to(device, non_blocking=True)
        count = D.all_reduce_sum(valid_pixels(mask).reshape(1), ctx)
        logits = dmodel(image, coarse)
        loss_sum = cross_entropy_sum(logits, mask)
        loss = loss_sum * (ctx.world_size / count.clamp_min(1).to(loss_sum.dtype))
        stat = D.all_reduce_sum(loss_sum.detach().to(torch.float64).reshape(1), ctx)
        return loss, stat, count

    def evaluate(self, model, val_ds, limit=None) -> dict:
        return evaluate(model, val_ds, **({"limit": limit} if limit else {}))

    # -- the rest of the Task protocol ----------------------------------------------------------
    def dataset(self, data: str, split: str, opts, **kw):
        return build_dataset(data, split=split, coarse=opts.coarse, coarse_kind=opts.coarse_kind, **kw)

    def peers(self) -> list[str]:
        return list_peers()

    def train_summary(self, summary: dict) -> str | None:
        val = summary.get("val")
        if not val:
            return None
        ref = val.get("refined") or {}
        line = f"val ({val.get('num_images')} images): {summary['model']} mIoU {_fmt(ref.get('mean_iou'))}"
        if val.get("coarse"):
            line += f", coarse input mIoU {_fmt(val['coarse'].get('mean_iou'))}"
        return line

    def eval(self, cfg, opts: SegEvalOptions) -> tuple[dict, str]:
        return run_eval(cfg, opts)

    def compare(self, cfg, opts: SegCompareOptions) -> dict:
        return compare_from_config(cfg, opts)

    def refine(self, cfg, opts: SegRefineOptions) -> str:
        return refine_files(cfg, opts)

    def demo(self, opts: DemoConfig) -> dict:
        return run_demo(opts, self)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def refine_files(cfg, opts: SegRefineOptions) -> str:
    """``spn refine``: label PNGs (and overlays) of an image or a folder through
    :class:`spn.inference.Refiner`; returns the line to print."""
    refiner = Refiner.from_checkpoint(cfg.checkpoint)
    needs = refiner.needs_coarse
    if opts.restrict_to_present and opts.coarse is None:
        raise ValueError("--restrict-to-present needs --coarse")
    jobs = plan_jobs(cfg.image, opts.coarse, cfg.out, opts.overlay, needs)
    if not needs and opts.coarse is not None and not opts.restrict_to_present:
        log.info(f"note: {refiner.name} segments from the image alone; --coarse is only checked, not used")
    kind = None
    if opts.coarse is not None:  # declared once for the folder of the maps: the option, else its coarse.json
        folder = Path(opts.coarse) if Path(opts.coarse).is_dir() else Path(opts.coarse).parent
        kind = resolve_coarse_kind(opts.coarse_kind, folder)

    def work(job):
        image = read_image(job.image)
        coarse, ckind = (None, None) if job.coarse is None else load_coarse_array(job.coarse, kind)
        image, coarse = refiner.prepare(image, coarse, ckind, where=str(job.coarse))
        # a baseline ignores the coarse map (it is only read for --restrict-to-present)
        labels = refiner.predict(image, coarse, restrict_to_present=opts.restrict_to_present).argmax(0)
        shown = overlay(image, labels, alpha=opts.alpha) if job.overlay is not None else None
        write_together([(job.out, lambda p: write_mask(p, labels)), (job.overlay, lambda p: write_image(p, shown))])

    run_jobs(jobs, work, on_error=cfg.on_error, show=cfg.progress)
    if len(jobs) == 1:
        return f"wrote {jobs[0].out}" + (f" and {jobs[0].overlay}" if jobs[0].overlay else "")
    return f"refined {len(jobs)} images into {Path(cfg.out)}"


register_task(SegmentationTask())
