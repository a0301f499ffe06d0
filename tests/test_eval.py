"""Evaluation (predict / evaluate / restriction), pictures, report tables, and ``spn eval`` end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from spn.engine import evaluate as ev
from spn.data import read_mask, to_rgb_uint8, voc_palette, write_mask
from spn.engine import report, visualize
from spn.utils.io import write_json, write_markdown


# --- fixtures --------------------------------------------------------------------------------

class DictDataset:
    """A list of items following the dataset contract."""

    def __init__(self, items, num_classes, ignore_index=255):
        self.items = items
        self.num_classes = num_classes
        self.class_names = [f"c{i}" for i in range(num_classes)]
        self.ignore_index = ignore_index

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def random_items(n=3, K=4, H=23, W=29, seed=0, coarse=True):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        mask = torch.randint(0, K, (H, W), generator=g)
        mask[0, :3] = 255
        it = {"image": torch.rand(3, H, W, generator=g), "mask": mask, "name": f"im{i}"}
        if coarse:
            it["coarse"] = torch.softmax(3 * torch.randn(K, H, W, generator=g), 0)
        items.append(it)
    return items


class LogCoarse(torch.nn.Module):
    """An "identity" refiner: returns log(coarse)."""

    name = "spn_identity"

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, image, coarse):
        return torch.log(coarse + 1e-12) + self.dummy


class FixedLogits(torch.nn.Module):
    """Always predicts the given per-class scores (K,) at every pixel."""

    name = "baseline"

    def __init__(self, scores):
        super().__init__()
        self.register_buffer("scores", torch.tensor(scores, dtype=torch.float32))

    def forward(self, image, coarse=None):
        B, _, H, W = image.shape
        return self.scores[None, :, None, None].expand(B, -1, H, W).clone()


class NeedsMultiple(torch.nn.Module):
    name = "baseline"
    size_multiple = 16

    def __init__(self, K=3):
        super().__init__()
        self.K = K
        self.seen = []

    def forward(self, image, coarse=None):
        self.seen.append(tuple(image.shape[-2:]))
        assert image.shape[-2] % 16 == 0 and image.shape[-1] % 16 == 0
        B, _, H, W = image.shape
        ramp = torch.arange(W, dtype=torch.float32)[None, None, None].expand(B, self.K, H, W)
        return ramp * torch.arange(self.K, dtype=torch.float32)[None, :, None, None]


# --- predict / evaluate ----------------------------------------------------------------------

def test_identity_model_gives_coarse_metrics():
    ds = DictDataset(random_items(n=3), 4)
    res = ev.evaluate(LogCoarse(), ds)
    assert res["num_images"] == 3 and res["num_classes"] == 4
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "per_class_iou", "pixels"):
        assert res["coarse"][key] == res["refined"][key]
    assert res["refined"]["pixels"] == 3 * (23 * 29 - 3)
    sec = res["seconds_per_image"]
    assert sec["n"] == 3 and sec["median"] > 0 and sec["mean"] > 0


def test_evaluate_counts_against_confusion_matrix():
    from spn.metrics import ConfusionMatrix

    items = random_items(n=2, K=3)
    res = ev.evaluate(FixedLogits([0.0, 2.0, 1.0]), DictDataset(items, 3), warmup=0)
    cm = ConfusionMatrix(3)
    for it in items:
        cm.update(it["mask"], torch.full_like(it["mask"], 1))
    want = cm.compute()
    assert res["refined"]["pixel_accuracy"] == pytest.approx(want["pixel_accuracy"])
    assert res["refined"]["mean_iou"] == pytest.approx(want["mean_iou"])
    assert res["coarse"] is not None  # the items carry coarse maps even for a baseline


def test_restrict_to_coarse_classes_hand_made():
    # coarse argmax: classes 0 and 2 present, 1 absent
    coarse = torch.zeros(3, 2, 2)
    coarse[0, 0, :] = 1
    coarse[2, 1, :] = 1
    logits = torch.tensor([1.0, 5.0, 2.0])[:, None, None].expand(3, 2, 2).clone()
    out = ev.restrict_to_coarse_classes(logits, coarse)
    assert torch.isinf(out[1]).all() and (out[1] < 0).all()
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])
    assert (out.argmax(0) == 2).all()
    # batched form, per image
    every = torch.nn.functional.one_hot(torch.tensor([[0, 1], [2, 0]]), 3).permute(2, 0, 1).float()
    b = ev.restrict_to_coarse_classes(torch.stack([logits, logits]), torch.stack([coarse, every]))
    assert torch.isinf(b[0, 1]).all() and torch.isfinite(b[1]).all()
    with pytest.raises(ValueError, match="differ in shape"):
        ev.restrict_to_coarse_classes(logits, coarse[:2])


def test_evaluate_restrict_to_present():
    H, W = 6, 8
    mask = torch.zeros(H, W, dtype=torch.long)
    mask[:, 4:] = 2
    coarse = torch.full((3, H, W), 0.05)
    coarse[0, :, :4] = 0.9
    coarse[2, :, 4:] = 0.9
    item = {"image": torch.rand(3, H, W), "mask": mask, "coarse": coarse, "name": "a"}
    model = FixedLogits([1.0, 5.0, 2.0])  # always says class 1, absent from the coarse map
    plain = ev.evaluate(model, DictDataset([item], 3))
    assert plain["refined"]["pixel_accuracy"] == 0.0
    res = ev.evaluate(model, DictDataset([item], 3), restrict_to_present=True)
    # restricted to {0, 2}: class 2 wins everywhere -> right half correct
    assert res["refined"]["pixel_accuracy"] == pytest.approx(0.5)
    assert res["coarse"]["pixel_accuracy"] == 1.0
    assert res["restrict_to_present"] is True
    probs = ev.predict(model, item["image"], coarse, restrict=True)
    assert torch.all(probs[1] == 0) and torch.allclose(probs.sum(0), torch.ones(H, W))
    no_coarse = dict(item)
    del no_coarse["coarse"]
    with pytest.raises(ValueError, match="restrict_to_present needs coarse"):
        ev.evaluate(model, DictDataset([no_coarse], 3), restrict_to_present=True)


def test_evaluate_voc_protocol_matches_restriction():
    items = random_items(n=2, K=4, seed=3)
    model = FixedLogits([0.0, 0.5, 3.0, 1.0])
    a = ev.evaluate(model, DictDataset(items, 4), restrict_to_present=True)
    b = ev.evaluate(model, DictDataset(items, 4), protocol="voc")
    assert a["refined"]["per_class_iou"] == b["refined"]["per_class_iou"]
    assert b["protocol"] == "voc"
    with pytest.raises(ValueError, match="unknown protocol"):
        ev.evaluate(model, DictDataset(items, 4), protocol="nope")


def test_predict_pads_to_model_multiple_and_crops():
    m = NeedsMultiple(K=3)
    img = torch.rand(3, 21, 35)
    probs = ev.predict(m, img)
    assert probs.shape == (3, 21, 35)
    assert m.seen == [(32, 48)]
    assert torch.allclose(probs.sum(0), torch.ones(21, 35))
    # the crop keeps the top-left corner: the ramp of column j is j * k
    logits = ev.predict_logits(m, img)
    assert torch.equal(logits[2, 0], 2 * torch.arange(35, dtype=torch.float32))
    batch = ev.predict_logits(m, torch.rand(2, 3, 21, 35))
    assert batch.shape == (2, 3, 21, 35)


@pytest.mark.parametrize("name", ["baseline", "spn_one_way", "spn_three_way"])
def test_predict_real_models_any_size(name):
    from spn.models import create_model

    torch.manual_seed(0)
    kw = {"num_classes": 3, "width": 4, "depth": 2} if name == "baseline" else \
        {"num_classes": 3, "channels": 4, "guidance_width": 4, "guidance_depth": 2}
    model = create_model(name, **kw)
    model.train()
    img = torch.rand(3, 27, 33)
    coarse = None if name == "baseline" else torch.softmax(torch.randn(3, 27, 33), 0)
    probs = ev.predict(model, img, coarse)
    assert probs.shape == (3, 27, 33)
    assert model.training  # restored
    assert torch.allclose(probs.sum(0), torch.ones(27, 33), atol=1e-5)
    if name != "baseline":
        # untrained SPN ~ identity: argmax equals the coarse argmax almost everywhere
        assert (probs.argmax(0) == coarse.argmax(0)).float().mean() > 0.95
        with pytest.raises(ValueError, match="coarse"):
            ev.predict(model, img, None)


def test_evaluate_errors():
    items = random_items(n=2, K=3)
    with pytest.raises(ValueError, match="predicts 2 classes"):
        ev.evaluate(FixedLogits([0.0, 1.0]), DictDataset(items, 3))
    with pytest.raises(ValueError, match="empty"):
        ev.evaluate(LogCoarse(), DictDataset([], 3))
    with pytest.raises(ValueError, match="limit"):
        ev.evaluate(LogCoarse(), DictDataset(items, 3), limit=0)
    res = ev.evaluate(LogCoarse(), DictDataset(items, 3), limit=1)
    assert res["num_images"] == 1
    with pytest.raises(ValueError, match="does not match image"):
        ev.predict(LogCoarse(), torch.rand(3, 5, 5), torch.rand(3, 4, 5))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        ev.predict(LogCoarse(), torch.rand(4, 5, 5), None)


# --- pictures --------------------------------------------------------------------------------

def test_palette_and_colorize():
    pal = voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0]
    assert pal[15].tolist() == [192, 128, 128]  # VOC "person"
    assert pal[255].tolist() == [224, 224, 192]
    assert len({tuple(c) for c in pal[:21]}) == 21
    mask = torch.tensor([[0, 1], [2, 255]])
    rgb = visualize.colorize(mask)
    assert rgb.shape == (2, 2, 3) and rgb[1, 1].tolist() == [224, 224, 192]
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        visualize.colorize(torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="0..255"):
        visualize.colorize(torch.tensor([[300]]))


def test_overlay_blends_and_keeps_background():
    img = torch.full((3, 4, 4), 0.5)
    mask = torch.zeros(4, 4, dtype=torch.long)
    mask[:2] = 1
    out = visualize.overlay(img, mask, alpha=0.5)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert out[3, 0].tolist() == [128, 128, 128]  # background untouched
    assert out[0, 0].tolist() == [128, 64, 64]  # 0.5*128 + 0.5*(128, 0, 0)
    with pytest.raises(ValueError, match="alpha"):
        visualize.overlay(img, mask, alpha=2)
    with pytest.raises(ValueError, match="differ in size"):
        visualize.overlay(img, mask[:3], alpha=0.5)


def test_figure_grid_writes_png_of_the_right_size(tmp_path):
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(3):
        img = torch.rand(3, 40, 50, generator=g)
        m = torch.randint(0, 5, (40, 50), generator=g)
        rows.append([img, m, m.numpy(), torch.softmax(torch.randn(5, 40, 50, generator=g), 0), m])
    path = visualize.figure_grid(rows, path=tmp_path / "fig.png")
    assert path.is_file() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with Image.open(path) as im:
        w, h = im.size
        assert im.mode == "RGB"
        arr = np.asarray(im)
    pad = 4
    header = h - 3 * (40 + pad) - pad
    assert 8 < header < 40  # one title line
    assert w >= 5 * (50 + pad) + pad
    # the first cell is the first image, pixel for pixel
    x0 = pad + (max(50, 0) - 50) // 2
    cell = arr[header: header + 40, x0: x0 + 50]
    assert np.array_equal(cell, to_rgb_uint8(rows[0][0]))
    # dict rows, blanks, resized cells and a title
    img2 = visualize.figure_grid([{"image": rows[0][0], "ground truth": rows[0][1]}],
                                 path=None, cell_size=20, title="t")
    img3 = visualize.figure_grid([{"image": rows[0][0]}], path=None, cell_size=(20, 20))
    assert img2.size[1] > img3.size[1] > 20 + 2 * pad
    assert img3.size[1] - (20 + 2 * pad) == header - pad + pad  # same header without a title
    assert img2.size[0] == img3.size[0] >= 5 * (20 + pad) + pad
    blank = np.asarray(img3)[header:header + 20]
    assert (blank[:, -(20 + pad):] > 150).all()  # the empty last column stays light
    with pytest.raises(ValueError, match="cells for 5 columns"):
        visualize.figure_grid([[rows[0][0]]], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="unknown columns"):
        visualize.figure_grid([{"nope": rows[0][0]}], path=tmp_path / "x.png")


def test_label_png_round_trip(tmp_path):
    m = torch.tensor([[0, 1, 2], [20, 255, 3]])
    p = write_mask(tmp_path / "l.png", m)
    with Image.open(p) as im:
        assert im.mode == "P"
        assert im.getpalette()[3:6] == [128, 0, 0]
    assert read_mask(p).tolist() == m.tolist()
    with pytest.raises(FileNotFoundError):
        read_mask(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        read_mask(tmp_path / "bad.png")


# --- report ----------------------------------------------------------------------------------

def _metrics(pa, ma, miou, ious):
    return {"pixel_accuracy": pa, "mean_accuracy": ma, "mean_iou": miou, "per_class_iou": ious,
            "per_class_f1": [2 * v / (1 + v) if v == v else math.nan for v in ious],
            "per_class_accuracy": ious, "pixels": 10}


def test_table3_markdown():
    results = {
        "coarse": {"metrics": _metrics(0.9122, 0.7761, 0.6551, [0.9, 0.41]), "seconds_per_image": None},
        "+1 way": {"metrics": _metrics(0.9064, 0.7064, 0.6095, [0.88, 0.339]), "seconds_per_image": 0.0123},
        "+3 way": {"metrics": _metrics(0.9290, 0.7949, 0.6986, [0.92, math.nan]),
                   "seconds_per_image": {"median": 0.5, "mean": 0.6}},
    }
    md = report.table3_markdown(results)
    lines = md.strip().splitlines()
    assert lines[0] == "| method | overall AC | mean AC | mean IoU | s/image |"
    assert lines[2] == "| coarse | 91.22 | 77.61 | 65.51 | - |"
    assert lines[3] == "| +1 way | 90.64 | 70.64 | 60.95 | 0.0123 |"
    assert lines[4] == "| +3 way | 92.90 | 79.49 | 69.86 | 0.5 |"
    pc = report.per_class_markdown(results, ["bg", "obj"])
    assert "| class | coarse | +1 way | +3 way |" in pc
    assert "| obj | 41.00 | 33.90 | - |" in pc
    assert "Per-class F1" in pc
    with pytest.raises(ValueError, match="no results"):
        report.table3_markdown({})
    with pytest.raises(ValueError, match="metrics"):
        report.table3_markdown({"x": {"foo": 1}})


def test_write_json_nan_and_atomic(tmp_path):
    p = write_json(tmp_path / "sub" / "m.json", {"a": math.nan, "b": torch.tensor([1.5]),
                                                        "c": (1, 2), "d": np.float32(2.0)})
    data = json.loads(p.read_text())
    assert data == {"a": None, "b": [1.5], "c": [1, 2], "d": 2.0}
    assert [q.name for q in p.parent.iterdir()] == ["m.json"]
    with pytest.raises(TypeError, match="object"):
        write_json(tmp_path / "x.json", {"a": object()})
    assert not (tmp_path / "x.json").exists()
    md = write_markdown(tmp_path / "r.md", "# hi")
    assert md.read_text() == "# hi\n"
