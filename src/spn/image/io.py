"""Reading and writing pictures and label maps: the one image reader of spn, the one palette and
label-PNG code, with errors that name the file.

:func:`read_image` is the reader of every picture spn takes (datasets, ``spn refine``, photos):
it reads the size from the file's header first and refuses, in one line, an image above
:func:`max_pixels` (``SPN_MAX_PIXELS``, default 64 megapixels, or the ``max_pixels=`` argument)
before decoding it; then it maps every pixel type to RGB in [0, 1] by a documented range:

=====================================  ==========================================================
PIL mode (file)                        read as
=====================================  ==========================================================
``L``, ``P``, ``1``, ``RGB``, ``RGBA``,  8 bits a channel: value / 255 (palette: its colours; grey:
``LA``, ``PA``, ``CMYK``, ``YCbCr``      the three channels equal; alpha dropped)
``I;16`` (16-bit PNG or TIFF)           value / 65535, grey
``I`` (32-bit integer TIFF)             value / 65535, grey; values outside 0..65535 are refused
``F`` (32-bit float TIFF)               the value itself, grey; values outside [0, 1] or NaN are refused
=====================================  ==========================================================

Other modes are refused with one line naming the mode. A label PNG is a palette ("P") PNG whose
pixel values are the class ids, coloured with the VOC palette (:func:`write_mask`);
:func:`read_mask` reads it (and greyscale masks) back as ids.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from spn.image.io import read_mask, write_mask
    >>> p = write_mask(Path(tempfile.mkdtemp()) / "m.png", torch.tensor([[0, 1], [2, 255]]))
    >>> read_mask(p).tolist()
    [[0, 1], [2, 255]]
"""
from __future__ import annotations

import io as _io
import os
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from spn.utils.io import CorruptFileError

__all__ = ["DEFAULT_MAX_PIXELS", "IGNORE_INDEX", "IMAGE_EXTENSIONS", "IMAGE_FORMATS", "MASK_FORMATS",
           "MAX_PIXELS_ENV", "CorruptFileError", "ImageTooLargeError", "as_label_map", "as_numpy",
           "check_pixel_count", "encode_image", "encode_png", "file_format", "image_from_pil", "image_size",
           "mask_from_pil", "max_pixels", "read_image", "read_mask", "read_npy", "to_rgb_uint8", "voc_palette",
           "write_image", "write_mask"]

IGNORE_INDEX = 255
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

#: the largest image read without asking (pixels): 64 megapixels, an 8K photo and some margin
DEFAULT_MAX_PIXELS = 64_000_000
#: the environment variable that raises (or lowers) the limit, e.g. ``SPN_MAX_PIXELS=200e6``
MAX_PIXELS_ENV = "SPN_MAX_PIXELS"
# PIL's own bomb check is lifted while a larger limit of ours is in force (one thread at a time)
_PIL_LIMIT_LOCK = threading.Lock()


class ImageTooLargeError(ValueError):
    """An image whose header claims more pixels than the limit (:func:`max_pixels`)."""


def max_pixels(limit=None) -> int:
    """The pixel limit in force: ``limit`` when given, else ``$SPN_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`. A limit that is not a positive number is a ValueError naming it.

    Example:
        >>> from spn.image.io import max_pixels
        >>> max_pixels(), max_pixels(1e6)
        (64000000, 1000000)
    """
    where = "max_pixels"
    if limit is None:
        env = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not env:
            return DEFAULT_MAX_PIXELS
        limit, where = env, MAX_PIXELS_ENV
    try:
        value = float(limit)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number of pixels (e.g. 200e6), got {limit!r}") from None
    if not value >= 1 or value != value or value == float("inf"):
        raise ValueError(f"{where} must be a positive number of pixels, got {limit!r}")
    return int(value)


def check_pixel_count(what: str, path, height: int, width: int, limit=None) -> None:
    """ImageTooLargeError, in one line with the way to raise the limit, when ``height x width``
    exceeds :func:`max_pixels` (``limit``)."""
    cap = max_pixels(limit)
    n = int(height) * int(width)
    if n > cap:
        raise ImageTooLargeError(
            f"{what} {path} is {width} x {height} = {n / 1e6:.1f} megapixels, above the limit of "
            f"{cap / 1e6:g} megapixels; raise it with {MAX_PIXELS_ENV}={n} (or max_pixels={n} in Python)")


