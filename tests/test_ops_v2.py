"""The compiled kernels against the reference on the whole version-2 contract.

Fused normalisation (``normalize``), GSPN's input weight, chunks and ``merge="none"``: outputs
and gradients of ``propagate`` / ``propagate4`` (the C++ kernels) must equal ``propagate_ref`` /
``propagate4_ref`` at realistic sizes; the non-finite rules hold in forward and backward;
``gradcheck`` in float64; the GSPN block rebuilt from its published equations; ``torch.compile``
sees through the ops. Every random case has a fixed seed.
"""
from __future__ import annotations

import itertools
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spn.nn import SpatialPropagation
from spn.ops import MERGES, extension_available, normalize_gates, propagate, propagate4, propagate4_ref, propagate_ref

needs_ext = pytest.mark.skipif(not extension_available(), reason="compiled extension spn._C not importable")

NORMS = (None, "clip", "always", "gspn")
TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}


@pytest.fixture(autouse=True)
def _kernel_backend(monkeypatch):
    monkeypatch.delenv("SPN_BACKEND", raising=False)


def seed_of(*parts) -> int:
    return zlib.crc32(repr(parts).encode()) % 100_000


def make(shape, K, Cg, Cl, *, four=True, dtype=torch.float64, seed=0, gate_scale=1.0):
    """x, raw gates (as a CNN outputs them: centred, not normalised) and an optional input weight."""
    B, C, H, W = shape
    gen = torch.Generator().manual_seed(seed)
    cg = C if Cg == "C" else Cg
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    nd = (4,) if four else ()
    g = torch.randn(B, *nd, K, cg, H, W, generator=gen, dtype=torch.float64) * gate_scale
    lam = None
    if Cl is not None:
        cl = C if Cl == "C" else Cl
        lam = torch.rand(B, *nd, cl, H, W, generator=gen, dtype=torch.float64) + 0.5
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(x), cast(g), cast(lam)


def run(fn, x, g, lam, grad_seed=1):
    """Output and gradients (x, gates, input weight) of ``fn``; unused inputs get zeros."""
    ins = [t.detach().clone().requires_grad_(True) for t in (x, g) + (() if lam is None else (lam,))]
    out = fn(*ins) if lam is not None else fn(*ins, None)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64).to(out.dtype)
    grads = torch.autograd.grad(out, ins, go, allow_unused=True, materialize_grads=True)
    return (out.detach(), *grads)


def assert_all_close(got, want, **tol):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype, (i, a.shape, b.shape, a.dtype, b.dtype)
        torch.testing.assert_close(a, b, **tol, msg=lambda m, i=i: f"tensor {i} (out, gx, gg, gl): {m}")


def four(merge, norm, chunk):
    def f(x, g, lam):
        return propagate4(x, g, merge, normalize=norm, input_weight=lam, chunk=chunk)

    def r(x, g, lam):
        return propagate4_ref(x, g, merge, normalize=norm, input_weight=lam, chunk=chunk)

    return f, r


def one(direction, norm, chunk):
    def f(x, g, lam):
        return propagate(x, g, direction, normalize=norm, input_weight=lam, chunk=chunk)

    def r(x, g, lam):
        return propagate_ref(x, g, direction, normalize=norm, input_weight=lam, chunk=chunk)

    return f, r


# --------------------------------------------------------------------------- every combination, small maps

SMALL = list(itertools.product((1, 3), (1, "C"), NORMS, (None, 1, "C"), (None, 3)))


@needs_ext
@pytest.mark.parametrize("merge", MERGES)
@pytest.mark.parametrize("K,Cg,norm,Cl,chunk", SMALL)
def test_propagate4_every_combination_small(K, Cg, norm, Cl, chunk, merge):
    x, g, lam = make((2, 3, 7, 6), K, Cg, Cl, seed=seed_of(K, Cg, norm, Cl, chunk, merge))
    f, r = four(merge, norm, chunk)
    assert_all_close(run(f, x, g, lam), run(r, x, g, lam), **TOL[torch.float64])


