"""Evaluation of a chroma model on full photos, and ``spn eval --task chroma``.

:func:`evaluate_chroma` ``(model, dataset) -> dict``: for every photo (items of
:class:`spn.data.PhotoDataset` with a factor), PSNR and SSIM of the RGB photo rebuilt from its
luma and the model's chroma, and of the chroma (:func:`spn.metrics.chroma.chroma_scores`), next
to those of the bilinear chroma the model starts from; the mean and median over photos; the
seconds of the model call per photo and per megapixel. :func:`run_chroma_eval` is what ``spn
eval --task chroma`` runs (a checkpoint on a split, a markdown report, a JSON file).

Example:
    >>> from spn.data import build_dataset
    >>> from spn.evaluation_chroma import evaluate_chroma
    >>> from spn.models import create_model
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from spn.data import write_image
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = write_image(root / "a.png", torch.rand(3, 24, 32))
    >>> res = evaluate_chroma(create_model("chroma_three_way", factor=4, guidance_width=4),
    ...                       build_dataset(f"photos:{root}", split="all", factor=4))
    >>> res["num_images"], sorted(res["model"])
    (1, ['mean', 'median'])
"""
from __future__ import annotations

import sys

from spn.data.base import items_to_evaluate
from spn.inference_chroma import predict_chroma
from spn.metrics.chroma import CHROMA_METRICS, chroma_scores, summarize_scores
from spn.image.resample import bilinear_upsample
from spn.utils.timer import Stopwatch

__all__ = ["chroma_eval_markdown", "evaluate_chroma", "run_chroma_eval"]


def _check_item(item, i) -> None:
    for k in ("image", "luma", "chroma", "chroma_low", "factor"):
        if k not in item:
            raise ValueError(f"item {item.get('name', i)!r} has no {k!r}: the chroma task needs photo items "
                             "with a factor (build_dataset('photos:...', factor=F))")


def evaluate_chroma(model, dataset, *, limit: int | None = None, progress: bool = False, warmup: int = 1) -> dict:
    """Evaluate a chroma ``model`` on every photo of ``dataset`` (or the first ``limit``).

    Returns ``{"num_images", "factor", "per_image": [{"name", "size", "model": scores,
    "bilinear": scores, "seconds"}], "model": summary, "bilinear": summary, "seconds_per_image":
    {"median", "mean", "n"}, "ms_per_megapixel": float}`` with scores the dict of
    :func:`~spn.metrics.chroma.chroma_scores` and summary ``{"mean": scores, "median": scores}``.
    """
    n = items_to_evaluate(dataset, limit)
    watch = Stopwatch()
    per, factor, pixels = [], None, 0
    it = range(n)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="eval", unit="photo")
    for i in it:
        item = dataset[i]
        _check_item(item, i)
        f = int(item["factor"])
        factor = f if factor is None else factor
        luma, low = item["luma"], item["chroma_low"]
        if i == 0:
            for _ in range(max(0, int(warmup))):
                predict_chroma(model, luma, low, f)
        with watch.time():
            chroma = predict_chroma(model, luma, low, f)
        bil = bilinear_upsample(low[None].float(), f, luma.shape[-2:])[0]
        H, W = luma.shape[-2:]
        pixels += H * W
        per.append({"name": str(item.get("name", i)), "size": [int(H), int(W)],
                    "model": chroma_scores(luma, chroma, item["chroma"], item["image"]),
                    "bilinear": chroma_scores(luma, bil, item["chroma"], item["image"]),
                    "seconds": watch.samples[-1]})
    sec = watch.summary()
    total_s = sum(watch.samples)
    return {
        "num_images": n,
        "factor": factor,
        "model_name": getattr(model, "name", type(model).__name__),
        "per_image": per,
        "model": _by_stat(summarize_scores([p["model"] for p in per])),
        "bilinear": _by_stat(summarize_scores([p["bilinear"] for p in per])),
        "seconds_per_image": sec,
        "ms_per_megapixel": 1e3 * total_s / (pixels / 1e6),
    }


