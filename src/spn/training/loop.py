"""The training loop of ``spn train`` (single process or ``torchrun`` data parallel).

``train(cfg) -> dict`` trains ``cfg.model`` on ``cfg.data`` patches with softmax cross-entropy
(ignore index 255) and writes, into ``cfg.out``: (``cfg.task == "chroma"``: the chroma model on
photo crops with an L1 / L2 loss, :class:`spn.training.chroma.ChromaTask`; :data:`TASKS` holds
what differs between the tasks, the loop is the same)

- ``config.json`` at the start: the resolved :class:`~spn.training.TrainConfig` (learning
  rate and full model config filled in), world size, global batch, total steps, data info;
- ``log.jsonl``: one JSON object per ``log_interval`` steps (``step``, mean ``loss`` over the
  interval, ``lr``, ``images_per_s``, ``elapsed_s``); plus ``{"event": ...}`` lines;
- checkpoints every ``ckpt_interval`` steps and at the end, each one atomic unit in
  ``checkpoints/step-N/``, the newest ``keep_checkpoints`` kept (:mod:`spn.models.checkpoint`);
- ``summary.json`` at the end: the returned dict.

The run directory is locked while the run writes to it (``.lock``, held by rank 0): a second
writer stops with an error naming the holder's PID, the lock of a killed run is taken over.
``resume`` continues from the newest complete checkpoint and logs which.

Determinism and resume. Global sample ``n`` (``n = step * global_batch + position``) is patch
``perm_e[n mod L]`` of epoch ``e = n div L`` of the :class:`spn.data.PatchDataset` (``L`` patches,
``perm_e`` a permutation seeded by ``(seed, e)``, the patch crop/flip seeded by ``(seed, e,
index)``; :mod:`spn.data.sampling`). Nothing depends on the worker count or on earlier steps, so a run resumed from the
checkpoint of step ``s`` draws exactly the batches an uninterrupted run draws from step ``s`` on;
with the model and optimizer state restored, the two runs agree step for step. Under torchrun
rank ``r`` takes positions ``r*batch_size ... (r+1)*batch_size - 1`` of every global batch, and
the loss is normalised by the labelled-pixel count of the whole global batch, so the averaged
DDP gradient equals the single-process gradient of the same global batch.

A non-finite loss stops training with a RuntimeError naming the step, before the optimizer
update; the last checkpoint on disk (the last good state) is kept.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from spn import __version__
from spn.data import PatchDataset, absolute_coarse_spec, absolute_data_spec, build_dataset, wrap_coarse_source
from spn.data.sampling import MemoryCache, SampleView, StepSampler
from spn.evaluation import evaluate
from spn.models import create_model
from spn.models.checkpoint import (CHECKPOINTS_DIR, has_checkpoint, load_training_state, open_checkpoint,
                                   save_checkpoint, step_dir_name, unwrap_model)
from spn.ops import active_backend
from spn.utils.io import annotate_os_error, atomic_write_json, atomic_write_text, check_output_path, read_json
from spn.utils.lock import DirLock

from . import distributed as D
from .chroma import ChromaTask
from .mask import MaskTask
from .config import TrainConfig, check_resume_compatible
from .losses import cross_entropy_sum, valid_pixels

log = logging.getLogger(__name__)

DEFAULT_STEPS = 1000
#: per-step losses a checkpoint keeps, so that a resumed run's summary covers the whole run
RECENT_LOSSES = 10
CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"
SUMMARY_FILE = "summary.json"
FILE_BACKED = ("folder", "voc", "helen")


# ----------------------------------------------------------------------------------------------
# data
def _worker_init(_):
    torch.set_num_threads(1)


def _build_split(cfg: TrainConfig, split: str, coarse: str | None, coarse_options: dict):
    kw = dict(cfg.data_options)
    if cfg.data.split(":", 1)[0].lower() in FILE_BACKED:
        kw.setdefault("on_corrupt", cfg.on_corrupt)
    return build_dataset(cfg.data, split=split, coarse=coarse, coarse_options=coarse_options,
                         coarse_kind=cfg.coarse_kind, **kw)


def _needs_coarse(model_name: str) -> bool:
    return model_name != "baseline"


def _check_coarse_present(ds, cfg: TrainConfig, where: str) -> None:
    if len(ds) == 0:
        raise ValueError(f"the {where} dataset {cfg.data!r} is empty")
    item = ds[0]
    if "coarse" not in item:
        raise ValueError(
            f"model {cfg.model!r} refines coarse segmentations, but dataset {cfg.data!r} gives no coarse "
            f"maps (coarse source {cfg.coarse or 'default'!s}). Train the baseline first and use its "
            f"output: `spn train --data {cfg.data} --model baseline --out runs/baseline`, then "
            f"`--coarse baseline:runs/baseline`; or simulate coarse maps with `--coarse gt-downsample:8`"
            " (or put coarse maps in the dataset and pass `--coarse files`)")


def build_datasets(cfg: TrainConfig, device, run_dir: Path, train_dataset=None, val_dataset=None,
                   need_val: bool = True):
    """``(train, val or None, note)`` per ``cfg`` (datasets of the common contract); ``note``
    says why there is no validation set when one was asked for (a missing or empty split).

    A ``baseline:RUN`` coarse source caches the baseline's outputs in ``run_dir/coarse_cache``.
    """
    # the baseline ignores coarse maps: do not compute them
    coarse = "none" if cfg.model == "baseline" and cfg.coarse is None else cfg.coarse
    cache = run_dir / "coarse_cache"
    # DataLoader workers are forked processes: they cannot use CUDA, run the baseline on the CPU
    bdev = device if cfg.num_workers == 0 else torch.device("cpu")
    note = None
    if train_dataset is not None:
        train_ds = wrap_coarse_source(train_dataset, coarse, device=bdev, cache_dir=cache)
    else:
        train_ds = _build_split(cfg, "train", coarse, {"device": bdev, "cache_dir": cache})
    val_ds = None
    if val_dataset is not None:
        val_ds = wrap_coarse_source(val_dataset, coarse, device=device, cache_dir=cache)
    elif need_val and cfg.val_split and train_dataset is None:
        try:
            val_ds = _build_split(cfg, cfg.val_split, coarse, {"device": device, "cache_dir": cache})
        except (ValueError, FileNotFoundError) as exc:
            note = (f"no final evaluation: the validation split {cfg.val_split!r} of {cfg.data} cannot be "
                    f"built ({str(exc).splitlines()[0]}); pass --val-split NAME or --no-val")
            val_ds = None
    if _needs_coarse(cfg.model):
        _check_coarse_present(train_ds, cfg, "training")
    if val_ds is not None and len(val_ds) == 0:
        name = cfg.val_split if val_dataset is None else "val_dataset"
        note = (f"no final evaluation: the validation split {name!r} of {cfg.data} is empty "
                f"({len(train_ds)} training images); pass --val-split NAME or --no-val")
        val_ds = None
    return train_ds, val_ds, note


def data_info(ds) -> dict:
    info = {}
    if hasattr(ds, "info"):
        try:
            info = dict(ds.info())
        except Exception:  # info is descriptive only
            info = {}
    K = int(ds.num_classes)
    info["num_classes"] = K
    info["class_names"] = list(getattr(ds, "class_names", None) or [f"class_{i}" for i in range(K)])
    info["ignore_index"] = int(getattr(ds, "ignore_index", 255))
    return info


class SegTask:
    """The segmentation task's datasets, patches, model options, loss and evaluation (the
    default, ``--task seg``); :class:`spn.training.chroma.ChromaTask` is the chroma task's."""

    name = "seg"

    def build_datasets(self, cfg, device, run_dir, train_dataset=None, val_dataset=None, need_val=True):
        return build_datasets(cfg, device, run_dir, train_dataset, val_dataset, need_val)

    def data_info(self, ds) -> dict:
        return data_info(ds)

    def patches(self, train_ds, cfg):
        return PatchDataset(train_ds, size=cfg.patch_size, patches_per_image=cfg.patches_per_image,
                            flip=cfg.flip, seed=cfg.seed)

    def model_options(self, cfg, dinfo) -> tuple[str, dict]:
        K = dinfo["num_classes"]
        mcfg = dict(cfg.model_cfg)
        if "num_classes" in mcfg and int(mcfg["num_classes"]) != K:
            raise ValueError(f"model_cfg num_classes={mcfg['num_classes']} but dataset {cfg.data!r} has {K} classes")
        mcfg["num_classes"] = K
        return cfg.model, mcfg

    def loss(self, dmodel, batch, device, ctx, cfg):
        """``(loss to backpropagate, global loss sum (float64), global labelled-pixel count)``."""
        image = batch["image"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        needs_coarse = _needs_coarse(cfg.model)
        coarse = batch.get("coarse") if needs_coarse else None
        if needs_coarse and coarse is None:
            raise ValueError("a training batch has no coarse maps")
        if coarse is not None:
            coarse = coarse.to(device, non_blocking=True)
        count = D.all_reduce_sum(valid_pixels(mask).reshape(1), ctx)
        logits = dmodel(image, coarse)
        loss_sum = cross_entropy_sum(logits, mask)
        loss = loss_sum * (ctx.world_size / count.clamp_min(1).to(loss_sum.dtype))
        stat = D.all_reduce_sum(loss_sum.detach().to(torch.float64).reshape(1), ctx)
        return loss, stat, count

    def evaluate(self, model, val_ds, limit=None) -> dict:
        return evaluate(model, val_ds, **({"limit": limit} if limit else {}))


#: ``TrainConfig.task`` -> its part of the loop
TASKS = {"seg": SegTask(), "chroma": ChromaTask(), "mask": MaskTask()}


# ----------------------------------------------------------------------------------------------
# optimisation
def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    lr = cfg.resolved_lr()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def scheduled_lr(base: float, step: int, total: int) -> float:
    """The cosine schedule's rate for the update after ``step`` updates: ``base (1 + cos(pi step /
    total)) / 2``, from ``base`` down to near zero at the last step."""
    return base * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total)))


