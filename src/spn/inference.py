"""Full-image inference: the one path from a model and an image (and its coarse map) to class
scores, shared by ``spn eval``, ``spn refine``, ``spn compare``, the demo and the Python API.

- :class:`Refiner`: the Python API for your own arrays. ``Refiner.from_checkpoint(run)``, then
  ``.refine(image, coarse, kind=...)`` -> labels ``(H, W)`` and ``.refine_proba(...)`` ->
  probabilities ``(K, H, W)``, for numpy arrays, tensors or PIL images of any size, one or a
  list. A coarse map may be smaller than its image (a segmenter's 1/8 output): it is converted
  and upsampled by :func:`spn.data.prepare_coarse`, the function the coarse-file reader of every
  dataset and of ``spn refine`` uses. ``spn refine`` and ``spn eval`` run through it.
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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spn.data.coarse import CoarseKind, parse_coarse_kind, prepare_coarse
from spn.image.io import image_from_pil, mask_from_pil
from spn.metrics import restrict_to_coarse_classes

__all__ = ["Refiner", "model_needs_coarse", "predict", "predict_logits", "size_multiple"]

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


# ----------------------------------------------------------------------------------------------
# the Python API for users' own arrays

def _is_pil(x) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(x, Image.Image)


def as_image_tensor(image, where: str = "image") -> torch.Tensor:
    """A user's image as float32 ``(3, H, W)`` in [0, 1].

    Accepted: a PIL image (any mode; converted as files are read); a numpy array ``(H, W)``,
    ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped), uint8 (0..255), uint16 (0..65535) or float in
    [0, 1]; a torch tensor ``(3, H, W)`` (float in [0, 1], or uint8). Anything else is a
    TypeError/ValueError naming ``where`` and the problem."""
    if _is_pil(image):
        return image_from_pil(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            raise TypeError(f"{where}: a {str(t.dtype).replace('torch.', '')} tensor is not accepted; pass "
                            f"{where}.float() (float32 in [0, 1]) or a uint8 tensor")
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"{where}: a tensor image must be (3, H, W) (channel first), got {tuple(t.shape)}")
        arr = t.numpy()
        channel_first = True
    elif isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
            raise ValueError(f"{where}: a numpy image must be (H, W), (H, W, 3) or (H, W, 4) (channel last), "
                             f"got {tuple(image.shape)}")
        channel_first = False
    else:
        raise TypeError(f"{where}: expected a numpy array, a torch tensor or a PIL image, got {type(image).__name__}")
    if arr.dtype == np.uint8:
        a = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        a = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        a = arr.astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"{where} holds NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"{where}: float images must lie in [0, 1], got values {lo:.4g}..{hi:.4g} "
                             "(divide 0..255 data by 255, or pass it as uint8)")
    else:
        raise TypeError(f"{where}: unsupported dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")
    if not channel_first:
        a = a[:, :, :3] if a.shape[-1] >= 3 else np.repeat(a, 3, axis=-1)
        a = a.transpose(2, 0, 1)
    if a.shape[-1] < 1 or a.shape[-2] < 1:
        raise ValueError(f"{where} is empty ({a.shape[-2]} x {a.shape[-1]})")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


class Refiner:
    """A trained model applied to your own images and coarse maps.

    Build it with :meth:`from_checkpoint` (a run directory of ``spn train``) or around a model of
    :mod:`spn.models`. :meth:`refine` returns labels, :meth:`refine_proba` class probabilities.
    Both take one image (and its coarse map) or lists of them:

    - image: a numpy array ``(H, W, 3)`` (uint8, or float in [0, 1]), a PIL image, or a tensor
      ``(3, H, W)`` in [0, 1] (:func:`as_image_tensor`); any size;
    - coarse: what a segmenter gave for it, at the image's resolution or lower (a 1/8 output is
      upsampled bilinearly, as every coarse file is): ``kind="probs"`` ``(K, h, w)``
      probabilities, ``"logits"`` ``(K, h, w)`` scores, ``"labels"`` ``(h, w)`` class ids (a PIL
      label image is labels); ``"probs:255"`` declares uint8 probabilities. ``kind=None`` means
      probs for arrays and labels for PIL images. None for a baseline checkpoint.

    The coarse map is converted by :func:`spn.data.prepare_coarse` (the reader of coarse files
    uses it too): wrong shapes, dtypes, class counts, probabilities that do not sum to one or an
    aspect ratio other than the image's are errors that say what is wrong. Images of one size are
    run ``batch_size`` at a time.

    Shape:
        - image: ``(H, W, 3)`` array, PIL image, or ``(3, H, W)`` tensor
        - coarse: ``(K, h, w)`` (probs, logits) or ``(h, w)`` (labels)
        - refine: ``(H, W)`` int64 labels; refine_proba: ``(K, H, W)`` float32 (numpy arrays)

    Example:
        >>> import numpy as np
        >>> from spn.inference import Refiner
        >>> from spn.models import create_model
        >>> refiner = Refiner(create_model("spn_three_way", num_classes=3, channels=4, guidance_width=4))
        >>> image = np.zeros((40, 64, 3), dtype=np.uint8)
        >>> coarse = np.full((3, 5, 8), 0.2, dtype=np.float32); coarse[1] = 0.6   # a 1/8 map
        >>> refiner.refine(image, coarse).shape, refiner.refine_proba(image, coarse).shape
        ((40, 64), (3, 40, 64))
        >>> [p.shape for p in refiner.refine([image, image[:20]], [coarse, coarse[:, :3]])]
        [(40, 64), (20, 64)]
    """

    def __init__(self, model: torch.nn.Module, *, num_classes: int | None = None, class_names=None,
                 batch_size: int = 8, source: str | None = None):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"Refiner needs a torch.nn.Module (or use Refiner.from_checkpoint), got {type(model).__name__}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model  # each call runs it in eval mode (and restores its mode)
        k = num_classes if num_classes is not None else getattr(model, "num_classes", None)
        self.num_classes = int(k) if k is not None else None
        self.class_names = list(class_names) if class_names else (
            [f"class_{i}" for i in range(self.num_classes)] if self.num_classes else None)
        self.batch_size = int(batch_size)
        self.source = source or f"model {getattr(model, 'name', type(model).__name__)!r}"
        self.info: dict = {}

    @staticmethod
    def pretrained(**kw):
        """The class-agnostic mask refiner shipped in the package: a
        :class:`spn.inference_mask.MaskRefiner` (``.refine(image, mask) -> bool (H, W)``,
        ``.refine_proba``, ``.refine_labels``), not a :class:`Refiner`: it refines one object's
        mask (or a label map, one object against the rest) on any photo, with no training run.
        ``kw``: its ``global_size``, ``band``, ``tile`` and ``margin``. The same as
        ``spn.MaskRefiner.pretrained()``; ``spn.refine(image, mask)`` calls it."""
        import spn

        return spn.MaskRefiner.pretrained(**kw)

    @classmethod
    def from_checkpoint(cls, run, device="cpu", batch_size: int = 8) -> "Refiner":
        """The model of a run directory (its newest complete checkpoint) on ``device``."""
        from spn.models.checkpoint import checkpoint_classes, load_checkpoint

        model, info = load_checkpoint(run, map_location=device)
        k, names = checkpoint_classes(info, model)
        r = cls(model, num_classes=k, class_names=names, batch_size=batch_size, source=f"checkpoint {run}")
        r.info = info
        return r

    def __repr__(self) -> str:
        return f"Refiner({self.source}, {self.num_classes} classes)"

    @property
    def name(self) -> str:
        return str(getattr(self.model, "name", type(self.model).__name__))

    @property
    def needs_coarse(self) -> bool:
        return model_needs_coarse(self.model)

    # -- the one forward path ------------------------------------------------------------
    def predict_logits(self, image: torch.Tensor, coarse: torch.Tensor | None = None, *,
                       multiple: int | None = None) -> torch.Tensor:
        """Logits of prepared tensors (:func:`predict_logits`): image ``(3, H, W)`` / ``(B, 3, H, W)``,
        coarse probabilities at the image's size or None."""
        return predict_logits(self.model, image, coarse, multiple=multiple)

    def predict(self, image: torch.Tensor, coarse: torch.Tensor | None = None, *,
                restrict_to_present: bool = False) -> torch.Tensor:
        """Probabilities of prepared tensors (:func:`predict`), e.g. from :meth:`prepare`."""
        return predict(self.model, image, coarse, restrict=restrict_to_present)

    def prepare(self, image, coarse=None, kind=None, *, where: str = "coarse map") -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(image (3, H, W), coarse probabilities (K, H, W) or None)`` of one user input."""
        img = as_image_tensor(image)
        if coarse is None:
            if self.needs_coarse:
                raise ValueError(f"{self.source} refines a coarse segmentation: give the coarse map "
                                 "((K, h, w) probs or logits, or (h, w) labels)")
            return img, None
        if self.num_classes is None:
            raise ValueError(f"{self.source} does not record its number of classes")
        if _is_pil(coarse):
            k = parse_coarse_kind(kind, "kind") if kind is not None else CoarseKind("labels", None, "a PIL image")
            if k.kind != "labels":
                raise ValueError(f"{where}: a PIL image holds class ids (kind='labels'), not {k.kind}")
            coarse = mask_from_pil(coarse, where)
        else:
            k = parse_coarse_kind(kind, "kind") if kind is not None else CoarseKind("probs", None, "the default")
        probs = prepare_coarse(coarse, k, self.num_classes, tuple(img.shape[-2:]), where=where, owner=self.source)
        return img, probs

    def _run(self, pairs: list, restrict: bool) -> list[torch.Tensor]:
        """Probabilities of prepared ``(image, coarse)`` pairs; images of one size are batched."""
        out: list = [None] * len(pairs)
        groups: dict = {}
        for i, (img, co) in enumerate(pairs):
            groups.setdefault((tuple(img.shape[-2:]), co is None), []).append(i)
        for idx in groups.values():
            for j in range(0, len(idx), self.batch_size):
                chunk = idx[j:j + self.batch_size]
                img = torch.stack([pairs[i][0] for i in chunk])
                co = None if pairs[chunk[0]][1] is None else torch.stack([pairs[i][1] for i in chunk])
                probs = self.predict(img, co, restrict_to_present=restrict)
                for n, i in enumerate(chunk):
                    out[i] = probs[n].cpu()
        return out

    def _inputs(self, image, coarse, kind) -> tuple[list, bool]:
        single = not isinstance(image, (list, tuple))
        images = [image] if single else list(image)
        if coarse is None:
            coarses = [None] * len(images)
        elif single:
            coarses = [coarse]
        else:
            if not isinstance(coarse, (list, tuple)) or len(coarse) != len(images):
                got = len(coarse) if isinstance(coarse, (list, tuple)) else type(coarse).__name__
                raise ValueError(f"give one coarse map per image: {len(images)} images, coarse: {got}")
            coarses = list(coarse)
        pairs = [self.prepare(im, co, kind, where="coarse map" if single else f"coarse map {i}")
                 for i, (im, co) in enumerate(zip(images, coarses))]
        return pairs, single

    def refine_proba(self, image, coarse=None, kind=None, *, restrict_to_present: bool = False):
        """Class probabilities ``(K, H, W)`` float32 (numpy) of one image, or a list for a list.
        ``restrict_to_present``: only the classes present in ``argmax(coarse)`` (the VOC protocol)."""
        pairs, single = self._inputs(image, coarse, kind)
        if restrict_to_present and any(co is None for _, co in pairs):
            raise ValueError("restrict_to_present needs the coarse maps")
        probs = [p.numpy() for p in self._run(pairs, restrict_to_present)]
        return probs[0] if single else probs

    def refine(self, image, coarse=None, kind=None, *, restrict_to_present: bool = False):
        """Refined labels ``(H, W)`` int64 (numpy) of one image, or a list for a list."""
        probs = self.refine_proba(image, coarse, kind, restrict_to_present=restrict_to_present)
        if isinstance(probs, list):
            return [p.argmax(0).astype(np.int64) for p in probs]
        return probs.argmax(0).astype(np.int64)