@needs_ext
@pytest.mark.parametrize("direction", range(4))
@pytest.mark.parametrize("K,Cg,norm,Cl,chunk", [c for c in SMALL if c[3] != 1 or c[1] == 1])
def test_propagate_every_combination_small(direction, K, Cg, norm, Cl, chunk):
    x, g, lam = make((2, 3, 5, 8), K, Cg, Cl, four=False, seed=seed_of(direction, K, Cg, norm, Cl, chunk))
    f, r = one(direction, norm, chunk)
    assert_all_close(run(f, x, g, lam), run(r, x, g, lam), **TOL[torch.float64])


# --------------------------------------------------------------------------- realistic sizes

# every value of every argument appears at the realistic sizes; float32, as users run it.
# (K = 1 with "always" is left out here: its gates are +-1 and their gradient is zero up to
# rounding noise, which a relative comparison cannot judge; the float64 tests cover it.)
REALISTIC = [
    # shape, K, Cg, normalize, Cl, chunk, merge
    ((2, 3, 64, 64), 3, "C", "clip", None, None, "max"),
    ((2, 3, 64, 64), 3, 1, "clip", None, None, "max"),
    ((2, 3, 64, 64), 3, "C", "always", None, None, "mean"),
    ((2, 3, 64, 64), 3, 1, "gspn", "C", None, "none"),
    ((2, 3, 64, 64), 1, 1, None, "C", 7, "max"),
    ((1, 4, 128, 96), 3, "C", "gspn", 1, 16, "sum"),
    ((1, 4, 128, 96), 3, "C", None, None, 32, "none"),
    ((1, 4, 128, 96), 1, "C", "clip", 1, None, "mean"),
    ((1, 2, 257, 131), 3, "C", "clip", None, None, "max"),
    ((1, 2, 257, 131), 3, 1, "always", "C", 40, "max"),
]


@needs_ext
@pytest.mark.parametrize("shape,K,Cg,norm,Cl,chunk,merge", REALISTIC,
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_propagate4_realistic_sizes(shape, K, Cg, norm, Cl, chunk, merge):
    x, g, lam = make(shape, K, Cg, Cl, dtype=torch.float32, seed=seed_of(shape, K, Cg, norm, Cl, chunk, merge))
    f, r = four(merge, norm, chunk)
    got, want = run(f, x, g, lam), run(r, x, g, lam)
    # gradients sum over long scans: compare relative to their scale
    for a, b in zip(got, want):
        scale = b.abs().max().item() or 1.0
        torch.testing.assert_close(a, b, atol=2e-5 * scale, rtol=1e-4)


@needs_ext
@pytest.mark.parametrize("direction", range(4))
def test_propagate_realistic_size_each_direction(direction):
    x, g, lam = make((1, 3, 96, 80), 3, "C", "C", four=False, dtype=torch.float32, seed=direction)
    f, r = one(direction, "clip", 24)
    for a, b in zip(run(f, x, g, lam), run(r, x, g, lam)):
        torch.testing.assert_close(a, b, atol=2e-5 * (b.abs().max().item() or 1.0), rtol=1e-4)


# --------------------------------------------------------------------------- non-finite values

def _same_nonfinite(a, b, tol=1e-4):
    """Equal NaN masks, equal infinities, and close finite values."""
    assert torch.equal(a.isnan(), b.isnan()), f"NaN at {(a.isnan() != b.isnan()).nonzero().tolist()[:5]}"
    assert torch.equal(a.isinf(), b.isinf()), f"inf at {(a.isinf() != b.isinf()).nonzero().tolist()[:5]}"
    assert torch.equal(a[a.isinf()], b[b.isinf()])
    fin = a.isfinite()
    torch.testing.assert_close(a[fin], b[fin], atol=tol, rtol=tol)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=["f32", "f64", "bf16"])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("merge", MERGES)