_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")


def _open_header(path: Path, what: str, limit) -> Image.Image:
    """``Image.open`` (the header only), with PIL's decompression-bomb check replaced by ours."""
    cap = max_pixels(limit)
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None if saved is None else max(saved, cap)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(path)
        except Image.DecompressionBombError as exc:  # a limit of PIL's above ours: cannot happen, kept safe
            m = _BOMB_SIZE.search(str(exc))
            n = int(m.group(1)) if m else cap + 1
            raise ImageTooLargeError(f"{what} {path} is {n / 1e6:.1f} megapixels, above the limit of "
                                     f"{cap / 1e6:g} megapixels; raise it with {MAX_PIXELS_ENV}={n}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    try:
        check_pixel_count(what, path, img.size[1], img.size[0], limit)
    except ImageTooLargeError:
        img.close()
        raise
    return img


def _open_loaded(path: Path, what: str, limit=None) -> Image.Image:
    """The decoded picture of ``path``: its size checked against the pixel limit from the header,
    before decoding (:func:`check_pixel_count`)."""
    img = None
    try:
        img = _open_header(path, what, limit)
        img.load()  # decode now: truncated files only fail here
        return img
    except FileNotFoundError:
        if img is not None:
            img.close()
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except ImageTooLargeError:
        raise
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
    """``(H, W)`` from the file header only (no decoding, no pixel limit)."""
    path = Path(path)
    try:
        with _open_header(path, "image", float("1e18")) as img:
            w, h = img.size
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptFileError(f"cannot read image {path}: {exc}") from exc
    return h, w


def read_image(path, *, max_pixels=None) -> torch.Tensor:
    """Read a picture as RGB: float32 ``(3, H, W)`` in ``[0, 1]``, every pixel type by its
    documented range (the table of the module docstring). The one image reader of spn.

    An image above the pixel limit (``max_pixels``, else ``$SPN_MAX_PIXELS``, else 64 MP) is
    refused from its header, before decoding: :class:`ImageTooLargeError`. A file that cannot be
    decoded raises CorruptFileError, a pixel type or range it cannot map a ValueError; both name
    the file.

    Shape:
        - output: ``(3, H, W)`` float32 in [0, 1]

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> from spn.image.io import read_image
        >>> f = Path(tempfile.mkdtemp()) / "grey.tif"
        >>> Image.fromarray(np.full((2, 3), 0.25, np.float32)).save(f)      # a float32 TIFF
        >>> read_image(f)[:, 0, 0].tolist()
        [0.25, 0.25, 0.25]
    """
    path = Path(path)
    img = _open_loaded(path, "image", max_pixels)
    try:
        return image_from_pil(img, f"image {path}")
    finally:
        img.close()


#: modes of 8 bits a channel that PIL converts to RGB exactly
_EIGHT_BIT_MODES = ("1", "L", "P", "RGB", "RGBA", "RGBX", "LA", "PA", "La", "RGBa", "CMYK", "YCbCr")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def _grey_to_rgb(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.broadcast_to(a[None], (3,) + a.shape), dtype=np.float32))


