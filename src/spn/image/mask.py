"""Object masks as files: one object's mask read as a probability map, and written back as a
0/255 PNG or a soft map (what ``spn refine --mask`` reads and writes).

A mask file is one of:

- a PNG (or BMP/TIFF) of 8 bits, greyscale (``L``) or 1-bit (``1``): values within 0..1 are a
  binary 0/1 mask; anything else is divided by 255 (a 0/255 mask, or a soft map where 0..255 is
  the probability). An RGB(A) file whose channels are equal is read as its grey level;
- a ``.npy`` ``(h, w)`` (or ``(1, h, w)``) array: float in [0, 1] (a probability), bool, or
  uint8 read as a PNG is; its header is checked before anything is allocated
  (:func:`spn.image.io.read_npy`).

Refused, each in one line that says what to convert to: a palette PNG (``P``: its pixel values
are colour indices, so they are no probability), a 16-bit or 32-bit integer image, a colour
image, a float map with NaN or infinite values or values outside [0, 1]. The pixel limit of
:func:`spn.image.io.read_image` applies.

Example:
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from spn.image.mask import read_object_mask, write_object_mask
    >>> d = Path(tempfile.mkdtemp())
    >>> Image.fromarray(np.array([[0, 255, 51]], np.uint8)).save(d / "m.png")
    >>> [round(v, 2) for v in read_object_mask(d / "m.png")[0].tolist()]
    [0.0, 1.0, 0.2]
    >>> _ = write_object_mask(d / "out.png", np.array([[0.1, 0.7]]))
    >>> np.asarray(Image.open(d / "out.png")).tolist()
    [[0, 255]]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .io import _open_loaded, encode_image, read_npy

__all__ = ["MASK_FILE_EXTS", "mask_probability", "read_object_mask", "write_object_mask"]

#: suffixes of mask files
MASK_FILE_EXTS = (".png", ".bmp", ".tif", ".tiff", ".npy")
_CONVERT = "save it as an 8-bit greyscale PNG (0/255, or 0..255 = probability) or a float .npy in [0, 1]"


def _pil_values(img: Image.Image, where: str, labels: bool) -> np.ndarray:
    mode = img.mode
    if mode in ("1", "L"):
        return np.asarray(img.convert("L") if mode == "1" else img)
    if mode in ("LA", "La"):
        return np.asarray(img)[:, :, 0]
    if mode == "P":
        if labels:
            return np.asarray(img)
        raise ValueError(f"{where} is a palette image: its pixel values are colour indices, not a probability; "
                         f"{_CONVERT} (a label map of several objects: pass --labels)")
    if mode.startswith("I") or mode == "F":
        if labels and mode.startswith("I"):
            return np.asarray(img)
        if mode == "F":
            return np.asarray(img, dtype=np.float32)
        raise ValueError(f"{where} is a {'16' if ';16' in mode else '32'}-bit image; {_CONVERT}")
    if mode in ("RGB", "RGBA"):
        a = np.asarray(img)[:, :, :3]
        if np.array_equal(a[:, :, 0], a[:, :, 1]) and np.array_equal(a[:, :, 0], a[:, :, 2]):
            return a[:, :, 0]
        raise ValueError(f"{where} is a colour image; {_CONVERT}")
    raise ValueError(f"{where} has the pixel type {mode!r}; {_CONVERT}")


def mask_probability(values: np.ndarray, where: str = "mask") -> np.ndarray:
    """One object's mask as float32 ``(h, w)`` probabilities in [0, 1]: bool as 0/1; uint8 within
    0..1 as 0/1, else / 255; float checked (finite, within [0, 1]); ``(1, h, w)`` squeezed.

    Shape:
        - values: ``(h, w)`` or ``(1, h, w)``; output: ``(h, w)`` float32

    Example:
        >>> import numpy as np
        >>> from spn.image.mask import mask_probability
        >>> mask_probability(np.array([[0, 1]], np.uint8)).tolist(), mask_probability(np.array([[0, 255]], np.uint8)).tolist()
        ([[0.0, 1.0]], [[0.0, 1.0]])
    """
    m = values[0] if values.ndim == 3 and values.shape[0] == 1 else values
    if m.ndim != 2:
        raise ValueError(f"{where} must be one (h, w) map, got shape {tuple(values.shape)}")
    if m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"{where} is empty ({m.shape[0]} x {m.shape[1]})")
    if m.dtype == np.bool_:
        return m.astype(np.float32)
    if m.dtype == np.uint8:
        f = m.astype(np.float32)
        return f if int(m.max()) <= 1 else f / 255.0
    if np.issubdtype(m.dtype, np.floating):
        f = m.astype(np.float32)
        if not np.isfinite(f).all():
            raise ValueError(f"{where} holds NaN or infinite values ({int((~np.isfinite(f)).sum())} pixels)")
        lo, hi = float(f.min()), float(f.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{where}: a float mask is a probability in [0, 1], got values {lo:.4g}..{hi:.4g}")
        return f
    raise ValueError(f"{where} has dtype {m.dtype}; a mask is bool, uint8 (0/1, 0/255 or 0..255) or float in [0, 1]")


def read_object_mask(path, *, max_pixels=None, labels: bool = False) -> np.ndarray:
    """Read one object's mask file (see the module docstring) as float32 ``(h, w)`` in [0, 1];
    with ``labels``, a label map of several objects instead: int64 ``(h, w)`` ids (a palette or
    greyscale PNG's pixel values, 8 or 16 bits, or an integer ``.npy``).

    Shape:
        - output: ``(h, w)`` float32 probabilities (int64 ids with ``labels``)
    """
    path = Path(path)
    where = f"mask {path}"
    if path.suffix.lower() == ".npy":
        values = read_npy(path, "mask", max_pixels=max_pixels)
    else:
        img = _open_loaded(path, "mask", max_pixels)
        try:
            values = _pil_values(img, where, labels)
        finally:
            img.close()
    if not labels:
        return mask_probability(values, where)
    ids = values[0] if values.ndim == 3 and values.shape[0] == 1 else values
    if ids.ndim != 2 or not (np.issubdtype(ids.dtype, np.integer) or ids.dtype == np.bool_):
        raise ValueError(f"{where}: a label map is an integer (h, w) map of object ids, got {ids.dtype} "
                         f"{tuple(values.shape)}")
    if ids.size and int(ids.min()) < 0:
        raise ValueError(f"{where}: object ids must be >= 0, got {int(ids.min())}")
    return ids.astype(np.int64)


def write_object_mask(path, proba: np.ndarray, *, soft: bool = False, threshold: float = 0.5) -> Path:
    """Write a probability map ``(H, W)`` in [0, 1]: a 0/255 greyscale PNG of ``proba >=
    threshold``; with ``soft``, the probability itself, as an 8-bit greyscale PNG
    (``round(255 p)``) or, for a ``.npy`` path, float32. Atomic (temp file + rename)."""
    from spn.utils.io import atomic_write_bytes

    from .io import MASK_FORMATS, file_format

    path = Path(path)
    p = np.asarray(proba, dtype=np.float32)
    if p.ndim != 2:
        raise ValueError(f"a mask to write must be (H, W), got shape {p.shape}")
    if soft and path.suffix.lower() == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(p), allow_pickle=False)
        return atomic_write_bytes(path, buf.getvalue())
    fmt = file_format(path, MASK_FORMATS, "mask" + (" (or .npy with --soft)" if not soft else ""))
    u8 = np.round(np.clip(p, 0, 1) * 255).astype(np.uint8) if soft else np.where(p >= threshold, 255, 0).astype(np.uint8)
    img = Image.frombytes("L", (u8.shape[1], u8.shape[0]), np.ascontiguousarray(u8).tobytes())
    return atomic_write_bytes(path, encode_image(img, fmt))

