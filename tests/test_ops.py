"""The compiled propagation kernels against the pure-PyTorch reference.

Outputs and gradients of ``spn.ops.propagate`` / ``propagate4`` (which dispatch to
``torch.ops.spn.*`` when the extension is loaded) must equal ``propagate_ref`` /
``propagate4_ref`` for every direction, connection (K), gate sharing (Cg), odd shapes,
dtypes, memory layouts; plus gradcheck and ``torch.library.opcheck`` of the custom ops.
"""
from __future__ import annotations

import zlib

import pytest
import torch

from spn.ops import (
    DIRECTIONS,
    MERGES,
    extension_available,
    normalize_gates,
    propagate,
    propagate4,
    propagate4_ref,
    propagate_ref,
)

needs_ext = pytest.mark.skipif(not extension_available(), reason="compiled extension spn._C not importable")

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}

# (B, C, H, W): a single pixel, one row, one column, H != W both ways, batch > 1
SHAPES = [(1, 2, 1, 1), (1, 3, 1, 6), (2, 2, 6, 1), (2, 3, 5, 7), (3, 2, 7, 4)]


@pytest.fixture(autouse=True)
def _kernel_backend(monkeypatch):
    """These tests compare the kernel with the reference: never let SPN_BACKEND force it off."""
    monkeypatch.delenv("SPN_BACKEND", raising=False)


def stable_seed(*parts) -> int:
    """A seed derived from the test's parameters that is the same in every run (``hash()`` of a
    string changes with PYTHONHASHSEED)."""
    return zlib.crc32(repr(parts).encode()) % 10_000


def make_case(shape, K, Cg, dtype=torch.float64, seed=0, n_dirs=None, scale=0.6):
    """Random ``x`` (B, C, H, W) and normalised gates (B, [n_dirs,] K, Cg, H, W)."""
    B, C, H, W = shape
    gen = torch.Generator().manual_seed(seed)
    cg = C if Cg == "C" else Cg
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    gshape = (B, K, cg, H, W) if n_dirs is None else (B, n_dirs, K, cg, H, W)
    g = (torch.rand(gshape, generator=gen, dtype=torch.float64) * 2 - 1) * scale
    g = normalize_gates(g, "clip")
    return x.to(dtype), g.to(dtype)


def grads(fn, x, g, grad_out):
    x = x.detach().clone().requires_grad_(True)
    g = g.detach().clone().requires_grad_(True)
    out = fn(x, g)
    # a single scan line never uses its gates: the reference then has no graph edge to them
    gx, gg = torch.autograd.grad(out, (x, g), grad_out, allow_unused=True, materialize_grads=True)
    return out.detach(), gx, gg


def assert_close_all(a, b, **tol):
    for u, v in zip(a, b):
        assert u.dtype == v.dtype and u.shape == v.shape
        torch.testing.assert_close(u, v, **tol)


# --------------------------------------------------------------------------- one direction


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("Cg", [1, "C"], ids=["Cg1", "CgC"])
@pytest.mark.parametrize("K", [1, 3], ids=["K1", "K3"])
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_propagate_matches_reference(direction, K, Cg, shape, dtype):
    x, g = make_case(shape, K, Cg, dtype, seed=stable_seed(direction, K, Cg, shape))
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    got = grads(lambda a, b: propagate(a, b, direction), x, g, grad_out)
    want = grads(lambda a, b: propagate_ref(a, b, direction), x, g, grad_out)
    assert got[0].dtype == dtype and got[0].shape == shape
    assert_close_all(got, want, **TOL[dtype])


