"""Full-image inference and evaluation of a segmentation / refinement model.

- :func:`predict` ``(model, image (3, H, W), coarse (K, H, W) or None) -> probs (K, H, W)``:
  no gradients, eval mode, any ``H, W`` (when a model declares ``size_multiple``, the inputs are
  padded by edge replication up to that multiple and the output is cropped back).
- :func:`evaluate` ``(model, dataset, ...) -> dict``: confusion-matrix metrics of the coarse
  input (``argmax`` of the item's ``"coarse"``) and of the model output side by side, plus the
  seconds per image of the model call (median and mean).
- :func:`restrict_to_coarse_classes` masks the scores of the classes absent from ``argmax(coarse)``
  to ``-inf`` (the PASCAL VOC protocol of the paper, Sec. 5).

Models follow the contract of :mod:`spn.models`: ``forward(image (B, 3, H, W), coarse
(B, K, H, W) or None) -> logits (B, K, H, W)``.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from spn.utils.timer import Stopwatch

from spn.metrics import get_protocol, restrict_to_coarse_classes

DEFAULT_MULTIPLE = 1  # the models of spn.models pad internally; a model may ask for more


def model_needs_coarse(model) -> bool:
    """Whether ``model`` refines a coarse map (SPNs) or segments from the image alone (baseline)."""
    flag = getattr(model, "needs_coarse", None)
    if flag is None:
        flag = getattr(model, "uses_coarse", None)
    if flag is not None:
        return bool(flag)
    return str(getattr(model, "name", "")) != "baseline"


def size_multiple(model) -> int:
    """The multiple ``H`` and ``W`` are padded to: ``model.size_multiple`` when the model says, else 1
    (the models of :mod:`spn.models` accept any size)."""
    m = getattr(model, "size_multiple", None)
    if m is None:
        m = getattr(model, "stride", None)
    m = DEFAULT_MULTIPLE if m is None else int(m)
    if m < 1:
        raise ValueError(f"size multiple must be >= 1, got {m}")
    return m


@contextmanager
def _eval_mode(model):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def _pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    H, W = x.shape[-2:]
    ph = (-H) % multiple
    pw = (-W) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (H, W)


@torch.no_grad()
def predict_logits(model, image: torch.Tensor, coarse: torch.Tensor | None = None, *,
                   multiple: int | None = None) -> torch.Tensor:
    """Model logits for full images.

    Args:
        model: ``forward(image (B, 3, H, W), coarse (B, K, H, W) or None) -> (B, K, H, W)``.
        image: ``(3, H, W)`` or ``(B, 3, H, W)`` float in [0, 1].
        coarse: ``(K, H, W)`` / ``(B, K, H, W)`` class probabilities, or None (baseline models).
        multiple: pad ``H, W`` up to a multiple of this (default :func:`size_multiple`).
    Returns:
        logits ``(K, H, W)`` (or ``(B, K, H, W)``) on the device of the input, float32.
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    squeeze = image.dim() == 3
    img = image[None] if squeeze else image
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"image must be (3, H, W) or (B, 3, H, W), got {tuple(image.shape)}")
    co = None
    if coarse is not None:
        if not isinstance(coarse, torch.Tensor):
            raise TypeError(f"coarse must be a torch.Tensor, got {type(coarse).__name__}")
        co = coarse[None] if coarse.dim() == 3 else coarse
        if co.dim() != 4 or co.shape[0] != img.shape[0] or co.shape[-2:] != img.shape[-2:]:
            raise ValueError(f"coarse {tuple(coarse.shape)} does not match image {tuple(image.shape)}: "
                             f"expected (K, H, W) with H, W = {tuple(img.shape[-2:])}")
    elif model_needs_coarse(model):
        raise ValueError(f"model {getattr(model, 'name', type(model).__name__)!r} refines a coarse "
                         f"segmentation: give the coarse map (K, H, W)")
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except (StopIteration, AttributeError):
        device, dtype = img.device, torch.float32
    m = size_multiple(model) if multiple is None else int(multiple)
    x, (H, W) = _pad_to(img.to(device=device, dtype=dtype), m)
    if co is not None:
        co, _ = _pad_to(co.to(device=device, dtype=dtype), m)
    with _eval_mode(model) if hasattr(model, "eval") else _null():
        out = model(x, co)
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != x.shape[0] \
            or out.shape[-2:] != x.shape[-2:]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RuntimeError(f"model returned {got}, expected logits (B, K, {x.shape[-2]}, {x.shape[-1]})")
    out = out[..., :H, :W].float().to(image.device)
    return out[0] if squeeze else out


@contextmanager
def _null():
    yield


