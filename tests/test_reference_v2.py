"""The version-2 reference (``propagate_ref`` / ``propagate4_ref``) against an independent oracle.

The oracle below is written from ``docs/spec/propagation.md`` alone: scalar Python loops over
pixels, one formula per spec line, no tensor reshaping. The reference (vectorised over lines)
must agree with it for every direction, K, Cg, normalize mode, input weight, chunk and merge.
Non-finite rules and half precision are checked by hand-computed cases.
"""
from __future__ import annotations

import math

import pytest
import torch

from spn.ops import normalize_gates, propagate4_ref, propagate_ref
from spn.ops.normalize import valid_slots

DIRS = ("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top")


def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def oracle(x, gates, direction, normalize=None, input_weight=None, chunk=None):
    """Scalar loop over the spec's equations; float64 lists in, tensor out."""
    B, C, H, W = x.shape
    K, Cg = gates.shape[1], gates.shape[2]
    d = DIRS.index(direction)
    horizontal = d < 2
    L, n = (W, H) if horizontal else (H, W)
    order = list(range(L)) if d in (0, 2) else list(range(L - 1, -1, -1))

    def pix(line, k):  # (row, col) of lateral index k in scan line `line`
        return (k, line) if horizontal else (line, k)

    out = torch.zeros(B, C, H, W, dtype=torch.float64)
    for b in range(B):
        for c in range(C):
            cg = 0 if Cg == 1 else c
            prev = None
            for t, line in enumerate(order):
                first = t == 0 if chunk is None else t % chunk == 0
                cur = [0.0] * n
                for k in range(n):
                    r, col = pix(line, k)
                    xv = float(x[b, c, r, col])
                    lv = None if input_weight is None else float(
                        input_weight[b, 0 if input_weight.shape[1] == 1 else c, r, col])
                    if first:
                        cur[k] = xv if lv is None else lv * xv
                        continue
                    nbrs = [(0, k)] if K == 1 else [(0, k - 1), (1, k), (2, k + 1)]
                    raw = [float(gates[b, j, cg, r, col]) for j in range(K)]
                    valid = [0 <= nb < n for _, nb in nbrs]
                    if normalize == "clip":
                        s = sum(abs(v) for v in raw)
                        g = [v / max(s, 1.0) for v in raw]
                    elif normalize == "always":
                        s = sum(abs(v) for v in raw)
                        g = [v / max(s, 1e-6) for v in raw]
                    elif normalize == "gspn":
                        s = sum(_sig(v) for v, ok in zip(raw, valid) if ok)
                        g = [(_sig(v) / max(s, 1e-7)) if ok else 0.0 for v, ok in zip(raw, valid)]
                    else:
                        g = raw
                    gsum = sum(g[slot] for (slot, nb), ok in zip(nbrs, valid) if ok)
                    acc = sum(g[slot] * prev[nb] for (slot, nb), ok in zip(nbrs, valid) if ok)
                    cur[k] = ((1 - gsum) * xv if lv is None else lv * xv) + acc
                for k in range(n):
                    r, col = pix(line, k)
                    out[b, c, r, col] = cur[k]
                prev = cur
    return out


def case(shape, K, Cg, seed, n_dirs=None, Cl=None):
    B, C, H, W = shape
    gen = torch.Generator().manual_seed(seed)
    cg = C if Cg == "C" else Cg
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    gshape = (B, K, cg, H, W) if n_dirs is None else (B, n_dirs, K, cg, H, W)
    g = torch.randn(gshape, generator=gen, dtype=torch.float64) * 0.8
    lam = None
    if Cl is not None:
        cl = C if Cl == "C" else Cl
        lshape = (B, cl, H, W) if n_dirs is None else (B, n_dirs, cl, H, W)
        lam = torch.rand(lshape, generator=gen, dtype=torch.float64) + 0.2
    return x, g, lam


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("K,Cg", [(1, 1), (3, "C"), (3, 1)])
@pytest.mark.parametrize("normalize", [None, "clip", "always", "gspn"])
@pytest.mark.parametrize("Cl,chunk", [(None, None), ("C", None), (1, 2), (None, 3)])
def test_reference_matches_scalar_oracle(direction, K, Cg, normalize, Cl, chunk):
    shape = (2, 2, 5, 4)
    seed = 1000 * DIRS.index(direction) + 100 * K + (7 if Cg == 1 else 0) + (3 if chunk else 0)
    x, g, lam = case(shape, K, Cg, seed=seed, Cl=Cl)
    got = propagate_ref(x, g, direction, normalize=normalize, input_weight=lam, chunk=chunk)
    want = oracle(x, g, direction, normalize, lam, chunk)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("merge", ["max", "mean", "sum", "none"])
