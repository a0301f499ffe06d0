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
  or ``None``). "plain" and "helen" return the scores unchanged. "voc" restricts the refined
  result to the classes present in the coarse input (``argmax`` of ``coarse``, per image), as
  the paper does at test time on PASCAL VOC: the scores of absent classes become ``-inf``.
- ``accumulate`` adds integer label maps to a confusion matrix (``spn.engine.metrics``).
- ``compute`` returns the :class:`~spn.engine.metrics.ConfusionMatrix` metrics
  (``pixel_accuracy`` = "overall AC", ``mean_accuracy`` = "mean AC", ``mean_iou``,
  ``per_class_iou``, ``per_class_accuracy``, ``per_class_f1``, ``pixels``), plus ``protocol``
  and ``class_names``; "helen" adds ``f_measure`` (group name -> F) with the groups of Table 1
  (skin, brows, eyes, nose, mouth, upper lip, lower lip, inner mouth) and ``overall``.
- ``headline(metrics)`` gives the Table 3 columns (an ordered dict title -> value): overall AC,
  mean AC, mean IoU. ``detail(metrics)`` gives the detail columns of the protocol's table
  (``detail_title`` names them): the IoU per class for "plain" and "voc", the Table 1 F-measures
  (skin ... in-mouth, overall) for "helen".

``num_classes`` may be left out: it is then taken from ``class_names`` or, failing that, from
the class dimension of the first ``prepare`` call.

HELEN F-measures. A group (e.g. "eyes" = left eye + right eye) is scored on the binary maps
"pixel in group" of prediction and ground truth: ``F = 2 TP / (|pred| + |gt|)`` with the counts
accumulated over the whole dataset (pixels with ground truth 255 are ignored). "overall" is the
F-measure over the grouped facial components brows, eyes, nose and mouth (Smith et al. 2013,
Liu et al. 2015): the TP, |pred| and |gt| counts of those four groups are summed before taking
the ratio (so an eye pixel labelled as brow counts as an error, a left-eye pixel labelled as
right eye does not). Skin, hair and background are not in "overall".
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

from .metrics import ConfusionMatrix

# The 11 HELEN labels (Smith et al. 2013) in the order of the label files lbl00..lbl10.
HELEN_CLASS_NAMES = [
    "background", "skin", "left_brow", "right_brow", "left_eye", "right_eye",
    "nose", "upper_lip", "inner_mouth", "lower_lip", "hair",
]

# Table 1 groups (label ids above). Used when spn.data.helen does not provide HELEN_GROUPS.
_LOCAL_HELEN_GROUPS = {
    "skin": [1],
    "brows": [2, 3],
    "eyes": [4, 5],
    "nose": [6],
    "mouth": [7, 8, 9],
    "upper_lip": [7],
    "lower_lip": [9],
    "inner_mouth": [8],
}
# the groups summed into the "overall" F-measure
HELEN_OVERALL_GROUPS = ("brows", "eyes", "nose", "mouth")
# Table 1 column order and titles
_HELEN_COLUMNS = [
    ("skin", "skin"), ("brows", "brows"), ("eyes", "eyes"), ("nose", "nose"), ("mouth", "mouth"),
    ("upper_lip", "U-lip"), ("lower_lip", "L-lip"), ("inner_mouth", "in-mouth"), ("overall", "overall"),
]


def helen_groups() -> dict[str, list[int]]:
    """The Table 1 groups: ``spn.data.helen.HELEN_GROUPS`` when available, else the local copy.

    Only the component groups are taken ("overall" is computed from
    :data:`HELEN_OVERALL_GROUPS`, whatever the data module calls it).
    """
    groups = dict(_LOCAL_HELEN_GROUPS)
    try:
        from spn.data.helen import HELEN_GROUPS as data_groups  # helper B's definition
    except ImportError:
        return groups
    for name, ids in data_groups.items():
        key = name.lower().replace("-", "_").replace(" ", "_")
        key = {"u_lip": "upper_lip", "l_lip": "lower_lip", "in_mouth": "inner_mouth",
               "eyebrows": "brows", "face_skin": "skin"}.get(key, key)
        if key in groups:
            groups[key] = sorted(int(i) for i in ids)
    return groups


