"""Seconds per 512x512 image of SPN refiners and the dense CRF on this CPU, and the cost of
fresh large allocations (the page faults the operator roofline leaves out).

    python benchmarks/bench_models.py [--json bench_results/models.json]

Untrained models: the time of a forward pass does not depend on the weights.
"""
from __future__ import annotations

import argparse
import sys

import spn  # noqa: F401  (sets THP_MEM_ALLOC_ENABLE before torch allocates)
import torch

from spn.models import SPN_PRESETS, create_model
from spn.utils.io import atomic_write_json
from spn.utils.timer import time_fn

CONFIGS = {
    "demo (Cg=1, guidance width 8)": SPN_PRESETS["fast"],
    "per-channel gates, guidance width 8": dict(channels=16, guidance_width=8, guidance_coarse=True),
    "per-channel gates, guidance width 16": dict(channels=16, guidance_width=16, guidance_coarse=True),
    "library default (C'=32, width 16)": SPN_PRESETS["paper"],
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--json", default="bench_results/models.json")
    args = p.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 512, 512, generator=g)
    coarse = torch.softmax(3 * torch.randn(1, args.classes, 512, 512, generator=g), 1)
    res = {"threads": torch.get_num_threads(), "spn_512_ms": {}}
    torch.manual_seed(0)
    for name, cfg in CONFIGS.items():
        m = create_model("spn_three_way", num_classes=args.classes, **cfg).eval()
        with torch.no_grad():
            res["spn_512_ms"][name] = time_fn(name, lambda: m(img, coarse), repeats=7).median_ms
    try:
        from spn.peers import get_peer

        crf = get_peer("densecrf")
        res["densecrf_512_ms"] = time_fn("densecrf", lambda: crf.refine(img[0], coarse[0]), warmup=1, repeats=3).median_ms
    except RuntimeError as exc:  # pydensecrf2 missing
        res["densecrf_512_ms"] = None
        print(f"dense CRF skipped: {exc}", file=sys.stderr)
    big = torch.empty(8, 4, 3, 21, 128, 128)  # the S1 gate gradients: 132 MB
    res["fill_fresh_132MB_ms"] = time_fn("fresh", lambda: torch.empty_like(big).fill_(0), repeats=15).median_ms
    res["fill_reused_132MB_ms"] = time_fn("reused", lambda: big.fill_(0), repeats=15).median_ms
    atomic_write_json(args.json, res)
    print(f"threads: {res['threads']}; medians, ms per 512x512 image ({args.classes} classes)")
    for name, ms in res["spn_512_ms"].items():
        print(f"  three-way SPN, {name}: {ms:.1f}")
    if res["densecrf_512_ms"] is not None:
        print(f"  dense CRF (5 iterations): {res['densecrf_512_ms']:.1f}")
        res["spn_over_densecrf"] = {name: ms / res["densecrf_512_ms"] for name, ms in res["spn_512_ms"].items()}
        for name, r in res["spn_over_densecrf"].items():
            print(f"  three-way SPN, {name} / dense CRF: {100 * r:.0f}%")
        atomic_write_json(args.json, res)
    print(f"fill a fresh 132 MB tensor: {res['fill_fresh_132MB_ms']:.1f} ms; a reused one: {res['fill_reused_132MB_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