@needs_ext
def test_kernel_really_runs(monkeypatch):
    """The comparisons here mean something only if the kernel, not the reference, ran."""
    import spn.ops.propagation as prop

    def boom(*a, **k):
        raise AssertionError("reference ran although the extension is loaded")

    monkeypatch.setattr(prop, "propagate_ref", boom)
    monkeypatch.setattr(prop, "propagate4_ref", boom)
    x, g = make_case((1, 2, 4, 5), 3, 1)
    torch.testing.assert_close(propagate(x, g, "left_to_right"), torch.ops.spn.propagate_fwd(x, g, None, 0, 0, 0), atol=0, rtol=0)
    x4, g4 = make_case((1, 2, 4, 5), 3, 1, n_dirs=4)
    propagate4(x4, g4, "max")
    # no version-2 argument falls back on the reference either
    lam = torch.rand(1, 4, 2, 4, 5, dtype=x4.dtype)
    for norm in (None, "clip", "always", "gspn"):
        propagate4(x4, g4, "none", normalize=norm, input_weight=lam, chunk=2)
        propagate(x4, g4[:, 0], 1, normalize=norm, input_weight=lam[:, 0], chunk=3)


@needs_ext
@pytest.mark.parametrize("direction", [0, 1, 2, 3])
def test_direction_by_index_equals_name(direction):
    x, g = make_case((2, 2, 4, 5), 3, "C", seed=direction)
    torch.testing.assert_close(
        propagate(x, g, direction), propagate(x, g, DIRECTIONS[direction]), atol=0, rtol=0
    )


@needs_ext
def test_directions_differ_and_first_line_is_x():
    """Each direction scans its own way: its first scan line is x unchanged, the others are not."""
    x, g = make_case((1, 1, 5, 6), 3, 1, seed=3)
    hs = [propagate(x, g, d) for d in DIRECTIONS]
    first = {
        "left_to_right": (slice(None), 0),
        "right_to_left": (slice(None), -1),
        "top_to_bottom": (0, slice(None)),
        "bottom_to_top": (-1, slice(None)),
    }
    for d, h in zip(DIRECTIONS, hs):
        r, c = first[d]
        torch.testing.assert_close(h[0, 0][r, c], x[0, 0][r, c], atol=0, rtol=0)
        assert not torch.allclose(h, x)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(hs[i], hs[j])


@needs_ext
def test_unused_gates_get_zero_gradient():
    """First-line gates and gates of out-of-range neighbours never act: zero gradient."""
    x, g = make_case((1, 2, 4, 5), 3, "C", seed=5)
    g = g.clone().requires_grad_(True)
    propagate(x, g, "left_to_right").sum().backward()
    gg = g.grad
    assert torch.all(gg[..., :, 0] == 0)  # first column
    assert torch.all(gg[:, 0, :, 0, :] == 0)  # slot 0 (k-1) at row 0
    assert torch.all(gg[:, 2, :, -1, :] == 0)  # slot 2 (k+1) at the last row
    assert gg[:, 1, :, :, 1:].abs().sum() > 0


# --------------------------------------------------------------------------- layouts


@needs_ext
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_non_contiguous_inputs(direction):
    B, C, H, W = 2, 3, 5, 6
    x, g = make_case((B, C, H, W), 3, "C", torch.float64, seed=11)
    grad_out = torch.randn(B, C, H, W, dtype=torch.float64)
    want = grads(lambda a, b: propagate_ref(a, b, direction), x, g, grad_out)

    # transposed views holding the same values
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)
    gt = g.transpose(3, 4).contiguous().transpose(3, 4)
    assert not xt.is_contiguous() and not gt.is_contiguous()
    # strided slices of bigger tensors
    xs = torch.zeros(B, 2 * C, H, 2 * W, dtype=x.dtype)
    xs[:, ::2, :, ::2] = x
    gs = torch.zeros(B, 3, C, H, 3 * W, dtype=g.dtype)
    gs[..., 1::3] = g
    xs, gs = xs[:, ::2, :, ::2], gs[..., 1::3]
    assert not xs.is_contiguous() and not gs.is_contiguous()
    # channels-last x, permuted gates
    xc = x.to(memory_format=torch.channels_last)
    gc = g.permute(0, 3, 4, 1, 2).contiguous().permute(0, 3, 4, 1, 2)
    assert not xc.is_contiguous() and not gc.is_contiguous()

    for xv, gv in [(xt, gt), (xs, gs), (xc, gc)]:
        xv = xv.detach().requires_grad_(True)
        gv = gv.detach().requires_grad_(True)
        out = propagate(xv, gv, direction)
        gx, gg = torch.autograd.grad(out, (xv, gv), grad_out)
        assert_close_all((out.detach(), gx, gg), want, **TOL[torch.float64])


