"""The Triton kernels (``spn.ops.triton``) against the reference, run in Triton's interpreter.

Marked ``triton_interp``: they run in their own pytest process with ``SPN_BACKEND=triton
TRITON_INTERPRET=1`` set before triton is imported (``make test`` runs that job after the default
one, which deselects the marker)::

    SPN_BACKEND=triton TRITON_INTERPRET=1 python -m pytest -m triton_interp tests/test_triton_interp.py

There the Triton implementations are the CPU kernels of the ``torch.ops.spn`` ops, so
``spn.ops.propagate`` / ``propagate4`` on CPU tensors run them through the same ops, fake
implementations and autograd formulas as CUDA tensors do.

Every comparison is with ``propagate_ref`` / ``propagate4_ref`` (themselves checked against a
scalar oracle of the spec in ``test_reference_v2.py``): outputs and the gradients of every input,
for every direction, K, Cg, normalize mode, input weight, chunk and merge, odd sizes,
non-contiguous inputs, NaN rules and half dtypes. The interpreter is slow: sizes stay tiny.
"""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from spn.nn import SpatialPropagation
from spn.ops import active_backend, normalize_gates, propagate, propagate4, propagate4_ref, propagate_ref
from spn.ops import _backend
from spn.ops._codes import MERGE_CODES

INTERPRETER_JOB = os.environ.get("SPN_BACKEND", "").lower() == "triton" and os.environ.get("TRITON_INTERPRET") == "1"
pytestmark = [
    pytest.mark.triton_interp,
    pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                       reason="triton is not installed (make install pins triton==3.9.0)"),
    pytest.mark.skipif(not INTERPRETER_JOB, reason="needs SPN_BACKEND=triton TRITON_INTERPRET=1 set before "
                                                   "import: run with -m triton_interp (make test does)"),
]
OPS = ("propagate_fwd", "propagate_bwd", "propagate4_fwd", "propagate4_bwd")


@pytest.fixture(scope="module", autouse=True)
def ops():
    """The Triton kernels' module, loaded in interpreter mode, its kernels the ops' CPU kernels."""
    mod = _backend.triton_ops()
    assert mod is not None and mod.INTERPRETING, "the Triton kernels must load in interpreter mode"
    return mod


DIRS = ("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top")
NORMS = (None, "clip", "always", "gspn")
F64 = dict(atol=1e-10, rtol=1e-10)


def make(shape, K, Cg, Cl=None, four=False, seed=0, dtype=torch.float64, gate_scale=0.8):
    B, C, H, W = shape
    gen = torch.Generator().manual_seed(seed)
    cg = C if Cg == "C" else Cg
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    lead = (B, 4) if four else (B,)
    g = torch.randn(*lead, K, cg, H, W, generator=gen, dtype=torch.float64) * gate_scale
    lam = None
    if Cl is not None:
        cl = C if Cl == "C" else Cl
        lam = torch.rand(*lead, cl, H, W, generator=gen, dtype=torch.float64) + 0.2
    cast = (lambda t: t) if dtype == torch.float64 else (lambda t: None if t is None else t.to(dtype))
    return cast(x), cast(g), cast(lam)


def run(fn, x, g, lam, upstream_seed=1, **kw):
    """Output and the gradients of every input under a fixed random upstream gradient."""
    ins = [t.detach().clone().requires_grad_(True) for t in (x, g) + ((lam,) if lam is not None else ())]
    out = fn(ins[0], ins[1], input_weight=ins[2] if lam is not None else None, **kw)
    gen = torch.Generator().manual_seed(upstream_seed)
    up = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype)
    # a map of one scan line never reads its gates: the reference leaves them out of the graph
    grads = torch.autograd.grad(out, ins, up, allow_unused=True, materialize_grads=True)
    return out, list(grads)


def assert_triton(out):
    """The public API really ran the op (not the reference), whose CPU kernels are the Triton ones
    (:func:`test_the_ops_cpu_kernels_are_the_triton_ones`)."""
    assert "spn_propagate" in out.grad_fn.name(), out.grad_fn.name()


