"""GPU benchmark of the four-direction propagation: Triton kernels vs reference vs copy roofline.

    python benchmarks/bench_gpu.py [--sizes S1,S2,S3,S4] [--no-reference] [--json PATH]
    python benchmarks/bench_gpu.py --dry-run      # no GPU: a tiny size through Triton's interpreter

Measures what users call: the default ``SpatialPropagation()`` (three-way, max merge,
``normalize="clip"``) on raw CNN gates, float32, with one gate map per channel (``Cg = C``) and
one shared by all channels (``Cg = 1``), forward (inference, no autograd state) and
forward+backward, at

- S1 = 8x21x128x128 (a training batch of patches), S2 = 1x21x512x512 (a full image),
- S3 = 1x32x64x64 (the paper's hidden layer: 1.3 ms on its GPU),
- S4 = 16x8x1024x1024 (GSPN-2's shape: 1.8 ms forward on an A100, by its own account).

Each is timed on the Triton kernels and on the pure-PyTorch reference (``SPN_BACKEND=reference``)
on the same GPU, with CUDA events after warm-up (medians), and set against a roofline: the
operator's compulsory bytes (the definition of ``spn.benchmarking``: forward reads ``x`` and
the gates and writes the output; training also writes the four directional maps; backward reads
``grad_out``, ``x``, the gates and the four maps and writes ``grad_x`` and the gate gradients)
streamed at the device-to-device copy bandwidth measured in the same run.

Without CUDA it refuses (exit 2), unless ``--dry-run``: then it runs a tiny size on CPU tensors
through Triton's interpreter (timings meaningless, code path the same), so a test can prove it
runs.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

SIZES = {
    "S1": (8, 21, 128, 128),
    "S2": (1, 21, 512, 512),
    "S3": (1, 32, 64, 64),
    "S4": (16, 8, 1024, 1024),
}
DRY_SIZES = {"D1": (1, 2, 6, 5)}

#: the speed targets on a GPU: (size, Cg, pass) -> (max ms or None, max kernel/roofline or None)
TARGETS = {
    ("S3", "C", "fwd"): (0.13, None),
    ("S4", "1", "fwd"): (1.8, 2.0),
    ("S2", "C", "fwd_bwd"): (None, 3.0),
    ("S2", "1", "fwd_bwd"): (None, 3.0),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="S1,S2,S3,S4", help="comma-separated subset of S1,S2,S3,S4")
    p.add_argument("--repeats", type=int, default=20, help="timed runs of the kernels (median)")
    p.add_argument("--reference-repeats", type=int, default=3, help="timed runs of the reference")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) reference")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--dry-run", action="store_true",
                   help="no GPU needed: run a tiny size on CPU through Triton's interpreter")
    args = p.parse_args(argv)
    unknown = [s for s in args.sizes.split(",") if s not in SIZES]
    if unknown:
        p.error(f"unknown size(s) {unknown}; valid sizes are {', '.join(SIZES)}")
    return args


def cuda_time(name: str, fn, *, warmup: int, repeats: int):
    """Median of ``repeats`` CUDA-event timings of ``fn()`` after ``warmup`` runs."""
    import torch

    from spn.utils.timer import Timing

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return Timing(name, statistics.median(samples), min(samples), statistics.fmean(samples), len(samples), samples)


def make_timer(dry: bool):
    if dry:
        from spn.utils.timer import time_fn

        return lambda name, fn, warmup, repeats: time_fn(name, fn, warmup=min(warmup, 1), repeats=repeats)
    return lambda name, fn, warmup, repeats: cuda_time(name, fn, warmup=warmup, repeats=repeats)


def copy_bandwidth(device, timer, nbytes: int) -> float:
    """Bytes per second of a large float32 copy on ``device`` (read + write)."""
    import torch

    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    t = timer("copy", lambda: dst.copy_(src), 3, 15)
    return 2 * nbytes / (t.median_ms / 1e3)


def compulsory_bytes(shape, cg: int, k: int = 3, itemsize: int = 4) -> tuple[int, int]:
    """(forward inference, forward+backward) compulsory bytes (see the module docstring)."""
    B, C, H, W = shape
    maps = B * C * H * W * itemsize
    gates = B * 4 * k * cg * H * W * itemsize
    fwd_inf = maps + gates + maps
    fwd_train = fwd_inf + 4 * maps
    bwd = (maps * 2 + gates + 4 * maps) + (maps + gates)
    return fwd_inf, fwd_train + bwd


def bench_case(label, shape, cg_name, *, device, timer, bw, args) -> list[dict]:
    import torch

    from spn.nn import SpatialPropagation

    B, C, H, W = shape
    cg = C if cg_name == "C" else 1
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device)
    raw = torch.randn(B, 4 * 3 * cg, H, W, generator=gen).to(device)  # raw CNN gates
    grad = torch.randn(shape, generator=gen).to(device)
    layer = SpatialPropagation()  # three_way, max, normalize="clip": the defaults
    xg, rg = x.clone().requires_grad_(True), raw.clone().requires_grad_(True)

    def fwd():
        with torch.no_grad():
            layer(x, raw)

    def fwd_bwd():
        xg.grad = rg.grad = None
        layer(xg, rg).backward(grad)

    b_fwd, b_fb = compulsory_bytes(shape, cg)
    rows = []
    for tag, fn, nbytes in (("fwd", fwd, b_fwd), ("fwd_bwd", fwd_bwd, b_fb)):
        row = {"size": label, "shape": list(shape), "Cg": cg_name, "pass": tag, "bytes": nbytes,
               "roofline_ms": nbytes / bw * 1e3}
        prev = os.environ.get("SPN_BACKEND")
        try:
            if not args.dry_run:
                os.environ.pop("SPN_BACKEND", None)  # the default choice for CUDA tensors
            kernel = timer(f"{label} Cg={cg_name} {tag} triton", fn, args.warmup, args.repeats)
            row["kernel"] = kernel.to_dict()
            row["kernel_over_roofline"] = kernel.median_ms / row["roofline_ms"]
            if not args.no_reference:
                os.environ["SPN_BACKEND"] = "reference"
                try:
                    ref = timer(f"{label} Cg={cg_name} {tag} reference", fn, 1, args.reference_repeats)
                    row["reference"] = ref.to_dict()
                    row["reference_over_kernel"] = ref.median_ms / kernel.median_ms
                except torch.cuda.OutOfMemoryError as exc:  # the reference keeps every line for autograd
                    row["reference"] = f"out of memory: {str(exc).splitlines()[0]}"
                    torch.cuda.empty_cache()
        finally:
            os.environ.pop("SPN_BACKEND", None)
            if prev is not None:
                os.environ["SPN_BACKEND"] = prev
        target = TARGETS.get((label, cg_name, tag))
        if target is not None and not args.dry_run:
            max_ms, max_ratio = target
            row["target"] = {"max_ms": max_ms, "max_over_roofline": max_ratio,
                             "met": (max_ms is None or kernel.median_ms <= max_ms)
                             and (max_ratio is None or row["kernel_over_roofline"] <= max_ratio)}
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def format_row(r: dict) -> str:
    ref = r.get("reference")
    ref_ms = f"{ref['median_ms']:.3f}" if isinstance(ref, dict) else (ref or "-")
    ratio = f"{r['reference_over_kernel']:.3g}x" if "reference_over_kernel" in r else "-"
    target = ""
    if "target" in r:
        target = "met" if r["target"]["met"] else "MISSED"
    name = {"fwd": "forward", "fwd_bwd": "forward+backward"}[r["pass"]]
    shape = "x".join(map(str, r["shape"]))
    return (f"| {r['size']} {shape} | Cg={r['Cg']} | {name} | {r['kernel']['median_ms']:.3f} | {ref_ms} | "
            f"{r['roofline_ms']:.3f} | {r['kernel_over_roofline']:.2f}x | {ratio} | {target} |")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        # must happen before triton is imported (by torch or spn)
        os.environ["TRITON_INTERPRET"] = "1"
        os.environ["SPN_BACKEND"] = "triton"
    import torch

    from spn.ops import active_backend
    from spn.ops import triton as spn_triton
    from spn.utils.io import atomic_write_json

    if args.dry_run:
        device, sizes = torch.device("cpu"), DRY_SIZES
        args.repeats, args.reference_repeats, args.warmup = 1, 1, 1
    else:
        if not torch.cuda.is_available():
            print("bench_gpu.py needs a CUDA GPU, and torch.cuda.is_available() is False here "
                  f"(torch {torch.__version__}). Run it on a GPU machine, or use --dry-run to check it "
                  "on CPU through Triton's interpreter.", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        sizes = {s: SIZES[s] for s in args.sizes.split(",")}
    backend = active_backend(device.type)
    if not backend.startswith("triton"):
        print(f"bench_gpu.py: the Triton kernels are not in use for {device} tensors ({backend}); "
              f"install triton (pip install triton)", file=sys.stderr)
        return 2
    timer = make_timer(args.dry_run)
    bw = copy_bandwidth(device, timer, 2**20 if args.dry_run else 2**30)
    result = {
        "device": "cpu (Triton interpreter, dry run)" if args.dry_run else torch.cuda.get_device_name(device),
        "dry_run": args.dry_run, "torch": torch.__version__, "triton": spn_triton.version(),
        "python": platform.python_version(), "backend": backend, "dtype": "float32",
        "layer": "SpatialPropagation() = three_way, merge='max', normalize='clip', raw gates",
        "copy_bandwidth_GBps": bw / 1e9, "rows": [],
    }
    print(f"device: {result['device']}; backend: {backend}; copy bandwidth {bw / 1e9:.1f} GB/s (read+write); "
          "medians (ms)")
    print("| size | gates | pass | triton (ms) | reference (ms) | roofline (ms) | triton / roofline | "
          "reference / triton | target |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for label, shape in sizes.items():
        for cg_name in ("C", "1"):
            result["rows"] += bench_case(label, shape, cg_name, device=device, timer=timer, bw=bw, args=args)
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
