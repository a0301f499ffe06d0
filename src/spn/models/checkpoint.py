"""Checkpoints: safetensors weights + JSON, optimizer state as safetensors + JSON (no pickle).

A run directory holds::

    model.safetensors       the model's state_dict
    optimizer.safetensors   the optimizer's tensors (``state.<param id>.<name>``), optional
    optimizer.json          the rest of the optimizer state (param groups, scalars), optional
    checkpoint.json         model name and config, train config, step, data info, file digests

Every file is written atomically (temporary file in the same directory + ``os.replace``);
``checkpoint.json`` is written last and records the SHA-256 of the tensor files, so a run killed
between two writes is detected on load instead of silently mixing two steps.

The format belongs to the models layer because everything above reads it: training writes and
resumes it, the ``baseline:RUN`` coarse source of :mod:`spn.data` and every command load it.

Example:
    >>> import tempfile
    >>> from spn.models import create_model
    >>> from spn.models.checkpoint import checkpoint_classes, load_checkpoint, save_checkpoint
    >>> run = tempfile.mkdtemp()
    >>> _ = save_checkpoint(run, create_model("baseline", num_classes=3, width=4, depth=1), cfg={}, step=0)
    >>> model, info = load_checkpoint(run)
    >>> model.name, info["step"], checkpoint_classes(info)
    ('baseline', 0, (3, ['class_0', 'class_1', 'class_2']))
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .. import __version__
from ..utils.io import atomic_write_bytes, atomic_write_json, read_json
from .registry import create_model

FORMAT = "spn-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
OPTIM_JSON = "optimizer.json"
INFO_FILE = "checkpoint.json"


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


def save_checkpoint(run_dir, model: torch.nn.Module, cfg: dict, step: int, optimizer=None,
                    data_info: dict | None = None, extra: dict | None = None) -> Path:
    """Write the model (and optimizer) state of ``step`` into ``run_dir``; returns the path of
    ``checkpoint.json``. ``cfg`` is the (JSON-able) training config; ``data_info`` should hold
    ``num_classes`` and ``class_names`` (taken from the model when absent). ``model`` may be
    wrapped in DistributedDataParallel."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    m = unwrap_model(model)
    name = getattr(m, "name", None)
    config = getattr(m, "config", None)
    if not isinstance(name, str) or not isinstance(config, dict):
        raise TypeError("the model needs a .name (str) and a .config (dict) to be checkpointed "
                        "(build it with spn.models.create_model)")
    weights = state_to_bytes(m.state_dict(), metadata={"format": FORMAT, "model": name, "step": str(int(step))})
    atomic_write_bytes(run_dir / MODEL_FILE, weights)
    files = {"model": {"file": MODEL_FILE, "sha256": _sha256(weights)}}
    if optimizer is not None:
        tensors, meta = _optimizer_split(optimizer)
        blob = state_to_bytes(tensors, metadata={"format": FORMAT, "step": str(int(step))})
        atomic_write_bytes(run_dir / OPTIM_FILE, blob)
        atomic_write_json(run_dir / OPTIM_JSON, meta)
        files["optimizer"] = {"file": OPTIM_FILE, "sha256": _sha256(blob), "meta": OPTIM_JSON}
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
    return atomic_write_json(run_dir / INFO_FILE, info)


def _resolve(path) -> Path:
    """A run directory or its model.safetensors / checkpoint.json -> the run directory."""
    p = Path(path)
    if p.is_dir():
        return p
    if p.name in (MODEL_FILE, INFO_FILE):
        if not p.exists():
            raise FileNotFoundError(f"checkpoint file {p} does not exist")
        return p.parent
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist (give a run directory or its {MODEL_FILE})")
    raise ValueError(f"{p} is not a checkpoint: give a run directory or its {MODEL_FILE}")


def read_info(path) -> dict:
    """Read and check ``checkpoint.json`` of a run directory."""
    run_dir = _resolve(path)
    f = run_dir / INFO_FILE
    if not f.is_file():
        raise FileNotFoundError(f"no checkpoint in {run_dir}: {f} does not exist")
    info = read_json(f, "corrupt checkpoint:")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{f} is not an spn checkpoint (format {info.get('format') if isinstance(info, dict) else None!r})")
    for key in ("model", "model_config", "step", "files"):
        if key not in info:
            raise ValueError(f"corrupt checkpoint: {f} lacks the key {key!r}")
    if not isinstance(info["model_config"], dict):
        raise ValueError(f"corrupt checkpoint: {f}: model_config must be an object")
    return info


