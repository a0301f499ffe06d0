"""The photo corpus (``spn corpus build``, ``photos:corpus``), on a fake installed package made here.

The fake package is a real distribution on ``sys.path`` (a package folder plus a ``.dist-info``
with METADATA), so the build finds it, its version and its licence as it finds scikit-learn's.
Stored files are checked against hashlib and PIL directly; splits against hand-worked answers.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from spn.data.cutouts import STAMPS_PACKAGE
from PIL import Image

from spn.cli import main
from spn.data import build_dataset
from spn.data import corpus as corpus_mod
from spn.data.corpus import (Photo, Source, _dep5_licence, build_corpus, check_not_reserved, split_groups)

ROOT = Path(__file__).resolve().parents[1]


def _photo(path: Path, w: int, h: int, seed: int, fmt: str) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, format=fmt)


@pytest.fixture
def fake_pkg(tmp_path, monkeypatch):
    """An installed distribution ``fakephotos`` 1.2 (MIT) with five photos, and its Source."""
    site = tmp_path / "site"
    pkg = site / "fakephotos"
    (pkg / "img").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    dist = site / "fakephotos-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.4\nName: fakephotos\nVersion: 1.2\nLicense-Expression: MIT\n")
    _photo(pkg / "img" / "a.jpg", 30, 20, 0, "JPEG")
    _photo(pkg / "img" / "b.png", 64, 48, 1, "PNG")   # larger than max_side=32 below: shrunk
    _photo(pkg / "img" / "c1.png", 20, 20, 2, "PNG")
    _photo(pkg / "img" / "c2.png", 20, 20, 3, "PNG")  # same scene as c1
    _photo(pkg / "img" / "d.jpg", 24, 16, 4, "JPEG")
    monkeypatch.syspath_prepend(str(site))
    src = Source("fakephotos", "pip", "fakephotos", "wheel", (
        Photo("fk_a", "img/a.jpg"), Photo("fk_b", "img/b.png"), Photo("fk_c1", "img/c1.png", "fk_c"),
        Photo("fk_c2", "img/c2.png", "fk_c"), Photo("fk_d", "img/d.jpg", "", "CC0-1.0")))
    return src, pkg


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_split_groups_hand_worked():
    # sorted: a b c d e f g -> positions 1 and 4 are b and e
    got = split_groups(["g", "c", "a", "e", "b", "f", "d", "a"])
    assert sorted(k for k, v in got.items() if v == "val") == ["b", "e"]
    assert split_groups(["only"]) == {"only": "train"}


def test_dep5_last_matching_stanza_wins():
    text = ("Format: x\n\nFiles: *\nCopyright: someone\nLicense: GPL-2+\n\n"
            "Files: nature/Aqua.jpg\n       nature/Lady*.jpg\nCopyright: other\nLicense: CC-BY-4.0\n"
            " some licence text\n\nFiles: debian/*\nLicense: MIT\n")
    assert _dep5_licence(text, "nature/Aqua.jpg") == "CC-BY-4.0"
    assert _dep5_licence(text, "nature/LadyBird.jpg") == "CC-BY-4.0"  # continuation line + wildcard
    assert _dep5_licence(text, "abstract/deep/Flow.png") == "GPL-2+"  # '*' crosses '/'
    assert _dep5_licence("Files: a.png\nLicense: MIT\n", "b.png") is None


def test_reserved_data_is_refused():
    with pytest.raises(ValueError, match="reserved"):
        check_not_reserved("opencv-doc", "/usr/share/doc/opencv-doc/examples/text/scenetext01.jpg")
    for pkg in ("stardist", "mvtb-data"):
        with pytest.raises(ValueError, match="reserved"):
            check_not_reserved(pkg, "/anything.png")
    check_not_reserved("opencv-doc", "/usr/share/doc/opencv-doc/examples/textures/x.jpg")  # not a prefix match
    # a table that names reserved data cannot be built
    bad = Source("opencv-doc", "deb", "/usr/share/doc/opencv-doc/examples/text", "dep5:", (Photo("t", "a.jpg"),))
    with pytest.raises(ValueError, match="reserved"):
        build_corpus("/nonexistent/out", sources=(bad,))
    assert all("examples/text" not in f"{s.root}/{p.path}" for s in corpus_mod.SOURCES for p in s.photos)


def test_build_writes_photos_splits_and_manifest(fake_pkg, tmp_path):
    src, pkg = fake_pkg
    out = tmp_path / "corpus"
    m = build_corpus(out, max_side=32, sources=(src,))
    assert m["count"] == 5 and m["packages"]["fakephotos"]["version"] == "1.2"
    by = {im["name"]: im for im in json.loads((out / "manifest.json").read_text())["images"]}
    assert set(by) == {"fk_a", "fk_b", "fk_c1", "fk_c2", "fk_d"}
    for name, im in by.items():
        stored = out / im["file"]
        assert im["sha256"] == sha(stored) and im["bytes"] == stored.stat().st_size
        assert im["original_sha256"] == sha(Path(im["original_path"]))
        assert Image.open(stored).size == tuple(im["size"])
    # small RGB photos are byte-for-byte copies; the 64x48 one is shrunk to 32x24
    assert (out / by["fk_a"]["file"]).read_bytes() == (pkg / "img" / "a.jpg").read_bytes()
    assert by["fk_b"]["original_size"] == [64, 48] and by["fk_b"]["size"] == [32, 24]
    assert by["fk_b"]["file"] == "images/fk_b.png"
    # licences: the wheel's, unless the photo states its own
    assert by["fk_a"]["licence"] == "MIT" and by["fk_d"]["licence"] == "CC0-1.0"
    # groups sorted: fk_a fk_b fk_c fk_d -> fk_b to val; the two views of fk_c stay together
    train = (out / "splits" / "train.txt").read_text().split()
    val = (out / "splits" / "val.txt").read_text().split()
    assert val == ["fk_b"] and sorted(train) == ["fk_a", "fk_c1", "fk_c2", "fk_d"]
    # the photos dataset reads the folder with these splits
    ds = build_dataset(f"photos:{out}", split="val")
    assert ds.names == ["fk_b"] and tuple(ds[0]["image"].shape) == (3, 24, 32)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".corpus")]  # no staging folder left


def test_rebuild_needs_force_and_refuses_other_folders(fake_pkg, tmp_path):
    src, _ = fake_pkg
    out = tmp_path / "corpus"
    build_corpus(out, sources=(src,))
    with pytest.raises(FileExistsError, match="--force"):
        build_corpus(out, sources=(src,))
    (out / "images" / "stale.png").write_bytes(b"x")
    build_corpus(out, sources=(src,), force=True)
    assert not (out / "images" / "stale.png").exists()  # replaced whole, not mixed
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a corpus"):
        build_corpus(other, sources=(src,), force=True)
    assert (other / "notes.txt").read_text() == "keep me"


def test_missing_packages_named_with_their_install_command(fake_pkg, tmp_path):
    src, _ = fake_pkg
    gone = Source("no-such-photos-pkg", "pip", "no_such_photos_pkg", "wheel", (Photo("x", "x.jpg"),))
    with pytest.raises(FileNotFoundError, match="pip install no-such-photos-pkg"):
        build_corpus(tmp_path / "c", sources=(src, gone))
    assert not (tmp_path / "c").exists()
    m = build_corpus(tmp_path / "c", sources=(src, gone), missing="skip")
    assert set(m["packages"]) == {"fakephotos"}


def test_photos_corpus_alias(fake_pkg, tmp_path, monkeypatch):
    src, _ = fake_pkg
    monkeypatch.setenv("SPN_CORPUS", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="spn corpus build"):
        build_dataset("photos:corpus", split="train")
    build_corpus(tmp_path / "absent", sources=(src,))
    ds = build_dataset("photos:corpus", split="train")
    assert sorted(ds.names) == ["fk_a", "fk_c1", "fk_c2", "fk_d"]


def test_cli_build_and_errors(fake_pkg, tmp_path, monkeypatch, capsys):
    src, _ = fake_pkg
    monkeypatch.setattr(corpus_mod, "SOURCES", (src,))
    out = tmp_path / "c"
    assert main(["corpus", "build", "--out", str(out), "--json", "--no-cutouts"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 5 and report["packages"]["fakephotos"] == {"version": "1.2", "train": 4, "val": 1}
    assert main(["corpus", "build", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass --force" in err[0]
    assert main(["corpus", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"package": "fakephotos", "kind": "pip", "version": "1.2", "photos": 5}]


def test_makefile_installs_every_source_package():
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    apt = re.search(r"^CORPUS_APT\s*:=(.*)$", text, re.M).group(1).split()
    pip = re.search(r"^CORPUS_PIP\s*:=(.*)$", text, re.M).group(1).split()
    assert set(apt) == {s.package for s in corpus_mod.SOURCES if s.kind == "deb"} | {STAMPS_PACKAGE}
    assert {s.package for s in corpus_mod.SOURCES if s.kind == "pip"} <= set(pip)


def test_installed_sources_are_colour_photos():
    """Where a source package is installed here, each listed photo exists and has colour."""
    checked = 0
    for src in corpus_mod.SOURCES:
        try:
            _, root, _ = corpus_mod._package_info(src)
        except FileNotFoundError:
            continue
        for ph in src.photos:
            with Image.open(root / ph.path) as im:
                im.draft("RGB", (256, 256))
                a = np.asarray(im.convert("RGB"), dtype=np.int16)
            assert np.abs(a[..., 0] - a[..., 1]).mean() + np.abs(a[..., 1] - a[..., 2]).mean() > 1.0, ph.name
            checked += 1
    if not checked:
        pytest.skip("none of the corpus's source packages is installed (make corpus)")
