"""The class-agnostic mask refiner applied to photos: ``MaskRefiner.pretrained().refine(image,
mask) -> mask`` at any size, in bounded memory, with the weights shipped in the package.

How a photo of ``H x W`` pixels is refined:

0. **object-centred crop** (``crop=True``, the default; CascadePSP's practice), once the mask
   is at the image's size (step 1): the photo and the mask are cut to the mask's bounding box
   (pixels >= 0.5) grown by ``context`` (0.5) times its longer side on each side (at least
   ``min_context`` = 16 pixels), resized so that the crop's longer side is ``crop_size`` (320;
   up or down), refined in one pass, resized back and pasted; outside the crop the result is
   the coarse mask (:func:`crop_box`, :func:`refine_crop`). A small object in a large photo is
   then seen at the scale the network was trained on (192-pixel composites whose object fills a
   good part of the frame). When the crop is the whole photo, steps 2-3 (the whole-photo path,
   CascadePSP's global-then-local scheme) run instead;
1. the mask (any resolution of the image's aspect ratio: binary 0/1 or 0/255, 8-bit soft, or a
   float probability map) is resized bilinearly to the image's size (:func:`as_mask_array`);
2. **global pass**: when the longest side exceeds ``global_size`` (512), the image and the
   mask are shrunk (antialiased bilinear) to that longest side and refined there; the result is
   upsampled bilinearly to full resolution. A smaller photo is refined in one pass at its own
   resolution. Memory: the photo, the mask and the result at full resolution, plus one
   512-pixel pass;
3. **local passes** (only with ``band``; off by default): the full-resolution image is cut into
   ``tile x tile`` tiles; a tile whose region of the global result holds the uncertain band
   (probability strictly between 0.2 and 0.8, or next to the 0.5 contour, grown by one
   low-resolution pixel) is refined at full resolution, with ``margin`` pixels of context on each
   side and the global result as its coarse mask, and its pixels within ``band`` low-resolution
   pixels of the global contour take that result; one tile is in memory at a time. With the
   shipped weights they did not pay: on held-out composites upscaled to 864 x 1152 and to
   2160 x 2880 the global pass alone scored higher IoU and boundary IoU (and, at 2160 x 2880,
   mBA) than with local passes, at a tenth of the time (``benchmarks/mask_refiner.py`` and the
   model card). The network was trained on 192-pixel crops holding whole objects; a tile that
   cuts an object is outside what it saw.

4. **snap** (``snap=True``): the refined probability, inside the crop (or the whole photo), is
   passed through the colour guided filter with the full-resolution photo as guide (radius
   ``snap_radius`` = 8 pixels, ``eps`` = ``snap_eps`` = 1e-3; :func:`spn.image.filters.guided_filter`,
   run in strips of bounded memory) and clamped to [0, 1]: the 0.5 level moves onto the photo's
   own edges at full resolution, which a pass at 320 pixels cannot place.

Several objects: :meth:`MaskRefiner.refine_labels` refines each label one-vs-rest and takes the
argmax (a running maximum: memory does not grow with the number of labels).

Example:
    >>> import numpy as np
    >>> from spn.inference_mask import MaskRefiner
    >>> from spn.models import create_model
    >>> r = MaskRefiner(create_model("mask_refiner", guidance_width=4))
    >>> image = np.zeros((40, 60, 3), dtype=np.uint8); image[10:30, 20:40] = 255
    >>> mask = np.zeros((10, 15), dtype=np.uint8); mask[3:7, 5:10] = 255   # a 1/4-size mask
    >>> out = r.refine(image, mask)
    >>> out.shape, out.dtype
    ((40, 60), dtype('bool'))
"""
from __future__ import annotations

import json
import math
import struct
import warnings
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spn.data.coarse import check_coverage
from spn.image.filters import guided_filter_strips
from spn.image.io import image_from_pil
from spn.models import create_model
from spn.models.mask_refiner import MaskRefinerNet

__all__ = ["LARGE_WEIGHTS_FILE", "MaskRefiner", "WEIGHTS_FILE", "as_mask_array", "as_photo_tensor", "crop_box",
           "load_weights", "refine", "refine_crop", "refine_tiled", "save_weights", "shipped_large_weights", "snap",
           "shipped_weights"]

#: the shipped weights, inside the package (``spn/weights/``)
WEIGHTS_FILE = "mask_refiner.safetensors"
#: the weights the shipped refiner uses for masks that cover most of the photo (``large_model``)
LARGE_WEIGHTS_FILE = "mask_refiner_large.safetensors"
#: the inference settings stored beside the weights (:func:`save_weights`) that loading applies
STORED_SETTINGS = ("global_size", "tile", "margin", "band", "crop_size", "context", "reach", "flip", "keep",
                   "confidence", "snap", "snap_radius", "snap_eps")
#: uncertain band of the global result: probabilities strictly inside (LOW, 1 - LOW)
BAND_LOW = 0.2


