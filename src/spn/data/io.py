"""Reading and writing images and label maps (the one palette and label-PNG code of spn), and
folder listings, with errors that name the file.

A label PNG is a palette ("P") PNG whose pixel values are the class ids, coloured with the VOC
palette (:func:`write_mask`); :func:`read_mask` reads it (and greyscale masks) back as ids.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from spn.data import read_mask, write_mask
    >>> p = write_mask(Path(tempfile.mkdtemp()) / "m.png", torch.tensor([[0, 1], [2, 255]]))
    >>> read_mask(p).tolist()
    [[0, 1], [2, 255]]
"""
from __future__ import annotations

import io as _io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IGNORE_INDEX = 255
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class CorruptFileError(ValueError):
    """A file exists but cannot be decoded (truncated, not an image, bad header...)."""


def _open_loaded(path: Path, what: str) -> Image.Image:
    img = None
    try:
        img = Image.open(path)
        img.load()  # decode now: truncated files only fail here
        return img
    except FileNotFoundError:
        if img is not None:
            img.close()
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except (PermissionError, IsADirectoryError) as exc:  # not corrupt: unreadable (an OS error)
        if img is not None:
            img.close()
        exc.spn_message = f"cannot read {what} {path}: {exc.strerror or exc}"
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        if img is not None:
            img.close()
        raise CorruptFileError(f"cannot read {what} {path}: {exc}") from exc


def image_size(path) -> tuple[int, int]:
    """``(H, W)`` from the file header only (no decoding)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptFileError(f"cannot read image {path}: {exc}") from exc
    return h, w


def read_image(path) -> torch.Tensor:
    """Read an RGB image: float32 ``(3, H, W)`` in ``[0, 1]``. Greyscale / palette / RGBA
    images are converted to RGB (alpha dropped). Raises CorruptFileError (a ValueError)
    naming the file when it cannot be decoded."""
    path = Path(path)
    return image_from_pil(_open_loaded(path, "image"))


def image_from_pil(img: Image.Image) -> torch.Tensor:
    """A decoded picture as float32 ``(3, H, W)`` in ``[0, 1]`` (what :func:`read_image` does)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float32)
        a = a / max(float(a.max()), 1.0) if img.mode == "I" else a / 65535.0
        arr = np.repeat(a[:, :, None], 3, axis=2)
    else:
        if img.mode != "RGB":
            img = img.convert("RGB")
        arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def read_mask(path) -> np.ndarray:
    """Read an index mask PNG: int64 ``(H, W)`` class ids (255 = ignore).

    Palette (``P``) images are read as their indices (not colours), greyscale (``L``, ``I``,
    ``I;16``, ``1``) as values. An RGB(A) file is accepted only when its channels are equal
    (a grey image saved as RGB); a colour-coded mask raises ValueError.
    """
    path = Path(path)
    return mask_from_pil(_open_loaded(path, "mask"), f"mask {path}")


def mask_from_pil(img: Image.Image, where: str = "label image") -> np.ndarray:
    """The class ids of a label picture (what :func:`read_mask` does with a decoded file)."""
    mode = img.mode
    if mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
        arr = np.asarray(img)
    elif mode in ("LA", "PA"):
        arr = np.asarray(img)[:, :, 0]
    elif mode in ("RGB", "RGBA"):
        a = np.asarray(img)[:, :, :3]
        if not (np.array_equal(a[:, :, 0], a[:, :, 1]) and np.array_equal(a[:, :, 0], a[:, :, 2])):
            raise ValueError(
                f"{where} is a colour (RGB) image; masks must be palette (P) or greyscale (L) "
                "PNGs whose pixel values are class indices (255 = ignore)")
        arr = a[:, :, 0]
    else:
        raise ValueError(f"{where} has unsupported image mode {mode!r}; use a palette or greyscale PNG")
    arr = np.asarray(arr).astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{where} holds negative values")
    return arr


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC palette, the one colour code of spn's label PNGs and pictures: ``(n, 3)`` uint8.

    Colour of index ``i``: the bits of ``i`` are spread over the three channels, most
    significant first (bit 0 -> red, bit 1 -> green, bit 2 -> blue, bit 3 -> red one level
    lower, ...). Index 0 is black, 1 dark red, 2 dark green, 255 (ignore) (224, 224, 192).

    Example:
        >>> from spn.data import voc_palette
        >>> voc_palette()[[0, 1, 2, 255]].tolist()
        [[0, 0, 0], [128, 0, 0], [0, 128, 0], [224, 224, 192]]
    """
    if not isinstance(n, int) or not 1 <= n <= 256:
        raise ValueError(f"palette size must be an int in 1..256, got {n!r}")
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def as_numpy(a) -> np.ndarray:
    """A tensor (detached, on the CPU) or an array as a numpy array; TypeError otherwise."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if isinstance(a, np.ndarray):
        return a
    raise TypeError(f"expected a torch.Tensor or numpy array, got {type(a).__name__}")


