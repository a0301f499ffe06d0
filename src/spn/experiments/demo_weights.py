"""The seg demo's shipped weights: its three models, trained once, stored in the package.

``spn demo --task seg --family hard`` evaluates the baseline CNN and the one-way / three-way SPNs
stored in ``spn/weights/demo_hard/`` (float16 safetensors, one file per model, with the model's
config, its training config and its training summary in the metadata) and the dense CRF
parameters tuned for them (``crf_params.json``), instead of training them. They are used when
the demo's training settings (:data:`TRAINING_FIELDS` of
:class:`spn.experiments.demo.DemoConfig`) are those the files were trained with; any other
setting, ``--quick`` or ``--train`` trains afresh.

Every demo that trains writes the same files of its own models into ``OUT/weights/``
(:func:`export_demo_weights`); the shipped ones are those of
``spn demo --task seg --family hard --train`` (``spn/weights/demo_hard/MODEL_CARD.md``).

Example:
    >>> from spn.experiments.demo import DemoConfig
    >>> from spn.experiments.demo_weights import shipped_demo_weights
    >>> shipped_demo_weights(DemoConfig(family="simple"))[0] is None
    True
"""
from __future__ import annotations

import json
import struct
from importlib import resources
from pathlib import Path

import torch

from spn.models import create_model
from spn.models.checkpoint import check_weights, load_checkpoint, save_checkpoint, state_to_bytes
from spn.utils.io import atomic_write_bytes, write_json

#: the models of the demo, one file each (``NAME.safetensors``)
MODEL_NAMES = ("baseline", "spn_one_way", "spn_three_way")
#: the dense CRF's tuned parameters and the search that found them
CRF_FILE = "crf_params.json"
#: the fields of DemoConfig that decide what training gives (the shipped files are used only when
#: all of them are equal to those the files were trained with)
TRAINING_FIELDS = ("family", "coarse", "seed", "size", "train_images", "patch_size", "batch_size", "lr",
                   "baseline_steps", "spn_steps", "baseline_cfg", "spn_cfg")
#: the training summary's keys kept in a file's metadata (the report's "Training runs" table)
SUMMARY_KEYS = ("steps", "final_loss", "mean_loss", "images_per_s", "elapsed_s", "wall_s", "global_batch_size")


def training_settings(cfg) -> dict:
    """The training settings of a demo config (:data:`TRAINING_FIELDS`), as JSON values."""
    return json.loads(json.dumps({k: getattr(cfg, k) for k in TRAINING_FIELDS}))


def export_demo_weights(run_dirs: dict, cfg, out_dir, summaries: dict, crf_grid: dict | None = None) -> Path:
    """Write the demo's trained models (``run_dirs``: model name -> run directory) as float16
    safetensors ``out_dir/NAME.safetensors`` (metadata: model, model_config, train_config, step,
    data, the demo's :func:`training_settings` and the training ``summaries[NAME]``) and the dense
    CRF search ``crf_grid`` (its ``best`` parameters) as ``out_dir/crf_params.json``; returns
    ``out_dir``. What :func:`load_demo_weights` reads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = json.dumps(training_settings(cfg), sort_keys=True)
    for name in MODEL_NAMES:
        model, info = load_checkpoint(run_dirs[name])
        state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
        train_cfg = {k: v for k, v in dict(info.get("train_config") or {}).items() if k != "out"}
        meta = {"model": info["model"], "model_config": json.dumps(info["model_config"]),
                "train_config": json.dumps(train_cfg), "step": str(info["step"]),
                "data": json.dumps(info.get("data") or {}), "demo_training": settings,
                "summary": json.dumps({k: summaries.get(name, {}).get(k) for k in SUMMARY_KEYS})}
        atomic_write_bytes(out_dir / f"{name}.safetensors", state_to_bytes(state, meta))
    if crf_grid is not None:
        keep = {k: crf_grid.get(k) for k in ("best", "best_mean_iou", "input_mean_iou", "images")}
        write_json(out_dir / CRF_FILE, dict(keep, demo_training=json.loads(settings)))
    return out_dir


def shipped_dir(family: str):
    """The package folder of a family's shipped files (``spn/weights/demo_FAMILY``; may not exist)."""
    return resources.files("spn").joinpath("weights", f"demo_{family}")


