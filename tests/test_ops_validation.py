"""Bad input to the propagation operator: clear ValueError/TypeError from the Python API, a
RuntimeError (never a crash) from direct calls of the ``torch.ops.spn`` custom ops, and
property tests over random valid and invalid shapes.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spn.nn import SpatialPropagation
from spn.ops import (
    extension_available,
    normalize_gates,
    propagate,
    propagate4,
    propagate4_ref,
    propagate_ref,
    transformation_matrix,
)

needs_ext = pytest.mark.skipif(not extension_available(), reason="compiled extension spn._C not importable")

# derandomize: the same examples in every run (reproducible failures)
HYP = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def xg(B=1, C=2, H=3, W=4, K=3, Cg=2, dtype=torch.float32, n_dirs=None):
    x = torch.randn(B, C, H, W, dtype=dtype)
    gshape = (B, K, Cg, H, W) if n_dirs is None else (B, n_dirs, K, Cg, H, W)
    return x, torch.rand(gshape, dtype=dtype) * 0.3


# --------------------------------------------------------------------------- a table of bad calls

# (id, x kwargs / tensors, expected exception, match) for propagate; propagate4 gets the same
# mistakes in its 6-D layout.
BAD_SHAPES = [
    ("x_3d", dict(x=(2, 3, 4)), ValueError, r"x must be 4-D"),
    ("x_5d", dict(x=(1, 2, 3, 4, 1)), ValueError, r"x must be 4-D"),
    ("gates_wrong_ndim", dict(g=(1, 3, 3, 4)), ValueError, r"gates must be [56]-D"),
    ("K_2", dict(g=(1, 2, 2, 3, 4)), ValueError, r"K = 2"),
    ("K_4", dict(g=(1, 4, 2, 3, 4)), ValueError, r"K = 4"),
    ("K_0", dict(g=(1, 0, 2, 3, 4)), ValueError, r"K = 0"),
    ("batch_mismatch", dict(g=(2, 3, 2, 3, 4)), ValueError, r"batch size mismatch"),
    ("height_mismatch", dict(g=(1, 3, 2, 5, 4)), ValueError, r"spatial size mismatch"),
    ("width_mismatch", dict(g=(1, 3, 2, 3, 2)), ValueError, r"spatial size mismatch"),
    ("Cg_not_1_or_C", dict(x=(1, 3, 3, 4), g=(1, 3, 2, 3, 4)), ValueError, r"Cg = 2"),
    ("empty_batch", dict(x=(0, 2, 3, 4), g=(0, 3, 2, 3, 4)), ValueError, r"non-empty"),
    ("empty_channels", dict(x=(1, 0, 3, 4), g=(1, 3, 1, 3, 4)), ValueError, r"non-empty"),
    ("empty_height", dict(x=(1, 2, 0, 4), g=(1, 3, 2, 0, 4)), ValueError, r"non-empty"),
    ("empty_width", dict(x=(1, 2, 3, 0), g=(1, 3, 2, 3, 0)), ValueError, r"non-empty"),
]


def _build(spec, four):
    xs = spec.get("x", (1, 2, 3, 4))
    gs = spec.get("g", (1, 3, 2, 3, 4))
    if four and len(gs) == 5:
        gs = (gs[0], 4, *gs[1:])
    elif four and len(gs) == 4:
        gs = (gs[0], 4, *gs[1:])  # still one dim short of 6-D
    return torch.randn(xs), torch.rand(gs) * 0.3


@pytest.mark.parametrize("four", [False, True], ids=["propagate", "propagate4"])
@pytest.mark.parametrize("name,spec,exc,match", BAD_SHAPES, ids=[b[0] for b in BAD_SHAPES])
def test_bad_shapes_raise(name, spec, exc, match, four):
    x, g = _build(spec, four)
    with pytest.raises(exc, match=match):
        if four:
            propagate4(x, g)
        else:
            propagate(x, g, "left_to_right")
    # the reference validates identically
    with pytest.raises(exc, match=match):
        if four:
            propagate4_ref(x, g)
        else:
            propagate_ref(x, g, "left_to_right")


def test_propagate4_needs_four_directions():
    x, g = xg(n_dirs=3)
    with pytest.raises(ValueError, match=r"4 directions"):
        propagate4(x, g)
    x, g = xg()  # a 5-D single-direction tensor
    with pytest.raises(ValueError, match=r"gates must be 6-D"):
        propagate4(x, g)


def test_propagate_rejects_6d_gates():
    x, g = xg(n_dirs=4)
    with pytest.raises(ValueError, match=r"gates must be 5-D"):
        propagate(x, g, 0)


@pytest.mark.parametrize("four", [False, True], ids=["propagate", "propagate4"])
@pytest.mark.parametrize(
    "xdt,gdt,match",
    [
        (torch.int64, torch.float32, r"x must have a floating dtype.*int64"),
        (torch.float32, torch.int32, r"gates must have a floating dtype.*int32"),
        (torch.uint8, torch.uint8, r"floating dtype"),
        (torch.bool, torch.float32, r"x must have a floating dtype"),
        (torch.float32, torch.float64, r"share a dtype.*float32.*float64"),
        (torch.float64, torch.float16, r"share a dtype"),
    ],
)
def test_bad_dtypes_raise_type_error(xdt, gdt, match, four):
    x, g = xg(n_dirs=4 if four else None)
    x, g = x.to(xdt), g.to(gdt)
    with pytest.raises(TypeError, match=match):
        propagate4(x, g) if four else propagate(x, g, 0)


@pytest.mark.parametrize("four", [False, True], ids=["propagate", "propagate4"])
def test_non_tensor_inputs_raise_type_error(four):
    x, g = xg(n_dirs=4 if four else None)
    f = (lambda a, b: propagate4(a, b)) if four else (lambda a, b: propagate(a, b, 0))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        f(x.numpy(), g)
    with pytest.raises(TypeError, match=r"gates must be a torch.Tensor"):
        f(x, g.tolist())


@pytest.mark.parametrize(
    "direction,exc,match",
    [
        ("up", ValueError, r"unknown direction 'up'"),
        ("Left_To_Right", ValueError, r"unknown direction"),
        ("", ValueError, r"unknown direction"),
        (4, ValueError, r"unknown direction index 4"),
        (-1, ValueError, r"unknown direction index -1"),
        (True, TypeError, r"direction must be"),
        (0.0, TypeError, r"direction must be"),
        (None, TypeError, r"direction must be"),
    ],
)
def test_unknown_direction(direction, exc, match):
    x, g = xg()
    with pytest.raises(exc, match=match):
        propagate(x, g, direction)
    with pytest.raises(exc, match=match):
        propagate_ref(x, g, direction)
    with pytest.raises(exc, match=match):
        transformation_matrix(g, direction)


@pytest.mark.parametrize("merge", ["min", "MAX", "", None, 0])
def test_bad_merge(merge):
    x, g = xg(n_dirs=4)
    with pytest.raises(ValueError, match=r"unknown merge"):
        propagate4(x, g, merge)
    with pytest.raises(ValueError, match=r"unknown merge"):
        propagate4_ref(x, g, merge)
    with pytest.raises(ValueError, match=r"unknown merge"):
        SpatialPropagation(merge=merge)


@pytest.mark.parametrize("mode", ["clamp", "", "CLIP", None])
def test_bad_normalize_mode(mode):
    _, g = xg()
    with pytest.raises(ValueError, match=r"unknown normalize|needs a mode"):
        normalize_gates(g, mode)


def test_normalize_gates_bad_input():
    with pytest.raises(TypeError, match=r"floating"):
        normalize_gates(torch.ones(1, 3, 1, 2, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"floating"):
        normalize_gates([[0.5]])
    with pytest.raises(ValueError, match=r"got shape \(1, 3, 2, 2\)"):
        normalize_gates(torch.ones(1, 3, 2, 2))


def test_transformation_matrix_bad_input():
    with pytest.raises(ValueError, match=r"4096 pixels"):
        transformation_matrix(torch.rand(1, 3, 1, 65, 64), 0)
    with pytest.raises(ValueError, match=r"K = 2"):
        transformation_matrix(torch.rand(1, 2, 1, 4, 4), 0)
    with pytest.raises(ValueError, match=r"\(B, K, Cg, H, W\)"):
        transformation_matrix(torch.rand(1, 4, 3, 1, 4, 4), 0)
    with pytest.raises(ValueError, match=r"out of range"):
        transformation_matrix(torch.rand(1, 3, 2, 4, 4), 0, b=1)
    with pytest.raises(ValueError, match=r"out of range"):
        transformation_matrix(torch.rand(1, 3, 2, 4, 4), 0, c=2)


# --------------------------------------------------------------------------- the module


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(connection="two_way"), r"unknown connection 'two_way'"),
        (dict(connection=3), r"unknown connection"),
        (dict(merge="min"), r"unknown merge 'min'"),
        (dict(normalize="clamp"), r"unknown normalize 'clamp'"),
    ],
)
def test_module_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpatialPropagation(**kwargs)


@pytest.mark.parametrize(
    "x_shape,g_shape,exc,match",
    [
        ((2, 3, 3), (1, 24, 3, 3), ValueError, r"x must be a \(B, C, H, W\)"),
        ((1, 2, 3, 3), (1, 10, 3, 3), ValueError, r"4\*K\*Cg channels.*got 10"),
        ((1, 2, 3, 3), (1, 4, 1, 2, 3, 3), ValueError, r"K = 1 but this module uses K = 3"),
        ((1, 2, 3, 3), (1, 3, 3, 2, 3, 3), ValueError, r"4 directions"),
        ((1, 2, 3, 3), (1, 3, 2, 3, 3), ValueError, r"gates must be \(B, 4, K, Cg, H, W\) or flat"),
        ((1, 2, 3, 3), (1, 24, 4, 3), ValueError, r"spatial size mismatch"),
        ((1, 2, 3, 3), (2, 24, 3, 3), ValueError, r"batch size mismatch"),
        ((0, 2, 3, 3), (0, 24, 3, 3), ValueError, r"non-empty"),
        ((1, 2, 3, 0), (1, 24, 3, 0), ValueError, r"non-empty"),
        ((1, 3, 3, 3), (1, 4, 3, 2, 3, 3), ValueError, r"Cg = 2"),
    ],
)
def test_module_bad_forward_shapes(x_shape, g_shape, exc, match):
    m = SpatialPropagation()
    with pytest.raises(exc, match=match):
        m(torch.randn(x_shape), torch.rand(g_shape) * 0.3)


@pytest.mark.parametrize("normalize", ["clip", None])
def test_module_bad_dtypes(normalize):
    m = SpatialPropagation(normalize=normalize)
    x = torch.randn(1, 2, 3, 3)
    g = torch.rand(1, 24, 3, 3)
    with pytest.raises(TypeError, match=r"floating"):
        m(x, g.to(torch.int64))
    with pytest.raises(TypeError, match=r"x must have a floating dtype"):
        m(x.to(torch.int64), g)
    with pytest.raises(TypeError, match=r"share a dtype"):
        m(x.double(), g)
    with pytest.raises(TypeError, match=r"gates must be a torch.Tensor"):
        m(x, g.tolist())
    with pytest.raises((TypeError, ValueError), match=r"x must be"):
        m(x.tolist(), g)


# --------------------------------------------------------------------------- direct op calls


@needs_ext
@pytest.mark.parametrize(
    "case",
    [
        "fwd_int",
        "fwd_half",
        "fwd_mixed",
        "fwd_x3d",
        "fwd_g4d",
        "fwd_K2",
        "fwd_Cg",
        "fwd_H",
        "fwd_W",
        "fwd_B",
        "fwd_dir4",
        "fwd_dir-1",
        "fwd4_merge",
        "fwd4_dirs",
        "fwd4_5d",
        "bwd_gh",
        "bwd_h",
        "bwd_K2",
        "bwd_dir",
        "bwd4_hs",
        "bwd4_hs_shape",
        "bwd4_merge",
        "bwd4_none_hs",
        "fwd_norm",
        "fwd4_norm",
        "fwd_chunk",
        "fwd_l_shape",
        "fwd_l_dtype",
        "fwd4_l_dirs",
        "fwd4_l_4d",
    ],
)
def test_direct_op_bad_input_raises_runtime_error(case):
    x = torch.randn(1, 2, 3, 3)
    g = torch.rand(1, 3, 2, 3, 3)
    g4 = torch.rand(1, 4, 3, 2, 3, 3)
    hs = torch.randn(1, 4, 2, 3, 3)  # the directional maps (B, 4, C, H, W)
    ops = torch.ops.spn
    calls = {
        "fwd_int": lambda: ops.propagate_fwd(x.int(), g.int(), None, 0, 0, 0),
        "fwd_half": lambda: ops.propagate_fwd(x.half(), g.half(), None, 0, 0, 0),
        "fwd_mixed": lambda: ops.propagate_fwd(x, g.double(), None, 0, 0, 0),
        "fwd_x3d": lambda: ops.propagate_fwd(x[0], g, None, 0, 0, 0),
        "fwd_g4d": lambda: ops.propagate_fwd(x, g[0], None, 0, 0, 0),
        "fwd_K2": lambda: ops.propagate_fwd(x, g[:, :2], None, 0, 0, 0),
        "fwd_Cg": lambda: ops.propagate_fwd(torch.randn(1, 2, 3, 3), torch.rand(1, 3, 3, 3, 3), None, 0, 0, 0),
        "fwd_H": lambda: ops.propagate_fwd(x, torch.rand(1, 3, 2, 4, 3), None, 0, 0, 0),
        "fwd_W": lambda: ops.propagate_fwd(x, torch.rand(1, 3, 2, 3, 4), None, 2, 0, 0),
        "fwd_B": lambda: ops.propagate_fwd(x, torch.rand(2, 3, 2, 3, 3), None, 0, 0, 0),
        "fwd_dir4": lambda: ops.propagate_fwd(x, g, None, 4, 0, 0),
        "fwd_dir-1": lambda: ops.propagate_fwd(x, g, None, -1, 0, 0),
        "fwd4_merge": lambda: ops.propagate4_fwd(x, g4, None, 5, 0, 0, True),
        "fwd4_dirs": lambda: ops.propagate4_fwd(x, g4[:, :3], None, 0, 0, 0, True),
        "fwd4_5d": lambda: ops.propagate4_fwd(x, g, None, 0, 0, 0, True),
        "bwd_gh": lambda: ops.propagate_bwd(torch.randn(1, 2, 3, 4), x, g, None, x, 0, 0, 0),
        "bwd_h": lambda: ops.propagate_bwd(x, x, g, None, torch.randn(1, 2, 3, 4), 0, 0, 0),
        "bwd_K2": lambda: ops.propagate_bwd(x, x, g[:, :2], None, x, 0, 0, 0),
        "bwd_dir": lambda: ops.propagate_bwd(x, x, g, None, x, 9, 0, 0),
        "bwd4_hs": lambda: ops.propagate4_bwd(x, x, g4, None, hs[:, :3], 0, 0, 0),
        "bwd4_hs_shape": lambda: ops.propagate4_bwd(x, x, g4, None, torch.randn(1, 4, 2, 3, 4), 0, 0, 0),
        "bwd4_merge": lambda: ops.propagate4_bwd(x, x, g4, None, hs, 4, 0, 0),
        "bwd4_none_hs": lambda: ops.propagate4_bwd(x, x, g4, None, hs, 3, 0, 0),
        "fwd_norm": lambda: ops.propagate_fwd(x, g, None, 0, 4, 0),
        "fwd4_norm": lambda: ops.propagate4_fwd(x, g4, None, 0, -1, 0, True),
        "fwd_chunk": lambda: ops.propagate_fwd(x, g, None, 0, 0, -2),
        "fwd_l_shape": lambda: ops.propagate_fwd(x, g, torch.rand(1, 3, 3, 3), 0, 0, 0),
        "fwd_l_dtype": lambda: ops.propagate_fwd(x, g, torch.rand(1, 2, 3, 3).double(), 0, 0, 0),
        "fwd4_l_dirs": lambda: ops.propagate4_fwd(x, g4, torch.rand(1, 3, 2, 3, 3), 0, 0, 0, True),
        "fwd4_l_4d": lambda: ops.propagate4_fwd(x, g4, torch.rand(1, 2, 3, 3), 0, 0, 0, True),
    }
    with pytest.raises(RuntimeError, match=r"spn"):
        calls[case]()


# Calls that could crash the interpreter if unchecked run in a child process. Each must
# either raise RuntimeError or return a result of the right shape, and the child must exit 0.
RISKY = {
    "fwd_empty_H": "torch.ops.spn.propagate_fwd(torch.randn(1, 2, 0, 3), torch.rand(1, 3, 2, 0, 3), None, 0, 0, 0)",
    "fwd_empty_W": "torch.ops.spn.propagate_fwd(torch.randn(1, 2, 3, 0), torch.rand(1, 1, 2, 3, 0), None, 2, 0, 0)",
    "fwd_empty_W_K3": "torch.ops.spn.propagate_fwd(torch.randn(1, 2, 3, 0), torch.rand(1, 3, 2, 3, 0), None, 0, 0, 0)",
    "fwd4_empty_H": "torch.ops.spn.propagate4_fwd(torch.randn(1, 2, 0, 3), torch.rand(1, 4, 3, 2, 0, 3), None, 0, 0, 0, True)",
    "bwd_empty_W": (
        "torch.ops.spn.propagate_bwd(torch.randn(1, 2, 3, 0), torch.randn(1, 2, 3, 0), "
        "torch.rand(1, 3, 2, 3, 0), None, torch.randn(1, 2, 3, 0), 1, 0, 0)"
    ),
    "bwd4_small_grad_out": (
        "torch.ops.spn.propagate4_bwd(torch.randn(1, 1, 2, 2), torch.randn(2, 8, 64, 64), "
        "torch.rand(2, 4, 3, 8, 64, 64), None, torch.randn(2, 4, 8, 64, 64), 0, 0, 0)"
    ),
}


@needs_ext
@pytest.mark.parametrize("case", list(RISKY))
def test_direct_op_risky_input_does_not_crash(case):
    code = textwrap.dedent(
        f"""
        import torch, spn.ops
        assert spn.ops.extension_available()
        try:
            out = {RISKY[case]}
        except RuntimeError as exc:
            print("RuntimeError:", exc)
        else:
            print("returned", [tuple(t.shape) for t in (out if isinstance(out, tuple) else (out,))])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{case}: child exited {proc.returncode} (crash?) stderr: {proc.stderr[-500:]}"
    if case == "bwd4_small_grad_out":
        # grad_out does not match x: must be rejected, not read out of bounds
        assert proc.stdout.startswith("RuntimeError"), proc.stdout


