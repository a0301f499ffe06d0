"""The files of ``spn refine``: an image or a folder of images paired with their coarse maps and
output paths, checked before anything runs (no output overwrites an input or another output).
Shared by the tasks' ``refine``.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from spn.data import write_image
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = write_image(root / "a.png", torch.rand(3, 8, 8))
    >>> [j.out.name for j in plan_jobs(str(root / "a.png"), None, str(root / "out.png"), None, needs_coarse=False)]
    ['out.png']
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from spn.image.io import IMAGE_FORMATS, MASK_FORMATS, file_format
from spn.utils.io import check_output_path

__all__ = ["COARSE_EXTS", "IMAGE_EXTS", "Job", "plan_jobs", "progress"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
COARSE_EXTS = (".npy", ".png")


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



def progress(jobs: list[Job], show: bool):
    """``jobs``, under a progress bar when there are several and ``show``."""
    if len(jobs) > 1 and show:
        from tqdm import tqdm
        return tqdm(jobs, desc="refine", unit="img")
    return jobs
