"""``spn refine IMAGE --mask MASK`` and ``spn.refine``: every mask format, every bad input, folder
runs (skip / stop), outputs written together, the progress rule. A tiny random refiner stands in
for the shipped weights (``shipped_weights`` patched); the last test uses the shipped weights."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import spn
import spn.inference_mask as im
from spn.cli import main
from spn.image.mask import read_object_mask
from spn.inference_mask import MaskRefiner, save_weights
from spn.models import create_model

H, W = 40, 60


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    torch.manual_seed(0)
    f = tmp_path / "tiny.safetensors"
    save_weights(create_model("mask_refiner", guidance_width=4), f, {}, half=False)
    monkeypatch.setattr(im, "shipped_weights", lambda: (f.read_bytes(), str(f)))
    monkeypatch.setattr(im, "shipped_large_weights", lambda: (f.read_bytes(), str(f)))
    monkeypatch.setattr(im, "_SHIPPED", [])
    return f


def _image(path):
    a = np.zeros((H, W, 3), np.uint8)
    a[10:30, 20:45] = 220
    Image.fromarray(a).save(path)
    return a


def _box(h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[h // 4: 3 * h // 4, w // 3: 3 * w // 4] = 1
    return m


def _run(capsys, *args):
    rc = main(["refine", *map(str, args)])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["01", "0255", "soft", "npy", "low", "bool_npy"])
def test_every_mask_format_gives_a_0_255_png_at_the_image_size(tiny, tmp_path, capsys, kind):
    _image(tmp_path / "img.png")
    m = _box()
    if kind == "01":
        Image.fromarray(m).save(tmp_path / "m.png")
    elif kind == "0255":
        Image.fromarray(m * 255).save(tmp_path / "m.png")
    elif kind == "soft":
        Image.fromarray((m * 200 + 20).astype(np.uint8)).save(tmp_path / "m.png")
    elif kind == "low":  # a quarter-size mask, same aspect ratio
        Image.fromarray(_box(H // 4, W // 4) * 255).save(tmp_path / "m.png")
    elif kind == "npy":
        np.save(tmp_path / "m.npy", m.astype(np.float32) * 0.9)
    else:
        np.save(tmp_path / "m.npy", m.astype(bool))
    mask = tmp_path / ("m.npy" if "npy" in kind else "m.png")
    rc, err = _run(capsys, tmp_path / "img.png", "--mask", mask, "--out", tmp_path / "o.png")
    assert rc == 0, err
    with Image.open(tmp_path / "o.png") as o:
        assert o.mode == "L" and o.size == (W, H)
        assert set(np.unique(np.asarray(o)).tolist()) <= {0, 255}


def test_mask_reader_values(tmp_path):
    Image.fromarray(np.array([[0, 1]], np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.array([[0, 255, 51]], np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("1").save(tmp_path / "c.png")
    assert read_object_mask(tmp_path / "a.png").tolist() == [[0.0, 1.0]]
    assert read_object_mask(tmp_path / "b.png")[0].tolist() == pytest.approx([0.0, 1.0, 0.2])
    assert read_object_mask(tmp_path / "c.png").tolist() == [[0.0, 1.0]]
    assert read_object_mask(tmp_path / "c.png").dtype == np.float32


def test_soft_outputs_png_and_npy(tiny, tmp_path, capsys):
    _image(tmp_path / "img.png")
    Image.fromarray(_box() * 255).save(tmp_path / "m.png")
    assert _run(capsys, "--image", tmp_path / "img.png", "--mask", tmp_path / "m.png", "--soft",
                "--out", tmp_path / "s.npy")[0] == 0
    p = np.load(tmp_path / "s.npy")
    assert p.dtype == np.float32 and p.shape == (H, W) and 0 <= p.min() and p.max() <= 1
    assert _run(capsys, tmp_path / "img.png", "--mask", tmp_path / "m.png", "--soft", "--out", tmp_path / "s.png")[0] == 0
    with Image.open(tmp_path / "s.png") as s:
        assert s.mode == "L" and np.abs(np.asarray(s) / 255.0 - p).max() <= 0.5 / 255 + 1e-6
    # the same refiner through Python: the CLI's probability
    ref = spn.refine(np.asarray(Image.open(tmp_path / "img.png")), _box() * 255, soft=True)
    assert np.allclose(ref, p, atol=1e-6)
    assert np.array_equal(spn.refine(Image.open(tmp_path / "img.png"), Image.fromarray(_box() * 255)), p >= 0.5)


def test_labels_refined_one_vs_rest(tiny, tmp_path, capsys):
    _image(tmp_path / "img.png")
    lab = np.zeros((H, W), np.uint8)
    lab[:, 20:40] = 2
    lab[:, 40:] = 5
    Image.fromarray(lab).save(tmp_path / "lab.png")
    assert _run(capsys, tmp_path / "img.png", "--mask", tmp_path / "lab.png", "--labels",
                "--out", tmp_path / "o.png")[0] == 0
    with Image.open(tmp_path / "o.png") as o:
        assert o.size == (W, H) and set(np.unique(np.asarray(o)).tolist()) <= {0, 2, 5}


@pytest.mark.parametrize("bad, expect", [
    ("aspect", "aspect"), ("nan", "NaN"), ("i16", "16-bit"), ("palette", "palette"), ("range", "[0, 1]"),
    ("rgb", "colour"),
])
def test_bad_masks_one_line_no_file(tiny, tmp_path, capsys, bad, expect):
    _image(tmp_path / "img.png")
    f = tmp_path / ("m.npy" if bad in ("nan", "range") else "m.png")
    if bad == "aspect":
        Image.fromarray(np.zeros((30, 30), np.uint8)).save(f)
    elif bad == "nan":
        a = _box().astype(np.float32)
        a[3, 3] = np.nan
        np.save(f, a)
    elif bad == "range":
        np.save(f, _box().astype(np.float32) * 2)
    elif bad == "i16":
        Image.fromarray(_box().astype(np.uint16) * 1000).save(f)
    elif bad == "palette":
        Image.fromarray(_box() * 255).convert("P").save(f)
    else:
        a = np.zeros((H, W, 3), np.uint8)
        a[..., 0] = 255
        Image.fromarray(a).save(f)
    rc, err = _run(capsys, tmp_path / "img.png", "--mask", f, "--out", tmp_path / "o.png")
    assert rc == 1 and expect in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.png").exists()
    # the same refusal from Python (the reader, or the array check)
    with pytest.raises(ValueError, match=expect.replace("[", r"\[").replace("]", r"\]")):
        if bad == "aspect":
            spn.refine(np.zeros((H, W, 3), np.uint8), np.zeros((30, 30), np.uint8))
        else:
            read_object_mask(f)


def test_empty_and_full_masks_come_back_unchanged_with_a_warning(tiny, tmp_path, capsys):
    img = _image(tmp_path / "img.png")
    for value in (0, 255):
        with pytest.warns(UserWarning, match="empty" if value == 0 else "all ones"):
            out = spn.refine(img, np.full((H, W), value, np.uint8))
        assert out.dtype == np.bool_ and (out == bool(value)).all()
        Image.fromarray(np.full((H, W), value, np.uint8)).save(tmp_path / "m.png")
        rc, err = _run(capsys, tmp_path / "img.png", "--mask", tmp_path / "m.png", "--out", tmp_path / "o.png")
        assert rc == 0 and ("empty" in err or "all ones" in err)
        assert (np.asarray(Image.open(tmp_path / "o.png")) == value).all()


def test_half_tensors_are_refused_naming_the_argument():
    ref = MaskRefiner(create_model("mask_refiner", guidance_width=4))
    with pytest.raises(TypeError, match="image: a bfloat16 tensor"):
        ref.refine(torch.zeros(3, 8, 8, dtype=torch.bfloat16), np.ones((8, 8), np.uint8))
    with pytest.raises(TypeError, match="mask: a bfloat16 tensor"):
        ref.refine(torch.zeros(3, 8, 8), torch.ones(8, 8, dtype=torch.bfloat16))
    seg = spn.Refiner(create_model("spn_three_way", num_classes=3, channels=4, guidance_width=4))
    with pytest.raises(TypeError, match="image: a bfloat16 tensor"):
        seg.refine(torch.zeros(3, 8, 8, dtype=torch.bfloat16), np.full((3, 8, 8), 1 / 3, np.float32))


def test_pretrained_is_the_shipped_mask_refiner(tiny):
    r = spn.Refiner.pretrained()
    assert isinstance(r, spn.MaskRefiner) and r.source == "pretrained"
    assert r.large_model is not None and r.large_cover == 0.45
    assert spn.Refiner.pretrained(large_model=None).large_model is None


def test_pretrained_loads_both_shipped_files():
    """The two files in the package: the second is the large_model, the weights differ."""
    try:
        im.shipped_weights(), im.shipped_large_weights()
    except FileNotFoundError as exc:
        pytest.skip(f"the shipped weights are not in this tree yet: {exc}")
    r = spn.Refiner.pretrained()
    a, b = r.model.state_dict(), r.large_model.state_dict()
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    direct = im.load_weights(*im.shipped_large_weights())[0].state_dict()
    assert all(torch.equal(b[k], direct[k]) for k in b)


def _folder(tmp_path, bad_mask=True):
    imgs, masks = tmp_path / "imgs", tmp_path / "masks"
    imgs.mkdir()
    masks.mkdir()
    for n in ("a", "b", "c"):
        _image(imgs / f"{n}.png")
        Image.fromarray(_box() * 255).save(masks / f"{n}.png")
    if bad_mask:
        Image.fromarray(_box() * 255).convert("P").save(masks / "b.png")  # a palette mask: refused
    return imgs, masks


def test_folder_skips_a_bad_file_and_exits_non_zero(tiny, tmp_path, capsys):
    imgs, masks = _folder(tmp_path)
    out, ov = tmp_path / "out", tmp_path / "ov"
    rc, err = _run(capsys, imgs, "--mask", masks, "--out", out, "--overlay", ov)
    assert rc == 1
    assert "skipped b.png" in err and "1 of 3 images failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert sorted(p.name for p in ov.iterdir()) == ["a.png", "c.png"]


def test_folder_stops_at_the_first_bad_file_when_asked(tiny, tmp_path, capsys):
    imgs, masks = _folder(tmp_path)
    out = tmp_path / "out"
    rc, err = _run(capsys, imgs, "--mask", masks, "--out", out, "--on-error", "stop")
    assert rc == 1 and "palette" in err and "skipped" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]


def test_a_label_and_its_overlay_are_written_together(tiny, tmp_path, capsys, monkeypatch):
    import spn.tasks.mask as tm

    _image(tmp_path / "img.png")
    Image.fromarray(_box() * 255).save(tmp_path / "m.png")

    def broken(path, image):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(tm, "write_image", broken)
    rc, err = _run(capsys, tmp_path / "img.png", "--mask", tmp_path / "m.png", "--out", tmp_path / "o.png",
                   "--overlay", tmp_path / "ov.png")
    assert rc == 1 and "No space left" in err
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "ov.png").exists()


def test_progress_follows_the_tty_rule(monkeypatch):
    import io
    import sys

    from spn.tasks.jobs import show_progress

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert show_progress(None) is False and show_progress(True) is True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert show_progress(None) is True and show_progress(False) is False


def test_task_choice(tiny, tmp_path, capsys):
    _image(tmp_path / "img.png")
    Image.fromarray(_box() * 255).save(tmp_path / "m.png")
    rc, err = _run(capsys, tmp_path / "img.png", "--coarse", tmp_path / "m.png", "--out", tmp_path / "o.png")
    assert rc == 1 and "--checkpoint" in err
    rc, err = _run(capsys, "--task", "seg", tmp_path / "img.png", "--out", tmp_path / "o.png")
    assert rc == 1 and "ships no model" in err
    rc, err = _run(capsys, tmp_path / "img.png", "--out", tmp_path / "o.png")
    assert rc == 1 and "--mask" in err
    assert not (tmp_path / "o.png").exists()


def _disk_photo(seed, inside, outside, noise):
    """A 120 x 160 photo of a disk (radius 35 at (60, 80)) of colour ``inside`` on ``outside``,
    with Gaussian noise; skips the test when the shipped weights are absent. ``(photo, disk)``."""
    try:
        im.shipped_weights()
    except FileNotFoundError as exc:
        pytest.skip(f"the shipped weights are not in this tree yet: {exc}")
    yy, xx = np.mgrid[0:120, 0:160]
    disk = (yy - 60) ** 2 + (xx - 80) ** 2 <= 35 ** 2
    img = np.where(disk[..., None], inside, outside).astype(np.float64)
    img = img + np.random.default_rng(seed).normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), disk


def test_the_shipped_weights_refine_a_noisy_mask_better_than_it_is():
    img, disk = _disk_photo(0, [200, 60, 40], [40, 90, 160], 8)
    coarse = np.asarray(Image.fromarray(disk.astype(np.uint8) * 255).resize((20, 15), Image.BILINEAR))
    im._SHIPPED.clear()
    out = spn.refine(img, coarse)
    up = np.asarray(Image.fromarray(coarse).resize((160, 120), Image.BILINEAR)) >= 128

    def iou(m):
        return (m & disk).sum() / (m | disk).sum()

    assert out.shape == (120, 160) and iou(out) > iou(up), (iou(out), iou(up))


def test_the_readme_mask_example_runs(tmp_path, monkeypatch):
    """The README's first Python example, on the shipped weights: a photo of a bright disc on a
    noisy background and a coarse mask a segmenter might give, the disc grown by 4 pixels and
    kept as a binary 1/8 map; the refined mask is closer to the disc than the coarse mask
    upsampled (IoU counted here with numpy)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Refine your own images", 1)[1].split("### Segmentation with a trained checkpoint")[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    h, w = 240, 320
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 120) ** 2 + (xx - 150) ** 2 <= 70 ** 2
    rng = np.random.default_rng(0)
    photo = np.clip(rng.normal(90, 12, (h, w, 3)), 0, 255)
    photo[disc] = np.clip(rng.normal(200, 12, (int(disc.sum()), 3)), 0, 255)
    from PIL import ImageFilter

    grown = Image.fromarray(disc.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(9))
    coarse = ((np.asarray(grown.resize((w // 8, h // 8), Image.BOX)) > 127) * 255).astype(np.uint8)
    monkeypatch.chdir(tmp_path)
    Image.fromarray(photo.astype(np.uint8)).save("photo.jpg", quality=95)
    Image.fromarray(coarse).save("coarse.png")
    ns: dict = {}
    exec(compile(code, "README.md (refine your own images)", "exec"), ns)
    mask, proba = ns["mask"], ns["proba"]
    assert mask.shape == (h, w) and mask.dtype == bool
    assert proba.shape == (h, w) and proba.dtype == np.float32 and 0 <= proba.min() and proba.max() <= 1
    up = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR)) > 127

    def iou(a):
        return (a & disc).sum() / (a | disc).sum()

    assert iou(mask) > iou(up), (iou(mask), iou(up))


def test_confidence_leaves_a_nearly_right_mask_more_as_it_is(tmp_path, capsys):
    img, disk = _disk_photo(1, [120, 110, 100], [100, 110, 120], 12)  # low contrast
    Image.fromarray(img).save(tmp_path / "img.png")
    yy, xx = np.mgrid[0:120, 0:160]
    mask = ((yy - 61) ** 2 + (xx - 81) ** 2 <= 34 ** 2).astype(np.uint8) * 255  # a pixel off the truth
    Image.fromarray(mask).save(tmp_path / "mask.png")
    changed = {}
    for conf in ("0", "0.45"):
        out = tmp_path / f"out{conf}.png"
        rc, err = _run(capsys, tmp_path / "img.png", "--mask", tmp_path / "mask.png", "--out", out,
                       "--confidence", conf)
        assert rc == 0, err
        changed[conf] = int(((np.asarray(Image.open(out)) > 127) != (mask > 127)).sum())
    assert changed["0.45"] < changed["0"], changed  # only the sure changes are made
    rc, err = _run(capsys, tmp_path / "img.png", "--mask", tmp_path / "mask.png", "--out", tmp_path / "x.png",
                   "--confidence", "0.5")
    assert rc != 0 and "--confidence must be in [0, 0.5)" in err and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()
