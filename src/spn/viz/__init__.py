"""Output: pictures (coloured label maps, overlays, figure grids) and report tables in the paper's
format. The palette and the label-PNG files are :mod:`spn.image.io`'s (one copy).

Example:
    >>> import torch
    >>> from spn.viz import colorize, overlay
    >>> mask = torch.tensor([[0, 1], [2, 255]])
    >>> colorize(mask)[0, 1].tolist(), overlay(torch.full((3, 2, 2), 0.5), mask).shape
    ([128, 0, 0], (2, 2, 3))
"""
from .figures import colorize, figure_grid, line_plot, overlay, trimap_plot
from .report import (fmt_percent, fmt_seconds, headline_markdown, markdown_table, per_class_markdown,
                     present_classes, results_json, table3_markdown, table3_rows, trimap_markdown)

__all__ = [
    "colorize", "figure_grid", "overlay", "fmt_percent", "fmt_seconds", "headline_markdown", "markdown_table",
    "per_class_markdown", "results_json", "table3_markdown", "table3_rows", "line_plot", "present_classes",
    "trimap_markdown", "trimap_plot",
]