def total_steps(cfg: TrainConfig, num_patches: int, global_batch: int) -> int:
    if cfg.steps is not None:
        return int(cfg.steps)
    if cfg.epochs is not None:
        return max(1, math.ceil(cfg.epochs * num_patches / global_batch))
    return DEFAULT_STEPS


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill: drop it and everything after
    return out


def read_log(run_dir) -> list[dict]:
    """The step records of a run's ``log.jsonl`` (event lines left out)."""
    return [r for r in _read_log(Path(run_dir) / LOG_FILE) if "event" not in r]


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to ``step`` (those after the checkpoint are redone)."""
    keep = [r for r in _read_log(path) if int(r.get("step", 0)) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the dataset path (``folder:PATH`` ...), its path options and a
    ``baseline:RUN`` coarse source made absolute: what a run stores, so that ``--resume`` works
    from any directory."""
    data, opts = absolute_data_spec(cfg.data, cfg.data_options)
    return cfg.replace(data=data, data_options=opts, coarse=absolute_coarse_spec(cfg.coarse))


def _resolved_dict(cfg: TrainConfig, model, world: int) -> dict:
    d = cfg.to_dict()
    d["lr"] = cfg.resolved_lr()
    d["model"] = getattr(unwrap_model(model), "name", cfg.model)
    d["model_cfg"] = dict(unwrap_model(model).config)
    return d


