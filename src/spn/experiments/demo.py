"""``spn demo``: the paper's refinement protocol end to end on the procedural scenes.

:func:`run_demo` (``DemoConfig``), with the models of ``spn/weights/demo_FAMILY/`` when the
package ships them for the demo's training settings (``--family hard`` with the default settings;
:mod:`spn.experiments.demo_weights`): then steps 1 and 3 load them instead of training, and the
dense CRF takes the parameters tuned for them instead of being tuned again. ``--quick`` (short
training), any other training setting, or ``--train`` trains them here, and the demo writes their
float16 files into ``out/weights/`` (what ``spn/weights/demo_FAMILY/`` would hold). The demo:

1. trains the baseline CNN (a U-Net working at 1/8 resolution, bilinearly upsampled) on the
   synthetic training split;
2. evaluates it on the validation split; its softmax output is the coarse segmentation the SPNs
   refine (``--coarse baseline:RUN``), as in the paper. If the baseline is too weak (mIoU below
   ``min_baseline_miou``) or too strong (above ``max_baseline_miou``: nothing left to refine),
   the demo falls back to simulated coarse maps (``gt-downsample:8``) and says so in the report;
3. trains a one-way SPN and a three-way SPN (same everything but the connection) on those
   coarse maps;
4. evaluates all on the validation split and writes, into ``out``:

   - ``report.md``: a Table-3-like table (baseline / coarse input, +1 way SPN, +3 way SPN:
     overall AC, mean AC, mean IoU, seconds per image), per-class IoU, the training runs;
   - ``metrics.json``: every number of the report (strict JSON, NaN -> null);
   - ``figure.png``: image | coarse | one-way | three-way | ground truth for a few val images;
   - ``runs/{baseline,spn_one_way,spn_three_way}/``: the checkpoints and resolved configs
     (``config.json``, ``log.jsonl``) of the three training runs (the shipped models' checkpoints
     when they are shipped); ``demo_config.json``;
5. appends the comparison with the classical refiners (bilinear, guided filter, domain
   transform, dense CRF when installed) on the same validation images (``compare/``,
   :mod:`spn.experiments.compare`), unless ``compare=False``. The dense CRF is first tuned on 8
   training images with the same coarse source (``crf_tune``; ``compare/crf_grid.json``).

``family`` picks the scenes: ``"simple"`` (``--data synthetic``), ``"hard"``
(``--data synthetic:hard``: cluttered backgrounds, low-contrast and camouflaged objects), or
``"both"``: the whole demo once per family, into ``out/simple`` and ``out/hard``, with one
``report.md`` / ``metrics.json`` in ``out`` that holds both. The
default coarse source is the baseline's output (the paper's protocol); ``gt-downsample:8``
refines simulated coarse maps instead. Every table has boundary IoU and mBA beside mIoU.

Timings are wall-clock seconds of the model call on this machine (CPU, ``threads`` torch
threads); an SPN's seconds exclude the baseline that produced its coarse input.
"""
from __future__ import annotations

import logging
import math
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from spn.data import BaselineCoarse, build_dataset
from spn.evaluation import evaluate
from spn.inference import predict
from spn.models import spn_preset
from spn.models.checkpoint import load_checkpoint
from spn.ops import active_backend
from spn.peers import densecrf_available
from spn.training import TrainConfig, train
from spn.training.loop import TrainingTask
from spn.utils.config import ConfigBase, option
from spn.utils.io import write_json, write_markdown
from spn.viz import (figure_grid, fmt_percent, fmt_seconds, markdown_table, per_class_markdown, results_json,
                     table3_markdown)

from .compare import crf_search_note, run_compare, tune_densecrf
from .demo_weights import CRF_FILE, export_demo_weights, materialise, shipped_demo_weights

RUN_NAMES = ("baseline", "spn_one_way", "spn_three_way")
TITLES = {"spn_one_way": "+1 way SPN", "spn_three_way": "+3 way SPN"}


