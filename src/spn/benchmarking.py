"""Operator benchmark: the compiled kernel vs the pure-PyTorch reference vs a memory roofline.

Measures the four-direction ``SpatialPropagation`` (three-way, ``Cg = C``, float32), forward
(inference, no autograd state) and forward+backward, at the sizes of the operator issue:

- S1 = 8x21x128x128: a training batch of patches
- S2 = 1x21x512x512: a full image
- S3 = 1x32x64x64: the paper's hidden layer (1.3 ms on a GPU in the paper)

The roofline is the time to stream the operator's compulsory bytes at the memory bandwidth
measured in the same run with large torch copies (``dst.copy_(src)``, read + write):

- forward (inference): read ``x`` and the gates, write the output;
- forward (training): the same, plus writing the four directional outputs kept for backward;
- backward: read ``grad_out``, ``x``, the gates and the four outputs; write ``grad_x`` and the
  gate gradients.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from spn.nn import SpatialPropagation
from spn.ops import _backend
from spn.utils.io import atomic_write_json
from spn.utils.timer import time_fn

SIZES = {
    "S1": (8, 21, 128, 128),
    "S2": (1, 21, 512, 512),
    "S3": (1, 32, 64, 64),
}


def measure_bandwidth(nbytes: int = 256 * 2**20) -> float:
    """Bytes per second of a large float32 copy (counting read + write)."""
    n = nbytes // 4
    src = torch.rand(n)
    dst = torch.empty(n)
    t = time_fn("copy", lambda: dst.copy_(src), warmup=2, repeats=15)
    return 2 * nbytes / (t.median_ms / 1e3)


def _inputs(shape, k=3, seed=0):
    B, C, H, W = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g)
    gates = (torch.rand(B, 4, k, C, H, W, generator=g) - 0.3) * 0.6
    return x, gates


def bench_size(label: str, shape, *, with_reference: bool = True, repeats: int = 10, bw: float) -> dict:
    B, C, H, W = shape
    k = 3
    x, gates = _inputs(shape, k)
    spn_layer = SpatialPropagation("three_way", merge="max", normalize=None)
    map_bytes = x.numel() * 4
    gate_bytes = gates.numel() * 4
    bytes_fwd_inf = map_bytes + gate_bytes + map_bytes
    bytes_fwd_train = bytes_fwd_inf + 4 * map_bytes
    bytes_bwd = (map_bytes * 2 + gate_bytes + 4 * map_bytes) + (map_bytes + gate_bytes)
    roof_fwd = bytes_fwd_inf / bw * 1e3
    roof_fb = (bytes_fwd_train + bytes_bwd) / bw * 1e3

    xg = x.clone().requires_grad_()
    gg = gates.clone().requires_grad_()
    grad = torch.randn_like(x)

    def fwd():
        with torch.no_grad():
            spn_layer(x, gates)

    def fwd_bwd():
        xg.grad = None
        gg.grad = None
        out = spn_layer(xg, gg)
        out.backward(grad)

    res = {"shape": list(shape), "roofline_fwd_ms": roof_fwd, "roofline_fwd_bwd_ms": roof_fb,
           "bytes_fwd": bytes_fwd_inf, "bytes_fwd_bwd": bytes_fwd_train + bytes_bwd}
    prev = os.environ.pop("SPN_BACKEND", None)
    try:
        res["kernel_fwd"] = time_fn(f"{label} kernel fwd", fwd, repeats=repeats, min_time_s=0.2).to_dict()
        res["kernel_fwd_bwd"] = time_fn(f"{label} kernel fwd+bwd", fwd_bwd, repeats=repeats, min_time_s=0.2).to_dict()
        if with_reference:
            os.environ["SPN_BACKEND"] = "reference"
            r = max(3, repeats // 3)
            res["reference_fwd"] = time_fn(f"{label} ref fwd", fwd, warmup=1, repeats=r, max_time_s=30).to_dict()
            res["reference_fwd_bwd"] = time_fn(f"{label} ref fwd+bwd", fwd_bwd, warmup=1, repeats=r, max_time_s=30).to_dict()
    finally:
        os.environ.pop("SPN_BACKEND", None)
        if prev is not None:
            os.environ["SPN_BACKEND"] = prev
    return res


def run(sizes=("S1", "S2", "S3"), *, with_reference: bool = True, repeats: int = 10, threads: int | None = None,
        out: str | None = "bench_results/propagation.json") -> dict:
    if threads:
        torch.set_num_threads(threads)
    if not _backend.extension_available():
        raise RuntimeError(f"the compiled extension is not available ({_backend.extension_error()}); run `make install`")
    bw = measure_bandwidth()
    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__},
        "backend": _backend.active_backend(),
        "bandwidth_GBps": bw / 1e9,
        "sizes": {},
    }
    for label in sizes:
        if label not in SIZES:
            raise ValueError(f"unknown size {label!r}; valid sizes are {', '.join(SIZES)}")
        results["sizes"][label] = bench_size(label, SIZES[label], with_reference=with_reference, repeats=repeats, bw=bw)
    if out:
        atomic_write_json(out, results)
        results["json"] = str(Path(out))
    return results


def format_table(results: dict) -> str:
    rows = ["| size | pass | kernel (ms) | reference (ms) | roofline (ms) | kernel / roofline | reference / kernel |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, r in results["sizes"].items():
        shape = "x".join(map(str, r["shape"]))
        for tag, roof_key, name in (("fwd", "roofline_fwd_ms", "forward"), ("fwd_bwd", "roofline_fwd_bwd_ms", "forward+backward")):
            kern = r[f"kernel_{tag}"]["median_ms"]
            ref = r.get(f"reference_{tag}", {}).get("median_ms")
            roof = r[roof_key]
            rows.append(
                f"| {label} {shape} | {name} | {kern:.2f} | {'-' if ref is None else f'{ref:.1f}'} | {roof:.2f} | "
                f"{kern / roof:.2f}x | {'-' if ref is None else f'{ref / kern:.0f}x'} |"
            )
    head = (f"backend: {results['backend']}; threads: {results['machine']['threads']}; "
            f"copy bandwidth: {results['bandwidth_GBps']:.1f} GB/s (read+write); medians")
    return head + "\n\n" + "\n".join(rows)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    return run_cli(p.parse_args(argv))


def add_arguments(p) -> None:
    p.add_argument("--sizes", default="S1,S2,S3", help="comma-separated subset of S1,S2,S3")
    p.add_argument("--no-reference", action="store_true", help="skip the slow pure-PyTorch reference")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default="bench_results/propagation.json", help="where to write the JSON results")


def run_cli(args) -> int:
    res = run(tuple(s.strip() for s in args.sizes.split(",") if s.strip()), with_reference=not args.no_reference,
              repeats=args.repeats, threads=args.threads, out=args.json)
    print(format_table(res))
    print(f"\nJSON: {res.get('json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
