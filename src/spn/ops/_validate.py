"""Input checks shared by every backend: clear Python errors, never a crash in C++."""
from __future__ import annotations

import torch

from ._codes import DIRECTION_CODES

#: the scan directions, in the order of their codes (the four-direction layouts' dim 1)
DIRECTIONS = tuple(sorted(DIRECTION_CODES, key=DIRECTION_CODES.get))


def direction_index(direction) -> int:
    """Map a direction name (or index 0..3) to its index in :data:`DIRECTIONS`."""
    if isinstance(direction, bool):
        raise TypeError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if isinstance(direction, int):
        if 0 <= direction < 4:
            return direction
        raise ValueError(f"unknown direction index {direction}; valid are 0..3 for {DIRECTIONS}")
    if isinstance(direction, str):
        try:
            return DIRECTIONS.index(direction)
        except ValueError:
            raise ValueError(
                f"unknown direction {direction!r}; valid directions are {', '.join(DIRECTIONS)}"
            ) from None
    raise TypeError(f"direction must be a string, one of {DIRECTIONS}, got {type(direction).__name__}")


def _check_tensor(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating dtype (float32/float64), got {t.dtype}")


def check_pair(x: torch.Tensor, gates: torch.Tensor, n_dirs: int | None = None) -> tuple[int, int]:
    """Validate ``x`` (B, C, H, W) against gates (B, K, Cg, H, W) or, when ``n_dirs`` is
    given, (B, n_dirs, K, Cg, H, W). Returns ``(K, Cg)``."""
    _check_tensor("x", x)
    _check_tensor("gates", gates)
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D (B, C, H, W), got shape {tuple(x.shape)}")
    want = 5 if n_dirs is None else 6
    layout = "(B, K, Cg, H, W)" if n_dirs is None else f"(B, {n_dirs}, K, Cg, H, W)"
    if gates.dim() != want:
        raise ValueError(f"gates must be {want}-D {layout}, got shape {tuple(gates.shape)}")
    if x.dtype != gates.dtype:
        raise TypeError(f"x and gates must share a dtype, got x {x.dtype} and gates {gates.dtype}")
    if x.device != gates.device:
        raise ValueError(f"x and gates must be on one device, got x on {x.device} and gates on {gates.device}")
    B, C, H, W = x.shape
    if n_dirs is not None:
        if gates.shape[1] != n_dirs:
            raise ValueError(f"gates must have {n_dirs} directions in dim 1 {layout}, got shape {tuple(gates.shape)}")
        gb, K, Cg, gh, gw = gates.shape[0], gates.shape[2], gates.shape[3], gates.shape[4], gates.shape[5]
    else:
        gb, K, Cg, gh, gw = gates.shape
    if K not in (1, 3):
        raise ValueError(f"gates must have K = 1 (one-way) or K = 3 (three-way) connections, got K = {K}")
    if gb != B:
        raise ValueError(f"batch size mismatch: x has B = {B}, gates have B = {gb}")
    if (gh, gw) != (H, W):
        raise ValueError(f"spatial size mismatch: x is {H}x{W}, gates are {gh}x{gw}")
    if Cg not in (1, C):
        raise ValueError(f"gates must have Cg = 1 (shared) or Cg = C = {C} channels, got Cg = {Cg}")
    if B == 0 or C == 0 or H == 0 or W == 0:
        raise ValueError(f"x must be non-empty, got shape {tuple(x.shape)}")
    return K, Cg


def check_input_weight(x: torch.Tensor, input_weight, n_dirs: int | None = None) -> int | None:
    """Validate GSPN's input weight ``(B, Cl, H, W)`` (or ``(B, n_dirs, Cl, H, W)``) against
    ``x`` (already checked). Returns ``Cl``, or ``None`` when there is no input weight."""
    if input_weight is None:
        return None
    _check_tensor("input_weight", input_weight)
    want = 4 if n_dirs is None else 5
    layout = "(B, Cl, H, W)" if n_dirs is None else f"(B, {n_dirs}, Cl, H, W)"
    if input_weight.dim() != want:
        raise ValueError(f"input_weight must be {want}-D {layout}, got shape {tuple(input_weight.shape)}")
    if input_weight.dtype != x.dtype:
        raise TypeError(f"x and input_weight must share a dtype, got x {x.dtype} and input_weight {input_weight.dtype}")
    if input_weight.device != x.device:
        raise ValueError(f"x and input_weight must be on one device, got x on {x.device} and input_weight on "
                         f"{input_weight.device}")
    B, C, H, W = x.shape
    if n_dirs is not None and input_weight.shape[1] != n_dirs:
        raise ValueError(f"input_weight must have {n_dirs} directions in dim 1 {layout}, got shape "
                         f"{tuple(input_weight.shape)}")
    lb, Cl, lh, lw = input_weight.shape[0], *input_weight.shape[-3:]
    if lb != B:
        raise ValueError(f"batch size mismatch: x has B = {B}, input_weight has B = {lb}")
    if (lh, lw) != (H, W):
        raise ValueError(f"spatial size mismatch: x is {H}x{W}, input_weight is {lh}x{lw}")
    if Cl not in (1, C):
        raise ValueError(f"input_weight must have Cl = 1 (shared) or Cl = C = {C} channels, got Cl = {Cl}")
    return Cl


def check_chunk(chunk) -> int | None:
    """``chunk`` is ``None`` (the whole map is one chunk) or a positive int of scan lines."""
    if chunk is None:
        return None
    if isinstance(chunk, bool) or not isinstance(chunk, int):
        raise TypeError(f"chunk must be None or a positive int (scan lines per chunk), got {chunk!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 scan line, got {chunk}")
    return chunk


#: the most elements of one batch item of any tensor the kernels index: the Triton kernels address
#: a batch item with 32-bit offsets (the C++ ones use 64-bit offsets, but one limit keeps a model
#: that runs on CPU runnable on a GPU, and refuses maps whose buffers would not fit in memory anyway)
MAX_ITEM_ELEMENTS = 2**31 - 1


def check_size(x: torch.Tensor, gates: torch.Tensor, input_weight=None, four: bool = False) -> None:
    """Refuse, before anything is allocated, maps whose batch items the kernels cannot index: per
    batch item, ``x``, the gates, the input weight and the directional maps the operator builds
    (``4 * C * H * W`` for four directions) must each hold at most :data:`MAX_ITEM_ELEMENTS`
    elements. Expanded views count at their full size: the outputs have it."""
    B, C, H, W = x.shape
    sizes = {"x": C * H * W, "gates": gates.numel() // max(B, 1)}
    if input_weight is not None:
        sizes["input_weight"] = input_weight.numel() // max(B, 1)
    if four:
        sizes["the four directional maps"] = 4 * C * H * W
    for name, n in sizes.items():
        if n > MAX_ITEM_ELEMENTS:
            raise ValueError(f"spn: {name} would hold {n} elements per batch item (x is {tuple(x.shape)}), more than "
                             f"the {MAX_ITEM_ELEMENTS} the propagation kernels index; split the map into tiles")
