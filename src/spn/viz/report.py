"""Reports: markdown tables in the paper's format (the files are written by
:func:`spn.utils.io.write_markdown` and :func:`spn.utils.io.write_json`).

A *results* mapping is what the tables are built from: an ordered dict
``method name -> entry`` where ``entry`` is either a metrics dict of
:meth:`spn.metrics.ConfusionMatrix.compute` or a dict with keys
``"metrics"`` (that dict) and optionally ``"seconds_per_image"`` (float, or a dict with
``"median"``). For example::

    results = {"baseline (coarse)": {"metrics": m0, "seconds_per_image": 0.01},
               "+1 way": {"metrics": m1, "seconds_per_image": 0.03},
               "+3 way": {"metrics": m3, "seconds_per_image": 0.05}}
    md = table3_markdown(results)            # Table 3: method | overall AC | mean AC | mean IoU | s/image
    md += per_class_markdown(results, ["background", "disc", ...])   # per-class IoU and F1
    write_markdown("report.md", "# Results\\n\\n" + md)
    write_json("metrics.json", {"results": results})

Percentages are printed like the paper (two decimals, x100); NaN (a class absent from both
ground truth and prediction) prints as ``-`` and is stored as ``null`` in JSON.

Example:
    >>> from spn.viz import table3_markdown
    >>> m = {"pixel_accuracy": 0.9122, "mean_accuracy": 0.7761, "mean_iou": 0.6551}
    >>> print(table3_markdown({"coarse": {"metrics": m, "seconds_per_image": 0.0123}}))
    | method | overall AC | mean AC | mean IoU | s/image |
    | :--- | ---: | ---: | ---: | ---: |
    | coarse | 91.22 | 77.61 | 65.51 | 0.0123 |
    <BLANKLINE>
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from spn.utils.io import to_jsonable

HEADLINE = (("overall AC", "pixel_accuracy"), ("mean AC", "mean_accuracy"), ("mean IoU", "mean_iou"))
#: the boundary columns, added when the metrics have them (a protocol with ``boundary=True``)
BOUNDARY_HEADLINE = (("boundary IoU", "boundary_iou"), ("mBA", "mba"))
#: the band widths (px) of :func:`trimap_markdown`
TRIMAP_TABLE_WIDTHS = (1, 2, 3, 5, 10, 20)


# --- formatting ------------------------------------------------------------------------------

def fmt_percent(v, digits: int = 2) -> str:
    """0.9122 -> "91.22"; None/NaN -> "-"."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{100.0 * float(v):.{digits}f}"


def fmt_seconds(v) -> str:
    """Seconds with 3 significant digits ("0.0123"); None/NaN -> "-"."""
    if isinstance(v, Mapping):
        v = v.get("median")
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    v = float(v)
    if v == 0:
        return "0"
    return f"{v:.3g}" if v >= 1e-3 else f"{v:.2e}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence], align: Sequence[str] | None = None) -> str:
    """A GitHub markdown table; ``align`` per column "l" or "r" (default: first left, rest right)."""
    headers = [str(h) for h in headers]
    if align is None:
        align = ["l"] + ["r"] * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError(f"{len(align)} alignments for {len(headers)} columns")
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |",
             "| " + " | ".join("---:" if a == "r" else ":---" for a in align) + " |"]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != len(headers):
            raise ValueError(f"table row {i} has {len(row)} cells for {len(headers)} columns")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _entry(entry) -> tuple[dict, object]:
    if not isinstance(entry, Mapping):
        raise TypeError(f"a results entry must be a dict, got {type(entry).__name__}")
    if "metrics" in entry:
        return entry["metrics"], entry.get("seconds_per_image")
    if "pixel_accuracy" in entry:
        return entry, entry.get("seconds_per_image")
    raise ValueError(f"a results entry needs 'metrics' or the metric keys, got keys {sorted(entry)}")


# --- the paper's tables ----------------------------------------------------------------------

def _headline_keys(results: Mapping) -> tuple:
    """HEADLINE, plus the boundary columns when any entry has them."""
    has = any("boundary_iou" in _entry(e)[0] for e in results.values())
    return HEADLINE + (BOUNDARY_HEADLINE if has else ())


def table3_rows(results: Mapping) -> list[list[str]]:
    rows = []
    keys = _headline_keys(results)
    for name, entry in results.items():
        m, sec = _entry(entry)
        rows.append([name] + [fmt_percent(m.get(key)) for _, key in keys] + [fmt_seconds(sec)])
    return rows


