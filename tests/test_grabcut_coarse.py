"""GrabCut as a coarse source (``spn.data.grabcut``), the composites' ``grabcut`` share, and
``spn train --init`` (a fine-tune from another run's weights)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from spn.data import composites as C  # noqa: E402
from spn.data.composites import CompositeDataset, mask_iou  # noqa: E402
from spn.data.grabcut import BOX_GROW, grabcut_mask, grown_box  # noqa: E402


def test_grown_box_hand_counted():
    m = np.zeros((50, 80), bool)
    m[10:30, 20:60] = True  # 40 wide, 20 high: grown by 2 pixels left and right, 1 up and down
    assert BOX_GROW == 0.10
    assert grown_box(m) == (18, 9, 62, 31)
    # clamped to the image
    m2 = np.zeros((50, 80), bool)
    m2[0:50, 70:80] = True
    assert grown_box(m2, 0.5) == (67, 0, 80, 50)
    with pytest.raises(ValueError, match="empty"):
        grown_box(np.zeros((4, 4), bool))


def test_grabcut_mask_finds_a_plain_square_and_is_seeded():
    # a red square on a blue background with noise: GrabCut from the grown box finds the square
    g = np.random.default_rng(0)
    img = np.zeros((3, 64, 80), np.float32)
    img[2] = 0.8
    truth = np.zeros((64, 80), bool)
    truth[16:48, 20:56] = True
    img[0][truth], img[2][truth] = 0.9, 0.1
    img = np.clip(img + 0.03 * g.standard_normal(img.shape), 0, 1).astype(np.float32)
    t = torch.from_numpy(truth.astype(np.float32))
    out = grabcut_mask(torch.from_numpy(img), t, seed=3)
    assert out.dtype == torch.float32 and set(out.unique().tolist()) <= {0.0, 1.0}
    assert mask_iou(out >= 0.5, t >= 0.5) > 0.97
    assert torch.equal(out, grabcut_mask(torch.from_numpy(img), t, seed=3))


def _photos():
    return [torch.rand(3, 80, 90, generator=torch.Generator().manual_seed(i)) for i in range(2)]


def test_grabcut_share_zero_leaves_every_composite_as_it_was():
    photos = _photos()
    a = CompositeDataset(photos=photos, size=48, length=6, seed=2)
    b = CompositeDataset(photos=photos, size=48, length=6, seed=2, grabcut=0.0)
    for i in range(6):
        assert torch.equal(a[i]["coarse"], b[i]["coarse"]) and torch.equal(a[i]["image"], b[i]["image"])


def test_grabcut_share_uses_grabcut_when_usable_and_falls_back_otherwise(monkeypatch):
    import spn.data.grabcut as G

    photos = _photos()
    calls = []

    def exact(image, target, seed, iterations=5):  # a stand-in whose answer we know: the target itself
        calls.append(seed)
        return target.clone()

    monkeypatch.setattr(G, "grabcut_mask", exact)
    ds = CompositeDataset(photos=photos, size=48, length=8, seed=2, grabcut=1.0)
    for i in range(8):
        it = ds[i]
        assert torch.equal(it["coarse"][0], (it["mask"] == 1).float())
    assert len(calls) == 8 and len(set(calls)) == 8  # one seed drawn per composite

    monkeypatch.setattr(G, "grabcut_mask", lambda image, target, seed, iterations=5: torch.zeros_like(target))
    ds = CompositeDataset(photos=photos, size=48, length=8, seed=2, grabcut=1.0)
    for i in range(8):  # an empty GrabCut mask (IoU 0) is not used: the perturbations' mask instead
        it = ds[i]
        assert mask_iou(it["coarse"][0] >= 0.5, it["mask"] == 1) >= C.GRABCUT_MIN_IOU - 1e-9


def test_grabcut_share_with_opencv_gives_hard_masks_and_is_checked():
    photos = _photos()
    ds = CompositeDataset(photos=photos, size=48, length=6, seed=1, grabcut=1.0)
    assert ds.info()["grabcut"] == 1.0
    for i in range(6):
        c = ds[i]["coarse"]
        assert torch.equal(c, ds[i]["coarse"])  # deterministic
        assert c.shape == (1, 48, 48) and float(c.min()) >= 0 and float(c.max()) <= 1
    for bad in (1.5, -0.1, True, "x"):
        with pytest.raises(ValueError, match="grabcut"):
            CompositeDataset(photos=photos, size=48, grabcut=bad)


def _train(out, *extra):
    from spn.cli import main

    return main(["train", "--task", "mask", "--data", "composites:skimage", "--batch-size", "2",
                 "--patch-size", "32", "--out", str(out), "--no-progress", "--data-option", "length=2",
                 "--model-option", "guidance_width=4", "--no-val", "--threads", "1", *extra])


def _weights(run):
    from spn.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(run)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_init_starts_from_another_runs_weights(tmp_path):
    assert _train(tmp_path / "a", "--steps", "3", "--lr", "0.01") == 0
    a = _weights(tmp_path / "a")
    # one step at a learning rate of 1e-12 from a's weights: Adam moves each weight by at most
    # about the rate, so the result is a's weights; without --init it is a fresh initialisation
    assert _train(tmp_path / "b", "--steps", "1", "--lr", "1e-12", "--init", str(tmp_path / "a")) == 0
    assert _train(tmp_path / "c", "--steps", "1", "--lr", "1e-12", "--seed", "5") == 0
    b, c = _weights(tmp_path / "b"), _weights(tmp_path / "c")
    assert all(torch.allclose(a[k], b[k], atol=1e-9) for k in a)
    assert not all(torch.allclose(a[k], c[k], atol=1e-3) for k in a)
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())["train_config"]
    assert cfg["init"] == str((tmp_path / "a").absolute())


def test_init_of_another_model_config_is_one_clear_error(tmp_path, capsys):
    from spn.cli import main

    assert _train(tmp_path / "a", "--steps", "1") == 0
    rc = main(["train", "--task", "mask", "--data", "composites:skimage", "--batch-size", "2", "--patch-size", "32",
               "--out", str(tmp_path / "b"), "--no-progress", "--data-option", "length=2", "--model-option",
               "guidance_width=8", "--no-val", "--threads", "1", "--steps", "1", "--init", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert rc != 0 and "guidance_width" in err and "Traceback" not in err
    rc = main(["train", "--task", "mask", "--data", "composites:skimage", "--steps", "1", "--out",
               str(tmp_path / "d"), "--no-progress", "--init", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert rc != 0 and "missing" in err and "Traceback" not in err