def predict(model, image: torch.Tensor, coarse: torch.Tensor | None = None, *,
            multiple: int | None = None, restrict: bool = False) -> torch.Tensor:
    """Class probabilities ``(K, H, W)`` (softmax of :func:`predict_logits`).

    With ``restrict=True`` the classes absent from ``argmax(coarse)`` get probability 0.
    """
    logits = predict_logits(model, image, coarse, multiple=multiple)
    if restrict:
        if coarse is None:
            raise ValueError("restrict=True needs the coarse map")
        logits = restrict_to_coarse_classes(logits, coarse.to(logits.device).float())
    return torch.softmax(logits, dim=-3)


def evaluate(model, dataset, *, limit: int | None = None, restrict_to_present: bool = False,
             protocol="plain", multiple: int | None = None, progress: bool = False,
             warmup: int = 1) -> dict:
    """Evaluate ``model`` on every item of ``dataset`` (or the first ``limit``).

    Args:
        model: a model of :mod:`spn.models` (or any module with that forward).
        dataset: items ``{"image" (3, H, W), "mask" (H, W), ["coarse" (K, H, W)], "name"}``;
            ``num_classes``, ``class_names`` and ``ignore_index`` are read from it when present.
        protocol: a name of :mod:`spn.metrics.protocols` ("plain", "voc", "helen") or a protocol object.
        restrict_to_present: score the refined output with the protocol's ``restrict=True`` (what
            "voc" does): the classes absent from ``argmax(coarse)`` are left out.
        warmup: untimed model calls on the first item before timing (first-call overheads).
    Returns:
        ``{"coarse": metrics or None, "refined": metrics, "seconds_per_image": {"median", "mean",
        "n"}, "num_images", "num_classes", "class_names", "protocol", "restrict_to_present"}``
        where metrics is :meth:`ConfusionMatrix.compute` (+ the protocol's extra keys).
    """
    n = len(dataset)
    if limit is not None:
        if int(limit) < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        n = min(n, int(limit))
    if n == 0:
        raise ValueError("the dataset is empty")
    num_classes = getattr(dataset, "num_classes", None)
    class_names = getattr(dataset, "class_names", None)
    ignore = int(getattr(dataset, "ignore_index", 255))
    pname = protocol if isinstance(protocol, str) else getattr(protocol, "name", None)
    if not isinstance(pname, str):
        raise TypeError(f"protocol must be a name or a protocol object, got {type(protocol).__name__}")
    # the refined output is scored by the protocol, restricted to the coarse classes when it says so
    # or when asked to (restrict_to_present); the coarse input by the plain protocol of that name
    proto_ref = get_protocol(protocol, num_classes=num_classes, class_names=class_names, ignore_index=ignore,
                             restrict=True if restrict_to_present else None)
    proto_coarse = get_protocol(pname, num_classes=num_classes, class_names=class_names, ignore_index=ignore)
    has_coarse = False
    watch = Stopwatch()
    it = range(n)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="eval", unit="img")
    for i in it:
        item = dataset[i]
        image, mask = item["image"], item["mask"]
        coarse = item.get("coarse")
        if coarse is not None:
            has_coarse = True
            if num_classes is not None and coarse.shape[0] != num_classes:
                raise ValueError(f"item {item.get('name', i)!r}: coarse has {coarse.shape[0]} classes, "
                                 f"the dataset {num_classes}")
        elif restrict_to_present:
            raise ValueError(f"restrict_to_present needs coarse maps; item {item.get('name', i)!r} has none")
        if i == 0:
            for _ in range(max(0, int(warmup))):
                predict_logits(model, image, coarse, multiple=multiple)
        with watch.time():
            logits = predict_logits(model, image, coarse, multiple=multiple)
        if num_classes is not None and logits.shape[0] != num_classes:
            raise ValueError(f"the model predicts {logits.shape[0]} classes, the dataset has {num_classes}")
        co = coarse.float() if coarse is not None else None
        logits = proto_ref.prepare(logits, co)
        proto_ref.accumulate(logits.argmax(0), mask)
        if co is not None:
            proto_coarse.accumulate(proto_coarse.prepare(co, co).argmax(0), mask)
    refined = proto_ref.compute()
    return {
        "num_images": n,
        "num_classes": proto_ref.num_classes,
        "class_names": refined.get("class_names"),
        "protocol": pname,
        "restrict_to_present": bool(restrict_to_present),
        "coarse": proto_coarse.compute() if has_coarse else None,
        "refined": refined,
        "seconds_per_image": watch.summary(),
    }


def summary_line(metrics: dict | None) -> str:
    """"pixel acc 91.22  mean acc 77.61  mIoU 65.51" from a metrics dict."""
    if not metrics:
        return "-"

    def p(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"
    return (f"overall AC {p(metrics.get('pixel_accuracy'))}  mean AC {p(metrics.get('mean_accuracy'))}  "
            f"mIoU {p(metrics.get('mean_iou'))}")
