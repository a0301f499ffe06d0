"""Hand-cut objects (spn.data.cutouts), their place in the composites, and the refiner's
``reach`` and ``flip`` inference settings."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spn.data.composites import CompositeDataset, compose, place_cutout
from spn.data.cutouts import load_cutouts, select_stamps, stamp_group, write_cutouts
from spn.inference_mask import MaskRefiner
from spn.models import create_model


def _ellipse_alpha(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return (((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.4 * w)) ** 2 <= 1).astype(np.uint8) * 255


def _stamps(root):
    """A photo-like cut-out, a flat drawing, a rectangle, one under cartoon/ and one under symbols/."""
    rng = np.random.default_rng(0)
    h, w = 80, 100
    alpha = _ellipse_alpha(h, w)
    photo = np.dstack([rng.integers(0, 256, (h, w, 3), dtype=np.uint8), alpha])
    flat = np.dstack([np.full((h, w, 3), 200, np.uint8), alpha])
    flat[..., 0][20:40] = 30
    rect = np.dstack([rng.integers(0, 256, (h, w, 3), dtype=np.uint8), np.full((h, w), 255, np.uint8)])
    files = {"animals/cats/cat1.png": photo, "animals/cats/cat2.png": photo[:, ::-1].copy(),
             "food/pear.png": photo[::-1].copy(), "animals/dog.png": photo, "people/kid.png": photo,
             "town/house_flat.png": flat, "town/window.png": rect,
             "animals/cartoon/tux.png": photo, "symbols/letters/a.png": photo}
    for rel, a in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a, "RGBA").save(root / rel)
    return files


def test_stamp_group_strips_trailing_digits():
    assert stamp_group("a/b/cat12.png") == "cat"
    assert stamp_group("x/apple_red_2.png") == "apple_red"
    assert stamp_group("x/7.png") == "7"


def test_the_rule_keeps_photographic_cut_outs_only(tmp_path):
    _stamps(tmp_path)
    assert select_stamps(tmp_path) == ["animals/cats/cat1.png", "animals/cats/cat2.png", "animals/dog.png",
                                       "food/pear.png", "people/kid.png"]


def test_write_and_load_cut_outs_by_split(tmp_path):
    root, out = tmp_path / "stamps", tmp_path / "corpus"
    files = _stamps(root)
    (out / "splits").mkdir(parents=True)
    entries = write_cutouts(out, "1.0", "GPL-2", max_side=50, root=root)
    assert len(entries) == 5 and {e["licence"] for e in entries} == {"GPL-2"}
    # groups sorted: cat, dog, kid, pear -> positions 1 (dog) to val, the two cats stay together
    side = {e["group"]: e["split"] for e in entries}
    assert side == {"cat": "train", "dog": "val", "kid": "train", "pear": "train"}
    train, val = load_cutouts(out, "train"), load_cutouts(out, "val")
    assert len(train) == 4 and len(val) == 1 and len(load_cutouts(out, "all")) == 5
    c = val[0]
    assert c.dtype == torch.uint8 and c.shape == (4, 40, 50)  # 80 x 100 shrunk to a longer side of 50
    # the alpha survives the resize: about the ellipse's share of the frame (pi * 0.4 * 0.4)
    assert abs(float(c[3].float().mean() / 255) - np.pi * 0.16) < 0.03
    assert (files["animals/dog.png"][..., 3] > 0).any()
    assert load_cutouts(tmp_path / "nothing", "train") == []


def test_place_cutout_covers_the_asked_fraction_and_clips_at_the_frame():
    c = torch.zeros(4, 20, 40, dtype=torch.uint8)
    c[:3] = 90
    c[3, :, :] = 255  # a full 20 x 40 rectangle: its area is known
    rng = np.random.default_rng(1)
    fg, a = place_cutout(rng, [c], (100, 100), centre=(50, 50), cover=(0.08, 0.08))
    assert abs(float(a.sum()) - 800) < 40  # 8 % of 100 x 100 = 800 pixels
    assert torch.allclose(fg[:, a > 0.99], torch.full_like(fg[:, a > 0.99], 90 / 255), atol=1e-4)
    fg, a = place_cutout(rng, [c], (100, 100), centre=(0, 0), cover=(0.08, 0.08))
    assert 150 < float(a.sum()) < 250  # a quarter of it is inside the frame


def test_composites_with_cut_outs_target_the_visible_object():
    rng = np.random.default_rng(0)
    photos = [torch.rand(3, 60, 80) for _ in range(3)]
    c = torch.zeros(4, 30, 30, dtype=torch.uint8)
    c[:3] = 255
    c[3] = torch.from_numpy(_ellipse_alpha(30, 30))
    for i in range(12):
        item = compose(np.random.default_rng([i, 7]), photos, (48, 64), [c])
        m = item["mask"].bool()
        assert 0 < int(m.sum()) < m.numel()
        assert item["image"].shape == (3, 48, 64) and item["coarse"].shape == (1, 48, 64)
    ds = CompositeDataset(photos=photos, size=(48, 64), length=2, cutouts=[c])
    assert ds.info()["cutouts"] == 1
    del rng


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = create_model("mask_refiner", guidance_width=4)
    with torch.no_grad():  # a model that does change the mask: a strong random correction map
        net.guidance.head.weight.normal_(0, 1.0)
    return net.eval()


def _scene():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    m = np.zeros((64, 80), np.float32)
    m[16:48, 20:60] = 1
    return img, m


def _chessboard_distance_to_contour(m):
    """Brute force: the chessboard distance of each pixel to the nearest pixel of the other side."""
    ys, xs = np.mgrid[0:m.shape[0], 0:m.shape[1]]
    out = np.full(m.shape, np.inf)
    for v in (0, 1):
        py, px = np.nonzero(m == v)
        sel = m != v
        d = np.maximum(np.abs(ys[sel][:, None] - py[None]), np.abs(xs[sel][:, None] - px[None])).min(1)
        out[sel] = d
    return out


def test_reach_keeps_the_coarse_mask_away_from_its_contour(tiny):
    img, m = _scene()
    free = MaskRefiner(tiny, crop=False, keep=False).refine_proba(img, m)
    held = MaskRefiner(tiny, crop=False, reach=0.05, keep=False).refine_proba(img, m)  # 0.05 * 80 = 4 pixels
    d = _chessboard_distance_to_contour(m)
    far = d > 4
    assert np.array_equal(held[far], m[far])
    assert np.array_equal(held[~far], free[~far])
    assert not np.array_equal(free[far] >= 0.5, m[far] >= 0.5)  # the fixture does change far pixels


def test_flip_averages_the_mirrored_pass(tiny):
    img, m = _scene()
    plain = MaskRefiner(tiny, crop=False, keep=False)
    a = plain.refine_proba(img, m)
    b = plain.refine_proba(img[:, ::-1].copy(), m[:, ::-1].copy())[:, ::-1]
    both = MaskRefiner(tiny, crop=False, flip=True, keep=False).refine_proba(img, m)
    np.testing.assert_allclose(both, 0.5 * (a + b), atol=1e-6)
    with pytest.raises(ValueError, match="reach"):
        MaskRefiner(tiny, reach=-1)
    with pytest.raises(ValueError, match="flip"):
        MaskRefiner(tiny, flip="yes")


def test_large_model_refines_exactly_the_masks_that_cover_large_cover(tiny):
    torch.manual_seed(1)
    other = create_model("mask_refiner", guidance_width=4)
    with torch.no_grad():
        other.guidance.head.weight.normal_(0, 1.0)
    other.eval()
    img, small = _scene()  # the object covers 32 * 40 / (64 * 80) = 25 % of the photo
    big = np.zeros_like(small)
    big[4:60, 6:74] = 1  # 56 * 68 / 5120 = 74 %
    gated = MaskRefiner(tiny, large_model=other, large_cover=0.45, keep=False)
    for m, want in ((small, tiny), (big, other)):
        expect = MaskRefiner(want, keep=False).refine_proba(img, m)
        np.testing.assert_array_equal(gated.refine_proba(img, m), expect)
    assert not np.array_equal(MaskRefiner(tiny, keep=False).refine_proba(img, big),
                              MaskRefiner(other, keep=False).refine_proba(img, big))  # the two differ
    # the threshold is inclusive: at exactly the mask's share the large model is used
    at = MaskRefiner(tiny, large_model=other, large_cover=0.25, keep=False).refine_proba(img, small)
    np.testing.assert_array_equal(at, MaskRefiner(other, keep=False).refine_proba(img, small))
    for bad in (0, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="large_cover"):
            MaskRefiner(tiny, large_model=other, large_cover=bad)
    with pytest.raises(TypeError, match="large_model"):
        MaskRefiner(tiny, large_model=torch.nn.Conv2d(1, 1, 1))
