"""The paper's theorems, checked numerically (Liu et al., NIPS 2017, Theorems 1-3, Eq. 8).

Theorem 1: the propagation is ``h = G x`` with ``G`` lower-triangular in scan order and rows
summing to one. Theorem 2: ``L = I - G = D - A`` is a graph Laplacian. Theorem 3: gates with
``sum_k |g_k| <= 1`` keep the scan stable. Plus the closed form of the one-way recurrence and
the semantics of ``normalize_gates``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spn.ops import (
    DIRECTIONS,
    affinity_matrix,
    degree_matrix,
    laplacian_matrix,
    normalize_gates,
    propagate,
    propagate4,
    propagate_ref,
    transformation_matrix,
)

F64 = dict(atol=1e-10, rtol=1e-10)


def rand_gates(shape, seed, lo=-1.0, hi=1.0, dtype=torch.float64, mode="clip"):
    gen = torch.Generator().manual_seed(seed)
    g = torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    return normalize_gates(g, mode).to(dtype) if mode else g.to(dtype)


def scan_order(H, W, direction):
    """Flat pixel indices (row-major) in the order the scan visits them, line by line."""
    idx = torch.arange(H * W).reshape(H, W)
    if direction in ("left_to_right", "right_to_left"):
        idx = idx.T  # lines are columns
    if direction in ("right_to_left", "bottom_to_top"):
        idx = idx.flip(0)
    return idx.reshape(-1)


CASES = [(d, K) for d in DIRECTIONS for K in (1, 3)]


# --------------------------------------------------------------------------- Theorem 1


@pytest.mark.parametrize("direction,K", CASES)
def test_G_times_x_is_the_propagation(direction, K):
    B, C, H, W = 2, 3, 4, 5
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    g = rand_gates((B, K, C, H, W), seed=8)
    h = propagate(x, g, direction)
    for b, c in [(0, 0), (1, 2), (0, 1)]:
        G = transformation_matrix(g, direction, b=b, c=c)
        assert G.shape == (H * W, H * W)
        torch.testing.assert_close(G @ x[b, c].reshape(-1), h[b, c].reshape(-1), **F64)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_G_is_the_jacobian(direction):
    """G computed from the recurrence equals autograd's Jacobian of the reference."""
    H, W = 3, 4
    g = rand_gates((1, 3, 1, H, W), seed=9)
    G = transformation_matrix(g, direction)
    J = torch.autograd.functional.jacobian(
        lambda v: propagate_ref(v.reshape(1, 1, H, W), g, direction).reshape(-1),
        torch.zeros(H * W, dtype=torch.float64),
    )
    torch.testing.assert_close(G, J, **F64)


@pytest.mark.parametrize("direction,K", CASES)
def test_G_rows_sum_to_one_and_triangular_in_scan_order(direction, K):
    H, W = 4, 5
    g = rand_gates((1, K, 1, H, W), seed=10)
    G = transformation_matrix(g, direction)
    torch.testing.assert_close(G.sum(dim=1), torch.ones(H * W, dtype=torch.float64), **F64)
    perm = scan_order(H, W, direction)
    Gs = G[perm][:, perm]
    assert torch.count_nonzero(torch.triu(Gs, diagonal=1)) == 0, "G must be lower-triangular in scan order"
    assert torch.count_nonzero(torch.tril(Gs, diagonal=-1)) > 0, "later lines must depend on earlier ones"
    # In row-major order G is generally NOT triangular for the reverse / horizontal scans:
    # the permutation matters (this makes the check above able to fail).
    if direction in ("right_to_left", "bottom_to_top") or (direction == "left_to_right" and K == 3):
        assert torch.count_nonzero(torch.triu(G, diagonal=1)) > 0
    # first scanned line: identity rows
    n = W if direction in ("top_to_bottom", "bottom_to_top") else H
    first = perm[:n]
    torch.testing.assert_close(G[first], torch.eye(H * W, dtype=torch.float64)[first], atol=0, rtol=0)


def test_G_rows_sum_to_one_even_with_large_or_negative_gates():
    """Theorem 1 does not need normalised gates: out-of-range neighbours are dropped, not renormalised."""
    g = rand_gates((1, 3, 1, 4, 4), seed=11, lo=-3.0, hi=3.0, mode=None)
    for d in DIRECTIONS:
        G = transformation_matrix(g, d)
        torch.testing.assert_close(G.sum(dim=1), torch.ones(16, dtype=torch.float64), atol=1e-8, rtol=1e-8)


def test_constant_map_is_a_fixed_point():
    """Rows summing to one means a constant map propagates to itself, whatever the gates."""
    x = torch.full((2, 3, 5, 6), 2.5, dtype=torch.float64)
    g4 = rand_gates((2, 4, 3, 3, 5, 6), seed=12)
    for merge in ("max", "mean"):
        torch.testing.assert_close(propagate4(x, g4, merge), x, **F64)


