"""Refinement peers: registry, dense CRF, guided filter, domain transform, bilinear."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from spn.peers import (box_filter, domain_transform_filter, get_peer, guided_filter, list_peers)
from spn.peers.domain_transform import edge_gates


def _scene(H=80, W=96, seed=0):
    """A sharp two-class image (disc + square), its mask and a blurred 8x-downsampled coarse map."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    mask = ((((yy - 40) ** 2 + (xx - 40) ** 2) < 22 ** 2) | ((xx > 70) & (yy > 8) & (yy < 34))).long()
    img = torch.stack([0.15 + 0.7 * mask, 0.8 - 0.6 * mask, 0.4 + 0.1 * mask]).float()
    img = (img + 0.03 * torch.randn(3, H, W, generator=g)).clamp(0, 1)
    onehot = F.one_hot(mask, 2).permute(2, 0, 1).float()
    low = F.avg_pool2d(onehot[None], 8)
    coarse = F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)
    coarse = F.avg_pool2d(F.pad(coarse, (3, 3, 3, 3), mode="replicate"), 7, stride=1)[0]
    coarse = coarse / coarse.sum(0, keepdim=True)
    return img, mask, coarse


def _iou(probs, mask):
    pred = probs.argmax(0)
    return float(((pred == 1) & (mask == 1)).sum() / ((pred == 1) | (mask == 1)).sum())


def _boundary_error(probs, mask):
    """Mean |p(class 1) - GT| over a band around the GT boundary (lower = sharper and right)."""
    m = mask.float()[None, None]
    band = (F.max_pool2d(m, 7, 1, 3) - (-F.max_pool2d(-m, 7, 1, 3)))[0, 0] > 0
    return float((probs[1] - mask.float()).abs()[band].mean())


def _assert_probs(q, K, H, W):
    assert q.shape == (K, H, W) and q.dtype == torch.float32
    assert torch.isfinite(q).all()
    assert float(q.min()) >= 0
    assert torch.allclose(q.sum(0), torch.ones(H, W), atol=1e-4)


def test_registry():
    assert set(list_peers()) >= {"bilinear", "densecrf", "guided_filter", "domain_transform"}
    with pytest.raises(ValueError, match="bilinear, densecrf, guided_filter"):
        get_peer("bm3d")
    with pytest.raises(TypeError, match="radius_px"):
        get_peer("guided_filter", radius_px=3)
    with pytest.raises(ValueError, match="eps"):
        get_peer("guided_filter", eps=-1.0)
    with pytest.raises(ValueError, match="sigma_r"):
        get_peer("domain_transform", sigma_r=0)
    with pytest.raises(TypeError):
        get_peer("bilinear", strength=2)


def test_input_validation():
    peer = get_peer("guided_filter")
    img, mask, coarse = _scene(16, 16)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        peer.refine(img[:2], coarse)
    with pytest.raises(ValueError, match="differ in H, W"):
        peer.refine(img, coarse[:, :8])
    with pytest.raises(TypeError):
        peer.refine(img.numpy(), coarse)
    with pytest.raises(ValueError, match="NaN"):
        peer.refine(img, coarse * float("nan"))


def test_bilinear_is_the_coarse_input():
    img, mask, coarse = _scene(20, 24)
    q = get_peer("bilinear").refine(img, coarse)
    assert torch.equal(q, coarse) and q.data_ptr() != coarse.data_ptr()


def test_box_filter_matches_brute_force():
    x = torch.randn(2, 7, 9, dtype=torch.float64)
    r = 2
    got = box_filter(x, r)
    want = torch.zeros_like(x)
    for i in range(7):
        for j in range(9):
            want[:, i, j] = x[:, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].sum((-1, -2))
    assert torch.allclose(got, want)


def test_guided_filter_identities():
    g = torch.Generator().manual_seed(1)
    src = torch.rand(2, 12, 14, generator=g, dtype=torch.float64)
    # a constant guide makes the filter a (doubled) box mean: a = 0, q = mean(mean(p))
    flat = torch.full((3, 12, 14), 0.5, dtype=torch.float64)
    n = box_filter(torch.ones(1, 12, 14, dtype=torch.float64), 2)
    twice = box_filter(box_filter(src, 2) / n, 2) / n
    assert torch.allclose(guided_filter(flat, src, 2, 1e-2), twice, atol=1e-10)
    # filtering the guide's own channel with a tiny eps keeps it (edge-preserving)
    guide = torch.rand(3, 12, 14, generator=g, dtype=torch.float64)
    out = guided_filter(guide, guide[:1], 2, 1e-8)
    assert torch.allclose(out, guide[:1], atol=1e-4)