def test_reference4_matches_oracle_merge(merge):
    x, g, lam = case((1, 2, 4, 3), 3, "C", seed=5, n_dirs=4, Cl=1)
    got = propagate4_ref(x, g, merge, normalize="gspn", input_weight=lam, chunk=2)
    hs = torch.stack([oracle(x, g[:, d], DIRS[d], "gspn", lam[:, d], 2) for d in range(4)])
    want = {"max": hs.amax(0), "mean": hs.mean(0), "sum": hs.sum(0), "none": hs.transpose(0, 1)}[merge]
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_gspn_normalisation_hand_values():
    # one pixel in the middle of a 3-wide line: all slots valid
    r = torch.tensor([0.0, math.log(3.0), -math.log(3.0)], dtype=torch.float64)  # sigmoids 1/2, 3/4, 1/4
    g = normalize_gates(r.view(1, 3, 1, 1, 1).expand(1, 3, 1, 1, 3).contiguous(), "gspn", direction="top_to_bottom")
    torch.testing.assert_close(g[0, :, 0, 0, 1], torch.tensor([1 / 3, 1 / 2, 1 / 6], dtype=torch.float64))
    # at column 0 (top_to_bottom) slot 0 has no neighbour: renormalised over slots 1, 2
    torch.testing.assert_close(g[0, :, 0, 0, 0], torch.tensor([0.0, 3 / 4, 1 / 4], dtype=torch.float64))
    torch.testing.assert_close(g[0, :, 0, 0, 2], torch.tensor([0.4, 0.6, 0.0], dtype=torch.float64))
    # left_to_right: the lateral index is the row
    g2 = normalize_gates(r.view(1, 3, 1, 1, 1).expand(1, 3, 1, 3, 1).contiguous(), "gspn", direction="left_to_right")
    torch.testing.assert_close(g2[0, :, 0, 0, 0], torch.tensor([0.0, 3 / 4, 1 / 4], dtype=torch.float64))
    with pytest.raises(ValueError, match="needs direction"):
        normalize_gates(torch.zeros(1, 3, 1, 2, 2), "gspn")


def test_valid_slots_layout():
    m = valid_slots(3, "right_to_left", 4, 5)
    assert not m[0, 0].any() and m[0, 1:].all() and not m[2, 3].any() and m[1].all()
    m = valid_slots(3, "bottom_to_top", 4, 5)
    assert not m[0, :, 0].any() and not m[2, :, 4].any() and m[0, :, 1:].all()


def test_one_way_closed_form_with_input_weight_and_chunks():
    # one row, left_to_right, one-way gate a, input weight l: h_t = l x_t + a h_{t-1}, restarting every 2
    a, lam = 0.5, 2.0
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64).view(1, 1, 1, 5)
    g = torch.full((1, 1, 1, 1, 5), a, dtype=torch.float64)
    l = torch.full((1, 1, 1, 5), lam, dtype=torch.float64)
    h = propagate_ref(x, g, "left_to_right", input_weight=l, chunk=2).flatten()
    want = [2.0, 4.0 + 0.5 * 2.0, 6.0, 8.0 + 0.5 * 6.0, 10.0]
    torch.testing.assert_close(h, torch.tensor(want, dtype=torch.float64))


def test_nan_in_unused_gates_is_dropped():
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    g = torch.full((1, 3, 1, 4, 4), 0.2, dtype=torch.float64)
    g[0, 0, 0, :, 0] = float("nan")  # slot 0 at column 0: no neighbour for top_to_bottom
    g[0, 2, 0, :, 3] = float("inf")  # slot 2 at the last column
    g[0, :, 0, 0, :] = float("nan")  # first line: never read
    for normalize in (None, "gspn"):
        gg = g.clone().requires_grad_(True)
        h = propagate_ref(x, gg, "top_to_bottom", normalize=normalize)
        assert torch.isfinite(h).all()
        h.sum().backward()
        assert torch.isfinite(gg.grad).all()
        assert (gg.grad[0, :, 0, 0] == 0).all()


def test_nan_in_used_gate_reaches_output_and_max_merge():
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    g = torch.full((1, 4, 3, 1, 3, 3), 0.2, dtype=torch.float64)
    g[0, 3, 1, 0, 1, 1] = float("nan")  # bottom_to_top, centre pixel, used
    out = propagate4_ref(x, g, "max")
    assert torch.isnan(out[0, 0, 1, 1]) and torch.isnan(out[0, 0, 0, 1])
    assert torch.isfinite(out[0, 0, 2]).all()


def test_inf_in_x_with_zero_gate_stays_inf():
    x = torch.zeros(1, 1, 1, 3, dtype=torch.float64)
    x[0, 0, 0, 1] = float("inf")
    g = torch.zeros(1, 1, 1, 1, 3, dtype=torch.float64)
    h = propagate_ref(x, g, "left_to_right").flatten()
    assert h[1] == float("inf") and h[0] == 0
    assert torch.isnan(h[2])  # the spec's sum has the term 0 * h_prev = 0 * inf


def test_max_merge_gradient_goes_to_first_nan_then_first_max():
    hs = torch.tensor([1.0, float("nan"), 3.0, float("nan")], dtype=torch.float64)
    x = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    # with a single pixel every direction returns x: route through the input weight instead
    lam = hs.view(1, 4, 1, 1, 1).clone().requires_grad_(True)
    g = torch.zeros(1, 4, 1, 1, 1, 1, dtype=torch.float64)
    out = propagate4_ref(x + 1, g, "max", input_weight=lam)
    assert torch.isnan(out).all()
    out.sum().backward()
    assert lam.grad.flatten().tolist()[1] == 1.0 and lam.grad.flatten()[[0, 2, 3]].eq(0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(dtype):
    x, g, lam = case((1, 3, 17, 9), 3, "C", seed=11, Cl="C")
    xh, gh, lh = x.to(dtype), g.to(dtype), lam.to(dtype)
    got = propagate_ref(xh, gh, "top_to_bottom", normalize="clip", input_weight=lh)
    assert got.dtype == dtype
    want = propagate_ref(xh.float(), gh.float(), "top_to_bottom", normalize="clip", input_weight=lh.float())
    torch.testing.assert_close(got, want.to(dtype), atol=0, rtol=0)


def test_docstring_examples_run():
    import doctest

    import spn.ops.normalize
    import spn.ops.reference

    for mod in (spn.ops.reference, spn.ops.normalize):
        res = doctest.testmod(mod, extraglobs={"torch": torch})
        assert res.attempted > 0 and res.failed == 0, mod.__name__
