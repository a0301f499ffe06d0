"""Pure-PyTorch reference of the propagation operator: the readable definition (spec version 2).

Every fast backend is tested against these functions, for outputs and gradients. They are
written for clarity, not speed: a Python loop over scan lines, differentiable by autograd,
exact in float64. float16 / bfloat16 inputs are computed in float32 and cast back.

Non-finite values follow the spec's equations literally: an invalid neighbour's gate is
dropped (never multiplied by zero), and the gates of lines that start a chunk are never read,
so a NaN there reaches neither the output nor any gradient.
"""
from __future__ import annotations

import torch

from ._codes import MERGE_CODES
from ._validate import DIRECTIONS, check_chunk, check_input_weight, check_pair, direction_index
from .normalize import check_normalize, normalize_gates

MERGES = tuple(sorted(MERGE_CODES, key=MERGE_CODES.get))

_ACC_DTYPES = (torch.float32, torch.float64)


def check_merge(merge) -> None:
    if merge not in MERGES:
        raise ValueError(f"unknown merge {merge!r}; valid merges are {', '.join(repr(m) for m in MERGES)}")


def _to_vertical(t: torch.Tensor, d: int) -> torch.Tensor:
    """Reorient ``(..., H, W)`` so that the scan runs over dim -2 from index 0 upward."""
    if d in (0, 1):  # horizontal scans: lines are columns
        t = t.transpose(-1, -2)
    if d in (1, 3):  # reverse scans
        t = t.flip(-2)
    return t


def _from_vertical(t: torch.Tensor, d: int) -> torch.Tensor:
    if d in (1, 3):
        t = t.flip(-2)
    if d in (0, 1):
        t = t.transpose(-1, -2)
    return t


def _first_lines(L: int, chunk: int | None, device) -> torch.Tensor:
    """Boolean ``(L,)``: the scan lines (in scan order) that start a chunk."""
    t = torch.arange(L, device=device)
    return t == 0 if chunk is None else (t % chunk) == 0


def _normalize_vertical(r: torch.Tensor, mode: str | None, first: torch.Tensor) -> torch.Tensor:
    """Normalise raw gates ``r`` ``(B, K, Cg, L, n)`` in the vertical orientation.

    The raw gates of first lines are never read: they are replaced by zeros before the
    normalisation, so neither their value nor a NaN there has any effect (their gradient is 0).
    """
    if mode is None:
        return r
    r = torch.where(first[:, None], torch.zeros((), dtype=r.dtype, device=r.device), r)
    # in the vertical orientation the lateral index is the last dim, which is the layout of
    # "top_to_bottom" (gspn's valid slots depend on it)
    return normalize_gates(r, mode, direction="top_to_bottom")


def _pad_front(t: torch.Tensor) -> torch.Tensor:
    """Prepend an explicit zero along the last dim (the term that does not exist at k = 0)."""
    return torch.cat([t.new_zeros(t.shape[:-1] + (1,)), t], dim=-1)


def _pad_back(t: torch.Tensor) -> torch.Tensor:
    """Append an explicit zero along the last dim (the term that does not exist at k = n - 1)."""
    return torch.cat([t, t.new_zeros(t.shape[:-1] + (1,))], dim=-1)


