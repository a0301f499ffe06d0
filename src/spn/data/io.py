"""Reading and writing images, index masks and folder trees, with errors that name the file."""
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
    img = _open_loaded(path, "image")
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
    img = _open_loaded(path, "mask")
    mode = img.mode
    if mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
        arr = np.asarray(img)
    elif mode in ("LA", "PA"):
        arr = np.asarray(img)[:, :, 0]
    elif mode in ("RGB", "RGBA"):
        a = np.asarray(img)[:, :, :3]
        if not (np.array_equal(a[:, :, 0], a[:, :, 1]) and np.array_equal(a[:, :, 0], a[:, :, 2])):
            raise ValueError(
                f"mask {path} is a colour (RGB) image; masks must be palette (P) or greyscale (L) "
                "PNGs whose pixel values are class indices (255 = ignore)")
        arr = a[:, :, 0]
    else:
        raise ValueError(f"mask {path} has unsupported image mode {mode!r}; use a palette or greyscale PNG")
    arr = np.asarray(arr).astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"mask {path} holds negative values")
    return arr


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (256 RGB triplets, flat), as used by its palette PNGs."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def encode_png(img: Image.Image) -> bytes:
    buf = _io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_mask(path, mask, palette: bool = True) -> Path:
    """Write an index mask ``(H, W)`` (values 0..255) as a palette PNG (VOC colours) or, with
    ``palette=False``, a greyscale PNG. Atomic (temp file + rename)."""
    from spn.utils.io import atomic_write_bytes

    m = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    if m.size and (m.min() < 0 or m.max() > 255):
        raise ValueError(f"mask values must lie in [0, 255], got [{m.min()}, {m.max()}]")
    u8 = np.ascontiguousarray(m.astype(np.uint8))
    if palette:
        img = Image.frombytes("P", (u8.shape[1], u8.shape[0]), u8.tobytes())
        img.putpalette(voc_palette())
    else:
        img = Image.frombytes("L", (u8.shape[1], u8.shape[0]), u8.tobytes())
    return atomic_write_bytes(path, encode_png(img))


def write_image(path, image) -> Path:
    """Write float ``(3, H, W)`` in [0, 1] (tensor or array) as PNG/JPEG (by suffix). Atomic."""
    from spn.utils.io import atomic_write_bytes

    a = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got shape {a.shape}")
    u8 = (np.clip(a.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)
    img = Image.frombytes("RGB", (u8.shape[1], u8.shape[0]), np.ascontiguousarray(u8).tobytes())
    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unsupported image suffix {path.suffix!r} for {path} (use .png/.jpg)")
    buf = _io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return atomic_write_bytes(path, buf.getvalue())


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