def test_mean_merge_is_the_average_transformation():
    H, W = 3, 4
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(1, 1, H, W, generator=gen, dtype=torch.float64)
    g4 = rand_gates((1, 4, 3, 1, H, W), seed=14)
    Gm = sum(transformation_matrix(g4[:, d], d) for d in range(4)) / 4
    torch.testing.assert_close(propagate4(x, g4, "mean").reshape(-1), Gm @ x.reshape(-1), **F64)


# --------------------------------------------------------------------------- Theorem 2


@pytest.mark.parametrize("direction,K", CASES)
def test_laplacian_affinity_degree(direction, K):
    H, W = 4, 3
    g = rand_gates((1, K, 2, H, W), seed=15)
    c = 1
    G = transformation_matrix(g, direction, c=c)
    A = affinity_matrix(g, direction, c=c)
    D = degree_matrix(g, direction, c=c)
    L = laplacian_matrix(g, direction, c=c)
    eye = torch.eye(H * W, dtype=torch.float64)
    # L = I - G has zero row sums
    torch.testing.assert_close(L, eye - G, **F64)
    torch.testing.assert_close(L.sum(dim=1), torch.zeros(H * W, dtype=torch.float64), atol=1e-10, rtol=0)
    # A is G off the diagonal
    assert torch.all(torch.diagonal(A) == 0)
    off = ~torch.eye(H * W, dtype=torch.bool)
    torch.testing.assert_close(A[off], G[off], atol=0, rtol=0)
    # D = diag(A 1)
    torch.testing.assert_close(D, torch.diag(A @ torch.ones(H * W, dtype=torch.float64)), **F64)
    assert torch.count_nonzero(D - torch.diag(torch.diagonal(D))) == 0
    # G = I - D + A, and L = D - A
    torch.testing.assert_close(G, eye - D + A, **F64)
    torch.testing.assert_close(L, D - A, **F64)


def test_matrices_use_the_requested_slice():
    g = rand_gates((2, 3, 2, 3, 3), seed=16)
    Gs = {(b, c): transformation_matrix(g, 0, b=b, c=c) for b in range(2) for c in range(2)}
    for key, G in Gs.items():
        for other, G2 in Gs.items():
            if key != other:
                assert not torch.allclose(G, G2)
    shared = rand_gates((1, 3, 1, 3, 3), seed=17)
    torch.testing.assert_close(transformation_matrix(shared, 0, c=0), transformation_matrix(shared, 0, c=5))


# --------------------------------------------------------------------------- Theorem 3


def test_long_scan_stays_finite_with_normalised_gates():
    B, C, H, W = 1, 1, 4, 4096
    gen = torch.Generator().manual_seed(18)
    x = torch.randn(B, C, H, W, generator=gen)
    raw = torch.rand(B, 3, C, H, W, generator=gen) * 4 - 2  # gates in [-2, 2]
    g = normalize_gates(raw)
    assert (g.abs().sum(dim=1) <= 1 + 1e-6).all()
    h = propagate(x, g, "left_to_right")
    assert torch.isfinite(h).all()
    # |h_t| <= |1 - sum g| |x_t| + sum |g| max|h_{t-1}| <= 2 max|x| + max|h_{t-1}|
    assert h.abs().max() <= 2 * W * x.abs().max()
    # and in practice it stays on the scale of x, far below that bound
    assert h.abs().max() < 100 * x.abs().max()


def test_unnormalised_gates_blow_up():
    """Gates summing to 1.5 amplify the previous line by 1.5 per step: 1.5**4096 overflows."""
    B, C, H, W = 1, 1, 4, 4096
    x = torch.zeros(B, C, H, W)
    x[..., 0] = 1.0  # h_0 = 1, later x = 0: h_t = 1.5 * h_{t-1}
    g = torch.full((B, 3, C, H, W), 0.5)
    g[:, 1, :, 0] = 1.0  # row 0 has no k-1 neighbour, row H-1 no k+1: keep the sum at 1.5
    g[:, 1, :, -1] = 1.0
    assert torch.allclose(g[:, 1:].sum(1)[:, :, 0], torch.tensor(1.5))
    h = propagate(x, g, "left_to_right")
    torch.testing.assert_close(h[..., 40], torch.full_like(h[..., 40], 1.5**40), rtol=1e-4, atol=0)
    assert not torch.isfinite(h[..., -1]).all()
    # the same gates, normalised (Theorem 3), stay bounded (non-negative: within [min x, max x])
    hn = propagate(x, normalize_gates(g), "left_to_right")
    assert torch.isfinite(hn).all()
    assert hn.min() >= 0 and hn.max() <= 1 + 1e-6


@pytest.mark.parametrize("direction,K", CASES)
def test_non_negative_gates_keep_h_in_range(direction, K):
    B, C, H, W = 2, 2, 6, 7
    gen = torch.Generator().manual_seed(20)
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64) * 3
    g = normalize_gates(torch.rand(B, K, C, H, W, generator=gen, dtype=torch.float64) * 2)
    assert (g >= 0).all()
    h = propagate(x, g, direction)
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    assert (h >= lo - 1e-12).all() and (h <= hi + 1e-12).all()