# ----------------------------------------------------------------------------------------------
# inputs
def as_photo_tensor(image, where: str = "image") -> torch.Tensor:
    """A photo as float32 ``(3, H, W)`` in [0, 1]: a PIL image, a numpy array ``(H, W, 3)`` /
    ``(H, W)`` (uint8, uint16, bool or float in [0, 1]) or a tensor ``(3, H, W)`` float in [0, 1]."""
    if isinstance(image, Image.Image):
        return image_from_pil(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        _refuse_half(t, where)
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"{where}: a tensor image must be (3, H, W), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{where}: a tensor image must be floating point in [0, 1], got {t.dtype}")
        a = t.float()
    elif isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ValueError(f"{where}: an array image must be (H, W, 3) or (H, W), got {tuple(image.shape)}")
        a = a[:, :, :3]
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        elif a.dtype == np.uint16:
            a = a.astype(np.float32) / 65535.0
        elif a.dtype == np.bool_:
            a = a.astype(np.float32)
        elif np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float32)
        else:
            raise TypeError(f"{where}: unsupported array dtype {a.dtype} (uint8, uint16, bool or float in [0, 1])")
        a = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
    else:
        raise TypeError(f"{where} must be a PIL image, a numpy array or a torch tensor, got {type(image).__name__}")
    if a.shape[-1] < 1 or a.shape[-2] < 1:
        raise ValueError(f"{where} is empty ({a.shape[-2]} x {a.shape[-1]})")
    if not torch.isfinite(a).all():
        raise ValueError(f"{where} holds NaN or infinite values")
    if float(a.min()) < 0 or float(a.max()) > 1:
        raise ValueError(f"{where}: float values must lie in [0, 1], got {float(a.min()):.4g}..{float(a.max()):.4g}")
    return a.contiguous()


def _refuse_half(t: torch.Tensor, where: str) -> None:
    """A bfloat16 / float16 tensor is refused, naming the argument (numpy has no bfloat16)."""
    if t.dtype in (torch.bfloat16, torch.float16):
        raise TypeError(f"{where}: a {str(t.dtype).replace('torch.', '')} tensor is not accepted; pass "
                        f"{where}.float() (float32 in [0, 1])")


def _mask_numpy(mask, where: str) -> np.ndarray:
    """A mask input as a float32 ``(h, w)`` array in [0, 1] (see :func:`as_mask_array`)."""
    if isinstance(mask, Image.Image):
        if mask.mode == "1":
            return np.asarray(mask, dtype=np.float32)
        if mask.mode != "L":
            raise ValueError(f"{where}: a PIL mask must be mode '1' or 'L' (8-bit), got mode {mask.mode!r}"
                             + (" (a palette image: pass its label map to refine_labels)" if mask.mode == "P" else "")
                             + (" (16-bit masks are not accepted)" if mask.mode.startswith("I") else ""))
        mask = np.asarray(mask)
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu()
        _refuse_half(mask, where)
        mask = mask.float().numpy() if mask.is_floating_point() else mask.numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"{where} must be a PIL image, a numpy array or a torch tensor, got {type(mask).__name__}")
    m = mask[0] if mask.ndim == 3 and mask.shape[0] == 1 else mask
    if m.ndim != 2:
        raise ValueError(f"{where} must be (h, w) or (1, h, w), got shape {tuple(mask.shape)}")
    if m.dtype == np.bool_:
        return m.astype(np.float32)
    if np.issubdtype(m.dtype, np.floating):
        m = m.astype(np.float32)
        if not np.isfinite(m).all():
            raise ValueError(f"{where} holds NaN or infinite values")
        if m.size and (m.min() < 0 or m.max() > 1):
            raise ValueError(f"{where}: a float mask is a probability in [0, 1], got {m.min():.4g}..{m.max():.4g}")
        return m
    if m.dtype == np.uint8 or (np.issubdtype(m.dtype, np.integer) and m.size and m.min() >= 0 and m.max() <= 255):
        m = m.astype(np.float32)
        return m if m.size and m.max() <= 1 else m / 255.0
    raise ValueError(f"{where}: integer masks must be 0/1, 0/255 or 8-bit soft (0..255); got dtype {m.dtype}"
                     + (f" with values {int(m.min())}..{int(m.max())}" if m.size else ""))


