"""Consistent down/up sampling by an integer factor: area averaging down, bilinear up.

The two are aligned: low-resolution pixel ``q`` is the mean of the block of full-resolution
pixels ``f*q .. f*q + f - 1`` (centre ``f*q + (f - 1)/2``), and :func:`bilinear_upsample`
(``align_corners=False``) reads full-resolution pixel ``p`` at the low-resolution coordinate
``(p + 0.5)/f - 0.5``, which is where that centre lands. So a linear ramp, downsampled and
upsampled, comes back unchanged away from the borders (tested), and nothing is shifted by half
a pixel. Sizes that are not a multiple of ``f`` are padded at the bottom and right by edge
replication before the averaging, and the upsampled map is cropped back.

This is the chroma subsampling of ``spn``'s chroma task (4:2:0 at ``f = 2``) and the alignment
rule of every down/up pair of its model.

Shape:
    - :func:`area_downsample`: ``(B, C, H, W) -> (B, C, ceil(H/f), ceil(W/f))``
    - :func:`bilinear_upsample`: ``(B, C, h, w) -> (B, C, H, W)`` with ``h = ceil(H/f)``

Example:
    >>> import torch
    >>> from spn.image.resample import area_downsample, bilinear_upsample
    >>> ramp = torch.arange(32.0).expand(1, 1, 8, 32)
    >>> low = area_downsample(ramp, 4)
    >>> low[0, 0, 0].tolist()
    [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    >>> bilinear_upsample(low, 4, (8, 32))[0, 0, 0, 2:30].tolist() == list(range(2, 30))
    True
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = ["area_downsample", "bilinear_upsample", "check_factor", "low_size", "upsample_height", "upsample_padded",
           "upsample_then_area_matrix", "upsample_width"]


def check_factor(f) -> int:
    """``f`` as an int >= 1 (a bool, float or smaller value -> an error naming it)."""
    if isinstance(f, bool) or not isinstance(f, int):
        raise TypeError(f"the factor must be an int, got {f!r}")
    if f < 1:
        raise ValueError(f"the factor must be >= 1, got {f}")
    return f


def low_size(size, f: int) -> tuple[int, int]:
    """``(ceil(H/f), ceil(W/f))`` of a full-resolution ``size = (H, W)``."""
    H, W = (int(s) for s in size)
    return math.ceil(H / f), math.ceil(W / f)


def area_downsample(x: torch.Tensor, f: int) -> torch.Tensor:
    """Mean over ``f x f`` blocks (edge-replicated up to a multiple of ``f``).

    Shape: ``(B, C, H, W) -> (B, C, ceil(H/f), ceil(W/f))``.
    """
    check_factor(f)
    if x.dim() != 4:
        raise ValueError(f"area_downsample expects (B, C, H, W), got {tuple(x.shape)}")
    if f == 1:
        return x
    H, W = x.shape[-2:]
    ph, pw = (-H) % f, (-W) % f
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return F.avg_pool2d(x, f)


def bilinear_upsample(low: torch.Tensor, f: int, size, *, out: torch.Tensor | None = None,
                      scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Bilinear upsampling by ``f`` (``align_corners=False``), cropped to ``size = (H, W)``.

    The inverse partner of :func:`area_downsample`: ``low`` must be ``(B, C, ceil(H/f),
    ceil(W/f))``. Shape: ``(B, C, h, w) -> (B, C, H, W)``.

    ``out`` (no autograd): write the result into this ``(B, C, H, W)`` tensor (any strides)
    and return it. This path is separable: for output phase ``r = p mod f`` the source
    coordinate ``(p + 0.5)/f - 0.5`` is ``p // f + o_r``, ``o_r = (2r + 1 - f)/(2f)``, so each
    phase is one :func:`torch.lerp` of two shifted copies of the (edge-replicated) low map:
    first along the width at low height, then along the height, writing whole output rows.
    It equals the default path up to float rounding (tested) and allocates only the
    ``(B, C, h + 2, W)`` intermediate, or uses ``scratch`` (a tensor of at least that many
    elements, same dtype and device) for it.
    """
    check_factor(f)
    if low.dim() != 4:
        raise ValueError(f"bilinear_upsample expects (B, C, h, w), got {tuple(low.shape)}")
    H, W = (int(s) for s in size)
    h, w = low.shape[-2:]
    if (h, w) != low_size((H, W), f):
        raise ValueError(f"a {h}x{w} map is not the factor-{f} subsampling of {H}x{W} "
                         f"(expected {low_size((H, W), f)[0]}x{low_size((H, W), f)[1]})")
    if out is not None:
        return _upsample_into(low, f, H, W, out, scratch)
    if f == 1:
        return low
    up = F.interpolate(low, size=(h * f, w * f), mode="bilinear", align_corners=False)
    return up[..., :H, :W]