@dataclass
class DemoConfig(ConfigBase):
    """Settings of :func:`run_demo`. ``DemoConfig.preset(quick)`` gives the tuned defaults.

    Data: ``size`` x ``size`` synthetic scenes, ``train_images`` / ``val_images`` per split.
    Training: ``baseline_steps`` / ``spn_steps`` Adam steps (``lr``) of ``batch_size`` patches of
    ``patch_size`` pixels. ``baseline_cfg`` / ``spn_cfg``: model options (see
    :class:`spn.models.BaselineConfig`, :class:`spn.models.SPNConfig`; the SPNs use the "fast"
    preset, :data:`spn.models.SPN_PRESETS`). ``compare``: run
    :func:`spn.experiments.compare.run_compare` on ``compare_limit`` val images with
    ``compare_peers`` (dense CRF only when installed); ``compare_time_512`` also times every
    method on a 512 x 512 image. ``train``: train even when the package ships the models of these
    training settings (:mod:`spn.experiments.demo_weights`). The demo's ``metrics.json`` holds
    this config under ``"config"`` (``spn demo --config metrics.json`` reads it back).
    """

    section = "config"

    out: str = option("runs/demo", help="output folder", metavar="DIR")
    quick: bool = option(False, help="the short version (seg: short training runs here instead of the shipped models)")
    train: bool = option(False, help="train the models here even where shipped weights fit the settings "
                                     "(--family hard; what reproduces spn/weights/demo_hard)")
    seed: int = option(0, help="random seed")
    threads: int | None = option(None, help="torch CPU threads", metavar="N", default_help="torch's")
    size: int = option(256, help="side of the synthetic scenes", cli=False)
    train_images: int = option(64, help="training scenes", cli=False)
    val_images: int = option(16, help="validation scenes", cli=False)
    patch_size: int = option(128, help="training patch side", cli=False)
    batch_size: int = option(8, help="patches per step", cli=False)
    lr: float = option(2e-3, help="Adam learning rate", cli=False)
    baseline_steps: int = option(1000, help="the baseline's training steps", metavar="N")
    spn_steps: int = option(1500, help="each SPN's training steps", metavar="N")
    baseline_cfg: dict = option(default_factory=lambda: {"width": 16, "depth": 3}, help="baseline options",
                                cli=False)
    # The "fast" SPN preset: one gate map shared by the C' channels (Cg = 1) and a narrow guidance
    # network that also sees the coarse scores. A 512 x 512 image takes ~40 ms on 2 cores, against
    # ~90 ms with per-channel gates and a guidance width of 16 (the library default is per-channel).
    spn_cfg: dict = option(default_factory=lambda: spn_preset("fast"), help="SPN options", cli=False)
    # Simulated coarse maps 8x smaller than the image (the scale of the VOC coarse maps the paper
    # refines). "auto" / "baseline" refine the baseline CNN's output instead.
    family: str = option("simple", choices=("simple", "hard", "both"),
                         help="the procedural scenes: simple (--data synthetic), hard (--data synthetic:hard: "
                              "cluttered backgrounds whose colour edges are not object boundaries, low-contrast "
                              "and camouflaged objects, thin parts), or both (the demo once per family, in "
                              "OUT/simple and OUT/hard, one report)")
    # The paper's protocol (HELEN, VOC): the SPNs refine the baseline CNN's output.
    # gt-downsample:8 refines simulated coarse maps 8x smaller than the image instead.
    crf_tune: bool = option(True, help="tune the dense CRF on the training split (spn.peers.densecrf.grid_search)",
                            negative="--no-crf-tune", negative_help="the dense CRF with its default parameters")
    coarse: str = option("baseline", metavar="SRC",
                         help="coarse maps the SPNs refine: gt-downsample:F (simulated maps F times smaller than "
                              "the image), baseline (the baseline CNN's output, the paper's HELEN protocol), or "
                              "auto (the baseline's output, falling back to gt-downsample:8 when the baseline is "
                              "too weak or too strong)")
    min_baseline_miou: float = option(0.3, help="auto: the baseline's lowest val mIoU", cli=False)
    max_baseline_miou: float = option(0.9, help="auto: the baseline's highest val mIoU", cli=False)
    figure_rows: int = option(4, help="images in the figure (0: none)", cli=False)
    compare: bool = option(True, help="compare with the classical refiners", negative="--no-compare",
                           negative_help="skip the comparison with the classical refiners")
    compare_peers: list = option(default_factory=lambda: ["bilinear", "guided_filter", "domain_transform",
                                                          "densecrf"], help="peers compared", cli=False)
    compare_limit: int | None = option(None, help="val images compared (None: all)", cli=False)
    # off by default: the 512 x 512 timing (every method, 4 calls; the dense CRF and the guided filter
    # are slow there) costs more than the rest of the demo with shipped weights
    compare_time_512: bool = option(False, flags=("--time-512",),
                                    help="also time every method on a 512 x 512 image (4 calls each)")
    progress: bool | None = option(None, help="progress bars", negative="--no-progress",
                                   negative_help="no progress bars", default_help="when stderr is a terminal")
    force: bool = option(False, help="replace the runs of an earlier demo in --out")

    @classmethod
    def preset(cls, quick: bool = False, **overrides) -> "DemoConfig":
        """The full demo (its models shipped for ``family="hard"``; training them took 25 minutes
        on 2 shared CPU cores) or ``quick`` (short training runs)."""
        base = {}
        if quick:
            base = dict(quick=True, train_images=32, val_images=8, baseline_steps=600, spn_steps=400,
                        spn_cfg={**spn_preset("fast"), "channels": 8},
                        compare_limit=4, compare_time_512=False, figure_rows=3)
        base.update(overrides)
        return cls(**base)

    def validate(self) -> "DemoConfig":
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"DemoConfig.seed must be an int >= 0, got {self.seed!r}")
        for name in ("size", "train_images", "val_images", "patch_size", "batch_size",
                     "baseline_steps", "spn_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"DemoConfig.{name} must be a positive int, got {v!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"DemoConfig.threads must be a positive int or None, got {self.threads!r}")
        if not isinstance(self.figure_rows, int) or self.figure_rows < 0:
            raise ValueError(f"DemoConfig.figure_rows must be an int >= 0, got {self.figure_rows!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"DemoConfig.lr must be a positive number, got {self.lr!r}")
        if self.family not in ("simple", "hard", "both"):
            raise ValueError(f"DemoConfig.family must be 'simple', 'hard' or 'both', got {self.family!r}")
        if self.coarse not in ("auto", "baseline") and not str(self.coarse).startswith("gt-downsample:"):
            raise ValueError(f"DemoConfig.coarse must be 'auto', 'baseline' or 'gt-downsample:F', got {self.coarse!r}")
        if not 0 <= self.min_baseline_miou <= self.max_baseline_miou <= 1:
            raise ValueError("DemoConfig needs 0 <= min_baseline_miou <= max_baseline_miou <= 1, got "
                             f"{self.min_baseline_miou} and {self.max_baseline_miou}")
        if self.compare_limit is not None and (not isinstance(self.compare_limit, int) or self.compare_limit < 1):
            raise ValueError(f"DemoConfig.compare_limit must be a positive int or None, got {self.compare_limit!r}")
        for name in ("baseline_cfg", "spn_cfg"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"DemoConfig.{name} must be a dict")
        return self


log = logging.getLogger(__name__)


def prepare_demo_out(out, run_names, force: bool, what: str = "demo") -> Path:
    """Create the demo folder ``out``; runs ``out/runs/NAME`` of an earlier demo are removed with
    ``force``, else they are an error."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    runs = out / "runs"
    old = [runs / n for n in run_names if (runs / n).exists()]
    if old:
        if not force:
            raise ValueError(f"{out} already holds {what} runs ({', '.join(p.name for p in old)}); "
                             "pass --force to replace them or choose another --out")
        for p in old:
            shutil.rmtree(p)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _prepare_out(cfg: DemoConfig) -> Path:
    out = prepare_demo_out(cfg.out, RUN_NAMES, cfg.force)
    if cfg.force and (out / "weights").is_dir():  # an earlier demo's exported weights
        shutil.rmtree(out / "weights")
    return out


def _data(cfg: DemoConfig) -> str:
    return "synthetic" if cfg.family == "simple" else f"synthetic:{cfg.family}"


def _train(cfg: DemoConfig, task: TrainingTask, model: str, model_cfg: dict, steps: int, coarse: str | None,
           out: Path) -> dict:
    tc = TrainConfig(
        data=_data(cfg), data_options={"num_images": cfg.train_images, "size": cfg.size},
        task_options={"coarse": coarse}, model=model, model_cfg=dict(model_cfg), patch_size=cfg.patch_size,
        batch_size=cfg.batch_size, optimizer="adam", lr=cfg.lr, steps=steps, seed=cfg.seed,
        log_interval=max(1, min(25, steps)), ckpt_interval=max(steps, 1), out=str(out),
        threads=cfg.threads, progress=cfg.progress, cache=True, val_split=None,
    )
    t0 = time.perf_counter()
    summary = train(tc, task)
    summary["wall_s"] = time.perf_counter() - t0
    return summary


def _figure_rows(cfg, val_coarse, models: dict) -> tuple[list, list[str]]:
    rows, names = [], []
    for i in range(min(cfg.figure_rows, len(val_coarse))):
        item = val_coarse[i]
        coarse = item["coarse"]
        rows.append([
            item["image"],
            coarse.argmax(0),
            predict(models["spn_one_way"], item["image"], coarse).argmax(0),
            predict(models["spn_three_way"], item["image"], coarse).argmax(0),
            item["mask"],
        ])
        names.append(str(item.get("name", i)))
    return rows, names


def _run_compare(cfg: DemoConfig, val_coarse, run_dirs: dict, out: Path, train_coarse=None,
                 shipped_crf: dict | None = None) -> tuple[dict | None, str, dict | None]:
    """The comparison with the classical refiners (:func:`spn.experiments.compare.run_compare`);
    ``(results, note, the dense CRF search or None)``. With ``cfg.crf_tune`` the dense CRF takes the
    parameters of ``shipped_crf`` (tuned for the shipped models) when given, else it is first
    tuned on ``train_coarse`` (the training split with the same coarse source)."""
    if not cfg.compare:
        return None, "skipped (compare disabled)", None
    peers = list(cfg.compare_peers)
    note = ""
    if "densecrf" in peers:
        if not densecrf_available():
            peers.remove("densecrf")
            note = " (dense CRF left out: pydensecrf2 is not installed; `pip install pydensecrf2`)"
    crf_params, notes, grid = None, [], None
    if "densecrf" in peers and cfg.crf_tune and shipped_crf:
        crf_params = dict(shipped_crf["best"])
        notes.append(f"Dense CRF: the parameters tuned for the shipped models on {shipped_crf.get('images')} "
                     f"training images (`spn/weights/demo_{cfg.family}/{CRF_FILE}`; mean IoU "
                     f"{fmt_percent(shipped_crf.get('best_mean_iou'))} there, input "
                     f"{fmt_percent(shipped_crf.get('input_mean_iou'))}).")
        note += "; dense CRF with the shipped tuned parameters"
    elif "densecrf" in peers and cfg.crf_tune and train_coarse is not None:
        grid = tune_densecrf(train_coarse, limit=8)
        (out / "compare").mkdir(parents=True, exist_ok=True)
        write_json(out / "compare" / "crf_grid.json", grid)
        crf_params = grid["best"]
        notes.append(crf_search_note(grid))
        note += "; dense CRF tuned on the training split"
    res = run_compare(val_coarse, {"one-way": str(run_dirs["spn_one_way"]), "three-way": str(run_dirs["spn_three_way"])},
                      peers, out / "compare", limit=cfg.compare_limit, protocol="plain", crf_params=crf_params,
                      figure_rows=min(cfg.figure_rows, 4), time_512=cfg.compare_time_512,
                      title=f"spn demo: SPN vs classical refiners ({_data(cfg)} val)", notes=notes)
    return res, "ran" + note, grid


def _run_both(cfg: DemoConfig, task: TrainingTask) -> dict:
    """``family="both"``: the demo once per family (``out/simple``, ``out/hard``), then one report."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    families = {}
    for fam in ("simple", "hard"):
        log.info(f"family {fam} -> {out / fam}")
        families[fam] = run_demo(cfg.replace(family=fam, out=str(out / fam)), task)
    lines = ["# spn demo: both procedural families", ""]
    for fam, m in families.items():
        text = Path(m["report"]).read_text()
        body = "\n".join(("#" + line) if line.startswith("#") else line for line in text.splitlines())
        lines += [f"## Family `{fam}` (`{fam}/report.md`)", "", body, ""]
    write_markdown(out / "report.md", "\n".join(lines))
    metrics = {"mode": "quick" if cfg.quick else "full", "config": cfg.to_dict(),
               "families": {fam: str(out / fam / "metrics.json") for fam in families}}
    write_json(out / "metrics.json", metrics)
    return dict(metrics, report=str(out / "report.md"),
                results={fam: m["results"] for fam, m in families.items()})


def run_demo(cfg: DemoConfig | None, task: TrainingTask) -> dict:
    """Run the demo (see the module docstring), training with ``task`` (the segmentation task of
    :mod:`spn.tasks`) unless shipped weights fit ``cfg``; returns the content of ``metrics.json``."""
    cfg = (cfg or DemoConfig()).validate()
    if cfg.family == "both":
        return _run_both(cfg, task)
    t_start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = _prepare_out(cfg)
    run_dirs = {n: out / "runs" / n for n in RUN_NAMES}
    write_json(out / "demo_config.json", cfg.to_dict())
    shipped, why = shipped_demo_weights(cfg)
    log.info(f"models: {why}")

    # 1-3. the baseline, the coarse source, the two SPNs (trained here or shipped) -------------
    st = _models(cfg, task, run_dirs, out, shipped)

    # 4. tables, figure, JSON -------------------------------------------------------------------
    results = _results(st["ev_base"], st["evals"], st["coarse_src"])
    figure = None
    if cfg.figure_rows:
        rows, names = _figure_rows(cfg, st["val_coarse"], st["models"])
        figure = figure_grid(rows, ["image", "coarse", "one-way", "three-way", "ground truth"], out / "figure.png",
                             row_labels=None, title=f"{_data(cfg)} val, coarse: {_short(st['coarse_src'])}")

    log.info("comparison with the classical refiners")
    shipped_crf = (shipped or {}).get("crf")
    try:
        compare_res, compare_note, grid = _run_compare(cfg, st["val_coarse"], run_dirs, out, st["train_coarse"],
                                                       shipped_crf)
    except (ImportError, RuntimeError, ValueError, TypeError) as exc:
        compare_res, compare_note, grid = None, f"failed: {exc}", None
        log.info(f"comparison failed: {exc}")
    exported = None
    if shipped is None:  # the files `spn/weights/demo_FAMILY/` would hold for these models
        exported = str(export_demo_weights(run_dirs, cfg, out / "weights", st["summaries"], grid))

    metrics = _metrics(cfg, st, results, run_dirs, figure, compare_res, compare_note)
    metrics["weights"] = {"source": "shipped" if shipped else "trained", "why": why, "exported": exported,
                          "crf": "shipped" if "shipped tuned parameters" in compare_note else None}
    metrics["elapsed_s"] = time.perf_counter() - t_start
    write_json(out / "metrics.json", metrics)
    text = _report(cfg, metrics, results, st["class_names"], compare_res)
    write_markdown(out / "report.md", text)
    log.info(f"done in {metrics['elapsed_s']:.0f} s: {out / 'report.md'}, {out / 'metrics.json'}"
             + (f", {out / 'figure.png'}" if figure else ""))
    metrics["report"] = str(out / "report.md")
    return metrics


def _models(cfg: DemoConfig, task: TrainingTask, run_dirs: dict, out: Path, shipped: dict | None) -> dict:
    """Train (or take from ``shipped``) the baseline, pick the coarse source, train (or take) the
    two SPNs, and evaluate all on the validation split."""
    if shipped is not None:  # the shipped models become the runs' checkpoints, as trained ones would
        materialise(shipped, run_dirs, run_dirs["baseline"])
        summaries = {n: dict(shipped[n]["meta"]["summary"], source="shipped") for n in RUN_NAMES}
    else:
        log.info(f"training the baseline ({cfg.baseline_steps} steps) -> {run_dirs['baseline']}")
        summaries = {"baseline": _train(cfg, task, "baseline", cfg.baseline_cfg, cfg.baseline_steps, None,
                                        run_dirs["baseline"])}
    baseline, _ = load_checkpoint(run_dirs["baseline"])
    val_plain = build_dataset(_data(cfg), split="val", coarse="none", num_images=cfg.val_images, size=cfg.size)
    log.info(f"evaluating the baseline on {len(val_plain)} val images")
    ev_base = evaluate(baseline, val_plain)

    coarse_src, fallback = _coarse_source(cfg, ev_base["refined"]["mean_iou"], run_dirs["baseline"])
    need_train = cfg.compare and cfg.crf_tune and not (shipped or {}).get("crf")
    val_coarse, train_coarse = _coarse_datasets(cfg, coarse_src, val_plain, run_dirs["baseline"], out, need_train)

    models, evals = {}, {}
    for name in ("spn_one_way", "spn_three_way"):
        if shipped is None:
            log.info(f"training {name} on coarse maps from {coarse_src} ({cfg.spn_steps} steps) -> {run_dirs[name]}")
            summaries[name] = _train(cfg, task, name, cfg.spn_cfg, cfg.spn_steps, coarse_src, run_dirs[name])
        models[name], _ = load_checkpoint(run_dirs[name])
        log.info(f"evaluating {name}")
        evals[name] = evaluate(models[name], val_coarse)
    return {"summaries": summaries, "ev_base": ev_base, "coarse_src": coarse_src, "fallback": fallback,
            "val_coarse": val_coarse, "train_coarse": train_coarse, "models": models, "evals": evals,
            "num_val": len(val_plain), "class_names": list(getattr(val_plain, "class_names", []))}


def _metrics(cfg: DemoConfig, st: dict, results: dict, run_dirs: dict, figure, compare_res, compare_note) -> dict:
    """The content of ``metrics.json`` (``elapsed_s`` and ``weights`` are added by the caller)."""
    return {
        "mode": "quick" if cfg.quick else "full",
        "config": cfg.to_dict(),
        "coarse_source": st["coarse_src"],
        "fallback": st["fallback"],
        "baseline_val_miou": st["ev_base"]["refined"]["mean_iou"],
        "num_val_images": st["num_val"],
        "class_names": st["class_names"],
        "results": results_json(results),
        "coarse_input": st["evals"]["spn_three_way"]["coarse"],
        "training": {n: {k: s.get(k) for k in ("steps", "final_loss", "mean_loss", "images_per_s", "elapsed_s",
                                               "wall_s", "global_batch_size", "run_dir", "source")}
                     for n, s in st["summaries"].items()},
        "run_dirs": {n: str(p) for n, p in run_dirs.items()},
        "figure": str(figure) if figure else None,
        "compare": _compare_summary(compare_res),
        "compare_note": compare_note,
        "machine": {"threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__, "backend": _backend()},
    }


def _coarse_source(cfg: DemoConfig, base_miou: float, baseline_run: Path) -> tuple[str, str | None]:
    """``(coarse source the SPNs refine, why the demo fell back to gt-downsample:8 or None)``."""
    fallback = None
    if cfg.coarse == "baseline":
        coarse_src = f"baseline:{baseline_run}"
    elif cfg.coarse == "auto":
        if base_miou < cfg.min_baseline_miou:
            fallback = (f"the baseline is too weak (val mIoU {100 * base_miou:.2f} < "
                        f"{100 * cfg.min_baseline_miou:.0f})")
        elif base_miou > cfg.max_baseline_miou:
            fallback = (f"the baseline is too strong (val mIoU {100 * base_miou:.2f} > "
                        f"{100 * cfg.max_baseline_miou:.0f}): little left to refine")
        coarse_src = "gt-downsample:8" if fallback else f"baseline:{baseline_run}"
    else:
        coarse_src = cfg.coarse
    if fallback:
        log.info(f"fallback: {fallback}; the SPNs refine simulated coarse maps (gt-downsample:8) instead")
    return coarse_src, fallback


def _coarse_datasets(cfg: DemoConfig, coarse_src: str, val_plain, baseline_run: Path, out: Path,
                     need_train: bool = True):
    """``(val split, training images of the dense CRF's tuning or None when not ``need_train``)``
    with the coarse maps of ``coarse_src``."""
    train_n = min(8, cfg.train_images)  # the dense CRF's tuning images
    train_coarse = None
    if coarse_src.startswith("baseline:"):
        val_coarse = BaselineCoarse(val_plain, baseline_run, cache_dir=out / "coarse_cache")
        if need_train:
            train_plain = build_dataset(_data(cfg), split="train", coarse="none", num_images=train_n, size=cfg.size)
            train_coarse = BaselineCoarse(train_plain, baseline_run, cache_dir=out / "coarse_cache_train")
    else:
        val_coarse = build_dataset(_data(cfg), split="val", coarse=coarse_src, num_images=cfg.val_images,
                                   size=cfg.size)
        if need_train:
            train_coarse = build_dataset(_data(cfg), split="train", coarse=coarse_src, num_images=train_n,
                                         size=cfg.size)
    return val_coarse, train_coarse


def _results(ev_base: dict, evals: dict, coarse_src: str) -> dict:
    """The rows of the report's table: the baseline (or the coarse input), then the two SPNs."""
    results = {}
    from_baseline = coarse_src.startswith("baseline:")
    results["baseline CNN (coarse input)" if from_baseline else "baseline CNN"] = {
        "metrics": ev_base["refined"], "seconds_per_image": ev_base["seconds_per_image"]}
    if not from_baseline:
        results[f"coarse input ({coarse_src})"] = {"metrics": evals["spn_three_way"]["coarse"],
                                                   "seconds_per_image": None}
    for name in ("spn_one_way", "spn_three_way"):
        results[TITLES[name]] = {"metrics": evals[name]["refined"], "seconds_per_image": evals[name]["seconds_per_image"]}
    return results


def _short(src: str) -> str:
    return "baseline CNN" if src.startswith("baseline:") else src


def _backend() -> str:
    return active_backend()


def _compare_summary(res: dict | None) -> dict | None:
    if not res:
        return None
    keep = {}
    for k in ("methods", "time_512", "protocol", "images", "report", "json", "figure", "crf_params"):
        if k in res:
            keep[k] = res[k]
    return keep


def _models_line(cfg, m) -> str:
    """Where the report's models come from: the shipped weights or this run's training."""
    w = m["weights"]
    if w["source"] == "shipped":
        return (f"**Models: shipped weights** (`spn/weights/demo_{cfg.family}/`, float16; trained by "
                f"`spn demo --task seg --family {cfg.family} --train`, seed {cfg.seed}, see its MODEL_CARD.md): "
                "the baseline CNN and both SPNs below were not trained in this run (`--train` trains them "
                "here, `--quick` trains short ones).")
    return (f"**Models: trained in this run** ({w['why']}); their float16 files, what "
            f"`spn/weights/demo_{cfg.family}/` holds for the shipped demo: `{w['exported']}`.")


def _weights_cell(entry: dict, m) -> str:
    """The comparison table's "weights" column: where a method's weights or parameters come from."""
    src = "shipped" if m["weights"]["source"] == "shipped" else "trained here"
    if entry.get("kind") == "checkpoint":
        return src
    if entry.get("id") == "bilinear":
        return f"baseline {src}"
    if entry.get("id") == "densecrf":
        return ("tuned parameters shipped" if m["weights"].get("crf") == "shipped" else
                "tuned here" if "tuned on the training split" in m["compare_note"] else "defaults")
    return "-"


def _report(cfg, metrics, results, class_names, compare_res) -> str:
    m = metrics
    lines = [
        "# spn demo: refining a baseline's segmentation with spatial propagation networks",
        "",
        f"Mode: **{m['mode']}**. Data: procedural scenes (`--data {_data(cfg)}`), {cfg.size} x {cfg.size}, "
        f"{cfg.train_images} training images, {m['num_val_images']} validation images, "
        f"{len(class_names)} classes ({', '.join(class_names)}).",
        "",
        "Protocol (Liu et al., NIPS 2017, Sec. 5): a baseline CNN (U-Net at 1/8 resolution, bilinearly "
        "upsampled) is trained first; a one-way and a three-way SPN, identical but for the connection, "
        "are then trained to refine its coarse output, and all are evaluated on the validation split.",
        "",
        _models_line(cfg, m),
        "",
    ]
    if m["fallback"]:
        lines += [f"**Fallback:** {m['fallback']}, so the SPNs refine simulated coarse maps "
                  "(`gt-downsample:8`: the ground truth area-downsampled by 8, blurred, upsampled) "
                  "instead of the baseline's output.", ""]
    else:
        lines += [f"Coarse input of the SPNs: `{m['coarse_source']}` (softmax of the baseline; val mIoU "
                  f"{100 * m['baseline_val_miou']:.2f}).", ""]
    rows_from = "shipped weights" if m["weights"]["source"] == "shipped" else "models trained in this run"
    lines += [
        "## Results (validation split; Table 3 format, %)",
        "",
        f"Every row comes from the {rows_from}.",
        "",
        table3_markdown(results),
        _reading(results),
        "s/image: median wall-clock seconds of one model call on this machine "
        f"(torch threads: {m['machine']['threads']}, propagation backend: {m['machine']['backend']}); an SPN's time "
        "excludes the baseline that produced its input.",
        "",
        per_class_markdown(results, class_names, kinds=("iou",)),
    ]
    if m["figure"]:
        lines += ["## Figure", "", "![image | coarse | one-way | three-way | ground truth](figure.png)", ""]
    lines += _training_lines(cfg, m)
    lines += ["## Comparison with classical refiners", ""]
    if compare_res:
        rep = compare_res.get("report")
        lines += [f"Same validation images and coarse maps ({m['compare_note']}); full report: "
                  f"`{rep}`.", ""]
        methods = compare_res.get("methods") or {}
        crow = []
        keys = ("pixel_accuracy", "mean_accuracy", "mean_iou", "boundary_iou", "mba")
        for title, e in methods.items():
            mm = e.get("metrics", {})
            crow.append([title] + [_pct(mm.get(k)) for k in keys] + [fmt_seconds(e.get("seconds_per_image")),
                                                                     _weights_cell(e, m)])
        if crow:
            lines += [markdown_table(["method", "overall AC", "mean AC", "mean IoU", "boundary IoU", "mBA",
                                      "s/image", "weights"], crow)]
            lines += ["Trimap accuracy against band width: `compare/trimap.png`; dense CRF parameters "
                      "and its search: `compare/compare.md`.", ""]
    else:
        lines += [f"Comparison {m['compare_note']}.", ""]
    lines += [f"Total demo time: {m['elapsed_s']:.0f} s on {m['machine']['platform']}.", ""]
    return "\n".join(lines)


def _training_lines(cfg, m) -> list[str]:
    """The "Training runs" section: steps, loss, wall time of each run (the shipped files' own
    summaries when the models are shipped)."""
    rows = []
    for name, s in m["training"].items():
        rows.append([name, s.get("steps"), s.get("global_batch_size"),
                     "-" if s.get("final_loss") is None else f"{s['mean_loss']:.4f}",
                     fmt_seconds(s.get("wall_s")), "-" if not s.get("images_per_s") else f"{s['images_per_s']:.1f}",
                     "shipped" if s.get("source") == "shipped" else "this run"])
    shipped = m["weights"]["source"] == "shipped"
    return ["## Training runs", "",
            markdown_table(["run", "steps", "batch", "loss (last 10 steps)", "wall s", "patches/s", "trained"], rows),
            f"Patches of {cfg.patch_size} x {cfg.patch_size}, Adam, lr {cfg.lr}, seed {cfg.seed}"
            + (" (the shipped runs' wall times are those of their training, not of this run)" if shipped else "")
            + ". Checkpoints and resolved configs: " + ", ".join(f"`{p}`" for p in m["run_dirs"].values()) + ".", ""]


def _reading(results: dict) -> str:
    """One sentence comparing the mIoU of the rows (the paper expects coarse < +1 way < +3 way)."""
    miou = {k: (v["metrics"].get("mean_iou") if "metrics" in v else v.get("mean_iou")) for k, v in results.items()}
    first = next(iter(miou))
    one, three, base = miou.get(TITLES["spn_one_way"]), miou.get(TITLES["spn_three_way"]), miou[first]
    coarse = [v for k, v in miou.items() if k.startswith("coarse input")]
    ref = coarse[0] if coarse else base
    if None in (one, three, ref) or any(isinstance(x, float) and math.isnan(x) for x in (one, three, ref)):
        return ""
    order = ("as in the paper, the three-way SPN is ahead of the one-way SPN"
             if three > one else "unlike the paper, the one-way SPN is level with or ahead of the three-way SPN")
    return (f"Mean IoU change over the coarse input: +1 way {100 * (one - ref):+.2f}, +3 way "
            f"{100 * (three - ref):+.2f} points; {order} ({100 * (three - one):+.2f} points, one seed).\n")


def _pct(v) -> str:
    return fmt_percent(v)
