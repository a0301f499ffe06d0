"""``spn refine``: refine the coarse segmentation of one image, or of a folder of images.

One image::

    spn refine --checkpoint RUN --image IMG --coarse COARSE --out refined.png [--overlay overlay.png]

A folder: ``--image DIR`` (every .png/.jpg/.jpeg/.bmp/.tif/.tiff/.webp in it), ``--coarse DIR``
holding ``NAME.npy`` or ``NAME.png`` per image ``NAME.*``, ``--out DIR`` (and ``--overlay DIR``)
receiving ``NAME.png``.

COARSE is a label PNG (class ids; palette or grey) or a ``.npy``: ``(K, h, w)`` probabilities
(the default), logits or ``(h, w)`` labels, as declared by ``--coarse-kind`` or by a
``coarse.json`` in its folder (:mod:`spn.data.coarse`); at any resolution of the image's aspect
ratio, upsampled bilinearly. A baseline checkpoint segments from the image alone and needs no
``--coarse``. The output is a palette image whose pixel values are the class ids (VOC colours),
PNG (or BMP/TIFF, by the suffix of ``--out``), and optionally an overlay of the colours on the
image. The inputs are never overwritten. Everything runs through :class:`spn.inference.Refiner`
(the segmentation task's ``refine``, :mod:`spn.tasks.segmentation`).

``--task chroma`` (a checkpoint of ``spn train --task chroma``): ``--image IMG --out IMG`` rebuilds
the photo from its luma and its own chroma subsampled ``--factor`` times (default: the
checkpoint's), through :class:`spn.inference_chroma.ChromaUpsampler`; a folder of images gives a
folder of PNGs. ``--coarse``, ``--overlay`` and ``--restrict-to-present`` do not apply.

The options every task shares are :class:`RefineConfig`'s; each task's own come from its refine
options dataclass (:mod:`spn.tasks`), and its ``refine`` does the work.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spn.utils.config import ConfigBase, check_options, option

from .options import add_config_options, add_task_arguments, build_config, task_from_args

HELP = "refine a coarse segmentation of an image (or a folder of images) with a checkpoint"


@dataclass
class RefineConfig(ConfigBase):
    """What ``spn refine`` refines: the options every task shares (see the module docstring)."""

    checkpoint: str = option(help="run directory written by `spn train`", metavar="RUN")
    image: str = option(help="an image file, or a folder of images", metavar="IMG")
    out: str = option(help="refined label PNG (a folder with a folder of images)", metavar="PNG")
    threads: int | None = option(None, help="torch CPU threads", metavar="N", default_help="torch's")
    progress: bool = option(True, help="a progress bar over a folder", negative="--no-progress",
                            negative_help="no progress bar")

    def validate(self) -> "RefineConfig":
        check_options(self, required=("checkpoint", "image", "out"), at_least={"threads": 1})
        return self


def add_arguments(p) -> None:
    add_config_options(p, RefineConfig)
    add_task_arguments(p, "refine")


def run(args) -> int:
    cfg = build_config(RefineConfig, args)
    task, opts = task_from_args(args, "refine")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    print(task.refine(cfg, opts))
    return 0
