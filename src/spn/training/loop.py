"""The training loop of ``spn train`` (single process or ``torchrun`` data parallel).

``train(cfg, task) -> dict`` trains ``cfg.model`` on ``cfg.data`` patches with the loss of
``task`` and writes, into ``cfg.out``. The loop is one for every task: ``task`` (an object of
the :class:`TrainingTask` protocol, a task of :mod:`spn.tasks`) supplies what differs: the
datasets with their conditioning input, the patches, the model's options, the loss and the
final evaluation.

- ``config.json`` at the start: the resolved :class:`~spn.training.TrainConfig` (learning
  rate and full model config filled in), world size, global batch, total steps, data info;
- ``log.jsonl``: one JSON object per ``log_interval`` steps (``step``, mean ``loss`` over the
  interval, ``lr``, ``images_per_s``, ``elapsed_s``); plus ``{"event": ...}`` lines;
- checkpoints every ``ckpt_interval`` steps and at the end, each one atomic unit in
  ``checkpoints/step-N/``, the newest ``keep_checkpoints`` kept (:mod:`spn.models.checkpoint`);
- ``summary.json`` at the end: the returned dict; after a resume its ``elapsed_s`` and
  ``images_per_s`` cover the whole run (the training time up to the checkpoint resumed from is
  stored in the checkpoint).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import DataLoader

from spn import __version__
from spn.data import absolute_data_spec
from spn.data.sampling import MemoryCache, SampleView, StepSampler
from spn.models import create_model
from spn.models.checkpoint import (CHECKPOINTS_DIR, has_checkpoint, load_training_state, open_checkpoint,
                                   save_checkpoint, step_dir_name, unwrap_model)
from spn.ops import active_backend
from spn.utils.io import annotate_os_error, atomic_write_json, atomic_write_text, check_output_path, read_json
from spn.utils.lock import DirLock

from . import distributed as D
from .config import TrainConfig, check_resume_compatible

log = logging.getLogger(__name__)

DEFAULT_STEPS = 1000
#: per-step losses a checkpoint keeps, so that a resumed run's summary covers the whole run
RECENT_LOSSES = 10
CONFIG_FILE = "config.json"
LOG_FILE = "log.jsonl"
SUMMARY_FILE = "summary.json"


class TrainingTask(Protocol):
    """What the loop asks of a task (the tasks of :mod:`spn.tasks` implement it).

    ``prepare(cfg)`` returns ``cfg`` with ``task`` set to the task's name and ``task_options``
    resolved (defaults filled in, checked, paths absolute); every other method receives that
    config and reads its own options from ``cfg.task_options``.
    """

    name: str

    def prepare(self, cfg: TrainConfig) -> TrainConfig: ...

    def build_datasets(self, cfg: TrainConfig, device, run_dir: Path, train_dataset=None, val_dataset=None,
                       need_val: bool = True) -> tuple: ...

    def data_info(self, ds) -> dict: ...

    def patches(self, train_ds, cfg: TrainConfig): ...

    def model_options(self, cfg: TrainConfig, dinfo: dict) -> tuple[str, dict]: ...

    def loss(self, dmodel, batch, device, ctx, cfg: TrainConfig) -> tuple: ...

    def evaluate(self, model, val_ds, limit: int | None = None) -> dict: ...


def _worker_init(_):
    torch.set_num_threads(1)


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
    """``cfg`` with the dataset path (``folder:PATH`` ...) and its path options made absolute:
    what a run stores, so that ``--resume`` works from any directory (the task makes its own
    options' paths absolute in ``prepare``)."""
    data, opts = absolute_data_spec(cfg.data, cfg.data_options)
    init = str(Path(cfg.init).expanduser().absolute()) if cfg.init else cfg.init
    return cfg.replace(data=data, data_options=opts, init=init)


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


def train(cfg: TrainConfig, task: TrainingTask | None = None, *, train_dataset=None, val_dataset=None,
          callback=None) -> dict:
    """Train per ``cfg`` with the part of the loop that ``task`` supplies (see the module
    docstring; :func:`spn.tasks.train` picks the task named by ``cfg.task``); returns the summary.

    ``train_dataset`` / ``val_dataset`` replace the datasets built from ``cfg.data`` (any dataset
    of the common contract). ``callback(step, loss, model)`` is called after every optimizer step
    (step counted from 1, ``model`` unwrapped); an exception it raises stops training (as a kill
    would).

    The run directory is locked for the run (rank 0 holds ``RUN/.lock``): a second writer, a
    ``--resume`` of a run still running included, gets an error naming the holder's PID; the
    lock of a killed run is taken over. Paths in the stored config are absolute.

    Returns ``{"run_dir", "model", "start_step", "steps", "final_loss", "mean_loss" (over the
    last 10 steps of the run, those before a resume included), "losses" (this invocation's
    per-step losses), "images_per_s", "elapsed_s" (both over the whole run, the segments
    before a resume included), "segment_elapsed_s" (this invocation's seconds), "world_size", "global_batch_size", "checkpoint",
    "resumed_from", "val", "val_note"}`` where ``val`` is the task's evaluation of the
    validation split (or None, with the reason in ``val_note`` when one was asked for).
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    if task is None or not callable(getattr(task, "loss", None)):
        raise TypeError("train needs the task that supplies the datasets, model options and loss "
                        "(a task of spn.tasks; spn.tasks.train(cfg) picks the one cfg.task names)")
    if cfg.task is not None and cfg.task != task.name:
        raise ValueError(f"cfg.task is {cfg.task!r} but the task given is {task.name!r}")
    cfg = task.prepare(absolute_paths(cfg.validate()))
    ctx = D.init_distributed(cfg.device)
    threads = torch.get_num_threads()
    lock = None
    try:
        lock = _take_run_dir(cfg, ctx)
        return _train(cfg, task, ctx, train_dataset, val_dataset, callback)
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


@dataclass
class _Run:
    """What the phases of one training invocation share."""

    cfg: TrainConfig
    task: TrainingTask
    ctx: D.DistContext
    run_dir: Path
    train_ds: object = None
    val_ds: object = None
    note: str | None = None
    dinfo: dict = field(default_factory=dict)
    patches: object = None
    model_name: str = ""
    model: torch.nn.Module | None = None
    optimizer: torch.optim.Optimizer | None = None
    G: int = 1
    total: int = 0
    resolved: dict = field(default_factory=dict)
    start: int = 0
    recent: list = field(default_factory=list)  # the last RECENT_LOSSES per-step losses of the run
    elapsed_before: float = 0.0  # training seconds of the run up to the checkpoint resumed from
    ck: object = None

    @property
    def main(self) -> bool:
        return self.ctx.is_main


def _set_threads(cfg: TrainConfig, ctx: D.DistContext) -> None:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    elif ctx.distributed and ctx.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, ctx.local_world_size)))


def _build_data_and_model(r: _Run, train_dataset, val_dataset) -> None:
    cfg, task, device = r.cfg, r.task, r.ctx.device
    r.train_ds, r.val_ds, r.note = task.build_datasets(cfg, device, r.run_dir, train_dataset, val_dataset,
                                                       need_val=r.main)
    if r.main and r.note:
        log.warning(r.note)
    if cfg.cache:
        r.train_ds = MemoryCache(r.train_ds)
    r.dinfo = task.data_info(r.train_ds)
    r.patches = task.patches(r.train_ds, cfg)
    r.model_name, mcfg = task.model_options(cfg, r.dinfo)
    torch.manual_seed(cfg.seed)
    r.model = create_model(r.model_name, **mcfg).to(device)
    r.optimizer = build_optimizer(cfg, r.model.parameters())
    r.G = cfg.batch_size * r.ctx.world_size
    r.total = total_steps(cfg, len(r.patches), r.G)
    r.resolved = _resolved_dict(cfg, r.model, r.ctx.world_size)


def _resume(r: _Run, has_ckpt: bool) -> None:
    """Check the stored run against this one and restore the newest complete checkpoint."""
    cfg, run_dir = r.cfg, r.run_dir
    view = _resume_view(r.resolved, r.G)
    old_cfg = run_dir / CONFIG_FILE
    if old_cfg.is_file():
        stored = read_json(old_cfg, "cannot resume:")
        check_resume_compatible(_resume_view(stored.get("train_config", {}), stored.get("global_batch_size")),
                                view, str(run_dir))
    if has_ckpt:
        ck = open_checkpoint(run_dir, optimizer=True)  # the newest complete checkpoint
        tc = ck.info.get("train_config") or {}
        if tc:
            check_resume_compatible(_resume_view(tc, ck.info.get("global_batch_size", r.G)), view, str(run_dir))
        load_training_state(run_dir, r.model, r.optimizer, checkpoint=ck)
        r.ck, r.start = ck, ck.step
        r.recent = [float(v) for v in ck.info.get("recent_losses") or []][-RECENT_LOSSES:]
        before = ck.info.get("elapsed_s")
        r.elapsed_before = float(before) if isinstance(before, (int, float)) and math.isfinite(before) else 0.0
        if r.main:
            log.info(f"resuming {run_dir} from step {r.start} ({ck.directory})")
            if ck.skipped:
                _set_aside_damaged(ck, run_dir)
    elif r.main:
        log.info(f"{run_dir} has no checkpoint yet: starting at step 0")
    if r.start >= r.total:
        raise ValueError(f"run {run_dir} is already at step {r.start} >= the {r.total} steps asked for; "
                         "ask for more --steps to train on")


def _write_start(r: _Run) -> None:
    """Rank 0: ``config.json``, and the start / resume event in ``log.jsonl``."""
    device = r.ctx.device
    meta = {
        "train_config": r.resolved,
        "world_size": r.ctx.world_size,
        "global_batch_size": r.G,
        "total_steps": r.total,
        "start_step": r.start,
        "resumed_from": str(r.ck.directory) if r.ck is not None else None,
        "data": r.dinfo,
        "device": str(device),
        "torch": torch.__version__,
    }
    meta["spn_version"] = __version__
    meta["backend"] = active_backend()
    atomic_write_json(r.run_dir / CONFIG_FILE, meta)
    log_path = r.run_dir / LOG_FILE
    if r.start > 0 or log_path.exists():
        _truncate_log(log_path, r.start)
    event = {"event": "resume" if r.start else "start", "step": r.start, "world_size": r.ctx.world_size,
             "time": time.time()}
    if r.ck is not None:
        event["checkpoint"] = os.path.relpath(r.ck.directory, r.run_dir)
    _append_log(log_path, event)
    if r.note:
        _append_log(log_path, {"event": "note", "step": r.start, "message": r.note})


def _train(cfg: TrainConfig, task: TrainingTask, ctx: D.DistContext, train_dataset, val_dataset, callback) -> dict:
    _set_threads(cfg, ctx)
    r = _Run(cfg=cfg, task=task, ctx=ctx, run_dir=Path(cfg.out))

    # -- the run directory (locked by rank 0): fresh or resumed ----------------------------
    has_ckpt = has_checkpoint(r.run_dir)
    if not cfg.resume and (has_ckpt or (r.run_dir / CONFIG_FILE).exists()):
        raise ValueError(f"run directory {r.run_dir} already holds a run; pass --resume to continue it "
                         "or choose another --out")
    D.barrier(ctx)
    _build_data_and_model(r, train_dataset, val_dataset)
    if cfg.init and not (cfg.resume and has_ckpt):  # a resumed run's own checkpoint holds its weights
        info = load_training_state(cfg.init, r.model)
        if r.main:
            log.info(f"starting from the weights of {info['checkpoint_dir']} (step {info.get('step')})")
    if cfg.resume:
        _resume(r, has_ckpt)
    if r.main:
        _write_start(r)
    step, losses, elapsed = _steps(r, callback)
    return _finish(r, step, losses, elapsed)


def _steps(r: _Run, callback) -> tuple[int, list[float], float]:
    """The optimizer steps from ``r.start`` to ``r.total``, with the log lines and checkpoints;
    returns ``(last step, this invocation's losses, its seconds)``."""
    cfg, ctx, device, run_dir, main = r.cfg, r.ctx, r.ctx.device, r.run_dir, r.main
    model, optimizer = r.model, r.optimizer
    dmodel = D.wrap_model(model, ctx)
    dmodel.train()
    sampler = StepSampler(r.start, r.total, cfg.batch_size, ctx.rank, ctx.world_size)
    loader = DataLoader(SampleView(r.patches, cfg.seed), batch_size=cfg.batch_size, sampler=sampler,
                        num_workers=cfg.num_workers, worker_init_fn=_worker_init if cfg.num_workers else None,
                        pin_memory=device.type == "cuda")
    lr = cfg.resolved_lr()
    ckpt_cfg = dict(r.resolved, world_size=ctx.world_size, global_batch_size=r.G)
    bar = None
    if main and _show_progress(cfg):
        from tqdm import tqdm

        bar = tqdm(total=r.total, initial=r.start, unit="step", desc=f"train {r.model_name}", dynamic_ncols=True)
    losses: list[float] = []
    interval_losses: list[float] = []
    t0 = t_int = time.perf_counter()
    imgs_int = 0
    last_ckpt_step = step = r.start
    try:
        for batch in loader:
            try:
                loss, stat, count = r.task.loss(dmodel, batch, device, ctx, cfg)
            except ValueError as exc:
                raise ValueError(f"{exc} (step {step + 1})") from None
            value = float(stat / count.clamp_min(1))
            if not math.isfinite(value):
                _stop_on_non_finite(r, value, step, last_ckpt_step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if cfg.lr_schedule == "cosine":  # a function of the step only: resumed runs agree
                lr = scheduled_lr(cfg.resolved_lr(), step, r.total)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            optimizer.step()
            step += 1
            losses.append(value)
            r.recent = (r.recent + [value])[-RECENT_LOSSES:]
            interval_losses.append(value)
            imgs_int += r.G
            if main and (step % cfg.log_interval == 0 or step == r.total):
                now = time.perf_counter()
                rate = imgs_int / max(now - t_int, 1e-9)
                rec = {"step": step, "loss": sum(interval_losses) / len(interval_losses), "lr": lr,
                       "images_per_s": rate, "elapsed_s": r.elapsed_before + now - t0}
                _append_log(run_dir / LOG_FILE, rec)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{rate:.1f}")
                interval_losses, imgs_int, t_int = [], 0, now
            if bar is not None:
                bar.update(1)
            if step % cfg.ckpt_interval == 0 or step == r.total:
                _save(r, step, ckpt_cfg, r.elapsed_before + time.perf_counter() - t0)
                last_ckpt_step = step
            if callback is not None:
                callback(step, value, model)
    finally:
        if bar is not None:
            bar.close()
    return step, losses, time.perf_counter() - t0


def _stop_on_non_finite(r: _Run, value: float, step: int, last_ckpt_step: int) -> None:
    if r.main:
        _append_log(r.run_dir / LOG_FILE, {"event": "error", "step": step + 1, "message": f"non-finite loss {value}"})
    kept = (f"the last good checkpoint (step {last_ckpt_step}) is kept in {r.run_dir}"
            if has_checkpoint(r.run_dir) else "no checkpoint had been written yet")
    raise RuntimeError(f"loss is {value} at step {step + 1}: training stopped; {kept}. "
                       "Check the data for NaN/inf values or lower the learning rate.")


def _save(r: _Run, step: int, ckpt_cfg: dict, elapsed_s: float) -> Path | None:
    if not r.main:
        return None
    return save_checkpoint(r.run_dir, r.model, ckpt_cfg, step, r.optimizer, data_info=r.dinfo,
                           extra={"global_batch_size": r.G, "world_size": r.ctx.world_size,
                                  "recent_losses": r.recent[-RECENT_LOSSES:], "elapsed_s": elapsed_s},
                           keep=r.cfg.keep_checkpoints)


def _finish(r: _Run, step: int, losses: list[float], segment_s: float) -> dict:
    """The summary (the whole run's time and rate), the final evaluation, ``summary.json``."""
    elapsed = r.elapsed_before + segment_s
    # a checkpoint of an older spn holds no time: the rate is then this segment's
    trained = step if (r.elapsed_before > 0 or r.start == 0) else len(losses)
    recent = r.recent
    summary = {
        "run_dir": str(r.run_dir),
        "model": r.model_name,
        "start_step": r.start,
        "steps": step,
        "final_loss": recent[-1] if recent else None,
        "mean_loss": (sum(recent) / len(recent)) if recent else None,
        "losses": losses,
        "images_per_s": (trained * r.G / elapsed) if elapsed > 0 else None,
        "elapsed_s": elapsed,
        "segment_elapsed_s": segment_s,
        "world_size": r.ctx.world_size,
        "global_batch_size": r.G,
        "checkpoint": str(r.run_dir / CHECKPOINTS_DIR / step_dir_name(step)) if r.main else None,
        "resumed_from": str(r.ck.directory) if r.ck is not None else None,
        "val": None,
        "val_note": r.note,
    }
    if r.main and r.val_ds is not None:
        r.model.eval()
        summary["val"] = r.task.evaluate(r.model, r.val_ds, limit=r.cfg.val_items)
        r.model.train()
    if r.main:
        atomic_write_json(r.run_dir / SUMMARY_FILE, {k: v for k, v in summary.items() if k != "losses"})
        _append_log(r.run_dir / LOG_FILE, {"event": "end", "step": step, "elapsed_s": elapsed})
    D.barrier(r.ctx)
    return summary