def as_label_map(mask) -> np.ndarray:
    """A label map ``(H, W)`` (tensor or array of class ids 0..255; floats only when they are
    whole numbers) as int64; TypeError/ValueError naming the problem otherwise."""
    m = as_numpy(mask) if isinstance(mask, (torch.Tensor, np.ndarray)) else np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"a label mask must be (H, W), got shape {tuple(m.shape)}")
    if np.issubdtype(m.dtype, np.floating) or m.dtype == np.bool_:
        if m.dtype != np.bool_ and not np.all(np.equal(np.mod(m, 1), 0)):
            raise TypeError(f"a label mask must hold integer class ids, got dtype {m.dtype}")
        m = m.astype(np.int64)
    m = m.astype(np.int64, copy=False)
    if m.size and (m.min() < 0 or m.max() > 255):
        raise ValueError(f"class ids must be in 0..255, got range {int(m.min())}..{int(m.max())}")
    return m


def to_rgb_uint8(image) -> np.ndarray:
    """An image ``(3, H, W)`` float in [0, 1] (tensor or array), or ``(H, W, 3)`` uint8 -> ``(H, W, 3)`` uint8."""
    a = as_numpy(image)
    if a.ndim == 3:
        floating = np.issubdtype(a.dtype, np.floating)
        first, last = a.shape[0] in (1, 3), a.shape[-1] in (1, 3)
        # floats are channel-first by the dataset contract, uint8 pictures channel-last
        if first and (floating or not last):
            a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ValueError(f"an image must be (3, H, W) or (H, W, 3), got shape {tuple(as_numpy(image).shape)}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if np.issubdtype(a.dtype, np.floating):
        a = np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0)
        a = (a * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def encode_png(img: Image.Image) -> bytes:
    return encode_image(img, "PNG")


#: lossless formats a label map can be written in (palette images), by suffix
MASK_FORMATS = {".png": "PNG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
#: formats of pictures (overlays, figures), by suffix
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                 ".tiff": "TIFF", ".webp": "WEBP"}


def file_format(path, formats: dict, what: str) -> str:
    """The PIL format of ``path`` by its suffix among ``formats``; ValueError listing them otherwise."""
    path = Path(path)
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        hint = " (a label map is class ids: a lossy JPEG would change them)" if path.suffix.lower() in (".jpg", ".jpeg") else ""
        raise ValueError(f"cannot write {what} {path}: unsupported file type {path.suffix or '(none)'!r}{hint}; "
                         f"use {', '.join(sorted(formats))}")
    return fmt


def write_mask(path, mask, palette: bool = True) -> Path:
    """Write a label map ``(H, W)`` (class ids 0..255) as a palette image whose pixel values are
    the class ids (VOC colours, :func:`voc_palette`) or, with ``palette=False``, a greyscale one.
    The format follows the suffix: ``.png`` (or ``.bmp``, ``.tif``; another suffix is a
    ValueError). Atomic (temp file + rename). :func:`read_mask` reads it back."""
    from spn.utils.io import atomic_write_bytes

    fmt = file_format(path, MASK_FORMATS, "label map")
    u8 = np.ascontiguousarray(as_label_map(mask).astype(np.uint8))
    if palette:
        img = Image.frombytes("P", (u8.shape[1], u8.shape[0]), u8.tobytes())
        img.putpalette(voc_palette().reshape(-1).tolist())
    else:
        img = Image.frombytes("L", (u8.shape[1], u8.shape[0]), u8.tobytes())
    return atomic_write_bytes(path, encode_image(img, fmt))


def encode_image(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = _io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def write_image(path, image) -> Path:
    """Write an RGB picture, float ``(3, H, W)`` in [0, 1] or ``(H, W, 3)`` uint8 (tensor or
    array), in the format of the suffix (png, jpg, bmp, tif, webp; another is a ValueError). Atomic."""
    from spn.utils.io import atomic_write_bytes

    fmt = file_format(path, IMAGE_FORMATS, "image")
    u8 = to_rgb_uint8(image if isinstance(image, (torch.Tensor, np.ndarray)) else np.asarray(image))
    img = Image.frombytes("RGB", (u8.shape[1], u8.shape[0]), u8.tobytes())
    return atomic_write_bytes(path, encode_image(img, fmt))


def tree(root, depth: int = 2, max_entries: int = 8) -> str:
    """A short ``tree``-style listing of ``root`` (for layout errors)."""
    root = Path(root)
    if not root.exists():
        return f"{root}  (does not exist)"
    if not root.is_dir():
        return f"{root}  (not a directory)"
    lines = [f"{root}/"]

    def walk(d: Path, prefix: str, level: int):
        try:
            entries = sorted(d.iterdir(), key=lambda p: (not p.is_dir(), p.name))
        except OSError as exc:
            lines.append(f"{prefix}(unreadable: {exc})")
            return
        shown = entries[:max_entries]
        for e in shown:
            lines.append(f"{prefix}{e.name}{'/' if e.is_dir() else ''}")
            if e.is_dir() and level < depth:
                walk(e, prefix + "    ", level + 1)
        if len(entries) > len(shown):
            lines.append(f"{prefix}... ({len(entries) - len(shown)} more)")

    walk(root, "    ", 1)
    return "\n".join(lines)


def read_name_list(path) -> list[str]:
    """One name a line; blank lines and ``#`` comments skipped; ``"N , NAME"`` / ``"N NAME"``
    lines give ``NAME`` (the HELEN split-file style)."""
    path = Path(path)
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p for p in line.replace(",", " ").split() if p]
        if len(parts) >= 2 and parts[0].isdigit():
            names.append(parts[-1])
        else:
            names.append(parts[0] if len(parts) == 1 else line)
    return names
