"""Coarse maps are read one way everywhere, as what they are declared to be (probs, logits, labels),
never guessed: each misread once seen is an error or is read right, through datasets and commands."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from spn.cli import main
from spn.data import (FolderDataset, build_dataset, check_coverage, coarse_to_probs, parse_coarse_kind,
                      prepare_coarse, read_coarse_file, write_mask)

K = 3


def _probs(h=4, w=6, seed=0) -> np.ndarray:
    g = np.random.default_rng(seed)
    x = g.random((K, h, w)) + 0.05
    return (x / x.sum(0, keepdims=True)).astype(np.float32)


def _folder(root, coarse: dict, size=(16, 24), sidecar=None):
    """Two images with masks, and coarse maps NAME -> array (saved as .npy)."""
    for d in ("images", "masks", "coarse"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i, (name, arr) in enumerate(coarse.items()):
        Image.fromarray(np.full((*size, 3), 60 * i, np.uint8)).save(root / "images" / f"{name}.png")
        m = np.zeros(size, np.uint8)
        m[:, size[1] // 2:] = 2
        Image.fromarray(m, mode="L").save(root / "masks" / f"{name}.png")
        np.save(root / "coarse" / f"{name}.npy", arr)
    (root / "classes.txt").write_text("a\nb\nc\n")
    if sidecar is not None:
        (root / "coarse" / "coarse.json").write_text(json.dumps(sidecar))
    return root


# --- the conversion, by hand ------------------------------------------------------------------

def test_each_kind_by_hand():
    p = coarse_to_probs(np.array([[[0.25]], [[0.75]], [[0.0]]], np.float32), "probs", K)
    assert p[:, 0, 0].tolist() == [0.25, 0.75, 0.0]
    logits = np.array([[[0.0]], [[np.log(3.0)]], [[0.0]]], np.float32)  # softmax: 1/5, 3/5, 1/5
    assert torch.allclose(coarse_to_probs(logits, "logits", K)[:, 0, 0], torch.tensor([0.2, 0.6, 0.2]))
    u8 = np.array([[[51]], [[204]], [[0]]], np.uint8)  # 0.2, 0.8, 0 times 255
    assert torch.allclose(coarse_to_probs(u8, "probs:255", K)[:, 0, 0], torch.tensor([0.2, 0.8, 0.0]))
    lab = coarse_to_probs(np.array([[2, 255]]), "labels", K)
    assert lab[:, 0, 0].tolist() == [0, 0, 1] and torch.allclose(lab[:, 0, 1], torch.full((3,), 1 / 3))
    # a 1/8 map upsampled: bilinear with align_corners=False, the same as F.interpolate
    pr = _probs(2, 3)
    up = prepare_coarse(pr, "probs", K, (16, 24))
    ref = torch.nn.functional.interpolate(torch.from_numpy(pr)[None], size=(16, 24), mode="bilinear",
                                          align_corners=False)[0]
    assert torch.allclose(up, ref / ref.sum(0, keepdim=True), atol=1e-6)


@pytest.mark.parametrize("arr, kind, match", [
    (np.full((K, 4, 6), 100, np.uint8), "probs", r"holds uint8 values \(100..100\).*without a scale.*probs:255"),
    (np.full((K, 4, 6), 100, np.uint8), "logits", "without a scale.*logits:255"),
    (_probs() * 255, "probs", r"does not sum to one.*probs:255"),
    (np.random.default_rng(0).normal(size=(K, 4, 6)).astype(np.float32), "probs",
     r"(holds negative values|does not sum to one).*declare --coarse-kind logits"),
    (np.full((K, 4, 6), 0.5, np.float32), "probs", r"does not sum to one .*1\.5 at pixel"),
    (np.zeros((4, 6), np.int64), "probs", r"\(h, w\) map of class ids is kind labels"),
    (_probs(), "labels", "must be a \\(h, w\\) map of class ids"),
    (np.zeros((4, 6), np.float32), "labels", "integer class ids"),
    (np.full((4, 6), 5), "labels", r"class ids \[5\], but the model has 3 classes"),
    (np.moveaxis(_probs(), 0, -1).copy(), "probs", "channel-last"),
    (np.full((K, 4, 6), np.nan, np.float32), "logits", "NaN"),
])
def test_a_map_that_contradicts_its_kind_is_an_error(arr, kind, match):
    with pytest.raises((ValueError, TypeError), match=match):
        coarse_to_probs(arr, kind, K, where="m.npy")


def test_kind_specs():
    assert str(parse_coarse_kind("logits")) == "logits" and parse_coarse_kind({"kind": "probs", "scale": 255}).scale == 255
    for bad, match in (("prob", "unknown coarse kind"), ("probs:x", "must be a number"), ("probs:0", "positive"),
                       ("labels:255", "no scale"), ({"kind": "probs", "scal": 2}, "unknown key")):
        with pytest.raises(ValueError, match=match):
            parse_coarse_kind(bad)


def test_aspect_tolerance_allows_the_rounding_of_small_maps():
    check_coverage("m", (5, 3), (33, 17))     # a 1/8 output of a 33 x 17 image (ceil)
    check_coverage("m", (47, 63), (375, 500))  # VOC-sized, 1/8
    with pytest.raises(ValueError, match="aspect"):
        check_coverage("m", (16, 32), (128, 128))


# --- through files, datasets and commands ----------------------------------------------------

def test_folder_dataset_refuses_a_stretched_coarse_map(tmp_path):
    """A coarse map of another aspect ratio was stretched without a word."""
    _folder(tmp_path, {"a": _probs(2, 12), "b": _probs(2, 3)})  # a: 6:1 for a 2:3 image
    ds = build_dataset(f"folder:{tmp_path}", split="all")
    assert ds[1]["coarse"].shape == (K, 16, 24)
    with pytest.raises(ValueError, match=r"a\.npy is 2 x 12 but the image is 16 x 24: not the same aspect"):
        ds[0]


def test_uint8_probabilities_need_their_scale(tmp_path):
    """uint8 0..255 probabilities were taken for logits."""
    pr = _probs(2, 3)
    u8 = np.round(pr * 255).astype(np.uint8)
    root = _folder(tmp_path / "d", {"a": u8})
    with pytest.raises(ValueError, match="uint8.*without a scale.*probs:255"):
        build_dataset(f"folder:{root}", split="all")[0]
    want = prepare_coarse(pr, "probs", K, (16, 24))
    got = build_dataset(f"folder:{root}", split="all", coarse_kind="probs:255")[0]["coarse"]
    assert (got - want).abs().max() < 2 / 255  # the quantisation of the stored values, nothing else
    (root / "coarse" / "coarse.json").write_text('{"kind": "probs", "scale": 255}')
    assert torch.equal(build_dataset(f"folder:{root}", split="all")[0]["coarse"], got)


def test_logits_are_declared_not_guessed(tmp_path, caplog):
    logits = np.random.default_rng(1).normal(0, 2, (K, 2, 3)).astype(np.float32)
    root = _folder(tmp_path / "d", {"a": logits})
    with pytest.raises(ValueError, match="declare --coarse-kind logits"):
        FolderDataset(root, split="all")[0]
    want = prepare_coarse(logits, "logits", K, (16, 24))
    assert torch.equal(FolderDataset(root, split="all", coarse_kind="logits")[0]["coarse"], want)
    # the sidecar declares it; an option that says otherwise wins, with a warning
    (root / "coarse" / "coarse.json").write_text('{"kind": "logits"}')
    assert torch.equal(FolderDataset(root, split="all")[0]["coarse"], want)
    probs = _probs(2, 3)
    np.save(root / "coarse" / "a.npy", probs)
    with caplog.at_level(logging.WARNING, logger="spn.data.coarse"):
        ds = FolderDataset(root, split="all", coarse_kind="probs")
    assert "overrides" in caplog.text and "declares logits" in caplog.text
    assert torch.equal(ds[0]["coarse"], prepare_coarse(probs, "probs", K, (16, 24)))


def test_png_and_npy_labels(tmp_path):
    write_mask(tmp_path / "c.png", np.array([[0, 2], [1, 255]]))
    p = read_coarse_file(tmp_path / "c.png", K, (2, 2))
    assert p[:, 0, 1].tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="is a PNG, which holds class ids"):
        read_coarse_file(tmp_path / "c.png", K, (2, 2), kind="probs")
    np.save(tmp_path / "l.npy", np.array([[0, 2], [1, 255]]))
    assert torch.equal(read_coarse_file(tmp_path / "l.npy", K, (2, 2), kind="labels"), p)
    with pytest.raises(ValueError, match=r"\(h, w\) map of class ids is kind labels"):
        read_coarse_file(tmp_path / "l.npy", K, (2, 2))  # .npy defaults to probs


def test_the_file_reader_and_the_python_api_are_one_path(tmp_path):
    from spn.inference import Refiner

    from fakes import LogCoarse

    logits = np.random.default_rng(3).normal(0, 2, (K, 3, 5)).astype(np.float32)
    np.save(tmp_path / "a.npy", logits)
    from_file = read_coarse_file(tmp_path / "a.npy", K, (24, 40), kind="logits")
    refiner = Refiner(LogCoarse(), num_classes=K)
    _, from_array = refiner.prepare(np.zeros((24, 40, 3), np.uint8), logits, "logits")
    assert torch.equal(from_file, from_array)


def test_eval_and_refine_take_the_kind(tmp_path, capsys):
    from spn.models import create_model
    from spn.models.checkpoint import save_checkpoint

    logits = np.random.default_rng(2).normal(0, 2, (K, 2, 3)).astype(np.float32)
    root = _folder(tmp_path / "d", {"a": logits, "b": logits})
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("a\nb\n")
    run = tmp_path / "run"
    save_checkpoint(run, create_model("spn_one_way", num_classes=K, channels=4, guidance_width=4), {}, 0,
                    data_info={"num_classes": K, "class_names": ["a", "b", "c"]})
    assert main(["eval", "--checkpoint", str(run), "--data", f"folder:{root}"]) == 1
    assert "declare --coarse-kind logits" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run), "--data", f"folder:{root}", "--coarse-kind", "logits"]) == 0
    capsys.readouterr()
    args = ["refine", "--checkpoint", str(run), "--image", str(root / "images" / "a.png"),
            "--coarse", str(root / "coarse" / "a.npy"), "--out", str(tmp_path / "r.png")]
    assert main(args) == 1 and "declare --coarse-kind logits" in capsys.readouterr().err
    assert main([*args, "--coarse-kind", "logits"]) == 0
    assert main(["eval", "--checkpoint", str(run), "--data", "synthetic", "--coarse-kind", "logits"]) == 1
    assert "has none" in capsys.readouterr().err
