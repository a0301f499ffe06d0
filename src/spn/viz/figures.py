"""Pictures: coloured label maps, overlays and figure grids.

- :func:`colorize` ``(H, W)`` class ids -> ``(H, W, 3)`` uint8 in the VOC colours
  (:func:`spn.data.voc_palette`, the palette of every label PNG spn writes).
- :func:`overlay` image ``(3, H, W)`` float in [0, 1] + mask ``(H, W)`` -> ``(H, W, 3)`` uint8.
- :func:`figure_grid` rows of cells -> one PNG with column titles (PIL's default font), written
  atomically.

Label and RGB PNGs are written by :func:`spn.data.write_mask` and :func:`spn.data.write_image`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from spn.image.io import as_numpy, as_label_map, encode_png, to_rgb_uint8, voc_palette
from spn.utils.io import atomic_write_bytes

IGNORE_INDEX = 255
DEFAULT_COLUMNS = ("image", "coarse", "one-way", "three-way", "ground truth")


_PALETTE = voc_palette(256)


def colorize(mask, palette: np.ndarray | None = None) -> np.ndarray:
    """Class ids (int tensor or array, 255 = ignore) -> RGB in the VOC colours.

    Shape:
        - mask: ``(H, W)``
        - output: ``(H, W, 3)`` uint8
    """
    pal = _PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
    if pal.ndim != 2 or pal.shape[1] != 3:
        raise ValueError(f"palette must be (N, 3), got shape {tuple(pal.shape)}")
    m = as_label_map(mask)
    if m.size and m.max() >= len(pal):
        raise ValueError(f"class id {int(m.max())} has no colour in a palette of {len(pal)}")
    return pal[m]


def overlay(image, mask, alpha: float = 0.5, palette: np.ndarray | None = None,
            ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """Blend the coloured mask over the image: ``(1 - alpha) * image + alpha * colour``.

    Pixels equal to ``ignore_index`` and class 0 (background) keep the plain image.

    Shape:
        - image: ``(3, H, W)`` float in [0, 1] or ``(H, W, 3)`` uint8
        - mask: ``(H, W)``
        - output: ``(H, W, 3)`` uint8
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = to_rgb_uint8(image).astype(np.float32)
    m = as_label_map(mask)
    if m.shape != rgb.shape[:2]:
        raise ValueError(f"mask {tuple(m.shape)} and image {tuple(rgb.shape[:2])} differ in size")
    col = colorize(m, palette).astype(np.float32)
    out = (1.0 - alpha) * rgb + alpha * col
    keep = m == 0
    if ignore_index is not None:
        keep |= m == ignore_index
    out[keep] = rgb[keep]
    return (out + 0.5).clip(0, 255).astype(np.uint8)


# --- figure grid -----------------------------------------------------------------------------

def _cell_to_rgb(cell, palette) -> np.ndarray | None:
    """A grid cell -> ``(H, W, 3)`` uint8. Integer ``(H, W)`` = label mask; else an image."""
    if cell is None:
        return None
    if isinstance(cell, Image.Image):
        return np.asarray(cell.convert("RGB"))
    a = as_numpy(cell)
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
    return atomic_write_bytes(path, encode_png(canvas))


def _is_label_cell(row, columns, c) -> bool:
    cell = row.get(columns[c]) if isinstance(row, dict) else list(row)[c]
    if cell is None or isinstance(cell, Image.Image):
        return False
    a = cell if isinstance(cell, np.ndarray) else as_numpy(cell)
    if a.ndim == 2:
        return not np.issubdtype(a.dtype, np.floating)
    return a.ndim == 3 and a.shape[0] not in (1, 3) and a.shape[-1] not in (1, 3)


_LINE_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                 (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def line_plot(series: dict, path=None, *, xlabel: str = "", ylabel: str = "", title: str = "",
              size: tuple[int, int] = (640, 400)):
    """A line chart (PIL only): ``series`` name -> ``(xs, ys)``; NaN / None points are skipped.

    The y axis spans the finite values (with a margin); the legend lists the names in order.
    Returns the PIL image, or writes a PNG to ``path`` (atomically) and returns the path.
    """
    if not series:
        raise ValueError("line_plot: no series")
    W, H = size
    left, right, top, bottom = 60, 170, 30, 45
    pts = {}
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise ValueError(f"line_plot: series {name!r} has {len(xs)} x and {len(ys)} y values")
        pts[name] = [(float(x), float(y)) for x, y in zip(xs, ys)
                     if y is not None and np.isfinite(float(y))]
    allp = [p for v in pts.values() for p in v]
    if not allp:
        raise ValueError("line_plot: no finite point")
    x0, x1 = min(p[0] for p in allp), max(p[0] for p in allp)
    y0, y1 = min(p[1] for p in allp), max(p[1] for p in allp)
    if x1 == x0:
        x1 = x0 + 1
    margin = max(1e-6, 0.05 * (y1 - y0))
    y0, y1 = y0 - margin, y1 + margin
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    pw, ph = W - left - right, H - top - bottom

    def xy(x, y):
        return left + (x - x0) / (x1 - x0) * pw, top + (1 - (y - y0) / (y1 - y0)) * ph
    draw.rectangle([left, top, left + pw, top + ph], outline=(0, 0, 0))
    for i in range(5):  # y ticks
        yv = y0 + (y1 - y0) * i / 4
        _, yy = xy(x0, yv)
        draw.line([left - 4, yy, left, yy], fill=(0, 0, 0))
        draw.text((4, yy - 6), f"{yv:.3g}", fill=(0, 0, 0), font=font)
    xs_all = sorted({p[0] for p in allp})
    step = max(1, len(xs_all) // 10)
    for xv in xs_all[::step]:
        xx, _ = xy(xv, y0)
        draw.line([xx, top + ph, xx, top + ph + 4], fill=(0, 0, 0))
        draw.text((xx - 6, top + ph + 6), f"{xv:g}", fill=(0, 0, 0), font=font)
    for i, (name, p) in enumerate(pts.items()):
        colour = _LINE_COLOURS[i % len(_LINE_COLOURS)]
        line = [xy(x, y) for x, y in p]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for cx, cy in line:
            draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=colour)
        ly = top + 14 * i
        draw.line([left + pw + 10, ly + 6, left + pw + 30, ly + 6], fill=colour, width=3)
        draw.text((left + pw + 34, ly), str(name)[:22], fill=(0, 0, 0), font=font)
    if title:
        draw.text((left + pw // 3, 8), title, fill=(0, 0, 0), font=font)
    if xlabel:
        draw.text((left + pw // 2 - 3 * len(xlabel), H - 16), xlabel, fill=(0, 0, 0), font=font)
    if ylabel:
        draw.text((4, 8), ylabel, fill=(0, 0, 0), font=font)
    if path is None:
        return canvas
    return atomic_write_bytes(path, encode_png(canvas))


def trimap_plot(results: dict, path=None, title: str = "trimap accuracy"):
    """Trimap accuracy (%) against band width (px), one line per method: ``results`` name ->
    metrics (or ``{"metrics": ...}``) with ``trimap_widths`` / ``trimap_accuracy``."""
    series = {}
    for name, entry in results.items():
        m = entry.get("metrics", entry) if isinstance(entry, dict) else entry
        ws, acc = m.get("trimap_widths"), m.get("trimap_accuracy")
        if ws and acc:
            series[name] = (list(ws), [None if a is None else 100.0 * a for a in acc])
    return line_plot(series, path, xlabel="band width (px)", ylabel="accuracy (%)", title=title)