def test_the_ops_cpu_kernels_are_the_triton_ones():
    """Registered from Python over the C++ ones, which the dispatcher lists as inactive."""
    for name in OPS:
        active = [ln for ln in torch._C._dispatch_dump(f"spn::{name}").splitlines() if ln.startswith("CPU:")]
        assert len(active) == 1 and "propagation.cpp" not in active[0], (name, active)


def compare(fast, ref, tol=F64):
    (out, grads), (rout, rgrads) = fast, ref
    torch.testing.assert_close(out, rout, equal_nan=True, **tol)
    for a, b, name in zip(grads, rgrads, ("x", "gates", "input_weight")):
        torch.testing.assert_close(a, b, equal_nan=True, msg=lambda m: f"grad of {name}: {m}", **tol)


def test_backend_is_the_interpreted_triton_kernels():
    assert active_backend("cpu").startswith("triton") and "interpreter" in active_backend("cpu")


# --------------------------------------------------------------------------- one direction

SHAPES = ((1, 3, 5, 7), (2, 2, 4, 5), (1, 2, 1, 6), (1, 2, 6, 1), (1, 1, 13, 6))
EXTRAS = ((None, None), ("C", None), (1, 2), (None, 3), ("C", 1))  # (Cl, chunk)


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("K,Cg", [(1, 1), (1, "C"), (3, 1), (3, "C")])
@pytest.mark.parametrize("normalize", NORMS)
def test_one_direction_matches_reference(direction, K, Cg, normalize):
    i = DIRS.index(direction) + 4 * (K == 3) + 2 * (Cg == 1) + 8 * NORMS.index(normalize)
    shape = SHAPES[i % len(SHAPES)]
    Cl, chunk = EXTRAS[(i // 3) % len(EXTRAS)]
    x, g, lam = make(shape, K, Cg, Cl, seed=i)
    kw = dict(direction=direction, normalize=normalize, chunk=chunk)
    fast = run(lambda a, b, **k: propagate(a, b, k.pop("direction"), **k), x, g, lam, **kw)
    assert_triton(fast[0])
    ref = run(lambda a, b, **k: propagate_ref(a, b, k.pop("direction"), **k), x, g, lam, **kw)
    compare(fast, ref)


# --------------------------------------------------------------------------- four directions


@pytest.mark.parametrize("merge", ["max", "mean", "sum", "none"])
@pytest.mark.parametrize("normalize", NORMS)
def test_four_directions_match_reference(merge, normalize):
    i = ["max", "mean", "sum", "none"].index(merge) + 4 * NORMS.index(normalize)
    K, Cg = [(3, "C"), (3, 1), (1, "C"), (1, 1)][i % 4]
    Cl, chunk = EXTRAS[(i // 2) % len(EXTRAS)]
    shape = ((1, 3, 5, 7), (1, 2, 6, 4), (2, 2, 3, 5))[i % 3]
    x, g, lam = make(shape, K, Cg, Cl, four=True, seed=100 + i)
    kw = dict(merge=merge, normalize=normalize, chunk=chunk)
    fast = run(lambda a, b, **k: propagate4(a, b, k.pop("merge"), **k), x, g, lam, **kw)
    assert_triton(fast[0])
    ref = run(lambda a, b, **k: propagate4_ref(a, b, k.pop("merge"), **k), x, g, lam, **kw)
    assert fast[0].shape == ref[0].shape
    compare(fast, ref)


@pytest.mark.parametrize("shape", [(1, 2, 13, 6), (1, 2, 1, 9), (1, 2, 9, 1), (1, 1, 1, 1), (2, 5, 3, 2)])
def test_odd_sizes(shape):
    x, g, lam = make(shape, 3, 1, "C", four=True, seed=sum(shape))
    kw = dict(merge="max", normalize="clip", chunk=4)
    compare(run(lambda a, b, **k: propagate4(a, b, k.pop("merge"), **k), x, g, lam, **kw),
            run(lambda a, b, **k: propagate4_ref(a, b, k.pop("merge"), **k), x, g, lam, **kw))


def test_spatial_propagation_module_default():
    """The layer users call (raw CNN gates, normalize="clip", max merge) on the Triton path."""
    layer = SpatialPropagation()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    raw = torch.randn(2, 4 * 3 * 3, 6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    out = layer(x, raw)
    assert_triton(out)
    gx, gr = torch.autograd.grad(out.sum(), (x, raw))
    want = propagate4_ref(x, normalize_gates(raw.reshape(2, 4, 3, 3, 6, 5), "clip"), "max")
    wx, wr = torch.autograd.grad(want.sum(), (x, raw))
    for a, b in ((out, want), (gx, wx), (gr, wr)):
        torch.testing.assert_close(a, b, **F64)


# --------------------------------------------------------------------------- strides


def test_non_contiguous_inputs_and_upstream_gradient():
    B, C, H, W = 2, 3, 5, 4
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64).to(memory_format=torch.channels_last)
    # gates as a permuted view of a differently laid out tensor; input weight expanded over channels
    g = torch.randn(B, 4, W, H, C, 3, generator=gen, dtype=torch.float64).permute(0, 1, 5, 4, 3, 2) * 0.7
    lam = (torch.rand(B, 4, 1, H, W, generator=gen, dtype=torch.float64) + 0.5).expand(B, 4, C, H, W)
    assert not g.is_contiguous() and not x.is_contiguous() and lam.stride(2) == 0
    for merge in ("max", "none"):
        xs, gs, ls = (t.detach().requires_grad_(True) for t in (x, g, lam))
        out = propagate4(xs, gs, merge, normalize="gspn", input_weight=ls, chunk=3)
        assert_triton(out)
        up = torch.randn(out.shape[::-1], generator=gen, dtype=torch.float64).permute(*range(out.dim() - 1, -1, -1))
        grads = torch.autograd.grad(out, (xs, gs, ls), up)  # a non-contiguous upstream gradient
        xr, gr, lr = (t.detach().requires_grad_(True) for t in (x, g, lam))
        want = propagate4_ref(xr, gr, merge, normalize="gspn", input_weight=lr, chunk=3)
        wgrads = torch.autograd.grad(want, (xr, gr, lr), up)
        torch.testing.assert_close(out, want, **F64)
        for a, b in zip(grads, wgrads):
            torch.testing.assert_close(a, b, **F64)


def test_expanded_upstream_gradient_of_sum():
    x, g, _ = make((1, 2, 4, 5), 3, "C", four=True, seed=4)
    xs, gs = x.requires_grad_(True), g.requires_grad_(True)
    gx, gg = torch.autograd.grad(propagate4(xs, gs, "mean").sum(), (xs, gs))  # upstream: expanded ones
    wx, wg = torch.autograd.grad(propagate4_ref(xs, gs, "mean").sum(), (xs, gs))
    torch.testing.assert_close(gx, wx, **F64)
    torch.testing.assert_close(gg, wg, **F64)


# --------------------------------------------------------------------------- shared-gate reduction


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "deterministic"])
def test_shared_gates_over_many_channel_blocks(monkeypatch, deterministic, ops):
    """Cg = 1 and Cl = 1 gradients summed over several channel blocks (atomics, or per-block
    partials in deterministic mode)."""
    monkeypatch.setattr(ops, "TILE", 8)  # 8-lane lines -> one channel per program -> 5 blocks
    x, g, lam = make((1, 5, 3, 6), 3, 1, 1, four=True, seed=21)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        fast = run(lambda a, b, **k: propagate4(a, b, "sum", **k), x, g, lam, normalize="clip")
    finally:
        torch.use_deterministic_algorithms(was)
    ref = run(lambda a, b, **k: propagate4_ref(a, b, "sum", **k), x, g, lam, normalize="clip")
    compare(fast, ref)


# --------------------------------------------------------------------------- non-finite values


@pytest.mark.parametrize("normalize", [None, "gspn"])
def test_nan_in_unused_gates_never_leaks(normalize):
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    g = torch.full((1, 3, 1, 4, 4), 0.2, dtype=torch.float64)
    g[0, 0, 0, :, 0] = float("nan")  # slot 0 at column 0: no neighbour for top_to_bottom
    g[0, 2, 0, :, 3] = float("inf")  # slot 2 at the last column
    g[0, :, 0, 0, :] = float("nan")  # the first line: never read
    gg = g.clone().requires_grad_(True)
    h = propagate(x, gg, "top_to_bottom", normalize=normalize)
    assert_triton(h)
    assert torch.isfinite(h).all()
    h.sum().backward()
    assert torch.isfinite(gg.grad).all() and (gg.grad[0, :, 0, 0] == 0).all()
    gr = g.clone().requires_grad_(True)
    want = propagate_ref(x, gr, "top_to_bottom", normalize=normalize)
    want.sum().backward()
    torch.testing.assert_close(h, want, **F64)
    torch.testing.assert_close(gg.grad, gr.grad, **F64)


def test_nan_in_an_invalid_slot_spreads_under_clip_as_in_the_reference():
    """For "clip" the sum runs over all K slots, valid or not (the spec), so the NaN is used."""
    x = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    g = torch.full((1, 3, 1, 3, 4), 0.2, dtype=torch.float64)
    g[0, 0, 0, 1, 0] = float("nan")
    fast, ref = (f(x, g, "top_to_bottom", normalize="clip") for f in (propagate, propagate_ref))
    assert torch.isnan(fast).any()
    torch.testing.assert_close(fast, ref, equal_nan=True, **F64)


def test_nan_in_a_used_gate_reaches_output_and_max_merge():
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    g = torch.full((1, 4, 3, 1, 3, 3), 0.2, dtype=torch.float64)
    g[0, 3, 1, 0, 1, 1] = float("nan")  # bottom_to_top, centre pixel, used
    xs, gs = x.clone().requires_grad_(True), g.clone().requires_grad_(True)
    out = propagate4(xs, gs, "max")
    assert torch.isnan(out[0, 0, 1, 1]) and torch.isnan(out[0, 0, 0, 1]) and torch.isfinite(out[0, 0, 2]).all()
    out.sum().backward()
    xr, gr = x.clone().requires_grad_(True), g.clone().requires_grad_(True)
    want = propagate4_ref(xr, gr, "max")
    want.sum().backward()
    torch.testing.assert_close(out, want, equal_nan=True, **F64)
    torch.testing.assert_close(xs.grad, xr.grad, equal_nan=True, **F64)
    torch.testing.assert_close(gs.grad, gr.grad, equal_nan=True, **F64)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, in the interpreter
def test_inf_in_x_with_zero_gate_follows_the_literal_recurrence():
    x = torch.zeros(1, 1, 1, 3, dtype=torch.float64)
    x[0, 0, 0, 1] = float("inf")
    g = torch.zeros(1, 1, 1, 1, 3, dtype=torch.float64)
    h = propagate(x, g, "left_to_right").flatten()
    assert h[0] == 0 and h[1] == float("inf") and torch.isnan(h[2])  # 0 * inf in the spec's sum


def test_max_merge_gradient_goes_to_first_nan_then_first_max():
    hs = torch.tensor([1.0, float("nan"), 3.0, float("nan")], dtype=torch.float64)
    lam = hs.view(1, 4, 1, 1, 1).clone().requires_grad_(True)
    g = torch.zeros(1, 4, 1, 1, 1, 1, dtype=torch.float64)
    out = propagate4(torch.ones(1, 1, 1, 1, dtype=torch.float64), g, "max", input_weight=lam)
    assert torch.isnan(out).all()
    out.sum().backward()
    assert lam.grad.flatten().tolist()[1] == 1.0 and lam.grad.flatten()[[0, 2, 3]].eq(0).all()
    # ties without NaN: the first direction in table order
    lam2 = torch.tensor([2.0, 5.0, 5.0, 1.0], dtype=torch.float64).view(1, 4, 1, 1, 1).requires_grad_(True)
    propagate4(torch.ones(1, 1, 1, 1, dtype=torch.float64), g, "max", input_weight=lam2).sum().backward()
    assert lam2.grad.flatten().tolist() == [0.0, 1.0, 0.0, 0.0]


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("four", [False, True], ids=["propagate", "propagate4"])
def test_low_precision_accumulates_in_float32(dtype, four):
    """Inputs in ``dtype``, the result in ``dtype``, computed in float32: equal to the float32
    computation on the same (rounded) inputs, to the output dtype's rounding."""
    x, g, lam = make((1, 3, 9, 6), 3, 1 if four else "C", "C", four=four, seed=31, dtype=dtype)
    if four:
        fast = run(lambda a, b, **k: propagate4(a, b, "mean", **k), x, g, lam, normalize="clip")
        ref = run(lambda a, b, **k: propagate4_ref(a, b, "mean", **k), x.float(), g.float(), lam.float(),
                  normalize="clip")
    else:
        fast = run(lambda a, b, **k: propagate(a, b, 2, **k), x, g, lam, normalize="gspn", chunk=4)
        ref = run(lambda a, b, **k: propagate_ref(a, b, 2, **k), x.float(), g.float(), lam.float(),
                  normalize="gspn", chunk=4)
    assert fast[0].dtype == dtype and all(t.dtype == dtype for t in fast[1])
    eps = torch.finfo(dtype).eps
    tol = dict(atol=4 * eps, rtol=2 * eps)
    torch.testing.assert_close(fast[0].float(), ref[0].to(dtype).float(), **tol)
    for a, b in zip(fast[1], ref[1]):
        scale = b.abs().max().item()
        torch.testing.assert_close(a.float(), b.to(dtype).float(), atol=4 * eps * scale, rtol=2 * eps)


# --------------------------------------------------------------------------- torch.library


def test_opcheck_forward_and_backward_ops():
    x, g, lam = make((1, 2, 4, 3), 3, "C", 1, four=True, seed=41)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    m_max, m_none = MERGE_CODES["max"], MERGE_CODES["none"]
    fwd, fwd4 = torch.ops.spn.propagate_fwd.default, torch.ops.spn.propagate4_fwd.default
    for op, args in [
        (fwd, (x, g[:, 0], None, 2, 1, 0)),  # one direction, clip
        (fwd4, (x, g, lam, m_max, 3, 2, True)),  # four, gspn, chunk 2, max
        (fwd4, (x.float(), g.float(), None, m_none, 0, 0, True)),  # four, merge none, float32
        (fwd4, (x, g, None, MERGE_CODES["mean"], 1, 0, False)),  # four, mean, no saved maps
        (fwd, (x.half(), g[:, 1].half(), lam[:, 1].half(), 1, 2, 0)),  # one direction in half precision
    ]:
        torch.library.opcheck(op, args, test_utils=utils)
    out, hs = fwd4(x, g, lam, m_max, 3, 2, True)
    torch.library.opcheck(torch.ops.spn.propagate4_bwd.default, (torch.ones_like(out), x, g, lam, hs, m_max, 3, 2),
                          test_utils=("test_schema", "test_faketensor"))
    h = fwd(x, g[:, 0], None, 2, 1, 0)
    torch.library.opcheck(torch.ops.spn.propagate_bwd.default, (torch.ones_like(h), x, g[:, 0], None, h, 2, 1, 0),
                          test_utils=("test_schema", "test_faketensor"))


def test_torch_compile_traces_the_op():
    x, g, _ = make((1, 2, 4, 5), 3, "C", four=True, seed=43)
    fn = torch.compile(lambda a, b: propagate4(a, b, "max", normalize="clip") * 2, backend="aot_eager",
                       fullgraph=True)
    xs, gs = x.requires_grad_(True), g.requires_grad_(True)
    out = fn(xs, gs)
    gx, gg = torch.autograd.grad(out.sum(), (xs, gs))
    want = propagate4_ref(xs, gs, "max", normalize="clip") * 2
    wx, wg = torch.autograd.grad(want.sum(), (xs, gs))
    for a, b in ((out, want), (gx, wx), (gg, wg)):
        torch.testing.assert_close(a, b, **F64)


def test_double_backward_says_what_to_use():
    x, g, _ = make((1, 1, 3, 3), 1, 1, seed=5)
    xs = x.requires_grad_(True)
    (gx,) = torch.autograd.grad(propagate(xs, g, 0).sum(), xs, create_graph=True)
    with pytest.raises(RuntimeError, match="propagate_ref"):
        gx.sum().backward()


def test_validation_still_runs_before_the_kernels():
    x = torch.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match="Cg = 1"):
        propagate(x, torch.rand(1, 3, 3, 3, 3), 0)
    with pytest.raises(ValueError, match="unknown merge"):
        propagate4(x, torch.rand(1, 4, 3, 2, 3, 3), "median")
