"""HELEN face parsing, labelled release of Smith et al. (CVPR 2013) (spec ``"helen:PATH"``).

Layout (``SmithCVPR2013_dataset_resized`` style)::

    PATH/images/NAME.jpg
    PATH/labels/NAME/NAME_lbl00.png ... NAME_lbl10.png   11 grey maps, one per component
    PATH/exemplars.txt   train   lines "N , NAME" (or just NAME)
    PATH/tuning.txt      val
    PATH/testing.txt     test

Components (= class ids): 00 background, 01 face skin, 02 left brow, 03 right brow, 04 left
eye, 05 right eye, 06 nose, 07 upper lip, 08 inner mouth, 09 lower lip, 10 hair. The 11 maps
are combined into one index mask by argmax over the components; a pixel where every map is
below ``min_response`` (default 64 of 255) is background.

Faces are cropped or padded (never rescaled: "keeping the original resolution", Sec. 5) to
``size x size`` (default 1024, as in the paper) centred on the face: the centre of the
bounding box of the face labels (ids 1..9: skin and components, not background or hair), or
the mean of the landmarks of the image when ``landmarks=`` is given (a text/CSV file of lines
``NAME x1 y1 x2 y2 ...``, or a folder of ``*.txt`` files holding ``x y`` / ``x , y`` pairs,
one file per image named ``NAME.txt`` or with NAME on its first line, as in HELEN's own
annotation folder). Images without landmarks fall back to the mask centre; images without
face labels to the image centre. Padding: image 0, mask 255 (ignored), coarse uniform.

Reporting groups (the paper's Table 1, label definitions of Liu et al. 2015): the evaluation
protocol "helen" (``spn.metrics.HELEN_GROUPS``). ``"overall"`` is the F-measure over every facial component (brows, eyes,
nose, upper lip, inner mouth, lower lip: ids 2..9), excluding background, face skin and hair,
as in Liu et al.; :func:`spn.metrics.group_scores` computes a group's F-measure by treating the
group's classes as one region.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .base import FileSegmentationDataset, Record, coarse_dir_for
from .folder import find_coarse
from ..image.io import read_mask
from .io import read_name_list, tree

HELEN_CLASSES = [
    "background", "face_skin", "left_brow", "right_brow", "left_eye", "right_eye", "nose",
    "upper_lip", "inner_mouth", "lower_lip", "hair",
]
NUM_COMPONENTS = len(HELEN_CLASSES)

HELEN_SPLITS = {"train": "exemplars", "val": "tuning", "test": "testing"}
FACE_IDS = list(range(1, 10))  # skin + components; not background (0), not hair (10)

HELEN_LAYOUT = """expected layout (Smith et al. 2013 labelled release):
    PATH/images/NAME.jpg
    PATH/labels/NAME/NAME_lbl00.png ... NAME_lbl10.png
    PATH/exemplars.txt (train), tuning.txt (val), testing.txt (test)"""

_NUM = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _numbers(tokens: list[str], where: str) -> np.ndarray:
    vals = []
    for t in tokens:
        if not _NUM.match(t):
            raise ValueError(f"{where}: {t!r} is not a number")
        vals.append(float(t))
    if len(vals) < 2 or len(vals) % 2:
        raise ValueError(f"{where}: expected x y pairs, got {len(vals)} numbers")
    return np.asarray(vals, dtype=np.float64).reshape(-1, 2)


def _tokens(line: str) -> list[str]:
    return [t for t in re.split(r"[\s,;]+", line.strip()) if t]


def read_landmarks(path) -> dict[str, np.ndarray]:
    """``NAME -> (N, 2)`` array of ``(x, y)`` points, from a file or a folder (see module doc)."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    if path.is_dir():
        for f in sorted(path.glob("*.txt")):
            lines = [ln for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
            if not lines:
                continue
            first = _tokens(lines[0])
            if len(first) == 1 and not _NUM.match(first[0]):
                name, body = first[0], lines[1:]
            else:
                name, body = f.stem, lines
            toks = [t for ln in body for t in _tokens(ln)]
            out[name] = _numbers(toks, str(f))
        if not out:
            raise ValueError(f"landmarks folder {path} holds no *.txt files")
        return out
    if not path.is_file():
        raise FileNotFoundError(f"landmarks file {path} does not exist")
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        toks = _tokens(line.split("#", 1)[0])
        if not toks:
            continue
        if k == 1 and not any(_NUM.match(t) for t in toks[1:]):
            continue  # a CSV header
        out[toks[0]] = _numbers(toks[1:], f"{path} line {k}")
    if not out:
        raise ValueError(f"landmarks file {path} lists no landmarks")
    return out


def combine_component_maps(maps: np.ndarray, min_response: int = 64) -> np.ndarray:
    """``(11, H, W)`` grey maps -> int64 ``(H, W)`` index mask: argmax over the components,
    background (0) where every map is below ``min_response``."""
    idx = maps.argmax(axis=0).astype(np.int64)
    idx[maps.max(axis=0) < min_response] = 0
    return idx


def crop_box(center_yx, size: int) -> tuple[int, int]:
    """Top-left ``(y0, x0)`` of the ``size x size`` window whose centre is nearest to
    ``center_yx`` (continuous coordinates: pixel ``i`` spans ``[i, i + 1)``; halves round up)."""
    cy, cx = center_yx
    return int(math.floor(cy - size / 2.0 + 0.5)), int(math.floor(cx - size / 2.0 + 0.5))


def crop_or_pad(t: torch.Tensor, y0: int, x0: int, size: int, fill: float) -> torch.Tensor:
    """The ``size x size`` window at ``(y0, x0)`` of ``t`` ``(..., H, W)``; outside -> ``fill``."""
    H, W = t.shape[-2:]
    pad = (max(0, -x0), max(0, x0 + size - W), max(0, -y0), max(0, y0 + size - H))
    if any(pad):
        t = F.pad(t, pad, value=fill)
        y0, x0 = y0 + pad[2], x0 + pad[0]
    return t[..., y0:y0 + size, x0:x0 + size].contiguous()


class HelenFaces(FileSegmentationDataset):
    """HELEN face parsing (see the module docstring).

    Args:
        root: the dataset folder.
        split: ``"train"`` (exemplars), ``"val"`` (tuning), ``"test"`` (testing), or a split
            file's stem.
        coarse: ``"files"`` (needs ``coarse_dir``), ``"gt-downsample:F"``, ``"none"``; None =
            ``"files"`` when ``coarse_dir`` is given, else ``"none"``.
        size: output side (crop/pad), default 1024; None keeps the full image.
        landmarks: optional landmarks file or folder for the crop centre.
        coarse_dir: folder of ``NAME.npy`` / ``NAME.png`` coarse maps at the original image
            resolution (or any of its aspect ratio: they are upsampled to the image, then cropped
            with it).
        coarse_kind: what the ``.npy`` maps hold (``"probs"``, ``"logits"``, ``"labels"``,
            ``"probs:255"``); None: ``coarse_dir/coarse.json``, else probs (:mod:`spn.data.coarse`).
        min_response: grey level under which a pixel belongs to no component.
    """

    def __init__(self, root, split: str = "train", coarse: str | None = None, size: int | None = 1024,
                 landmarks=None, coarse_dir=None, on_corrupt: str = "error", transform=None,
                 min_response: int = 64, coarse_kind=None):
        root = Path(root)
        images_dir, labels_dir = root / "images", root / "labels"
        stem = HELEN_SPLITS.get(split, split)
        split_file = root / f"{stem}.txt"
        missing = [p for p in (images_dir, labels_dir) if not p.is_dir()]
        if missing:
            raise FileNotFoundError(
                f"not a HELEN tree: missing {', '.join(map(str, missing))}\n{HELEN_LAYOUT}\nfound:\n{tree(root)}")
        if not split_file.is_file():
            raise FileNotFoundError(
                f"HELEN split {split!r}: no split file {split_file} (splits: train = exemplars.txt, "
                f"val = tuning.txt, test = testing.txt)\n{HELEN_LAYOUT}\nfound:\n{tree(root, depth=1)}")
        names = read_name_list(split_file)
        if not names:
            raise ValueError(f"split file {split_file} lists no images")
        if size is not None and int(size) < 1:
            raise ValueError(f"size must be >= 1 or None, got {size}")
        self.size = None if size is None else int(size)
        self.min_response = int(min_response)
        cdir = coarse_dir_for(coarse_dir, coarse, "HELEN")
        records = []
        for n in names:
            img = images_dir / f"{n}.jpg"
            if not img.is_file():
                alt = [p for p in (images_dir / f"{n}.png", images_dir / f"{n}.jpeg") if p.is_file()]
                if not alt:
                    raise FileNotFoundError(f"{split_file} lists {n!r} but {img} does not exist\n{HELEN_LAYOUT}")
                img = alt[0]
            ldir = labels_dir / n
            for c in range(NUM_COMPONENTS):
                p = ldir / f"{n}_lbl{c:02d}.png"
                if not p.is_file():
                    raise FileNotFoundError(f"HELEN labels of {n!r}: missing {p}\n{HELEN_LAYOUT}")
            records.append(Record(n, img, ldir, find_coarse(cdir, n)))
        self.landmarks = read_landmarks(landmarks) if landmarks is not None else None
        self.split = split
        self.coarse_dir = cdir
        if coarse is None:
            coarse = "files" if cdir is not None else "none"
        super().__init__(records, NUM_COMPONENTS, HELEN_CLASSES, coarse, on_corrupt, transform, root,
                         coarse_hint=f"{cdir}/NAME.npy or NAME.png", coarse_kind=coarse_kind, coarse_folder=cdir)

    def info(self) -> dict:
        d = super().info()
        d.update(split=self.split, crop_size=self.size, protocol="helen")
        return d

    def _read_mask(self, rec: Record) -> np.ndarray:
        maps, shape = [], None
        for c in range(NUM_COMPONENTS):
            p = rec.mask / f"{rec.name}_lbl{c:02d}.png"
            m = read_mask(p)
            if shape is None:
                shape = m.shape
            elif m.shape != shape:
                raise ValueError(f"HELEN label map {p} is {m.shape[1]}x{m.shape[0]} (WxH) but "
                                 f"{rec.name}_lbl00.png is {shape[1]}x{shape[0]}")
            maps.append(m)
        return combine_component_maps(np.stack(maps), self.min_response)

    def face_center(self, name: str, mask: np.ndarray) -> tuple[float, float]:
        """``(cy, cx)``: landmarks' mean if known, else the face-label box centre, else the image centre."""
        if self.landmarks is not None and name in self.landmarks:
            pts = self.landmarks[name]
            return float(pts[:, 1].mean()), float(pts[:, 0].mean())
        face = np.isin(mask, FACE_IDS)
        if face.any():
            ys, xs = np.nonzero(face)
            return (ys.min() + ys.max() + 1) / 2.0, (xs.min() + xs.max() + 1) / 2.0
        return mask.shape[0] / 2.0, mask.shape[1] / 2.0

    def _postprocess(self, rec: Record, image, mask, coarse):
        if self.size is None:
            return image, mask, coarse
        y0, x0 = crop_box(self.face_center(rec.name, mask), self.size)
        image = crop_or_pad(image, y0, x0, self.size, 0.0)
        mask = crop_or_pad(torch.from_numpy(mask), y0, x0, self.size, self.ignore_index)
        if coarse is not None:
            coarse = crop_or_pad(coarse, y0, x0, self.size, 1.0 / self.num_classes)
        return image, mask, coarse