def _by_stat(summary: dict) -> dict:
    """``{metric: {"mean", "median"}}`` -> ``{"mean": {metric: v}, "median": {metric: v}}``."""
    return {stat: {k: v[stat] for k, v in summary.items()} for stat in ("mean", "median")}


def _f(v, digits=2) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def chroma_eval_markdown(res: dict, title: str | None = None) -> str:
    """Per-photo and summary tables of :func:`evaluate_chroma` (PSNR in dB, SSIM)."""
    name = res.get("model_name", "model")
    lines = [f"# {title or f'spn eval --task chroma: {name}'}", ""]
    for k in ("checkpoint", "data", "split"):
        if res.get(k) is not None:
            lines.append(f"- {k}: `{res[k]}`")
    lines += [f"- photos: {res['num_images']}, chroma subsampled {res['factor']}x (area), BT.601 YCbCr",
              f"- model call: median {res['seconds_per_image']['median']:.4g} s per photo, "
              f"{res['ms_per_megapixel']:.1f} ms per megapixel (this machine, under whatever load it had)",
              "", "| photo | size | bilinear PSNR RGB | model PSNR RGB | gain (dB) | bilinear SSIM RGB | "
              "model SSIM RGB | model PSNR chroma | model SSIM chroma |",
              "| :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in res["per_image"]:
        m, b = p["model"], p["bilinear"]
        lines.append(f"| {p['name']} | {p['size'][1]}x{p['size'][0]} | {_f(b['psnr_rgb'])} | {_f(m['psnr_rgb'])} | "
                     f"{_f(m['psnr_rgb'] - b['psnr_rgb'])} | {_f(b['ssim_rgb'], 4)} | {_f(m['ssim_rgb'], 4)} | "
                     f"{_f(m['psnr_chroma'])} | {_f(m['ssim_chroma'], 4)} |")
    for stat in ("mean", "median"):
        m, b = res["model"][stat], res["bilinear"][stat]
        lines.append(f"| **{stat}** | | {_f(b['psnr_rgb'])} | {_f(m['psnr_rgb'])} | {_f(m['psnr_rgb'] - b['psnr_rgb'])} "
                     f"| {_f(b['ssim_rgb'], 4)} | {_f(m['ssim_rgb'], 4)} | {_f(m['psnr_chroma'])} | "
                     f"{_f(m['ssim_chroma'], 4)} |")
    lines.append("")
    return "\n".join(lines)


def run_chroma_eval(cfg, opts) -> tuple[dict, str]:
    """``spn eval --task chroma``: ``cfg`` is an :class:`spn.evaluation.EvalConfig` (the options
    every task shares), ``opts`` the chroma task's (``factor``: None takes the checkpoint's).
    Returns ``(result dict, markdown text)``."""
    import torch

    from spn.data import build_dataset
    from spn.inference_chroma import ChromaUpsampler
    from spn.utils.io import write_json, write_markdown

    from spn.utils.io import check_output_path

    cfg.validate()
    for flag, path in (("--json", cfg.json), ("--report", cfg.report)):
        if path:
            check_output_path(path, flag)  # before the work, not after it
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    up = ChromaUpsampler.from_checkpoint(cfg.checkpoint)
    factor = opts.factor or up.factor
    dataset = build_dataset(cfg.data, split=cfg.split, factor=factor)
    if len(dataset) == 0:
        raise ValueError(f"dataset {cfg.data!r} split {cfg.split!r} has no photos")
    progress = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    res = evaluate_chroma(up.model, dataset, limit=cfg.limit, progress=progress)
    res.update({"checkpoint": str(cfg.checkpoint), "data": cfg.data, "split": cfg.split, "task": getattr(up.model, "task", None),
                "metrics": list(CHROMA_METRICS)})
    if cfg.json:
        write_json(cfg.json, res)
    text = chroma_eval_markdown(res)
    if cfg.report:
        write_markdown(cfg.report, text)
    return res, text