def test_nan_in_gates_forward_and_backward(merge, norm, dtype):
    """A NaN in a used gate reaches the output and the gradients as in the reference (also
    through the max merge: it is never hidden); NaNs in unused gates (first lines, invalid
    neighbours) have no effect."""
    x, g, _ = make((1, 2, 6, 5), 3, "C", None, seed=seed_of(merge, norm), gate_scale=0.3)
    g = g.clone()
    g[0, 1, 1, 0, 2, 2] = float("nan")  # used: right_to_left, slot 1, inside
    g[0, 3, 0, 1, 4, 1] = float("nan")  # used: bottom_to_top, slot 0, column 1
    g[0, 0, :, 0, :, 0] = float("nan")  # first column of left_to_right: never read
    if norm in (None, "gspn"):  # invalid neighbours: dropped before any sum
        g[0, 2, 0, :, :, 0] = float("nan")  # top_to_bottom slot 0 at column 0
        g[0, 1, 2, :, -1, :] = float("nan")  # right_to_left slot 2 at the last row
    x, g = x.to(dtype), g.to(dtype)
    f, r = four(merge, norm, None)
    got, want = run(f, x, g, None), run(r, x, g, None)
    assert got[0].isnan().any(), "the NaN gate must reach the output"
    for a, b in zip(got, want):
        _same_nonfinite(a.double(), b.double(), tol=2e-2 if dtype == torch.bfloat16 else 1e-4)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("norm", [None, "clip", "always"])
@pytest.mark.parametrize("merge", MERGES)
def test_inf_in_x_forward_and_backward(merge, norm, dtype):
    """+inf in x with zero gates stays inf ((1 - 0) * inf), never becomes NaN, and spreads as
    in the reference. (With "gspn" the gates of a pixel sum to one, so (1 - s) * inf is NaN or
    inf by rounding; its NaN rule is covered by the NaN test.)"""
    x, g, _ = make((1, 2, 6, 5), 3, "C", None, seed=seed_of("inf", merge, norm), gate_scale=0.3)
    x, g = x.clone(), g.clone()
    x[0, 1, 3, 3] = float("inf")
    g[0, :, :, 1, 3, 3] = 0.0
    x[0, 0, 0, 0] = float("-inf")
    x, g = x.to(dtype), g.to(dtype)
    f, r = four(merge, norm, None)
    got, want = run(f, x, g, None), run(r, x, g, None)
    if merge == "none":
        assert torch.isposinf(got[0][0, :, 1, 3, 3]).all()
    for a, b in zip(got, want):
        _same_nonfinite(a, b)


@needs_ext
def test_max_merge_keeps_nan_from_any_direction():
    """The old kernel's `o = h > o ? h : o` dropped a NaN of directions 1..3; the max is
    NaN-propagating now, like torch.amax."""
    x = torch.randn(1, 1, 4, 4)
    g = torch.full((1, 4, 1, 1, 4, 4), 0.2)
    for d in (1, 2, 3):
        gd = g.clone()
        gd[0, d, 0, 0, 2, 2] = float("nan")
        out = propagate4(x, gd, "max")
        ref = propagate4_ref(x, gd, "max")
        assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().any()


# --------------------------------------------------------------------------- gradcheck (float64)

@needs_ext
@pytest.mark.parametrize("norm,K,Cg,Cl,chunk,merge", [
    (None, 3, "C", None, None, "sum"),
    ("clip", 3, "C", "C", 2, "max"),
    ("clip", 3, 1, 1, None, "mean"),
    ("always", 3, 1, 1, None, "mean"),
    ("gspn", 1, 1, None, 2, "none"),
    ("gspn", 3, "C", "C", 2, "max"),
])
def test_gradcheck_fused(norm, K, Cg, Cl, chunk, merge):
    x, g, lam = make((1, 2, 3, 3), K, Cg, Cl, seed=seed_of("gc", norm, K, Cg, Cl, chunk, merge), gate_scale=0.8)
    ins = tuple(t.clone().requires_grad_(True) for t in ((x, g) if lam is None else (x, g, lam)))

    def f(*a):
        return propagate4(a[0], a[1], merge, normalize=norm, input_weight=a[2] if len(a) > 2 else None, chunk=chunk)

    assert torch.autograd.gradcheck(f, ins, eps=1e-6, atol=1e-6)


