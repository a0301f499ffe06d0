"""Checkpoints: safetensors weights + JSON, optimizer state as safetensors + JSON (no pickle),
each checkpoint one atomic unit.

A run directory holds::

    checkpoints/step-00000012/      one complete checkpoint per directory, named by its step
        model.safetensors           the model's state_dict
        optimizer.safetensors       the optimizer's tensors (``state.<param id>.<name>``), optional
        optimizer.json              the rest of the optimizer state (param groups, scalars), optional
        checkpoint.json             model name and config, train config, step, data info, file digests
    checkpoint.json                 a pointer: the newest checkpoint's JSON, file paths relative to the run

Writing (:func:`save_checkpoint`): the whole set goes into a temporary directory
``checkpoints/.tmp-step-...``; every file and the directory are fsync'd; the directory is then
renamed to ``step-NNNNNNNN`` (the commit: a step directory is complete or absent), the
``checkpoints`` folder is fsync'd, and only then is the pointer replaced (atomically) and are the
older checkpoints beyond the newest ``keep`` removed. A kill, a full disk or any error at any
point leaves the previous complete checkpoint as it was; leftover temporary directories of dead
writers are removed by the next save.

Reading (:func:`open_checkpoint`, :func:`load_checkpoint`, :func:`load_training_state`): the
newest committed step directory whose files are all present and match their SHA-256 digests.
A damaged newer one is skipped with a warning that names it and the one used instead. Run
directories of format 1 (the files directly in the run directory, before step directories) load
as they are, and the next save of a resumed run converts them.

The format belongs to the models layer because everything above reads it: training writes and
resumes it, the ``baseline:RUN`` coarse source of :mod:`spn.data` and every command load it.

Example:
    >>> import tempfile
    >>> from spn.models import create_model
    >>> from spn.models.checkpoint import checkpoint_classes, list_checkpoints, load_checkpoint, save_checkpoint
    >>> run = tempfile.mkdtemp()
    >>> _ = save_checkpoint(run, create_model("baseline", num_classes=3, width=4, depth=1), cfg={}, step=0)
    >>> model, info = load_checkpoint(run)
    >>> model.name, info["step"], checkpoint_classes(info)
    ('baseline', 0, (3, ['class_0', 'class_1', 'class_2']))
    >>> [(step, path.name) for step, path in list_checkpoints(run)]
    [(0, 'step-00000000')]
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .. import __version__
from ..utils.io import atomic_write_json, fsync_dir, read_json, write_file_durably
from ..utils.lock import pid_alive
from .registry import create_model

log = logging.getLogger(__name__)

FORMAT = "spn-checkpoint"
VERSION = 2
#: the versions this code reads (1: the files directly in the run directory)
READS_VERSIONS = (1, 2)
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
OPTIM_JSON = "optimizer.json"
INFO_FILE = "checkpoint.json"
CHECKPOINTS_DIR = "checkpoints"
#: complete checkpoints kept by default (the newest and the one before it)
KEEP = 2
_STEP_DIR = re.compile(r"^step-(\d{8,})$")
_TMP_DIR = re.compile(r"^\.(?:tmp|old|del)-step-\d+-(\d+)-[0-9a-f]+$")
_LEGACY_FILES = (MODEL_FILE, OPTIM_FILE, OPTIM_JSON)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel (or any ``.module``) wrapper; else ``model``."""
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def checkpoint_classes(info: dict, model: torch.nn.Module | None = None) -> tuple[int | None, list | None]:
    """``(num_classes, class_names)`` a checkpoint records (``info`` is its ``checkpoint.json``);
    the model's ``num_classes`` when the info has none; ``None`` for what is unknown."""
    data = info.get("data") if isinstance(info.get("data"), dict) else {}
    k = data.get("num_classes", info.get("num_classes", getattr(model, "num_classes", None)))
    names = data.get("class_names", info.get("class_names"))
    return (int(k) if k is not None else None), (list(names) if names else None)


def state_to_bytes(state: dict, metadata: dict | None = None) -> bytes:
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    return st_save(tensors, metadata=metadata)


def _optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """``optimizer.state_dict()`` -> (tensors for safetensors, JSON-able rest)."""
    sd = optimizer.state_dict()
    tensors, state_json = {}, {}
    for pid, st in sd["state"].items():
        entry = {}
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = v
                entry[name] = {"tensor": f"state.{pid}.{name}"}
            else:
                entry[name] = {"value": v}
        state_json[str(pid)] = entry
    return tensors, {"type": type(optimizer).__name__, "state": state_json, "param_groups": sd["param_groups"]}


def _optimizer_join(tensors: dict, meta: dict) -> dict:
    state = {}
    for pid, entry in meta["state"].items():
        st = {}
        for name, spec in entry.items():
            if "tensor" in spec:
                if spec["tensor"] not in tensors:
                    raise ValueError(f"optimizer tensor {spec['tensor']!r} missing from {OPTIM_FILE}")
                st[name] = tensors[spec["tensor"]]
            else:
                st[name] = spec["value"]
        state[int(pid)] = st
    return {"state": state, "param_groups": meta["param_groups"]}