@needs_ext
def test_non_contiguous_grad_out_and_expanded_gates():
    x, g = make_case((2, 3, 4, 5), 1, 1, seed=12)
    g = g[:, :, :1].expand(2, 1, 3, 4, 5)  # stride-0 channel dim, Cg = C
    grad_out = torch.randn(2, 3, 5, 4, dtype=torch.float64).transpose(2, 3)
    got = grads(lambda a, b: propagate(a, b, "top_to_bottom"), x, g, grad_out)
    want = grads(lambda a, b: propagate_ref(a, b, "top_to_bottom"), x, g, grad_out)
    assert_close_all(got, want, **TOL[torch.float64])


@needs_ext
def test_propagate4_non_contiguous():
    x, g = make_case((2, 2, 5, 4), 3, "C", seed=13, n_dirs=4)
    xc = x.to(memory_format=torch.channels_last)
    gt = g.transpose(4, 5).contiguous().transpose(4, 5)
    grad_out = torch.randn(2, 2, 5, 4, dtype=torch.float64)
    got = grads(lambda a, b: propagate4(a, b, "max"), xc, gt, grad_out)
    want = grads(lambda a, b: propagate4_ref(a, b, "max"), x, g, grad_out)
    assert_close_all(got, want, **TOL[torch.float64])


# --------------------------------------------------------------------------- half precision


@needs_ext
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)], ids=["bf16", "f16"])
@pytest.mark.parametrize("four", [False, True], ids=["propagate", "propagate4"])
def test_half_precision(dtype, tol, four):
    n_dirs = 4 if four else None
    x, g = make_case((2, 3, 6, 5), 3, "C", torch.float32, seed=21, n_dirs=n_dirs)
    xh, gh = x.to(dtype), g.to(dtype)

    def f(a, b):
        return propagate4(a, b, "max") if four else propagate(a, b, "bottom_to_top")

    xh_, gh_ = xh.clone().requires_grad_(True), gh.clone().requires_grad_(True)
    out = f(xh_, gh_)
    assert out.dtype == dtype and out.shape == x.shape
    out.float().sum().backward()
    assert xh_.grad.dtype == dtype and gh_.grad.dtype == dtype
    assert torch.isfinite(xh_.grad.float()).all() and torch.isfinite(gh_.grad.float()).all()

    # the same (rounded) inputs in float32
    want = f(xh.float(), gh.float())
    scale = want.abs().max().item()
    torch.testing.assert_close(out.float(), want, atol=tol * scale, rtol=tol)


