"""``spn.nn.SpatialPropagation``: the module equals the functional operator, gate layouts,
connections, normalisation, and gradients reaching the layer that predicts the gates."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from spn.nn import CONNECTIONS, SpatialPropagation, reshape_gates
from spn.ops import normalize_gates, propagate, propagate4, propagate4_ref

F64 = dict(atol=1e-10, rtol=1e-10)


def data(B=2, C=3, H=5, W=6, K=3, Cg=3, seed=0, scale=1.5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    g = (torch.rand(B, 4, K, Cg, H, W, generator=gen, dtype=torch.float64) * 2 - 1) * scale
    return x, g


@pytest.mark.parametrize("merge", ["max", "mean", "sum"])
@pytest.mark.parametrize("normalize", ["clip", "always"])
@pytest.mark.parametrize("connection", ["three_way", "one_way"])
@pytest.mark.parametrize("shared", [False, True], ids=["CgC", "Cg1"])
def test_module_equals_functional(connection, normalize, merge, shared):
    K = CONNECTIONS[connection]
    x, g = data(K=K, Cg=1 if shared else 3)
    m = SpatialPropagation(connection=connection, merge=merge, normalize=normalize)
    want = propagate4(x, normalize_gates(g, normalize), merge)
    torch.testing.assert_close(m(x, g), want, **F64)
    torch.testing.assert_close(m(x, g), propagate4_ref(x, normalize_gates(g, normalize), merge), **F64)


def test_defaults_are_the_paper():
    m = SpatialPropagation()
    assert (m.connection, m.k, m.merge, m.normalize) == ("three_way", 3, "max", "clip")
    x, g = data()
    torch.testing.assert_close(m(x, g), propagate4(x, normalize_gates(g, "clip"), "max"), **F64)
    assert "three_way" in repr(m) and "max" in repr(m) and "clip" in repr(m)
    assert list(m.parameters()) == [], "the layer has no weights of its own: the gates are inputs"


def test_normalize_none_uses_gates_as_given():
    x, g = data(scale=0.3)
    g[:, :, :, :, 0, 0] = 0.9  # sum |g| = 2.7 at some pixels: clip would change them
    m = SpatialPropagation(normalize=None)
    torch.testing.assert_close(m(x, g), propagate4(x, g, "max"), **F64)
    assert not torch.allclose(m(x, g), SpatialPropagation(normalize="clip")(x, g))


def test_normalisation_matters_for_large_gates():
    x, g = data(scale=3.0)
    a = SpatialPropagation(normalize="clip")(x, g)
    b = SpatialPropagation(normalize=None)(x, g)
    assert not torch.allclose(a, b)
    assert a.abs().max() < b.abs().max()


@pytest.mark.parametrize("connection", ["three_way", "one_way"])
@pytest.mark.parametrize("Cg", [1, 3])
def test_flat_gates_equal_6d_layout(connection, Cg):
    """Flat channel index (d*K + j)*Cg + c maps to [d, j, c]."""
    K = CONNECTIONS[connection]
    B, C, H, W = 2, 3, 4, 5
    x, g6 = data(B, C, H, W, K=K, Cg=Cg, seed=3)
    flat = torch.empty(B, 4 * K * Cg, H, W, dtype=torch.float64)
    for d in range(4):
        for j in range(K):
            for c in range(Cg):
                flat[:, (d * K + j) * Cg + c] = g6[:, d, j, c]
    torch.testing.assert_close(reshape_gates(flat, C, K), g6, atol=0, rtol=0)
    assert reshape_gates(g6, C, K) is g6
    m = SpatialPropagation(connection=connection)
    torch.testing.assert_close(m(x, flat), m(x, g6), atol=0, rtol=0)


def test_flat_gates_with_one_channel_are_ambiguity_free():
    """C = 1: 4*K*C == 4*K; both readings coincide."""
    x, g6 = data(1, 1, 3, 3, K=3, Cg=1, seed=4)
    flat = g6.reshape(1, 12, 3, 3)
    m = SpatialPropagation()
    torch.testing.assert_close(m(x, flat), m(x, g6), atol=0, rtol=0)


def test_one_way_and_three_way_differ():
    x, g3 = data(K=3, seed=5, scale=0.5)
    g1 = g3[:, :, 1:2]  # the straight-ahead slot only
    one = SpatialPropagation("one_way")(x, g1)
    three_straight = SpatialPropagation("three_way")(x, torch.cat([torch.zeros_like(g1), g1, torch.zeros_like(g1)], 2))
    # three-way with zero diagonal gates is one-way
    torch.testing.assert_close(one, three_straight, **F64)
    assert not torch.allclose(SpatialPropagation("three_way")(x, g3), one)


def test_module_per_direction_matches_single_scans():
    x, g = data(seed=6, scale=0.4)
    gn = normalize_gates(g)
    hs = torch.stack([propagate(x, gn[:, d], d) for d in range(4)])
    torch.testing.assert_close(SpatialPropagation(merge="max")(x, g), hs.max(0).values, **F64)
    torch.testing.assert_close(SpatialPropagation(merge="mean")(x, g), hs.mean(0), **F64)


@pytest.mark.parametrize("connection", ["three_way", "one_way"])
@pytest.mark.parametrize("normalize", ["clip", "always", None])
def test_gradient_reaches_gate_conv(connection, normalize):
    torch.manual_seed(7)
    K = CONNECTIONS[connection]
    C = 3
    feat = torch.randn(2, 4, 6, 7)
    x = torch.randn(2, C, 6, 7, requires_grad=True)
    conv = nn.Conv2d(4, 4 * K * C, 3, padding=1)
    m = SpatialPropagation(connection, normalize=normalize)
    gates = conv(feat)
    if normalize is None:
        gates = torch.tanh(gates) / 3  # keep sum |g| <= 1 without normalisation
    out = m(x, gates)
    loss = (out - torch.randn_like(out)).square().mean()
    loss.backward()
    for p in conv.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gradient_matches_reference_through_normalisation():
    x, g = data(2, 2, 4, 5, Cg=2, seed=8)
    x1, g1 = x.clone().requires_grad_(True), g.clone().requires_grad_(True)
    x2, g2 = x.clone().requires_grad_(True), g.clone().requires_grad_(True)
    w = torch.randn(2, 2, 4, 5, dtype=torch.float64)
    (SpatialPropagation(merge="mean")(x1, g1) * w).sum().backward()
    (propagate4_ref(x2, normalize_gates(g2), "mean") * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, **F64)
    torch.testing.assert_close(g1.grad, g2.grad, **F64)


def test_small_training_step_reduces_loss():
    """A gate-predicting conv learns to smooth a noisy map towards a clean one (few steps)."""
    torch.manual_seed(9)
    clean = torch.zeros(1, 1, 12, 12)
    clean[..., :, 6:] = 1.0
    noisy = clean + 0.3 * torch.randn_like(clean)
    conv = nn.Conv2d(1, 12, 3, padding=1)
    m = SpatialPropagation(merge="mean")
    opt = torch.optim.Adam(conv.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (m(noisy, conv(clean)) - clean).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_module_runs_in_float32_and_keeps_dtype():
    x, g = data()
    out = SpatialPropagation()(x.float(), g.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, SpatialPropagation()(x, g).float(), atol=1e-5, rtol=1e-5)


def test_state_dict_is_empty_and_module_is_deterministic():
    m = SpatialPropagation()
    assert m.state_dict() == {}
    x, g = data(seed=10)
    torch.testing.assert_close(m(x, g), m(x, g), atol=0, rtol=0)