@needs_ext
@pytest.mark.parametrize("norm", ["clip", "gspn"])
def test_gradcheck_one_direction_fused(norm):
    x, g, lam = make((1, 2, 3, 4), 3, 1, "C", four=False, seed=7, gate_scale=0.8)
    ins = tuple(t.clone().requires_grad_(True) for t in (x, g, lam))
    assert torch.autograd.gradcheck(
        lambda a, b, c: propagate(a, b, "bottom_to_top", normalize=norm, input_weight=c, chunk=2), ins,
        eps=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- precision, layouts, determinism

@needs_ext
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 4e-3)], ids=["bf16", "f16"])
def test_half_precision_accumulates_in_float32(dtype, tol):
    x, g, lam = make((1, 3, 40, 36), 3, "C", "C", dtype=torch.float32, seed=3)
    xh, gh, lh = x.to(dtype), g.to(dtype), lam.to(dtype)
    out = propagate4(xh, gh, "max", normalize="clip", input_weight=lh, chunk=16)
    assert out.dtype == dtype
    want = propagate4_ref(xh.float(), gh.float(), "max", normalize="clip", input_weight=lh.float(), chunk=16)
    torch.testing.assert_close(out.float(), want, atol=tol * want.abs().max().item(), rtol=tol)


@needs_ext
def test_non_contiguous_v2_inputs():
    x, g, lam = make((2, 3, 9, 7), 3, "C", "C", seed=8)
    xc = x.to(memory_format=torch.channels_last)
    gt = g.transpose(4, 5).contiguous().transpose(4, 5)
    lt = lam.transpose(3, 4).contiguous().transpose(3, 4)
    assert not (xc.is_contiguous() or gt.is_contiguous() or lt.is_contiguous())
    f, r = four("max", "gspn", 4)
    assert_all_close(run(f, xc, gt, lt), run(r, x, g, lam), **TOL[torch.float64])


@needs_ext
def test_shared_gradients_deterministic_across_thread_counts():
    """Shared gates and input weights reduce their gradient over channels in a fixed order."""
    x, g, lam = make((2, 7, 12, 10), 3, 1, 1, dtype=torch.float32, seed=9)
    f, _ = four("max", "clip", None)
    before = torch.get_num_threads()
    try:
        runs = [run(f, x, g, lam)]
        torch.set_num_threads(1)
        runs.append(run(f, x, g, lam))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


# --------------------------------------------------------------------------- property test

@st.composite
def v2_case(draw):
    return dict(
        B=draw(st.integers(1, 2)), C=draw(st.integers(1, 3)), H=draw(st.integers(1, 6)), W=draw(st.integers(1, 6)),
        K=draw(st.sampled_from([1, 3])), shared=draw(st.booleans()), norm=draw(st.sampled_from(NORMS)),
        Cl=draw(st.sampled_from([None, 1, "C"])), chunk=draw(st.sampled_from([None, 1, 2, 5])),
        merge=draw(st.sampled_from(MERGES)), seed=draw(st.integers(0, 2**31 - 1)),
    )


@needs_ext
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(v2_case())
def test_property_v2_kernel_equals_reference(c):
    x, g, lam = make((c["B"], c["C"], c["H"], c["W"]), c["K"], 1 if c["shared"] else "C", c["Cl"], seed=c["seed"])
    f, r = four(c["merge"], c["norm"], c["chunk"])
    assert_all_close(run(f, x, g, lam), run(r, x, g, lam), **TOL[torch.float64])


# --------------------------------------------------------------------------- module and compile

@needs_ext
@pytest.mark.parametrize("norm,chunk,merge", [("clip", None, "max"), ("gspn", 8, "none"), (None, 3, "mean")])
def test_module_equals_function(norm, chunk, merge):
    x, g, lam = make((2, 3, 10, 9), 3, "C", "C", dtype=torch.float32, seed=10)
    layer = SpatialPropagation("three_way", merge=merge, normalize=norm, chunk=chunk)
    flat_g = g.reshape(2, 4 * 3 * 3, 10, 9)
    flat_l = lam.reshape(2, 4 * 3, 10, 9)
    want = propagate4(x, g, merge, normalize=norm, input_weight=lam, chunk=chunk)
    torch.testing.assert_close(layer(x, flat_g, flat_l), want, atol=0, rtol=0)
    torch.testing.assert_close(layer(x, g, lam), want, atol=0, rtol=0)
    assert "chunk" in repr(layer) if chunk else "chunk" not in repr(layer)


