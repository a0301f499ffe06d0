"""The chroma task's applications: ``spn compare --task chroma`` and ``spn demo --task chroma``.

:func:`run_chroma_compare` runs chroma checkpoints and the classical chroma upsamplers
(:mod:`spn.peers.chroma`) on the same full photos and writes, into ``out_dir`` (atomically):

- ``compare.md``: PSNR / SSIM (RGB and chroma) per method, mean and median over the photos;
  PSNR (RGB) per photo and method; the seconds per photo and milliseconds per megapixel;
- ``compare.json``: every number, per photo, with the methods' parameters;
- ``compare.png``: for the first ``figure_rows`` photos, the crop where the bilinear chroma
  errs most: the photo and every method's reconstruction, and below them the RGB error maps
  (``|error|`` averaged over R, G, B, times ``error_gain``, grey).

:func:`run_chroma_demo` (``ChromaDemoConfig``) trains a one-way and a three-way chroma SPN on
the training photos of ``photos:skimage``, evaluates them on the held-out photos, compares them
with the peers, and writes ``report.md``, ``metrics.json``, ``compare/`` and the runs.
"""
from __future__ import annotations

import logging
import math
import platform
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spn.data import build_dataset
from spn.evaluation_chroma import evaluate_chroma
from spn.inference_chroma import ChromaUpsampler
from spn.metrics.chroma import CHROMA_METRICS, chroma_scores, reconstruct_rgb, summarize_scores
from spn.ops import active_backend
from spn.peers.chroma import get_chroma_peer, list_chroma_peers, tune_chroma_peer
from spn.training import TrainConfig, train
from spn.training.loop import TrainingTask
from spn.utils.config import ConfigBase, option
from spn.utils.io import write_json, write_markdown
from spn.utils.timer import Stopwatch, time_fn
from spn.viz import figure_grid, markdown_table

log = logging.getLogger(__name__)

__all__ = ["CHROMA_TUNED", "ChromaDemoConfig", "compare_chroma_from_config", "run_chroma_compare",
           "run_chroma_demo"]

#: the peers whose parameters ``--tune-peers`` searches (on the training photos)
CHROMA_TUNED = ("guided_filter", "jbu", "domain_transform")
METRIC_TITLES = {"psnr_rgb": "PSNR RGB (dB)", "ssim_rgb": "SSIM RGB", "psnr_chroma": "PSNR chroma (dB)",
                 "ssim_chroma": "SSIM chroma"}