def as_mask_array(mask, size, where: str = "mask") -> torch.Tensor:
    """A mask as float32 ``(H, W)`` probabilities at the image's ``size = (H, W)``.

    Accepted: bool; integer 0/1, 0/255 or 8-bit soft (0..255 = probability); float in [0, 1]
    (NaN refused); PIL ``'1'`` / ``'L'`` (palette and 16-bit refused); any resolution with the
    image's aspect ratio (:func:`spn.data.coarse.check_coverage`), resized bilinearly.

    Example:
        >>> import numpy as np
        >>> from spn.inference_mask import as_mask_array
        >>> as_mask_array(np.array([[0, 255], [255, 0]], dtype=np.uint8), (4, 4))[0].tolist()
        [0.0, 0.25, 0.75, 1.0]
    """
    m = _mask_numpy(mask, where)
    check_coverage(where, m.shape, size)
    t = torch.from_numpy(np.ascontiguousarray(m))
    H, W = int(size[0]), int(size[1])
    if tuple(t.shape) != (H, W):
        t = F.interpolate(t[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)
    return t.contiguous()


# ----------------------------------------------------------------------------------------------
# the global and local passes
def _run(model, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
    """``sigmoid(model(image, coarse))`` of one ``(3, h, w)`` image and ``(h, w)`` mask -> ``(h, w)``."""
    dev = next(model.parameters()).device
    out = model(image[None].to(dev), coarse[None, None].to(dev))
    return torch.sigmoid(out[0, 0].float()).cpu()


def _pass(model, image: torch.Tensor, coarse: torch.Tensor, reach: float | None = None,
          flip: bool = False) -> torch.Tensor:
    """One pass of the network on ``image (3, h, w)`` and ``coarse (h, w)`` -> probability
    ``(h, w)``. ``flip``: the mean of the pass and of the pass on the left-right mirrored inputs.
    ``reach``: only pixels within ``reach`` times the longer side (chessboard distance) of the
    coarse mask's 0.5 contour may change; farther ones keep the coarse value."""
    q = _run(model, image, coarse)
    if flip:
        q = 0.5 * (q + _run(model, image.flip(-1), coarse.flip(-1)).flip(-1))
    if reach is not None:
        r = max(1, int(math.ceil(reach * max(coarse.shape))))
        q = torch.where(_near_contour(coarse, r), q, coarse)
    return q


def _merge_changes(q: torch.Tensor, c: torch.Tensor, coarse: torch.Tensor, keep: bool,
                   confidence: float = 0.0) -> torch.Tensor:
    """The pass's probability ``q (h, w)`` (of the input ``c (h, w)`` at the pass's resolution)
    at the output's size ``coarse.shape = (H, W)``. ``keep``: the output is the input ``coarse``
    itself, at its full resolution, except within one pass pixel of where the pass changed the
    input's decision (``q >= 0.5`` against ``c >= 0.5``, with ``|q - 0.5| >= confidence``), which
    take ``q`` resized; so a boundary that the pass leaves where it is loses nothing to the
    resampling, and an unsure change is not made."""
    H, W = coarse.shape
    up = q if tuple(q.shape) == (H, W) else F.interpolate(q[None, None], size=(H, W), mode="bilinear",
                                                          align_corners=False)[0, 0]
    if not keep:
        return up
    changed = (q >= 0.5) != (c >= 0.5)
    if confidence > 0:
        changed &= (q - 0.5).abs() >= confidence
    d = F.max_pool2d(changed.float()[None, None], 3, 1, 1)
    if tuple(d.shape[-2:]) != (H, W):  # area when shrinking: a changed pixel is never lost
        d = (F.interpolate(d, size=(H, W), mode="area") if q.shape[0] > H else
             F.interpolate(d, size=(H, W), mode="bilinear", align_corners=False))
    return torch.where(d[0, 0] > 0, up, coarse)


def _band_low(q: torch.Tensor) -> torch.Tensor:
    """Uncertain pixels of a low-resolution probability map (see the module docstring)."""
    band = (q > BAND_LOW) & (q < 1 - BAND_LOW)
    hard = (q >= 0.5).float()[None, None]
    edge = (F.max_pool2d(hard, 3, 1, 1) != -F.max_pool2d(-hard, 3, 1, 1))[0, 0]
    return F.max_pool2d((band | edge).float()[None, None], 3, 1, 1)[0, 0] > 0


def _near_contour(q: torch.Tensor, r: int) -> torch.Tensor:
    """Pixels of ``q (h, w)`` within chessboard distance ``r`` of its 0.5 contour."""
    hard = (q >= 0.5).double()
    k = 2 * r + 1

    def any_within(x):  # a (2r+1)-square box sum by an integral image: O(1) a pixel, whatever r
        c = F.pad(x, (r + 1, r, r + 1, r)).cumsum(0).cumsum(1)
        return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) > 0.5

    return any_within(hard) & any_within(1.0 - hard)


def refine_tiled(model, image: torch.Tensor, coarse: torch.Tensor, *, global_size: int = 512, tile: int = 256,
                 margin: int = 16, band: float | None = None, reach: float | None = None,
                 flip: bool = False, keep: bool = True, confidence: float = 0.0) -> torch.Tensor:
    """The refined probability ``(H, W)`` of ``image (3, H, W)`` and ``coarse (H, W)`` by the
    global pass and the local passes of the module docstring (``model``: a
    :class:`~spn.models.mask_refiner.MaskRefinerNet`, in eval mode, called without autograd).

    ``band``: a local pass changes only the pixels within ``band`` low-resolution pixels of the
    global result's 0.5 contour (None: no local passes, the upsampled global result).
    ``reach``, ``flip``, ``keep``, ``confidence``: of the global pass (:class:`MaskRefiner`)."""
    H, W = coarse.shape
    L = max(H, W)
    if L <= global_size:
        return _merge_changes(_pass(model, image, coarse, reach, flip), coarse, coarse, keep, confidence)
    s = global_size / L
    h, w = max(1, round(H * s)), max(1, round(W * s))
    small = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    c_small = F.interpolate(coarse[None, None], size=(h, w), mode="bilinear", align_corners=False,
                            antialias=True)[0, 0].clamp(0, 1)
    q_low = _pass(model, small.clamp(0, 1), c_small, reach, flip)
    out = _merge_changes(q_low, c_small, coarse, keep, confidence)
    if band is None:
        return out
    active = _band_low(q_low)
    glob = out.clone()  # every tile starts from the global result: the order of the tiles does not matter
    r = max(1, int(math.ceil(band / s)))
    for y0 in range(0, H, tile):
        for x0 in range(0, W, tile):
            y1, x1 = min(H, y0 + tile), min(W, x0 + tile)
            ly0, ly1 = int(y0 * h / H), min(h, int(math.ceil(y1 * h / H)) + 1)
            lx0, lx1 = int(x0 * w / W), min(w, int(math.ceil(x1 * w / W)) + 1)
            if not bool(active[ly0:ly1, lx0:lx1].any()):
                continue
            cy0, cy1, cx0, cx1 = max(0, y0 - margin), min(H, y1 + margin), max(0, x0 - margin), min(W, x1 + margin)
            prior = glob[cy0:cy1, cx0:cx1]
            res = _run(model, image[:, cy0:cy1, cx0:cx1], prior)
            near = _near_contour(prior, r)
            core = (slice(y0 - cy0, y1 - cy0), slice(x0 - cx0, x1 - cx0))
            out[y0:y1, x0:x1] = torch.where(near[core], res[core], prior[core])
    return out


# ----------------------------------------------------------------------------------------------
# object-centred inference
def crop_box(fg: torch.Tensor, context: float = 0.5, min_context: int = 16) -> tuple[int, int, int, int] | None:
    """The crop ``(y0, y1, x0, x1)`` (half-open) around the bounding box of the True pixels of
    ``fg (H, W)``, grown on each side by ``max(min_context, ceil(context * s))`` pixels, ``s`` the
    box's longer side, and clamped to the photo; None when ``fg`` is empty.

    Shape:
        - fg: ``(H, W)`` bool; output: four ints, ``0 <= y0 < y1 <= H``, ``0 <= x0 < x1 <= W``

    Example:
        >>> import torch
        >>> from spn.inference_mask import crop_box
        >>> fg = torch.zeros(100, 200, dtype=torch.bool); fg[40:60, 10:50] = True
        >>> crop_box(fg, context=0.5, min_context=4)
        (20, 80, 0, 70)
    """
    ys = torch.nonzero(fg.any(dim=1)).flatten()
    xs = torch.nonzero(fg.any(dim=0)).flatten()
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    m = max(int(min_context), int(math.ceil(context * max(y1 - y0, x1 - x0))))
    H, W = fg.shape
    return max(0, y0 - m), min(H, y1 + m), max(0, x0 - m), min(W, x1 + m)


def _resize(t: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of ``(C, h, w)`` to ``size`` (antialiased when shrinking), clamped to [0, 1]."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    shrink = size[0] < t.shape[-2] or size[1] < t.shape[-1]
    return F.interpolate(t[None], size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=shrink)[0].clamp(0, 1)


def refine_crop(model, image: torch.Tensor, coarse: torch.Tensor, box, crop_size: int = 320,
                reach: float | None = None, flip: bool = False, keep: bool = True,
                confidence: float = 0.0) -> torch.Tensor:
    """The refined probability ``(H, W)`` of ``image (3, H, W)`` and ``coarse (H, W)`` by one
    pass on the crop ``box = (y0, y1, x0, x1)`` resized so that its longer side is ``crop_size``
    (up or down; bilinear); the result is resized back and pasted into ``coarse``: outside the
    crop the output is the coarse mask itself. ``reach``, ``flip``, ``keep``, ``confidence``: see
    :class:`MaskRefiner`."""
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    s = crop_size / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    img = _resize(image[:, y0:y1, x0:x1], size)
    c = _resize(coarse[None, y0:y1, x0:x1], size)[0]
    q = _merge_changes(_pass(model, img, c, reach, flip), c, coarse[y0:y1, x0:x1], keep, confidence)
    out = coarse.clone()
    out[y0:y1, x0:x1] = q
    return out


# ----------------------------------------------------------------------------------------------
# weights
def _read_safetensors(data: bytes, where: str) -> tuple[dict, dict]:
    """``(tensors as float32, metadata)`` of a safetensors file's bytes."""
    from safetensors.torch import load

    try:
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        tensors = load(data)
    except Exception as exc:  # a damaged file: one clear line
        raise ValueError(f"cannot read the mask refiner weights {where}: {exc}") from None
    return {k: v.float() for k, v in tensors.items()}, dict(header.get("__metadata__") or {})


def load_weights(data: bytes, where: str = "weights") -> tuple[MaskRefinerNet, dict]:
    """A :class:`MaskRefinerNet` (eval mode) and its settings from safetensors bytes whose
    metadata holds ``"model_config"`` (JSON) and optionally ``"inference"`` (JSON)."""
    tensors, meta = _read_safetensors(data, where)
    try:
        cfg = json.loads(meta["model_config"])
    except (KeyError, json.JSONDecodeError):
        raise ValueError(f"the mask refiner weights {where} carry no model_config in their metadata") from None
    model = create_model("mask_refiner", **cfg)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"the mask refiner weights {where} do not fit the model: missing {missing}, "
                         f"unexpected {unexpected}")
    settings = json.loads(meta.get("inference", "{}"))
    return model.eval(), {"settings": settings, "metadata": meta}


def save_weights(model: MaskRefinerNet, path, settings: dict | None = None, half: bool = True,
                 extra: dict | None = None):
    """Write ``model``'s weights as safetensors (float16 when ``half``) with its config and the
    inference ``settings`` in the metadata (what :func:`load_weights` reads); atomic."""
    from spn.models.checkpoint import state_to_bytes
    from spn.utils.io import atomic_write_bytes

    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    meta = {"model": "mask_refiner", "model_config": json.dumps(model.config),
            "inference": json.dumps(settings or {})}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    return atomic_write_bytes(path, state_to_bytes(state, meta))


def _package_weights(name: str) -> tuple[bytes, str]:
    ref = resources.files("spn").joinpath("weights", name)
    try:
        return ref.read_bytes(), f"{ref}"
    except OSError as exc:
        raise FileNotFoundError(f"the shipped mask refiner weights are missing ({ref}): {exc}") from None


def shipped_weights() -> tuple[bytes, str]:
    """``(bytes, where)`` of the weights shipped in the package (``spn/weights/``; no network);
    FileNotFoundError naming the file when they are absent."""
    return _package_weights(WEIGHTS_FILE)


def shipped_large_weights() -> tuple[bytes, str]:
    """``(bytes, where)`` of the shipped weights for masks that cover most of the photo
    (:data:`LARGE_WEIGHTS_FILE`); FileNotFoundError naming the file when they are absent."""
    return _package_weights(LARGE_WEIGHTS_FILE)


def _changing_runs(p: torch.Tensor, g: int, tile: int = 64) -> list[tuple[int, int, int, int]]:
    """Rectangles ``(r0, r1, c0, c1)`` of ``p (h, w)``, disjoint, that hold every pixel within
    ``g`` pixels (chessboard distance) of a place where ``p`` changes (two neighbours differ):
    the ``tile``-row bands of a grid of ``g``-pixel cells, cut into runs of marked tiles."""
    h, w = p.shape
    changes = torch.zeros(h, w, dtype=torch.bool)
    dx, dy = p[:, 1:] != p[:, :-1], p[1:] != p[:-1]
    changes[:, 1:] |= dx
    changes[:, :-1] |= dx
    changes[1:] |= dy
    changes[:-1] |= dy
    if not bool(changes.any()):
        return []
    k = max(1, tile // g)  # cells per tile side
    T = k * g
    hc, wc = -(-h // g), -(-w // g)
    cells = F.pad(changes, (0, wc * g - w, 0, hc * g - h)).view(hc, g, wc, g).any(3).any(1)
    near = F.max_pool2d(cells[None, None].float(), 3, 1, 1)[0, 0] > 0  # a change within one cell
    ht, wt = -(-hc // k), -(-wc // k)
    marked = F.pad(near, (0, wt * k - wc, 0, ht * k - hc)).view(ht, k, wt, k).any(3).any(1)
    runs = []
    for i in range(ht):
        row = marked[i].tolist()
        j = 0
        while j < wt:
            if not row[j]:
                j += 1
                continue
            j0 = j
            while j < wt and row[j]:
                j += 1
            runs.append((i * T, min(h, (i + 1) * T), j0 * T, min(w, j * T)))
    return runs


def snap(image: torch.Tensor, prob: torch.Tensor, box, radius: int = 8, eps: float = 1e-3) -> torch.Tensor:
    """Replace ``prob[y0:y1, x0:x1]`` (``box``) in place by its colour guided filter with
    ``image (3, H, W)`` as guide (windows clipped at the box's border), clamped to [0, 1]; returns
    ``prob``. Only the pixels within ``2 * radius`` of a place where ``prob`` changes are computed
    (in rectangles along the contour, :func:`_changing_runs`, each with ``2 * radius`` pixels of
    context, so they equal the filter of the whole box): elsewhere every window the filter
    averages holds one value, so it returns that value (``a = 0`` and ``b = p`` in each window,
    to rounding), and the pixel is left as it is. A large object's filter then costs its contour,
    not its area."""
    y0, y1, x0, x1 = box
    p = prob[y0:y1, x0:x1]
    h, w = p.shape
    g = 2 * radius
    done = []  # written after every rectangle is filtered: each reads the unfiltered map as context
    for r0, r1, c0, c1 in _changing_runs(p, g):
        e0, e1, f0, f1 = max(0, r0 - g), min(h, r1 + g), max(0, c0 - g), min(w, c1 + g)  # with context
        q = guided_filter_strips(image[:, y0 + e0:y0 + e1, x0 + f0:x0 + f1], p[None, e0:e1, f0:f1], radius, eps)[0]
        done.append((r0, r1, c0, c1, q[r0 - e0:r1 - e0, c0 - f0:c1 - f0].clamp(0, 1)))
    for r0, r1, c0, c1, q in done:
        p[r0:r1, c0:c1] = q
    return prob


def _check_crop(crop, crop_size, context, min_context) -> None:
    """One clear error for a bad object-centred inference setting."""
    if not isinstance(crop, bool):
        raise ValueError(f"crop must be True or False, got {crop!r}")
    if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 16:
        raise ValueError(f"crop_size must be an int >= 16, got {crop_size!r}")
    if isinstance(min_context, bool) or not isinstance(min_context, int) or min_context < 0:
        raise ValueError(f"min_context must be an int >= 0, got {min_context!r}")
    if (isinstance(context, bool) or not isinstance(context, (int, float)) or not math.isfinite(context)
            or context < 0):
        raise ValueError(f"context must be a number >= 0, got {context!r}")


class MaskRefiner:
    """Refine anyone's mask on anyone's photo (see the module docstring).

    Args:
        model: a :class:`~spn.models.mask_refiner.MaskRefinerNet` (``pretrained()`` loads the shipped one).
        global_size: the longest side of the global pass (larger photos get local passes).
        tile, margin: the local passes' tile side and context, in full-resolution pixels.
        band: local passes change the pixels within this many low-resolution pixels of the global
            contour; None (the default): no local passes.
        crop: object-centred inference (the default): the photo and the mask are cut to the
            bounding box of the mask's pixels ``>= 0.5``, grown by ``context`` times the box's
            longer side on each side (at least ``min_context`` pixels; clamped to the photo), and
            that crop is refined with its longer side resized to ``crop_size`` (up or down) and
            pasted back; outside the crop the result is the coarse mask itself (below 0.5 there).
            When the crop is the whole photo, the whole-photo path above runs (global pass, local
            passes with ``band``). False: always the whole-photo path.
        crop_size, context, min_context: see ``crop``. The defaults put the object at the scale
            the network was trained on: 192 x 192 composites whose object spans about a third to
            four fifths of the side (centred in the middle half), i.e. a box with half its side
            of context on each side, resized to 192.
        reach: only pixels within ``reach`` times the pass's longer side of the coarse mask's
            0.5 contour may change (None: any pixel may).
        flip: average the pass with the pass on the mirrored photo and mask (twice the time).
        keep: where the pass keeps the input's decision, return the input itself at full
            resolution; only the pixels within one pass pixel of a changed decision take the
            pass's result, resized (a pass runs at a reduced resolution for large objects: without
            ``keep`` a right boundary would come back blurred by the resampling). False: the
            pass's result everywhere in the crop.
        confidence: with ``keep``, a decision of the input is changed only where the pass's
            probability is at least this far from 0.5 (0: wherever it crosses 0.5); an unsure
            pass leaves the input as it is.
        large_model: a second :class:`~spn.models.mask_refiner.MaskRefinerNet` for objects that
            fill the photo: a mask whose pixels ``>= 0.5`` cover at least ``large_cover`` of the
            photo is refined by it, every other mask by ``model`` (None, the default: ``model``
            for every mask). Meant for weights trained with frame-filling objects
            (``--data-option large=...``), which are better on such objects and worse on the
            rest (docs/mask-refiner.md).
        large_cover: the share of the photo, in (0, 1], from which ``large_model`` is used.
        snap: a final colour guided filter of the refined probability, guided by the photo at
            full resolution, inside the crop (the whole photo without one), clamped to [0, 1]
            (step 4 of the module docstring). It runs after ``keep`` and ``confidence``, so it can
            move a kept boundary by a pixel or two onto the photo's edge (``snap=False`` returns
            a kept decision exactly). ``snap_radius`` (pixels) and ``snap_eps`` (squared
            intensity) are its window radius and regularisation.
    """

    def __init__(self, model: torch.nn.Module, *, global_size: int = 512, tile: int = 256, margin: int = 16,
                 band: float | None = None, crop: bool = True, crop_size: int = 320, context: float = 0.5,
                 min_context: int = 16, reach: float | None = None, flip: bool = False,
                 keep: bool = True, confidence: float = 0.0, large_model: torch.nn.Module | None = None,
                 large_cover: float = 0.45, snap: bool = False, snap_radius: int = 8, snap_eps: float = 1e-3,
                 source: str | None = None):
        if not isinstance(model, MaskRefinerNet):
            raise TypeError(f"MaskRefiner needs a mask_refiner model, got {type(model).__name__} "
                            "(train one with spn train --task mask, or use MaskRefiner.pretrained())")
        for name, v, lo in (("global_size", global_size, 16), ("tile", tile, 16), ("margin", margin, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        self.model = model.eval()
        if band is not None and (isinstance(band, bool) or not isinstance(band, (int, float))
                                 or not math.isfinite(band) or band <= 0):
            raise ValueError(f"band must be a number > 0 or None, got {band!r}")
        self.global_size, self.tile, self.margin, self.band = global_size, tile, margin, band
        _check_crop(crop, crop_size, context, min_context)
        self.crop, self.crop_size, self.context, self.min_context = crop, crop_size, float(context), min_context
        if reach is not None and (isinstance(reach, bool) or not isinstance(reach, (int, float))
                                  or not math.isfinite(reach) or reach <= 0):
            raise ValueError(f"reach must be a number > 0 or None, got {reach!r}")
        if not isinstance(flip, bool):
            raise ValueError(f"flip must be True or False, got {flip!r}")
        if not isinstance(keep, bool):
            raise ValueError(f"keep must be True or False, got {keep!r}")
        if (isinstance(confidence, bool) or not isinstance(confidence, (int, float))
                or not math.isfinite(confidence) or not 0 <= confidence < 0.5):
            raise ValueError(f"confidence must be a number in [0, 0.5), got {confidence!r}")
        self.reach, self.flip, self.keep, self.confidence = reach, flip, keep, float(confidence)
        if large_model is not None and not isinstance(large_model, MaskRefinerNet):
            raise TypeError(f"large_model must be a mask_refiner model or None, got {type(large_model).__name__}")
        if (isinstance(large_cover, bool) or not isinstance(large_cover, (int, float))
                or not math.isfinite(large_cover) or not 0 < large_cover <= 1):
            raise ValueError(f"large_cover must be a number in (0, 1], got {large_cover!r}")
        if not isinstance(snap, bool):
            raise ValueError(f"snap must be True or False, got {snap!r}")
        if isinstance(snap_radius, bool) or not isinstance(snap_radius, int) or snap_radius < 1:
            raise ValueError(f"snap_radius must be an int >= 1, got {snap_radius!r}")
        if (isinstance(snap_eps, bool) or not isinstance(snap_eps, (int, float)) or not math.isfinite(snap_eps)
                or snap_eps <= 0):
            raise ValueError(f"snap_eps must be a number > 0, got {snap_eps!r}")
        self.snap, self.snap_radius, self.snap_eps = snap, snap_radius, float(snap_eps)
        self.large_model = None if large_model is None else large_model.eval()
        self.large_cover = float(large_cover)
        self.source = source or "model"
        self.info: dict = {}

    def __repr__(self) -> str:
        return (f"MaskRefiner({self.source}, global_size={self.global_size}, tile={self.tile}, "
                f"margin={self.margin}, band={self.band}, crop={self.crop}, crop_size={self.crop_size}, "
                f"context={self.context:g}, min_context={self.min_context}, reach={self.reach}, flip={self.flip}, "
                f"keep={self.keep}, confidence={self.confidence:g}"
                + (f", snap_radius={self.snap_radius}, snap_eps={self.snap_eps:g}" if self.snap else ", snap=False")
                + ("" if self.large_model is None else f", large_model=..., large_cover={self.large_cover:g}") + ")")

    @classmethod
    def pretrained(cls, **kw) -> "MaskRefiner":
        """The refiner shipped in the package (``spn/weights/mask_refiner.safetensors``; no network),
        with the inference settings stored beside its weights (keywords override them), and
        ``spn/weights/mask_refiner_large.safetensors`` as its ``large_model`` (``large_model=None``:
        the first weights for every mask)."""
        data, where = shipped_weights()
        if "large_model" not in kw:
            kw["large_model"] = load_weights(*shipped_large_weights())[0]
        return cls.from_weights(data, where, source="pretrained", **kw)

    @classmethod
    def from_weights(cls, data: bytes, where: str = "weights", source: str | None = None, **kw) -> "MaskRefiner":
        """The refiner of safetensors bytes written by :func:`save_weights`, with the inference
        settings stored in them (keywords override them)."""
        model, info = load_weights(data, where)
        opts = {k: v for k, v in info["settings"].items() if k in STORED_SETTINGS}
        opts.update(kw)
        r = cls(model, source=source or where, **opts)
        r.info = info
        return r

    @classmethod
    def from_checkpoint(cls, run, device="cpu", **kw) -> "MaskRefiner":
        """The mask refiner of a run directory of ``spn train --task mask`` (or a checkpoint)."""
        from spn.models.checkpoint import load_checkpoint

        model, info = load_checkpoint(run, map_location=device)
        if not isinstance(model, MaskRefinerNet):
            raise ValueError(f"checkpoint {run} holds {info.get('model')!r}, not a mask refiner "
                             "(train one with spn train --task mask)")
        r = cls(model, source=f"checkpoint {run}", **kw)
        r.info = info
        return r

    def uses_large_model(self, fg: torch.Tensor) -> bool:
        """Whether the mask whose pixels ``>= 0.5`` are ``fg`` (bool ``(H, W)``) is refined by
        ``large_model``: it covers at least ``large_cover`` of the photo."""
        return self.large_model is not None and float(fg.float().mean()) >= self.large_cover

    def refine_proba(self, image, mask) -> np.ndarray:
        """The refined probability, float32 ``(H, W)`` at the image's size. An empty or all-ones
        mask (nothing or everything above 0.5) is returned resized, with a warning."""
        img = as_photo_tensor(image)
        p = as_mask_array(mask, img.shape[-2:])
        fg = p >= 0.5
        if not bool(fg.any()) or bool(fg.all()):
            warnings.warn("the mask is " + ("empty" if not bool(fg.any()) else "all ones") +
                          ": nothing to refine, returned unchanged", stacklevel=2)
            return p.numpy()
        H, W = p.shape
        model = self.large_model if self.uses_large_model(fg) else self.model
        box = crop_box(fg, self.context, self.min_context) if self.crop else None
        with torch.no_grad():
            if box is not None and box != (0, H, 0, W):
                out = refine_crop(model, img, p, box, self.crop_size, self.reach, self.flip, self.keep,
                                  self.confidence)
            else:
                out = refine_tiled(model, img, p, global_size=self.global_size, tile=self.tile,
                                   margin=self.margin, band=self.band, reach=self.reach, flip=self.flip,
                                   keep=self.keep, confidence=self.confidence)
                box = (0, H, 0, W)
            if self.snap:
                snap(img, out, box, self.snap_radius, self.snap_eps)
        return out.numpy()

    def refine(self, image, mask, threshold: float = 0.5) -> np.ndarray:
        """The refined mask, bool ``(H, W)``: :meth:`refine_proba` ``>= threshold``."""
        return self.refine_proba(image, mask) >= threshold

    __call__ = refine

    def refine_labels(self, image, labels) -> np.ndarray:
        """A label map ``(h, w)`` (ints, any resolution of the image's aspect ratio, nearest
        resized) refined one label against the rest and merged by argmax: int64 ``(H, W)``."""
        img = as_photo_tensor(image)
        lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if lab.ndim != 2 or not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == np.bool_):
            raise ValueError(f"labels must be an integer (h, w) map, got {lab.dtype} {tuple(lab.shape)}")
        H, W = img.shape[-2:]
        check_coverage("labels", lab.shape, (H, W))
        values = np.unique(lab)
        best = np.full((H, W), -1.0, dtype=np.float32)
        out = np.zeros((H, W), dtype=np.int64)
        for v in values.tolist():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = self.refine_proba(img, (lab == v).astype(np.float32))
            better = p > best
            best[better], out[better] = p[better], v
        return out


_SHIPPED: list = []


def refine(image, mask, *, soft: bool = False, refiner: MaskRefiner | None = None) -> np.ndarray:
    """Refine one object's ``mask`` on ``image`` with the refiner shipped in the package (loaded
    once; or ``refiner``): ``spn.refine(image, mask)``.

    ``image``: a PIL image, a numpy array ``(H, W, 3)`` / ``(H, W)`` (uint8, uint16 or float in
    [0, 1]) or a float32 tensor ``(3, H, W)``. ``mask``: a PIL image (mode ``'1'`` or ``'L'``), a
    numpy array or a tensor ``(h, w)``: bool, 0/1, 0/255, 8-bit soft (0..255 = probability) or
    float in [0, 1]; at any resolution of the image's aspect ratio (resized bilinearly). An empty
    or all-ones mask is returned unchanged (resized), with a warning. Returns bool ``(H, W)`` (the
    refined probability ``>= 0.5``), or with ``soft`` the probability, float32 ``(H, W)``.

    Shape:
        - image: ``(H, W, 3)``; mask: ``(h, w)`` with ``h / w = H / W``; output: ``(H, W)``

    Example:
        >>> import numpy as np
        >>> from spn.inference_mask import MaskRefiner, refine
        >>> from spn.models import create_model
        >>> tiny = MaskRefiner(create_model("mask_refiner", guidance_width=4))
        >>> image = np.zeros((32, 48, 3), np.uint8); mask = np.zeros((8, 12), np.uint8); mask[2:6, 3:9] = 255
        >>> out = refine(image, mask, refiner=tiny)
        >>> out.shape, out.dtype, refine(image, mask, soft=True, refiner=tiny).dtype
        ((32, 48), dtype('bool'), dtype('float32'))
    """
    if refiner is None:
        if not _SHIPPED:
            _SHIPPED.append(MaskRefiner.pretrained())
        refiner = _SHIPPED[0]
    proba = refiner.refine_proba(image, mask)
    return proba if soft else proba >= 0.5
