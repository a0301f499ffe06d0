"""Loading a checkpoint into a model: rebuilt from its config (:func:`load_checkpoint`) or an
existing one to resume training (:func:`load_training_state`), the weights checked first
(:func:`check_weights`: the model's names and shapes, floats where it has floats, all finite).

Example:
    >>> import torch
    >>> from spn.models import create_model
    >>> from spn.models.checkpoint import check_weights
    >>> net = create_model("baseline", num_classes=2, width=4, depth=1)
    >>> state = {k: v.clone() for k, v in net.state_dict().items()}
    >>> name = next(iter(state)); state[name].view(-1)[0] = float("nan")
    >>> check_weights(net, state, "checkpoint x")
    Traceback (most recent call last):
    ...
    ValueError: checkpoint x: the weight 'unet.stem.body.0.weight' holds 1 NaN or infinite value(s) of 108
"""
from __future__ import annotations

import torch

from ..registry import create_model
from .format import INFO_FILE, optimizer_join, unwrap_model
from .read import Checkpoint, open_checkpoint


def build_model_from_info(info: dict, where: str = "checkpoint") -> torch.nn.Module:
    """The (untrained) model a checkpoint's info describes."""
    try:
        return create_model(info["model"], **dict(info["model_config"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: cannot rebuild model {info['model']!r} from its config: {exc}") from None


def _fit_message(own: dict, state: dict) -> str | None:
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    parts = []
    if missing:
        parts.append(f"missing {missing[:5]}")
    if unexpected:
        parts.append(f"unexpected {unexpected[:5]}")
    if shapes:
        parts.append(f"shape mismatch {shapes[:5]}")
    return "; ".join(parts) or None


def check_weights(model: torch.nn.Module, state: dict, where: str) -> None:
    """ValueError naming ``where`` unless ``state`` fits ``model``: the same tensor names and
    shapes, a floating dtype wherever the model's tensor is floating (int32 weights would be cast
    in silence), and every floating value finite (NaN weights give an all-zero map)."""
    own = model.state_dict()
    problem = _fit_message(own, state)
    if problem:
        raise ValueError(f"{where}: the weights do not fit the model ({problem})")
    for name, mine in own.items():
        t = state[name]
        if mine.is_floating_point() and not t.is_floating_point():
            raise ValueError(f"{where}: the weight {name!r} is {str(t.dtype).replace('torch.', '')}, not floating "
                             f"point ({str(mine.dtype).replace('torch.', '')} in the model)")
        if t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise ValueError(f"{where}: the weight {name!r} holds {bad} NaN or infinite value(s) of {t.numel()}")


def _load_into(model: torch.nn.Module, state: dict, where: str) -> None:
    check_weights(model, state, where)
    model.load_state_dict(state)


def load_checkpoint(path, map_location="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a checkpoint from its JSON and load its weights.

    ``path``: a run directory (its newest complete checkpoint), a step directory, or their
    ``model.safetensors``. Returns ``(model in eval mode, info)`` where ``info`` is the content of
    the checkpoint's ``checkpoint.json`` plus ``"checkpoint_dir"`` (where it was read). Missing
    files -> FileNotFoundError, corrupt or inconsistent files (NaN or integer weights included)
    -> ValueError naming the file.
    """
    ck = open_checkpoint(path)
    model = build_model_from_info(ck.info, str(ck.directory / INFO_FILE))
    _load_into(model, ck.model_state(), f"checkpoint {ck.directory}")
    model.to(map_location)
    model.eval()
    return model, dict(ck.info, checkpoint_dir=str(ck.directory))


def _check_same_model(m: torch.nn.Module, info: dict, where) -> None:
    if info["model"] != m.name:
        raise ValueError(f"checkpoint in {where} is of model {info['model']!r}, not {m.name!r}; "
                         "use the same --model or a new --out")
    if info["model_config"] != m.config:
        diffs = [f"{k}: stored {info['model_config'].get(k)!r}, now {m.config.get(k)!r}"
                 for k in sorted(set(info["model_config"]) | set(m.config))
                 if info["model_config"].get(k) != m.config.get(k)]
        raise ValueError(f"checkpoint in {where} has a different {m.name} config ({'; '.join(diffs)})")


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
    _check_same_model(m, info, where)
    _load_into(m, ck.model_state(), f"checkpoint {where}")
    if optimizer is not None:
        tensors, meta = ck.optimizer_state()
        if meta.get("type") != type(optimizer).__name__:
            raise ValueError(f"checkpoint in {where} holds {meta.get('type')} state, this run uses "
                             f"{type(optimizer).__name__}")
        try:  # load_state_dict moves the state to the parameters' device itself
            optimizer.load_state_dict(optimizer_join(tensors, meta))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"checkpoint in {where}: optimizer state does not fit: {exc}") from None
    return dict(info, checkpoint_dir=str(where))