def test_guided_filter_keeps_probabilities_valid_and_sharpens_edges():
    img, mask, coarse = _scene()
    peer = get_peer("guided_filter", radius=6, eps=1e-3)
    q = peer.refine(img, coarse)
    _assert_probs(q, 2, *mask.shape)
    assert _iou(q, mask) > _iou(coarse, mask) + 0.01
    assert _boundary_error(q, mask) < 0.7 * _boundary_error(coarse, mask)
    assert peer.config() == {"name": "guided_filter", "radius": 6, "eps": 1e-3}


def test_domain_transform_is_the_recursive_filter():
    img, mask, coarse = _scene(16, 16)
    img, coarse = img[:, 4:10, 2:11].contiguous(), coarse[:, 4:10, 2:11].contiguous()
    sigma_s, sigma_r = 10.0, 0.3
    g = edge_gates(img, "left_to_right", sigma_s, sigma_s, sigma_r)[0, 0, 0]
    # hand-written recursion along each row, left to right
    x = coarse[1]
    want = torch.empty_like(x)
    want[:, 0] = x[:, 0]
    for j in range(1, 9):
        d = 1 + sigma_s / sigma_r * (img[:, :, j] - img[:, :, j - 1]).abs().sum(0)
        a = torch.exp(torch.tensor(-math.sqrt(2) / sigma_s) * d)
        assert torch.allclose(g[:, j], a)
        want[:, j] = (1 - a) * x[:, j] + a * want[:, j - 1]
    from spn.ops import propagate
    got = propagate(coarse[None], g[None, None, None].contiguous(), "left_to_right")[0, 1]
    assert torch.allclose(got, want, atol=1e-6)
    assert bool((g > 0).all()) and bool((g <= 1).all())


def test_domain_transform_refines():
    img, mask, coarse = _scene()
    q = get_peer("domain_transform").refine(img, coarse)
    _assert_probs(q, 2, *mask.shape)
    assert _iou(q, mask) > _iou(coarse, mask)
    # a flat image: plain smoothing, mass is preserved approximately and values stay in range
    flat = torch.full_like(img, 0.5)
    s = domain_transform_filter(flat, coarse, 10.0, 0.2, 2)
    assert float(s.min()) >= -1e-6 and float(s.max()) <= 1 + 1e-6


def test_densecrf_improves_a_blurred_coarse_map():
    pytest.importorskip("pydensecrf.densecrf")
    img, mask, coarse = _scene()
    peer = get_peer("densecrf", iterations=5)
    q = peer.refine(img, coarse)
    _assert_probs(q, 2, *mask.shape)
    assert _iou(q, mask) > _iou(coarse, mask) + 0.01
    assert _boundary_error(q, mask) < _boundary_error(coarse, mask)
    with pytest.raises(TypeError, match="valid are"):
        get_peer("densecrf", sigma=3)
    with pytest.raises(ValueError, match="iterations"):
        get_peer("densecrf", iterations=0)


def test_densecrf_missing_dependency_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(RuntimeError, match="pip install pydensecrf2"):
        get_peer("densecrf")


class _TinySet:
    num_classes = 2
    class_names = ["bg", "fg"]
    ignore_index = 255

    def __init__(self, n=2):
        self.items = []
        for i in range(n):
            img, mask, coarse = _scene(48, 56, seed=i)
            self.items.append({"image": img, "mask": mask, "coarse": coarse, "name": f"s{i}"})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_densecrf_grid_search_picks_the_best_setting():
    pytest.importorskip("pydensecrf.densecrf")
    from spn.peers.densecrf import grid_search
    ds = _TinySet(2)
    # compat 0 switches the pairwise terms off: the CRF returns the coarse map (worse IoU)
    res = grid_search(ds, {"bil_compat": [0.0, 10.0], "gauss_compat": [0.0, 3.0]}, limit=2)
    assert len(res["results"]) == 4 and res["images"] == 2
    best = max(r["mean_iou"] for r in res["results"])
    assert res["best_mean_iou"] == best
    assert res["best"]["bil_compat"] == 10.0
    off = [r for r in res["results"] if r["params"]["bil_compat"] == 0 and r["params"]["gauss_compat"] == 0][0]
    assert off["mean_iou"] < best
    with pytest.raises(ValueError, match="unknown parameter"):
        grid_search(ds, {"sxy": [1.0]})
