"""The mask refiner's final guided filter (``MaskRefiner(snap=True)``) and the strip-wise guided
filter it runs (``spn.image.filters``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spn.image.filters import box_filter, guided_filter, guided_filter_strips
from spn.inference_mask import MaskRefiner, crop_box, save_weights
from spn.models import create_model


def _brute_guided(I: np.ndarray, p: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s algorithm 1, windows clipped at the border, written with explicit loops."""
    H, W = p.shape
    a = np.zeros((H, W, 3))
    b = np.zeros((H, W))
    for y in range(H):
        for x in range(W):
            win = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
            Iw = I[:, win[0], win[1]].reshape(3, -1)
            pw = p[win].reshape(-1)
            mu, mp = Iw.mean(1), pw.mean()
            cov = (Iw @ Iw.T) / Iw.shape[1] - np.outer(mu, mu)
            ak = np.linalg.solve(cov + eps * np.eye(3), (Iw * pw).mean(1) - mu * mp)
            a[y, x], b[y, x] = ak, mp - ak @ mu
    q = np.zeros((H, W))
    for y in range(H):
        for x in range(W):
            win = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
            q[y, x] = a[win].reshape(-1, 3).mean(0) @ I[:, y, x] + b[win].mean()
    return q


@pytest.mark.parametrize("max_pixels", [13 * 1, 13 * 4, 13 * 7, 10 ** 6])
def test_strips_give_the_whole_image_filter(max_pixels):
    g = torch.Generator().manual_seed(0)
    I = torch.rand(3, 23, 13, generator=g, dtype=torch.float64)
    p = torch.rand(1, 23, 13, generator=g, dtype=torch.float64)
    want = _brute_guided(I.numpy(), p[0].numpy(), 2, 1e-2)
    got = guided_filter_strips(I, p, 2, 1e-2, max_pixels=max_pixels)
    np.testing.assert_allclose(got[0].numpy(), want, atol=1e-9)
    np.testing.assert_allclose(guided_filter(I, p, 2, 1e-2)[0].numpy(), want, atol=1e-9)
    assert box_filter(torch.ones(1, 4, 4), 1)[0].tolist()[0] == [4.0, 6.0, 6.0, 4.0]


