"""The mask task: composites and coarse perturbations, the mask refiner model, its tiled
inference, the shipped weights, and ``spn train --task mask``."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from spn.data.composites import (CompositeDataset, CompositePatches, dilate, erode, mask_iou, near_mask,
                                 object_alpha, perturb_mask, resample_blocky)
from spn.evaluation_mask import evaluate_masks, mask_scores
from spn.inference_mask import MaskRefiner, as_mask_array, load_weights, refine_tiled, save_weights
from spn.models import create_model
from spn.tasks.mask import mask_loss_sum


def _photos(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):  # smooth colour fields with some texture: photo-like enough for the generator
        low = torch.rand(3, 6, 8, generator=g)
        img = torch.nn.functional.interpolate(low[None], size=(90, 120), mode="bicubic", align_corners=False)[0]
        out.append((img + 0.05 * torch.rand(3, 90, 120, generator=g)).clamp(0, 1))
    return out


def _disk(H, W, cy, cx, r):
    yy, xx = np.mgrid[0:H, 0:W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# ----------------------------------------------------------------------------------------------
# data
def test_composites_are_deterministic_and_valid():
    a = CompositeDataset(photos=_photos(), size=(48, 64), length=4, seed=3)
    b = CompositeDataset(photos=_photos(), size=(48, 64), length=4, seed=3)
    c = CompositeDataset(photos=_photos(), size=(48, 64), length=4, seed=4)
    for i in range(4):
        x, y = a[i], b[i]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["coarse"], y["coarse"])
        assert torch.equal(x["mask"], y["mask"])
        assert x["image"].shape == (3, 48, 64) and x["coarse"].shape == (1, 48, 64) and x["mask"].shape == (48, 64)
        assert x["image"].dtype == torch.float32 and x["mask"].dtype == torch.int64
        assert 0 <= float(x["image"].min()) and float(x["image"].max()) <= 1
        assert 0 <= float(x["coarse"].min()) and float(x["coarse"].max()) <= 1
        assert set(torch.unique(x["mask"]).tolist()) <= {0, 1}
    assert not torch.equal(a[0]["image"], c[0]["image"])
    assert not torch.equal(a[0]["image"], a[1]["image"])


def test_training_patches_change_with_the_epoch_and_not_otherwise():
    base = CompositeDataset(photos=_photos(), size=32, length=2)
    p = CompositePatches(base, size=40, patches_per_image=2, seed=1)
    first = p[1]["image"]
    assert torch.equal(first, p[1]["image"])
    p.set_epoch(1)
    assert not torch.equal(first, p[1]["image"])
    assert p[1]["image"].shape == (3, 40, 40)


def test_dilation_and_erosion_match_scipy_rectangles():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    m = (rng.random((30, 40)) < 0.2).astype(np.float32)
    t = torch.from_numpy(m)
    want = ndimage.grey_dilation(m, size=(5, 3), mode="constant", cval=0)
    assert np.array_equal(dilate(t, 2, 1).numpy(), want)
    want = ndimage.grey_erosion(m, size=(3, 7), mode="nearest")
    assert np.array_equal(erode(t, 1, 3).numpy(), want)


def test_perturbations_do_what_they_claim():
    disk = torch.from_numpy(_disk(64, 64, 32, 32, 15).astype(np.float32))
    assert dilate(disk, 3).sum() > disk.sum() and erode(disk, 3).sum() < disk.sum()
    # nearest resampling by 8: constant on aligned 8 x 8 blocks (blocky); bilinear: soft values
    blocky = resample_blocky(disk, 8, soft=False)
    blocks = blocky.reshape(8, 8, 8, 8).permute(0, 2, 1, 3).reshape(64, 64)
    assert bool((blocks.amax(1) == blocks.amin(1)).all())
    assert not bool((disk.reshape(8, 8, 8, 8).permute(0, 2, 1, 3).reshape(64, 64).amax(1)
                     == disk.reshape(8, 8, 8, 8).permute(0, 2, 1, 3).reshape(64, 64).amin(1)).all())
    soft = resample_blocky(disk, 8, soft=True)
    assert bool(((soft > 0.05) & (soft < 0.95)).any())
    # random perturbations: changed, but not beyond recognition (IoU >= 0.4 is asked for)
    ious = [mask_iou(perturb_mask(disk, np.random.default_rng(s)) >= 0.5, disk > 0.5) for s in range(12)]
    assert min(ious) >= 0.4 and sum(i < 0.999 for i in ious) >= 9


def test_near_masks_keep_the_boundary_within_a_few_pixels():
    t = torch.zeros(64, 80)
    t[12:50, 15:60] = 1.0  # a rectangle; a pixel's chessboard distance to its boundary by hand:
    yy, xx = np.mgrid[0:64, 0:80]
    inside = np.minimum(np.minimum(yy - 12, 49 - yy), np.minimum(xx - 15, 59 - xx))  # >= 0 inside
    outside = np.maximum(np.maximum(12 - yy, yy - 49), np.maximum(15 - xx, xx - 59))  # >= 1 outside
    dist = np.where(inside >= 0, inside + 1, outside)  # 1: a pixel on either side of the boundary
    exact, moved = 0, 0
    for s in range(40):
        m = near_mask(t, np.random.default_rng(s))
        assert m.shape == t.shape and float(m.min()) >= 0 and float(m.max()) <= 1
        wrong = ((m >= 0.5) != (t >= 0.5)).numpy()
        assert wrong.sum() == 0 or dist[wrong].max() <= 3  # corners of a blur by sigma 2 included
        exact += int(torch.equal(m, t))
        moved += int(wrong.any())
    assert exact >= 3 and moved >= 5  # the target itself one time in five; some moved by a pixel
    # in the composites: near=0.8 gives far more nearly exact coarse masks than near=0
    photos = [torch.rand(3, 80, 90, generator=torch.Generator().manual_seed(i)) for i in range(2)]

    def close(near):
        ds = CompositeDataset(photos=photos, size=64, length=30, seed=3, near=near)
        return sum(mask_iou(ds[i]["coarse"][0] >= 0.5, ds[i]["mask"] == 1) >= 0.9 for i in range(30))

    assert close(0.8) >= close(0.0) + 10
    with pytest.raises(ValueError, match="near"):
        CompositeDataset(photos=photos, size=48, near=0.9)


def test_large_share_makes_cutouts_fill_the_frame():
    # a 16 x 24 opaque rectangle as the only cut-out: by default it covers 3 to 45 % of the frame
    # (less where it leaves it); with large=1 every cut-out object covers 45 to 90 %, centred in
    # the frame's middle, so about half the composites (those with a cut-out) are mostly object
    photos = [torch.rand(3, 80, 90, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    c = torch.zeros(4, 20, 30, dtype=torch.uint8)
    c[:, 2:18, 3:27] = 255

    def filling(large):
        ds = CompositeDataset(photos=photos, cutouts=[c], size=64, length=40, seed=3, large=large)
        return sum(float((ds[i]["mask"] == 1).float().mean()) >= 0.4 for i in range(40))

    assert filling(0.0) <= 2 and filling(1.0) >= 10
    with pytest.raises(ValueError, match="large"):
        CompositeDataset(photos=photos, size=48, large=1.5)


def test_object_alpha_is_antialiased():
    a = object_alpha(np.random.default_rng(2), (48, 48))
    frac = float((a >= 0.5).float().mean())
    assert 0 < frac < 1
    assert bool(((a > 0.02) & (a < 0.98)).any())  # partial coverage on the boundary


# ----------------------------------------------------------------------------------------------
# model and inference
@pytest.mark.parametrize("connection", ["one_way", "three_way"])
def test_model_shapes_at_odd_sizes(connection):
    net = create_model("mask_refiner", connection=connection, guidance_width=4).eval()
    for H, W in ((17, 23), (1, 9), (33, 8)):
        out = net(torch.rand(2, 3, H, W), torch.rand(2, 1, H, W))
        assert out.shape == (2, 1, H, W) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="coarse must be"):
        net(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8))


def test_untrained_model_returns_the_coarse_mask_and_learns():
    torch.manual_seed(0)
    net = create_model("mask_refiner", guidance_width=4)
    coarse = torch.zeros(2, 1, 24, 24)
    coarse[..., 6:18, 6:18] = 1
    target = torch.zeros(2, 1, 24, 24)
    target[..., 8:16, 8:16] = 1
    img = target.expand(2, 3, 24, 24).clone()
    assert bool(((net(img, coarse) > 0) == (coarse > 0.5)).all())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        s, w = mask_loss_sum(net(img, coarse), target)
        loss = s / w
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.8 * first


def test_mask_loss_weights_the_boundary():
    t = torch.zeros(1, 1, 16, 16)
    t[..., 4:12, 4:12] = 1
    logits = torch.zeros_like(t)
    s, w = mask_loss_sum(logits, t)
    # every pixel is within two of the boundary except the 4 x 4 centre and the far frame
    inner = torch.zeros(16, 16, dtype=torch.bool)
    inner[6:10, 6:10] = True
    near = torch.zeros(16, 16, dtype=torch.bool)
    near[2:14, 2:14] = True
    n_band = int((near & ~inner).sum())
    assert float(w) == pytest.approx(256 + 4.0 * n_band)
    assert float(s) == pytest.approx(math.log(2) * float(w), rel=1e-5)


class _Recorder(torch.nn.Module):
    """Wraps a model and records the pixel count of every call."""

    def __init__(self, net):
        super().__init__()
        self.net, self.sizes = net, []

    def forward(self, image, coarse):
        self.sizes.append(tuple(image.shape[-2:]))
        return self.net(image, coarse)


def test_tiled_inference_is_bounded_and_local_passes_stay_in_the_band():
    torch.manual_seed(0)
    net = MaskRefiner.pretrained().model
    H, W = 300, 420
    img = torch.full((3, H, W), 0.2)
    disk = torch.from_numpy(_disk(H, W, 150, 200, 90))
    img[:, disk] = 0.8
    coarse = torch.from_numpy(_disk(H, W, 150, 205, 84).astype(np.float32))
    with torch.no_grad():
        one = refine_tiled(net, img, coarse, global_size=128, tile=1000, margin=0, band=1000.0, keep=False)
        rec = _Recorder(net)
        tiled = refine_tiled(rec, img, coarse, global_size=128, tile=96, margin=24, band=2.0, keep=False)
        plain = refine_tiled(net, img, coarse, global_size=128, keep=False)
        # computed by hand: the global pass, its bilinear upsampling, one full-resolution pass
        small = torch.nn.functional.interpolate(img[None], size=(91, 128), mode="bilinear", antialias=True)
        cs = torch.nn.functional.interpolate(coarse[None, None], size=(91, 128), mode="bilinear", antialias=True)
        q = torch.sigmoid(net(small, cs.clamp(0, 1)))
        up = torch.nn.functional.interpolate(q, size=(H, W), mode="bilinear")
        ref = torch.sigmoid(net(img[None], up))[0, 0]
    assert torch.allclose(one, ref, atol=1e-5)
    assert torch.allclose(plain, up[0, 0], atol=1e-6)  # no band (the default): the upsampled global pass
    # every call is the global pass or one tile with its margins: bounded memory at any size
    assert rec.sizes[0] == (91, 128)
    assert max(h * w for h, w in rec.sizes[1:]) <= (96 + 48) ** 2
    assert len(rec.sizes) < 1 + math.ceil(H / 96) * math.ceil(W / 96)  # only the tiles on the boundary
    # local passes change only pixels within band / scale = 2 * 420 / 128 -> 7 pixels of the contour
    hard = (up[0, 0] >= 0.5).float()[None, None]
    near = (torch.nn.functional.max_pool2d(hard, 15, 1, 7) != -torch.nn.functional.max_pool2d(-hard, 15, 1, 7))[0, 0]
    assert torch.equal(tiled[~near], up[0, 0][~near])
    assert not torch.equal(tiled[near], up[0, 0][near])


def test_pretrained_refines_a_noisy_disk():
    ref = MaskRefiner.pretrained()
    H, W = 160, 200
    truth = _disk(H, W, 80, 100, 50)
    img = np.where(truth[..., None], np.array([200, 60, 50], np.uint8), np.array([40, 90, 160], np.uint8))
    rng = np.random.default_rng(0)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    ang = np.arctan2(yy - 80, xx - 100)
    noisy = np.hypot(yy - 80, xx - 100) <= 50 + 6 * np.sin(5 * ang) + 3 * np.cos(11 * ang)
    low = np.asarray(Image.fromarray(noisy.astype(np.uint8) * 255).resize((50, 40), Image.BILINEAR))
    out = ref.refine(img, low)
    coarse = as_mask_array(low, (H, W)).numpy() >= 0.5
    iou = lambda a: (a & truth).sum() / (a | truth).sum()  # noqa: E731
    assert out.shape == (H, W) and out.dtype == bool
    assert iou(out) > iou(coarse) + 0.02, (iou(out), iou(coarse))
    assert ref.refine(Image.fromarray(img), Image.fromarray(low)).shape == (H, W)


def test_refine_labels_takes_the_argmax():
    ref = MaskRefiner.pretrained()
    img = np.zeros((60, 90, 3), np.uint8)
    img[:, 45:] = 255
    labels = np.zeros((20, 30), np.int64)
    labels[:, 14:] = 3
    out = ref.refine_labels(img, labels)
    assert set(np.unique(out).tolist()) == {0, 3}
    assert (out[:, :40] == 0).all() and (out[:, 50:] == 3).all()


def test_mask_inputs_are_checked():
    assert as_mask_array(np.array([[0, 1]], np.uint8), (1, 2)).tolist() == [[0.0, 1.0]]
    assert as_mask_array(np.array([[0, 255]], np.uint8), (1, 2)).tolist() == [[0.0, 1.0]]
    assert as_mask_array(np.array([[0, 51]], np.uint8), (1, 2)).tolist() == [[0.0, pytest.approx(0.2)]]
    with pytest.raises(ValueError, match="NaN"):
        as_mask_array(np.array([[0.2, np.nan]]), (1, 2))
    with pytest.raises(ValueError, match="palette"):
        as_mask_array(Image.new("P", (4, 4)), (4, 4))
    with pytest.raises(ValueError, match="16-bit"):
        as_mask_array(Image.new("I;16", (4, 4)), (4, 4))
    with pytest.raises(ValueError, match="aspect ratio"):
        as_mask_array(np.zeros((10, 10), np.uint8), (40, 80))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_mask_array(np.full((2, 2), 1.5), (2, 2))
    ref = MaskRefiner(create_model("mask_refiner", guidance_width=4))
    with pytest.warns(UserWarning, match="empty"):
        out = ref.refine_proba(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))
    assert (out == 0).all()
    with pytest.raises(ValueError, match="image"):
        ref.refine(np.full((8, 8, 3), np.nan), np.ones((8, 8), np.uint8))


def test_weights_round_trip(tmp_path):
    torch.manual_seed(1)
    net = create_model("mask_refiner", guidance_width=4, connection="three_way")
    save_weights(net, tmp_path / "w.safetensors", {"global_size": 256}, half=False)
    back, info = load_weights((tmp_path / "w.safetensors").read_bytes())
    assert info["settings"] == {"global_size": 256} and back.config == net.config
    for k, v in net.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])
    with pytest.raises(ValueError, match="cannot read"):
        load_weights(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")


def test_stored_inference_settings_are_applied_and_can_be_overridden(tmp_path):
    net = create_model("mask_refiner", guidance_width=4)
    settings = {"global_size": 256, "crop_size": 192, "context": 0.25, "reach": 0.1, "flip": True}
    save_weights(net, tmp_path / "w.safetensors", settings)
    data = (tmp_path / "w.safetensors").read_bytes()
    r = MaskRefiner.from_weights(data, "w")
    assert (r.global_size, r.crop_size, r.context, r.reach, r.flip) == (256, 192, 0.25, 0.1, True)
    r = MaskRefiner.from_weights(data, "w", flip=False, reach=None)
    assert (r.reach, r.flip, r.crop_size) == (None, False, 192)


def test_shipped_weights_are_small_and_float16():
    from importlib import resources

    files = ("mask_refiner.safetensors", "mask_refiner_large.safetensors")
    blobs = [resources.files("spn").joinpath("weights", f).read_bytes() for f in files]
    assert sum(len(d) for d in blobs) <= 5 * 2 ** 20  # the budget, both files together
    for data in blobs:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
        assert dtypes == {"F16"}


# ----------------------------------------------------------------------------------------------
# scores and training
def test_mask_scores_hand_counted():
    gt = torch.zeros(20, 20, dtype=torch.long)
    gt[5:15, 5:15] = 1
    pred = torch.zeros(20, 20, dtype=torch.bool)
    pred[5:15, 5:10] = True
    s = mask_scores(pred, gt)
    assert s["iou"] == pytest.approx(50 / 100)
    perfect = mask_scores(gt.bool(), gt)
    assert perfect["iou"] == 1.0 and perfect["mba"] == 1.0 and perfect["boundary_iou"] == 1.0


def test_evaluate_masks_scores_coarse_and_refined():
    ds = CompositeDataset(photos=_photos(), size=(40, 48), length=3)
    res = evaluate_masks(lambda image, coarse: coarse, ds)
    assert res["items"] == 3
    for k in ("iou", "boundary_iou", "mba"):
        assert res["refined"][k] == pytest.approx(res["coarse"][k])
    two = evaluate_masks(None, ds, methods={"truth": lambda image, coarse: coarse * 0}, limit=2)
    assert two["items"] == 2 and two["truth"]["iou"] == 0.0


def test_spn_train_task_mask_runs_three_steps(tmp_path):
    from spn.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--task", "mask", "--data", "composites:skimage", "--steps", "3", "--batch-size", "2",
               "--patch-size", "48", "--out", str(out), "--no-progress", "--data-option", "length=2",
               "--model-option", "guidance_width=4", "--val-items", "1", "--threads", "1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["model"] == "mask_refiner"
    assert set(summary["val"]["refined"]) >= {"iou", "boundary_iou", "mba"}
    r = MaskRefiner.from_checkpoint(out)
    mask = np.zeros((10, 15), np.uint8)
    mask[3:7, 4:10] = 1
    assert r.refine(np.zeros((20, 30, 3), np.uint8), mask).shape == (20, 30)
