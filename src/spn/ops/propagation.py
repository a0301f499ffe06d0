"""Public propagation operator: one direction, or four directions merged node-wise."""
from __future__ import annotations

import torch

from . import _backend
from ._validate import DIRECTIONS, check_chunk, check_input_weight, check_pair, direction_index
from .normalize import check_normalize
from .reference import MERGES, check_merge, propagate4_ref, propagate_ref

_KERNEL_MERGES = ("max", "mean", "sum")

_KERNEL_DTYPES = (torch.float32, torch.float64)


def _merge_index(merge: str) -> int:
    check_merge(merge)
    return _KERNEL_MERGES.index(merge)


def _upcast(x: torch.Tensor, gates: torch.Tensor):
    """Half-precision inputs run in float32 (float32 accumulation) and are cast back."""
    if x.dtype in _KERNEL_DTYPES:
        return x, gates, None
    return x.float(), gates.float(), x.dtype


def propagate(x: torch.Tensor, gates: torch.Tensor, direction, *, normalize: str | None = None,
              input_weight: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Linear spatial propagation in one direction (Liu et al. 2017, Eq. 1, 9, 10).

    For the first scanned line ``h = x``; for every later line, at lateral index ``k``::

        h[k] = (1 - sum_j g_j[k]) * x[k] + sum_j g_j[k] * h_prev[j]

    over the valid neighbours ``j`` of ``k`` in the previous line (``k-1, k, k+1`` for
    three-way gates, gate slots 0, 1, 2; ``k`` for one-way). Out-of-range neighbours are
    dropped from both sums. Gates are used as given (see :func:`normalize_gates`).

    Args:
        x: ``(B, C, H, W)`` float tensor.
        gates: ``(B, K, Cg, H, W)`` with ``K`` in {1, 3} and ``Cg`` in {1, C}.
        direction: ``"left_to_right"``, ``"right_to_left"``, ``"top_to_bottom"`` or
            ``"bottom_to_top"`` (or its index 0..3).

    Returns:
        ``(B, C, H, W)`` propagated map, differentiable in ``x`` and ``gates``.
    """
    check_pair(x, gates)
    d = direction_index(direction)
    check_normalize(normalize)
    check_input_weight(x, input_weight)
    chunk = check_chunk(chunk)
    if _backend.use_triton(x):  # GPU backend (issue 8): CUDA tensors, or SPN_BACKEND=triton
        return _backend.triton_ops().propagate(x, gates, d, normalize=normalize, input_weight=input_weight,
                                               chunk=chunk)
    if normalize is not None or input_weight is not None or chunk is not None or not _backend.use_kernel(x):
        # TODO(issue 12): the version-2 arguments run on the reference until the kernels take them
        return propagate_ref(x, gates, d, normalize=normalize, input_weight=input_weight, chunk=chunk)
    x, gates, orig = _upcast(x, gates)
    h = torch.ops.spn.propagate_fwd(x, gates, d)
    return h if orig is None else h.to(orig)


def propagate4(x: torch.Tensor, gates: torch.Tensor, merge: str = "max", *, normalize: str | None = None,
               input_weight: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Propagate in all four directions, each with its own gates, and merge node-wise.

    Args:
        x: ``(B, C, H, W)``.
        gates: ``(B, 4, K, Cg, H, W)``, directions in the order left_to_right,
            right_to_left, top_to_bottom, bottom_to_top.
        merge: ``"max"`` (the paper; ties resolve to the first direction in that order),
            ``"mean"`` or ``"sum"``.

    Returns:
        ``(B, C, H, W)``. The compiled path fuses the four scans and the merge; its backward
        keeps only the four forward outputs.
    """
    check_pair(x, gates, n_dirs=4)
    check_merge(merge)
    check_normalize(normalize)
    check_input_weight(x, input_weight, n_dirs=4)
    chunk = check_chunk(chunk)
    if _backend.use_triton(x):  # GPU backend (issue 8): CUDA tensors, or SPN_BACKEND=triton
        return _backend.triton_ops().propagate4(x, gates, merge, normalize=normalize, input_weight=input_weight,
                                                chunk=chunk)
    if (merge == "none" or normalize is not None or input_weight is not None or chunk is not None
            or not _backend.use_kernel(x)):
        # TODO(issue 12): the version-2 arguments run on the reference until the kernels take them
        return propagate4_ref(x, gates, merge, normalize=normalize, input_weight=input_weight, chunk=chunk)
    m = _merge_index(merge)
    x, gates, orig = _upcast(x, gates)
    save = torch.is_grad_enabled() and (x.requires_grad or gates.requires_grad)
    out, _ = torch.ops.spn.propagate4_fwd(x, gates, m, save)
    return out if orig is None else out.to(orig)


__all__ = ["DIRECTIONS", "MERGES", "propagate", "propagate4", "propagate_ref", "propagate4_ref"]
