"""Operator benchmark: what users call, against a memory roofline and the pure-PyTorch reference.

Measures the four-direction ``SpatialPropagation`` layer (three-way, merge max, float32), forward
(inference, no autograd state) and forward+backward, at the sizes of the operator issues:

- S1 = 8x21x128x128: a training batch of patches
- S2 = 1x21x512x512: a full image
- S3 = 1x32x64x64: the paper's hidden layer (1.3 ms on a GPU in the paper)

and in the configurations users run (rows):

- ``default``: ``SpatialPropagation()`` as a new user gets it: ``normalize="clip"`` (Theorem 3,
  fused into the kernel), per-channel gates (``Cg = C``) straight from a CNN (raw, unnormalised
  ``randn`` values);
- ``none``: ``normalize=None`` with gates already inside Theorem 3's bound (the version-1 path);
- ``shared``: the default layer with one gate map shared by every channel (``Cg = 1``);
- ``gspn``: GSPN's form, ``normalize="gspn"`` with a per-channel input weight ``(B, 4, C, H, W)``.

Each row has its own roofline: the time to stream the row's compulsory bytes at the memory
bandwidth measured in the same run with large torch copies (``dst.copy_(src)``, read + write).
Per element of ``x``, with ``q = Cg / C``, gate bytes ``G = 4 * 4 * K * q`` (four directions, K
slots, float32) and input-weight bytes ``L = 16`` when there is one (else 0):

- forward (inference): read ``x``, the gates (and ``l``); write the output: ``4 + G + L + 4``;
- forward (training): the same, plus the four directional outputs kept for backward: ``+ 16``;
- backward: read ``grad_out``, ``x``, the gates, (``l``), the four outputs; write ``grad_x``, the
  gate gradients (and ``grad_l``): ``4 + 4 + G + L + 16 + 4 + G + L``.

For ``default`` at S1 this is ``4 + 48q + 4 + 16`` and ``4 + 4 + 48q + 16 + 4 + 48q``.
"""
from __future__ import annotations

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

#: the rows: name -> (normalize, shared gates, input weight, gates in Theorem 3's bound)
CONFIGS = {
    "default": ("clip", False, False, False),
    "none": (None, False, False, True),
    "shared": ("clip", True, False, False),
    "gspn": ("gspn", False, True, False),
}


def measure_bandwidth(nbytes: int = 256 * 2**20) -> float:
    """Bytes per second of a large float32 copy (counting read + write)."""
    n = nbytes // 4
    src = torch.rand(n)
    dst = torch.empty(n)
    t = time_fn("copy", lambda: dst.copy_(src), warmup=2, repeats=15)
    return 2 * nbytes / (t.median_ms / 1e3)


def _inputs(shape, config: str, k: int = 3, seed: int = 0):
    """``x``, flat gates as a CNN outputs them ``(B, 4*K*Cg, H, W)`` and the input weight."""
    B, C, H, W = shape
    normalize, shared, with_l, bounded = CONFIGS[config]
    cg = 1 if shared else C
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=g)
    if bounded:  # the version-1 path: gates already inside Theorem 3's bound
        gates = (torch.rand(B, 4 * k * cg, H, W, generator=g) - 0.3) * 0.6
    else:  # raw CNN output
        gates = torch.randn(B, 4 * k * cg, H, W, generator=g)
    lam = torch.rand(B, 4 * C, H, W, generator=g) if with_l else None
    return x, gates, lam


def roofline_bytes(shape, config: str, k: int = 3) -> dict:
    """Compulsory bytes of one call (see the module docstring)."""
    B, C, H, W = shape
    n = B * C * H * W
    _, shared, with_l, _ = CONFIGS[config]
    q = 1 / C if shared else 1.0
    G = 16 * k * q
    L = 16 if with_l else 0
    fwd_inf = 4 + G + L + 4
    fwd_train = fwd_inf + 16
    bwd = 4 + 4 + G + L + 16 + 4 + G + L
    return {"fwd": fwd_inf * n, "fwd_bwd": (fwd_train + bwd) * n}


