"""Compare SPN checkpoints with the classical refiners on the same images (``spn compare``).

Signature (what ``spn demo`` calls)::

    from spn.experiments.compare import run_compare
    result = run_compare(
        dataset,                                  # items with "image", "mask", "coarse" (see spn.data)
        checkpoints={"one-way": "runs/one", "three-way": "runs/three"},   # name -> run dir
        peers=["bilinear", "densecrf", "guided_filter"],                  # names in spn.peers
        out_dir="out/compare",
        limit=None,            # first N images (None: all)
        protocol="plain",      # "plain" | "voc" | "helen" (spn.metrics.protocols)
        crf_params=None,       # dense CRF parameters (dict), e.g. from spn.peers.densecrf.grid_search
        figure_rows=4,         # images shown in the figure (0: no figure)
        # keyword-only extras: peer_params={name: {...}}, time_512=True, time_repeats=3,
        # time_size=512, title=None, data_label=None, skip_unavailable=False (True: leave out
        # "densecrf" when pydensecrf is missing instead of raising; what `spn demo` wants)
    )

A checkpoint value may also be an ``nn.Module`` already in memory (``forward(image, coarse)``).
Every method sees the same images and the same coarse maps; the VOC protocol restricts
every method's classes to the coarse input's. Written to ``out_dir`` (atomically):

- ``compare.md``: the table in the paper's format, method | overall AC | mean AC | mean IoU |
  per-class IoU (per-group F-measure for "helen") | s/image, then the 512 x 512 timing table;
- ``compare.json``: every metric of every method, per-image timings, parameters, ``time_512``;
- ``compare.png``: image | coarse | one column per peer | one per checkpoint | ground truth;
- ``trimap.png``: trimap accuracy against band width (1..20 px), one line per method.

Every method is scored with mIoU and the boundary metrics of :mod:`spn.metrics.boundary`
(boundary IoU, mBA, trimap accuracy); the per-class columns leave out the classes absent from
the ground truth of the compared images.

Returns a dict: ``methods`` (title -> {"kind", "id", "metrics", "seconds_per_image":
{"median", "mean"}}), ``time_512`` (title -> median seconds on one 512 x 512 synthetic image,
or absent when ``time_512=False``), ``protocol``, ``images``, ``report``, ``json``, ``figure``
(paths as str), ``crf_params``, ``skipped`` (peers left out with ``skip_unavailable``).

Timings are wall-clock seconds per image on this machine (CPU; the threads torch uses),
of the refinement call only (loading excluded): the peer's ``refine`` or the model's forward
(:mod:`spn.utils.timer`).

:class:`CompareConfig` and :func:`compare_from_config` are what ``spn compare`` runs: the dataset,
the peers and dense CRF parameters (optionally tuned by a grid search on the training split),
then :func:`run_compare`.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from spn.data import build_dataset, make_coarse_from_mask
from spn.inference import predict
from spn.metrics import get_protocol
from spn.models.checkpoint import checkpoint_classes, load_checkpoint, read_info
from spn.peers import DenseCRFParams, densecrf_available, get_peer, grid_search, list_peers
from spn.utils.config import ConfigBase, check_options, option
from spn.utils.io import write_json, write_markdown
from spn.utils.timer import Stopwatch, time_fn
from spn.viz import figure_grid, fmt_percent, fmt_seconds, markdown_table, present_classes, trimap_markdown, trimap_plot

log = logging.getLogger(__name__)

PEER_COLUMN = {"bilinear": None, "densecrf": "CRF", "guided_filter": "guided", "domain_transform": "domain transform"}


def _load_model(name: str, spec):
    """(model, info) for a run dir / model.safetensors path, or an nn.Module."""
    if isinstance(spec, nn.Module):
        return spec, {"source": "in-memory", "model": getattr(spec, "name", type(spec).__name__)}
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"checkpoint {name!r}: expected a run dir path or an nn.Module, got {type(spec).__name__}")
    model, info = load_checkpoint(spec)
    info = dict(info or {})
    info["source"] = str(spec)
    return model, info


def _predictor(model: nn.Module):
    """A function ``(image (3,H,W), coarse (K,H,W)) -> probs (K,H,W)`` (spn.inference.predict)."""
    return lambda image, coarse: predict(model, image, coarse)


def _synthetic_512(num_classes: int, size: int = 512):
    """One ``size x size`` (512) synthetic image and a coarse map with ``num_classes`` classes."""
    ds = build_dataset("synthetic", split="val", num_images=1, size=size, coarse="none")
    item = ds[0]
    mask = item["mask"].clone()
    if int(ds.num_classes) != num_classes:  # fold the synthetic classes onto the compared ones
        keep = mask != 255
        mask[keep] = mask[keep] % num_classes
    coarse = make_coarse_from_mask(mask, num_classes, 8)
    return item["image"], coarse.float()


def _cell_size(image: torch.Tensor, max_side: int = 192) -> tuple[int, int]:
    H, W = image.shape[-2:]
    s = min(1.0, max_side / max(H, W))
    return max(1, round(H * s)), max(1, round(W * s))


def run_compare(dataset, checkpoints: dict | None, peers, out_dir, limit: int | None = None,
                protocol: str = "plain", crf_params: dict | None = None, figure_rows: int = 4, *,
                peer_params: dict | None = None, time_512: bool = True, time_repeats: int = 3,
                time_size: int = 512, title: str | None = None, data_label: str | None = None,
                skip_unavailable: bool = False, notes: list | None = None) -> dict:
    """Run the peers and the checkpoints on the same images; write compare.md/.json/.png.

    Args:
        dataset: a dataset of the ``spn.data`` contract (items with "image" (3, H, W),
            "mask" (H, W), "coarse" (K, H, W), "name"; attributes ``num_classes``,
            ``class_names``, ``ignore_index``). Every item needs a "coarse" map.
        checkpoints: method title -> run dir (or ``model.safetensors``, or an ``nn.Module``).
        peers: peer names (``spn.peers.list_peers()``), as a list or a comma-separated string.
        out_dir: output folder (created).
        limit: evaluate the first ``limit`` items only.
        protocol: "plain", "voc" or "helen".
        crf_params: parameters of the "densecrf" peer.
        figure_rows: number of images in the figure; 0 writes no figure.
        peer_params: other peers' parameters, peer name -> dict.
        time_512: also time every method on one 512 x 512 synthetic image.
        time_repeats: timed runs per method for ``time_512`` (after one warm-up).
        time_size: side of the timing image (512 as in the paper; smaller for quick tests).
        title: heading of the report.
        data_label: how the report names the data (default: the dataset's class name).
        notes: lines added to the report after the tables (e.g. the dense CRF search's).
        skip_unavailable: leave out "densecrf" (with a line in the report and ``skipped`` in the
            result) when pydensecrf is not installed, instead of raising RuntimeError.
    Returns:
        see the module docstring.
    """
    peers, checkpoints, skipped = _check_compare_args(peers, checkpoints, limit, time_512, time_size, figure_rows,
                                                      skip_unavailable)
    num_classes = int(dataset.num_classes)
    class_names = list(getattr(dataset, "class_names", None) or [f"class_{i}" for i in range(num_classes)])
    ignore_index = int(getattr(dataset, "ignore_index", 255))
    get_protocol(protocol, num_classes=num_classes)  # validates the name early
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n < 1:
        raise ValueError("run_compare: the dataset is empty")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    peer_params = dict(peer_params or {})
    if crf_params:
        peer_params["densecrf"] = dict(crf_params)
    methods = _methods(peers, checkpoints, peer_params, num_classes)
    protos = {t: get_protocol(protocol, num_classes=num_classes, class_names=class_names,
                              ignore_index=ignore_index, boundary=True) for t in methods}
    results, fig_rows, row_labels = _evaluate_methods(dataset, n, methods, protos, num_classes, figure_rows)
    t512 = _time_methods(methods, num_classes, time_size, time_repeats) if time_512 else None
    figure_path = None
    if fig_rows:
        columns = ["image", "coarse"] + [m["column"] for m in methods.values() if m["column"] is not None]
        columns.append("ground truth")
        figure_path = figure_grid(fig_rows, columns, out_dir / "compare.png",
                                  cell_size=_cell_size(fig_rows[0]["image"]), row_labels=row_labels)

    proto0 = protos[next(iter(protos))]
    lines = _table_lines(results, protos, class_names, title,
                         f"Data: {data_label or type(dataset).__name__}, {n} image(s), ")
    trimap_path = trimap_plot(results, out_dir / "trimap.png")
    lines += ["![trimap accuracy against band width](trimap.png)", ""]
    lines += _closing_lines(results, t512, time_size, time_repeats, peers, notes, skipped, figure_path)
    report_path = write_markdown(out_dir / "compare.md", "\n".join(lines))

    summary = {
        "protocol": proto0.name,
        "images": n,
        "num_classes": num_classes,
        "class_names": class_names,
        "threads": torch.get_num_threads(),
        "methods": results,
        "time_512": None if t512 is None else {t: v["median"] for t, v in t512.items()},
        "time_size": time_size if t512 is not None else None,
        "time_512_samples": None if t512 is None else {t: v["samples"] for t, v in t512.items()},
        "skipped": skipped,
        "crf_params": next((r["config"] for r in results.values() if r["id"] == "densecrf"), None),
    }
    json_path = write_json(out_dir / "compare.json", summary)
    summary.update(report=str(report_path), json=str(json_path), trimap_figure=str(trimap_path),
                   figure=None if figure_path is None else str(figure_path))
    if summary["time_512"] is None:
        del summary["time_512"]
    return summary


def _check_compare_args(peers, checkpoints, limit, time_512, time_size, figure_rows, skip_unavailable):
    """``(peers as a list, checkpoints as a dict, skipped)`` of :func:`run_compare`'s arguments, checked."""
    if isinstance(peers, str):
        peers = [p.strip() for p in peers.split(",") if p.strip()]
    peers = list(peers or [])
    skipped = []
    if skip_unavailable and "densecrf" in peers and not densecrf_available():
        peers.remove("densecrf")
        skipped.append("densecrf (pydensecrf not installed: pip install pydensecrf2)")
    checkpoints = dict(checkpoints or {})
    if not peers and not checkpoints:
        raise ValueError("run_compare: nothing to compare (no peers and no checkpoints)")
    if len(set(peers)) != len(peers):
        raise ValueError(f"run_compare: a peer is listed twice: {peers}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if time_512 and (not isinstance(time_size, int) or time_size < 16):
        raise ValueError(f"time_size must be an int >= 16, got {time_size!r}")
    if not isinstance(figure_rows, int) or figure_rows < 0:
        raise ValueError(f"figure_rows must be an int >= 0, got {figure_rows!r}")
    return peers, checkpoints, skipped


def _methods(peers: list, checkpoints: dict, peer_params: dict, num_classes: int) -> "OrderedDict[str, dict]":
    """Method title -> ``{"kind", "id", "fn", "config", "column"}``: the peers, then the checkpoints."""
    methods: "OrderedDict[str, dict]" = OrderedDict()
    for name in peers:
        peer = get_peer(name, **peer_params.get(name, {}))
        methods[peer.title] = {"kind": "peer", "id": name, "fn": peer.refine, "config": peer.config(),
                               "column": PEER_COLUMN.get(name, peer.title)}
    for name, spec in checkpoints.items():
        name = str(name)
        if name in methods:
            raise ValueError(f"checkpoint name {name!r} clashes with a peer's title; rename it")
        model, info = _load_model(name, spec)
        k, _ = checkpoint_classes(info, model)
        if k is not None and k != num_classes:
            raise ValueError(f"checkpoint {name!r} ({info.get('source')}) predicts {k} classes but the "
                             f"dataset has {num_classes}")
        model.eval()
        methods[name] = {"kind": "checkpoint", "id": str(info.get("source")), "fn": _predictor(model),
                         "config": {"model": info.get("model", getattr(model, "name", None)),
                                    "model_config": getattr(model, "config", None), "step": info.get("step")},
                         "column": name}
    return methods


def _evaluate_methods(dataset, n: int, methods: dict, protos: dict, num_classes: int, figure_rows: int):
    """Every method on the first ``n`` items: ``(results by title, figure rows, their labels)``."""
    watches = {t: Stopwatch() for t in methods}
    fig_rows, row_labels = [], []
    for i in range(n):
        item = dataset[i]
        if "coarse" not in item:
            raise ValueError(f"item {i} ({item.get('name', '?')}) has no 'coarse' map: the comparison refines a "
                             "coarse segmentation (choose a coarse source, e.g. gt-downsample:8)")
        image, mask, coarse = item["image"].float(), item["mask"].long(), item["coarse"].float()
        if coarse.shape[0] != num_classes:
            raise ValueError(f"item {i} ({item.get('name', '?')}): coarse has {coarse.shape[0]} classes, "
                             f"the dataset {num_classes}")
        preds = {}
        for t, m in methods.items():
            with watches[t].time():
                probs = m["fn"](image, coarse)
            if tuple(probs.shape) != tuple(coarse.shape):
                raise ValueError(f"method {t!r} returned shape {tuple(probs.shape)} for a coarse map "
                                 f"{tuple(coarse.shape)}")
            scores = protos[t].prepare(probs.float().cpu(), coarse)
            pred = scores.argmax(0)
            protos[t].accumulate(pred, mask)
            preds[t] = pred
        if i < figure_rows:
            row = {"image": image, "coarse": coarse.argmax(0)}
            for t, m in methods.items():
                if m["column"] is not None:
                    row[m["column"]] = preds[t]
            row["ground truth"] = mask
            fig_rows.append(row)
            row_labels.append(str(item.get("name", i)))
    results: "OrderedDict[str, dict]" = OrderedDict()
    for t, m in methods.items():
        metrics = protos[t].compute()
        sec = watches[t].summary()
        results[t] = {"kind": m["kind"], "id": m["id"], "config": m["config"], "metrics": metrics,
                      "seconds_per_image": {"median": sec["median"], "mean": sec["mean"]},
                      "seconds_per_image_samples": watches[t].samples}
    return results, fig_rows, row_labels


def _time_methods(methods: dict, num_classes: int, time_size: int, time_repeats: int) -> "OrderedDict[str, dict]":
    """Every method on one ``time_size`` (512) square synthetic image: ``{title: {"median", "samples"}}`` (s)."""
    img512, coarse512 = _synthetic_512(num_classes, time_size)
    t512 = OrderedDict()
    for t, m in methods.items():
        fn = m["fn"]
        # one warm-up, then up to time_repeats runs (at least one) within 30 s
        timing = time_fn(t, lambda: fn(img512, coarse512), warmup=1, repeats=time_repeats,
                         max_time_s=30.0, min_repeats=1, seed=None)
        t512[t] = {"median": timing.median_ms / 1e3, "samples": [v / 1e3 for v in timing.samples_ms]}
    return t512


def _table_lines(results: dict, protos: dict, class_names: list, title: str | None, data_line: str) -> list[str]:
    """The report's heading and its table: overall / mean accuracy, mIoU, the boundary metrics,
    per-class IoU of the classes present in the ground truth (per-group F-measures for helen)."""
    proto0 = protos[next(iter(protos))]
    helen = proto0.name == "helen"
    num_classes = len(class_names)
    # per-class IoU of the classes present in the ground truth of these images (absent ones would
    # be empty columns); Table 1 F-measures for helen
    shown = present_classes([r["metrics"] for r in results.values()])
    absent = [class_names[i] for i in range(num_classes) if i not in shown]

    def extra_columns(t, m):
        if helen:
            return OrderedDict((k, v) for k, v in protos[t].headline(m).items()
                               if k not in ("boundary IoU", "mBA") and not k.startswith("trimap"))
        detail = list(protos[t].detail(m).items())
        return OrderedDict(detail[i] for i in shown if i < len(detail))

    first = next(iter(results))
    extra_names = list(extra_columns(first, results[first]["metrics"]))
    headers = ["method", "overall AC", "mean AC", "mean IoU", "boundary IoU", "mBA", "trimap 2px"]
    headers += [f"{c} (F)" if helen else f"{c} (IoU)" for c in extra_names]
    headers.append("s/image")
    rows = []
    for t, r in results.items():
        m = r["metrics"]
        tri = m["trimap_accuracy"][m["trimap_widths"].index(2)] if 2 in m["trimap_widths"] else None
        vals = [m["pixel_accuracy"], m["mean_accuracy"], m["mean_iou"], m["boundary_iou"], m["mba"], tri]
        vals += list(extra_columns(t, m).values())
        rows.append([t] + [fmt_percent(v) for v in vals] + [fmt_seconds(r["seconds_per_image"])])
    lines = [f"# {title or 'Refinement comparison'}", ""]
    lines.append(data_line + f"{num_classes} classes; protocol `{proto0.name}`"
                 + (" (refined classes restricted to those of the coarse input)" if proto0.name == "voc" else "")
                 + f"; CPU, {torch.get_num_threads()} thread(s).")
    lines.append("")
    lines.append("Numbers in %; " + ("(F): F-measure per component group (Table 1 of the paper)"
                                     if helen else "per-class columns are IoU")
                 + "; boundary IoU (Cheng et al. 2021, d = 2% of the diagonal), mBA (CascadePSP) and the "
                   "trimap accuracy within 2 px of the ground-truth edges (spn.metrics.boundary); "
                   "s/image is the median wall time of the refinement call.")
    if absent and not helen:
        lines.append(f"Classes absent from the ground truth of these images are left out of the per-class "
                     f"columns: {', '.join(absent)}.")
    lines.append("")
    lines.append(markdown_table(headers, rows))
    lines.append(trimap_markdown(results))
    return lines


def _closing_lines(results, t512, time_size, time_repeats, peers, notes, skipped, figure_path) -> list[str]:
    """The report after the tables: the 512 x 512 timings, the CRF parameters, notes, the figure."""
    lines = []
    if t512 is not None:
        lines.append(f"Seconds per {time_size} x {time_size} image (one synthetic image, median of "
                     f"{time_repeats} runs after a warm-up; the paper: SPN 84 ms on a GPU, dense CRF about 1 s "
                     "on a CPU):")
        lines.append("")
        lines.append(markdown_table(["method", f"s/image ({time_size}x{time_size})"],
                                    [[t, fmt_seconds(v["median"])] for t, v in t512.items()]))
    if "densecrf" in peers:
        cfg = next(r["config"] for r in results.values() if r["id"] == "densecrf")
        lines.append("Dense CRF parameters: " + ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "name") + ".")
        lines.append("")
    for note in notes or []:
        lines.append(str(note))
        lines.append("")
    if skipped:
        lines.append("Left out: " + "; ".join(skipped) + ".")
        lines.append("")
    if figure_path is not None:
        lines.append("![comparison](compare.png)")
        lines.append("")
    return lines


def checkpoint_args(values) -> "OrderedDict[str, str]":
    """Parse ``NAME=RUN`` strings (the ``--checkpoint`` flag) into an ordered dict."""
    out = OrderedDict()
    for v in values or []:
        if "=" not in v:
            raise ValueError(f"--checkpoint expects NAME=RUN_DIR, got {v!r}")
        name, path = v.split("=", 1)
        name, path = name.strip(), path.strip()
        if not name or not path:
            raise ValueError(f"--checkpoint expects NAME=RUN_DIR, got {v!r}")
        if name in out:
            raise ValueError(f"--checkpoint name {name!r} given twice")
        out[name] = path
    return out


# --- spn compare ---------------------------------------------------------------------------------

DEFAULT_PEERS = "bilinear,densecrf,guided_filter"


@dataclass
class CompareConfig(ConfigBase):
    """What ``spn compare`` compares: the options every task shares (the segmentation task's own,
    coarse source, protocol and dense CRF search, are :class:`spn.tasks.segmentation.SegCompareOptions`;
    see :func:`compare_from_config`)."""

    data: str = option(help="dataset: synthetic | folder:PATH | voc:PATH | helen:PATH | photos:PATH | "
                            "photos:skimage (what the task compares on)", metavar="SPEC")
    out: str = option(help="output folder: compare.md, compare.json, compare.png (and crf_grid.json)",
                      metavar="DIR")
    checkpoint: list = option(default_factory=list, metavar="NAME=RUN",
                              help="a run directory of `spn train` to compare, with its name in the table, "
                                   "e.g. one-way=runs/one; repeat for several")
    peers: str | None = option(None, metavar="LIST", default_help="the task's: " + DEFAULT_PEERS + " for "
                               "segmentation, every chroma upsampler for chroma",
                               help="comma-separated classical methods (spn.peers, or the chroma upsamplers of "
                                    "spn.peers.chroma) or 'none'; densecrf is left out with a warning when "
                                    "pydensecrf2 is not installed and the default is used")
    split: str = option("val", help="dataset split")
    limit: int | None = option(None, help="compare on the first N images only", metavar="N")
    figure_rows: int = option(4, help="images in the figure (0: none)", metavar="N")
    time_512: bool = option(True, help="time every method on a 512 x 512 image", negative="--no-time-512",
                            negative_help="skip the 512 x 512 timing of every method")
    threads: int | None = option(None, help="torch CPU threads", metavar="N", default_help="torch's")

    def validate(self) -> "CompareConfig":
        check_options(self, required=("data", "out"), at_least={"threads": 1, "limit": 1, "figure_rows": 0})
        return self


def parse_peers(text: str | None) -> tuple[list[str], bool]:
    """``"a,b"`` -> ``([a, b], is the default list)``; None -> the default list; ``"none"`` -> no
    peer; unknown -> ValueError."""
    if text is None:
        text = DEFAULT_PEERS
    if text.strip().lower() == "none":
        return [], False
    peers = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in peers if p not in list_peers()]
    if bad:
        raise ValueError(f"unknown peer(s) {', '.join(bad)}; valid peers are {', '.join(list_peers())}")
    return peers, text == DEFAULT_PEERS


def parse_crf(values) -> dict:
    """``["KEY=VALUE", ...]`` -> dense CRF parameters (the fields of :class:`DenseCRFParams`)."""
    types = {f.name: f.type for f in fields(DenseCRFParams)}
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        key = key.strip()
        if not sep or key not in types:
            raise ValueError(f"--crf expects KEY=VALUE with KEY in {', '.join(types)}, got {v!r}")
        try:
            out[key] = int(val) if key == "iterations" else float(val)
        except ValueError:
            raise ValueError(f"--crf {key}: {val!r} is not a number") from None
    return out


def compare_from_config(cfg: CompareConfig, opts) -> dict:
    """What ``spn compare`` does for segmentation: check the options, build the dataset (with the
    coarse source of ``opts``, a :class:`~spn.tasks.segmentation.SegCompareOptions`), optionally
    tune the dense CRF on the training split (``crf_grid.json``), then :func:`run_compare`.
    Returns its result."""
    cfg.validate()
    opts.validate()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    checkpoints = checkpoint_args(cfg.checkpoint)
    peers, default = parse_peers(cfg.peers)
    if "densecrf" in peers and not densecrf_available():
        if default:
            log.warning("pydensecrf2 is not installed; leaving out the dense CRF (pip install pydensecrf2)")
            peers.remove("densecrf")
        else:
            raise RuntimeError("the densecrf peer needs pydensecrf: pip install pydensecrf2")
    if not peers and not checkpoints:
        raise ValueError("nothing to compare: give --checkpoint NAME=RUN and/or --peers")
    crf_params = parse_crf(opts.crf)
    if opts.crf_grid and "densecrf" not in peers:
        raise ValueError("--crf-grid needs the densecrf peer in --peers")
    tune = "densecrf" in peers if opts.crf_grid is None else opts.crf_grid
    for spec in checkpoints.values():  # a wrong path fails now, not after the CRF search
        read_info(spec)
    dataset = build_dataset(cfg.data, split=cfg.split, coarse=opts.coarse, coarse_kind=opts.coarse_kind)
    crf_note = None
    if tune:
        train = build_dataset(cfg.data, split="train", coarse=opts.coarse, coarse_kind=opts.coarse_kind)
        if len(train) == 0:
            raise ValueError(f"the dense CRF search needs a training split; {cfg.data!r} has none "
                             "(pass --no-crf-grid to use fixed parameters)")
        grid = tune_densecrf(train, limit=opts.crf_grid_limit, protocol=opts.protocol, base=crf_params)
        write_json(f"{cfg.out}/crf_grid.json", grid)
        crf_params = grid["best"]
        crf_note = crf_search_note(grid)
    res = run_compare(dataset, checkpoints, peers, cfg.out, limit=cfg.limit, protocol=opts.protocol,
                      crf_params=crf_params or None, figure_rows=cfg.figure_rows, time_512=cfg.time_512,
                      data_label=f"{cfg.data} ({cfg.split})", notes=[crf_note] if crf_note else None)
    return res


def tune_densecrf(train, limit: int = 8, protocol: str = "plain", base: dict | None = None) -> dict:
    """The dense CRF search of ``spn compare`` (and ``spn demo``) on ``train``'s first ``limit``
    images: :func:`spn.peers.densecrf.grid_search` with its default two-stage grid."""
    log.info(f"dense CRF grid search on {min(limit, len(train))} training images")
    grid = grid_search(train, limit=limit, protocol=protocol, base=base)
    log.info(f"best dense CRF mean IoU {100 * grid['best_mean_iou']:.2f} (input "
             f"{100 * grid['input_mean_iou']:.2f}): {grid['best']}")
    return grid


def crf_search_note(grid: dict) -> str:
    """One line for the report: the tuned CRF's and the input's mIoU on the tuning split."""
    return (f"The dense CRF was tuned on {grid['images']} training image(s) ({len(grid['results'])} settings, "
            f"mean IoU): {fmt_percent(grid['best_mean_iou'])} there, against "
            f"{fmt_percent(grid['input_mean_iou'])} for its coarse input.")