def _resume_view(resolved: dict, global_batch: int) -> dict:
    """The stored or new config as the resume check compares it (paths absolute: a run of an
    older spn stored them as typed, relative to the directory it was started from, taken here
    as the current one)."""
    v = dict(resolved)
    v["global_batch_size"] = global_batch
    if isinstance(v.get("data"), str):
        v["data"], v["data_options"] = absolute_data_spec(v["data"], v.get("data_options"))
        v["coarse"] = absolute_coarse_spec(v.get("coarse"))
    return v


def _show_progress(cfg: TrainConfig) -> bool:
    if cfg.progress is not None:
        return cfg.progress
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


# ----------------------------------------------------------------------------------------------
def _append_log(path: Path, record: dict) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
    except OSError as exc:
        raise annotate_os_error(exc, "cannot write", path)


def _take_run_dir(cfg: TrainConfig, ctx: D.DistContext) -> DirLock | None:
    """Rank 0 checks ``--out``, creates it and takes its lock (:class:`spn.utils.lock.DirLock`);
    every rank learns whether that worked (a failure on rank 0 is its error, elsewhere a
    RuntimeError), so no rank waits for a run that will not start."""
    lock, err = None, None
    if ctx.is_main:
        try:
            run_dir = check_output_path(cfg.out, "--out", directory=True)
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise annotate_os_error(exc, "cannot create the run directory", run_dir)
            lock = DirLock(run_dir, what="spn train").acquire()
            if lock.took_over:
                log.warning(f"took over the lock of {run_dir} left by PID {lock.took_over.get('pid')}, "
                            "which no longer runs (killed?)")
        except Exception as exc:  # reported below, after every rank knows
            err = exc
    if not D.all_ok(err is None, ctx):
        if err is not None:
            raise err
        raise RuntimeError(f"rank 0 could not take the run directory {cfg.out} (see its error)")
    return lock