def bench_config(label: str, shape, config: str, *, with_reference: bool, repeats: int, bw: float) -> dict:
    normalize = CONFIGS[config][0]
    x, gates, lam = _inputs(shape, config)
    layer = SpatialPropagation("three_way", merge="max", normalize=normalize)
    nbytes = roofline_bytes(shape, config)
    res = {"shape": list(shape), "config": config, "normalize": normalize,
           "shared_gates": CONFIGS[config][1], "input_weight": CONFIGS[config][2],
           "bytes_fwd": nbytes["fwd"], "bytes_fwd_bwd": nbytes["fwd_bwd"],
           "roofline_fwd_ms": nbytes["fwd"] / bw * 1e3, "roofline_fwd_bwd_ms": nbytes["fwd_bwd"] / bw * 1e3}
    xg = x.clone().requires_grad_()
    gg = gates.clone().requires_grad_()
    lg = None if lam is None else lam.clone().requires_grad_()
    grad = torch.randn_like(x)

    def fwd():
        with torch.no_grad():
            layer(x, gates, lam)

    def fwd_bwd():
        xg.grad = gg.grad = None
        if lg is not None:
            lg.grad = None
        layer(xg, gg, lg).backward(grad)

    prev = os.environ.pop("SPN_BACKEND", None)
    try:
        res["kernel_fwd"] = time_fn(f"{label} {config} fwd", fwd, repeats=repeats, min_time_s=0.2).to_dict()
        res["kernel_fwd_bwd"] = time_fn(f"{label} {config} fwd+bwd", fwd_bwd, repeats=repeats,
                                        min_time_s=0.2).to_dict()
        if with_reference:
            os.environ["SPN_BACKEND"] = "reference"
            r = max(3, repeats // 3)
            res["reference_fwd"] = time_fn(f"{label} {config} ref fwd", fwd, warmup=1, repeats=r,
                                           max_time_s=30).to_dict()
            res["reference_fwd_bwd"] = time_fn(f"{label} {config} ref fwd+bwd", fwd_bwd, warmup=1, repeats=r,
                                               max_time_s=30).to_dict()
    finally:
        os.environ.pop("SPN_BACKEND", None)
        if prev is not None:
            os.environ["SPN_BACKEND"] = prev
    return res


def bench_size(label: str, shape, *, with_reference: bool = True, repeats: int = 10, bw: float,
               configs=tuple(CONFIGS)) -> dict:
    """Every configuration at one size; the reference runs for the default row only (it is slow)."""
    out = {}
    for config in configs:
        if config not in CONFIGS:
            raise ValueError(f"unknown configuration {config!r}; valid are {', '.join(CONFIGS)}")
        out[config] = bench_config(label, shape, config, with_reference=with_reference and config == "default",
                                   repeats=repeats, bw=bw)
    return out


def run(sizes=("S1", "S2", "S3"), *, with_reference: bool = True, repeats: int = 10, threads: int | None = None,
        out: str | None = "bench_results/propagation.json", configs=tuple(CONFIGS),
        reference_sizes=None) -> dict:
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
        ref = with_reference and (reference_sizes is None or label in reference_sizes)
        results["sizes"][label] = bench_size(label, SIZES[label], with_reference=ref, repeats=repeats, bw=bw,
                                             configs=configs)
    if out:
        atomic_write_json(out, results)
        results["json"] = str(Path(out))
    return results


def format_table(results: dict) -> str:
    rows = ["| size | layer | pass | kernel (ms) | roofline (ms) | kernel / roofline | reference (ms) | reference / kernel |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, per_config in results["sizes"].items():
        for config, r in per_config.items():
            shape = "x".join(map(str, r["shape"]))
            for tag, roof_key, name in (("fwd", "roofline_fwd_ms", "forward"),
                                        ("fwd_bwd", "roofline_fwd_bwd_ms", "forward+backward")):
                kern = r[f"kernel_{tag}"]["median_ms"]
                ref = r.get(f"reference_{tag}", {}).get("median_ms")
                roof = r[roof_key]
                rows.append(
                    f"| {label} {shape} | {config} | {name} | {kern:.2f} | {roof:.2f} | {kern / roof:.2f}x | "
                    f"{'-' if ref is None else f'{ref:.1f}'} | {'-' if ref is None else f'{ref / kern:.0f}x'} |"
                )
    ratios = []
    for label, per_config in results["sizes"].items():
        if "default" in per_config and "gspn" in per_config:
            d, g = per_config["default"], per_config["gspn"]
            ratios.append(f"{label}: gspn / default = {g['kernel_fwd']['median_ms'] / d['kernel_fwd']['median_ms']:.2f} "
                          f"(forward), {g['kernel_fwd_bwd']['median_ms'] / d['kernel_fwd_bwd']['median_ms']:.2f} "
                          f"(forward+backward)")
    head = (f"backend: {results['backend']}; threads: {results['machine']['threads']}; "
            f"copy bandwidth: {results['bandwidth_GBps']:.1f} GB/s (read+write); medians")
    return head + "\n\n" + "\n".join(rows) + ("\n\n" + "\n".join(ratios) if ratios else "")


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    return run_cli(p.parse_args(argv))


def add_arguments(p) -> None:
    p.add_argument("--sizes", default="S1,S2,S3", help="comma-separated subset of S1,S2,S3")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma-separated subset of {','.join(CONFIGS)} (the layer configurations, see the docstring)")
    p.add_argument("--no-reference", action="store_true", help="skip the slow pure-PyTorch reference")
    p.add_argument("--reference-sizes", default=None,
                   help="time the reference only at these sizes (comma-separated; S2's takes minutes)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default="bench_results/propagation.json", help="where to write the JSON results")


def run_cli(args) -> int:
    res = run(tuple(s.strip() for s in args.sizes.split(",") if s.strip()), with_reference=not args.no_reference,
              repeats=args.repeats, threads=args.threads, out=args.json,
              configs=tuple(c.strip() for c in args.configs.split(",") if c.strip()),
              reference_sizes=None if args.reference_sizes is None else
              tuple(v.strip() for v in args.reference_sizes.split(",") if v.strip()))
    print(format_table(res))
    print(f"\nJSON: {res.get('json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
