"""The shipped mask refiner on held-out composites, against the dense CRF and the guided filter,
and its speed.

    # scores on the held-out composites (validation photos of SOURCE), the CRF tuned on
    # training composites (never on the held-out ones):
    python benchmarks/mask_refiner.py tune-crf --source /work/corpus --tune-crf 8 --out crf.json
    python benchmarks/mask_refiner.py eval --source /work/corpus --crf-params crf.json --out scores.json
    # what a method does to a perfect input (the target itself as the coarse mask); --near 0:
    # the held-out composites without nearly exact coarse masks (those before they existed);
    # --no-keep: the pass's result everywhere in the crop (MaskRefiner(keep=False))
    python benchmarks/mask_refiner.py eval --source corpus --truth-input --crf-params crf.json
    # the coarse masks of a real segmenter: OpenCV's GrabCut from each target's enlarged box (as
    # the zero-shot evaluation makes them; needs opencv-python-headless: make eval-deps)
    python benchmarks/mask_refiner.py eval --source corpus --grabcut-input --crf-params crf.json
    # speed: median wall time of MaskRefiner.refine on a 1 MP and a 4K photo, 2 threads
    python benchmarks/mask_refiner.py speed --threads 2 --repeats 5
    # peak memory of one 4K refinement (run it under /usr/bin/time -v; max RSS)
    /usr/bin/time -v python benchmarks/mask_refiner.py speed --sizes 2160x3840 --repeats 1
    # the global pass alone against local passes, on held-out composites upscaled 2.25 times
    python benchmarks/mask_refiner.py local --source /work/corpus --scale 2.25 --items 16
    # inference settings (reach, flip) on held-out composites
    python benchmarks/mask_refiner.py variants --source corpus --reaches 0 0.05 0.1 0.2 --flips
    # a logit bias on the refiner's output; objects that fill the photo, at two pass scales
    python benchmarks/mask_refiner.py bias --source corpus --seed 1 --items 96 --near 0.16666666666666666
    python benchmarks/mask_refiner.py fill --source corpus --seed 2 --items 96
    # a second run's weights for masks that cover >= 45 % of the photo (MaskRefiner(large_model=)),
    # on the 48 held-out composites and on frame-filling ones (seed 6)
    python benchmarks/mask_refiner.py gate --source corpus --checkpoint RUN --large-checkpoint RUN2 --seed 6
    # whole-photo inference against object-centred crops, objects shrunk 1, 2 and 4 times
    python benchmarks/mask_refiner.py small --source /work/corpus --items 24 --scales 1 0.5 0.25

``--checkpoint RUN`` scores a training run instead of the shipped weights. The shipped file is
written from a run with

    python benchmarks/mask_refiner.py export --checkpoint RUN --out src/spn/weights/mask_refiner.safetensors
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F


def _refiner(args):
    from spn.inference_mask import MaskRefiner

    kw = {k: getattr(args, k) for k in ("reach", "flip", "keep", "confidence", "snap")
          if getattr(args, k, None) is not None}
    return MaskRefiner.from_checkpoint(args.checkpoint, **kw) if args.checkpoint else MaskRefiner.pretrained(**kw)


def _near(args) -> dict:
    """``near=`` of the held-out composites when ``--near`` is given."""
    return {} if getattr(args, "near", None) is None else {"near": args.near}


class _Coarse:
    """Composites whose coarse mask is ``fn(item, index)``."""

    num_classes = 2
    class_names = ["background", "object"]
    ignore_index = 255

    def __init__(self, base, fn):
        self.base, self.fn = base, fn

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = dict(self.base[i])
        item["coarse"] = self.fn(item, i)
        return item


def _truth_input(base):
    """Held-out composites whose coarse mask is the target itself: what a method does to a
    perfect input (a refiner should leave it as it is)."""
    return _Coarse(base, lambda item, i: (item["mask"] == 1).float()[None])


def _grabcut_input(base, seed: int, stats: dict):
    """Held-out composites whose coarse mask is OpenCV's GrabCut from the target's enlarged box
    (:func:`spn.data.grabcut.grabcut_mask`, seed ``seed + index``), as the zero-shot
    evaluation makes them for real photos. ``stats`` collects GrabCut's calls, seconds and empty masks."""
    from spn.data.grabcut import grabcut_mask

    def fn(item, i):
        t0 = time.perf_counter()
        c = grabcut_mask(item["image"], (item["mask"] == 1).to(torch.uint8), seed + i)
        stats["calls"] = stats.get("calls", 0) + 1
        stats["seconds"] = stats.get("seconds", 0.0) + time.perf_counter() - t0
        stats["empty"] = stats.get("empty", 0) + int(not bool(c.any()))
        return c[None]

    return _Coarse(base, fn)


