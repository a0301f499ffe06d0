"""``spn refine``: refine a mask or a coarse segmentation of one image, or of a folder of images.

Anyone's mask on anyone's photo, with the refiner shipped in the package (no ``--checkpoint``;
the task that ships a model, ``--task mask``, :mod:`spn.tasks.mask`)::

    spn refine IMAGE --mask MASK --out refined.png [--soft] [--labels] [--overlay overlay.png]

A trained model, of any task: ``--checkpoint RUN`` selects it, and the task it was trained for
(stored in the checkpoint; ``--task`` may say it too, and must agree) does the work::

    spn refine --checkpoint RUN --image IMG --coarse COARSE --out refined.png [--overlay overlay.png]

``IMAGE`` may be given as ``--image IMAGE`` too. A folder: ``--image DIR`` (every
.png/.jpg/.jpeg/.bmp/.tif/.tiff/.webp in it), ``--coarse DIR`` / ``--mask DIR`` holding
``NAME.npy`` or ``NAME.png`` per image ``NAME.*``, ``--out DIR`` (and ``--overlay DIR``)
receiving ``NAME.png``. In a folder, a bad file is skipped with one line and the command exits
with status 1 at the end (``--on-error stop``: the first bad file stops the run); a label map
and its overlay are written together or not at all. The progress bar is shown when stderr is a
terminal (``--progress`` / ``--no-progress`` decide otherwise), as in ``spn train`` and
``spn eval``. ``docs/refine.md`` is the reference of the mask refiner's options.

Segmentation checkpoints: COARSE is a label PNG (class ids; palette or grey) or a ``.npy``:
``(K, h, w)`` probabilities (the default), logits or ``(h, w)`` labels, as declared by
``--coarse-kind`` or by a ``coarse.json`` in its folder (:mod:`spn.data.coarse`); at any
resolution of the image's aspect ratio, upsampled bilinearly. A baseline checkpoint segments
from the image alone and needs no ``--coarse``. The output is a palette image whose pixel values
are the class ids (VOC colours), PNG (or BMP/TIFF, by the suffix of ``--out``), and optionally
an overlay of the colours on the image. The inputs are never overwritten. Everything runs
through :class:`spn.inference.Refiner` (the segmentation task's ``refine``, :mod:`spn.tasks.segmentation`).

``--task chroma`` (a checkpoint of ``spn train --task chroma``): ``--image IMG --out IMG`` rebuilds
the photo from its luma and its own chroma subsampled ``--factor`` times (default: the
checkpoint's), through :class:`spn.inference_chroma.ChromaUpsampler`; a folder of images gives a
folder of PNGs.

The options every task shares are :class:`RefineConfig`'s; each task's own come from its refine
options dataclass (:mod:`spn.tasks`), and its ``refine`` does the work.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spn.tasks.jobs import ON_ERROR
from spn.utils.config import ConfigBase, check_options, option

from .options import add_config_options, add_task_arguments, build_config, task_from_args

HELP = "refine a mask (shipped model) or a coarse segmentation (a checkpoint) of an image or a folder"


@dataclass
class RefineConfig(ConfigBase):
    """What ``spn refine`` refines: the options every task shares (see the module docstring)."""

    image: str = option(help="an image file, or a folder of images (also the first positional argument)",
                        metavar="IMG")
    out: str = option(help="refined mask / label PNG (a folder with a folder of images)", metavar="PNG")
    checkpoint: str | None = option(None, help="run directory written by `spn train` (its task refines)",
                                    metavar="RUN", default_help="the model shipped in the package (--mask)")
    threads: int | None = option(None, help="torch CPU threads", metavar="N", default_help="torch's")
    on_error: str = option("skip", choices=ON_ERROR, help="in a folder, a bad file is skipped with one line "
                           "(exit status 1 at the end), or stops the run")
    progress: bool | None = option(None, help="a progress bar over a folder even when stderr is not a terminal",
                                   negative="--no-progress", negative_value=False, negative_help="no progress bar",
                                   default_help="when stderr is a terminal")

    def validate(self) -> "RefineConfig":
        check_options(self, required=("image", "out"), at_least={"threads": 1})
        if self.on_error not in ON_ERROR:
            raise ValueError(f"--on-error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}")
        return self


def add_arguments(p) -> None:
    p.add_argument("image_arg", nargs="?", default=None, metavar="IMAGE",
                   help="an image file, or a folder of images (the same as --image)")
    add_config_options(p, RefineConfig)
    add_task_arguments(p, "refine", default_help="the checkpoint's task; without --checkpoint, the task whose "
                                                 "model ships in the package")


def _checkpoint_task(run) -> str | None:
    """The task a checkpoint was trained for (its training config's), None when it does not say."""
    from spn.models.checkpoint import read_info

    info = read_info(run)
    return (info.get("train_config") or {}).get("task") or (info.get("data") or {}).get("task")


def _shipped_task() -> str:
    """The task that refines without a checkpoint, with the model shipped in the package."""
    from spn.tasks import get_task, list_tasks

    names = [n for n in list_tasks() if getattr(get_task(n), "ships_model", False)]
    if not names:
        raise ValueError("no task ships a model: pass --checkpoint RUN")
    return names[0]


def choose_task(args, cfg: RefineConfig):
    """``(task, its refine options)``: the checkpoint's task (``--task`` must agree), or without
    ``--checkpoint`` the task that ships a model (``--task`` naming another is an error)."""
    given = getattr(args, "task", None)
    if cfg.checkpoint is not None:
        stored = _checkpoint_task(cfg.checkpoint)
        if given and stored and given != stored:
            raise ValueError(f"--task {given} but checkpoint {cfg.checkpoint} was trained for --task {stored}")
    else:
        stored = _shipped_task()
    try:
        task, opts = task_from_args(args, "refine", stored=stored)
    except ValueError as exc:
        if cfg.checkpoint is None and "does not use" in str(exc):
            raise ValueError(f"{exc} (without --checkpoint the shipped mask refiner refines --mask MASK; "
                             "the other options need --checkpoint RUN)") from None
        raise
    if cfg.checkpoint is None and not getattr(task, "ships_model", False):
        raise ValueError(f"--task {task.name} ships no model: pass --checkpoint RUN (a run of "
                         f"`spn train --task {task.name}`), or leave --task out to refine a --mask with the shipped one")
    return task, opts


def run(args) -> int:
    positional = getattr(args, "image_arg", None)
    if positional is not None:
        if getattr(args, "image", None) not in (None, positional):
            raise ValueError(f"two images given: {positional} and --image {args.image}; give one")
        args.image = positional
    cfg = build_config(RefineConfig, args)
    task, opts = choose_task(args, cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    print(task.refine(cfg, opts))
    return 0
