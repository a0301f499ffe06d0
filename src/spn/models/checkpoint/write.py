"""Writing a checkpoint as one atomic unit (see :mod:`spn.models.checkpoint`), and cleaning what
killed writers leave behind.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from spn.models import create_model
    >>> from spn.models.checkpoint import clean_stale_temporaries, save_checkpoint
    >>> run = Path(tempfile.mkdtemp())
    >>> _ = save_checkpoint(run, create_model("baseline", num_classes=2, width=4, depth=1), cfg={}, step=3)
    >>> _ = (run / ".checkpoint.json.abc123.tmp").write_text("{")        # what a kill -9 can leave
    >>> [p.name for p in clean_stale_temporaries(run)]
    ['.checkpoint.json.abc123.tmp']
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import torch

from ... import __version__
from ...utils.io import atomic_write_json, fsync_dir, write_file_durably
from ...utils.lock import pid_alive
from .format import (CHECKPOINTS_DIR, FORMAT, INFO_FILE, KEEP, MODEL_FILE, OPTIM_FILE, OPTIM_JSON, VERSION,
                     json_bytes, list_checkpoints, optimizer_split, sha256, state_to_bytes, step_dir_name,
                     unwrap_model)

_TMP_DIR = re.compile(r"^\.(?:tmp|old|del)-step-\d+-(\d+)-[0-9a-f]+$")
#: the temporary files of the atomic writes of the run's pointer (spn.utils.io.atomic_write_bytes)
_TMP_POINTER = re.compile(r"^\." + re.escape(INFO_FILE) + r"\..+\.tmp$")


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _discard(path: Path) -> None:
    """Remove a committed step directory: first renamed out of the committed names (atomic), then
    deleted, so a kill half-way never leaves a half-deleted ``step-N``."""
    aside = path.with_name(f".del-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.rename(path, aside)
    _remove_tree(aside)


def _clean_leftovers(ckdir: Path) -> None:
    """Temporary directories of writers that died (their PID is not alive) or of this process."""
    for p in ckdir.iterdir():
        m = _TMP_DIR.match(p.name)
        if m and (int(m.group(1)) == os.getpid() or not pid_alive(int(m.group(1)))):
            _remove_tree(p)


def clean_stale_temporaries(run_dir) -> list[Path]:
    """Remove the temporary files a killed writer left in ``run_dir`` (``.checkpoint.json.*.tmp``,
    the pointer's atomic writes) and the temporary step directories of dead writers in
    ``run_dir/checkpoints``; returns what was removed. Call it only while holding the run (its
    lock, as a resumed training run does): a live writer's temporary file would go too."""
    run_dir = Path(run_dir)
    removed = []
    if run_dir.is_dir():
        for p in run_dir.iterdir():
            if _TMP_POINTER.match(p.name) and p.is_file():
                try:
                    p.unlink()
                    removed.append(p)
                except FileNotFoundError:
                    pass
    ckdir = run_dir / CHECKPOINTS_DIR
    if ckdir.is_dir():
        before = set(ckdir.iterdir())
        _clean_leftovers(ckdir)
        removed += sorted(before - set(ckdir.iterdir()))
    return removed


def _info_dict(name, config, cfg, step, files, data_info, extra) -> dict:
    data = dict(data_info or {})
    data.setdefault("num_classes", config.get("num_classes"))
    data.setdefault("class_names", [f"class_{i}" for i in range(int(config.get("num_classes") or 0))])
    info = {
        "format": FORMAT,
        "version": VERSION,
        "model": name,
        "model_config": config,
        "train_config": cfg,
        "step": int(step),
        "data": data,
        "files": files,
    }
    info["spn_version"] = __version__
    if extra:
        info.update(extra)
    return info


def _blobs(m: torch.nn.Module, name: str, step: int, optimizer) -> tuple[dict, dict]:
    """The bytes of the weight and optimizer files, and their ``files`` entries (with digests)."""
    blobs = {MODEL_FILE: state_to_bytes(m.state_dict(), metadata={"format": FORMAT, "model": name,
                                                                   "step": str(int(step))})}
    files = {"model": {"file": MODEL_FILE, "sha256": sha256(blobs[MODEL_FILE])}}
    if optimizer is not None:
        tensors, meta = optimizer_split(optimizer)
        blobs[OPTIM_FILE] = state_to_bytes(tensors, metadata={"format": FORMAT, "step": str(int(step))})
        blobs[OPTIM_JSON] = json_bytes(meta)
        files["optimizer"] = {"file": OPTIM_FILE, "sha256": sha256(blobs[OPTIM_FILE]), "meta": OPTIM_JSON,
                              "meta_sha256": sha256(blobs[OPTIM_JSON])}
    return blobs, files


def _commit(run_dir: Path, step: int, blobs: dict) -> Path:
    """Write ``blobs`` into a temporary step directory and rename it to ``step-N`` (the commit);
    on an error nothing of it is left, and the OSError says what is kept."""
    ckdir = run_dir / CHECKPOINTS_DIR
    final = ckdir / step_dir_name(step)
    tag = f"{int(step)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = ckdir / f".tmp-step-{tag}"
    previous = list_checkpoints(run_dir)
    try:
        ckdir.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(ckdir)
        tmp.mkdir()
        for fname, data in blobs.items():  # checkpoint.json last: a reader needs it to trust the rest
            write_file_durably(tmp / fname, data)
        fsync_dir(tmp)
        if final.exists():  # the same step again (a run resumed from an older checkpoint)
            aside = ckdir / f".old-step-{tag}"
            os.rename(final, aside)
            os.rename(tmp, final)
            _remove_tree(aside)
        else:
            os.rename(tmp, final)  # the commit
        fsync_dir(ckdir)
    except OSError as exc:
        _remove_tree(tmp)
        kept = (f"the previous checkpoint is kept: step {previous[-1][0]}" if previous
                else "no checkpoint of this run had been written yet")
        exc.spn_message = (f"cannot save the checkpoint of step {int(step)} in {run_dir}: "
                           f"{exc.strerror or exc} ({kept})")
        raise
    except BaseException:
        _remove_tree(tmp)
        raise
    return final


def save_checkpoint(run_dir, model: torch.nn.Module, cfg: dict, step: int, optimizer=None,
                    data_info: dict | None = None, extra: dict | None = None, keep: int = KEEP) -> Path:
    """Write the model (and optimizer) state of ``step`` as one checkpoint of ``run_dir`` (see
    :mod:`spn.models.checkpoint`); returns the path of the run's ``checkpoint.json`` pointer.

    ``cfg`` is the (JSON-able) training config; ``data_info`` should hold ``num_classes`` and
    ``class_names`` (taken from the model when absent); ``keep`` complete checkpoints are kept
    (at least 1). ``model`` may be wrapped in DistributedDataParallel. On an OSError (no space,
    permission) nothing of the new checkpoint is left and the previous one is intact."""
    run_dir = Path(run_dir)
    m = unwrap_model(model)
    name = getattr(m, "name", None)
    config = getattr(m, "config", None)
    if not isinstance(name, str) or not isinstance(config, dict):
        raise TypeError("the model needs a .name (str) and a .config (dict) to be checkpointed "
                        "(build it with spn.models.create_model)")
    if int(keep) < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    blobs, files = _blobs(m, name, step, optimizer)
    info = _info_dict(name, config, cfg, step, files, data_info, extra)
    blobs[INFO_FILE] = json_bytes(info)
    final = _commit(run_dir, step, blobs)
    # after the commit: the pointer, then the older checkpoints go
    rel = f"{CHECKPOINTS_DIR}/{final.name}"
    pointer = dict(info, checkpoint=rel,
                   files={k: dict(v, file=f"{rel}/{v['file']}", **({"meta": f"{rel}/{v['meta']}"} if "meta" in v else {}))
                          for k, v in files.items()})
    path = atomic_write_json(run_dir / INFO_FILE, pointer)
    committed = list_checkpoints(run_dir)
    for s, p in committed[:-int(keep)] if len(committed) > int(keep) else []:
        if p != final:
            _discard(p)
    return path
