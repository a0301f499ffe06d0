"""A corpus of real photographs built from installed PyPI and Debian packages (``photos:corpus``).

Nothing is downloaded: :func:`build_corpus` reads photographs that ship inside packages installed
by name (``pip install scikit-learn matplotlib``; ``apt-get install opencv-doc mate-backgrounds
...``, see :data:`SOURCES` and ``make corpus``) and writes a folder that
:class:`spn.data.photos.PhotoDataset` reads as ``photos:DIR``::

    DIR/images/NAME.jpg|png     the photographs (longer side at most ``max_side``; smaller ones
                                are byte-for-byte copies of the packaged file)
    DIR/splits/train.txt        one NAME a line
    DIR/splits/val.txt
    DIR/manifest.json           per image: file, source package, its version, licence, original
                                path, original and stored size, sha256 of both; written last

Only colour photographs are listed (no drawings, renders, charts, scans of text, grey-level
photos); each entry of :data:`SOURCES` was chosen by looking at it. The reserved evaluation
data (the scene-text photos of ``opencv-doc``'s ``examples/text``, the ``stardist`` wheel's
images, the ``mvtb-data`` package) are refused by :func:`check_not_reserved`, whatever the
table says. scikit-image's photos are not part of the corpus (``photos:skimage`` serves them,
and its held-out four must stay unseen).

Split (deterministic): the photos of one package are grouped by scene (``group``: a stereo
pair or two views of one street are one group), groups are sorted by name, and groups at
positions 1, 4, 7, ... go to ``val``; so ``val`` holds about a third of every package with two
or more scenes, and no scene is on both sides. The same table gives the same split on every
build; adding or removing a photo of a package can move its later scenes across the split.

The licence of each photo is read at build time from the most specific place the package gives
it: the wheel's METADATA, the per-file stanza of ``/usr/share/doc/PKG/copyright`` (DEP-5, the
last matching ``Files:`` stanza wins), a KDE wallpaper's ``metadata.json``, or a Palapeli
puzzle's ``.desktop`` file.

Example:
    >>> from spn.data.corpus import SOURCES, split_groups
    >>> sorted({s.package for s in SOURCES})[:2]
    ['lomiri-wallpapers-16.04', 'lomiri-wallpapers-20.04']
    >>> split_groups(["a", "b", "c", "d", "e"])
    {'a': 'train', 'b': 'val', 'c': 'train', 'd': 'train', 'e': 'val'}
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from spn.utils.io import sha256_file

__all__ = ["SOURCES", "Source", "Photo", "build_corpus", "check_not_reserved", "default_corpus_dir",
           "split_groups", "corpus_root"]

#: environment variable that overrides the default location of ``photos:corpus``
CORPUS_ENV = "SPN_CORPUS"
#: the reserved evaluation data: never read by the corpus
RESERVED_PATHS = ("/usr/share/doc/opencv-doc/examples/text",)
RESERVED_PACKAGES = ("stardist", "mvtb-data")
VAL_EVERY = 3


@dataclass(frozen=True)
class Photo:
    """One photograph: ``name`` in the corpus, ``path`` relative to the source's root, ``group``
    its scene (photos of one scene stay on one side of the split; default: ``name``)."""

    name: str
    path: str
    group: str = ""
    licence: str = ""  # the photo's own licence where the package states one apart from its own


@dataclass(frozen=True)
class Source:
    """Photos of one package.

    ``kind``: ``"pip"`` (``root`` is the import name; paths are inside the package folder) or
    ``"deb"`` (``root`` is an absolute folder). ``licence``: how the licence is read:
    ``"wheel"``, ``"dep5:PREFIX"`` (the upstream path of a photo is ``PREFIX`` + its path),
    ``"kde-metadata"`` or ``"palapeli-desktop"``. ``notes``: a file of the package (relative to
    ``root``) that states the photos' own origin and licence; its text goes into the manifest."""

    package: str
    kind: str
    root: str
    licence: str
    photos: tuple[Photo, ...]
    notes: str = ""


def _p(*items) -> tuple[Photo, ...]:
    return tuple(Photo(*it) if isinstance(it, tuple) else Photo(it.split("/")[-1].rsplit(".", 1)[0], it)
                 for it in items)