# --------------------------------------------------------------------------- four directions


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("merge", MERGES)
@pytest.mark.parametrize("K,Cg", [(1, 1), (1, "C"), (3, 1), (3, "C")])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (1, 2, 1, 5), (2, 2, 6, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_propagate4_matches_reference(shape, K, Cg, merge, dtype):
    x, g = make_case(shape, K, Cg, dtype, seed=stable_seed(shape, K, Cg, merge), n_dirs=4)
    out_shape = (shape[0], 4, *shape[1:]) if merge == "none" else shape
    grad_out = torch.randn(out_shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype)
    got = grads(lambda a, b: propagate4(a, b, merge), x, g, grad_out)
    want = grads(lambda a, b: propagate4_ref(a, b, merge), x, g, grad_out)
    assert_close_all(got, want, **TOL[dtype])


@needs_ext
def test_propagate4_merges_relate():
    """sum = 4 * mean, max >= mean, and each equals the merge of the four single scans."""
    x, g = make_case((2, 2, 5, 6), 3, "C", seed=31, n_dirs=4)
    hs = torch.stack([propagate(x, g[:, d], d) for d in range(4)])
    torch.testing.assert_close(propagate4(x, g, "max"), hs.max(0).values, **TOL[torch.float64])
    torch.testing.assert_close(propagate4(x, g, "mean"), hs.mean(0), **TOL[torch.float64])
    torch.testing.assert_close(propagate4(x, g, "sum"), hs.sum(0), **TOL[torch.float64])
    assert torch.all(propagate4(x, g, "max") >= propagate4(x, g, "mean") - 1e-12)


@needs_ext
def test_propagate4_max_default_and_no_grad_path():
    x, g = make_case((1, 2, 4, 4), 3, 1, seed=32, n_dirs=4)
    with torch.no_grad():
        a = propagate4(x, g)
    b = propagate4(x, g, "max")
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not a.requires_grad


@needs_ext
def test_propagate4_grad_only_in_x_or_only_in_gates():
    x, g = make_case((1, 2, 4, 5), 3, "C", seed=33, n_dirs=4)
    for which in ("x", "g"):
        xa = x.clone().requires_grad_(which == "x")
        ga = g.clone().requires_grad_(which == "g")
        xr = x.clone().requires_grad_(which == "x")
        gr = g.clone().requires_grad_(which == "g")
        propagate4(xa, ga, "mean").square().sum().backward()
        propagate4_ref(xr, gr, "mean").square().sum().backward()
        a, r = (xa, xr) if which == "x" else (ga, gr)
        torch.testing.assert_close(a.grad, r.grad, **TOL[torch.float64])


# --------------------------------------------------------------------------- gradcheck


@needs_ext
@pytest.mark.parametrize(
    "direction,K,Cg,shape",
    [
        ("left_to_right", 3, "C", (1, 2, 3, 4)),
        ("right_to_left", 1, 1, (2, 2, 3, 3)),
        ("top_to_bottom", 3, 1, (1, 2, 4, 3)),
        ("bottom_to_top", 1, "C", (1, 3, 3, 2)),
        ("left_to_right", 3, 1, (1, 1, 1, 3)),
        ("top_to_bottom", 3, "C", (1, 1, 3, 1)),
    ],
)
def test_gradcheck_propagate(direction, K, Cg, shape):
    x, g = make_case(shape, K, Cg, torch.float64, seed=41)
    x.requires_grad_(True)
    g.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: propagate(a, b, direction), (x, g), eps=1e-6, atol=1e-7)


@needs_ext
@pytest.mark.parametrize("merge", ["mean", "sum"])
@pytest.mark.parametrize("K,Cg", [(3, "C"), (1, 1)])
def test_gradcheck_propagate4(merge, K, Cg):
    x, g = make_case((1, 2, 3, 4), K, Cg, torch.float64, seed=42, n_dirs=4)
    x.requires_grad_(True)
    g.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: propagate4(a, b, merge), (x, g), eps=1e-6, atol=1e-7)


def _second_derivative(fn, x, g, seed=0):
    """Gradient in (x, g) of a scalar built from the first gradients (create_graph=True)."""
    x = x.detach().clone().requires_grad_(True)
    g = g.detach().clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    out = fn(x, g)
    w = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    gx, gg = torch.autograd.grad(out, (x, g), w, create_graph=True)
    v = torch.randn(gg.shape, generator=gen, dtype=gg.dtype)
    return torch.autograd.grad((gg * v).sum() + gx.square().sum(), (x, g), allow_unused=True, materialize_grads=True)


@needs_ext
@pytest.mark.parametrize("four", [False, True], ids=["propagate", "propagate4"])
def test_double_backward_raises_or_is_right(four):
    """Double backward through the kernel is either correct or a clear error, never silent zeros."""
    n_dirs = 4 if four else None
    x, g = make_case((1, 2, 3, 4), 3, "C", torch.float64, seed=43, n_dirs=n_dirs)

    def kernel(a, b):
        return propagate4(a, b, "mean") if four else propagate(a, b, 0)

    def ref(a, b):
        return propagate4_ref(a, b, "mean") if four else propagate_ref(a, b, 0)

    want = _second_derivative(ref, x, g)
    assert want[1].abs().sum() > 0
    try:
        got = _second_derivative(kernel, x, g)
    except RuntimeError as exc:
        assert "double" in str(exc).lower() or "differentiat" in str(exc).lower()
        return
    assert_close_all(got, want, **TOL[torch.float64])


