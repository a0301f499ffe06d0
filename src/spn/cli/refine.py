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
image. The inputs are never overwritten. Everything runs through :class:`spn.inference.Refiner`.

``--task chroma`` (a checkpoint of ``spn train --task chroma``): ``--image IMG --out IMG`` rebuilds
the photo from its luma and its own chroma subsampled ``--factor`` times (default: the
checkpoint's), through :class:`spn.inference_chroma.ChromaUpsampler`; a folder of images gives a
folder of PNGs. ``--coarse``, ``--overlay`` and ``--restrict-to-present`` do not apply.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from spn.data import load_coarse_array, read_image, resolve_coarse_kind, write_image, write_mask
from spn.data.coarse import coarse_kind_option
from spn.image.io import IMAGE_FORMATS, MASK_FORMATS, file_format
from spn.inference import Refiner
from spn.inference_chroma import ChromaUpsampler
from spn.utils.config import ConfigBase, check_options, option
from spn.utils.io import check_output_path
from spn.viz import overlay

from .options import add_config_options, build_config

log = logging.getLogger(__name__)

HELP = "refine a coarse segmentation of an image (or a folder of images) with a checkpoint"

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
COARSE_EXTS = (".npy", ".png")


@dataclass
class RefineConfig(ConfigBase):
    """What ``spn refine`` refines (see the module docstring)."""

    checkpoint: str = option(help="run directory written by `spn train`", metavar="RUN")
    image: str = option(help="an image file, or a folder of images", metavar="IMG")
    out: str = option(help="refined label PNG (a folder with a folder of images)", metavar="PNG")
    coarse: str | None = option(None, metavar="COARSE",
                                help="a label PNG or (K, h, w) .npy scores (a folder of NAME.png / NAME.npy with a "
                                     "folder of images); not needed for a baseline checkpoint")
    coarse_kind: str | None = coarse_kind_option()
    overlay: str | None = option(None, help="also write the labels blended over the image", metavar="PNG")
    alpha: float = option(0.5, help="overlay opacity")
    restrict_to_present: bool = option(False, help="only keep the classes present in the coarse input "
                                                   "(the VOC protocol)")
    threads: int | None = option(None, help="torch CPU threads", metavar="N", default_help="torch's")
    progress: bool = option(True, help="a progress bar over a folder", negative="--no-progress",
                            negative_help="no progress bar")
    task: str = option("seg", choices=("seg", "chroma"),
                       help="seg: refine a segmentation; chroma: rebuild the photo from its own chroma subsampled "
                            "--factor times (--out is then an image)")
    factor: int | None = option(None, help="chroma: the chroma subsampling factor F", metavar="F", minimum=2,
                                default_help="the checkpoint's")

    def validate(self) -> "RefineConfig":
        check_options(self, required=("checkpoint", "image", "out"), at_least={"threads": 1, "factor": 2})
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"--alpha must be in [0, 1], got {self.alpha}")
        return self


def add_arguments(p) -> None:
    add_config_options(p, RefineConfig)


@dataclass
class Job:
    name: str
    image: Path
    coarse: Path | None
    out: Path
    overlay: Path | None


def _list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) in folder {folder}")
    return files


def _find_coarse(folder: Path, stem: str) -> Path:
    for ext in COARSE_EXTS:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    raise FileNotFoundError(f"no coarse map for image {stem!r}: expected {folder / (stem + '.npy')} "
                            f"or {folder / (stem + '.png')}")


def _same_file(a: Path, b: Path | None) -> bool:
    if b is None:
        return False
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _check_jobs(jobs: list[Job]) -> None:
    """No output overwrites an input (an image, a coarse map) or another output; suffixes known."""
    inputs = [(j.image, "--image") for j in jobs] + [(j.coarse, "--coarse") for j in jobs if j.coarse]
    seen: dict = {}
    for j in jobs:
        file_format(j.out, MASK_FORMATS, "--out")
        if j.overlay is not None:
            file_format(j.overlay, IMAGE_FORMATS, "--overlay")
        for flag, out in (("--out", j.out), ("--overlay", j.overlay)):
            if out is None:
                continue
            for src, src_flag in inputs:
                if _same_file(out, src) or Path(out).absolute() == Path(src).absolute():
                    raise ValueError(f"{flag} {out} is the input {src_flag} {src}; refusing to overwrite it "
                                     f"(choose another {flag})")
            key = str(Path(out).absolute())
            if key in seen:
                raise ValueError(f"{flag} {out} is also {seen[key]}: two outputs would overwrite each other")
            seen[key] = flag