def propagate_ref(x: torch.Tensor, gates: torch.Tensor, direction, *, normalize: str | None = None,
                  input_weight: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Reference linear propagation in one direction (Eq. 1, 9, 10; GSPN's general form).

    With ``g`` the normalised gates read at the destination pixel, for lateral index ``k``::

        first line of a chunk:  h[k] = x[k]                 (l[k] * x[k] with input_weight l)
        every later line:       h[k] = (1 - sum_j g_j[k]) * x[k] + sum_j g_j[k] * h_prev[j]
                                       (l[k] * x[k] + sum_j g_j[k] * h_prev[j] with input_weight)

    over the valid neighbours ``j`` of ``k`` in the previous line (``k-1, k, k+1`` for
    three-way gates, slots 0, 1, 2; ``k`` for one-way).

    Args:
        x: the map to propagate.
        gates: raw gates, normalised over their ``K`` slots by ``normalize``
            (``None | "clip" | "always" | "gspn"``, see :func:`spn.ops.normalize_gates`).
        direction: ``"left_to_right"``, ``"right_to_left"``, ``"top_to_bottom"``,
            ``"bottom_to_top"`` or its index 0..3.
        input_weight: GSPN's ``lambda``, the weight of ``x`` in the recurrence, or ``None``.
        chunk: scan lines per independently scanned chunk (GSPN's local scans), or ``None``.

    Shape:
        - x: ``(B, C, H, W)``
        - gates: ``(B, K, Cg, H, W)``, ``K`` in {1, 3}, ``Cg`` in {1, C}
        - input_weight: ``(B, Cl, H, W)``, ``Cl`` in {1, C}
        - output: ``(B, C, H, W)``

    Example:
        >>> x = torch.tensor([[[[1.0, 0.0, 0.0]]]])            # one row of three pixels
        >>> g = torch.full((1, 1, 1, 1, 3), 0.5)               # one-way, shared gates
        >>> propagate_ref(x, g, "left_to_right")
        tensor([[[[1.0000, 0.5000, 0.2500]]]])
    """
    K, _ = check_pair(x, gates)
    d = direction_index(direction)
    check_normalize(normalize)
    check_input_weight(x, input_weight)
    chunk = check_chunk(chunk)
    out_dtype = x.dtype
    if x.dtype not in _ACC_DTYPES:  # float16 / bfloat16: float32 accumulation
        x, gates = x.float(), gates.float()
        input_weight = None if input_weight is None else input_weight.float()

    xv = _to_vertical(x, d)  # (B, C, L, n)
    L = xv.shape[-2]
    first = _first_lines(L, chunk, x.device)
    gv = _normalize_vertical(_to_vertical(gates, d), normalize, first)  # (B, K, Cg, L, n)
    lv = None if input_weight is None else _to_vertical(input_weight, d)  # (B, Cl, L, n)

    rows = []
    for t in range(L):
        xt = xv[:, :, t]
        if bool(first[t]):
            rows.append(xt if lv is None else lv[:, :, t] * xt)
            continue
        prev = rows[-1]
        if K == 1:
            g = gv[:, 0, :, t]
            s, acc = g, g * prev
        else:
            g0, g1, g2 = gv[:, 0, :, t], gv[:, 1, :, t], gv[:, 2, :, t]
            # slot 0 reads k - 1 (absent at k = 0), slot 2 reads k + 1 (absent at k = n - 1):
            # the absent terms are dropped, never multiplied by zero
            g_lo, g_hi = g0[..., 1:], g2[..., :-1]
            s = _pad_front(g_lo) + g1 + _pad_back(g_hi)
            acc = _pad_front(g_lo * prev[..., :-1]) + g1 * prev + _pad_back(g_hi * prev[..., 1:])
        rows.append(((1 - s) * xt if lv is None else lv[:, :, t] * xt) + acc)
    h = torch.stack(rows, dim=2)
    return _from_vertical(h, d).contiguous().to(out_dtype)


def merge4_ref(hs: torch.Tensor, merge: str) -> torch.Tensor:
    """Merge four directional maps ``(4, B, C, H, W)`` node-wise (the spec's merge table)."""
    check_merge(merge)
    if merge == "max":
        # torch.max(dim) routes the gradient to the first index attaining the max, and takes a
        # NaN as the max (its first NaN), which is the spec's rule; amax would split ties
        return hs.max(dim=0).values
    if merge == "mean":
        return hs.mean(dim=0)
    if merge == "sum":
        return hs.sum(dim=0)
    return hs.transpose(0, 1)  # "none": (B, 4, C, H, W)


def propagate4_ref(x: torch.Tensor, gates: torch.Tensor, merge: str = "max", *, normalize: str | None = None,
                   input_weight: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Reference four-direction propagation and node-wise merge.

    Each direction ``d`` (in the order left_to_right, right_to_left, top_to_bottom,
    bottom_to_top) runs :func:`propagate_ref` with ``gates[:, d]`` (and ``input_weight[:, d]``),
    and the four maps are merged node-wise:

    - ``"max"`` (the paper): NaN if any direction is NaN at a node; the gradient goes to the
      first direction (in that order) attaining the max, a NaN counting as the max;
    - ``"mean"``, ``"sum"``;
    - ``"none"``: the four maps stacked, for learned merges (GSPN's 1x1 convolution).

    Shape:
        - x: ``(B, C, H, W)``
        - gates: ``(B, 4, K, Cg, H, W)``
        - input_weight: ``(B, 4, Cl, H, W)``
        - output: ``(B, C, H, W)``, or ``(B, 4, C, H, W)`` for ``merge="none"``

    Example:
        >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, 1, 1] = 1.0
        >>> g = torch.full((1, 4, 1, 1, 3, 3), 0.5)
        >>> propagate4_ref(x, g)[0, 0]
        tensor([[0.0000, 0.2500, 0.0000],
                [0.2500, 0.5000, 0.2500],
                [0.0000, 0.2500, 0.0000]])
    """
    check_pair(x, gates, n_dirs=4)
    check_merge(merge)
    check_input_weight(x, input_weight, n_dirs=4)
    hs = torch.stack([
        propagate_ref(x, gates[:, d], d, normalize=normalize,
                      input_weight=None if input_weight is None else input_weight[:, d], chunk=chunk)
        for d in range(4)
    ], dim=0)
    return merge4_ref(hs, merge)


__all__ = ["DIRECTIONS", "MERGES", "check_merge", "merge4_ref", "propagate4_ref", "propagate_ref"]