@needs_ext
def test_torch_compile_fullgraph_inductor():
    """torch.compile sees through the custom ops: no graph break, the same numbers, forward and
    backward."""
    torch._dynamo.reset()
    layer = SpatialPropagation()
    x, g, _ = make((1, 3, 12, 10), 3, "C", None, dtype=torch.float32, seed=11)
    raw = g.reshape(1, 36, 12, 10)

    def f(a, b):
        return layer(a, b).square().sum()

    compiled = torch.compile(f, backend="inductor", fullgraph=True)
    xa, ra = x.clone().requires_grad_(True), raw.clone().requires_grad_(True)
    xb, rb = x.clone().requires_grad_(True), raw.clone().requires_grad_(True)
    # no on-disk caches: their keys do not cover the ops' fake implementations, so a graph cached
    # before a change of an op's outputs would be replayed with the old shapes
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(
            enable_autograd_cache=False):
        got = compiled(xa, ra)
        got.backward()
    want = f(xb, rb)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ra.grad, rb.grad, rtol=1e-5, atol=1e-5)
    explained = torch._dynamo.explain(f)(x, raw)
    assert explained.graph_break_count == 0 and explained.graph_count == 1


# --------------------------------------------------------------------------- GSPN's block, from its equations

def _gspn_block_loop(x, w_raw, lam, u, D, merge_w):
    """GSPN's propagation block written from its published equations, with plain loops:
    per direction, gates = sigmoid(w) normalised over the valid neighbours (stability-context
    condition), h_t = lam_t * x_t + sum_j g_j h_{t-1}[j]; y = u * h + D * x; the four y merged
    by a 1x1 convolution over the stacked directions."""
    B, C, H, W = x.shape
    ys = []
    for d in range(4):
        horizontal, rev = d < 2, d in (1, 3)
        L, n = (W, H) if horizontal else (H, W)
        h = {}  # (row, col) -> (B, C) values (no in-place writes: autograd follows every step)

        def at(t, k):  # (row, col) of lateral index k on scan line t
            line = L - 1 - t if rev else t
            return (k, line) if horizontal else (line, k)

        for t in range(L):
            for k in range(n):
                r, c = at(t, k)
                val = lam[:, d, :, r, c] * x[:, :, r, c]
                if t > 0:
                    nbrs = [k - 1, k, k + 1]
                    sig = [torch.sigmoid(w_raw[:, d, j, :, r, c]) if 0 <= nb < n else None for j, nb in enumerate(nbrs)]
                    tot = sum(s for s in sig if s is not None)
                    for j, nb in enumerate(nbrs):
                        if sig[j] is not None:
                            pr, pc = at(t - 1, nb)
                            val = val + sig[j] / tot * h[pr, pc]
                h[r, c] = val
        hmap = torch.stack([torch.stack([h[r, c] for c in range(W)], dim=-1) for r in range(H)], dim=-2)
        ys.append(u[:, d] * hmap + D[None, :, None, None] * x)
    stacked = torch.cat(ys, dim=1)  # (B, 4C, H, W): direction-major
    return torch.einsum("oi,bihw->bohw", merge_w, stacked)