# --------------------------------------------------------------------------- opcheck


def _opcheck(op, args):
    res = torch.library.opcheck(op, args)
    bad = {k: v for k, v in res.items() if v != "SUCCESS"}
    assert not bad, bad


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("K,Cg,norm,Cl,chunk", [(3, "C", 0, None, 0), (1, 1, 1, None, 0), (3, 1, 3, 1, 2),
                                                (3, "C", 2, "C", 3)])
def test_opcheck_propagate_ops(K, Cg, norm, Cl, chunk, dtype):
    x, g = make_case((2, 2, 3, 4), K, Cg, dtype, seed=51)
    lam = None if Cl is None else torch.rand(2, 2 if Cl == "C" else 1, 3, 4, dtype=dtype)
    h = torch.ops.spn.propagate_fwd(x, g, lam, 1, norm, chunk)
    req = lambda t: None if t is None else t.clone().requires_grad_(True)  # noqa: E731
    _opcheck(torch.ops.spn.propagate_fwd, (req(x), req(g), req(lam), 1, norm, chunk))
    _opcheck(torch.ops.spn.propagate_fwd, (x, g, lam, 2, norm, chunk))
    _opcheck(torch.ops.spn.propagate_bwd, (torch.randn_like(x), x, g, lam, h, 1, norm, chunk))


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("merge", [0, 1, 2, 3], ids=list(MERGES))
@pytest.mark.parametrize("norm,Cl,chunk", [(0, None, 0), (1, None, 2), (3, "C", 0)], ids=["v1", "clip-chunk", "gspn-l"])
def test_opcheck_propagate4_ops(merge, norm, Cl, chunk, dtype):
    x, g = make_case((1, 2, 3, 4), 3, "C", dtype, seed=52, n_dirs=4)
    lam = None if Cl is None else torch.rand(1, 4, 2, 3, 4, dtype=dtype)
    req = lambda t: None if t is None else t.clone().requires_grad_(True)  # noqa: E731
    _opcheck(torch.ops.spn.propagate4_fwd, (req(x), req(g), req(lam), merge, norm, chunk, True))
    out, hs = torch.ops.spn.propagate4_fwd(x, g, lam, merge, norm, chunk, True)
    if merge == 3:  # "none": the output is the four maps, and it is what the backward reads
        assert out.shape == (1, 4, *x.shape[1:]) and hs.numel() == 0
        hs, go = out, torch.randn_like(out)
    else:
        assert hs.shape == (x.shape[0], 4, *x.shape[1:])
        go = torch.randn_like(x)
    _opcheck(torch.ops.spn.propagate4_bwd, (go, x, g, lam, hs, merge, norm, chunk))


@needs_ext
def test_propagate4_fwd_save_false_returns_no_states():
    x, g = make_case((1, 2, 3, 4), 3, 1, seed=53, n_dirs=4)
    out_s, hs = torch.ops.spn.propagate4_fwd(x, g, None, 0, 0, 0, True)
    out_n, empty = torch.ops.spn.propagate4_fwd(x, g, None, 0, 0, 0, False)
    torch.testing.assert_close(out_s, out_n, atol=0, rtol=0)
    assert empty.numel() == 0
    for d in range(4):
        torch.testing.assert_close(hs[:, d], propagate_ref(x, g[:, d], d), **TOL[torch.float64])


def test_reference_backend_values_by_hand():
    """A 1x3 map scanned left to right with one-way gates, computed by hand."""
    x = torch.tensor([[[[1.0, 2.0, 4.0]]]], dtype=torch.float64)
    g = torch.tensor([[[[[0.9, 0.5, 0.25]]]]], dtype=torch.float64)
    h0 = 1.0
    h1 = 0.5 * 2.0 + 0.5 * h0
    h2 = 0.75 * 4.0 + 0.25 * h1
    want = torch.tensor([[[[h0, h1, h2]]]], dtype=torch.float64)
    torch.testing.assert_close(propagate_ref(x, g, "left_to_right"), want)
    torch.testing.assert_close(propagate(x, g, "left_to_right"), want)
    # right to left: starts at the last column
    r2 = 4.0
    r1 = 0.5 * 2.0 + 0.5 * r2
    r0 = 0.1 * 1.0 + 0.9 * r1
    torch.testing.assert_close(propagate(x, g, "right_to_left"), torch.tensor([[[[r0, r1, r2]]]], dtype=torch.float64))


