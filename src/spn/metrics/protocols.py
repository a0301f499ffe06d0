"""Evaluation protocols of the paper: "plain", "voc" (Sec. 5, Tables 2-4) and "helen" (Table 1).

Interface (what ``spn eval --protocol`` and ``spn compare`` rely on)::

    proto = get_protocol(name, num_classes=None, class_names=None, ignore_index=255)
    for each image (or batch):
        logits = proto.prepare(logits, coarse)   # (B, K, H, W) or (K, H, W) -> same shape
        pred = logits.argmax(dim=-3)             # (B, H, W) or (H, W) int64
        proto.accumulate(pred, target)           # target: same shape as pred, 255 = ignore
    metrics = proto.compute()                    # dict, JSON-able
    proto.reset()                                # start over

- ``prepare`` takes any class scores whose argmax is the decision (logits, log-probabilities or
  probabilities) and the coarse input the refinement started from (probabilities, same shape,
  or ``None``). A protocol with ``restrict=True`` restricts the refined result to the classes
  present in the coarse input (``argmax`` of ``coarse``, per image), as the paper does at test
  time on PASCAL VOC: the scores of absent classes become ``-inf``
  (:func:`restrict_to_coarse_classes`). "voc" is "plain" with ``restrict=True``; any protocol
  takes ``get_protocol(name, restrict=True)`` (what ``--restrict-to-present`` asks for); the
  others return the scores unchanged.
- ``accumulate`` adds integer label maps to a confusion matrix (:mod:`spn.metrics.confusion`).
- ``compute`` returns the :class:`~spn.metrics.ConfusionMatrix` metrics
  (``pixel_accuracy`` = "overall AC", ``mean_accuracy`` = "mean AC", ``mean_iou``,
  ``per_class_iou``, ``per_class_accuracy``, ``per_class_f1``, ``pixels``), plus ``protocol``
  and ``class_names``; "helen" adds ``f_measure`` (group name -> F) with the groups of Table 1
  (skin, brows, eyes, nose, mouth, upper lip, lower lip, inner mouth) and ``overall``.
- ``headline(metrics)`` gives the columns of the paper's table for the protocol (an ordered
  dict title -> value): overall AC, mean AC, mean IoU (Tables 3-4) for "plain" and "voc", the
  Table 1 F-measures (skin, brows, eyes, nose, mouth, U-lip, L-lip, in-mouth, overall) for
  "helen". ``detail(metrics)`` gives per-class values, class name -> value (``detail_title``
  names them): IoU for "plain" and "voc", F-measure (F1) for "helen".

``num_classes`` may be left out: it is then taken from ``class_names`` or, failing that, from
the class dimension of the first ``prepare`` call.

HELEN F-measures. The groups are :data:`HELEN_GROUPS` (label ids of Smith et al. 2013:
0 background, 1 skin, 2/3 brows, 4/5 eyes, 6 nose, 7 upper lip, 8 inner mouth, 9 lower lip,
10 hair): skin, brows, eyes, nose, mouth (7+8+9), upper lip, lower lip, inner mouth, and
"overall" = every facial component 2..9 (not background, skin or hair), as in Liu et al. 2015.
Every group, "overall" included, is scored on the binary maps "pixel in group" of prediction and
ground truth: ``F = 2 TP / (|pred| + |gt|)``, the counts accumulated over the whole dataset
(pixels with ground truth 255 ignored). So a left-eye pixel labelled right eye is right for
"eyes" and an eye pixel labelled brow is right for "overall" but wrong for "eyes" and "brows".
"""
from __future__ import annotations

from collections import OrderedDict

import torch

from .boundary import BoundaryScores
from .confusion import ConfusionMatrix, group_scores

#: The 11 HELEN labels (Smith et al. 2013) by label id, the order of the label files lbl00..lbl10
#: (the dataset, :mod:`spn.data.helen`, reads them in this order: a test checks the two agree).
HELEN_CLASS_NAMES = [
    "background", "face_skin", "left_brow", "right_brow", "left_eye", "right_eye", "nose",
    "upper_lip", "inner_mouth", "lower_lip", "hair",
]
#: The groups of Table 1 (Liu et al. 2015; SPN, Table 1): group name -> label ids
HELEN_GROUPS: dict[str, list[int]] = {
    "skin": [1],
    "brows": [2, 3],
    "eyes": [4, 5],
    "nose": [6],
    "mouth": [7, 8, 9],
    "upper_lip": [7],
    "lower_lip": [9],
    "inner_mouth": [8],
    "overall": [2, 3, 4, 5, 6, 7, 8, 9],
}
# Table 1 column order and titles (keys of HELEN_GROUPS)
_HELEN_COLUMNS = [
    ("skin", "skin"), ("brows", "brows"), ("eyes", "eyes"), ("nose", "nose"), ("mouth", "mouth"),
    ("upper_lip", "U-lip"), ("lower_lip", "L-lip"), ("inner_mouth", "in-mouth"), ("overall", "overall"),
]


