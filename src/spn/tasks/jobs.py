"""The files of ``spn refine``: an image or a folder of images paired with their coarse maps and
output paths, checked before anything runs (no output overwrites an input or another output),
and the run over them (:func:`run_jobs`): in a folder, a bad file is skipped with one line (or
stops the run, ``--on-error stop``), the outputs of one image are written as a set
(:func:`write_together`: a label map and its overlay, both or neither), and the progress bar
follows the rule of ``spn train`` and ``spn eval`` (:func:`show_progress`). Shared by the tasks'
``refine``.

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

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from spn.image.io import IMAGE_FORMATS, MASK_FORMATS, file_format
from spn.utils.io import check_output_path, os_error_message

__all__ = ["COARSE_EXTS", "IMAGE_EXTS", "ON_ERROR", "Job", "plan_jobs", "progress", "run_jobs", "show_progress",
           "write_together"]

log = logging.getLogger(__name__)
#: what a folder run does with a bad file: skip it (one line, a non-zero exit at the end) or stop
ON_ERROR = ("skip", "stop")

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


def _find_coarse(folder: Path, stem: str, flag: str = "--coarse") -> Path:
    for ext in COARSE_EXTS:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    what = "coarse map" if flag == "--coarse" else f"{flag} file"
    raise FileNotFoundError(f"no {what} for image {stem!r}: expected {folder / (stem + '.npy')} "
                            f"or {folder / (stem + '.png')}")


def _same_file(a: Path, b: Path | None) -> bool:
    if b is None:
        return False
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _check_jobs(jobs: list[Job], flag: str = "--coarse", out_formats: dict = MASK_FORMATS) -> None:
    """No output overwrites an input (an image, a coarse map) or another output; suffixes known."""
    inputs = [(j.image, "--image") for j in jobs] + [(j.coarse, flag) for j in jobs if j.coarse]
    seen: dict = {}
    for j in jobs:
        file_format(j.out, out_formats, "--out")
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


def plan_jobs(image: str, coarse: str | None, out: str, overlay: str | None, needs_coarse: bool, *,
              flag: str = "--coarse", out_formats: dict = MASK_FORMATS) -> list[Job]:
    """Pair images with coarse maps (the files of option ``flag``) and output paths; check every
    input exists (in a folder, every image's map) and that no output overwrites an input, before
    anything runs."""
    img = Path(image)
    if not img.exists():
        raise FileNotFoundError(f"--image {img} does not exist")
    co = Path(coarse) if coarse is not None else None
    if needs_coarse and co is None:
        raise ValueError(f"this checkpoint refines a coarse segmentation: pass {flag} (a label PNG or a "
                         "(K, h, w) .npy; a folder of them with a folder of images)")
    if co is not None and not co.exists():
        raise FileNotFoundError(f"{flag} {co} does not exist")
    if img.is_dir():
        if co is not None and not co.is_dir():
            raise ValueError(f"--image {img} is a folder, so {flag} must be a folder too (got file {co})")
        outd, ovd = Path(out), Path(overlay) if overlay else None
        for out_flag, d in (("--out", outd), ("--overlay", ovd)):
            if d is not None:
                check_output_path(d, out_flag, directory=True)
        jobs = []
        for f in _list_images(img):
            jobs.append(Job(f.stem, f, _find_coarse(co, f.stem, flag) if co is not None else None,
                            outd / f"{f.stem}.png", ovd / f"{f.stem}.png" if ovd else None))
        _check_jobs(jobs, flag, out_formats)
        return jobs
    if co is not None and co.is_dir():
        raise ValueError(f"--image {img} is a file, so {flag} must be a file too (got folder {co})")
    if co is not None and co.suffix.lower() not in COARSE_EXTS:
        raise ValueError(f"{flag} {co}: unsupported file type {co.suffix!r} (use a .png or a .npy)")
    outp = Path(out)
    if outp.is_dir():
        raise ValueError(f"--out {outp} is a folder; give the path of the label image to write")
    check_output_path(outp, "--out")
    if overlay:
        check_output_path(overlay, "--overlay")
    jobs = [Job(img.stem, img, co, outp, Path(overlay) if overlay else None)]
    _check_jobs(jobs, flag, out_formats)
    return jobs


def show_progress(flag: bool | None) -> bool:
    """The rule of ``spn train`` and ``spn eval``: ``flag`` when given (``--progress`` /
    ``--no-progress``), else a bar only when stderr is a terminal."""
    if flag is not None:
        return bool(flag)
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress(jobs: list[Job], show: bool | None):
    """``jobs``, under a progress bar when there are several and :func:`show_progress` (``show``)."""
    if len(jobs) > 1 and show_progress(show):
        from tqdm import tqdm
        return tqdm(jobs, desc="refine", unit="img")
    return jobs


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and (exc.errno is not None or getattr(exc, "spn_message", None)):
        return os_error_message(exc)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def run_jobs(jobs: list[Job], work, *, on_error: str = "skip", show: bool | None = None) -> int:
    """Call ``work(job)`` for every job (under :func:`progress`); returns how many succeeded.

    One image (a single job) or ``on_error="stop"``: the first error propagates. Otherwise
    (``"skip"``, a folder) a job that raises ValueError, TypeError, RuntimeError or OSError is
    logged in one line (``skipped NAME: why``) and the rest run; at the end, any failure is a
    RuntimeError saying how many failed, so the command exits non-zero."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    failed: list[str] = []
    for job in progress(jobs, show):
        try:
            work(job)
        except (ValueError, TypeError, RuntimeError, OSError) as exc:
            if len(jobs) == 1 or on_error == "stop":
                raise
            failed.append(job.name)
            log.error(f"skipped {job.image.name}: {_message(exc)}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} images failed ({', '.join(failed[:5])}"
                           f"{', ...' if len(failed) > 5 else ''}; each said why above); the other "
                           f"{len(jobs) - len(failed)} were written")
    return len(jobs)


def write_together(writes: list) -> None:
    """Write the outputs of one image, ``[(path or None, write(path)), ...]``, as a set: when one
    write fails, the files written before it are removed again (both or neither)."""
    done: list[Path] = []
    try:
        for path, write in writes:
            if path is None:
                continue
            write(path)
            done.append(Path(path))
    except BaseException:
        for p in done:
            p.unlink(missing_ok=True)
        raise