@needs_ext
def test_gspn_block_from_its_equations():
    gen = torch.Generator().manual_seed(12)
    B, C, H, W = 1, 2, 5, 4
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    w_raw = torch.randn(B, 4, 3, C, H, W, generator=gen, dtype=torch.float64)
    lam = torch.rand(B, 4, C, H, W, generator=gen, dtype=torch.float64)
    u = torch.randn(B, 4, C, H, W, generator=gen, dtype=torch.float64)
    D = torch.randn(C, generator=gen, dtype=torch.float64)
    merge_w = torch.randn(C, 4 * C, generator=gen, dtype=torch.float64)

    def ours(x_, w_):
        hs = propagate4(x_, w_, "none", normalize="gspn", input_weight=lam)  # (B, 4, C, H, W)
        ys = u * hs + D[None, None, :, None, None] * x_[:, None]
        return torch.nn.functional.conv2d(ys.reshape(B, 4 * C, H, W), merge_w[:, :, None, None])

    xa, wa = x.clone().requires_grad_(True), w_raw.clone().requires_grad_(True)
    xb, wb = x.clone().requires_grad_(True), w_raw.clone().requires_grad_(True)
    got = ours(xa, wa)
    want = _gspn_block_loop(xb, wb, lam, u, D, merge_w)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(wa.grad, wb.grad, atol=1e-12, rtol=1e-12)


def test_normalize_gates_is_the_readable_twin():
    """The fused modes equal the unfused composition propagate(x, normalize_gates(r))."""
    x, g, _ = make((1, 2, 6, 5), 3, "C", None, seed=13)
    for norm in ("clip", "always"):
        torch.testing.assert_close(propagate4(x, g, "mean", normalize=norm),
                                   propagate4(x, normalize_gates(g, norm), "mean"), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(propagate4(x, g, "sum", normalize="gspn"),
                               propagate4(x, normalize_gates(g, "gspn"), "sum"), atol=1e-12, rtol=1e-12)


# --------------------------------------------------------------------------- documentation

@pytest.mark.parametrize("name", ["spn.ops.propagation", "spn.ops.reference", "spn.ops.normalize",
                                  "spn.nn.propagation"])
def test_docstring_examples_run(name):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0, f"{res.failed} of {res.attempted} examples of {name} failed"


def test_readme_operator_example_runs():
    """The README's operator example (its shapes included) runs as written."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## The operator", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "README.md: The operator", "exec"), scope)
    assert scope["h"].shape == (2, 21, 64, 64) and scope["out"].shape == (2, 21, 64, 64)
    assert scope["hs"].shape == (2, 4, 21, 64, 64)


@needs_ext
def test_avx2_and_baseline_kernels_are_bit_identical(tmp_path):
    """The AVX2 build of the kernels only widens the vectors: with SPN_NO_AVX2=1 (the baseline
    x86-64 build) every output and gradient is bit-identical."""
    import os
    import subprocess
    import sys

    code = (
        "import torch, sys, spn.ops as o\n"
        "from spn.nn import SpatialPropagation\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.randn(2, 5, 33, 29, generator=g, requires_grad=True)\n"
        "r = torch.randn(2, 4 * 3 * 5, 33, 29, generator=g, requires_grad=True)\n"
        "lam = torch.rand(2, 4, 1, 33, 29, generator=g, requires_grad=True)\n"
        "outs = []\n"
        "for norm, l in (('clip', None), ('gspn', lam), (None, None)):\n"
        "    y = SpatialPropagation(normalize=norm, chunk=9)(x, r * (0.2 if norm is None else 1), l)\n"
        "    gs = torch.autograd.grad(y.square().sum(), [t for t in (x, r, l) if t is not None])\n"
        "    outs += [y.detach(), *gs]\n"
        "torch.save({'isa': torch.ops.spn.kernel_isa(), 'outs': outs}, sys.argv[1])\n"
    )
    res = {}
    for flag in ("0", "1"):
        env = {k: v for k, v in os.environ.items() if k not in ("SPN_NO_AVX2", "SPN_BACKEND")}
        if flag == "1":
            env["SPN_NO_AVX2"] = "1"
        path = tmp_path / f"out{flag}.pt"
        proc = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        res[flag] = torch.load(path)
    assert res["1"]["isa"] == "sse2"
    if res["0"]["isa"] != "avx2":
        pytest.skip("this CPU has no AVX2: only the baseline kernels exist here")
    for a, b in zip(res["0"]["outs"], res["1"]["outs"]):
        assert torch.equal(a, b)
