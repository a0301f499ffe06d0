"""spn.viz: palette colours, overlays, figure grids and the report tables."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from spn import viz
from spn.data import to_rgb_uint8, voc_palette


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
    rgb = viz.colorize(mask)
    assert rgb.shape == (2, 2, 3) and rgb[1, 1].tolist() == [224, 224, 192]
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        viz.colorize(torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="0..255"):
        viz.colorize(torch.tensor([[300]]))


def test_overlay_blends_and_keeps_background():
    img = torch.full((3, 4, 4), 0.5)
    mask = torch.zeros(4, 4, dtype=torch.long)
    mask[:2] = 1
    out = viz.overlay(img, mask, alpha=0.5)
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert out[3, 0].tolist() == [128, 128, 128]  # background untouched
    assert out[0, 0].tolist() == [128, 64, 64]  # 0.5*128 + 0.5*(128, 0, 0)
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(img, mask, alpha=2)
    with pytest.raises(ValueError, match="differ in size"):
        viz.overlay(img, mask[:3], alpha=0.5)


def test_figure_grid_writes_png_of_the_right_size(tmp_path):
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(3):
        img = torch.rand(3, 40, 50, generator=g)
        m = torch.randint(0, 5, (40, 50), generator=g)
        rows.append([img, m, m.numpy(), torch.softmax(torch.randn(5, 40, 50, generator=g), 0), m])
    path = viz.figure_grid(rows, path=tmp_path / "fig.png")
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
    img2 = viz.figure_grid([{"image": rows[0][0], "ground truth": rows[0][1]}],
                                 path=None, cell_size=20, title="t")
    img3 = viz.figure_grid([{"image": rows[0][0]}], path=None, cell_size=(20, 20))
    assert img2.size[1] > img3.size[1] > 20 + 2 * pad
    assert img3.size[1] - (20 + 2 * pad) == header - pad + pad  # same header without a title
    assert img2.size[0] == img3.size[0] >= 5 * (20 + pad) + pad
    blank = np.asarray(img3)[header:header + 20]
    assert (blank[:, -(20 + pad):] > 150).all()  # the empty last column stays light
    with pytest.raises(ValueError, match="cells for 5 columns"):
        viz.figure_grid([[rows[0][0]]], path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="unknown columns"):
        viz.figure_grid([{"nope": rows[0][0]}], path=tmp_path / "x.png")


# --- report tables -------------------------------------------------------------------------

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
    md = viz.table3_markdown(results)
    lines = md.strip().splitlines()
    assert lines[0] == "| method | overall AC | mean AC | mean IoU | s/image |"
    assert lines[2] == "| coarse | 91.22 | 77.61 | 65.51 | - |"
    assert lines[3] == "| +1 way | 90.64 | 70.64 | 60.95 | 0.0123 |"
    assert lines[4] == "| +3 way | 92.90 | 79.49 | 69.86 | 0.5 |"
    pc = viz.per_class_markdown(results, ["bg", "obj"])
    assert "| class | coarse | +1 way | +3 way |" in pc
    assert "| obj | 41.00 | 33.90 | - |" in pc
    assert "Per-class F1" in pc
    with pytest.raises(ValueError, match="no results"):
        viz.table3_markdown({})
    with pytest.raises(ValueError, match="metrics"):
        viz.table3_markdown({"x": {"foo": 1}})
