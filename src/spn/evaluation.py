"""Evaluation of a segmentation / refinement model on a dataset, and ``spn eval``.

- :func:`evaluate` ``(model, dataset, ...) -> dict``: confusion-matrix metrics of the coarse
  input (``argmax`` of the item's ``"coarse"``) and of the model output side by side, plus the
  seconds per image of the model call (median and mean); the model runs through
  :class:`spn.inference.Refiner` (the path of ``spn refine`` and of Python users), the metrics
  follow a protocol of :mod:`spn.metrics`.
- :class:`EvalConfig` and :func:`run_eval`: what ``spn eval`` does for a segmentation
  checkpoint (a checkpoint on a dataset split, with a markdown report and a JSON file).
  ``EvalConfig`` holds the options every task shares; the segmentation task's own (coarse
  source, protocol, ...) are :class:`spn.tasks.segmentation.SegEvalOptions`.

Example:
    >>> import torch
    >>> from spn.data import build_dataset
    >>> from spn.evaluation import evaluate
    >>> from spn.models import create_model
    >>> model = create_model("spn_three_way", num_classes=6, channels=4, guidance_width=4)
    >>> res = evaluate(model, build_dataset("synthetic", split="val", num_images=2, size=32))
    >>> res["num_images"], res["refined"]["pixels"], sorted(res["seconds_per_image"])
    (2, 2048, ['mean', 'median', 'n'])
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from spn.data.base import items_to_evaluate
from spn.inference import Refiner
from spn.metrics import get_protocol
from spn.utils.config import ConfigBase, check_options, option
from spn.utils.timer import Stopwatch


def evaluate(model, dataset, *, limit: int | None = None, restrict_to_present: bool = False,
             protocol="plain", multiple: int | None = None, progress: bool = False,
             warmup: int = 1, boundary: bool = True) -> dict:
    """Evaluate ``model`` on every item of ``dataset`` (or the first ``limit``).

    Args:
        model: a :class:`spn.inference.Refiner`, or a model of :mod:`spn.models` (or any module
            with that forward).
        dataset: items ``{"image" (3, H, W), "mask" (H, W), ["coarse" (K, H, W)], "name"}``;
            ``num_classes``, ``class_names`` and ``ignore_index`` are read from it when present.
        protocol: a name of :mod:`spn.metrics.protocols` ("plain", "voc", "helen") or a protocol object.
        restrict_to_present: score the refined output with the protocol's ``restrict=True`` (what
            "voc" does): the classes absent from ``argmax(coarse)`` are left out.
        warmup: untimed model calls on the first item before timing (first-call overheads).
        boundary: add the boundary metrics (:mod:`spn.metrics.boundary`: boundary IoU, trimap
            accuracy in bands of 1..20 px, mBA) to both metrics dicts.
    Returns:
        ``{"coarse": metrics or None, "refined": metrics, "seconds_per_image": {"median", "mean",
        "n"}, "num_images", "num_classes", "class_names", "protocol", "restrict_to_present"}``
        where metrics is :meth:`ConfusionMatrix.compute` (+ the protocol's extra keys).
    """
    refiner = model if isinstance(model, Refiner) else Refiner(model)
    n = items_to_evaluate(dataset, limit)
    num_classes = getattr(dataset, "num_classes", None)
    class_names = getattr(dataset, "class_names", None)
    ignore = int(getattr(dataset, "ignore_index", 255))
    pname = protocol if isinstance(protocol, str) else getattr(protocol, "name", None)
    if not isinstance(pname, str):
        raise TypeError(f"protocol must be a name or a protocol object, got {type(protocol).__name__}")
    # the refined output is scored by the protocol, restricted to the coarse classes when it says so
    # or when asked to (restrict_to_present); the coarse input by the plain protocol of that name
    proto_ref = get_protocol(protocol, num_classes=num_classes, class_names=class_names, ignore_index=ignore,
                             restrict=True if restrict_to_present else None, boundary=boundary)
    proto_coarse = get_protocol(pname, num_classes=num_classes, class_names=class_names, ignore_index=ignore,
                                boundary=boundary)
    has_coarse = False
    watch = Stopwatch()
    it = range(n)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="eval", unit="img")
    for i in it:
        item = dataset[i]
        image, mask = item["image"], item["mask"]
        coarse = item.get("coarse")
        if coarse is not None:
            has_coarse = True
            if num_classes is not None and coarse.shape[0] != num_classes:
                raise ValueError(f"item {item.get('name', i)!r}: coarse has {coarse.shape[0]} classes, "
                                 f"the dataset {num_classes}")
        elif restrict_to_present:
            raise ValueError(f"restrict_to_present needs coarse maps; item {item.get('name', i)!r} has none")
        if i == 0:
            for _ in range(max(0, int(warmup))):
                refiner.predict_logits(image, coarse, multiple=multiple)
        with watch.time():
            logits = refiner.predict_logits(image, coarse, multiple=multiple)
        if num_classes is not None and logits.shape[0] != num_classes:
            raise ValueError(f"the model predicts {logits.shape[0]} classes, the dataset has {num_classes}")
        co = coarse.float() if coarse is not None else None
        logits = proto_ref.prepare(logits, co)
        proto_ref.accumulate(logits.argmax(0), mask)
        if co is not None:
            proto_coarse.accumulate(proto_coarse.prepare(co, co).argmax(0), mask)
    refined = proto_ref.compute()
    return {
        "num_images": n,
        "num_classes": proto_ref.num_classes,
        "class_names": refined.get("class_names"),
        "protocol": pname,
        "restrict_to_present": bool(restrict_to_present),
        "coarse": proto_coarse.compute() if has_coarse else None,
        "refined": refined,
        "seconds_per_image": watch.summary(),
    }


def summary_line(metrics: dict | None) -> str:
    """"pixel acc 91.22  mean acc 77.61  mIoU 65.51" from a metrics dict."""
    if not metrics:
        return "-"

    def p(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"
    return (f"overall AC {p(metrics.get('pixel_accuracy'))}  mean AC {p(metrics.get('mean_accuracy'))}  "
            f"mIoU {p(metrics.get('mean_iou'))}")


# --- spn eval ------------------------------------------------------------------------------------

@dataclass
class EvalConfig(ConfigBase):
    """What ``spn eval`` evaluates: a checkpoint on a dataset split (the options every task
    shares; :func:`run_eval` for a segmentation checkpoint)."""

    checkpoint: str = option(help="run directory (or its model.safetensors) written by `spn train`",
                             metavar="RUN")
    data: str = option(help="dataset: synthetic | folder:PATH | voc:PATH | helen:PATH | photos:PATH | "
                            "photos:skimage (what the task evaluates on)", metavar="SPEC")
    split: str = option("val", help="dataset split")
    limit: int | None = option(None, help="evaluate the first N images only", metavar="N")
    json: str | None = option(None, help="write all metrics as JSON", metavar="PATH")
    report: str | None = option(None, help="write a markdown report", metavar="PATH")
    threads: int | None = option(None, help="torch CPU threads", metavar="N", default_help="torch's")
    progress: bool | None = option(None, help="show a progress bar", negative="--no-progress",
                                   negative_value=False, negative_help="no progress bar",
                                   default_help="when stderr is a terminal")

    def validate(self) -> "EvalConfig":
        check_options(self, required=("checkpoint", "data"), at_least={"limit": 1, "threads": 1})
        return self


def run_eval(cfg: EvalConfig, opts) -> tuple[dict, str]:
    """Evaluate the segmentation checkpoint ``cfg.checkpoint`` on ``cfg.data`` (split
    ``cfg.split``) with the coarse source, protocol and restriction of ``opts`` (a
    :class:`~spn.tasks.segmentation.SegEvalOptions`); write the JSON and the markdown report when
    asked. Returns ``(result dict, markdown text)``."""
    import torch

    from spn.data import build_dataset
    from spn.utils.io import check_output_path, write_json, write_markdown
    from spn.viz import results_json

    cfg.validate()
    opts.validate()
    for flag, path in (("--json", cfg.json), ("--report", cfg.report)):
        if path:
            check_output_path(path, flag)  # before the work, not after it
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    refiner = Refiner.from_checkpoint(cfg.checkpoint)
    k_ckpt = refiner.num_classes
    dataset = build_dataset(cfg.data, split=cfg.split, coarse=opts.coarse, coarse_kind=opts.coarse_kind)
    k_data = getattr(dataset, "num_classes", None)
    if k_ckpt is not None and k_data is not None and k_ckpt != k_data:
        raise ValueError(f"checkpoint {cfg.checkpoint} predicts {k_ckpt} classes but dataset "
                         f"{cfg.data!r} has {k_data}")
    if len(dataset) == 0:
        raise ValueError(f"dataset {cfg.data!r} split {cfg.split!r} has no images")
    progress = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    res = evaluate(refiner, dataset, limit=cfg.limit, protocol=opts.protocol,
                   restrict_to_present=opts.restrict_to_present, progress=progress)
    model_name = refiner.name
    res.update({
        "checkpoint": str(cfg.checkpoint),
        "model": model_name,
        "data": cfg.data,
        "split": cfg.split,
        "coarse_source": opts.coarse,
    })
    results = eval_results(res, model_name)
    res["table"] = results_json(results)
    if cfg.json:
        write_json(cfg.json, res)
    text = eval_markdown(res, results)
    if cfg.report:
        write_markdown(cfg.report, text)
    return res, text


def eval_results(res: dict, model_name: str) -> dict:
    """Rows of the report: the coarse input (when the items had one) and the model output."""
    results = {}
    if res.get("coarse") is not None:
        results["coarse input"] = {"metrics": res["coarse"], "seconds_per_image": None}
    results[model_name] = {"metrics": res["refined"], "seconds_per_image": res["seconds_per_image"]}
    return results


def eval_markdown(res: dict, results: dict) -> str:
    """The markdown report of :func:`run_eval`: Table 3, the protocol's own table (HELEN's
    F-measures), per-class IoU and F1."""
    from spn.viz import headline_markdown, per_class_markdown, table3_markdown, trimap_markdown

    lines = [
        f"# spn eval: {res['model']} on {res['data']} ({res['split']})",
        "",
        f"- checkpoint: `{res['checkpoint']}`",
        f"- images: {res['num_images']}, classes: {res['num_classes']}, protocol: {res['protocol']}"
        + (", refined output restricted to the coarse input's classes" if res["restrict_to_present"] else ""),
        f"- coarse source: {res['coarse_source'] or 'dataset default'}",
        f"- seconds per image (model call, this machine): median {res['seconds_per_image']['median']:.4g}, "
        f"mean {res['seconds_per_image']['mean']:.4g}",
        "",
        table3_markdown(results),
    ]
    if res["protocol"] not in ("plain", "voc"):  # Table 3 already shows their columns
        lines += [headline_markdown(results, get_protocol(res["protocol"]).headline,
                                    f"Protocol {res['protocol']!r} (%):")]
    trimap = trimap_markdown(results)
    if trimap:
        lines += [trimap]
    lines += [per_class_markdown(results, res.get("class_names"))]
    return "\n".join(lines)

