"""Public propagation operator: one direction, or four directions merged node-wise."""
from __future__ import annotations

import torch

from . import _backend
from ._codes import MERGE_CODES, NORMALIZE_CODES
from ._validate import DIRECTIONS, check_chunk, check_input_weight, check_pair, check_size, direction_index
from .normalize import check_normalize
from .reference import MERGES, check_merge, propagate4_ref, propagate_ref

_KERNEL_DTYPES = (torch.float32, torch.float64)


def _upcast(x: torch.Tensor, gates: torch.Tensor, input_weight: torch.Tensor | None):
    """Half-precision inputs run in float32 (float32 accumulation) and are cast back, on every
    device (the backward then reads the float32 forward maps)."""
    if x.dtype in _KERNEL_DTYPES:
        return x, gates, input_weight, None
    return x.float(), gates.float(), None if input_weight is None else input_weight.float(), x.dtype


def propagate(x: torch.Tensor, gates: torch.Tensor, direction, *, normalize: str | None = None,
              input_weight: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Linear spatial propagation in one direction (Liu et al. 2017, Eq. 1, 9, 10; GSPN's form).

    With ``g`` the gates normalised by ``normalize`` and read at the destination pixel, for the
    first scanned line of a chunk ``h = x`` (``l * x`` with an input weight ``l``); for every
    later line, at lateral index ``k``::

        h[k] = (1 - sum_j g_j[k]) * x[k] + sum_j g_j[k] * h_prev[j]     (no input weight)
        h[k] = l[k] * x[k] + sum_j g_j[k] * h_prev[j]                  (input_weight l)

    over the valid neighbours ``j`` of ``k`` in the previous line (``k-1, k, k+1`` for
    three-way gates, gate slots 0, 1, 2; ``k`` for one-way). Out-of-range neighbours are
    dropped from the sums. The exact contract is ``docs/spec/propagation.md`` (version 2);
    :func:`propagate_ref` is the readable twin.

    Args:
        x: the map to propagate.
        gates: raw gates. ``normalize`` (``None``, ``"clip"``, ``"always"`` or ``"gspn"``)
            normalises them over their ``K`` slots inside the kernel, forward and backward,
            as :func:`normalize_gates` would (``None``: used as given).
        direction: ``"left_to_right"``, ``"right_to_left"``, ``"top_to_bottom"`` or
            ``"bottom_to_top"`` (or its index 0..3).
        input_weight: GSPN's ``lambda`` (the weight of ``x``), or ``None``.
        chunk: scan lines per independently scanned chunk (GSPN's local scans), or ``None``.

    Shape:
        - x: ``(B, C, H, W)``, float32/float64 (float16/bfloat16 computed in float32)
        - gates: ``(B, K, Cg, H, W)``, ``K`` in {1, 3}, ``Cg`` in {1, C}
        - input_weight: ``(B, Cl, H, W)``, ``Cl`` in {1, C}
        - output: ``(B, C, H, W)``, differentiable in ``x``, ``gates`` and ``input_weight``

    Example:
        >>> x = torch.tensor([[[[1.0, 0.0, 0.0]]]])
        >>> g = torch.full((1, 1, 1, 1, 3), 2.0)               # raw one-way gates
        >>> propagate(x, g, "left_to_right", normalize="clip")  # 2 / max(|2|, 1) = 1
        tensor([[[[1., 1., 1.]]]])
    """
    check_pair(x, gates)
    d = direction_index(direction)
    check_normalize(normalize)
    check_input_weight(x, input_weight)
    chunk = check_chunk(chunk)
    check_size(x, gates, input_weight)
    if not _backend.use_ops(x):
        return propagate_ref(x, gates, d, normalize=normalize, input_weight=input_weight, chunk=chunk)
    x, gates, input_weight, orig = _upcast(x, gates, input_weight)
    h = torch.ops.spn.propagate_fwd(x, gates, input_weight, d, NORMALIZE_CODES[normalize], chunk or 0)
    return h if orig is None else h.to(orig)


def propagate4(x: torch.Tensor, gates: torch.Tensor, merge: str = "max", *, normalize: str | None = None,
               input_weight: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Propagate in all four directions, each with its own gates, and merge node-wise.

    Each direction ``d`` runs :func:`propagate` with ``gates[:, d]`` (and ``input_weight[:, d]``);
    the compiled kernel fuses the four scans, the gate normalisation and the merge, and its
    backward keeps only the four forward outputs.

    Args:
        x: the map to propagate.
        gates: raw gates, directions in the order left_to_right, right_to_left,
            top_to_bottom, bottom_to_top (what a CNN's ``4*K*Cg`` channels reshape into).
        merge: ``"max"`` (the paper; NaN-propagating, the gradient goes to the first direction
            attaining the max), ``"mean"``, ``"sum"`` or ``"none"`` (the four maps stacked).
        normalize: ``None``, ``"clip"``, ``"always"`` or ``"gspn"`` (see :func:`propagate`).
        input_weight: GSPN's ``lambda`` per direction, or ``None``.
        chunk: scan lines per independently scanned chunk, or ``None``.

    Shape:
        - x: ``(B, C, H, W)``
        - gates: ``(B, 4, K, Cg, H, W)``
        - input_weight: ``(B, 4, Cl, H, W)``
        - output: ``(B, C, H, W)``; ``(B, 4, C, H, W)`` for ``merge="none"``

    Example:
        >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, 1, 1] = 1.0
        >>> g = torch.full((1, 4, 3, 1, 3, 3), 0.5)             # raw three-way gates, shared
        >>> propagate4(x, g, normalize="clip").shape
        torch.Size([1, 1, 3, 3])
    """
    check_pair(x, gates, n_dirs=4)
    check_merge(merge)
    check_normalize(normalize)
    check_input_weight(x, input_weight, n_dirs=4)
    chunk = check_chunk(chunk)
    check_size(x, gates, input_weight, four=True)
    if not _backend.use_ops(x):
        return propagate4_ref(x, gates, merge, normalize=normalize, input_weight=input_weight, chunk=chunk)
    x, gates, input_weight, orig = _upcast(x, gates, input_weight)
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, gates, input_weight))
    out, _ = torch.ops.spn.propagate4_fwd(x, gates, input_weight, MERGE_CODES[merge], NORMALIZE_CODES[normalize],
                                          chunk or 0, save)
    return out if orig is None else out.to(orig)


__all__ = ["DIRECTIONS", "MERGES", "propagate", "propagate4", "propagate_ref", "propagate4_ref"]
