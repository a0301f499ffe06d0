"""Colour photographs for the chroma task (``--data photos:PATH`` and ``--data photos:skimage``).

A photograph needs no labels: its own chroma is the target. Items are
``{"image": (3, H, W) RGB in [0, 1], "name": str}`` plus, when the dataset has a ``factor``, the
tensors of :func:`spn.data.color.chroma_item` (``"luma"``, ``"chroma"``, ``"chroma_low"``,
``"factor"``).

``photos:PATH``: every ``.png/.jpg/.jpeg`` in ``PATH`` (or in ``PATH/images/`` when that folder
exists). Splits: ``PATH/splits/{train,val}.txt`` (one name a line) when present, otherwise the
folder dataset's deterministic rule (names sorted, every 5th to ``val``); ``"all"`` is every photo.

``photos:skimage``: the colour photographs that ship inside the scikit-image wheel (read from
its data folder with PIL: nothing is downloaded; ``pip install scikit-image``, the ``photos``
extra). The split is fixed (:data:`SKIMAGE_SPLITS`): the four everyday photographs astronaut,
chelsea, coffee and rocket are held out (``val``); the other five train: the Hubble deep field,
the immunohistochemistry slide, the retina and the stereo pair of the motorcycle (both of its
views in the same split, as they show the same scene). ``lily``, ``skin`` and ``kidney`` need a
download and are not used; ``cat`` is ``chelsea``; colorwheel, logo and the chessboards are not
photographs.

:class:`PhotoPatches` draws the training crops: random ``size x size`` crops of each photo,
optionally of the photo shrunk by a random scale, with random left-right and up-down flips;
patch ``index`` depends only on ``(seed, epoch, index)``, so :mod:`spn.data.sampling` runs it as
it runs segmentation patches.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from spn.data import write_image
    >>> from spn.data.photos import PhotoDataset, PhotoPatches
    >>> root = Path(tempfile.mkdtemp())
    >>> for i in range(5):
    ...     _ = write_image(root / f"p{i}.png", torch.rand(3, 40, 48))
    >>> ds = PhotoDataset(root, split="train", factor=8)
    >>> len(ds), ds[0]["chroma_low"].shape
    (4, torch.Size([2, 5, 6]))
    >>> PhotoPatches(ds, size=16)[3]["luma"].shape
    torch.Size([1, 16, 16])
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .base import check_index
from .color import chroma_item
from .patches import CropSampler
from .folder import list_images, split_names
from ..image.io import CorruptFileError, read_image

__all__ = ["SKIMAGE_PHOTOS", "SKIMAGE_SPLITS", "PhotoDataset", "PhotoPatches", "resolve_source", "skimage_data_dir"]

#: name -> file in scikit-image's data folder (the colour photographs that need no download)
SKIMAGE_PHOTOS = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "retina": "retina.jpg",
}
#: the fixed split of ``photos:skimage``
SKIMAGE_SPLITS = {
    "train": ["hubble_deep_field", "immunohistochemistry", "motorcycle_left", "motorcycle_right", "retina"],
    "val": ["astronaut", "chelsea", "coffee", "rocket"],
}


def skimage_data_dir() -> Path:
    """The data folder inside the installed scikit-image (ImportError with the fix when absent)."""
    try:
        import skimage.data  # noqa: F401 (only its location is used)
    except ImportError:
        raise ImportError("photos:skimage needs scikit-image: pip install scikit-image "
                          "(or install spn with the `photos` extra)") from None
    import skimage.data as skd

    return Path(skd.__file__).resolve().parent


def _skimage_records(split: str) -> list[tuple[str, Path]]:
    root = skimage_data_dir()
    if split == "all":
        names = SKIMAGE_SPLITS["train"] + SKIMAGE_SPLITS["val"]
    elif split in SKIMAGE_SPLITS:
        names = SKIMAGE_SPLITS[split]
    else:
        raise ValueError(f"unknown split {split!r} for photos:skimage; valid: train, val, all")
    out, missing = [], []
    for n in names:
        p = root / SKIMAGE_PHOTOS[n]
        (out if p.is_file() else missing).append((n, p))
    if missing:
        warnings.warn(f"photos:skimage: {len(missing)} photo(s) missing from {root} (another scikit-image "
                      f"version?): {', '.join(n for n, _ in missing)}", stacklevel=3)
    return out


def resolve_source(root):
    """A photo source as the readers take it: ``"corpus"`` is the folder of ``spn corpus build``
    (``$SPN_CORPUS`` or ``~/.cache/spn/corpus``; an error saying how to build it when absent);
    anything else is returned as it is."""
    if str(root) == "corpus":
        from .corpus import corpus_root

        return str(corpus_root())
    return root


def _folder_records(root: Path, split: str) -> list[tuple[str, Path]]:
    if not root.is_dir():
        raise FileNotFoundError(f"photos:{root}: not a folder of photos")
    folder = root / "images" if (root / "images").is_dir() else root
    images = list_images(folder)
    if not images:
        raise FileNotFoundError(f"photos:{root}: no .png/.jpg/.jpeg photos in {folder}")
    return [(n, images[n]) for n in split_names(root, split, images, folder, what="photo")]


class PhotoDataset(Dataset):
    """Colour photographs (see the module docstring).

    Args:
        root: a folder of photos, or ``"skimage"``.
        split: ``"train"``, ``"val"``, ``"all"`` (or a ``splits/NAME.txt`` of a folder).
        factor: the chroma subsampling ``F`` of the items (None: items hold the image only).
        on_corrupt: ``"error"`` (CorruptFileError naming the file) or ``"skip"`` (a warning, and
            the next readable photo instead).
        cache: keep decoded photos in memory.
    """

    task = "chroma"

    def __init__(self, root, split: str = "train", factor: int | None = 8, on_corrupt: str = "error",
                 cache: bool = True, transform=None):
        if on_corrupt not in ("error", "skip"):
            raise ValueError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
        if factor is not None:
            if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
                raise ValueError(f"factor must be an int >= 1, got {factor!r}")
        self.source = "skimage" if str(root) == "skimage" else str(root)
        self.records = _skimage_records(split) if self.source == "skimage" else _folder_records(Path(root), split)
        self.split = split
        self.factor = factor
        self.on_corrupt = on_corrupt
        self.cache = bool(cache)
        self.transform = transform
        self._images: dict[int, torch.Tensor] = {}
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.records)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.records]

    def info(self) -> dict:
        return {"dataset": type(self).__name__, "source": self.source, "split": self.split,
                "factor": self.factor, "size": len(self), "names": self.names}

    def image(self, index: int) -> torch.Tensor:
        """The RGB photo ``(3, H, W)`` of item ``index`` (decoded once when ``cache``)."""
        if index in self._images:
            return self._images[index]
        img = read_image(self.records[index][1])
        if self.cache:
            self._images[index] = img
        return img

    def __getitem__(self, index: int) -> dict:
        n = len(self.records)
        index = check_index(index, n, "photos")
        for k in range(n):
            j = (index + k) % n
            if j in self._bad:
                continue
            try:
                img = self.image(j)
            except CorruptFileError as exc:
                if self.on_corrupt == "error":
                    raise
                self._bad.add(j)
                warnings.warn(f"skipping corrupt photo {self.records[j][0]!r}: {exc}", stacklevel=2)
                continue
            item = {"image": img, "name": self.records[j][0]}
            if self.factor is not None:
                item.update(chroma_item(img, self.factor))
            return self.transform(item) if self.transform is not None else item
        raise RuntimeError(f"every one of the {n} photos of this dataset is unreadable")


class PhotoPatches(CropSampler):
    """Training crops of a :class:`PhotoDataset` (or any dataset of ``{"image", "name"}`` items).

    Patch ``index`` is crop ``index % patches_per_image`` of photo ``index // patches_per_image``,
    drawn with ``numpy.random.default_rng([seed, epoch, index])``: a scale from ``scales`` (the
    photo is shrunk by it first, with an antialiased bilinear resize; a scale that would make the
    photo smaller than the patch is not used), a position, and with ``flip`` a left-right and an
    up-down flip (probability 1/2 each). A photo smaller than ``size`` is edge-padded. The crop's
    chroma-task tensors come from :func:`spn.data.color.chroma_item` with ``factor``.

    Shape:
        - item["luma"]: ``(1, size, size)``; item["chroma"]: ``(2, size, size)``;
          item["chroma_low"]: ``(2, size/F, size/F)``
    """

    def __init__(self, base, size: int = 128, patches_per_image: int = 8, flip: bool = True, seed: int = 0,
                 factor: int | None = None, scales=(1.0, 0.75, 0.5)):
        factor = factor if factor is not None else getattr(base, "factor", None)
        if factor is None:
            raise ValueError("PhotoPatches needs the chroma factor (factor=F)")
        if int(size) < 1 or int(size) % int(factor):
            raise ValueError(f"the patch size must be a positive multiple of the factor {factor}, got {size}")
        scales = tuple(float(s) for s in scales)
        if not scales or any(not 0 < s <= 1 for s in scales):
            raise ValueError(f"scales must be numbers in (0, 1], got {scales}")
        super().__init__(base, size, patches_per_image, flip, seed)
        self.factor = int(factor)
        self.scales = scales
        self._scaled: dict[tuple[int, float], tuple[torch.Tensor, str]] = {}

    def info(self) -> dict:
        return self._info(scales=list(self.scales), factor=self.factor)

    def _photo(self, i: int, scale: float) -> tuple[torch.Tensor, str]:
        key = (i, scale)
        if key not in self._scaled:
            item = self.base[i]
            img = item["image"]
            if scale != 1.0:
                H, W = img.shape[-2:]
                size = (max(1, round(H * scale)), max(1, round(W * scale)))
                img = F.interpolate(img[None], size=size, mode="bilinear", antialias=True,
                                    align_corners=False)[0].clamp(0, 1)
            self._scaled[key] = (img.contiguous(), str(item.get("name", i)))
        return self._scaled[key]

    def __getitem__(self, index: int) -> dict:
        index = check_index(index, len(self), "patches")
        i = index // self.patches_per_image
        rng = np.random.default_rng([self.seed, self.epoch, index])
        H, W = self._photo(i, 1.0)[0].shape[-2:]
        fits = [s for s in self.scales if min(H, W) * s >= self.size] or [max(self.scales)]
        scale = fits[int(rng.integers(0, len(fits)))]
        img, name = self._photo(i, scale)
        s = self.size
        ph, pw = max(0, s - img.shape[-2]), max(0, s - img.shape[-1])
        if ph or pw:
            img = F.pad(img[None], (0, pw, 0, ph), mode="replicate")[0]
        y = int(rng.integers(0, img.shape[-2] - s + 1))
        x = int(rng.integers(0, img.shape[-1] - s + 1))
        crop = img[:, y:y + s, x:x + s]
        flips = []
        if self.flip and rng.random() < 0.5:
            crop, flips = torch.flip(crop, dims=[-1]), flips + ["lr"]
        if self.flip and rng.random() < 0.5:
            crop, flips = torch.flip(crop, dims=[-2]), flips + ["ud"]
        item = chroma_item(crop.contiguous(), self.factor)
        item["image"] = crop.contiguous()
        item["name"] = f"{name}@s{scale:g},y{y},x{x}" + "".join(f",{f}" for f in flips)
        return item
