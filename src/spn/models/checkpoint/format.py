"""The checkpoint format: file names, the step directories of a run, the tensor and optimizer
encodings, and the validation of a ``checkpoint.json`` (:func:`validate_info`: every field
checked, and named when it is wrong).

Example:
    >>> from spn.models.checkpoint import validate_info
    >>> validate_info({"format": "spn-checkpoint", "version": 2, "model": "baseline", "model_config": {},
    ...                "step": "12a", "files": {}}, "checkpoint.json")
    Traceback (most recent call last):
    ...
    ValueError: invalid checkpoint checkpoint.json: field 'step' must be an integer >= 0, got '12a'
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath

import torch
from safetensors.torch import save as st_save

from ... import __version__

FORMAT = "spn-checkpoint"
VERSION = 2
#: the versions this code reads (2: step directories)
READS_VERSIONS = (2,)
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
OPTIM_JSON = "optimizer.json"
INFO_FILE = "checkpoint.json"
CHECKPOINTS_DIR = "checkpoints"
#: complete checkpoints kept by default (the newest and the one before it)
KEEP = 2
STEP_DIR = re.compile(r"^step-(\d{8,})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


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


def optimizer_split(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
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


def optimizer_join(tensors: dict, meta: dict) -> dict:
    """The inverse of :func:`optimizer_split`: an ``optimizer.state_dict()``."""
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


def step_dir_name(step: int) -> str:
    return f"step-{int(step):08d}"


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """``(step, directory)`` of the committed checkpoints of a run, oldest first."""
    d = Path(run_dir) / CHECKPOINTS_DIR
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def has_checkpoint(run_dir) -> bool:
    """Whether ``run_dir`` holds a checkpoint: committed step directories, or the run's pointer
    ``checkpoint.json`` (whose step directory may be missing: :func:`open_checkpoint` says so)."""
    run_dir = Path(run_dir)
    return bool(list_checkpoints(run_dir)) or (run_dir / INFO_FILE).is_file()


# ----------------------------------------------------------------------------------------------
# validation of a checkpoint.json
def _is_int(v, minimum: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _relative_file(v) -> bool:
    """A non-empty relative path inside the checkpoint (no ``..``, not absolute)."""
    if not isinstance(v, str) or not v:
        return False
    p = PurePosixPath(v)
    return not p.is_absolute() and ".." not in p.parts and "\\" not in v


def _check_version(info: dict, f) -> None:
    version = info.get("version")
    if not _is_int(version, 0):
        raise ValueError(f"invalid checkpoint {f}: field 'version' must be an integer, got {version!r}")
    if version > VERSION:
        raise ValueError(f"{f} is a checkpoint of format version {version}, written by a newer spn; this "
                         f"spn ({__version__}) reads versions {', '.join(map(str, READS_VERSIONS))}: upgrade spn")
    if version not in READS_VERSIONS:
        raise ValueError(f"{f} is a checkpoint of format version {version} (an early development format, "
                         f"before step directories), which this spn does not read: train the model again")


def _check_files(files, f) -> None:
    if not isinstance(files, dict):
        raise ValueError(f"invalid checkpoint {f}: field 'files' must be an object, got {files!r}")
    for key, required in (("model", True), ("optimizer", False)):
        entry = files.get(key)
        if entry is None and not required:
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"invalid checkpoint {f}: field 'files.{key}' must be an object naming the "
                             f"{key} file, got {entry!r}")
        names = ("file", "meta") if key == "optimizer" else ("file",)
        for name in names:
            if not _relative_file(entry.get(name)):
                raise ValueError(f"invalid checkpoint {f}: field 'files.{key}.{name}' must be a relative file "
                                 f"name, got {entry.get(name)!r}")
        for name in ("sha256", "meta_sha256") if key == "optimizer" else ("sha256",):
            if entry.get(name) is not None and not (isinstance(entry[name], str) and _SHA256.match(entry[name])):
                raise ValueError(f"invalid checkpoint {f}: field 'files.{key}.{name}' must be 64 hex digits "
                                 f"(or null: not verified), got {entry[name]!r}")


def _check_data(data, f) -> None:
    if data is None:
        return
    if not isinstance(data, dict):
        raise ValueError(f"invalid checkpoint {f}: field 'data' must be an object, got {data!r}")
    k, names = data.get("num_classes"), data.get("class_names")
    if k is not None and not _is_int(k, 1):
        raise ValueError(f"invalid checkpoint {f}: field 'data.num_classes' must be an integer >= 1, got {k!r}")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ValueError(f"invalid checkpoint {f}: field 'data.class_names' must be a list of names, got {names!r}")
    if k is not None and names and len(names) != k:
        raise ValueError(f"invalid checkpoint {f}: field 'data.class_names' has {len(names)} names but "
                         f"'data.num_classes' is {k}")


def _check_extras(info: dict, f) -> None:
    """The optional fields training adds (``extra=`` of :func:`save_checkpoint`)."""
    checks = {
        "train_config": (lambda v: isinstance(v, dict), "an object"),
        "global_batch_size": (lambda v: _is_int(v, 1), "an integer >= 1"),
        "world_size": (lambda v: _is_int(v, 1), "an integer >= 1"),
        "recent_losses": (lambda v: isinstance(v, list) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v), "a list of numbers"),
        "checkpoint": (lambda v: isinstance(v, str) and STEP_DIR.match(PurePosixPath(v).name) is not None,
                       f"'{CHECKPOINTS_DIR}/step-NNNNNNNN'"),
    }
    for name, (ok, what) in checks.items():
        if info.get(name) is not None and not ok(info[name]):
            raise ValueError(f"invalid checkpoint {f}: field {name!r} must be {what}, got {info[name]!r}")


def validate_info(info, f) -> dict:
    """``info`` (the content of the checkpoint.json ``f``) when every field is valid; else a
    ValueError naming the file and the field: format, version, model, model_config, step, files
    (model and optimizer entries: relative file names, SHA-256 digests), data (num_classes,
    class_names), and the fields training adds (train_config, global_batch_size, world_size,
    recent_losses; the pointer's ``checkpoint``)."""
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{f} is not an spn checkpoint (format {info.get('format') if isinstance(info, dict) else None!r})")
    _check_version(info, f)
    for key in ("model", "model_config", "step", "files"):
        if key not in info:
            raise ValueError(f"invalid checkpoint {f}: the field {key!r} is missing")
    if not isinstance(info["model"], str) or not info["model"]:
        raise ValueError(f"invalid checkpoint {f}: field 'model' must be a model name, got {info['model']!r}")
    if not isinstance(info["model_config"], dict):
        raise ValueError(f"invalid checkpoint {f}: field 'model_config' must be an object, got {info['model_config']!r}")
    if not _is_int(info["step"], 0):
        raise ValueError(f"invalid checkpoint {f}: field 'step' must be an integer >= 0, got {info['step']!r}")
    _check_files(info["files"], f)
    _check_data(info.get("data"), f)
    _check_extras(info, f)
    return info
