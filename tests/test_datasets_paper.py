"""PASCAL VOC 2012 and HELEN loaders on small fixture trees in the exact release layouts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spn.data import (
    HELEN_CLASSES, VOC_CLASSES, HelenFaces, PatchDataset, VOCSegmentation,
    build_dataset, combine_component_maps, read_landmarks, voc_palette,
)


# ----------------------------------------------------------------------------- VOC
def make_voc(root, train=("2007_000032", "2007_000039"), val=("2007_000063",), h=30, w=40):
    voc = root / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "Annotations"):
        (voc / d).mkdir(parents=True)
    masks = {}
    for i, n in enumerate(list(train) + list(val)):
        rng = np.random.default_rng(i)
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(voc / "JPEGImages" / f"{n}.jpg")
        m = np.zeros((h, w), np.uint8)
        cls = 1 + 7 * i  # aeroplane, car, dog...
        m[5:20, 8:30] = cls
        m[4, 7:31] = m[20, 7:31] = 255  # VOC's ignore border
        img = Image.frombytes("P", (w, h), m.tobytes())
        img.putpalette(voc_palette().reshape(-1).tolist())
        img.save(voc / "SegmentationClass" / f"{n}.png")
        masks[n] = m
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(train) + "\n")
    (voc / "ImageSets/Segmentation/val.txt").write_text("\n".join(val) + "\n")
    return voc, masks


def test_voc_tree_both_roots(tmp_path):
    voc, masks = make_voc(tmp_path)
    for root in (tmp_path / "VOCdevkit", voc):
        ds = build_dataset(f"voc:{root}", split="train")
        assert isinstance(ds, VOCSegmentation)
        assert ds.num_classes == 21 and ds.class_names == VOC_CLASSES and ds.class_names[15] == "person"
        assert ds.names == ["2007_000032", "2007_000039"] and ds.coarse == "none"
        it = ds[1]
        assert it["image"].shape == (3, 30, 40) and "coarse" not in it
        # the palette PNG is read as indices (8 = cat), not as its colours; 255 kept as ignore
        assert torch.equal(it["mask"], torch.from_numpy(masks["2007_000039"]).long())
        assert set(it["mask"].unique().tolist()) == {0, 8, 255}
    val = build_dataset(f"voc:{voc}", split="val", coarse="gt-downsample:4")
    c = val[0]["coarse"]
    assert c.shape == (21, 30, 40) and torch.allclose(c.sum(0), torch.ones(30, 40), atol=1e-5)
    p = PatchDataset(val, size=16, patches_per_image=2)[0]
    assert len(set(p["mask"].unique().tolist()) - {255}) >= 2


def test_voc_coarse_dir(tmp_path):
    voc, masks = make_voc(tmp_path)
    cdir = tmp_path / "fcn8s"
    cdir.mkdir()
    for n in ("2007_000032", "2007_000039"):
        logits = np.zeros((21, 4, 5), np.float32)
        logits[0] = 2.0
        np.save(cdir / f"{n}.npy", logits)
    ds = VOCSegmentation(tmp_path / "VOCdevkit", split="train", coarse_dir=cdir, coarse_kind="logits")
    assert ds.coarse == "files"
    c = ds[0]["coarse"]
    assert c.shape == (21, 30, 40)
    e2 = np.exp(2.0)
    assert torch.allclose(c[0], torch.full((30, 40), e2 / (e2 + 20)), atol=1e-5)  # softmax of the logits
    with pytest.raises(FileNotFoundError, match="no coarse map for 1 item"):
        VOCSegmentation(voc, split="val", coarse_dir=cdir)
    with pytest.raises(ValueError, match="coarse_dir"):
        VOCSegmentation(voc, split="train", coarse="files")


def test_voc_layout_errors(tmp_path):
    voc, _ = make_voc(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"(?s)available splits: \['train', 'val'\]"):
        build_dataset(f"voc:{voc}", split="test")
    (voc / "SegmentationClass").rename(voc / "SegmentationObject")
    with pytest.raises(FileNotFoundError) as e:
        build_dataset(f"voc:{tmp_path / 'VOCdevkit'}")
    msg = str(e.value)
    assert "lacks SegmentationClass" in msg and "expected layout" in msg
    assert "SegmentationObject/" in msg and "JPEGImages/" in msg  # the tree that was found
    (voc / "SegmentationObject").rename(voc / "SegmentationClass")
    (voc / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2007_000039\.jpg does not exist"):
        VOCSegmentation(voc)


# ----------------------------------------------------------------------------- HELEN
def _ellipse(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def make_helen(root, names=("100032540_1", "100040721_1", "100466187_1"), h=60, w=80, numbered=True):
    """A face (skin ellipse with components) off-centre at (cy, cx) = (25, 50) in an h x w image."""
    (root / "images").mkdir(parents=True)
    truth = {}
    for i, n in enumerate(names):
        rng = np.random.default_rng(i)
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(root / "images" / f"{n}.jpg")
        idx = np.zeros((h, w), np.int64)
        idx[:12, :] = 10  # hair along the top
        idx[_ellipse(h, w, 25, 50, 15, 12)] = 1  # face skin: box rows 11..39, cols 38..62
        idx[16:18, 42:47] = 2
        idx[16:18, 53:58] = 3
        idx[20:22, 43:46] = 4
        idx[20:22, 54:57] = 5
        idx[23:28, 49:51] = 6
        idx[30, 45:55] = 7
        idx[31, 46:54] = 8
        idx[32, 45:55] = 9
        ldir = root / "labels" / n
        ldir.mkdir(parents=True)
        for c in range(11):
            g = np.where(idx == c, 255, 0).astype(np.uint8)
            if c == 0:
                g[:, :3] = 0  # a strip where every map is zero -> background by the threshold
            if c == 1:  # soft edges: skin at 100 where brows are (brow is stronger)
                g[16:18, 42:47] = 100
            Image.fromarray(g).save(ldir / f"{n}_lbl{c:02d}.png")
        truth[n] = idx
    lines = [f"{k + 1} , {n}" for k, n in enumerate(names[:2])] if numbered else list(names[:2])
    (root / "exemplars.txt").write_text("\n".join(lines) + "\n")
    (root / "tuning.txt").write_text(names[2] + "\n")
    (root / "testing.txt").write_text("")
    return truth


def test_helen_combine_and_full_image(tmp_path):
    truth = make_helen(tmp_path)
    ds = build_dataset(f"helen:{tmp_path}", split="train", size=None)
    assert isinstance(ds, HelenFaces) and ds.num_classes == 11 and ds.class_names == HELEN_CLASSES
    assert ds.names == ["100032540_1", "100040721_1"]  # parsed from "N , NAME" lines
    it = ds[0]
    assert it["image"].shape == (3, 60, 80) and "coarse" not in it
    assert torch.equal(it["mask"], torch.from_numpy(truth["100032540_1"]))
    assert build_dataset(f"helen:{tmp_path}", split="val", size=None).names == ["100466187_1"]
    maps = np.zeros((11, 2, 2), np.uint8)
    maps[3, 0, 0], maps[5, 0, 0], maps[0, 1, 1], maps[4, 0, 1] = 200, 210, 255, 30
    assert combine_component_maps(maps).tolist() == [[5, 0], [0, 0]]


def test_helen_crop_centre_pad_and_landmarks(tmp_path):
    truth = make_helen(tmp_path, numbered=False)
    ds = HelenFaces(tmp_path, split="train", size=32, coarse="gt-downsample:4")
    assert ds.names == ["100032540_1", "100040721_1"]  # plain NAME lines
    it = ds[0]
    assert it["image"].shape == (3, 32, 32) and it["mask"].shape == (32, 32) and it["coarse"].shape == (11, 32, 32)
    # face labels span rows 10..40, cols 38..62 -> centre (25.5, 50.5) -> window rows 10..41, cols 35..66
    assert torch.equal(it["mask"], torch.from_numpy(truth["100032540_1"][10:42, 35:67]))
    big = HelenFaces(tmp_path, split="train", size=100)[0]  # larger than the image: padded
    m = big["mask"]
    assert m.shape == (100, 100)
    # centre (25.5, 50.5) -> y0 = -24, x0 = 1: rows 0..23 and 84..99 and columns 79..99 padded
    assert (m[:24] == 255).all() and (m[84:] == 255).all() and (m[:, 79:] == 255).all()
    assert big["image"][:, :24].abs().sum() == 0 and big["image"][:, :, 79:].abs().sum() == 0
    assert torch.equal(m[24:84, :79], torch.from_numpy(truth["100032540_1"][:, 1:80]))
    # landmarks (file: NAME x y x y ...; header skipped) move the centre
    lm = tmp_path / "lm.csv"
    lm.write_text("name,x1,y1,x2,y2\n100032540_1, 20, 30, 20, 30\n")
    assert read_landmarks(lm)["100032540_1"].tolist() == [[20, 30], [20, 30]]
    it = HelenFaces(tmp_path, split="train", size=20, landmarks=lm)[0]
    assert torch.equal(it["mask"], torch.from_numpy(truth["100032540_1"][20:40, 10:30]))
    # a HELEN-style annotation folder: NAME on the first line, then "x , y" lines
    ann = tmp_path / "annotation"
    ann.mkdir()
    (ann / "1.txt").write_text("100040721_1\n 10.0 , 12.0\n 14.0 , 16.0\n")
    pts = read_landmarks(ann)
    assert pts["100040721_1"].tolist() == [[10.0, 12.0], [14.0, 16.0]]
    it = HelenFaces(tmp_path, split="train", size=20, landmarks=ann)[1]
    assert torch.equal(it["mask"], torch.from_numpy(truth["100040721_1"][4:24, 2:22]))
    # no landmark for item 0 -> mask centre
    assert torch.equal(HelenFaces(tmp_path, split="train", size=32, landmarks=ann)[0]["mask"],
                       torch.from_numpy(truth["100032540_1"][10:42, 35:67]))
    bad = tmp_path / "bad.txt"
    bad.write_text("100032540_1 1 2 3\n")
    with pytest.raises(ValueError, match="x y pairs"):
        read_landmarks(bad)


def test_helen_coarse_dir_cropped_with_image(tmp_path):
    truth = make_helen(tmp_path)
    cdir = tmp_path / "baseline"
    cdir.mkdir()
    for n, idx in truth.items():
        Image.fromarray(idx.astype(np.uint8)).save(cdir / f"{n}.png")
    ds = HelenFaces(tmp_path, split="val", size=32, coarse_dir=cdir)
    it = ds[0]
    assert ds.coarse == "files" and it["coarse"].shape == (11, 32, 32)
    assert torch.equal(it["coarse"].argmax(0), it["mask"])


def test_helen_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)not a HELEN tree.*labels/NAME/NAME_lbl00\.png"):
        build_dataset(f"helen:{tmp_path}")
    make_helen(tmp_path / "h")
    with pytest.raises(FileNotFoundError, match=r"no split file .*holdout\.txt"):
        HelenFaces(tmp_path / "h", split="holdout")
    (tmp_path / "h" / "labels" / "100466187_1" / "100466187_1_lbl07.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*100466187_1_lbl07\.png"):
        HelenFaces(tmp_path / "h", split="val")
    with pytest.raises(ValueError, match="lists no images"):
        HelenFaces(tmp_path / "h", split="test")
