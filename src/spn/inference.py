"""Full-image inference: the one path from a model and an image (and its coarse map) to class
scores, shared by ``spn eval``, ``spn refine``, ``spn compare``, the demo and the Python API.

- :func:`predict_logits` / :func:`predict`: no gradients, eval mode (restored afterwards), any
  ``H, W`` (when a model declares ``size_multiple``, the inputs are padded by edge replication
  up to that multiple and the output is cropped back); ``predict(restrict=True)`` keeps only the
  classes of ``argmax(coarse)`` (:func:`spn.metrics.restrict_to_coarse_classes`).
- :func:`model_needs_coarse`: whether a model refines a coarse map (SPNs) or segments from the
  image alone (the baseline).

Models follow the contract of :mod:`spn.models`: ``forward(image (B, 3, H, W), coarse
(B, K, H, W) or None) -> logits (B, K, H, W)``.

Shape:
    - image: ``(3, H, W)`` or ``(B, 3, H, W)`` float in [0, 1]
    - coarse: ``(K, H, W)`` or ``(B, K, H, W)`` class probabilities, or None
    - output: ``(K, H, W)`` or ``(B, K, H, W)`` (logits, or probabilities for :func:`predict`)

Example:
    >>> import torch
    >>> from spn.inference import predict
    >>> from spn.models import create_model
    >>> model = create_model("spn_one_way", num_classes=3, channels=4, guidance_width=4)
    >>> coarse = torch.softmax(torch.randn(3, 30, 50), 0)
    >>> probs = predict(model, torch.rand(3, 30, 50), coarse)
    >>> probs.shape, bool(torch.allclose(probs.sum(0), torch.ones(30, 50)))
    (torch.Size([3, 30, 50]), True)
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from spn.metrics import restrict_to_coarse_classes

__all__ = ["model_needs_coarse", "predict", "predict_logits", "size_multiple"]

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

    Shape:
        - image: ``(3, H, W)`` or ``(B, 3, H, W)``
        - coarse: ``(K, H, W)`` or ``(B, K, H, W)``, or None
        - output: ``(K, H, W)`` or ``(B, K, H, W)``, float32

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
    """Class probabilities (softmax of :func:`predict_logits` over the class axis).

    With ``restrict=True`` the classes absent from ``argmax(coarse)`` get probability 0.

    Shape:
        - image: ``(3, H, W)`` or ``(B, 3, H, W)``
        - coarse: ``(K, H, W)`` or ``(B, K, H, W)``, or None (a model that needs no coarse map)
        - output: ``(K, H, W)`` or ``(B, K, H, W)``, summing to one over ``K``

    Example:
        >>> import torch
        >>> from spn.inference import predict
        >>> from spn.models import create_model
        >>> model = create_model("baseline", num_classes=4, width=4, depth=1)
        >>> predict(model, torch.rand(2, 3, 24, 40)).shape
        torch.Size([2, 4, 24, 40])
    """
    logits = predict_logits(model, image, coarse, multiple=multiple)
    if restrict:
        if coarse is None:
            raise ValueError("restrict=True needs the coarse map")
        logits = restrict_to_coarse_classes(logits, coarse.to(logits.device).float())
    return torch.softmax(logits, dim=-3)