_KDE = ("BytheWater", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Kite",
        "OneStandsOut", "Path", "summer_1am")

#: the packages and the photographs they ship (each one looked at: photographs only)
SOURCES: tuple[Source, ...] = (
    Source("scikit-learn", "pip", "sklearn", "wheel", _p(
        ("sklearn_china", "datasets/images/china.jpg", "", "CC-BY-2.0"),
        ("sklearn_flower", "datasets/images/flower.jpg", "", "CC-BY-2.0")), notes="datasets/images/README.txt"),
    Source("matplotlib", "pip", "matplotlib", "wheel", _p(
        ("mpl_grace_hopper", "mpl-data/sample_data/grace_hopper.jpg"),)),
    Source("opencv-doc", "deb", "/usr/share/doc/opencv-doc/examples", "dep5:samples/", _p(
        ("ocv_aero1", "data/aero1.jpg", "ocv_aero"), ("ocv_aero3", "data/aero3.jpg", "ocv_aero"),
        ("ocv_aloeL", "data/aloeL.jpg", "ocv_aloe"), ("ocv_aloeR", "data/aloeR.jpg", "ocv_aloe"),
        ("ocv_apple", "data/apple.jpg"), ("ocv_baboon", "data/baboon.jpg"), ("ocv_board", "data/board.jpg"),
        ("ocv_building", "data/building.jpg"), ("ocv_butterfly", "data/butterfly.jpg"),
        ("ocv_chicky", "data/chicky_512.png"), ("ocv_fruits", "data/fruits.jpg"), ("ocv_home", "data/home.jpg"),
        ("ocv_leuvenA", "data/leuvenA.jpg", "ocv_leuven"), ("ocv_leuvenB", "data/leuvenB.jpg", "ocv_leuven"),
        ("ocv_messi", "data/messi5.jpg"), ("ocv_orange", "data/orange.jpg"),
        ("ocv_rubberwhale1", "data/rubberwhale1.png", "ocv_rubberwhale"),
        ("ocv_rubberwhale2", "data/rubberwhale2.png", "ocv_rubberwhale"),
        ("ocv_squirrel", "data/squirrel_cls.jpg"), ("ocv_stuff", "data/stuff.jpg"),
        ("ocv_monarch", "dnn_superres/butterfly.png"), ("ocv_house", "reg/home.png"))),
    Source("plasma-workspace-wallpapers", "deb", "/usr/share/wallpapers", "kde-metadata", _p(
        *((f"kde_{w}", f"{w}/contents/images/2560x1600.jpg") for w in _KDE))),
    Source("mate-backgrounds", "deb", "/usr/share/backgrounds/mate", "dep5:", _p(
        *((f"mate_{n}", f"nature/{n}.jpg") for n in (
            "Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
            "Storm", "TwoWings", "Wood", "YellowFlower")))),
    Source("lomiri-wallpapers-16.04", "deb", "/usr/share/backgrounds", "dep5:16.04/", _p(
        *((f"lomiri_{n.split('_by_')[0]}", f"{n}.jpg") for n in (
            "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
            "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
            "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi", "life_by_Aitzol_Berasategi",
            "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt",
            "sunset_by_Aitzol_Berasategi")))),
    Source("lomiri-wallpapers-20.04", "deb", "/usr/share/backgrounds", "dep5:20.04/", _p(
        ("lomiri_Kleiber", "Kleiber_by_Lukas_Baubkus.jpg"),)),
    Source("tuxpaint-data", "deb", "/usr/share/tuxpaint/templates", "dep5:templates/", _p(
        *((f"tux_{n}", f"{n}.jpg") for n in (
            "burnt_bark", "cliff", "corn_maze", "jellyfish", "lighthouse", "mossy_bark", "mossy_log", "mudstone",
            "ocean_splash", "ocean_waves", "redwoods_above", "rocks", "sheep", "spiders_web", "sun_behind_clouds",
            "sun_behind_leaves", "trees_above", "trees_at_dusk", "wool_mill_machine")))),
    Source("palapeli-data", "deb", "/usr/share/palapeli/collection", "palapeli-desktop", _p(
        *((f"palapeli_{n}", f"{n}.jpg") for n in (
            "castle-maintenon", "cincinnati-bridge", "citrus-fruits", "european-honey-bee",
            "panther-chameleon-female")))),
)