def image_from_pil(img: Image.Image, where: str = "image") -> torch.Tensor:
    """A decoded picture as float32 ``(3, H, W)`` in ``[0, 1]`` (what :func:`read_image` does):
    8-bit modes / 255, 16-bit / 65535, 32-bit integers (``I``) / 65535 when within 0..65535,
    32-bit floats (``F``) as they are when within [0, 1]; anything else a ValueError naming
    ``where`` and the mode."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _grey_to_rgb(np.asarray(img).astype(np.float32) / 65535.0)
    if mode == "I":
        a = np.asarray(img)
        if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise ValueError(f"{where} is a 32-bit integer image with values {int(a.min())}..{int(a.max())}; "
                             "spn reads integer images as 16-bit (0..65535): convert it to 8 or 16 bits")
        return _grey_to_rgb(a.astype(np.float32) / 65535.0)
    if mode == "F":
        a = np.asarray(img, dtype=np.float32)
        if a.size and not np.isfinite(a).all():
            raise ValueError(f"{where} is a float image holding NaN or infinite values")
        if a.size and (float(a.min()) < 0.0 or float(a.max()) > 1.0):
            raise ValueError(f"{where} is a float image with values {float(a.min()):.4g}..{float(a.max()):.4g}; "
                             "spn reads float images as [0, 1]: scale it to [0, 1] (or save it as 8 or 16 bits)")
        return _grey_to_rgb(a)
    if mode not in _EIGHT_BIT_MODES:
        raise ValueError(f"{where} has the pixel type {mode!r}, which spn does not read; save it as an 8-bit or "
                         "16-bit RGB or grey image")
    rgb = img if mode == "RGB" else img.convert("RGB")
    arr = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def read_mask(path, *, max_pixels=None) -> np.ndarray:
    """Read an index mask PNG: int64 ``(H, W)`` class ids (255 = ignore).

    Palette (``P``) images are read as their indices (not colours), greyscale (``L``, ``I``,
    ``I;16``, ``1``) as values. An RGB(A) file is accepted only when its channels are equal
    (a grey image saved as RGB); a colour-coded mask raises ValueError.
    The pixel limit of :func:`read_image` applies (``max_pixels``).
    """
    path = Path(path)
    img = _open_loaded(path, "mask", max_pixels)
    try:
        return mask_from_pil(img, f"mask {path}")
    finally:
        img.close()


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


def read_npy(path, what: str = "array", *, max_pixels=None) -> np.ndarray:
    """Read a ``.npy`` array whose last two axes are an image's height and width, checking its
    header before anything is allocated: the ``h x w`` of the header against the pixel limit
    (:func:`check_pixel_count`, ImageTooLargeError) and the bytes it claims against the file's
    size (a truncated file or a lying header is a CorruptFileError); pickled objects are refused.

    Example:
        >>> import tempfile, numpy as np
        >>> from pathlib import Path
        >>> from spn.image.io import read_npy
        >>> f = Path(tempfile.mkdtemp()) / "a.npy"
        >>> np.save(f, np.zeros((2, 3, 4), np.float32))
        >>> read_npy(f).shape
        (2, 3, 4)
    """
    from numpy.lib import format as npy

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            try:
                version = npy.read_magic(fh)
                shape, fortran, dtype = (npy.read_array_header_1_0(fh) if version == (1, 0)
                                         else npy.read_array_header_2_0(fh))
            except (ValueError, OSError, EOFError) as exc:
                raise CorruptFileError(f"cannot read {what} {path}: not a .npy file ({exc})") from None
            if dtype.hasobject:
                raise CorruptFileError(f"cannot read {what} {path}: it holds Python objects, not numbers")
            if len(shape) >= 2:
                check_pixel_count(what, path, shape[-2], shape[-1], max_pixels)
            claimed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            available = os.fstat(fh.fileno()).st_size - fh.tell()
            if available < claimed:
                raise CorruptFileError(f"cannot read {what} {path}: its header claims a {' x '.join(map(str, shape))} "
                                       f"{dtype} array ({claimed} bytes) but the file holds {available} (truncated?)")
            fh.seek(0)
            return npy.read_array(fh, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except (ValueError, EOFError) as exc:
        if isinstance(exc, (CorruptFileError, ImageTooLargeError)):
            raise
        raise CorruptFileError(f"cannot read {what} {path}: {exc}") from exc


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC palette, the one colour code of spn's label PNGs and pictures: ``(n, 3)`` uint8.

    Colour of index ``i``: the bits of ``i`` are spread over the three channels, most
    significant first (bit 0 -> red, bit 1 -> green, bit 2 -> blue, bit 3 -> red one level
    lower, ...). Index 0 is black, 1 dark red, 2 dark green, 255 (ignore) (224, 224, 192).

    Example:
        >>> from spn.image.io import voc_palette
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