# --------------------------------------------------------------------------- property tests


@st.composite
def valid_case(draw):
    B = draw(st.integers(1, 2))
    C = draw(st.integers(1, 3))
    H = draw(st.integers(1, 6))
    W = draw(st.integers(1, 6))
    K = draw(st.sampled_from([1, 3]))
    Cg = draw(st.sampled_from([1, C]))
    d = draw(st.integers(0, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    return B, C, H, W, K, Cg, d, seed


@HYP
@given(valid_case())
def test_property_kernel_equals_reference(case):
    B, C, H, W, K, Cg, d, seed = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    g = normalize_gates(torch.rand(B, K, Cg, H, W, generator=gen, dtype=torch.float64) * 2 - 1)
    torch.testing.assert_close(propagate(x, g, d), propagate_ref(x, g, d), atol=1e-10, rtol=1e-10)
    g4 = normalize_gates(torch.rand(B, 4, K, Cg, H, W, generator=gen, dtype=torch.float64) * 2 - 1)
    merge = ("max", "mean", "sum")[seed % 3]
    torch.testing.assert_close(propagate4(x, g4, merge), propagate4_ref(x, g4, merge), atol=1e-10, rtol=1e-10)


@st.composite
def invalid_case(draw):
    B = draw(st.integers(1, 2))
    C = draw(st.integers(1, 3))
    H = draw(st.integers(1, 4))
    W = draw(st.integers(1, 4))
    K = draw(st.sampled_from([1, 3]))
    Cg = draw(st.sampled_from([1, C]))
    xs = [B, C, H, W]
    gs = [B, K, Cg, H, W]
    faults = draw(
        st.lists(
            st.sampled_from(["K", "Cg", "B", "H", "W", "x_ndim", "g_ndim", "empty_x", "empty_g"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    for f in faults:
        if f == "K":
            gs[1] = draw(st.sampled_from([0, 2, 4, 5]))
        elif f == "Cg":
            gs[2] = draw(st.integers(0, 5).filter(lambda v: v not in (1, C)))
        elif f == "B":
            gs[0] = draw(st.integers(0, 3).filter(lambda v: v != B))
        elif f == "H":
            gs[3] = draw(st.integers(0, 5).filter(lambda v: v != H))
        elif f == "W":
            gs[4] = draw(st.integers(0, 5).filter(lambda v: v != W))
        elif f == "empty_x":
            i = draw(st.integers(0, 3))
            xs[i] = 0
            gs[{0: 0, 1: 2, 2: 3, 3: 4}[i]] = 0 if i != 1 else gs[2]
        elif f == "empty_g":
            gs[draw(st.integers(0, 4))] = 0
    if "x_ndim" in faults:
        xs = xs[: draw(st.integers(0, 3))] if draw(st.booleans()) else xs + [1]
    if "g_ndim" in faults:
        gs = gs[: draw(st.integers(0, 4))] if draw(st.booleans()) else gs + [1, 1]
    return tuple(xs), tuple(gs), draw(st.integers(0, 3))


def _is_valid(xs, gs):
    if len(xs) != 4 or len(gs) != 5:
        return False
    B, C, H, W = xs
    return (
        gs[0] == B and gs[1] in (1, 3) and gs[2] in (1, C) and gs[3:] == (H, W) and 0 not in xs
    )


@HYP
@given(invalid_case())
def test_property_invalid_shapes_raise_value_error(case):
    xs, gs, d = case
    if _is_valid(xs, gs):  # a fault may cancel out (e.g. Cg mutated when C == 1 ...)
        return
    x = torch.randn(xs)
    g = torch.rand(gs)
    with pytest.raises(ValueError):
        propagate(x, g, d)
    with pytest.raises(ValueError):
        propagate_ref(x, g, d)
    # the same mistake in the four-direction layout (a wrong ndim stays wrong: 7-D)
    g4 = torch.rand((gs[0], 4, *gs[1:])) if len(gs) == 5 else torch.rand((*gs, 1, 1, 1, 1, 1, 1, 1)[:7])
    with pytest.raises(ValueError):
        propagate4(x, g4)


@HYP
@given(invalid_case())
def test_property_module_invalid_shapes_raise_value_error(case):
    xs, gs, _ = case
    if _is_valid(xs, gs):
        return
    if len(gs) == 4:
        return  # a 4-D tensor is the module's flat layout: another test covers its channel count
    m = SpatialPropagation(connection="three_way" if (len(gs) > 1 and gs[1] == 3) else "one_way")
    x = torch.randn(xs)
    g4 = torch.rand((gs[0], 4, *gs[1:])) if len(gs) == 5 else torch.rand(gs)
    with pytest.raises(ValueError):
        m(x, g4)


# --------------------------------------------------------------------------- sizes the kernels cannot index


def _refusal_and_allocated_bytes(fn):
    """The ValueError ``fn`` raises (or ``None``) and the bytes torch allocated on CPU meanwhile
    (through the profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        try:
            fn()
        except ValueError as exc:
            err = exc
        else:
            err = None
    allocated = sum(max(e.cpu_memory_usage, 0) for e in prof.events())
    return err, allocated


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize(
    "call",
    [
        # a 1x1x1x2^31 view: one batch item of 2^31 elements (the output would have as many)
        lambda: propagate(torch.zeros(1, 1, 1, 1).expand(1, 1, 1, 2**31), torch.zeros(1, 1, 1, 1, 1).expand(
            1, 1, 1, 1, 2**31), "top_to_bottom"),
        # 2^29 per item: x fits, the four directional maps (4 x 2^29) and the four one-way gates do not
        lambda: propagate4(torch.zeros(1, 1, 1, 1).expand(2, 1, 2**14, 2**15),
                           torch.zeros(1, 1, 1, 1, 1, 1).expand(2, 4, 1, 1, 2**14, 2**15)),
        # x (2^28) and the four maps (2^30) fit, the three-way gates of four directions (12 x 2^28) do not
        lambda: propagate4(torch.zeros(1, 1, 1, 1).expand(1, 1, 2**14, 2**14),
                           torch.zeros(1, 1, 1, 1, 1, 1).expand(1, 4, 3, 1, 2**14, 2**14), "none"),
    ],
    ids=["1x1x1x2^31", "four_maps", "gates"],
)
def test_sizes_beyond_32_bit_offsets_are_refused_before_allocating(monkeypatch, backend, call):
    monkeypatch.setenv("SPN_BACKEND", backend)
    err, allocated = _refusal_and_allocated_bytes(call)
    assert err is not None, "the call was not refused"
    msg = str(err)
    assert "\n" not in msg and "per batch item" in msg and "2147483647" in msg, msg
    assert allocated < 2**20, f"{allocated} bytes allocated before the refusal"


def test_the_allocation_count_sees_the_operator_allocate():
    """The measure above can fail: a call that runs allocates its output (4 MiB here) and more."""
    err, allocated = _refusal_and_allocated_bytes(
        lambda: propagate(torch.zeros(1, 1, 1, 2**20), torch.zeros(1, 1, 1, 1, 2**20), "top_to_bottom"))
    assert err is None and allocated >= 4 * 2**20, allocated


def test_the_largest_indexable_batch_item_is_accepted():
    """The limit is 2^31 - 1 elements per batch item of each tensor (the check alone: running the
    kernels at that size would take gigabytes)."""
    from spn.ops._validate import MAX_ITEM_ELEMENTS, check_size

    n = MAX_ITEM_ELEMENTS
    x = torch.zeros(1, 1, 1, 1).expand(3, 1, 1, n)  # the batch axis is not limited
    check_size(x, torch.zeros(1, 1, 1, 1, 1).expand(3, 1, 1, 1, n))
    with pytest.raises(ValueError, match="gates would hold"):
        check_size(x, torch.zeros(1, 1, 1, 1, 1).expand(3, 3, 1, 1, n))