def train(cfg: TrainConfig, *, train_dataset=None, val_dataset=None, callback=None) -> dict:
    """Train per ``cfg`` (see the module docstring); returns the summary dict.

    ``train_dataset`` / ``val_dataset`` replace the datasets built from ``cfg.data`` (any dataset
    of the common contract). ``callback(step, loss, model)`` is called after every optimizer step
    (step counted from 1, ``model`` unwrapped); an exception it raises stops training (as a kill
    would).

    The run directory is locked for the run (rank 0 holds ``RUN/.lock``): a second writer, a
    ``--resume`` of a run still running included, gets an error naming the holder's PID; the
    lock of a killed run is taken over. Paths in the stored config are absolute.

    Returns ``{"run_dir", "model", "start_step", "steps", "final_loss", "mean_loss" (over the
    last 10 steps of the run, those before a resume included), "losses" (this invocation's
    per-step losses), "images_per_s", "elapsed_s", "world_size", "global_batch_size",
    "checkpoint", "resumed_from", "val", "val_note"}`` where ``val`` is
    :func:`spn.evaluation.evaluate`'s result on the validation split (or None, with the reason
    in ``val_note`` when one was asked for).
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    cfg = absolute_paths(cfg.validate())
    ctx = D.init_distributed(cfg.device)
    threads = torch.get_num_threads()
    lock = None
    try:
        lock = _take_run_dir(cfg, ctx)
        return _train(cfg, ctx, train_dataset, val_dataset, callback)
    finally:
        torch.set_num_threads(threads)  # train() may change it: leave the caller's setting as it was
        if lock is not None:
            lock.release()
        D.cleanup(ctx)


def _set_aside_damaged(ck, run_dir: Path) -> None:
    """Move the damaged checkpoints newer than the one resumed from out of the committed names."""
    for d, why in ck.skipped:
        dest = d.with_name(f"damaged-{d.name}-{int(time.time())}")
        try:
            os.rename(d, dest)
            log.warning(f"moved the damaged checkpoint {d} to {dest} ({why})")
        except OSError as exc:
            log.warning(f"could not move the damaged checkpoint {d} aside: {exc}")


def _train(cfg: TrainConfig, ctx: D.DistContext, train_dataset, val_dataset, callback) -> dict:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    elif ctx.distributed and ctx.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, ctx.local_world_size)))
    device = ctx.device
    run_dir = Path(cfg.out)
    main = ctx.is_main

    # -- the run directory (locked by rank 0): fresh or resumed ----------------------------
    has_ckpt = has_checkpoint(run_dir)
    if not cfg.resume and (has_ckpt or (run_dir / CONFIG_FILE).exists()):
        raise ValueError(f"run directory {run_dir} already holds a run; pass --resume to continue it "
                         "or choose another --out")
    D.barrier(ctx)

    # -- data ------------------------------------------------------------------------------
    task = TASKS[cfg.task]
    train_ds, val_ds, note = task.build_datasets(cfg, device, run_dir, train_dataset, val_dataset, need_val=main)
    if main and note:
        log.warning(note)
    if cfg.cache:
        train_ds = MemoryCache(train_ds)
    dinfo = task.data_info(train_ds)
    patches = task.patches(train_ds, cfg)

    # -- model and optimizer ---------------------------------------------------------------
    model_name, mcfg = task.model_options(cfg, dinfo)
    torch.manual_seed(cfg.seed)
    model = create_model(model_name, **mcfg).to(device)
    optimizer = build_optimizer(cfg, model.parameters())
    G = cfg.batch_size * ctx.world_size
    total = total_steps(cfg, len(patches), G)
    resolved = _resolved_dict(cfg, model, ctx.world_size)
    view = _resume_view(resolved, G)

    start = 0
    recent: list[float] = []  # the last RECENT_LOSSES per-step losses of the run
    ck = None
    if cfg.resume:
        old_cfg = run_dir / CONFIG_FILE
        if old_cfg.is_file():
            stored = read_json(old_cfg, "cannot resume:")
            check_resume_compatible(_resume_view(stored.get("train_config", {}), stored.get("global_batch_size")),
                                    view, str(run_dir))
        if has_ckpt:
            ck = open_checkpoint(run_dir, optimizer=True)  # the newest complete checkpoint
            tc = ck.info.get("train_config") or {}
            if tc:
                check_resume_compatible(_resume_view(tc, ck.info.get("global_batch_size", G)), view, str(run_dir))
            load_training_state(run_dir, model, optimizer, checkpoint=ck)
            start = ck.step
            recent = [float(v) for v in ck.info.get("recent_losses") or []][-RECENT_LOSSES:]
            if main:
                log.info(f"resuming {run_dir} from step {start} ({ck.directory})")
                if ck.skipped:
                    _set_aside_damaged(ck, run_dir)
        elif main:
            log.info(f"{run_dir} has no checkpoint yet: starting at step 0")
        if start >= total:
            raise ValueError(f"run {run_dir} is already at step {start} >= the {total} steps asked for; "
                             "ask for more --steps to train on")

    resumed_from = str(ck.directory) if ck is not None else None
    if main:
        meta = {
            "train_config": resolved,
            "world_size": ctx.world_size,
            "global_batch_size": G,
            "total_steps": total,
            "start_step": start,
            "resumed_from": resumed_from,
            "data": dinfo,
            "device": str(device),
            "torch": torch.__version__,
        }
        meta["spn_version"] = __version__
        meta["backend"] = active_backend()
        atomic_write_json(run_dir / CONFIG_FILE, meta)
        log_path = run_dir / LOG_FILE
        if start > 0 or log_path.exists():
            _truncate_log(log_path, start)
        event = {"event": "resume" if start else "start", "step": start, "world_size": ctx.world_size,
                 "time": time.time()}
        if ck is not None:
            event["checkpoint"] = os.path.relpath(ck.directory, run_dir)
        _append_log(log_path, event)
        if note:
            _append_log(log_path, {"event": "note", "step": start, "message": note})

    dmodel = D.wrap_model(model, ctx)
    dmodel.train()
    sampler = StepSampler(start, total, cfg.batch_size, ctx.rank, ctx.world_size)
    loader = DataLoader(SampleView(patches, cfg.seed), batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.num_workers, worker_init_fn=_worker_init if cfg.num_workers else None,
                        pin_memory=device.type == "cuda")
    lr = cfg.resolved_lr()
    ckpt_cfg = dict(resolved, world_size=ctx.world_size, global_batch_size=G)

    def save(step: int) -> Path | None:
        if not main:
            return None
        return save_checkpoint(run_dir, model, ckpt_cfg, step, optimizer, data_info=dinfo,
                               extra={"global_batch_size": G, "world_size": ctx.world_size,
                                      "recent_losses": recent[-RECENT_LOSSES:]},
                               keep=cfg.keep_checkpoints)

    bar = None
    if main and _show_progress(cfg):
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, unit="step", desc=f"train {model_name}", dynamic_ncols=True)

    losses: list[float] = []
    interval_losses: list[float] = []
    t0 = t_int = time.perf_counter()
    imgs_int = 0
    last_ckpt_step = start
    step = start
    try:
        for batch in loader:
            try:
                loss, stat, count = task.loss(dmodel, batch, device, ctx, cfg)
            except ValueError as exc:
                raise ValueError(f"{exc} (step {step + 1})") from None
            value = float(stat / count.clamp_min(1))
            if not math.isfinite(value):
                if main:
                    _append_log(run_dir / LOG_FILE, {"event": "error", "step": step + 1,
                                                     "message": f"non-finite loss {value}"})
                kept = (f"the last good checkpoint (step {last_ckpt_step}) is kept in {run_dir}"
                        if has_checkpoint(run_dir) else "no checkpoint had been written yet")
                raise RuntimeError(f"loss is {value} at step {step + 1}: training stopped; {kept}. "
                                   "Check the data for NaN/inf values or lower the learning rate.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if cfg.lr_schedule == "cosine":  # a function of the step only: resumed runs agree
                lr = scheduled_lr(cfg.resolved_lr(), step, total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            optimizer.step()
            step += 1
            losses.append(value)
            recent = (recent + [value])[-RECENT_LOSSES:]
            interval_losses.append(value)
            imgs_int += G
            if main and (step % cfg.log_interval == 0 or step == total):
                now = time.perf_counter()
                rate = imgs_int / max(now - t_int, 1e-9)
                rec = {"step": step, "loss": sum(interval_losses) / len(interval_losses), "lr": lr,
                       "images_per_s": rate, "elapsed_s": now - t0}
                _append_log(run_dir / LOG_FILE, rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rate:.1f}")
                interval_losses, imgs_int, t_int = [], 0, now
            if bar is not None:
                bar.update(1)
            if step % cfg.ckpt_interval == 0 or step == total:
                save(step)
                last_ckpt_step = step
            if callback is not None:
                callback(step, value, model)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0

    summary = {
        "run_dir": str(run_dir),
        "model": model_name,
        "start_step": start,
        "steps": step,
        "final_loss": recent[-1] if recent else None,
        "mean_loss": (sum(recent) / len(recent)) if recent else None,
        "losses": losses,
        "images_per_s": (len(losses) * G / elapsed) if elapsed > 0 else None,
        "elapsed_s": elapsed,
        "world_size": ctx.world_size,
        "global_batch_size": G,
        "checkpoint": str(run_dir / CHECKPOINTS_DIR / step_dir_name(step)) if main else None,
        "resumed_from": resumed_from,
        "val": None,
        "val_note": note,
    }
    if main and val_ds is not None:
        model.eval()
        summary["val"] = task.evaluate(model, val_ds, limit=cfg.val_items)
        model.train()
    if main:
        atomic_write_json(run_dir / SUMMARY_FILE, {k: v for k, v in summary.items() if k != "losses"})
        _append_log(run_dir / LOG_FILE, {"event": "end", "step": step, "elapsed_s": elapsed})
    D.barrier(ctx)
    return summary
