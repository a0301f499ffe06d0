"""spn.Refiner, the Python API for users' own arrays: the README example runs on a checkpoint made
here, it agrees with `spn refine`, takes arrays / PIL images / tensors, one or a list, and every
kind of coarse map, and its input errors name the problem."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import spn
from spn.cli import main
from spn.data import read_mask, write_mask
from spn.models import create_model
from spn.models.checkpoint import save_checkpoint

K = 3
README = Path(__file__).resolve().parents[1] / "README.md"


def _trained(name, **kw):
    torch.manual_seed(0)
    m = create_model(name, num_classes=K, **kw)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # a couple of real steps: the checkpoint is not the initialisation
        img = torch.rand(2, 3, 32, 32, generator=g)
        co = torch.softmax(3 * torch.randn(2, K, 32, 32, generator=g), 1)
        loss = torch.nn.functional.cross_entropy(m(img, co), torch.randint(0, K, (2, 32, 32), generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m, opt


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("refiner")
    info = {"num_classes": K, "class_names": ["background", "disc", "bar"]}
    out = {}
    for name, kw in (("spn_three_way", dict(channels=4, guidance_width=4, guidance_depth=2)),
                     ("baseline", dict(width=4, depth=1))):
        m, opt = _trained(name, **kw)
        save_checkpoint(root / name, m, {}, 2, optimizer=opt, data_info=info)
        out[name] = root / name
    return out


def _inputs(H=40, W=56, seed=0):
    g = np.random.default_rng(seed)
    image = (g.random((H, W, 3)) * 255).astype(np.uint8)
    x = g.random((K, H // 8, W // 8)) + 0.1
    coarse = (x / x.sum(0)).astype(np.float32)
    return image, coarse


def test_the_readme_example_runs(runs, tmp_path, monkeypatch, capsys):
    text = README.read_text()
    section = text.split("### Segmentation with a trained checkpoint", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "spn3").symlink_to(runs["spn_three_way"], target_is_directory=True)
    image, coarse = _inputs()
    Image.fromarray(image).save("img.png")
    np.save("coarse.npy", coarse)
    ns: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), ns)
    assert ns["labels"].shape == (40, 56) and ns["labels"].dtype == np.int64
    assert ns["probs"].shape == (K, 40, 56) and np.allclose(ns["probs"].sum(0), 1, atol=1e-5)
    assert [b.shape for b in ns["both"]] == [(40, 56), (20, 28)]
    assert "(40, 56) (3, 40, 56) ['background', 'disc', 'bar']" in capsys.readouterr().out


def test_refiner_agrees_with_spn_refine(runs, tmp_path):
    image, coarse = _inputs()
    Image.fromarray(image).save(tmp_path / "img.png")
    np.save(tmp_path / "c.npy", coarse)
    assert main(["refine", "--checkpoint", str(runs["spn_three_way"]), "--image", str(tmp_path / "img.png"),
                 "--coarse", str(tmp_path / "c.npy"), "--out", str(tmp_path / "r.png")]) == 0
    refiner = spn.Refiner.from_checkpoint(runs["spn_three_way"])
    labels = refiner.refine(image, coarse)
    assert np.array_equal(labels, read_mask(tmp_path / "r.png"))
    probs = refiner.refine_proba(image, coarse)
    assert np.array_equal(probs.argmax(0), labels) and np.allclose(probs.sum(0), 1, atol=1e-5)


def test_inputs_of_every_form_give_the_same_result(runs):
    refiner = spn.Refiner.from_checkpoint(runs["spn_three_way"])
    image, coarse = _inputs()
    ref = refiner.refine_proba(image, coarse)
    same = [
        refiner.refine_proba(Image.fromarray(image), coarse),
        refiner.refine_proba(image.astype(np.float32) / 255, coarse),
        refiner.refine_proba(torch.from_numpy(image).permute(2, 0, 1).float() / 255, torch.from_numpy(coarse)),
        refiner.refine_proba(np.dstack([image, np.full(image.shape[:2], 255, np.uint8)]), coarse),  # RGBA
        refiner.refine_proba(image, np.log(coarse), kind="logits"),
        refiner.refine_proba(image, np.round(coarse * 255).astype(np.uint8), kind="probs:255"),
    ]
    for i, p in enumerate(same):
        tol = 2e-2 if i == 5 else 1e-5  # probs:255 is quantised
        assert np.allclose(p, ref, atol=tol), i
    lab = coarse.argmax(0)
    pil = Image.fromarray(lab.astype(np.uint8), mode="L")
    assert np.array_equal(refiner.refine(image, lab, kind="labels"), refiner.refine(image, pil))


def test_lists_are_batched_and_equal_single_calls(runs):
    refiner = spn.Refiner.from_checkpoint(runs["spn_three_way"], batch_size=2)
    items = [_inputs(seed=s) for s in range(3)] + [_inputs(H=24, W=32, seed=9)]
    batch = refiner.refine_proba([i for i, _ in items], [c for _, c in items])
    assert [b.shape for b in batch] == [(K, 40, 56)] * 3 + [(K, 24, 32)]
    for (image, coarse), b in zip(items, batch):
        assert np.allclose(b, refiner.refine_proba(image, coarse), atol=1e-5)


def test_a_baseline_needs_no_coarse_and_restrict_to_present(runs):
    refiner = spn.Refiner.from_checkpoint(runs["baseline"])
    image, coarse = _inputs()
    assert refiner.refine(image).shape == (40, 56)
    only0 = np.zeros((5, 7), np.int64)
    assert set(np.unique(refiner.refine(image, only0, kind="labels", restrict_to_present=True))) == {0}
    with pytest.raises(ValueError, match="restrict_to_present needs"):
        refiner.refine(image, restrict_to_present=True)


@pytest.mark.parametrize("image, coarse, kind, match", [
    (np.zeros((40, 56, 5), np.uint8), None, None, r"\(H, W, 3\)"),
    (np.zeros((40, 56, 3), np.int32), None, None, "unsupported dtype int32"),
    (np.full((40, 56, 3), 2.0, np.float32), None, None, r"float images must lie in \[0, 1\]"),
    (np.full((40, 56, 3), np.nan, np.float32), None, None, "NaN"),
    (torch.zeros(40, 56, 3), None, None, r"tensor image must be \(3, H, W\)"),
    ("img.png", None, None, "expected a numpy array, a torch tensor or a PIL image"),
    (None, np.full((K + 1, 5, 7), 0.25, np.float32), None, "has 4 classes but checkpoint"),
    (None, np.full((K, 5, 20), 1 / 3, np.float32), None, "not the same aspect ratio"),
    (None, np.full((K, 5, 7), 0.5, np.float32), None, "does not sum to one"),
    (None, np.full((K, 5, 7), 80, np.uint8), None, "without a scale"),
    (None, Image.new("L", (7, 5)), "probs", "a PIL image holds class ids"),
    (None, None, None, "refines a coarse segmentation"),
])
def test_input_errors_name_the_problem(runs, image, coarse, kind, match):
    refiner = spn.Refiner.from_checkpoint(runs["spn_three_way"])
    good_image, good_coarse = _inputs()
    image = good_image if image is None else image
    coarse = good_coarse if (coarse is None and "refines" not in match) else coarse
    with pytest.raises((ValueError, TypeError), match=match):
        refiner.refine(image, coarse, kind=kind)


def test_list_errors(runs):
    refiner = spn.Refiner.from_checkpoint(runs["spn_three_way"])
    image, coarse = _inputs()
    with pytest.raises(ValueError, match="one coarse map per image: 2 images"):
        refiner.refine([image, image], [coarse])
    with pytest.raises(ValueError, match="coarse map 1 has 2 classes"):
        refiner.refine([image, image], [coarse, coarse[:2]])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        spn.Refiner("runs/x")


def test_a_label_png_written_by_spn_reads_back_as_the_refiner_input(runs, tmp_path):
    image, coarse = _inputs()
    write_mask(tmp_path / "c.png", coarse.argmax(0))
    refiner = spn.Refiner.from_checkpoint(runs["spn_three_way"])
    with Image.open(tmp_path / "c.png") as pil:
        assert np.array_equal(refiner.refine(image, pil), refiner.refine(image, coarse.argmax(0), kind="labels"))