#: what ``make corpus`` installs (pip, apt)
PIP_PACKAGES = tuple(s.package for s in SOURCES if s.kind == "pip")
APT_PACKAGES = tuple(s.package for s in SOURCES if s.kind == "deb")


def default_corpus_dir() -> Path:
    """``$SPN_CORPUS`` when set, else ``~/.cache/spn/corpus``."""
    env = os.environ.get(CORPUS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spn" / "corpus"


def corpus_root() -> Path:
    """The folder of ``photos:corpus``; FileNotFoundError saying how to build it when absent."""
    root = default_corpus_dir()
    if not (root / "manifest.json").is_file():
        raise FileNotFoundError(f"photos:corpus: no corpus at {root} (set ${CORPUS_ENV} or run "
                                f"`spn corpus build --out {root}`, or `make corpus`)")
    return root


def check_not_reserved(package: str, path: str | Path) -> None:
    """ValueError when ``package``/``path`` is reserved evaluation data."""
    if package in RESERVED_PACKAGES:
        raise ValueError(f"package {package!r} is reserved for independent evaluation; it is never read")
    p = os.path.normpath(str(path))
    for r in RESERVED_PATHS:
        if p == r or p.startswith(r + os.sep):
            raise ValueError(f"{p} is reserved for independent evaluation (scene-text photos); it is never read")


def split_groups(groups) -> dict[str, str]:
    """``group -> "train"|"val"``: groups sorted, positions 1, 4, 7, ... to ``val``."""
    return {g: ("val" if i % VAL_EVERY == 1 else "train") for i, g in enumerate(sorted(set(groups)))}


def _dep5_licence(text: str, upstream: str) -> str | None:
    """The ``License:`` of the last DEP-5 ``Files:`` stanza of ``text`` matching ``upstream``."""
    found = None
    for stanza in re.split(r"\n\s*\n", text):
        m = re.search(r"^Files:(.*?)(?=^\S)", stanza + "\nEnd:", re.M | re.S)
        lic = re.search(r"^License:\s*(\S.*)$", stanza, re.M)
        if not m or not lic:
            continue
        # DEP-5: '*' matches any characters, '/' included; fnmatch's '*' does too
        if any(fnmatch.fnmatchcase(upstream, pat) for pat in m.group(1).split()):
            found = lic.group(1).strip()
    return found


def _desktop_field(path: Path, key: str) -> str | None:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(key + "="):
            return line.split("=", 1)[1].strip() or None
    return None


def _package_info(src: Source) -> tuple[str, Path, str | None]:
    """``(version, root folder, wheel licence)``; FileNotFoundError naming the install command."""
    if src.kind == "pip":
        from importlib import metadata, util

        spec = util.find_spec(src.root)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {src.package!r} is not installed: pip install {src.package}")
        md = metadata.metadata(src.package)
        lic = md.get("License-Expression") or "; ".join(
            c.split("::")[-1].strip() for c in md.get_all("Classifier") or [] if c.startswith("License ::"))
        lic = lic or (md.get("License") or "").strip().split("\n")[0].strip() or None
        return metadata.version(src.package), Path(list(spec.submodule_search_locations)[0]), lic
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", src.package],
                             capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"package {src.package!r}: dpkg-query not found (a Debian system is needed "
                                f"for the Debian sources)") from None
    status, _, version = out.stdout.partition("\t")
    if out.returncode or "installed" not in status.split():
        raise FileNotFoundError(f"package {src.package!r} is not installed: apt-get install {src.package}")
    return version, Path(src.root), None


def _licence(src: Source, photo_path: Path, rel: str, wheel_licence: str | None) -> str:
    kind, _, arg = src.licence.partition(":")
    lic = None
    if kind == "wheel":
        lic = wheel_licence
    elif kind == "dep5":
        copyright_file = Path("/usr/share/doc") / src.package / "copyright"
        if copyright_file.is_file():
            lic = _dep5_licence(copyright_file.read_text(encoding="utf-8", errors="replace"), arg + rel)
    elif kind == "kde-metadata":
        meta = photo_path.parents[2] / "metadata.json"
        if meta.is_file():
            lic = json.loads(meta.read_text(encoding="utf-8")).get("KPlugin", {}).get("License")
    elif kind == "palapeli-desktop":
        desk = photo_path.with_suffix(".desktop")
        if desk.is_file():
            lic = _desktop_field(desk, "X-KDE-PluginInfo-License")
    else:
        raise ValueError(f"unknown licence rule {src.licence!r} for {src.package}")
    if not lic:
        raise ValueError(f"{src.package}: no licence found for {rel} (rule {src.licence!r})")
    return lic