def restrict_to_coarse_classes(logits: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """Set the scores of classes absent from ``argmax(coarse)`` to ``-inf`` (per image).

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


class Protocol:
    """Plain protocol: scores as they are, confusion-matrix metrics (Table 3 columns)."""

    name = "plain"

    def __init__(self, num_classes: int | None = None, class_names=None, ignore_index: int = 255):
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

    # --- interface -------------------------------------------------------------------------
    def prepare(self, logits: torch.Tensor, coarse: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``(B, K, H, W)`` or ``(K, H, W)`` -> scores to take the argmax of."""
        self._check_scores(logits)
        return logits

    def accumulate(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add integer label maps ``pred`` and ``target`` of one shape (255 = ignore in target)."""
        if self.cm is None:
            raise ValueError(f"protocol {self.name!r}: num_classes unknown; pass num_classes or call prepare first")
        if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError("pred and target must be torch.Tensors")
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError(f"pred and target must be integer label maps, got {pred.dtype} and {target.dtype}")
        self.cm.update(target, pred)

    def compute(self) -> dict:
        if self.cm is None:
            raise ValueError(f"protocol {self.name!r}: nothing accumulated")
        m = self.cm.compute()
        m["protocol"] = self.name
        m["class_names"] = self.names()
        return m

    def reset(self) -> None:
        if self.num_classes:
            self.cm = ConfusionMatrix(self.num_classes, self.ignore_index)

    # --- table helpers ---------------------------------------------------------------------
    def names(self) -> list[str]:
        if self.class_names is not None:
            return list(self.class_names)
        return [f"class_{i}" for i in range(self.num_classes or 0)]

    def headline(self, metrics: dict) -> "OrderedDict[str, float]":
        return OrderedDict([
            ("overall AC", metrics["pixel_accuracy"]),
            ("mean AC", metrics["mean_accuracy"]),
            ("mean IoU", metrics["mean_iou"]),
        ])

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

    def prepare(self, logits: torch.Tensor, coarse: torch.Tensor | None = None) -> torch.Tensor:
        self._check_scores(logits)
        if coarse is None:
            raise ValueError("protocol 'voc' needs the coarse input (the refined classes are restricted "
                             "to those present in it); the dataset gives no 'coarse' map")
        return restrict_to_coarse_classes(logits, coarse.to(logits.device))


class HelenProtocol(Protocol):
    """HELEN face parsing (Table 1): F-measure per component group and overall."""

    name = "helen"
    detail_title = "F-measure"

    def __init__(self, num_classes: int | None = None, class_names=None, ignore_index: int = 255):
        if num_classes is None and class_names is None:
            num_classes, class_names = len(HELEN_CLASS_NAMES), list(HELEN_CLASS_NAMES)
        super().__init__(num_classes, class_names, ignore_index)
        self.groups = helen_groups()
        need = max(max(ids) for ids in self.groups.values()) + 1
        if self.num_classes is not None and self.num_classes < need:
            raise ValueError(f"protocol 'helen' needs the {len(HELEN_CLASS_NAMES)} HELEN labels "
                             f"({', '.join(HELEN_CLASS_NAMES)}); got {self.num_classes} classes")

    def compute(self) -> dict:
        m = super().compute()
        mat = self.cm.mat.double()
        counts = {}
        f = OrderedDict()
        for name, ids in self.groups.items():
            idx = torch.tensor(ids, dtype=torch.long)
            tp = float(mat[idx][:, idx].sum())
            gt = float(mat[idx].sum())
            pr = float(mat[:, idx].sum())
            counts[name] = (tp, gt, pr)
            f[name] = 2 * tp / (gt + pr) if gt + pr > 0 else math.nan
        tp = sum(counts[g][0] for g in HELEN_OVERALL_GROUPS)
        den = sum(counts[g][1] + counts[g][2] for g in HELEN_OVERALL_GROUPS)
        f["overall"] = 2 * tp / den if den > 0 else math.nan
        m["f_measure"] = dict(f)
        m["helen_groups"] = {k: list(v) for k, v in self.groups.items()}
        m["helen_overall_groups"] = list(HELEN_OVERALL_GROUPS)
        return m

    def detail(self, metrics: dict) -> "OrderedDict[str, float]":
        """Table 1 columns: skin, brows, eyes, nose, mouth, U-lip, L-lip, in-mouth, overall."""
        fm = metrics["f_measure"]
        return OrderedDict((title, fm.get(key)) for key, title in _HELEN_COLUMNS)


PROTOCOLS = {"plain": Protocol, "voc": VOCProtocol, "helen": HelenProtocol}


def list_protocols() -> list[str]:
    return list(PROTOCOLS)


def get_protocol(name: str, num_classes: int | None = None, class_names=None, ignore_index: int = 255) -> Protocol:
    """A fresh protocol object by name ("plain", "voc", "helen"); see the module docstring."""
    if isinstance(name, Protocol):
        return name
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; valid protocols are {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name](num_classes=num_classes, class_names=class_names, ignore_index=ignore_index)