def test_three_way_values_by_hand():
    """A 3x2 map scanned left to right with three-way gates: border neighbours dropped."""
    x = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]], dtype=torch.float64)[None, None]
    g = torch.zeros(1, 3, 1, 3, 2, dtype=torch.float64)
    g[0, :, 0, :, 1] = torch.tensor([[0.1, 0.2, 0.3], [0.2, 0.2, 0.2], [0.3, 0.1, 0.4]]).T.to(torch.float64)
    # column 1, row k: neighbours k-1 (slot 0), k (slot 1), k+1 (slot 2) in column 0
    prev = [1.0, 2.0, 3.0]
    want = torch.zeros(3, 2, dtype=torch.float64)
    want[:, 0] = torch.tensor(prev)
    for k in range(3):
        acc, tot = 0.0, 0.0
        for slot, j in enumerate((k - 1, k, k + 1)):
            if 0 <= j < 3:
                gv = g[0, slot, 0, k, 1].item()
                acc += gv * prev[j]
                tot += gv
        want[k, 1] = (1 - tot) * x[0, 0, k, 1].item() + acc
    torch.testing.assert_close(propagate_ref(x, g, 0)[0, 0], want)
    torch.testing.assert_close(propagate(x, g, 0)[0, 0], want)


@needs_ext
@pytest.mark.parametrize("four", [False, True], ids=["propagate", "propagate4"])
def test_deterministic_across_runs_and_thread_counts(four):
    """Same inputs give bit-identical outputs and gradients, with 1 thread or several."""
    x, g = make_case((3, 4, 9, 7), 3, 1, torch.float32, seed=61, n_dirs=4 if four else None)
    grad_out = torch.randn(3, 4, 9, 7)

    def f(a, b):
        return propagate4(a, b, "max") if four else propagate(a, b, "right_to_left")

    before = torch.get_num_threads()
    try:
        runs = [grads(f, x, g, grad_out) for _ in range(2)]
        torch.set_num_threads(1)
        runs.append(grads(f, x, g, grad_out))
    finally:
        torch.set_num_threads(before)
    for r in runs[1:]:
        assert_close_all(r, runs[0], atol=0, rtol=0)


# --------------------------------------------------------------------------- one table of codes


@needs_ext
def test_the_cpp_kernels_codes_are_the_python_table():
    """Direction, merge and normalize codes: the C++ enums (reported by the extension) equal
    spn.ops._codes, which the Python side and the Triton kernels read."""
    from spn.ops._codes import DIRECTION_CODES, MERGE_CODES, NORMALIZE_CODES, parse_kernel_codes

    cpp = parse_kernel_codes(torch.ops.spn.kernel_codes())
    assert cpp == {"direction": DIRECTION_CODES, "merge": MERGE_CODES, "normalize": NORMALIZE_CODES}
    # and the public names follow the codes' order
    assert list(DIRECTIONS) == sorted(DIRECTION_CODES, key=DIRECTION_CODES.get)
    assert list(MERGES) == sorted(MERGE_CODES, key=MERGE_CODES.get)


def test_the_codes_are_each_read_from_one_table():
    """No module keeps its own copy of the codes: the Triton kernels' constexprs and the public
    name tuples come from spn.ops._codes (a copy, e.g. a literal dict, would be a second table)."""
    import pathlib
    import re

    import spn.ops

    root = pathlib.Path(spn.ops.__file__).parent
    copies = []
    for path in root.rglob("*.py"):
        if path.name == "_codes.py":
            continue
        text = path.read_text()
        for m in re.finditer(r'\{\s*(?:None|"max"|"left_to_right")\s*:\s*\d', text):
            copies.append(f"{path.relative_to(root)}: {text[m.start():m.start() + 40]!r}")
    assert not copies, copies