def _scene():
    # a bright square on a dark, slightly noisy photo; the mask is the square shifted by 3 pixels
    g = np.random.default_rng(1)
    img = np.full((64, 80, 3), 40, np.uint8)
    img[20:44, 30:54] = 210
    img = np.clip(img + g.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((64, 80), bool)
    truth[20:44, 30:54] = True
    mask = np.zeros((64, 80), np.float32)
    mask[23:47, 33:57] = 1
    return img, truth, mask


def test_snap_is_the_guided_filter_of_the_refined_probability_inside_the_crop():
    torch.manual_seed(0)
    net = create_model("mask_refiner", guidance_width=4)
    img, _, mask = _scene()
    plain = MaskRefiner(net, reach=0.1).refine_proba(img, mask)
    snapped = MaskRefiner(net, reach=0.1, snap=True, snap_radius=3, snap_eps=1e-2).refine_proba(img, mask)
    y0, y1, x0, x1 = crop_box(torch.from_numpy(mask >= 0.5), 0.5, 16)
    guide = torch.from_numpy(img).permute(2, 0, 1).double() / 255
    want = guided_filter(guide[:, y0:y1, x0:x1], torch.from_numpy(plain)[None, y0:y1, x0:x1].double(), 3, 1e-2)
    want = want[0].clamp(0, 1).numpy()
    np.testing.assert_allclose(snapped[y0:y1, x0:x1], want, atol=1e-4)
    outside = np.ones_like(mask, bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(snapped[outside], plain[outside])
    assert snapped.min() >= 0 and snapped.max() <= 1


def test_snap_moves_a_shifted_boundary_onto_the_photos_edge():
    # an untrained refiner returns the coarse mask (its initial gates keep it); the guided filter
    # alone then pulls the 0.5 level towards the square's real edge
    torch.manual_seed(0)
    net = create_model("mask_refiner", guidance_width=4)
    img, truth, mask = _scene()

    def iou(m):
        return (m & truth).sum() / (m | truth).sum()

    plain = MaskRefiner(net).refine(img, mask)
    snapped = MaskRefiner(net, snap=True).refine(img, mask)
    assert iou(snapped) > iou(plain) + 0.1


def test_snap_settings_are_checked_and_stored(tmp_path):
    net = create_model("mask_refiner", guidance_width=4)
    for kw in ({"snap": 1}, {"snap_radius": 0}, {"snap_radius": 2.5}, {"snap_eps": 0}, {"snap_eps": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            MaskRefiner(net, **kw)
    save_weights(net, tmp_path / "w.safetensors", {"snap": True, "snap_radius": 4, "snap_eps": 0.01})
    r = MaskRefiner.from_weights((tmp_path / "w.safetensors").read_bytes(), "w")
    assert (r.snap, r.snap_radius, r.snap_eps) == (True, 4, 0.01)
    assert not MaskRefiner.from_weights((tmp_path / "w.safetensors").read_bytes(), "w", snap=False).snap


def test_snap_computes_only_near_changes_and_equals_the_whole_box_filter():
    from spn.inference_mask import snap

    g = torch.Generator().manual_seed(3)
    img = torch.rand(3, 70, 90, generator=g, dtype=torch.float64)
    prob = torch.zeros(70, 90, dtype=torch.float64)
    prob[30:40, 50:60] = 1.0
    prob[35, 52] = 0.3  # a soft pixel inside
    box = (5, 68, 10, 88)
    want = prob.clone()
    y0, y1, x0, x1 = box
    want[y0:y1, x0:x1] = guided_filter(img[:, y0:y1, x0:x1], prob[None, y0:y1, x0:x1], 4, 1e-3)[0].clamp(0, 1)
    got = snap(img, prob.clone(), box, 4, 1e-3)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-9)
    # far from the square the filter of a constant is that constant: untouched
    assert torch.equal(got[:20], prob[:20])
    # a constant map comes back as it is
    flat = torch.full((20, 20), 0.25, dtype=torch.float64)
    assert torch.equal(snap(img[:, :20, :20], flat.clone(), (0, 20, 0, 20)), flat)


def test_spn_refine_snap_options_override_the_stored_setting(tmp_path, monkeypatch, capsys):
    from PIL import Image

    import spn.inference_mask as im
    from spn.cli import main

    torch.manual_seed(0)
    f = tmp_path / "w.safetensors"
    save_weights(create_model("mask_refiner", guidance_width=4), f, {"snap": True}, half=False)
    monkeypatch.setattr(im, "shipped_weights", lambda: (f.read_bytes(), str(f)))
    monkeypatch.setattr(im, "shipped_large_weights", lambda: (f.read_bytes(), str(f)))
    monkeypatch.setattr(im, "_SHIPPED", [])
    img, _, mask = _scene()
    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "m.png")
    out = {}
    for flag in ([], ["--no-snap"], ["--snap"]):
        name = tmp_path / f"out{len(out)}.npy"
        assert main(["refine", str(tmp_path / "img.png"), "--mask", str(tmp_path / "m.png"), "--soft",
                     "--out", str(name), *flag]) == 0, capsys.readouterr().err
        out[" ".join(flag)] = np.load(name)
    stored = MaskRefiner.from_weights(f.read_bytes(), "w")  # its stored setting: snap on
    assert stored.snap
    np.testing.assert_allclose(out[""], stored.refine_proba(img, mask), atol=1e-6)
    np.testing.assert_allclose(out["--no-snap"], MaskRefiner(stored.model).refine_proba(img, mask), atol=1e-6)
    np.testing.assert_allclose(out["--snap"], out[""], atol=1e-6)
    assert np.abs(out[""] - out["--no-snap"]).max() > 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_snap_by_rectangles_equals_the_whole_box_filter_on_scattered_shapes(seed):
    # several blobs, thin lines and soft patches over a box larger than one tile: many rectangles,
    # some touching; the result must be the guided filter of the whole box (to rounding)
    from spn.inference_mask import _changing_runs, snap

    g = np.random.default_rng(seed)
    H, W = 150, 230
    yy, xx = np.mgrid[0:H, 0:W]
    prob = np.zeros((H, W))
    for _ in range(4):
        cy, cx, r = g.uniform(0, H), g.uniform(0, W), g.uniform(3, 30)
        prob[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1.0
    prob[int(g.integers(H)), :] = 1.0  # a one-pixel line across
    prob[20:30, 150:170] = 0.6  # a soft patch
    prob = torch.from_numpy(prob)
    img = torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    box = (3, H - 2, 5, W - 1)
    y0, y1, x0, x1 = box
    want = prob.clone()
    want[y0:y1, x0:x1] = guided_filter(img[:, y0:y1, x0:x1], prob[None, y0:y1, x0:x1], 3, 1e-3)[0].clamp(0, 1)
    got = snap(img, prob.clone(), box, 3, 1e-3)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-9)
    runs = _changing_runs(prob[y0:y1, x0:x1], 6, tile=24)
    assert len(runs) > 3
    area = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in runs)
    assert area < (y1 - y0) * (x1 - x0)  # the flat parts are skipped