def _read(data: bytes, where: str) -> tuple[dict, dict]:
    """``(tensors as float32, metadata)`` of a safetensors file's bytes; one clear error if damaged."""
    from safetensors.torch import load

    try:
        n = struct.unpack("<Q", data[:8])[0]
        meta = dict(json.loads(data[8:8 + n]).get("__metadata__") or {})
        tensors = load(data)
    except Exception as exc:  # a damaged file: one clear line
        raise ValueError(f"cannot read the demo weights {where}: {exc}") from None
    return {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}, meta


def _meta_json(meta: dict, key: str, where: str):
    try:
        return json.loads(meta[key])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ValueError(f"the demo weights {where} carry no valid {key!r} in their metadata") from None


def load_demo_weights(folder) -> dict:
    """The demo's models from a folder of :func:`export_demo_weights` files (a path or a package
    resource): ``{NAME: {"model": nn.Module (eval, float32), "meta": metadata with its JSON
    decoded, "where": file}}`` plus ``"crf"`` (the content of ``crf_params.json``, or None).
    A missing file -> FileNotFoundError; a damaged one, weights that do not fit their model or
    files of different trainings -> ValueError naming the file."""
    folder = Path(folder) if isinstance(folder, str) else folder
    out, first = {}, None
    for name in MODEL_NAMES:
        ref = folder.joinpath(f"{name}.safetensors")
        try:
            data = ref.read_bytes()
        except OSError as exc:
            raise FileNotFoundError(f"the demo weights {ref} are missing: {exc}") from None
        tensors, meta = _read(data, str(ref))
        meta = dict(meta, **{k: _meta_json(meta, k, str(ref)) for k in
                             ("model_config", "train_config", "data", "demo_training", "summary")})
        if meta.get("model") != name:
            raise ValueError(f"the demo weights {ref} hold a {meta.get('model')!r} model, not {name!r}")
        model = create_model(name, **meta["model_config"])
        check_weights(model, tensors, f"demo weights {ref}")
        model.load_state_dict(tensors)
        if first is not None and meta["demo_training"] != first:
            raise ValueError(f"the demo weights {ref} come from another training than {MODEL_NAMES[0]}.safetensors")
        first = meta["demo_training"]
        out[name] = {"model": model.eval(), "meta": meta, "where": str(ref)}
    crf = folder.joinpath(CRF_FILE)
    out["crf"] = json.loads(crf.read_text(encoding="utf-8")) if crf.is_file() else None
    return out


def shipped_demo_weights(cfg) -> tuple[dict | None, str]:
    """``(what load_demo_weights gives, why)`` for the shipped files that fit ``cfg``, or
    ``(None, why not)``: no files for the family, ``cfg.train``, or a training setting that
    differs from the files' (named in ``why``)."""
    if getattr(cfg, "train", False):
        return None, "--train: the models are trained here"
    folder = shipped_dir(cfg.family)
    if not folder.joinpath(f"{MODEL_NAMES[0]}.safetensors").is_file():
        return None, f"no shipped weights for the family {cfg.family!r}: the models are trained here"
    weights = load_demo_weights(folder)
    stored, mine = weights[MODEL_NAMES[0]]["meta"]["demo_training"], training_settings(cfg)
    diff = [f"{k} {mine.get(k)!r} (shipped: {stored.get(k)!r})" for k in TRAINING_FIELDS if mine.get(k) != stored.get(k)]
    if diff:
        return None, "the training settings differ from the shipped weights': " + "; ".join(diff) + \
            "; the models are trained here"
    return weights, f"shipped weights ({folder})"


def materialise(weights: dict, run_dirs: dict, baseline_run: Path) -> None:
    """Write the loaded shipped models as checkpoints ``run_dirs[NAME]`` (what a trained demo
    leaves), so that ``spn eval`` / ``spn refine`` / ``--coarse baseline:RUN`` take them as they
    take trained ones; the SPNs' training config names ``baseline_run`` as their coarse source."""
    for name in MODEL_NAMES:
        w = weights[name]
        cfg = dict(w["meta"]["train_config"], out=str(run_dirs[name]))
        if name != "baseline":
            cfg["task_options"] = dict(cfg.get("task_options") or {}, coarse=f"baseline:{baseline_run}")
        save_checkpoint(run_dirs[name], w["model"], cfg=cfg, step=int(w["meta"]["step"]),
                        data_info=w["meta"]["data"], extra={"source": f"shipped: {w['where']}"})


def as_float16(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its floating weights rounded to float16 and back (in place): what the
    shipped files hold. Used to check that the rounding does not change the scores."""
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model
