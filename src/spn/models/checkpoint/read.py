"""Finding and verifying the checkpoint to use in a run (see :mod:`spn.models.checkpoint`).

Example:
    >>> import tempfile
    >>> from spn.models import create_model
    >>> from spn.models.checkpoint import open_checkpoint, save_checkpoint
    >>> run = tempfile.mkdtemp()
    >>> for step in (1, 2):
    ...     _ = save_checkpoint(run, create_model("baseline", num_classes=2, width=4, depth=1), cfg={}, step=step)
    >>> open_checkpoint(run).step
    2
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load as st_load

from ...utils.io import read_json
from .format import CHECKPOINTS_DIR, INFO_FILE, MODEL_FILE, OPTIM_JSON, list_checkpoints, sha256, step_dir_name, validate_info
from .write import clean_stale_temporaries

log = logging.getLogger("spn.models.checkpoint")


@dataclass
class Checkpoint:
    """One checkpoint found on disk: ``directory`` holds its files (a step directory), ``info`` its
    ``checkpoint.json``; ``skipped`` lists the newer checkpoints passed over as ``(directory, reason)``."""

    directory: Path
    run_dir: Path
    info: dict
    skipped: list = field(default_factory=list)
    _model_bytes: bytes | None = None

    @property
    def step(self) -> int:
        return int(self.info["step"])

    def describe(self) -> str:
        return f"step {self.step} ({self.directory})"

    def model_state(self) -> dict:
        if self._model_bytes is None:
            self._model_bytes = _read_verified(self.directory, self.info["files"]["model"], "model")
        return _parse_tensors(self._model_bytes, self.directory / self.info["files"]["model"]["file"])

    def optimizer_state(self) -> tuple[dict, dict]:
        """``(tensors, meta)`` of the optimizer; ValueError when the checkpoint has none."""
        entry = self.info["files"].get("optimizer")
        if not entry:
            raise ValueError(f"checkpoint {self.directory} has no optimizer state; cannot resume training from it")
        tensors = _parse_tensors(_read_verified(self.directory, entry, "optimizer"),
                                 self.directory / entry["file"])
        meta_file = self.directory / entry.get("meta", OPTIM_JSON)
        if not meta_file.is_file():
            raise FileNotFoundError(f"checkpoint optimizer file {meta_file} does not exist")
        if entry.get("meta_sha256") and sha256(meta_file.read_bytes()) != entry["meta_sha256"]:
            raise ValueError(f"corrupt checkpoint: {meta_file} does not match the digest in "
                             f"{self.directory / INFO_FILE}")
        return tensors, read_json(meta_file, "corrupt checkpoint:")


def _read_verified(directory: Path, entry: dict, what: str) -> bytes:
    if not isinstance(entry, dict) or "file" not in entry:
        raise ValueError(f"corrupt checkpoint: {directory / INFO_FILE} names no {what} file")
    f = directory / entry["file"]
    if not f.is_file():
        raise FileNotFoundError(f"checkpoint {what} file {f} does not exist")
    data = f.read_bytes()
    digest = entry.get("sha256")
    if digest and sha256(data) != digest:
        raise ValueError(f"corrupt checkpoint: {f} does not match the digest in {directory / INFO_FILE} "
                         "(truncated, overwritten, or the run was killed while saving)")
    return data


def _parse_tensors(data: bytes, f: Path) -> dict:
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ValueError(f"corrupt checkpoint: cannot read {f}: {exc}") from None


def _read_info_file(f: Path) -> dict:
    return validate_info(read_json(f, "corrupt checkpoint:"), f)


def _open_dir(directory: Path, run_dir: Path, optimizer: bool) -> Checkpoint:
    """Read and verify the checkpoint whose ``checkpoint.json`` is in the step directory ``directory``."""
    f = directory / INFO_FILE
    if not f.is_file():
        if directory == run_dir:
            raise FileNotFoundError(f"no checkpoint in {directory}: it has no committed step directory "
                                    f"({CHECKPOINTS_DIR}/step-NNNNNNNN) and no {INFO_FILE}")
        raise FileNotFoundError(f"no checkpoint in {directory}: {f} does not exist")
    ck = Checkpoint(directory, run_dir, _read_info_file(f))
    if directory.parent.name == CHECKPOINTS_DIR and directory.name != step_dir_name(ck.step):
        raise ValueError(f"invalid checkpoint {f}: field 'step' is {ck.step} but the directory is {directory.name}")
    ck._model_bytes = _read_verified(directory, ck.info["files"].get("model"), "model")
    if optimizer:
        ck.optimizer_state()
    return ck


def _resolve(path) -> Path:
    """A run directory, a step directory, or one of their model.safetensors / checkpoint.json ->
    the directory."""
    p = Path(path)
    if p.is_dir():
        return p
    if p.name in (MODEL_FILE, INFO_FILE):
        if p.parent.is_dir() and (list_checkpoints(p.parent) or p.exists()):
            return p.parent  # a run directory's file name names the run
        raise FileNotFoundError(f"checkpoint file {p} does not exist")
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist (give a run directory or its {MODEL_FILE})")
    raise ValueError(f"{p} is not a checkpoint: give a run directory or its {MODEL_FILE}")


def _pointer_step(run_dir: Path) -> tuple[int, str] | None:
    """``(step, step directory)`` the run's pointer ``RUN/checkpoint.json`` names, or None when
    the run has no pointer (a kill between the commit and the pointer's first write)."""
    f = run_dir / INFO_FILE
    if not f.is_file():
        return None
    info = _read_info_file(f)
    return info["step"], info.get("checkpoint") or f"{CHECKPOINTS_DIR}/{step_dir_name(info['step'])}"


def _check_pointer(run_dir: Path, ck: Checkpoint, found: list) -> None:
    """The newest checkpoint must not be older than the one the run's pointer names: a missing
    newest step directory is an error naming both steps (a damaged one was skipped with a warning)."""
    named = _pointer_step(run_dir)
    if named is None or named[0] <= ck.step:
        return
    step, rel = named
    if any(s == step for s, _ in found):
        return  # present but damaged: skipped, with the warning that names both
    raise FileNotFoundError(
        f"{run_dir / INFO_FILE} names the checkpoint of step {step} ({rel}), which is missing; the newest "
        f"checkpoint present is step {ck.step}. To use it, give its directory ({ck.directory}), or remove "
        f"{run_dir / INFO_FILE} to make it the run's newest")


def open_checkpoint(path, *, optimizer: bool = False) -> Checkpoint:
    """The checkpoint to use in ``path`` (a run directory, a step directory, or a file of them):
    the newest complete one whose files match their digests (with ``optimizer=True`` its optimizer
    state too). Damaged newer checkpoints are skipped with a warning; none usable -> an error
    listing why; a newest checkpoint that the run's ``checkpoint.json`` names but that is missing
    -> FileNotFoundError naming both steps. Missing files -> FileNotFoundError, corrupt or
    inconsistent ones -> ValueError.

    ``optimizer=True`` is the resume of a training run, which holds the run's lock: the temporary
    files a killed writer left in the run are removed first (:func:`clean_stale_temporaries`)."""
    d = _resolve(path)
    if optimizer and d.parent.name != CHECKPOINTS_DIR:
        for p in clean_stale_temporaries(d):
            log.info("removed %s, left by a writer that was killed", p)
    found = list_checkpoints(d)
    if not found:  # a step directory
        if (d / INFO_FILE).is_file() and d.parent.name != CHECKPOINTS_DIR and _pointer_step(d) is not None:
            step, rel = _pointer_step(d)
            raise FileNotFoundError(f"{d / INFO_FILE} names the checkpoint of step {step} ({rel}), but {d} "
                                    f"holds no committed step directory ({CHECKPOINTS_DIR}/step-NNNNNNNN)")
        return _open_dir(d, d.parent.parent if d.parent.name == CHECKPOINTS_DIR else d, optimizer)
    skipped = []
    for step, sd in reversed(found):
        try:
            ck = _open_dir(sd, d, optimizer)
        except (OSError, ValueError) as exc:
            if isinstance(exc, PermissionError):
                raise
            skipped.append((sd, str(exc)))
            continue
        _check_pointer(d, ck, found)
        ck.skipped = skipped
        if skipped:
            log.warning("skipping the damaged checkpoint(s) %s; using step %d (%s)",
                        "; ".join(f"{p.name}: {why}" for p, why in skipped), ck.step, sd)
        return ck
    raise ValueError(f"no usable checkpoint in {d}: " + "; ".join(f"{p.name}: {why}" for p, why in skipped))


def read_info(path) -> dict:
    """The ``checkpoint.json`` of the checkpoint :func:`open_checkpoint` picks."""
    return open_checkpoint(path).info


def load_state_dict(path) -> tuple[dict, dict]:
    """``(state_dict, info)`` of a checkpoint, without building the model."""
    ck = open_checkpoint(path)
    return ck.model_state(), ck.info