def _phase_taps(f: int, r: int):
    """``(start of the first tap, weight of the second)`` of output phase ``r`` in a map padded
    by one sample on each side: output ``q*f + r`` is ``lerp(pad[q + s], pad[q + s + 1], t)``."""
    o = (2 * r + 1 - f) / (2 * f)
    return (0, 1.0 + o) if o < 0 else (1, o)


def _upsample_into(low: torch.Tensor, f: int, H: int, W: int, out: torch.Tensor, scratch) -> torch.Tensor:
    B, C, h, w = low.shape
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (B, C, H, W):
        raise ValueError(f"out must be a ({B}, {C}, {H}, {W}) tensor, got {tuple(getattr(out, 'shape', ()))}")
    if out.dtype != low.dtype or out.device != low.device:
        raise TypeError(f"out must match low's dtype and device ({low.dtype}, {low.device}), "
                        f"got {out.dtype} on {out.device}")
    if torch.is_grad_enabled() and low.requires_grad:
        raise RuntimeError("bilinear_upsample(out=...) does not record gradients; call it under torch.no_grad()")
    if f == 1:
        return out.copy_(low)
    n = B * C * (h + 2) * W
    if scratch is not None and (scratch.numel() < n or scratch.dtype != low.dtype or scratch.device != low.device):
        raise ValueError(f"scratch must hold {n} {low.dtype} elements on {low.device}")
    return upsample_padded(F.pad(low, (1, 1, 1, 1), mode="replicate"), f, out, scratch)


def upsample_padded(lp: torch.Tensor, f: int, out: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """The core of :func:`bilinear_upsample` with ``out``, unchecked: ``lp`` is the low map
    already edge-replicated by one sample on each side, ``(B, C, h + 2, w + 2)``, and ``out``
    ``(B, C, H, W)`` with ``(h, w) = (ceil(H/f), ceil(W/f))``, ``f >= 2``. It is
    :func:`upsample_width` then :func:`upsample_height`; callers that treat the channels one at
    a time can run the first on all of them and the second per channel."""
    B, C, hp, _ = lp.shape
    H, W = out.shape[-2:]
    n = B * C * hp * W
    tmp = lp.new_empty((B, C, hp, W)) if scratch is None else scratch.reshape(-1)[:n].view(B, C, hp, W)
    return upsample_height(upsample_width(lp, f, tmp), f, out)


def upsample_width(lp: torch.Tensor, f: int, tmp: torch.Tensor) -> torch.Tensor:
    """First half of :func:`upsample_padded`: along the width, at low height, from ``lp``
    ``(B, C, h + 2, w + 2)`` into ``tmp`` ``(B, C, h + 2, W)`` (returned)."""
    W = tmp.shape[-1]
    for r in range(min(f, W)):
        s, t = _phase_taps(f, r)
        cols = len(range(r, W, f))
        torch.lerp(lp[..., s:s + cols], lp[..., s + 1:s + 1 + cols], t, out=tmp[..., r::f])
    return tmp


def upsample_height(tmp: torch.Tensor, f: int, out: torch.Tensor) -> torch.Tensor:
    """Second half of :func:`upsample_padded`: along the height, from ``tmp`` ``(B, C, h + 2, W)``
    into ``out`` ``(B, C, H, W)`` (returned), writing whole output rows."""
    H = out.shape[-2]
    for r in range(min(f, H)):
        s, t = _phase_taps(f, r)
        rows = len(range(r, H, f))
        torch.lerp(tmp[..., s:s + rows, :], tmp[..., s + 1:s + 1 + rows, :], t, out=out[..., r::f, :])
    return out

@functools.lru_cache(maxsize=32)
def _matrix(n: int, f: int, s: int, dtype, device) -> torch.Tensor:
    m = low_size((1, n), f)[1]
    eye = torch.eye(m, dtype=dtype, device=device).view(1, m, 1, m)
    return area_downsample(bilinear_upsample(eye, f, (1, n)), s).reshape(m, -1)


def upsample_then_area_matrix(n: int, f: int, s: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """The 1-D linear map of :func:`bilinear_upsample` by ``f`` to length ``n`` followed by
    :func:`area_downsample` by ``s``, as a ``(ceil(n/f), ceil(n/s))`` matrix.

    Both are separable, so for a low map ``x (B, C, ceil(H/f), ceil(W/f))``::

        area_downsample(bilinear_upsample(x, f, (H, W)), s) == My.T @ x @ Mx

    with ``My = upsample_then_area_matrix(H, f, s)`` and ``Mx = upsample_then_area_matrix(W, f, s)``
    (up to float rounding; tested): the area average of the upsampled map without making it.
    The matrix is built by applying the two functions to the identity (and cached: a new
    tensor is returned each call, a copy of the cached one).
    """
    check_factor(f)
    check_factor(s)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    with torch.no_grad():
        return _matrix(n, f, s, dtype, torch.device(device) if device is not None else torch.device("cpu")).clone()
