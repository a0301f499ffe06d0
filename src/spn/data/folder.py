"""A segmentation dataset in a plain folder layout (spec ``"folder:ROOT"``).

::

    ROOT/images/NAME.png|jpg|jpeg    RGB images
    ROOT/masks/NAME.png              class indices (palette or greyscale PNG), 255 = ignore
    ROOT/coarse/NAME.npy|png         optional coarse maps (see spn.data.coarse.read_coarse_file)
    ROOT/coarse/coarse.json          optional: what the maps hold, e.g. {"kind": "logits"}
    ROOT/splits/train.txt, val.txt   optional, one NAME a line (test.txt etc. also accepted)
    ROOT/classes.txt                 optional, one class name a line

Without split files the split is deterministic: names sorted, every 5th (positions 4, 9, 14,
... of the sorted list) goes to ``val``, the rest to ``train``; ``split="all"`` is every item.
Without ``classes.txt``, ``num_classes`` is ``1 + `` the largest id over every mask of the
folder (all splits, so train and val agree; this reads each mask once at construction) and
the names are ``class_0, class_1, ...``; ``num_classes=`` overrides it.

Coarse ``.npy`` maps are ``(K, h, w)`` probabilities (the default), logits or ``(h, w)``
labels, as declared by ``coarse_kind=`` (``--coarse-kind``) or by ``ROOT/coarse/coarse.json``
(``{"kind": "logits"}``); coarse ``.png`` maps are class indices. Any resolution of the image's
aspect ratio; they are bilinearly upsampled to the image (:func:`spn.data.read_coarse_file`).
"""
from __future__ import annotations

from pathlib import Path

from .base import FileSegmentationDataset, Record, infer_num_classes
from ..image.io import IMAGE_EXTENSIONS
from .io import read_name_list, tree

LAYOUT = """expected layout:
    ROOT/images/NAME.png|jpg|jpeg
    ROOT/masks/NAME.png            (class indices, 255 = ignore)
    ROOT/coarse/NAME.npy|png       (optional)
    ROOT/splits/train.txt, val.txt (optional)
    ROOT/classes.txt               (optional)"""

VAL_EVERY = 5


def list_images(folder: Path) -> dict[str, Path]:
    """``NAME -> path`` of the images in ``folder`` (png/jpg/jpeg, any case)."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            if p.stem in out:
                raise ValueError(f"two images named {p.stem!r} in {folder}: {out[p.stem].name} and {p.name}")
            out[p.stem] = p
    return out


def find_coarse(folder: Path | None, name: str) -> Path | None:
    if folder is None:
        return None
    for ext in (".npy", ".png"):
        p = folder / f"{name}{ext}"
        if p.is_file():
            return p
    return None


def read_classes(path: Path) -> list[str]:
    names = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not names:
        raise ValueError(f"{path} lists no class names")
    if len(set(names)) != len(names):
        raise ValueError(f"{path} lists a class name twice")
    return names


def deterministic_split(names: list[str], split: str) -> list[str]:
    names = sorted(names)
    if split == "all":
        return names
    if split == "val":
        return [n for i, n in enumerate(names) if i % VAL_EVERY == VAL_EVERY - 1]
    if split == "train":
        return [n for i, n in enumerate(names) if i % VAL_EVERY != VAL_EVERY - 1]
    raise ValueError(f"unknown split {split!r}: without ROOT/splits/ the splits are train, val, all")


def split_names(root: Path, split: str, images: dict, images_dir: Path, what: str = "image") -> list[str]:
    """The names of ``split``: ``root/splits/SPLIT.txt`` when ``root/splits/`` holds split files
    (a name without an image in ``images`` is an error), else :func:`deterministic_split`."""
    splits_dir = root / "splits"
    split_file = splits_dir / f"{split}.txt"
    if splits_dir.is_dir() and any(splits_dir.glob("*.txt")) and split != "all":
        if not split_file.is_file():
            have = sorted(p.stem for p in splits_dir.glob("*.txt"))
            raise ValueError(f"unknown split {split!r} for {root}: split files there: {have} (or 'all')")
        names = read_name_list(split_file)
        unknown = [n for n in names if n not in images]
        if unknown:
            raise FileNotFoundError(
                f"{split_file} lists {len(unknown)} name(s) with no {what} in {images_dir}, e.g. {unknown[0]!r}")
        return names
    return deterministic_split(list(images), split)


class FolderDataset(FileSegmentationDataset):
    """Images, masks and optional coarse maps in the folder layout above.

    Args:
        root: the dataset folder.
        split: ``"train"``, ``"val"``, ``"all"``, or any ``ROOT/splits/SPLIT.txt``.
        coarse: ``"files"``, ``"gt-downsample:F"``, ``"none"``, or None = ``"files"`` when
            ``ROOT/coarse/`` exists, else ``"none"``.
        num_classes: overrides ``classes.txt`` / inference.
        on_corrupt: ``"error"`` or ``"skip"`` (see FileSegmentationDataset).
        transform: optional ``item -> item`` callable.
        coarse_kind: what the coarse files hold (``"probs"``, ``"logits"``, ``"labels"``,
            ``"probs:255"``); None: ``ROOT/coarse/coarse.json``, else by file type.
    """

    def __init__(self, root, split: str = "train", coarse: str | None = None, num_classes: int | None = None,
                 on_corrupt: str = "error", transform=None, class_names=None, coarse_kind=None):
        root = Path(root)
        images_dir, masks_dir = root / "images", root / "masks"
        for d in (images_dir, masks_dir):
            if not d.is_dir():
                raise FileNotFoundError(
                    f"folder dataset {root}: missing folder {d}\n{LAYOUT}\nfound:\n{tree(root)}")
        coarse_dir = root / "coarse" if (root / "coarse").is_dir() else None
        images = list_images(images_dir)
        if not images:
            raise FileNotFoundError(f"folder dataset {root}: no .png/.jpg/.jpeg images in {images_dir}\n{LAYOUT}")
        missing = [n for n in images if not (masks_dir / f"{n}.png").is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise FileNotFoundError(
                f"image {images[missing[0]]} has no mask: expected {masks_dir / (missing[0] + '.png')}{more}")

        names = split_names(root, split, images, images_dir)
        self.split = split

        records = [Record(n, images[n], masks_dir / f"{n}.png", find_coarse(coarse_dir, n)) for n in names]
        classes_file = root / "classes.txt"
        if class_names is None and classes_file.is_file():
            class_names = read_classes(classes_file)
        if num_classes is None:
            if class_names is not None:
                num_classes = len(class_names)
            else:
                num_classes = infer_num_classes([masks_dir / f"{n}.png" for n in sorted(images)], on_corrupt)
        elif class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"num_classes={num_classes} but {len(class_names)} class names "
                             f"({classes_file if classes_file.is_file() else 'class_names='})")
        if coarse is None:
            coarse = "files" if coarse_dir is not None and any(r.coarse for r in records) else "none"
        super().__init__(records, num_classes, class_names, coarse, on_corrupt, transform, root,
                         coarse_hint=f"{root / 'coarse'}/NAME.npy or NAME.png", coarse_kind=coarse_kind,
                         coarse_folder=coarse_dir)