def table3_markdown(results: Mapping, caption: str | None = None) -> str:
    """Table 3 of the paper: rows = methods, columns overall AC, mean AC, mean IoU (in %), s/image;
    boundary IoU and mBA after mean IoU when the metrics have them."""
    if not results:
        raise ValueError("no results to tabulate")
    keys = _headline_keys(results)
    text = markdown_table(["method"] + [t for t, _ in keys] + ["s/image"], table3_rows(results))
    return (f"{caption}\n\n{text}" if caption else text)


def trimap_markdown(results: Mapping, widths: Sequence[int] = TRIMAP_TABLE_WIDTHS) -> str:
    """Trimap accuracy (%) in bands of ``widths`` px around the ground-truth edges, one row per
    method (the entries' ``trimap_widths`` / ``trimap_accuracy``); ``""`` when none has them."""
    rows, cols = [], None
    for name, entry in results.items():
        m, _ = _entry(entry)
        ws, acc = list(m.get("trimap_widths") or []), list(m.get("trimap_accuracy") or [])
        if not ws:
            continue
        if cols is None:
            cols = [w for w in widths if w in ws]
        rows.append([name] + [fmt_percent(acc[ws.index(w)]) if w in ws else "-" for w in cols])
    if not rows:
        return ""
    return ("Trimap accuracy (%) in bands of w px around the ground-truth edges (Kraehenbuehl and "
            "Koltun 2011):\n\n" + markdown_table(["method"] + [f"w={w}" for w in cols], rows))


def present_classes(metrics_list: Sequence[Mapping]) -> list[int]:
    """Indices of the classes with ground-truth pixels in the evaluated images (a finite
    ``per_class_accuracy`` in any of the metrics); all classes when none has that key."""
    n = max((len(m.get("per_class_iou") or []) for m in metrics_list), default=0)
    accs = [m.get("per_class_accuracy") for m in metrics_list if m.get("per_class_accuracy") is not None]
    if not accs:
        return list(range(n))

    def finite(v):
        return v is not None and isinstance(v, (int, float)) and math.isfinite(v)
    return [i for i in range(n) if any(i < len(a) and finite(a[i]) for a in accs)]


def per_class_markdown(results: Mapping, class_names: Sequence[str] | None = None,
                       kinds: Sequence[str] = ("iou", "f1")) -> str:
    """Per-class tables: rows = classes, one column per method, for each kind ("iou", "f1", "accuracy").
    Classes absent from the ground truth of the evaluated images are left out (:func:`present_classes`)."""
    if not results:
        raise ValueError("no results to tabulate")
    keys = {"iou": ("per_class_iou", "IoU"), "f1": ("per_class_f1", "F1"),
            "accuracy": ("per_class_accuracy", "accuracy")}
    methods = list(results)
    metrics = [_entry(results[k])[0] for k in methods]
    out = []
    for kind in kinds:
        if kind not in keys:
            raise ValueError(f"unknown per-class kind {kind!r}; valid: {', '.join(keys)}")
        key, title = keys[kind]
        cols = [list(m.get(key) or []) for m in metrics]
        n = max(len(c) for c in cols)
        names = list(class_names) if class_names is not None else list(metrics[0].get("class_names") or [])
        if len(names) < n:
            names += [f"class_{i}" for i in range(len(names), n)]
        rows = []
        for i in present_classes(metrics):
            rows.append([names[i]] + [fmt_percent(c[i] if i < len(c) else None) for c in cols])
        out.append(f"Per-class {title} (%):\n\n" + markdown_table(["class"] + methods, rows))
    return "\n".join(out)


def results_json(results: Mapping) -> dict:
    """``results`` with headline numbers pulled up front: name -> {overall AC..., s/image, metrics}."""
    out = {}
    for name, entry in results.items():
        m, sec = _entry(entry)
        out[name] = {
            "pixel_accuracy": m.get("pixel_accuracy"),
            "mean_accuracy": m.get("mean_accuracy"),
            "mean_iou": m.get("mean_iou"),
            **({"boundary_iou": m.get("boundary_iou"), "mba": m.get("mba")} if "boundary_iou" in m else {}),
            "seconds_per_image": sec,
            "metrics": m,
        }
    return to_jsonable(out)


def headline_markdown(results: Mapping, headline, caption: str) -> str:
    """A table of the columns ``headline(metrics)`` (an ordered dict title -> value) per method,
    e.g. a protocol's headline (HELEN's Table 1 F-measures); ``""`` when ``results`` is empty."""
    rows, headers = [], None
    for name, entry in results.items():
        m, _ = _entry(entry)
        head = headline(m)
        if headers is None:
            headers = list(head)
        rows.append([name] + [fmt_percent(v) for v in head.values()])
    if headers is None:
        return ""
    return f"{caption}\n\n" + markdown_table(["method"] + headers, rows)