def plan_jobs(image: str, coarse: str | None, out: str, overlay: str | None, needs_coarse: bool) -> list[Job]:
    """Pair images with coarse maps and output paths; check every input exists and that no output
    overwrites an input, before anything runs."""
    img = Path(image)
    if not img.exists():
        raise FileNotFoundError(f"--image {img} does not exist")
    co = Path(coarse) if coarse is not None else None
    if needs_coarse and co is None:
        raise ValueError("this checkpoint refines a coarse segmentation: pass --coarse (a label PNG or a "
                         "(K, h, w) .npy; a folder of them with a folder of images)")
    if co is not None and not co.exists():
        raise FileNotFoundError(f"--coarse {co} does not exist")
    if img.is_dir():
        if co is not None and not co.is_dir():
            raise ValueError(f"--image {img} is a folder, so --coarse must be a folder too (got file {co})")
        outd, ovd = Path(out), Path(overlay) if overlay else None
        for flag, d in (("--out", outd), ("--overlay", ovd)):
            if d is not None:
                check_output_path(d, flag, directory=True)
        jobs = []
        for f in _list_images(img):
            jobs.append(Job(f.stem, f, _find_coarse(co, f.stem) if co is not None else None,
                            outd / f"{f.stem}.png", ovd / f"{f.stem}.png" if ovd else None))
        _check_jobs(jobs)
        return jobs
    if co is not None and co.is_dir():
        raise ValueError(f"--image {img} is a file, so --coarse must be a file too (got folder {co})")
    if co is not None and co.suffix.lower() not in COARSE_EXTS:
        raise ValueError(f"--coarse {co}: unsupported file type {co.suffix!r} (use a label .png or a .npy of scores)")
    outp = Path(out)
    if outp.is_dir():
        raise ValueError(f"--out {outp} is a folder; give the path of the label image to write")
    check_output_path(outp, "--out")
    if overlay:
        check_output_path(overlay, "--overlay")
    jobs = [Job(img.stem, img, co, outp, Path(overlay) if overlay else None)]
    _check_jobs(jobs)
    return jobs


def run_chroma(cfg: RefineConfig) -> int:
    """``spn refine --task chroma``: rebuild photos from their own subsampled chroma."""
    if cfg.coarse is not None or cfg.overlay is not None or cfg.restrict_to_present:
        raise ValueError("--coarse, --overlay and --restrict-to-present are segmentation options; "
                         "--task chroma takes none of them")
    up = ChromaUpsampler.from_checkpoint(cfg.checkpoint, factor=cfg.factor)
    jobs = plan_jobs(cfg.image, None, cfg.out, None, needs_coarse=False)
    if Path(cfg.image).is_file():
        file_format(cfg.out, IMAGE_FORMATS, "image")  # before the work: png, jpg, bmp, tif or webp
    it = jobs
    if len(jobs) > 1 and cfg.progress:
        from tqdm import tqdm
        it = tqdm(jobs, desc="refine", unit="img")
    for job in it:
        write_image(job.out, up.reconstruct(read_image(job.image)))
    if len(jobs) == 1:
        print(f"wrote {jobs[0].out} (chroma rebuilt from its {up.factor}x subsampling)")
    else:
        print(f"rebuilt {len(jobs)} photos into {Path(cfg.out)}")
    return 0


def run(args) -> int:
    cfg = build_config(RefineConfig, args)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if cfg.task == "chroma":
        return run_chroma(cfg)
    refiner = Refiner.from_checkpoint(cfg.checkpoint)
    needs = refiner.needs_coarse
    if cfg.restrict_to_present and cfg.coarse is None:
        raise ValueError("--restrict-to-present needs --coarse")
    jobs = plan_jobs(cfg.image, cfg.coarse, cfg.out, cfg.overlay, needs)
    if not needs and cfg.coarse is not None and not cfg.restrict_to_present:
        log.info(f"note: {refiner.name} segments from the image alone; --coarse is only checked, not used")
    kind = None
    if cfg.coarse is not None:  # declared once for the folder of the maps: the option, else its coarse.json
        folder = Path(cfg.coarse) if Path(cfg.coarse).is_dir() else Path(cfg.coarse).parent
        kind = resolve_coarse_kind(cfg.coarse_kind, folder)
    it = jobs
    if len(jobs) > 1 and cfg.progress:
        from tqdm import tqdm
        it = tqdm(jobs, desc="refine", unit="img")
    for job in it:
        image = read_image(job.image)
        coarse, ckind = (None, None) if job.coarse is None else load_coarse_array(job.coarse, kind)
        image, coarse = refiner.prepare(image, coarse, ckind, where=str(job.coarse))
        # a baseline ignores the coarse map (it is only read for --restrict-to-present)
        labels = refiner.predict(image, coarse, restrict_to_present=cfg.restrict_to_present).argmax(0)
        write_mask(job.out, labels)
        if job.overlay is not None:
            write_image(job.overlay, overlay(image, labels, alpha=cfg.alpha))
    if len(jobs) == 1:
        print(f"wrote {jobs[0].out}" + (f" and {jobs[0].overlay}" if jobs[0].overlay else ""))
    else:
        print(f"refined {len(jobs)} images into {Path(cfg.out)}")
    return 0