def _read_tensors(run_dir: Path, entry: dict, what: str) -> dict:
    f = run_dir / entry["file"]
    if not f.is_file():
        raise FileNotFoundError(f"checkpoint {what} file {f} does not exist")
    data = f.read_bytes()
    digest = entry.get("sha256")
    if digest and _sha256(data) != digest:
        raise ValueError(f"corrupt checkpoint: {f} does not match the digest in {run_dir / INFO_FILE} "
                         "(truncated, overwritten, or the run was killed while saving)")
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ValueError(f"corrupt checkpoint: cannot read {f}: {exc}") from None


def load_state_dict(path) -> tuple[dict, dict]:
    """``(state_dict, info)`` of a checkpoint, without building the model."""
    run_dir = _resolve(path)
    info = read_info(run_dir)
    entry = info["files"].get("model") if isinstance(info["files"], dict) else None
    if not isinstance(entry, dict) or "file" not in entry:
        raise ValueError(f"corrupt checkpoint: {run_dir / INFO_FILE} names no model file")
    return _read_tensors(run_dir, entry, "model"), info


def build_model_from_info(info: dict, where: str = "checkpoint") -> torch.nn.Module:
    """The (untrained) model a checkpoint's info describes."""
    try:
        return create_model(info["model"], **info["model_config"])
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

    ``path``: a run directory or its ``model.safetensors``. Returns ``(model in eval mode, info)``
    where ``info`` is the content of ``checkpoint.json``. Missing files -> FileNotFoundError,
    corrupt or inconsistent files -> ValueError naming the file.
    """
    state, info = load_state_dict(path)
    run_dir = _resolve(path)
    model = build_model_from_info(info, str(run_dir / INFO_FILE))
    _load_into(model, state, f"checkpoint {run_dir}")
    model.to(map_location)
    model.eval()
    return model, info


def load_training_state(run_dir, model: torch.nn.Module, optimizer=None) -> dict:
    """Load a checkpoint into an existing ``model`` (and ``optimizer``) to resume training.

    The checkpoint must be of the same model name and config: otherwise ValueError saying what
    differs. Returns the checkpoint info (``info["step"]`` is the step to continue from).
    """
    m = unwrap_model(model)
    state, info = load_state_dict(run_dir)
    run_dir = _resolve(run_dir)
    if info["model"] != m.name:
        raise ValueError(f"checkpoint in {run_dir} is of model {info['model']!r}, not {m.name!r}; "
                         "use the same --model or a new --out")
    if info["model_config"] != m.config:
        diffs = [f"{k}: stored {info['model_config'].get(k)!r}, now {m.config.get(k)!r}"
                 for k in sorted(set(info["model_config"]) | set(m.config))
                 if info["model_config"].get(k) != m.config.get(k)]
        raise ValueError(f"checkpoint in {run_dir} has a different {m.name} config ({'; '.join(diffs)})")
    _load_into(m, state, f"checkpoint {run_dir}")
    if optimizer is not None:
        entry = info["files"].get("optimizer")
        if not entry:
            raise ValueError(f"checkpoint in {run_dir} has no optimizer state; cannot resume training from it")
        tensors = _read_tensors(run_dir, entry, "optimizer")
        meta_file = run_dir / entry.get("meta", OPTIM_JSON)
        if not meta_file.is_file():
            raise FileNotFoundError(f"checkpoint optimizer file {meta_file} does not exist")
        meta = read_json(meta_file, "corrupt checkpoint:")
        if meta.get("type") != type(optimizer).__name__:
            raise ValueError(f"checkpoint in {run_dir} holds {meta.get('type')} state, this run uses "
                             f"{type(optimizer).__name__}")
        try:  # load_state_dict moves the state to the parameters' device itself
            sd = _optimizer_join(tensors, meta)
            optimizer.load_state_dict(sd)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"checkpoint in {run_dir}: optimizer state does not fit: {exc}") from None
    return info