def _resolve(sources, missing: str) -> list[tuple[Source, str, Path, str | None]]:
    """``[(source, version, root, wheel licence)]`` of the installed sources (one error for all
    missing packages, or skip them with ``missing="skip"``)."""
    found, absent = [], []
    for src in sources:
        check_not_reserved(src.package, src.root)
        try:
            found.append((src, *_package_info(src)))
        except FileNotFoundError:
            absent.append(src)
    if absent and missing == "error":
        pip = " ".join(s.package for s in absent if s.kind == "pip")
        apt = " ".join(s.package for s in absent if s.kind == "deb")
        how = "; ".join(x for x in (pip and f"pip install {pip}", apt and f"apt-get install {apt}") if x)
        raise FileNotFoundError(f"{len(absent)} source package(s) of the corpus not installed ({how}; or "
                                f"`make corpus`, or skip them with --missing skip)")
    return found


def _store(src_path: Path, dest_stem: Path, max_side: int) -> tuple[Path, tuple[int, int], tuple[int, int]]:
    """Copy (or, when larger than ``max_side`` or not RGB, re-encode) one photo; returns
    ``(stored file, original size, stored size)``. Written under a temporary name first."""
    from PIL import Image

    ext = src_path.suffix.lower()
    ext = ".jpg" if ext in (".jpg", ".jpeg") else ".png"
    dest = dest_stem.with_suffix(ext)
    tmp = dest.with_name(dest.name + ".part")
    with Image.open(src_path) as im:
        orig = im.size
        if max(orig) <= max_side and im.mode == "RGB":
            shutil.copyfile(src_path, tmp)
            size = orig
        else:
            im = im.convert("RGB")
            if max(orig) > max_side:
                s = max_side / max(orig)
                im = im.resize((max(1, round(orig[0] * s)), max(1, round(orig[1] * s))), Image.LANCZOS)
            size = im.size
            if ext == ".jpg":  # 4:4:4: no chroma subsampling added on top of the original's
                im.save(tmp, format="JPEG", quality=95, subsampling=0)
            else:
                im.save(tmp, format="PNG")
    os.replace(tmp, dest)
    return dest, orig, size


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise FileExistsError(f"--out {out} is a non-empty folder that is not a corpus; choose another")
        if not force:
            raise FileExistsError(f"--out {out} already holds a corpus; pass --force to rebuild it")


