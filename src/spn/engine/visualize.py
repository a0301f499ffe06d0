"""Pictures: a VOC-like colour palette, coloured label maps, overlays and figure grids.

- :func:`voc_palette` -> ``(256, 3)`` uint8, the PASCAL VOC colour code (index 0 black,
  1 dark red, 2 dark green, ...; 255 = the "ignore" colour, light beige).
- :func:`colorize` ``(H, W)`` class ids -> ``(H, W, 3)`` uint8.
- :func:`overlay` image ``(3, H, W)`` float in [0, 1] + mask ``(H, W)`` -> ``(H, W, 3)`` uint8.
- :func:`figure_grid` rows of cells -> one PNG with column titles (PIL's default font).
- :func:`save_label_png` / :func:`save_rgb_png` / :func:`load_label_png`: atomic PNG I/O
  (a label PNG is a palette ("P" mode) PNG whose pixel values are the class ids).

Every writer writes a temporary file in the destination folder and renames it
(``os.replace``), so a reader never sees a half-written picture.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from spn.utils.io import atomic_write_bytes

IGNORE_INDEX = 255
DEFAULT_COLUMNS = ("image", "coarse", "one-way", "three-way", "ground truth")


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC palette: ``(n, 3)`` uint8.

    Colour of index ``i``: the bits of ``i`` are spread over the three channels, most
    significant first (bit 0 -> red, bit 1 -> green, bit 2 -> blue, bit 3 -> red one level
    lower, ...). Index 0 is black, 255 is (224, 224, 192).
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


_PALETTE = voc_palette(256)


def _to_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if isinstance(a, np.ndarray):
        return a
    raise TypeError(f"expected a torch.Tensor or numpy array, got {type(a).__name__}")


def _as_mask(mask) -> np.ndarray:
    m = _to_numpy(mask)
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


def colorize(mask, palette: np.ndarray | None = None) -> np.ndarray:
    """Class ids ``(H, W)`` (int tensor or array, 255 = ignore) -> RGB ``(H, W, 3)`` uint8."""
    pal = _PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    if pal.ndim != 2 or pal.shape[1] != 3:
        raise ValueError(f"palette must be (N, 3), got shape {tuple(pal.shape)}")
    m = _as_mask(mask)
    if m.size and m.max() >= len(pal):
        raise ValueError(f"class id {int(m.max())} has no colour in a palette of {len(pal)}")
    return pal[m]


def to_rgb_uint8(image) -> np.ndarray:
    """An image ``(3, H, W)`` float in [0, 1] (tensor or array), or ``(H, W, 3)`` uint8 -> ``(H, W, 3)`` uint8."""
    a = _to_numpy(image)
    if a.ndim == 3:
        floating = np.issubdtype(a.dtype, np.floating)
        first, last = a.shape[0] in (1, 3), a.shape[-1] in (1, 3)
        # floats are channel-first by the dataset contract, uint8 pictures channel-last
        if first and (floating or not last):
            a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ValueError(f"an image must be (3, H, W) or (H, W, 3), got shape {tuple(_to_numpy(image).shape)}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if np.issubdtype(a.dtype, np.floating):
        a = np.clip(np.nan_to_num(a, nan=0.0), 0.0, 1.0)
        a = (a * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def overlay(image, mask, alpha: float = 0.5, palette: np.ndarray | None = None,
            ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """Blend the coloured mask over the image: ``(1 - alpha) * image + alpha * colour``.

    ``image`` (3, H, W) float in [0, 1] or (H, W, 3) uint8; ``mask`` (H, W). Pixels equal to
    ``ignore_index`` and class 0 (background) keep the plain image. Returns ``(H, W, 3)`` uint8.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = to_rgb_uint8(image).astype(np.float32)
    m = _as_mask(mask)
    if m.shape != rgb.shape[:2]:
        raise ValueError(f"mask {tuple(m.shape)} and image {tuple(rgb.shape[:2])} differ in size")
    col = colorize(m, palette).astype(np.float32)
    out = (1.0 - alpha) * rgb + alpha * col
    keep = m == 0
    if ignore_index is not None:
        keep |= m == ignore_index
    out[keep] = rgb[keep]
    return (out + 0.5).clip(0, 255).astype(np.uint8)