def helen_groups() -> dict[str, list[int]]:
    """The Table 1 groups, name -> label ids (a copy of :data:`HELEN_GROUPS`)."""
    return {k: list(v) for k, v in HELEN_GROUPS.items()}


def restrict_to_coarse_classes(logits: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """Set the scores of classes absent from ``argmax(coarse)`` to ``-inf`` (per image).

    Shape:
        - logits, coarse: ``(B, K, H, W)`` or ``(K, H, W)``, the same for both
        - output: the shape of ``logits``

    Example:
        >>> import torch
        >>> from spn.metrics import restrict_to_coarse_classes
        >>> coarse = torch.tensor([[[0.8]], [[0.1]], [[0.1]]])       # only class 0 is present
        >>> restrict_to_coarse_classes(torch.tensor([[[1.0]], [[3.0]], [[2.0]]]), coarse).flatten()
        tensor([1., -inf, -inf])

    Args:
        logits: ``(B, K, H, W)`` or ``(K, H, W)`` class scores.
        coarse: the coarse input, same shape (probabilities or scores).
    Returns:
        scores of the same shape and dtype; a class is kept in image ``b`` when it is the
        argmax of ``coarse[b]`` at one pixel at least.
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(coarse, torch.Tensor):
        raise TypeError("logits and coarse must be torch.Tensors")
    if logits.shape != coarse.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and coarse {tuple(coarse.shape)} differ in shape")
    squeeze = logits.dim() == 3
    if squeeze:
        logits, coarse = logits[None], coarse[None]
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, K, H, W) or (K, H, W), got {tuple(logits.shape)}")
    B, K = logits.shape[:2]
    labels = coarse.argmax(dim=1).reshape(B, -1)  # (B, HW)
    present = torch.zeros(B, K, dtype=torch.bool, device=logits.device)
    present.scatter_(1, labels, True)
    out = logits.masked_fill(~present[:, :, None, None], float("-inf"))
    return out[0] if squeeze else out


#: trimap band widths shown as table columns (all of 1..20 are in the metrics)
TRIMAP_COLUMNS = (2, 5)


def add_boundary_columns(cols: "OrderedDict", metrics: dict) -> "OrderedDict":
    """Append boundary IoU, mBA and trimap accuracies (bands of :data:`TRIMAP_COLUMNS` px) when
    ``metrics`` has them (a protocol built with ``boundary=True``)."""
    if "boundary_iou" not in metrics:
        return cols
    cols["boundary IoU"] = metrics["boundary_iou"]
    cols["mBA"] = metrics["mba"]
    widths = list(metrics.get("trimap_widths") or [])
    for w in TRIMAP_COLUMNS:
        if w in widths:
            cols[f"trimap {w}px"] = metrics["trimap_accuracy"][widths.index(w)]
    return cols


class Protocol:
    """Plain protocol: confusion-matrix metrics (Table 3 columns); the scores as they are, or
    restricted to the coarse input's classes with ``restrict=True``."""

    name = "plain"
    #: the default of ``restrict``
    restricts = False

    def __init__(self, num_classes: int | None = None, class_names=None, ignore_index: int = 255,
                 restrict: bool | None = None, boundary: bool = False):
        self.restrict = self.restricts if restrict is None else bool(restrict)
        self.boundary = bool(boundary)
        self.bs = None
        if class_names is not None:
            class_names = [str(c) for c in class_names]
            if num_classes is None:
                num_classes = len(class_names)
            elif len(class_names) != num_classes:
                raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.class_names = class_names
        self.ignore_index = ignore_index
        self.cm = ConfusionMatrix(num_classes, ignore_index) if num_classes else None
        self._new_boundary()

    def _new_boundary(self) -> None:
        if self.boundary and self.num_classes:
            self.bs = BoundaryScores(self.num_classes, self.ignore_index)

    # --- interface -------------------------------------------------------------------------
    def prepare(self, logits: torch.Tensor, coarse: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``(B, K, H, W)`` or ``(K, H, W)`` -> scores to take the argmax of."""
        self._check_scores(logits)
        if not self.restrict:
            return logits
        if coarse is None:
            raise ValueError(f"protocol {self.name!r} needs the coarse input (the refined classes are restricted "
                             "to those present in it); the dataset gives no 'coarse' map")
        return restrict_to_coarse_classes(logits, coarse.to(logits.device))

    def accumulate(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add integer label maps ``pred`` and ``target`` of one shape (255 = ignore in target)."""
        if self.cm is None:
            raise ValueError(f"protocol {self.name!r}: num_classes unknown; pass num_classes or call prepare first")
        if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError("pred and target must be torch.Tensors")
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError(f"pred and target must be integer label maps, got {pred.dtype} and {target.dtype}")
        self.cm.update(target, pred)
        if self.boundary:
            if self.bs is None:
                self._new_boundary()
            self.bs.update(pred, target)

    def compute(self) -> dict:
        if self.cm is None:
            raise ValueError(f"protocol {self.name!r}: nothing accumulated")
        m = self.cm.compute()
        if self.bs is not None:
            m.update(self.bs.compute())
        m["protocol"] = self.name
        m["class_names"] = self.names()
        return m

    def reset(self) -> None:
        if self.num_classes:
            self.cm = ConfusionMatrix(self.num_classes, self.ignore_index)
            self._new_boundary()

    # --- table helpers ---------------------------------------------------------------------
    def names(self) -> list[str]:
        if self.class_names is not None:
            return list(self.class_names)
        return [f"class_{i}" for i in range(self.num_classes or 0)]

    def headline(self, metrics: dict) -> "OrderedDict[str, float]":
        cols = OrderedDict([
            ("overall AC", metrics["pixel_accuracy"]),
            ("mean AC", metrics["mean_accuracy"]),
            ("mean IoU", metrics["mean_iou"]),
        ])
        return add_boundary_columns(cols, metrics)

    detail_title = "IoU"

    def detail(self, metrics: dict) -> "OrderedDict[str, float]":
        """Per-class IoU, class name -> value."""
        names = metrics.get("class_names") or self.names()
        return OrderedDict((n, v) for n, v in zip(names, metrics["per_class_iou"]))

    # --- internals -------------------------------------------------------------------------
    def _check_scores(self, logits) -> None:
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
        if logits.dim() not in (3, 4):
            raise ValueError(f"logits must be (B, K, H, W) or (K, H, W), got {tuple(logits.shape)}")
        k = logits.shape[-3]
        if self.num_classes is None:
            self.num_classes = int(k)
            self.cm = ConfusionMatrix(self.num_classes, self.ignore_index)
        elif k != self.num_classes:
            raise ValueError(f"protocol {self.name!r}: logits have {k} classes, expected {self.num_classes}")


class VOCProtocol(Protocol):
    """PASCAL VOC (Sec. 5): refined classes restricted to those present in the coarse input."""

    name = "voc"
    restricts = True


class HelenProtocol(Protocol):
    """HELEN face parsing (Table 1): F-measure per component group and overall."""

    name = "helen"
    detail_title = "F-measure"

    def __init__(self, num_classes: int | None = None, class_names=None, ignore_index: int = 255,
                 restrict: bool | None = None, boundary: bool = False):
        if num_classes is None and class_names is None:
            num_classes, class_names = len(HELEN_CLASS_NAMES), list(HELEN_CLASS_NAMES)
        super().__init__(num_classes, class_names, ignore_index, restrict, boundary)
        self.groups = helen_groups()
        need = max(max(ids) for ids in self.groups.values()) + 1
        if self.num_classes is not None and self.num_classes < need:
            raise ValueError(f"protocol 'helen' needs the {len(HELEN_CLASS_NAMES)} HELEN labels "
                             f"({', '.join(HELEN_CLASS_NAMES)}); got {self.num_classes} classes")

    def compute(self) -> dict:
        m = super().compute()
        scores = group_scores(self.cm.mat, self.groups)
        m["f_measure"] = {name: scores[name]["f1"] for name in self.groups}
        m["group_iou"] = {name: scores[name]["iou"] for name in self.groups}
        m["helen_groups"] = helen_groups()
        return m

    def headline(self, metrics: dict) -> "OrderedDict[str, float]":
        """Table 1 columns: skin, brows, eyes, nose, mouth, U-lip, L-lip, in-mouth, overall."""
        fm = metrics["f_measure"]
        return add_boundary_columns(OrderedDict((title, fm.get(key)) for key, title in _HELEN_COLUMNS), metrics)

    def detail(self, metrics: dict) -> "OrderedDict[str, float]":
        """Per-class F-measure, class name -> value."""
        names = metrics.get("class_names") or self.names()
        return OrderedDict((n, v) for n, v in zip(names, metrics["per_class_f1"]))


PROTOCOLS = {"plain": Protocol, "voc": VOCProtocol, "helen": HelenProtocol}


def list_protocols() -> list[str]:
    return list(PROTOCOLS)


def get_protocol(name: str, num_classes: int | None = None, class_names=None, ignore_index: int = 255,
                 restrict: bool | None = None, boundary: bool = False) -> Protocol:
    """A fresh protocol object by name ("plain", "voc", "helen"); see the module docstring.

    ``restrict`` (None: the protocol's default, True only for "voc") restricts the refined scores
    to the classes of the coarse input. ``boundary`` adds the boundary metrics of
    :mod:`spn.metrics.boundary` (boundary IoU, trimap accuracy, mBA) to ``compute`` and
    ``headline``. A protocol object is returned as it is (``restrict=True``
    then needs one that restricts).
    """
    if isinstance(name, Protocol):
        if restrict and not name.restrict:
            raise ValueError(f"protocol object {name.name!r} does not restrict to the coarse classes; "
                             f"build it with restrict=True")
        return name
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; valid protocols are {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name](num_classes=num_classes, class_names=class_names, ignore_index=ignore_index,
                           restrict=restrict, boundary=boundary)