def _swap_in(stage: Path, out: Path) -> None:
    """Put the finished ``stage`` folder at ``out`` (an old corpus there is replaced, not mixed)."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        os.rename(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(stage, out)


def build_corpus(out, max_side: int = 1600, missing: str = "error", force: bool = False,
                 sources=None, progress=None, cutouts: bool | None = None) -> dict:
    """Write the corpus of :data:`SOURCES` to ``out`` (see the module docstring); returns the manifest.

    Args:
        out: the folder to write (created; a folder that already holds a corpus needs ``force``).
        max_side: longer side, in pixels, above which a photo is shrunk (antialiased).
        missing: ``"error"`` (one error naming the install commands) or ``"skip"`` for sources
            whose package is not installed.
        sources: the :class:`Source` table (default :data:`SOURCES`).
        progress: optional ``callable(str)`` called once per photo.
        cutouts: also store the hand-cut photographic stamps of ``tuxpaint-stamps-default``
            (:mod:`spn.data.cutouts`; ``missing`` applies to that package too). Default: with
            the default ``sources``.
    """
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 16:
        raise ValueError(f"max_side must be an int >= 16, got {max_side!r}")
    found = _resolve(SOURCES if sources is None else sources, missing)
    if not found:
        raise FileNotFoundError("none of the corpus's source packages is installed (`make corpus` installs them)")
    plan, names = [], set()
    for src, version, root, wheel_lic in found:
        for ph in src.photos:
            path = root / ph.path
            check_not_reserved(src.package, path)
            if ph.name in names:
                raise ValueError(f"two photos named {ph.name!r} in the corpus table")
            names.add(ph.name)
            if not path.is_file():
                raise FileNotFoundError(f"{src.package} {version}: {path} is missing (another version of the "
                                        f"package?); update spn.data.corpus.SOURCES")
            plan.append((src, version, path, ph, ph.licence or _licence(src, path, ph.path, wheel_lic)))
    out = Path(out).expanduser().absolute()
    _check_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.building-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "images").mkdir(parents=True)
    (stage / "splits").mkdir()
    try:
        manifest = _write(stage, plan, max_side, found, progress, _cutout_source(sources is None if cutouts is None else cutouts, missing))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _swap_in(stage, out)
    return manifest


def _cutout_source(wanted: bool, missing: str) -> tuple[str, str] | None:
    """``(version, licence)`` of the stamps package when cut-outs are wanted and it is installed."""
    from .cutouts import STAMPS_PACKAGE, STAMPS_ROOT

    if not wanted:
        return None
    src = Source(STAMPS_PACKAGE, "deb", STAMPS_ROOT, "dep5:", ())
    try:
        version = _package_info(src)[0]
    except FileNotFoundError:
        if missing == "skip":
            return None
        raise FileNotFoundError(f"package {STAMPS_PACKAGE!r} (the cut-out objects) is not installed: apt-get "
                                f"install {STAMPS_PACKAGE} (or `make corpus`, or --missing skip)") from None
    copyright_file = Path("/usr/share/doc") / STAMPS_PACKAGE / "copyright"
    text = copyright_file.read_text(encoding="utf-8", errors="replace") if copyright_file.is_file() else ""
    return version, _dep5_licence(text, "stamps/x.png") or f"see {copyright_file}"


def _write(out: Path, plan, max_side: int, found, progress, cutouts=None) -> dict:
    """Write the photos, the splits, the cut-outs (``cutouts = (version, licence)``) and (last)
    the manifest into ``out``."""
    side: dict[str, str] = {}
    for pkg in dict.fromkeys(p[0].package for p in plan):
        side.update(split_groups([(p[3].group or p[3].name) for p in plan if p[0].package == pkg]))
    images = []
    for src, version, path, ph, lic in plan:
        if progress:
            progress(f"{ph.name} <- {src.package} {version}: {path}")
        dest, orig, size = _store(path, out / "images" / ph.name, max_side)
        group = ph.group or ph.name
        images.append({
            "name": ph.name, "file": f"images/{dest.name}", "split": side[group], "group": group,
            "package": src.package, "kind": src.kind, "version": version, "licence": lic,
            "original_path": str(path), "original_size": list(orig), "original_sha256": sha256_file(path),
            "size": list(size), "bytes": dest.stat().st_size, "sha256": sha256_file(dest)})
    for split in ("train", "val"):
        text = "".join(f"{im['name']}\n" for im in images if im["split"] == split)
        (out / "splits" / f"{split}.txt").write_text(text, encoding="utf-8")
    packages = {}
    for im in images:
        p = packages.setdefault(im["package"], {"kind": im["kind"], "version": im["version"], "train": 0, "val": 0})
        p[im["split"]] += 1
    for src, version, root, wheel_lic in found:
        if src.package in packages:
            packages[src.package]["licence"] = wheel_lic or f"/usr/share/doc/{src.package}/copyright"
            if src.notes and (root / src.notes).is_file():
                packages[src.package]["notes"] = (root / src.notes).read_text(encoding="utf-8", errors="replace")
    manifest = {"format": 1, "max_side": max_side, "count": len(images), "packages": packages, "images": images}
    if cutouts is not None:
        from .cutouts import STAMPS_PACKAGE, write_cutouts

        entries = write_cutouts(out, cutouts[0], cutouts[1], progress=progress)
        packages[STAMPS_PACKAGE] = {"kind": "deb", "version": cutouts[0], "licence": cutouts[1],
                                    "cutouts_train": sum(e["split"] == "train" for e in entries),
                                    "cutouts_val": sum(e["split"] == "val" for e in entries)}
        manifest["cutouts"] = entries
    tmp = out / "manifest.json.part"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / "manifest.json")  # last: its presence means the corpus is complete
    return manifest