def _two_class(base):
    """Composites as two-class items (coarse ``(2, H, W)``), what the peers and the CRF search take."""
    return _Coarse(base, lambda item, i: torch.cat([1 - item["coarse"], item["coarse"]]))


def _peer_fn(peer):
    def fn(image, coarse):
        return peer.refine(image, torch.stack([1 - coarse, coarse]))[1]
    return fn


def tune_crf(source: str, n: int, size, seed: int) -> dict:
    """The dense CRF's grid search (:func:`spn.peers.densecrf.grid_search`, its default grid) on
    ``n`` TRAINING composites of ``source`` (never the held-out ones)."""
    from spn.data.composites import CompositeDataset
    from spn.peers.densecrf import grid_search

    train = _two_class(CompositeDataset(source, split="train", size=size, length=n, seed=seed + 1))
    t0 = time.perf_counter()
    search = grid_search(train, limit=n)
    print(f"dense CRF tuned on {search['images']} training composites in {time.perf_counter() - t0:.0f} s: "
          f"{search['best']} (mIoU {search['best_mean_iou']:.4f}, input {search['input_mean_iou']:.4f})",
          file=sys.stderr)
    return {"best": search["best"], "best_mean_iou": search["best_mean_iou"],
            "input_mean_iou": search["input_mean_iou"], "images": search["images"]}


def cmd_tune_crf(args) -> dict:
    torch.set_num_threads(args.threads)
    res = tune_crf(args.source, args.tune_crf, (384, 512), args.seed)
    return res


def cmd_eval(args) -> dict:
    from spn.data.composites import CompositeDataset
    from spn.evaluation_mask import evaluate_masks
    from spn.peers import get_peer

    torch.set_num_threads(args.threads)
    held = CompositeDataset(args.source, split="val", length=args.items, seed=args.seed, **_near(args))
    if args.truth_input:
        held = _truth_input(held)
    elif args.grabcut_input:
        held = _grabcut_input(held, args.seed, grabcut_stats := {})
    ref = _refiner(args)
    methods = {"guided_filter": _peer_fn(get_peer("guided_filter"))}
    crf_params = None
    if args.crf_params:
        with open(args.crf_params) as f:
            crf_params = json.load(f)
        crf_params = crf_params.get("best", crf_params)
    elif args.tune_crf:
        crf_params = tune_crf(args.source, args.tune_crf, held.size, args.seed)["best"]
    if crf_params is not None:
        methods["densecrf"] = _peer_fn(get_peer("densecrf", **crf_params))
    res = evaluate_masks(lambda image, coarse: torch.from_numpy(ref.refine_proba(image, coarse)), held,
                         methods=methods)
    res["crf_params"] = crf_params
    if args.grabcut_input:
        res["grabcut"] = {"calls": grabcut_stats["calls"], "empty_masks": grabcut_stats["empty"],
                          "seconds_per_call": grabcut_stats["seconds"] / grabcut_stats["calls"]}
    res["source"] = args.source
    res["refiner"] = repr(ref)
    return res