# ----------------------------------------------------------------------------------------------
# writing
def step_dir_name(step: int) -> str:
    return f"step-{int(step):08d}"


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """``(step, directory)`` of the committed checkpoints of a run, oldest first (none for a run
    directory of format 1)."""
    d = Path(run_dir) / CHECKPOINTS_DIR
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def has_checkpoint(run_dir) -> bool:
    """Whether ``run_dir`` holds a checkpoint (committed step directories, or format 1 files)."""
    run_dir = Path(run_dir)
    return bool(list_checkpoints(run_dir)) or (run_dir / INFO_FILE).is_file()


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


def _info_dict(model, name, config, cfg, step, files, data_info, extra) -> dict:
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


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


def save_checkpoint(run_dir, model: torch.nn.Module, cfg: dict, step: int, optimizer=None,
                    data_info: dict | None = None, extra: dict | None = None, keep: int = KEEP) -> Path:
    """Write the model (and optimizer) state of ``step`` as one checkpoint of ``run_dir`` (see
    the module docstring); returns the path of the run's ``checkpoint.json`` pointer.

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
    blobs = {MODEL_FILE: state_to_bytes(m.state_dict(), metadata={"format": FORMAT, "model": name,
                                                                   "step": str(int(step))})}
    files = {"model": {"file": MODEL_FILE, "sha256": _sha256(blobs[MODEL_FILE])}}
    if optimizer is not None:
        tensors, meta = _optimizer_split(optimizer)
        blobs[OPTIM_FILE] = state_to_bytes(tensors, metadata={"format": FORMAT, "step": str(int(step))})
        blobs[OPTIM_JSON] = _json_bytes(meta)
        files["optimizer"] = {"file": OPTIM_FILE, "sha256": _sha256(blobs[OPTIM_FILE]), "meta": OPTIM_JSON,
                              "meta_sha256": _sha256(blobs[OPTIM_JSON])}
    info = _info_dict(m, name, config, cfg, step, files, data_info, extra)
    blobs[INFO_FILE] = _json_bytes(info)

    ckdir = run_dir / CHECKPOINTS_DIR
    final = ckdir / step_dir_name(step)
    tag = f"{int(step)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = ckdir / f".tmp-step-{tag}"
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
        exc.spn_message = (f"cannot save the checkpoint of step {int(step)} in {run_dir}: "
                           f"{exc.strerror or exc} (the previous checkpoint is kept)")
        raise
    except BaseException:
        _remove_tree(tmp)
        raise
    # after the commit: the pointer, then the older checkpoints and format-1 files go
    rel = f"{CHECKPOINTS_DIR}/{final.name}"
    pointer = dict(info, checkpoint=rel,
                   files={k: dict(v, file=f"{rel}/{v['file']}", **({"meta": f"{rel}/{v['meta']}"} if "meta" in v else {}))
                          for k, v in files.items()})
    path = atomic_write_json(run_dir / INFO_FILE, pointer)
    committed = list_checkpoints(run_dir)
    for s, p in committed[:-int(keep)] if len(committed) > int(keep) else []:
        if p != final:
            _discard(p)
    for fname in _LEGACY_FILES:
        try:
            (run_dir / fname).unlink()
        except FileNotFoundError:
            pass
    return path


# ----------------------------------------------------------------------------------------------
# reading
@dataclass
class Checkpoint:
    """One checkpoint found on disk: ``directory`` holds its files (a step directory, or the run
    directory of format 1), ``info`` its ``checkpoint.json``; ``skipped`` lists the newer
    checkpoints passed over as ``(directory, reason)``."""

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
        if entry.get("meta_sha256") and _sha256(meta_file.read_bytes()) != entry["meta_sha256"]:
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
    if digest and _sha256(data) != digest:
        raise ValueError(f"corrupt checkpoint: {f} does not match the digest in {directory / INFO_FILE} "
                         "(truncated, overwritten, or the run was killed while saving)")
    return data


def _parse_tensors(data: bytes, f: Path) -> dict:
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ValueError(f"corrupt checkpoint: cannot read {f}: {exc}") from None


def _read_info_file(f: Path) -> dict:
    info = read_json(f, "corrupt checkpoint:")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{f} is not an spn checkpoint (format {info.get('format') if isinstance(info, dict) else None!r})")
    version = info.get("version", 1)
    if version not in READS_VERSIONS:
        raise ValueError(f"{f} is a checkpoint of format version {version!r}, written by a newer spn; this "
                         f"spn ({__version__}) reads versions {', '.join(map(str, READS_VERSIONS))}: upgrade spn")
    for key in ("model", "model_config", "step", "files"):
        if key not in info:
            raise ValueError(f"corrupt checkpoint: {f} lacks the key {key!r}")
    if not isinstance(info["model_config"], dict):
        raise ValueError(f"corrupt checkpoint: {f}: model_config must be an object")
    if not isinstance(info["files"], dict):
        raise ValueError(f"corrupt checkpoint: {f}: files must be an object")
    return info


def _open_dir(directory: Path, run_dir: Path, optimizer: bool) -> Checkpoint:
    """Read and verify the checkpoint whose ``checkpoint.json`` is in ``directory``."""
    f = directory / INFO_FILE
    if not f.is_file():
        raise FileNotFoundError(f"no checkpoint in {directory}: {f} does not exist")
    ck = Checkpoint(directory, run_dir, _read_info_file(f))
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
            return p.parent  # a run directory's old file name still names the run
        raise FileNotFoundError(f"checkpoint file {p} does not exist")
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist (give a run directory or its {MODEL_FILE})")
    raise ValueError(f"{p} is not a checkpoint: give a run directory or its {MODEL_FILE}")


def open_checkpoint(path, *, optimizer: bool = False) -> Checkpoint:
    """The checkpoint to use in ``path`` (a run directory, a step directory, or a file of them):
    the newest complete one whose files match their digests (with ``optimizer=True`` its optimizer
    state too). Damaged newer checkpoints are skipped with a warning; none usable -> an error
    listing why. Missing files -> FileNotFoundError, corrupt or inconsistent ones -> ValueError."""
    d = _resolve(path)
    found = list_checkpoints(d)
    if not found:  # a step directory, or a run directory of format 1
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


def build_model_from_info(info: dict, where: str = "checkpoint") -> torch.nn.Module:
    """The (untrained) model a checkpoint's info describes.

    An SPN config saved before the alignment fix has no ``aligned`` key: it is rebuilt with
    ``aligned=False`` (its 3x3 stride-2 convs), so older runs still load.
    """
    config = dict(info["model_config"])
    if str(info["model"]).startswith("spn_") and "aligned" not in config:
        config["aligned"] = False
    try:
        return create_model(info["model"], **config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: cannot rebuild model {info['model']!r} from its config: {exc}") from None


def _load_into(model: torch.nn.Module, state: dict, where: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:5]}")
        raise ValueError(f"{where}: the weights do not fit the model ({'; '.join(parts)})")
    model.load_state_dict(state)


def load_checkpoint(path, map_location="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a checkpoint from its JSON and load its weights.

    ``path``: a run directory (its newest complete checkpoint), a step directory, or their
    ``model.safetensors``. Returns ``(model in eval mode, info)`` where ``info`` is the content of
    the checkpoint's ``checkpoint.json`` plus ``"checkpoint_dir"`` (where it was read). Missing
    files -> FileNotFoundError, corrupt or inconsistent files -> ValueError naming the file.
    """
    ck = open_checkpoint(path)
    model = build_model_from_info(ck.info, str(ck.directory / INFO_FILE))
    _load_into(model, ck.model_state(), f"checkpoint {ck.directory}")
    model.to(map_location)
    model.eval()
    return model, dict(ck.info, checkpoint_dir=str(ck.directory))