# --- PNG I/O ---------------------------------------------------------------------------------

def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_rgb_png(path, rgb) -> Path:
    """Write an RGB picture (``(H, W, 3)`` uint8 or a ``(3, H, W)`` float image) atomically."""
    return atomic_write_bytes(path, _png_bytes(Image.fromarray(to_rgb_uint8(rgb), mode="RGB")))


def save_label_png(path, mask, palette: np.ndarray | None = None) -> Path:
    """Write class ids ``(H, W)`` as a palette PNG (pixel value = class id), atomically."""
    m = _as_mask(mask).astype(np.uint8)
    img = Image.fromarray(m, mode="P")
    pal = _PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    full = np.zeros((256, 3), dtype=np.uint8)
    full[: min(256, len(pal))] = pal[:256]
    img.putpalette(full.reshape(-1).tolist())
    return atomic_write_bytes(path, _png_bytes(img))


def load_label_png(path) -> np.ndarray:
    """A label PNG (palette "P" or grey "L") -> class ids ``(H, W)`` int64."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L", "I", "I;16"):
                raise ValueError(f"{path}: a label image must be a palette (P) or grey (L) PNG of class ids, "
                                 f"got mode {img.mode}")
            return np.asarray(img).astype(np.int64)
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read label image {path}: {exc}") from exc


# --- figure grid -----------------------------------------------------------------------------

def _cell_to_rgb(cell, palette) -> np.ndarray | None:
    """A grid cell -> ``(H, W, 3)`` uint8. Integer ``(H, W)`` = label mask; else an image."""
    if cell is None:
        return None
    if isinstance(cell, Image.Image):
        return np.asarray(cell.convert("RGB"))
    a = _to_numpy(cell)
    if a.ndim == 2:
        if np.issubdtype(a.dtype, np.floating):  # a probability / grey map in [0, 1]
            return to_rgb_uint8(a[None])
        return colorize(a, palette)
    if a.ndim == 3 and a.shape[0] not in (1, 3) and a.shape[-1] not in (1, 3):
        # (K, H, W) class scores: show their argmax
        return colorize(a.argmax(0), palette)
    return to_rgb_uint8(a)


def _resize(rgb: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    h, w = size
    if rgb.shape[:2] == (h, w):
        return rgb
    img = Image.fromarray(rgb).resize((w, h), Image.NEAREST if nearest else Image.BILINEAR)
    return np.asarray(img)


def figure_grid(rows: Sequence, columns: Sequence[str] = DEFAULT_COLUMNS, path=None, *,
                cell_size: tuple[int, int] | int | None = None, title: str | None = None,
                row_labels: Sequence[str] | None = None, palette: np.ndarray | None = None,
                pad: int = 4) -> Path | Image.Image:
    """A PNG grid of pictures with a title line per column, written atomically to ``path``.

    Args:
        rows: one entry per grid row; each a sequence of ``len(columns)`` cells, or a dict
            column title -> cell (missing titles give blank cells). A cell is ``None`` (blank),
            an image ``(3, H, W)`` float in [0, 1] or ``(H, W, 3)`` uint8, an integer label mask
            ``(H, W)`` (coloured with the palette), a float map ``(H, W)`` in [0, 1] (grey), or
            class scores ``(K, H, W)`` with K not in {1, 3} (their argmax, coloured; pass the
            argmax yourself when K may be 1 or 3, a float (3, H, W) is read as an image).
        columns: column titles, drawn above the columns with PIL's default font.
        path: where to write the PNG; ``None`` returns the PIL image instead.
        cell_size: ``(h, w)`` (or one int) every cell is resized to; default: the size of the
            first non-blank cell. Label maps are resized with nearest neighbour.
        title: an optional line above the column titles.
        row_labels: optional text per row, drawn at the left.
    Returns:
        ``path`` as a Path (or the PIL image when ``path`` is None). The picture is
        ``pad + sum(column widths + pad) [+ label width]`` wide, a column being as wide as its
        cells (``w``) or its title, and ``header + n_rows * (h + pad) + pad`` high.
    """
    columns = [str(c) for c in columns]
    if not columns:
        raise ValueError("figure_grid needs at least one column")
    rows = list(rows)
    if not rows:
        raise ValueError("figure_grid needs at least one row")
    cells: list[list[np.ndarray | None]] = []
    for r, row in enumerate(rows):
        if isinstance(row, dict):
            unknown = set(row) - set(columns)
            if unknown:
                raise ValueError(f"row {r}: unknown columns {sorted(unknown)}; columns are {columns}")
            row = [row.get(c) for c in columns]
        row = list(row)
        if len(row) != len(columns):
            raise ValueError(f"row {r} has {len(row)} cells for {len(columns)} columns {columns}")
        out = []
        for c, cell in enumerate(row):
            try:
                out.append(_cell_to_rgb(cell, palette))
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"row {r}, column {columns[c]!r}: {exc}") from exc
        cells.append(out)
    if cell_size is None:
        first = next((c for row in cells for c in row if c is not None), None)
        if first is None:
            raise ValueError("figure_grid: every cell is blank")
        cell_size = first.shape[:2]
    elif isinstance(cell_size, int):
        cell_size = (cell_size, cell_size)
    ch, cw = int(cell_size[0]), int(cell_size[1])
    if ch < 1 or cw < 1:
        raise ValueError(f"cell_size must be positive, got {cell_size}")
    if row_labels is not None and len(row_labels) != len(cells):
        raise ValueError(f"{len(row_labels)} row labels for {len(cells)} rows")

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(s: str) -> tuple[int, int]:
        x0, y0, x1, y1 = probe.textbbox((0, 0), s, font=font)
        return x1 - x0, y1 - y0

    line_h = max(text_size("Ag")[1], 8) + 6
    header = line_h * (2 if title else 1) + pad
    label_w = 0
    if row_labels:
        label_w = max(text_size(str(s))[0] for s in row_labels) + 2 * pad
    # a column is as wide as its cells or its title, whichever is wider; cells are centred
    col_w = [max(cw, text_size(name)[0] + 4) for name in columns]
    col_x = [label_w + pad + sum(col_w[:c]) + c * pad for c in range(len(columns))]
    width = col_x[-1] + col_w[-1] + pad
    height = header + len(cells) * (ch + pad) + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y_titles = pad
    if title:
        draw.text((pad, pad), str(title), fill=(0, 0, 0), font=font)
        y_titles += line_h
    for c, name in enumerate(columns):
        tw, _ = text_size(name)
        draw.text((col_x[c] + max(0, (col_w[c] - tw) // 2), y_titles), name, fill=(0, 0, 0), font=font)
    for r, row in enumerate(cells):
        y0 = header + r * (ch + pad)
        if row_labels:
            draw.text((pad, y0 + ch // 2 - line_h // 2), str(row_labels[r]), fill=(0, 0, 0), font=font)
        for c, rgb in enumerate(row):
            x0 = col_x[c] + (col_w[c] - cw) // 2
            if rgb is None:
                draw.rectangle([x0, y0, x0 + cw - 1, y0 + ch - 1], outline=(200, 200, 200))
                continue
            nearest = _is_label_cell(rows[r], columns, c)
            canvas.paste(Image.fromarray(_resize(rgb, (ch, cw), nearest)), (x0, y0))
    if path is None:
        return canvas
    return atomic_write_bytes(path, _png_bytes(canvas))


def _is_label_cell(row, columns, c) -> bool:
    cell = row.get(columns[c]) if isinstance(row, dict) else list(row)[c]
    if cell is None or isinstance(cell, Image.Image):
        return False
    a = cell if isinstance(cell, np.ndarray) else _to_numpy(cell)
    if a.ndim == 2:
        return not np.issubdtype(a.dtype, np.floating)
    return a.ndim == 3 and a.shape[0] not in (1, 3) and a.shape[-1] not in (1, 3)