def test_negative_gates_can_leave_the_range():
    """Contrast to the test above: with negative gates h is no longer a convex combination."""
    gen = torch.Generator().manual_seed(21)
    x = torch.rand(1, 1, 8, 8, generator=gen, dtype=torch.float64)
    g = torch.full((1, 1, 1, 8, 8), -0.9, dtype=torch.float64)
    h = propagate(x, g, "top_to_bottom")
    assert (h > x.max()).any() or (h < x.min()).any()


# --------------------------------------------------------------------------- one-way closed form


def closed_form_1d(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """h_t = (1 - g_t) x_t + g_t h_{t-1}, h_0 = x_0, solved explicitly:
    h_t = x_0 prod_{r=1..t} g_r + sum_{s=1..t} x_s (1 - g_s) prod_{r=s+1..t} g_r."""
    n = len(x)
    h = np.zeros(n)
    for t in range(n):
        total = x[0] * math.prod(g[1 : t + 1])
        for s in range(1, t + 1):
            total += x[s] * (1 - g[s]) * math.prod(g[s + 1 : t + 1])
        h[t] = total
    return h


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("Cg", [1, 2])
def test_one_way_equals_closed_form(direction, Cg):
    B, C, H, W = 2, 2, 5, 6
    gen = torch.Generator().manual_seed(22)
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    g = torch.rand(B, 1, Cg, H, W, generator=gen, dtype=torch.float64) * 1.6 - 0.8
    h = propagate(x, g, direction).numpy()
    xn, gn = x.numpy(), g.numpy()
    want = np.zeros_like(xn)
    for b in range(B):
        for c in range(C):
            xs, gs = xn[b, c], gn[b, 0, c if Cg == C else 0]
            if direction in ("left_to_right", "right_to_left"):
                xs, gs = xs.T, gs.T  # scan over columns: make the scan axis 0
            if direction in ("right_to_left", "bottom_to_top"):
                xs, gs = xs[::-1], gs[::-1]
            out = np.stack([closed_form_1d(xs[:, k], gs[:, k]) for k in range(xs.shape[1])], axis=1)
            if direction in ("right_to_left", "bottom_to_top"):
                out = out[::-1]
            if direction in ("left_to_right", "right_to_left"):
                out = out.T
            want[b, c] = out
    np.testing.assert_allclose(h, want, atol=1e-10, rtol=1e-10)


# --------------------------------------------------------------------------- normalize_gates


@pytest.mark.parametrize("layout", [(2, 3, 2, 4, 5), (2, 4, 3, 2, 4, 5)], ids=["5d", "6d"])
def test_normalize_clip_semantics(layout):
    gen = torch.Generator().manual_seed(23)
    g = (torch.rand(layout, generator=gen, dtype=torch.float64) * 2 - 1) * 0.9
    s = g.abs().sum(dim=-4, keepdim=True)
    assert (s > 1).any() and (s <= 1).any(), "fixture must mix both cases"
    out = normalize_gates(g, "clip")
    so = out.abs().sum(dim=-4, keepdim=True)
    assert (so <= 1 + 1e-12).all()
    small = (s <= 1).expand_as(g)
    # where s <= 1: untouched; where s > 1: divided by s, so the sum is exactly 1
    torch.testing.assert_close(out[small], g[small], atol=0, rtol=0)
    torch.testing.assert_close(out[~small], (g / s)[~small], **F64)
    torch.testing.assert_close(so[s > 1], torch.ones_like(so[s > 1]), **F64)
    assert torch.equal(torch.sign(out), torch.sign(g))
    assert normalize_gates(g).equal(out), "clip is the default"


@pytest.mark.parametrize("layout", [(2, 3, 2, 4, 5), (1, 4, 1, 1, 3, 3)], ids=["5d", "6d"])
def test_normalize_always_semantics(layout):
    gen = torch.Generator().manual_seed(24)
    g = (torch.rand(layout, generator=gen, dtype=torch.float64) * 2 - 1) * 0.3
    out = normalize_gates(g, "always")
    s = g.abs().sum(dim=-4, keepdim=True)
    torch.testing.assert_close(out, g / s, **F64)
    torch.testing.assert_close(out.abs().sum(dim=-4), torch.ones_like(out.abs().sum(dim=-4)), **F64)
    assert torch.equal(torch.sign(out), torch.sign(g))


def test_normalize_always_zero_gates_stay_zero():
    g = torch.zeros(1, 3, 1, 2, 2)
    g[0, :, 0, 1, 1] = torch.tensor([0.2, -0.1, 0.1])
    out = normalize_gates(g, "always")
    assert torch.isfinite(out).all()
    assert torch.all(out[..., 0, 0] == 0)
    torch.testing.assert_close(out[0, :, 0, 1, 1], torch.tensor([0.5, -0.25, 0.25]))


def test_normalize_is_differentiable():
    g = (torch.rand(1, 3, 1, 3, 3, dtype=torch.float64) * 2).requires_grad_(True)
    for mode in ("clip", "always"):
        assert torch.autograd.gradcheck(lambda t: normalize_gates(t, mode), (g,))
