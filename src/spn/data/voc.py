"""PASCAL VOC 2012 semantic segmentation (spec ``"voc:PATH"``).

``PATH`` is the ``VOCdevkit`` folder or ``VOCdevkit/VOC2012``::

    VOC2012/JPEGImages/NAME.jpg
    VOC2012/SegmentationClass/NAME.png          palette PNG of class indices, 255 = border/ignore
    VOC2012/ImageSets/Segmentation/train.txt    (and val.txt, trainval.txt, ...)

Optional coarse maps (e.g. FCN-8s outputs, as in the paper) come from ``coarse_dir=PATH``
holding ``NAME.npy`` scores or ``NAME.png`` labels (see spn.data.coarse.read_coarse_file).
"""
from __future__ import annotations

from pathlib import Path

from .base import FileSegmentationDataset, Record, coarse_dir_for
from .folder import find_coarse
from .io import read_name_list, tree

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]

VOC_LAYOUT = """expected layout (PATH = VOCdevkit or VOCdevkit/VOC2012):
    VOCdevkit/VOC2012/JPEGImages/NAME.jpg
    VOCdevkit/VOC2012/SegmentationClass/NAME.png
    VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt, val.txt"""


def resolve_voc_root(path) -> Path:
    """The ``VOC2012`` folder given it or its ``VOCdevkit`` parent."""
    path = Path(path)
    for cand in (path, path / "VOC2012"):
        if (cand / "JPEGImages").is_dir() and (cand / "SegmentationClass").is_dir() \
                and (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    # name what is missing in the most likely candidate
    cand = path / "VOC2012" if (path / "VOC2012").is_dir() else path
    missing = [d for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation") if not (cand / d).is_dir()]
    raise FileNotFoundError(
        f"not a PASCAL VOC 2012 tree: {cand} lacks {', '.join(missing)}\n{VOC_LAYOUT}\nfound:\n{tree(path, depth=3)}")


class VOCSegmentation(FileSegmentationDataset):
    """PASCAL VOC 2012 segmentation: 21 classes, 255 = ignore.

    Args:
        root: ``VOCdevkit`` or ``VOCdevkit/VOC2012``.
        split: a file of ``ImageSets/Segmentation`` (``train``, ``val``, ``trainval``, ...).
        coarse: ``"files"`` (needs ``coarse_dir``), ``"gt-downsample:F"``, ``"none"``; None =
            ``"files"`` when ``coarse_dir`` is given, else ``"none"``.
        coarse_dir: folder of ``NAME.npy`` / ``NAME.png`` coarse maps.
        coarse_kind: what the ``.npy`` maps hold (``"probs"``, ``"logits"``, ``"labels"``,
            ``"probs:255"``); None: ``coarse_dir/coarse.json``, else probs (:mod:`spn.data.coarse`).
        on_corrupt, transform: as for FileSegmentationDataset.
    """

    def __init__(self, root, split: str = "train", coarse: str | None = None, coarse_dir=None,
                 on_corrupt: str = "error", transform=None, coarse_kind=None):
        voc = resolve_voc_root(root)
        sets = voc / "ImageSets" / "Segmentation"
        split_file = sets / f"{split}.txt"
        if not split_file.is_file():
            have = sorted(p.stem for p in sets.glob("*.txt"))
            raise FileNotFoundError(f"no split file {split_file}; available splits: {have}\n{VOC_LAYOUT}")
        names = read_name_list(split_file)
        if not names:
            raise ValueError(f"split file {split_file} lists no images")
        cdir = coarse_dir_for(coarse_dir, coarse, "VOC")
        records = []
        for n in names:
            img = voc / "JPEGImages" / f"{n}.jpg"
            msk = voc / "SegmentationClass" / f"{n}.png"
            if not img.is_file():
                raise FileNotFoundError(f"{split_file} lists {n!r} but {img} does not exist\n{VOC_LAYOUT}")
            if not msk.is_file():
                raise FileNotFoundError(f"{split_file} lists {n!r} but its mask {msk} does not exist\n{VOC_LAYOUT}")
            records.append(Record(n, img, msk, find_coarse(cdir, n)))
        self.split = split
        self.coarse_dir = cdir
        if coarse is None:
            coarse = "files" if cdir is not None else "none"
        super().__init__(records, len(VOC_CLASSES), VOC_CLASSES, coarse, on_corrupt, transform, voc,
                         coarse_hint=f"{cdir}/NAME.npy or NAME.png", coarse_kind=coarse_kind, coarse_folder=cdir)