def load_training_state(run_dir, model: torch.nn.Module, optimizer=None, checkpoint: Checkpoint | None = None) -> dict:
    """Load a checkpoint into an existing ``model`` (and ``optimizer``) to resume training.

    The newest complete checkpoint of ``run_dir`` (with its optimizer state when an optimizer is
    given), or ``checkpoint`` (from :func:`open_checkpoint`). It must be of the same model name
    and config: otherwise ValueError saying what differs. Returns the checkpoint info
    (``info["step"]`` is the step to continue from, ``info["checkpoint_dir"]`` where it was read).
    """
    m = unwrap_model(model)
    ck = checkpoint if checkpoint is not None else open_checkpoint(run_dir, optimizer=optimizer is not None)
    info, where = ck.info, ck.directory
    if info["model"] != m.name:
        raise ValueError(f"checkpoint in {where} is of model {info['model']!r}, not {m.name!r}; "
                         "use the same --model or a new --out")
    if info["model_config"] != m.config:
        diffs = [f"{k}: stored {info['model_config'].get(k)!r}, now {m.config.get(k)!r}"
                 for k in sorted(set(info["model_config"]) | set(m.config))
                 if info["model_config"].get(k) != m.config.get(k)]
        raise ValueError(f"checkpoint in {where} has a different {m.name} config ({'; '.join(diffs)})")
    _load_into(m, ck.model_state(), f"checkpoint {where}")
    if optimizer is not None:
        tensors, meta = ck.optimizer_state()
        if meta.get("type") != type(optimizer).__name__:
            raise ValueError(f"checkpoint in {where} holds {meta.get('type')} state, this run uses "
                             f"{type(optimizer).__name__}")
        try:  # load_state_dict moves the state to the parameters' device itself
            optimizer.load_state_dict(_optimizer_join(tensors, meta))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"checkpoint in {where}: optimizer state does not fit: {exc}") from None
    return dict(info, checkpoint_dir=str(where))
