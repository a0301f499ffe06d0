"""Real objects cut out by hand: the photographic stamps of Debian's ``tuxpaint-stamps-default``
(GPL-2), the objects of the mask refiner's composites (``composites:DIR`` of a corpus).

Tux Paint's stamps are PNGs with an alpha channel; several hundred of them are photographs of
animals, fruit, flowers, tools, vehicles, ... whose background was removed by hand, so their
alpha is a human-made object boundary around a real object's texture. The rest are drawings.
:func:`select_stamps` keeps the photographs by a fixed rule (no file looked up by name):

- not under a ``cartoon`` folder, nor under ``symbols/`` (letters, money, signs);
- at least :data:`MIN_OPAQUE` fully opaque pixels (alpha >= 250), and at most 95 % of the
  bounding rectangle opaque (a cut-out, not a rectangular picture);
- photographic colour: the distinct RGB triplets among the opaque pixels are at least
  :data:`MIN_DISTINCT` of their number (flat-shaded drawings have a few hundred colours).

:func:`write_cutouts` stores them (RGBA PNG, longer side at most ``max_side``) in
``DIR/cutouts/``, with ``DIR/splits/cutouts_{train,val}.txt`` (grouped by the stamp's name
without trailing digits; every third group to ``val``, as the photos) and manifest entries
(package, version, licence, original path, sha256); :func:`load_cutouts` reads a split back as
uint8 ``(4, h, w)`` tensors.

Example:
    >>> from spn.data.cutouts import stamp_group
    >>> stamp_group("animals/mammals/cats/cat2.png"), stamp_group("food/fruit/apple_red.png")
    ('cat', 'apple_red')
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

__all__ = ["STAMPS_PACKAGE", "STAMPS_ROOT", "load_cutouts", "select_stamps", "stamp_group", "write_cutouts"]

STAMPS_PACKAGE = "tuxpaint-stamps-default"
STAMPS_ROOT = "/usr/share/tuxpaint/stamps"
MIN_OPAQUE = 2000
MIN_DISTINCT = 0.3
MAX_FILL = 0.95


def stamp_group(rel: str) -> str:
    """The scene group of a stamp: its file name without extension and trailing digits."""
    stem = Path(rel).stem.lower()
    return re.sub(r"[_\-]*\d+$", "", stem) or stem


def _is_photo_cutout(rgba: np.ndarray) -> bool:
    alpha = rgba[..., 3]
    opaque = alpha >= 250
    n = int(opaque.sum())
    if n < MIN_OPAQUE:
        return False
    ys, xs = np.nonzero(alpha > 0)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    if n > MAX_FILL * box:
        return False
    rgb = np.ascontiguousarray(rgba[..., :3][opaque])
    distinct = len(np.unique(rgb.view(np.dtype((np.void, 3)))))
    return distinct >= MIN_DISTINCT * n


def select_stamps(root=STAMPS_ROOT) -> list[str]:
    """The photographic cut-outs among the stamps under ``root`` (paths relative to it, sorted;
    see the module docstring for the rule)."""
    from PIL import Image

    root = Path(root)
    out = []
    for path in sorted(root.rglob("*.png")):
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")
        if parts[0] == "symbols" or "cartoon" in parts[:-1]:
            continue
        with Image.open(path) as im:
            rgba = np.asarray(im.convert("RGBA"))
        if _is_photo_cutout(rgba):
            out.append(rel)
    return out


def _store_rgba(src: Path, dest: Path, max_side: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Write ``src`` as an RGBA PNG at ``dest`` (longer side at most ``max_side``, resized with
    premultiplied alpha so that the hidden colour of transparent pixels does not bleed in)."""
    from PIL import Image

    with Image.open(src) as im:
        im = im.convert("RGBA")
        orig = im.size
        if max(orig) > max_side:
            s = max_side / max(orig)
            size = (max(1, round(orig[0] * s)), max(1, round(orig[1] * s)))
            im = im.convert("RGBa").resize(size, Image.LANCZOS).convert("RGBA")
        tmp = dest.with_name(dest.name + ".part")
        im.save(tmp, format="PNG")
        os.replace(tmp, dest)
        return orig, im.size


def write_cutouts(out: Path, version: str, licence: str, max_side: int = 512, root=STAMPS_ROOT,
                  progress=None) -> list[dict]:
    """Store the selected stamps in ``out/cutouts`` and their split lists in ``out/splits``;
    returns their manifest entries."""
    from spn.utils.io import sha256_file

    from .corpus import check_not_reserved, split_groups

    root = Path(root)
    rels = select_stamps(root)
    (out / "cutouts").mkdir(exist_ok=True)
    side = split_groups(stamp_group(r) for r in rels)
    entries, names = [], set()
    for rel in rels:
        src = root / rel
        check_not_reserved(STAMPS_PACKAGE, src)
        name = "stamp_" + re.sub(r"[^A-Za-z0-9]+", "_", rel.rsplit(".", 1)[0]).strip("_").lower()
        if name in names:
            raise ValueError(f"two stamps named {name!r}")
        names.add(name)
        if progress:
            progress(f"{name} <- {STAMPS_PACKAGE} {version}: {src}")
        dest = out / "cutouts" / f"{name}.png"
        orig, size = _store_rgba(src, dest, max_side)
        entries.append({"name": name, "file": f"cutouts/{dest.name}", "split": side[stamp_group(rel)],
                        "group": stamp_group(rel), "package": STAMPS_PACKAGE, "kind": "deb", "version": version,
                        "licence": licence, "original_path": str(src), "original_size": list(orig),
                        "original_sha256": sha256_file(src), "size": list(size), "sha256": sha256_file(dest)})
    for split in ("train", "val"):
        text = "".join(f"{e['name']}\n" for e in entries if e["split"] == split)
        (out / "splits" / f"cutouts_{split}.txt").write_text(text, encoding="utf-8")
    return entries


def load_cutouts(folder, split: str) -> list[torch.Tensor]:
    """The cut-outs of a corpus folder's ``split`` (``train``, ``val`` or ``all``) as uint8
    ``(4, h, w)`` RGBA tensors; ``[]`` when the folder has none.

    Shape:
        - each item: ``(4, h, w)`` uint8, channel 3 the alpha
    """
    from PIL import Image

    folder = Path(folder)
    if not (folder / "cutouts").is_dir():
        return []
    splits = ("train", "val") if split == "all" else (split,)
    names = []
    for s in splits:
        f = folder / "splits" / f"cutouts_{s}.txt"
        if not f.is_file():
            return []
        names += [n.strip() for n in f.read_text(encoding="utf-8").splitlines() if n.strip()]
    out = []
    for n in names:
        path = folder / "cutouts" / f"{n}.png"
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: cut-out {n!r} of splits/cutouts_*.txt is missing ({path})")
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGBA"))
        out.append(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))))
    return out