def _f(v, digits=2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _checkpoint_fn(name: str, spec):
    if isinstance(spec, nn.Module):
        up = ChromaUpsampler(spec, source="in-memory")
    elif isinstance(spec, (str, Path)):
        up = ChromaUpsampler.from_checkpoint(spec)
    else:
        raise TypeError(f"checkpoint {name!r}: expected a run dir path or a chroma model, got {type(spec).__name__}")
    cfg = {"model": getattr(up.model, "name", None), "model_config": getattr(up.model, "config", None),
           "step": up.info.get("step"), "source": up.source}
    return (lambda luma, low, f: up.upsample(luma, low, f)), cfg


def _worst_crop(err: torch.Tensor, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size x size`` window with the largest summed error ``(H, W)``."""
    H, W = err.shape
    s = min(size, H, W)
    box = F.avg_pool2d(err[None, None], s, stride=max(1, s // 4))[0, 0]
    i = int(box.flatten().argmax())
    y, x = divmod(i, box.shape[1])
    return min(y * max(1, s // 4), H - s), min(x * max(1, s // 4), W - s)


def run_chroma_compare(dataset, checkpoints: dict | None, peers, out_dir, *, limit: int | None = None,
                       figure_rows: int = 3, peer_params: dict | None = None, crop: int = 96,
                       error_gain: float = 8.0, time_mp: bool = True, title: str | None = None,
                       data_label: str | None = None) -> dict:
    """Compare chroma checkpoints and peers on the same photos (see the module docstring).

    Args:
        dataset: photo items with ``"image"``, ``"luma"``, ``"chroma"``, ``"chroma_low"``,
            ``"factor"`` (:class:`spn.data.PhotoDataset` with a factor).
        checkpoints: method title -> run dir of ``spn train --task chroma`` (or a chroma model).
        peers: names of :func:`spn.peers.chroma.list_chroma_peers` (list or comma-separated).
        peer_params: peer name -> parameters.
        time_mp: also time every method on one 1024 x 1024 image (the first photo resized),
            median of 3 runs after a warm-up: the milliseconds per megapixel.
    Returns:
        ``{"methods": {title: {"kind", "id", "config", "mean", "median", "seconds_per_image",
        "ms_per_megapixel", "ms_per_megapixel_1024"}}, "per_image": [...], "images", "factor",
        "report", "json", "figure"}``.
    """
    if isinstance(peers, str):
        peers = [p.strip() for p in peers.split(",") if p.strip()]
    peers = list(peers or [])
    checkpoints = dict(checkpoints or {})
    if not peers and not checkpoints:
        raise ValueError("run_chroma_compare: nothing to compare (no peers and no checkpoints)")
    if len(set(peers)) != len(peers):
        raise ValueError(f"run_chroma_compare: a peer is listed twice: {peers}")
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n < 1:
        raise ValueError("run_chroma_compare: the dataset is empty")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = _chroma_methods(peers, checkpoints, dict(peer_params or {}))
    per_image, fig_rows, row_labels, pixels, factor, watches = _run_chroma_methods(
        dataset, n, methods, figure_rows, crop, error_gain)
    results: "OrderedDict[str, dict]" = OrderedDict()
    for t, m in methods.items():
        summ = summarize_scores([r["scores"][t] for r in per_image])
        sec = watches[t].summary()
        results[t] = {"kind": m["kind"], "id": m["id"], "config": m["config"],
                      "mean": {k: v["mean"] for k, v in summ.items()},
                      "median": {k: v["median"] for k, v in summ.items()},
                      "seconds_per_image": {"median": sec["median"], "mean": sec["mean"]},
                      "ms_per_megapixel": 1e3 * sum(watches[t].samples) / (pixels / 1e6)}
    if time_mp:
        _time_megapixel(dataset[0], methods, factor, results)

    figure = None
    if fig_rows:
        columns = ["photo / luma"] + list(methods)
        figure = figure_grid(fig_rows, columns, out_dir / "compare.png", cell_size=(144, 144),
                             row_labels=row_labels)
    lines = _chroma_report_lines(results, methods, per_image, n, factor, time_mp, title,
                                 data_label or type(dataset).__name__)
    if figure is not None:
        lines += [f"![crops where the bilinear chroma errs most, and their error maps (x{error_gain:g})](compare.png)",
                  ""]
    report = write_markdown(out_dir / "compare.md", "\n".join(lines))
    summary = {"task": getattr(dataset, "task", None), "images": n, "factor": factor,
               "threads": torch.get_num_threads(), "metrics": list(CHROMA_METRICS), "methods": results,
               "per_image": per_image}
    js = write_json(out_dir / "compare.json", summary)
    summary.update(report=str(report), json=str(js), figure=None if figure is None else str(figure))
    return summary


def _chroma_methods(peers: list, checkpoints: dict, peer_params: dict) -> "OrderedDict[str, dict]":
    """Method title -> ``{"kind", "id", "fn", "config"}``: the peers, then the checkpoints."""
    methods: "OrderedDict[str, dict]" = OrderedDict()
    for name in peers:
        peer = get_chroma_peer(name, **peer_params.get(name, {}))
        methods[peer.title] = {"kind": "peer", "id": name, "fn": peer.upsample, "config": peer.config()}
    for name, spec in checkpoints.items():
        if str(name) in methods:
            raise ValueError(f"checkpoint name {name!r} clashes with a peer's title; rename it")
        fn, cfg = _checkpoint_fn(str(name), spec)
        methods[str(name)] = {"kind": "checkpoint", "id": cfg["source"], "fn": fn, "config": cfg}
    return methods


def _run_chroma_methods(dataset, n: int, methods: dict, figure_rows: int, crop: int, error_gain: float):
    """Every method on the first ``n`` photos: ``(per-photo scores, figure rows, their labels,
    pixels, factor, stopwatches)``."""
    watches = {t: Stopwatch() for t in methods}
    per_image, fig_rows, row_labels, pixels, factor = [], [], [], 0, None
    for i in range(n):
        item = dataset[i]
        for k in ("image", "luma", "chroma", "chroma_low", "factor"):
            if k not in item:
                raise ValueError(f"item {item.get('name', i)!r} has no {k!r}: compare photos with a factor")
        f = int(item["factor"])
        factor = f if factor is None else factor
        luma, low = item["luma"], item["chroma_low"]
        H, W = luma.shape[-2:]
        pixels += H * W
        row = {"name": str(item.get("name", i)), "size": [int(H), int(W)], "scores": {}}
        recon = {}
        for t, m in methods.items():
            if i == 0:
                m["fn"](luma, low, f)  # warm-up
            with watches[t].time():
                chroma = m["fn"](luma, low, f)
            if tuple(chroma.shape) != tuple(item["chroma"].shape):
                raise ValueError(f"method {t!r} returned {tuple(chroma.shape)} for chroma {tuple(item['chroma'].shape)}")
            row["scores"][t] = chroma_scores(luma, chroma, item["chroma"], item["image"])
            if i < figure_rows:
                recon[t] = reconstruct_rgb(luma, chroma)
        per_image.append(row)
        if i < figure_rows:
            rows, labels = _crop_rows(item, recon, row["name"], crop, error_gain)
            fig_rows += rows
            row_labels += labels
    return per_image, fig_rows, row_labels, pixels, factor, watches


def _crop_rows(item: dict, recon: dict, name: str, crop: int, error_gain: float) -> tuple[list, list]:
    """Two figure rows for one photo: the crop where the bilinear chroma errs most, every
    method's reconstruction of it, and below them the error maps."""
    H, W = item["luma"].shape[-2:]
    ref = recon.get("bilinear", next(iter(recon.values())))
    y, x = _worst_crop((ref - item["image"]).abs().mean(0), crop)
    s = min(crop, H, W)

    def cut(t):
        return t[..., y:y + s, x:x + s]

    rows = [{"photo / luma": cut(item["image"]), **{t: cut(r) for t, r in recon.items()}},
            {"photo / luma": cut(item["luma"][0]),
             **{t: (cut((r - item["image"]).abs().mean(0)) * error_gain).clamp(0, 1) for t, r in recon.items()}}]
    return rows, [f"{name} ({x},{y})", f"error x{error_gain:g}"]


def _time_megapixel(item: dict, methods: dict, factor: int, results: dict) -> None:
    """Every method on one 1024 x 1024 image (``item``'s photo resized), median of 3 runs after a
    warm-up: ``results[title]["ms_per_megapixel_1024"]``."""
    img = F.interpolate(item["image"][None], size=(1024, 1024), mode="bilinear", align_corners=False)[0]
    from spn.data.color import chroma_item

    big = chroma_item(img.clamp(0, 1), factor)
    for t, m in methods.items():
        timing = time_fn(t, lambda: m["fn"](big["luma"], big["chroma_low"], factor), warmup=1, repeats=3,
                         max_time_s=30.0, min_repeats=1, seed=None)
        results[t]["ms_per_megapixel_1024"] = timing.median_ms / (1024 * 1024 / 1e6)


def _chroma_report_lines(results, methods, per_image, n, factor, time_mp, title, data_label) -> list[str]:
    """``compare.md`` up to the figure: the summary table, PSNR per photo, the peers' parameters."""
    lines = [f"# {title or 'Chroma upsampling comparison'}", "",
             f"Data: {data_label}, {n} photo(s), chroma area-subsampled {factor}x "
             f"(BT.601 YCbCr); full photos; CPU, {torch.get_num_threads()} thread(s).", "",
             "Mean and median over the photos; PSNR in dB (data range 1), SSIM per Wang et al. 2004 "
             "(Gaussian window 11, sigma 1.5), RGB rebuilt from the true luma and each method's chroma.", ""]
    headers = ["method"] + [f"{METRIC_TITLES[k]} {s}" for k in ("psnr_rgb", "ssim_rgb") for s in ("mean", "median")]
    headers += [f"{METRIC_TITLES[k]} median" for k in ("psnr_chroma", "ssim_chroma")]
    headers += ["s/photo", "ms/MP"] + (["ms/MP (1024x1024)"] if time_mp else [])
    rows = []
    for t, r in results.items():
        vals = [_f(r[s][k], 2 if k.startswith("psnr") else 4) for k in ("psnr_rgb", "ssim_rgb") for s in ("mean", "median")]
        vals += [_f(r["median"]["psnr_chroma"]), _f(r["median"]["ssim_chroma"], 4)]
        vals += [f"{r['seconds_per_image']['median']:.3g}", f"{r['ms_per_megapixel']:.1f}"]
        if time_mp:
            vals.append(f"{r['ms_per_megapixel_1024']:.1f}")
        rows.append([t] + vals)
    lines += [markdown_table(headers, rows)]
    lines += ["PSNR RGB (dB) per photo:", "",
              markdown_table(["photo", "size"] + list(methods),
                             [[r["name"], f"{r['size'][1]}x{r['size'][0]}"]
                              + [_f(r["scores"][t]["psnr_rgb"]) for t in methods] for r in per_image])]
    params = [f"{t}: " + ", ".join(f"{k}={v}" for k, v in r["config"].items() if k != "name")
              for t, r in results.items() if r["kind"] == "peer" and len(r["config"]) > 1]
    if params:
        lines += ["Peer parameters: " + "; ".join(params) + ".", ""]
    return lines


def _parse_peers(text: str, default: bool) -> list[str]:
    if default:
        return list_chroma_peers()
    if text.strip().lower() == "none":
        return []
    peers = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in peers if p not in list_chroma_peers()]
    if bad:
        raise ValueError(f"unknown chroma peer(s) {', '.join(bad)}; valid chroma peers are "
                         f"{', '.join(list_chroma_peers())}")
    return peers


def tune_peers(data: str, peers, factor: int, out_dir=None) -> dict:
    """Grid-search the parameters of the tunable ``peers`` on the training photos of ``data``
    (:func:`spn.peers.chroma.tune_chroma_peer`); writes ``peer_tuning.json`` into ``out_dir``."""
    train_ds = build_dataset(data, split="train", factor=factor)
    items = [train_ds[i] for i in range(len(train_ds))]
    found = {}
    for name in peers:
        if name in CHROMA_TUNED:
            res = tune_chroma_peer(name, items)
            found[name] = res
            log.info(f"{name}: best on {len(items)} training photos {res['best']} "
                     f"(chroma PSNR {res['best_psnr']:.2f} dB)")
    if out_dir is not None:
        write_json(Path(out_dir) / "peer_tuning.json", found)
    return {k: {p: v for p, v in r["best"].items()} for k, r in found.items()}


def compare_chroma_from_config(cfg, opts) -> dict:
    """``spn compare --task chroma``: ``cfg`` is a :class:`spn.experiments.compare.CompareConfig`
    (the options every task shares), ``opts`` the chroma task's (``factor``, ``tune_peers``)."""
    from .compare import checkpoint_args

    cfg.validate()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    checkpoints = checkpoint_args(cfg.checkpoint)
    peers = _parse_peers(cfg.peers or "", cfg.peers is None)
    if not peers and not checkpoints:
        raise ValueError("nothing to compare: give --checkpoint NAME=RUN and/or --peers")
    factor = opts.factor
    if factor is None:
        factor = next((ChromaUpsampler.from_checkpoint(p).factor for p in checkpoints.values()), 8)
    dataset = build_dataset(cfg.data, split=cfg.split, factor=factor)
    params = tune_peers(cfg.data, peers, factor, cfg.out) if opts.tune_peers else {}
    return run_chroma_compare(dataset, checkpoints, peers, cfg.out, limit=cfg.limit, figure_rows=cfg.figure_rows,
                              peer_params=params, time_mp=cfg.time_512, data_label=f"{cfg.data} ({cfg.split})")


# --- spn demo --task chroma ------------------------------------------------------------------------

RUNS = ("chroma_one_way", "chroma_three_way")
TITLES = {"chroma_one_way": "one-way SPN", "chroma_three_way": "three-way SPN"}


@dataclass
class ChromaDemoConfig(ConfigBase):
    """Settings of :func:`run_chroma_demo`: both chroma SPNs trained on the training photos of
    ``data`` (``steps`` Adam steps of ``batch_size`` crops of ``patch_size``), evaluated and
    compared with the peers on its held-out photos, at chroma subsampling ``factor``."""

    section = "config"

    out: str = option("runs/demo_chroma", help="output folder", metavar="DIR")
    data: str = option("photos:skimage", help="photos", cli=False)
    factor: int = option(8, help="chroma subsampling factor", cli=False)
    quick: bool = option(False, help="the short version")
    seed: int = option(0, help="random seed")
    threads: int | None = option(None, help="torch CPU threads", metavar="N", default_help="torch's")
    steps: int = option(4000, help="each SPN's training steps", flags=("--spn-steps",), metavar="N")
    batch_size: int = option(8, help="crops per step", cli=False)
    patch_size: int = option(128, help="crop side", cli=False)
    lr: float = option(2e-3, help="Adam learning rate", cli=False)
    loss: str = option("l1", help="l1 or l2", cli=False)
    model_cfg: dict = option(default_factory=dict, help="chroma SPN options (spn.models.ChromaSPNConfig)", cli=False)
    peers: list = option(default_factory=list_chroma_peers, help="peers compared", cli=False)
    figure_rows: int = option(3, help="photos in the figure", cli=False)
    time_mp: bool = option(True, help="time every method on a 1024 x 1024 image", cli=False)
    compare: bool = option(True, help="compare with the classical refiners", negative="--no-compare",
                           negative_help="skip the comparison with the classical refiners")
    progress: bool | None = option(None, help="progress bars", negative="--no-progress",
                                   negative_help="no progress bars", default_help="when stderr is a terminal")
    force: bool = option(False, help="replace the runs of an earlier demo in --out")

    @classmethod
    def preset(cls, quick: bool = False, **overrides) -> "ChromaDemoConfig":
        base = dict(quick=True, steps=400, time_mp=False, figure_rows=2) if quick else {}
        base.update(overrides)
        return cls(**base)

    def validate(self) -> "ChromaDemoConfig":
        for name in ("factor", "steps", "batch_size", "patch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ChromaDemoConfig.{name} must be a positive int, got {v!r}")
        if self.patch_size % self.factor:
            raise ValueError(f"patch_size {self.patch_size} must be a multiple of factor {self.factor}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"ChromaDemoConfig.lr must be a positive number, got {self.lr!r}")
        return self


def run_chroma_demo(cfg: ChromaDemoConfig | None, task: TrainingTask) -> dict:
    """Train (with ``task``, the chroma task of :mod:`spn.tasks`), evaluate and compare the
    chroma SPNs (see :class:`ChromaDemoConfig`); returns ``metrics.json``'s content."""
    cfg = (cfg or ChromaDemoConfig()).validate()
    t0 = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    from .demo import prepare_demo_out

    out = prepare_demo_out(cfg.out, RUNS, cfg.force, "chroma demo")
    runs = {n: out / "runs" / n for n in RUNS}
    write_json(out / "demo_config.json", cfg.to_dict())
    val = build_dataset(cfg.data, split="val", factor=cfg.factor)
    training, evals = {}, {}
    for name in RUNS:
        log.info(f"training {name} ({cfg.steps} steps) -> {runs[name]}")
        tc = TrainConfig(data=cfg.data, task_options={"factor": cfg.factor, "loss": cfg.loss}, model=name,
                         model_cfg=dict(cfg.model_cfg), patch_size=cfg.patch_size, batch_size=cfg.batch_size,
                         optimizer="adam", lr=cfg.lr, steps=cfg.steps, seed=cfg.seed, log_interval=max(1, min(50, cfg.steps)),
                         ckpt_interval=cfg.steps, out=str(runs[name]), threads=cfg.threads, progress=cfg.progress,
                         val_split=None)
        ts = time.perf_counter()
        s = train(tc, task)
        training[name] = {"steps": s["steps"], "mean_loss": s["mean_loss"], "wall_s": time.perf_counter() - ts}
        up = ChromaUpsampler.from_checkpoint(runs[name])
        log.info(f"evaluating {name} on {len(val)} held-out photos")
        evals[name] = evaluate_chroma(up.model, val)
    compare = None
    if cfg.compare:
        log.info("comparison with the classical chroma upsamplers")
        compare = run_chroma_compare(val, {TITLES[n]: str(runs[n]) for n in RUNS}, cfg.peers, out / "compare",
                                     figure_rows=cfg.figure_rows, time_mp=cfg.time_mp,
                                     title="spn demo --task chroma: chroma SPNs vs classical upsamplers",
                                     data_label=f"{cfg.data} (val)")
    metrics = {
        "mode": "quick" if cfg.quick else "full", "config": cfg.to_dict(), "num_val_images": len(val),
        "val_names": list(getattr(val, "names", [])), "evaluations": evals, "training": training,
        "compare": None if compare is None else {k: compare[k] for k in ("methods", "per_image", "report", "json",
                                                                         "figure")},
        "run_dirs": {n: str(p) for n, p in runs.items()}, "elapsed_s": time.perf_counter() - t0,
        "machine": {"threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__,
                    "backend": active_backend()},
    }
    write_json(out / "metrics.json", metrics)
    write_markdown(out / "report.md", _demo_report(cfg, metrics, compare))
    metrics["report"] = str(out / "report.md")
    log.info(f"done in {metrics['elapsed_s']:.0f} s: {out / 'report.md'}")
    return metrics


def _demo_report(cfg, m, compare) -> str:
    lines = ["# spn demo --task chroma: guided chroma upsampling of real photographs", "",
             f"Mode: **{m['mode']}**. Data: `{cfg.data}`; held-out photos: {', '.join(m['val_names'])}. "
             f"The chroma (BT.601 Cb, Cr) is area-subsampled {cfg.factor}x; every method rebuilds it at full "
             "resolution from the full-resolution luma; scores on the full held-out photos.", ""]
    rows = []
    for name in RUNS:
        e = m["evaluations"][name]
        rows.append([TITLES[name], _f(e["bilinear"]["median"]["psnr_rgb"]), _f(e["model"]["median"]["psnr_rgb"]),
                     _f(e["model"]["median"]["psnr_rgb"] - e["bilinear"]["median"]["psnr_rgb"]),
                     _f(e["model"]["median"]["ssim_rgb"], 4), f"{e['ms_per_megapixel']:.1f}",
                     _f(m["training"][name]["mean_loss"], 5), f"{m['training'][name]['wall_s']:.0f}"])
    lines += ["## The SPNs (medians over the held-out photos)", "",
              markdown_table(["model", "bilinear PSNR RGB", "SPN PSNR RGB", "gain (dB)", "SPN SSIM RGB", "ms/MP",
                              "loss (last 10 steps)", "training s"], rows)]
    if compare is not None:
        text = Path(compare["report"]).read_text(encoding="utf-8").split("\n", 2)[-1]
        lines += ["## Comparison with the classical chroma upsamplers", "", text.replace("(compare.png)",
                                                                                          "(compare/compare.png)")]
    lines += [f"Training: {cfg.steps} Adam steps (lr {cfg.lr}, {cfg.loss.upper()} loss), {cfg.batch_size} random "
              f"{cfg.patch_size} x {cfg.patch_size} crops a step (random scales and flips), seed {cfg.seed}. "
              f"Total demo time {m['elapsed_s']:.0f} s on {m['machine']['platform']} "
              f"({m['machine']['threads']} threads).", ""]
    return "\n".join(lines)