def _photo(H: int, W: int, source: str, seed: int):
    """A held-out composite of the validation photos, upscaled to ``H x W`` (image bicubic,
    mask bilinear): a realistic share of boundary pixels at that size."""
    from spn.data.composites import CompositeDataset

    h = 384
    w = max(16, round(h * W / H))
    item = CompositeDataset(source, split="val", size=(h, w), length=1, seed=seed)[0]
    img = F.interpolate(item["image"][None], size=(H, W), mode="bicubic", align_corners=False)[0].clamp(0, 1)
    img = (img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    mask = F.interpolate(item["coarse"][None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
    return img, (mask.numpy() * 255 + 0.5).astype(np.uint8)


def _filling(H: int, W: int, source: str, seed: int):
    """The held-out composite's photo of :func:`_photo` with a centred ellipse over 64 % of it as
    the mask: an object that fills the photo (the second file, the whole-photo pass)."""
    img, _ = _photo(H, W, source, seed)
    yy, xx = np.mgrid[0:H, 0:W]
    ell = ((yy - H / 2) / (0.46 * H)) ** 2 + ((xx - W / 2) / (0.443 * W)) ** 2 <= 1
    return img, ell.astype(np.uint8) * 255


def cmd_speed(args) -> dict:
    torch.set_num_threads(args.threads)
    ref = _refiner(args)
    ref.crop = not args.whole_photo
    out = {"threads": args.threads, "refiner": repr(ref), "sizes": {}, "filling": args.filling}
    for spec in args.sizes:
        H, W = (int(v) for v in spec.lower().split("x"))
        img, mask = (_filling if args.filling else _photo)(H, W, args.source, args.seed)
        ref.refine(img, mask)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ref.refine(img, mask)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        out["sizes"][spec] = {"median_s": med, "ms_per_megapixel": 1000 * med / (H * W / 1e6),
                              "runs_s": times}
        print(f"{spec}: median {med * 1000:.0f} ms, {1000 * med / (H * W / 1e6):.0f} ms/MP "
              f"({args.repeats} runs, {args.threads} threads)", file=sys.stderr)
    return out


def cmd_speed_settings(args) -> dict:
    """The shipped settings against ``snap=False``, ``keep=False``, ``flip=False``, ``flip=False, reach=None``,
    the first file alone (``large_model=None``) and every mask sent to the second file
    (``large_cover=1e-6``), alternated runs on one photo (medians)."""
    from spn.inference_mask import MaskRefiner

    torch.set_num_threads(args.threads)
    H, W = (int(v) for v in args.sizes[0].lower().split("x"))
    img, mask = _photo(H, W, args.source, args.seed)
    variants = {"shipped": {}, "snap=False": {"snap": False}, "keep=False": {"keep": False},
                "flip=False": {"flip": False},
                "flip=False,reach=None": {"flip": False, "reach": None},
                "large_model=None": {"large_model": None}, "large_cover=1e-6": {"large_cover": 1e-6}}
    refs = {k: MaskRefiner.pretrained(**kw) for k, kw in variants.items()}
    for r in refs.values():
        r.refine(img, mask)  # warm-up
    times = {k: [] for k in refs}
    for _ in range(args.repeats):
        for k, r in refs.items():
            t0 = time.perf_counter()
            r.refine(img, mask)
            times[k].append(time.perf_counter() - t0)
    out = {"size": [H, W], "threads": args.threads}
    for k, t in times.items():
        out[k] = {"median_ms": 1000 * statistics.median(t), "runs_s": t}
        print(f"{k:24s} median {out[k]['median_ms']:.0f} ms", file=sys.stderr)
    return out


def cmd_local(args) -> dict:
    """The global pass alone against global + local passes (``band``), on held-out composites
    upscaled by ``--scale`` (image bicubic, target and coarse bilinear)."""
    from spn.data.composites import CompositeDataset
    from spn.evaluation_mask import mask_scores
    from spn.inference_mask import refine_tiled

    torch.set_num_threads(args.threads)
    net = _refiner(args).model
    ds = CompositeDataset(args.source, split="val", length=args.items, seed=args.seed)
    variants = {"global_only": None, **{f"band{b:g}": b for b in args.bands}}
    rows = {k: [] for k in ["coarse", *variants]}
    secs = {k: 0.0 for k in variants}
    H, W = round(384 * args.scale), round(512 * args.scale)
    for i in range(len(ds)):
        it = ds[i]
        img = F.interpolate(it["image"][None], size=(H, W), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        gt = (F.interpolate(it["mask"][None, None].float(), size=(H, W), mode="bilinear",
                            align_corners=False)[0, 0] >= 0.5).long()
        c = F.interpolate(it["coarse"][None], size=(H, W), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)
        rows["coarse"].append(mask_scores(c >= 0.5, gt))
        with torch.no_grad():
            for k, band in variants.items():
                t0 = time.perf_counter()
                p = refine_tiled(net, img, c, band=band)
                secs[k] += time.perf_counter() - t0
                rows[k].append(mask_scores(p >= 0.5, gt))
    out = {"size": [H, W], "items": len(ds)}
    for k, r in rows.items():
        out[k] = {m: sum(x[m] for x in r) / len(r) for m in ("iou", "boundary_iou", "mba")}
        if k in secs:
            out[k]["seconds_per_image"] = secs[k] / len(ds)
    return out


def _small_object(item, bg_item, scale: float, rng) -> tuple:
    """Held-out composite ``item`` shrunk by ``scale`` (image antialiased bilinear, coarse
    bilinear, target by its
    downscaled mask >= 0.5) and pasted at a random place into the image of
    ``bg_item`` (another held-out composite); outside the paste the coarse mask and the target
    are 0. ``scale == 1``: the composite itself."""
    img, coarse, target = item["image"], item["coarse"][0], item["mask"]
    if scale == 1:
        return img, coarse, target
    H, W = img.shape[-2:]
    h, w = max(2, round(H * scale)), max(2, round(W * scale))

    def down(t):
        return F.interpolate(t[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]

    y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    out_img = bg_item["image"].clone()
    out_img[:, y:y + h, x:x + w] = down(img).clamp(0, 1)
    out_c = torch.zeros(H, W)
    out_c[y:y + h, x:x + w] = down(coarse[None])[0].clamp(0, 1)
    out_t = torch.zeros(H, W, dtype=torch.long)
    out_t[y:y + h, x:x + w] = (down(target[None].float())[0] >= 0.5).long()
    return out_img, out_c, out_t


def cmd_small(args) -> dict:
    """Whole-photo inference against object-centred crops, on held-out composites whose object
    is shrunk by each of ``--scales`` into a frame of the same size (small objects in a large
    frame, as in real photos); ``--crop-sizes``: the crops' resized longer side."""
    from spn.data.composites import CompositeDataset
    from spn.evaluation_mask import mask_scores
    from spn.inference_mask import MaskRefiner

    torch.set_num_threads(args.threads)
    net = _refiner(args).model
    ds = CompositeDataset(args.source, split="val", length=args.items, seed=args.seed)
    variants = {"whole_photo": MaskRefiner(net, crop=False)}
    for cs in args.crop_sizes:
        variants[f"crop{cs}"] = MaskRefiner(net, crop=True, crop_size=cs, context=args.context)
    out = {"size": list(ds.size), "items": len(ds), "context": args.context, "scales": {}}
    for scale in args.scales:
        rng = np.random.default_rng([args.seed, round(scale * 1000)])
        rows = {k: [] for k in ["coarse", *variants]}
        secs = {k: 0.0 for k in variants}
        for i in range(len(ds)):
            img, c, gt = _small_object(ds[i], ds[(i + 1) % len(ds)], scale, rng)
            if not bool((gt > 0).any()):
                continue
            rows["coarse"].append(mask_scores(c >= 0.5, gt))
            for k, ref in variants.items():
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    p = torch.from_numpy(ref.refine_proba(img, c))
                secs[k] += time.perf_counter() - t0
                rows[k].append(mask_scores(p >= 0.5, gt))
        res = {}
        for k, r in rows.items():
            res[k] = {m: sum(x[m] for x in r) / len(r) for m in ("iou", "boundary_iou", "mba")}
            if k in secs:
                res[k]["seconds_per_image"] = secs[k] / len(r)
        res["n"] = len(rows["coarse"])
        out["scales"][f"{scale:g}"] = res
        for k, v in res.items():
            if k != "n":
                print(f"scale {scale:g} {k:12s} IoU {v['iou']:.3f} bIoU {v['boundary_iou']:.3f} "
                      f"mBA {v['mba']:.3f}", file=sys.stderr)
    return out


def _means(rows: list[dict]) -> dict:
    return {m: sum(x[m] for x in rows) / len(rows) for m in ("iou", "boundary_iou", "mba")}


def _print_means(out: dict) -> None:
    for k, v in out.items():
        if isinstance(v, dict):
            print(f"{k:22s} IoU {v['iou']:.4f} bIoU {v['boundary_iou']:.4f} mBA {v['mba']:.4f}", file=sys.stderr)


def cmd_variants(args) -> dict:
    """The refiner's inference settings (``reach``, ``flip``) on the held-out composites: IoU,
    boundary IoU and mBA per setting, with the coarse input's."""
    from spn.data.composites import CompositeDataset
    from spn.evaluation_mask import mask_scores

    torch.set_num_threads(args.threads)
    ref = _refiner(args)
    held = CompositeDataset(args.source, split="val", length=args.items, seed=args.seed, **_near(args))
    variants = {"coarse": None}
    for reach in args.reaches:
        for flip in (False, True) if args.flips else (False,):
            name = (f"reach={reach:g}" if reach > 0 else "reach=none") + (",flip" if flip else "")
            variants[name] = (reach if reach > 0 else None, flip)
    rows = {k: [] for k in variants}
    for i in range(len(held)):
        it = held[i]
        gt, c = it["mask"], it["coarse"][0]
        for k, v in variants.items():
            if v is None:
                rows[k].append(mask_scores(c >= 0.5, gt))
                continue
            ref.reach, ref.flip = v
            rows[k].append(mask_scores(torch.from_numpy(ref.refine_proba(it["image"], c)) >= 0.5, gt))
    out = {"items": len(held), "source": args.source, **{k: _means(r) for k, r in rows.items()}}
    _print_means(out)
    return out


def cmd_bias(args) -> dict:
    """A logit bias ``b`` (the refiner's probability ``sigmoid(logit - b)``) on held-out
    composites: IoU, boundary IoU and mBA per ``b``, with the coarse input's."""
    from spn.data.composites import CompositeDataset
    from spn.evaluation_mask import mask_scores

    torch.set_num_threads(args.threads)
    ref = _refiner(args)
    held = CompositeDataset(args.source, split="val", length=args.items, seed=args.seed, **_near(args))
    bias = [0.0]
    hook = ref.model.register_forward_hook(lambda module, inputs, output: output - bias[0])
    rows = {"coarse": [], **{f"b={b:g}": [] for b in args.biases}}
    errors = {k: [0, 0] for k in rows}  # false positive and missed pixels
    try:
        for i in range(len(held)):
            it = held[i]
            gt, c = it["mask"], it["coarse"][0]
            preds = {"coarse": c >= 0.5}
            for b in args.biases:
                bias[0] = b
                preds[f"b={b:g}"] = torch.from_numpy(ref.refine_proba(it["image"], c)) >= 0.5
            for k, pred in preds.items():
                rows[k].append(mask_scores(pred, gt))
                errors[k][0] += int((pred & (gt != 1)).sum())
                errors[k][1] += int((~pred & (gt == 1)).sum())
    finally:
        hook.remove()
    out = {"items": len(held), "source": args.source, "seed": args.seed,
           **{k: {**_means(r), "false_positives": errors[k][0], "missed": errors[k][1]} for k, r in rows.items()}}
    _print_means(out)
    return out


def _fill_item(item: dict, rng) -> tuple:
    """A composite cropped to its object's box plus 2 to 15 % of the box's side on each side
    (clamped): an object that fills the photo. ``(image, coarse, target)`` or None (no object)."""
    t = item["mask"]
    ys, xs = torch.nonzero((t == 1).any(1)).flatten(), torch.nonzero((t == 1).any(0)).flatten()
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    g = rng.uniform(0.02, 0.15)
    dy, dx = int(g * (y1 - y0)), int(g * (x1 - x0))
    y0, y1, x0, x1 = max(0, y0 - dy), min(t.shape[0], y1 + dy), max(0, x0 - dx), min(t.shape[1], x1 + dx)
    return item["image"][:, y0:y1, x0:x1], item["coarse"][0][y0:y1, x0:x1], t[y0:y1, x0:x1]


def _object_scale_proba(ref, image, coarse) -> np.ndarray:
    """The refiner's object-centred pass with its scale set by the crop before it is clamped to the
    photo (the object at the scale of an unclamped crop), instead of the clamped crop's side."""
    import math

    from spn.inference_mask import crop_box, refine_crop

    fg = coarse >= 0.5
    ys, xs = torch.nonzero(fg.any(1)).flatten(), torch.nonzero(fg.any(0)).flatten()
    side = max(int(ys[-1]) - int(ys[0]) + 1, int(xs[-1]) - int(xs[0]) + 1)
    full = side + 2 * max(ref.min_context, int(math.ceil(ref.context * side)))
    box = crop_box(fg, ref.context, ref.min_context)
    size = max(16, round(ref.crop_size * max(box[1] - box[0], box[3] - box[2]) / full))
    with torch.no_grad():
        return refine_crop(ref.model, image, coarse, box, size, ref.reach, ref.flip, ref.keep,
                           ref.confidence).numpy()


def _fill_items(args):
    """The frame-filling composites of ``--seed`` and ``--items`` (:func:`_fill_item`) whose coarse
    mask is neither empty nor full: ``(image, coarse, target)`` each."""
    from spn.data.composites import CompositeDataset

    held = CompositeDataset(args.source, split="val", length=args.items, seed=args.seed, **_near(args))
    rng = np.random.default_rng([args.seed, 99])
    for i in range(len(held)):
        got = _fill_item(held[i], rng)
        if got is not None and bool((got[1] >= 0.5).any()) and not bool((got[1] >= 0.5).all()):
            yield got


def cmd_fill(args) -> dict:
    """Objects that fill the photo (held-out composites cropped to the object): the refiner as
    shipped against its pass at the scale of an unclamped crop (:func:`_object_scale_proba`)."""
    from spn.evaluation_mask import mask_scores

    torch.set_num_threads(args.threads)
    ref = _refiner(args)
    rows = {"coarse": [], "shipped": [], "object_scale": []}
    for image, c, gt in _fill_items(args):
        rows["coarse"].append(mask_scores(c >= 0.5, gt))
        rows["shipped"].append(mask_scores(torch.from_numpy(ref.refine_proba(image, c)) >= 0.5, gt))
        rows["object_scale"].append(mask_scores(torch.from_numpy(_object_scale_proba(ref, image, c)) >= 0.5, gt))
    out = {"items": len(rows["coarse"]), "source": args.source, "seed": args.seed,
           **{k: _means(r) for k, r in rows.items()}}
    _print_means(out)
    return out


def cmd_gate(args) -> dict:
    """Weights per object: run ``--checkpoint`` for most masks, ``--large-checkpoint`` for masks that
    cover at least ``--large-cover`` of the photo (``MaskRefiner(large_model=...)``), against each
    run alone, on the held-out composites (seed 0, ``--held-items``) and on frame-filling ones
    (:func:`_fill_item`; seed ``--seed``, ``--items``)."""
    from spn.data.composites import CompositeDataset
    from spn.evaluation_mask import mask_scores
    from spn.inference_mask import MaskRefiner

    torch.set_num_threads(args.threads)
    base = _refiner(args)
    same = {k: getattr(base, k) for k in ("reach", "flip", "keep", "confidence", "snap", "snap_radius", "snap_eps")}
    large = MaskRefiner.from_checkpoint(args.large_checkpoint, **same)
    gated = MaskRefiner(base.model, **same, large_model=large.model, large_cover=args.large_cover)
    methods = {"base": base, "large": large, "gated": gated}

    def score(items) -> dict:
        rows = {"coarse": [], **{k: [] for k in methods}}
        n_large = 0
        for image, c, gt in items:
            fg = c >= 0.5
            if not bool(fg.any()) or bool(fg.all()):
                continue
            n_large += gated.uses_large_model(fg)
            rows["coarse"].append(mask_scores(fg, gt))
            for k, r in methods.items():
                rows[k].append(mask_scores(torch.from_numpy(r.refine_proba(image, c)) >= 0.5, gt))
        out = {"items": len(rows["coarse"]), "large_masks": n_large, **{k: _means(r) for k, r in rows.items()}}
        _print_means(out)
        return out

    held = CompositeDataset(args.source, split="val", length=args.held_items, seed=0, **_near(args))
    print(f"held-out composites (seed 0, {args.held_items})", file=sys.stderr)
    res_held = score((it["image"], it["coarse"][0], it["mask"]) for it in (held[i] for i in range(len(held))))
    print(f"frame-filling composites (seed {args.seed}, {args.items})", file=sys.stderr)
    res_fill = score(_fill_items(args))
    return {"source": args.source, "seed": args.seed, "large_cover": args.large_cover, "refiner": repr(gated),
            "held_out": res_held, "fill": res_fill}


def cmd_export(args) -> dict:
    """Write the weights of run ``--checkpoint`` (float16) with the default inference settings."""
    from spn.inference_mask import STORED_SETTINGS, save_weights

    ref = _refiner(args)
    settings = {k: getattr(ref, k) for k in STORED_SETTINGS}  # what loading applies, nothing else
    info = ref.info or {}
    extra = {"step": info.get("step"), "train_config": json.dumps(info.get("train_config") or {}, default=str)}
    path = save_weights(ref.model, args.out, settings, half=True, extra=extra)
    return {"out": str(path), "settings": settings, "step": info.get("step")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("eval", "speed", "speed-settings", "export", "tune-crf", "local", "small", "variants", "bias", "fill",
                 "gate"):
        p = sub.add_parser(name)
        p.add_argument("--source", default="skimage", help="photos: skimage or a folder with splits/")
        p.add_argument("--checkpoint", default=None, help="a run of spn train --task mask (default: shipped)")
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=None, help="write the JSON result (export: the weights) here")
        p.add_argument("--reach", type=float, default=None, help="MaskRefiner(reach=...)")
        p.add_argument("--flip", action="store_true", default=None, help="MaskRefiner(flip=True)")
        p.add_argument("--no-keep", dest="keep", action="store_false", default=None, help="MaskRefiner(keep=False)")
        p.add_argument("--confidence", type=float, default=None, help="MaskRefiner(confidence=...)")
        p.add_argument("--snap", action=argparse.BooleanOptionalAction, default=None,
                       help="MaskRefiner(snap=...): the final guided filter (default: the stored setting)")
        p.add_argument("--near", type=float, default=None,
                       help="share of nearly exact coarse masks in the held-out composites (default: the data's)")
    ev = sub.choices["eval"]
    ev.add_argument("--items", type=int, default=48, help="held-out composites")
    given = ev.add_mutually_exclusive_group()
    given.add_argument("--truth-input", action="store_true",
                       help="give the methods the target itself as the coarse mask")
    given.add_argument("--grabcut-input", action="store_true",
                       help="give the methods OpenCV GrabCut's mask from the target's enlarged box as the coarse mask")
    for p in (ev, sub.choices["tune-crf"]):
        p.add_argument("--tune-crf", type=int, default=0 if p is ev else 8, metavar="N",
                       help="tune the dense CRF on N training composites")
    ev.add_argument("--crf-params", default=None, help="a JSON file of dense CRF parameters (instead of tuning)")
    lo = sub.choices["local"]
    lo.add_argument("--scale", type=float, default=2.25, help="upscaling of the 384 x 512 held-out composites")
    lo.add_argument("--items", type=int, default=16)
    lo.add_argument("--bands", type=float, nargs="*", default=[1.0, 2.0])
    sm = sub.choices["small"]
    sm.add_argument("--items", type=int, default=24, help="held-out composites (384 x 512)")
    sm.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 0.25],
                    help="the object's shrink factor inside the frame")
    sm.add_argument("--crop-sizes", type=int, nargs="+", default=[320], help="crops' resized longer side")
    sm.add_argument("--context", type=float, default=0.5, help="context on each side, times the box's side")
    va = sub.choices["variants"]
    va.add_argument("--items", type=int, default=48, help="held-out composites")
    va.add_argument("--reaches", type=float, nargs="+", default=[0, 0.05, 0.1, 0.2], help="0: no reach limit")
    va.add_argument("--flips", action="store_true", help="each reach with and without flip")
    bi = sub.choices["bias"]
    bi.add_argument("--items", type=int, default=96, help="held-out composites")
    bi.add_argument("--biases", type=float, nargs="+", default=[-0.5, 0.0, 0.5, 1.0, 1.5])
    sub.choices["fill"].add_argument("--items", type=int, default=96, help="held-out composites")
    ga = sub.choices["gate"]
    ga.add_argument("--large-checkpoint", required=True, help="the run for masks that fill the photo")
    ga.add_argument("--large-cover", type=float, default=0.45, help="MaskRefiner(large_cover=...)")
    ga.add_argument("--items", type=int, default=96, help="frame-filling composites")
    ga.add_argument("--held-items", type=int, default=48, help="held-out composites (seed 0)")
    for sp in (sub.choices["speed"], sub.choices["speed-settings"]):
        sp.add_argument("--sizes", nargs="+", default=["1000x1000", "2160x3840"])
        sp.add_argument("--repeats", type=int, default=5)
    sp = sub.choices["speed"]
    sp.add_argument("--whole-photo", action="store_true", help="time the whole-photo path (crop=False)")
    sp.add_argument("--filling", action="store_true",
                    help="a mask that fills the photo (a centred ellipse over 64 %% of it) instead of the composite's")
    args = ap.parse_args(argv)
    cmds = {"eval": cmd_eval, "speed": cmd_speed, "export": cmd_export, "tune-crf": cmd_tune_crf, "local": cmd_local,
            "small": cmd_small, "variants": cmd_variants, "speed-settings": cmd_speed_settings, "bias": cmd_bias,
            "fill": cmd_fill, "gate": cmd_gate}
    res = cmds[args.cmd](args)
    text = json.dumps(res, indent=2, default=str)
    if args.out and args.cmd != "export":
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
