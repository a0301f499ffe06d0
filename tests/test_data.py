"""spn.data: registry, synthetic scenes, coarse sources, folder dataset, patches."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from spn.data import (
    CorruptFileError, FolderDataset, PatchDataset, SYNTHETIC_CLASSES, SyntheticScenes,
    build_dataset, dataset_prefixes, make_coarse_from_mask, parse_coarse_source, read_coarse_file,
    read_mask, register_dataset, write_mask,
)


# ----------------------------------------------------------------------------- fixtures
def _rgb(h, w, seed):
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def _mask(h, w, k, seed):
    """Blocky mask with ids in [0, k)."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), np.uint8)
    for c in range(1, k):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        m[y:y + 8, x:x + 10] = c
    return m


def make_folder(root, names=("a", "b", "c", "d", "e", "f", "g"), h=24, w=32, k=4,
                splits=None, classes=None, coarse=None, ext=".png"):
    """Write ROOT/images, ROOT/masks (+ optional splits, classes.txt, coarse)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    masks = {}
    for i, n in enumerate(names):
        Image.fromarray(_rgb(h, w, i)).save(root / "images" / f"{n}{ext}")
        m = _mask(h, w, k, i)
        m[0, 0] = k - 1  # every mask holds the top class so inference is exact
        write_mask(root / "masks" / f"{n}.png", m, palette=(i % 2 == 0))
        masks[n] = m
    if splits:
        (root / "splits").mkdir()
        for s, lst in splits.items():
            (root / "splits" / f"{s}.txt").write_text("\n".join(lst) + "\n")
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    if coarse:
        (root / "coarse").mkdir()
        for n in names:
            if coarse == "png":
                write_mask(root / "coarse" / f"{n}.png", masks[n][::2, ::2].copy(), palette=False)
            else:  # npy logits at half resolution, declared by the folder's sidecar
                rng = np.random.default_rng(hash(n) % 1000)
                np.save(root / "coarse" / f"{n}.npy", rng.normal(0, 2, (k, h // 2, w // 2)).astype(np.float32))
                (root / "coarse" / "coarse.json").write_text('{"kind": "logits"}')
    return masks


# ----------------------------------------------------------------------------- registry
def test_registry_unknown_prefix_lists_valid():
    with pytest.raises(ValueError) as e:
        build_dataset("cityscapes:/x")
    for p in ("synthetic", "folder:PATH", "voc:PATH", "helen:PATH"):
        assert p in str(e.value)
    with pytest.raises(ValueError, match="needs a path"):
        build_dataset("folder")
    with pytest.raises(ValueError, match="valid sources"):
        build_dataset("synthetic", coarse="magic")
    with pytest.raises(ValueError, match="gt-downsample"):
        build_dataset("synthetic", coarse="gt-downsample:x")


def test_register_dataset_extension():
    calls = {}

    def factory(arg, split="train", coarse=None, **kw):
        calls.update(arg=arg, split=split, coarse=coarse, **kw)
        return SyntheticScenes(split=split, num_images=2, size=32, coarse=coarse)

    from spn.data import registry

    register_dataset("mytest", factory)
    try:
        assert "mytest" in dataset_prefixes()
        ds = build_dataset("mytest:/some/where", split="val", coarse="none", extra=3)
        assert calls == {"arg": "/some/where", "split": "val", "coarse": "none", "extra": 3}
        assert "coarse" not in ds[0]
        # the decorator form registers the same way
        assert register_dataset("mytest2", needs_path=False)(factory) is factory
        build_dataset("mytest2", split="train", coarse="none")
        assert calls["arg"] is None and calls["split"] == "train"
        with pytest.raises(ValueError, match="takes no argument"):
            build_dataset("mytest2:x")
    finally:
        registry._REGISTRY.pop("mytest", None)
        registry._REGISTRY.pop("mytest2", None)


def test_parse_coarse_source():
    assert parse_coarse_source("gt-downsample:8").factor == 8
    assert str(parse_coarse_source("FILES")) == "files"
    for bad in ("gt-downsample", "gt-downsample:0", "blur"):
        with pytest.raises(ValueError):
            parse_coarse_source(bad)


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_contract_and_determinism():
    ds = build_dataset("synthetic", split="train", num_images=4, size=64, seed=3)
    assert ds.num_classes == 6 and ds.class_names == SYNTHETIC_CLASSES and ds.ignore_index == 255
    assert ds.coarse == "gt-downsample:8"  # synthetic default
    it = ds[1]
    assert it["image"].shape == (3, 64, 64) and it["image"].dtype == torch.float32
    assert 0 <= it["image"].min() and it["image"].max() <= 1
    assert it["mask"].shape == (64, 64) and it["mask"].dtype == torch.int64
    assert it["coarse"].shape == (6, 64, 64) and it["coarse"].dtype == torch.float32
    assert isinstance(it["name"], str)
    again = SyntheticScenes(split="train", num_images=4, size=64, seed=3)[1]  # fresh object
    assert torch.equal(it["image"], again["image"]) and torch.equal(it["mask"], again["mask"])
    assert torch.equal(it["coarse"], again["coarse"])
    # item i depends on (seed, split, i) only: num_images does not matter, other index/split/seed differ
    assert torch.equal(SyntheticScenes(num_images=9, size=64, seed=3)[1]["image"], it["image"])
    assert not torch.equal(ds[2]["image"], it["image"])
    assert not torch.equal(SyntheticScenes(split="val", size=64, seed=3)[1]["image"], it["image"])
    assert not torch.equal(SyntheticScenes(num_images=4, size=64, seed=4)[1]["image"], it["image"])
    assert SyntheticScenes(size=(48, 80), num_images=1)[0]["mask"].shape == (48, 80)
    assert "coarse" not in SyntheticScenes(num_images=1, size=32, coarse="none")[0]
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(ValueError, match="split"):
        SyntheticScenes(split="holdout")
    with pytest.raises(ValueError, match="no coarse files"):
        SyntheticScenes(coarse="files")


def test_synthetic_class_coverage_and_occlusion():
    ds = SyntheticScenes(num_images=6, size=128, coarse="none")
    seen = set()
    for i in range(len(ds)):
        m = ds[i]["mask"]
        seen |= set(m.unique().tolist())
        assert set(m.unique().tolist()) <= set(range(6))
    assert seen == set(range(6)), seen


def test_synthetic_masks_match_image_edges():
    ds = SyntheticScenes(num_images=4, size=128, coarse="none")
    ratios = []
    for i in range(len(ds)):
        it = ds[i]
        img, m = it["image"], it["mask"]
        gy = (img[:, 1:, :-1] - img[:, :-1, :-1]).abs().sum(0)
        gx = (img[:, :-1, 1:] - img[:, :-1, :-1]).abs().sum(0)
        grad = gx + gy
        edge = (m[1:, :-1] != m[:-1, :-1]) | (m[:-1, 1:] != m[:-1, :-1])
        assert edge.any()
        ratios.append(float(grad[edge].mean() / grad[~edge].mean()))
    assert min(ratios) > 2.0, ratios


@pytest.mark.timing
def test_synthetic_speed():
    ds = SyntheticScenes(num_images=10, size=256, coarse="none")
    ds[0]
    t = time.perf_counter()
    for i in range(10):
        ds[i]
    per = (time.perf_counter() - t) / 10
    assert per < 0.06, f"{per * 1e3:.1f} ms per 256x256 scene"  # ~9 ms measured; slack for busy CI


# ----------------------------------------------------------------------------- coarse
def test_gt_downsample_is_valid_and_blurry():
    it = SyntheticScenes(num_images=1, size=128, coarse="none")[0]
    m = it["mask"].clone()
    m[:4] = 255  # an ignored band
    p = make_coarse_from_mask(m, 6, 8)
    assert p.shape == (6, 128, 128) and p.dtype == torch.float32
    assert p.min() >= 0 and torch.allclose(p.sum(0), torch.ones(128, 128), atol=1e-5)
    valid = m != 255
    agree = (p.argmax(0) == m)[valid].float().mean()
    assert agree > 0.85, agree
    # blurrier than the one-hot ground truth: soft boundary pixels, smaller total variation
    assert (p.max(0).values < 0.9).float().mean() > 0.02
    oh = torch.nn.functional.one_hot(torch.where(valid, m, 0), 6).permute(2, 0, 1).float()
    tv = lambda t: (t[:, 1:] - t[:, :-1]).abs().sum() + (t[:, :, 1:] - t[:, :, :-1]).abs().sum()
    assert tv(p) < 0.8 * tv(oh)
    assert torch.equal(p, make_coarse_from_mask(m, 6, 8))  # deterministic
    assert torch.allclose(make_coarse_from_mask(m.numpy(), 6, 8), p)
    # a uniform mask stays one-hot; factor 1 with no blur is the one-hot itself
    flat = make_coarse_from_mask(torch.full((20, 30), 2), 4, 8)
    assert torch.allclose(flat[2], torch.ones(20, 30))
    assert torch.allclose(make_coarse_from_mask(m, 6, 1, sigma=0)[:, 4:], oh[:, 4:])
    with pytest.raises(ValueError, match=r"\[7\]"):
        make_coarse_from_mask(torch.full((8, 8), 7), 6, 2)
    with pytest.raises(TypeError):
        make_coarse_from_mask(torch.zeros(8, 8), 6, 2)


def test_read_coarse_file_npy_and_png(tmp_path):
    logits = np.random.default_rng(0).normal(0, 1, (3, 4, 6)).astype(np.float32)
    np.save(tmp_path / "l.npy", logits)
    p = read_coarse_file(tmp_path / "l.npy", 3, (8, 12), kind="logits")
    assert p.shape == (3, 8, 12) and torch.allclose(p.sum(0), torch.ones(8, 12), atol=1e-5)
    ref = torch.nn.functional.interpolate(torch.softmax(torch.from_numpy(logits), 0)[None], size=(8, 12),
                                          mode="bilinear", align_corners=False)[0]
    assert torch.allclose(p, ref, atol=1e-5)  # softmax first, then bilinear upsampling
    with pytest.raises(ValueError, match="has 3 classes but the dataset has 5"):
        read_coarse_file(tmp_path / "l.npy", 5, (8, 12), kind="logits")
    write_mask(tmp_path / "c.png", np.array([[0, 1], [2, 255]]))
    q = read_coarse_file(tmp_path / "c.png", 3, (2, 2))
    assert torch.equal(q[:, 0, 0], torch.tensor([1.0, 0, 0])) and torch.allclose(q[:, 1, 1], torch.full((3,), 1 / 3))
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(CorruptFileError, match="bad.npy"):
        read_coarse_file(tmp_path / "bad.npy", 3, (2, 2))


# ----------------------------------------------------------------------------- folder
def test_folder_default_split_and_inferred_classes(tmp_path):
    names = ["a", "b", "c", "d", "e", "f", "g"]
    masks = make_folder(tmp_path, names, ext=".jpg")
    tr = build_dataset(f"folder:{tmp_path}", split="train")
    va = build_dataset(f"folder:{tmp_path}", split="val")
    assert va.names == ["e"] and tr.names == ["a", "b", "c", "d", "f", "g"]
    assert len(build_dataset(f"folder:{tmp_path}", split="all")) == 7
    assert tr.num_classes == 4 and tr.class_names == ["class_0", "class_1", "class_2", "class_3"]
    assert tr.coarse == "none"
    it = tr[0]
    assert "coarse" not in it and it["name"] == "a"
    assert it["image"].shape == (3, 24, 32) and it["image"].dtype == torch.float32
    assert torch.equal(it["mask"], torch.from_numpy(masks["a"]).long())  # palette PNG read as indices
    assert torch.equal(tr[1]["mask"], torch.from_numpy(masks["b"]).long())  # greyscale PNG
    gt = build_dataset(f"folder:{tmp_path}", coarse="gt-downsample:4")[0]["coarse"]
    assert gt.shape == (4, 24, 32)
    with pytest.raises(FileNotFoundError, match="no coarse map"):
        build_dataset(f"folder:{tmp_path}", coarse="files")
    with pytest.raises(ValueError, match="unknown split"):
        FolderDataset(tmp_path, split="test")


def test_folder_splits_classes_and_coarse(tmp_path):
    make_folder(tmp_path / "p", splits={"train": ["b", "a"], "val": ["c"], "test": ["d"]},
                classes=["bg", "x", "y", "z", "w"], coarse="png")
    ds = FolderDataset(tmp_path / "p", split="train")
    assert ds.names == ["b", "a"] and ds.num_classes == 5 and ds.class_names[1] == "x"
    assert ds.coarse == "files"  # default when ROOT/coarse exists
    c = ds[0]["coarse"]
    assert c.shape == (5, 24, 32) and torch.allclose(c.sum(0), torch.ones(24, 32), atol=1e-5)
    assert len(FolderDataset(tmp_path / "p", split="test")) == 1
    assert "coarse" not in FolderDataset(tmp_path / "p", coarse="none")[0]
    with pytest.raises(ValueError, match="split files there"):
        FolderDataset(tmp_path / "p", split="holdout")

    make_folder(tmp_path / "n", coarse="npy")
    ds = FolderDataset(tmp_path / "n", split="val")
    c = ds[0]["coarse"]
    assert c.shape == (4, 24, 32) and c.min() >= 0 and torch.allclose(c.sum(0), torch.ones(24, 32), atol=1e-5)


def test_folder_layout_errors(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match=r"(?s)masks.*expected layout.*ROOT/images/NAME"):
        FolderDataset(tmp_path)
    with pytest.raises(FileNotFoundError):
        build_dataset(f"folder:{tmp_path / 'nothing'}")
    root = tmp_path / "r"
    make_folder(root, ["a", "b"])
    Image.fromarray(_rgb(8, 8, 0)).save(root / "images" / "lonely.png")
    with pytest.raises(FileNotFoundError, match=r"lonely\.png has no mask.*masks/lonely\.png"):
        FolderDataset(root)


def test_folder_size_mismatch_and_bad_ids(tmp_path):
    make_folder(tmp_path, ["a", "b", "c"], classes=["bg", "x", "y", "z"])
    write_mask(tmp_path / "masks" / "b.png", np.zeros((20, 30), np.uint8))
    ds = FolderDataset(tmp_path, split="all")
    with pytest.raises(ValueError, match=r"image .*b\.png is 32x24 \(WxH\) but mask .*b\.png is 30x20"):
        ds[1]
    m = np.zeros((24, 32), np.uint8)
    m[3, 3], m[4, 4], m[5, 5] = 7, 9, 255
    write_mask(tmp_path / "masks" / "c.png", m)
    with pytest.raises(ValueError, match=r"c\.png holds class ids \[7, 9\] >= num_classes 4"):
        ds[2]
    # a colour-coded mask is refused, naming the file
    Image.fromarray(_rgb(24, 32, 5)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png is a colour"):
        ds[0]


def test_folder_corrupt_error_and_skip(tmp_path):
    make_folder(tmp_path, ["a", "b", "c", "d", "e"])
    (tmp_path / "images" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    raw = (tmp_path / "images" / "c.png").read_bytes()
    (tmp_path / "images" / "c.png").write_bytes(raw[: len(raw) // 2])  # truncated
    ds = FolderDataset(tmp_path, split="all")
    with pytest.raises(CorruptFileError, match=r"b\.png"):
        ds[1]
    with pytest.raises(ValueError, match=r"c\.png"):  # CorruptFileError is a ValueError
        ds[2]
    ds = FolderDataset(tmp_path, split="all", on_corrupt="skip")
    with pytest.warns(UserWarning) as rec:
        it = ds[1]
    assert it["name"] == "d"  # b and c skipped, each with a warning naming its file
    assert [("b.png" in str(w.message), "c.png" in str(w.message)) for w in rec if "skipping" in str(w.message)] == [(True, False), (False, True)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known bad items are skipped silently the second time
        assert ds[2]["name"] == "d" and ds[1]["name"] == "d"
    with pytest.warns(UserWarning):
        problems = ds.validate()
    assert [p[0] for p in problems] == ["b", "c"] and ds.names == ["a", "d", "e"] and len(ds) == 3
    with pytest.raises(ValueError, match="on_corrupt"):
        FolderDataset(tmp_path, on_corrupt="ignore")


# ----------------------------------------------------------------------------- patches
class _Fixed(torch.utils.data.Dataset):
    """Items whose image and coarse encode the mask and the x coordinate (to check alignment)."""

    num_classes, class_names, ignore_index = 3, ["a", "b", "c"], 255

    def __init__(self, masks):
        self.masks = masks

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        m = self.masks[i]
        H, W = m.shape
        xs = torch.arange(W, dtype=torch.float32).expand(H, W) / W
        img = torch.stack([m.float() / 10, xs, torch.zeros(H, W)])
        coarse = torch.nn.functional.one_hot(torch.where(m == 255, 0, m), 3).permute(2, 0, 1).float()
        return {"image": img, "mask": m, "coarse": coarse, "name": f"m{i}"}


def test_patches_multilabel_and_alignment():
    m = torch.zeros(200, 240, dtype=torch.long)
    m[150:170, 200:230] = 1  # a small object in a corner: most random crops see one label
    m[10:14, 5:40] = 2
    ds = PatchDataset(_Fixed([m]), size=64, patches_per_image=16, seed=1)
    assert len(ds) == 16 and ds.num_classes == 3
    flips = 0
    for i in range(len(ds)):
        p = ds[i]
        assert p["image"].shape == (3, 64, 64) and p["mask"].shape == (64, 64) and p["coarse"].shape == (3, 64, 64)
        labels = set(p["mask"].unique().tolist()) - {255}
        assert len(labels) >= 2, (i, labels, p["name"])
        assert torch.equal((p["image"][0] * 10).round().long(), p["mask"])  # image/mask aligned
        assert torch.equal(p["coarse"].argmax(0), p["mask"])  # coarse aligned
        flipped = p["image"][1, 0, 0] > p["image"][1, 0, -1]
        flips += int(flipped)
        assert flipped == p["name"].endswith(",flip")
    assert 0 < flips < 16


def test_patches_determinism_epochs_and_fallback():
    base = SyntheticScenes(num_images=3, size=96)
    a = PatchDataset(base, size=48, patches_per_image=2, seed=5)
    b = PatchDataset(SyntheticScenes(num_images=3, size=96), size=48, patches_per_image=2, seed=5)
    for i in (0, 3, 5):
        pa, pb = a[i], b[i]
        assert pa["name"] == pb["name"] and torch.equal(pa["image"], pb["image"]) and torch.equal(pa["coarse"], pb["coarse"])
    names0 = [a[i]["name"] for i in range(len(a))]
    a.set_epoch(1)
    names1 = [a[i]["name"] for i in range(len(a))]
    assert names0 != names1
    a.set_epoch(0)
    assert [a[i]["name"] for i in range(len(a))] == names0
    # a single-label image still yields patches (fallback to the best found)
    one = PatchDataset(_Fixed([torch.ones(50, 50, dtype=torch.long)]), size=20, patches_per_image=2)
    assert one[1]["mask"].shape == (20, 20)


def test_patches_pad_small_images():
    m = torch.tensor([[0, 1, 2]] * 5)
    p = PatchDataset(_Fixed([m]), size=8, flip=False)[0]
    assert p["mask"].shape == (8, 8)
    assert (p["mask"] == 255).sum() == 64 - 15
    assert p["image"][:, p["mask"] == 255].abs().sum() == 0
    assert torch.allclose(p["coarse"][:, p["mask"] == 255], torch.full((3, 49), 1 / 3))
    assert torch.equal(p["mask"][1:6, 2:5], m)  # centred: top 1 / bottom 2, left 2 / right 3 rows of padding
    with pytest.raises(ValueError):
        PatchDataset(_Fixed([m]), size=0)


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


def test_wrapping_coarse_source_is_registered_and_gets_its_options():
    from spn.data import coarse as coarse_mod
    from spn.data import register_coarse_source, wrap_coarse_source

    seen = {}

    class Doubled:
        def __init__(self, base, arg, **options):
            seen.update(arg=arg, base_coarse=base.coarse, **options)
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            item = dict(self.base[i])
            item["coarse"] = torch.full((6, *item["mask"].shape), 1 / 6)
            return item

    register_coarse_source("uniformtest")(Doubled)
    try:
        ds = build_dataset("synthetic", split="val", num_images=1, size=32, coarse="uniformtest:abc",
                           coarse_options={"cache_dir": "x"})
        assert seen == {"arg": "abc", "base_coarse": "none", "cache_dir": "x"}  # built without coarse maps
        assert torch.allclose(ds[0]["coarse"], torch.full((6, 32, 32), 1 / 6))
        plain = build_dataset("synthetic", split="val", num_images=1, size=32)
        assert wrap_coarse_source(plain, "gt-downsample:8") is plain  # not a wrapping source: unchanged
        with pytest.raises(ValueError, match="'uniformtest:' needs an argument"):
            build_dataset("synthetic", coarse="uniformtest:")
        with pytest.raises(ValueError, match="unknown coarse source.*or 'uniformtest:...'"):
            parse_coarse_source("nope")
    finally:
        coarse_mod._WRAPPERS.pop("uniformtest", None)
