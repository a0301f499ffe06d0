"""The luma similarity of the chroma SPN's gates: ``exp(-lambda |Y(p) - Y(n)|)`` for the
neighbour ``n`` each gate slot reads (:data:`NEIGHBOURS`).

Example:
    >>> import torch
    >>> from spn.models.chroma import luma_similarity
    >>> luma_similarity(torch.zeros(1, 1, 4, 5), 3, 10.0).shape
    torch.Size([1, 4, 3, 1, 4, 5])
"""
from __future__ import annotations

import torch

__all__ = ["NEIGHBOURS", "gate_slots", "luma_similarity", "similarity_planes"]

#: The neighbour ``(dy, dx)`` a destination pixel reads through gate slot ``j`` of each direction
#: (three-way; one-way uses the middle slot), in the order of :data:`spn.ops.DIRECTIONS`: the
#: previous scan line, slot 0 at the lower lateral index (the operator's contract).
NEIGHBOURS = {
    "left_to_right": ((-1, -1), (0, -1), (1, -1)),
    "right_to_left": ((-1, 1), (0, 1), (1, 1)),
    "top_to_bottom": ((-1, -1), (-1, 0), (-1, 1)),
    "bottom_to_top": ((1, -1), (1, 0), (1, 1)),
}


def gate_slots(k: int):
    """``(direction index, slot, (dy, dx))`` of every gate slot."""
    for d, name in enumerate(("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top")):
        for j, off in enumerate(NEIGHBOURS[name] if k == 3 else NEIGHBOURS[name][1:2]):
            yield d, j, off


#: The four luma differences every neighbour offset reads, on the edge-replicated luma ``Yp``
#: ``(B, 1, H + 2, W + 2)``: ``name -> ((rows, cols) of the first term, (rows, cols) of the
#: second)``, slices of ``Yp``; and every offset's ``(name, row start, col start)`` in that map.
#: ``|Y(p) - Y(p + o)|`` equals ``|Y(p - o) - Y(p)|`` of the opposite offset one pixel over, so
#: the eight offsets of three-way gates share four maps (two for one-way).
_EDGE_MAPS = {
    "h": ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),       # (H + 2, W + 1)
    "v": ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),       # (H + 1, W + 2)
    "d": ((slice(1, None), slice(1, None)), (slice(None, -1), slice(None, -1))),  # (H + 1, W + 1)
    "a": ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))),  # (H + 1, W + 1)
}
_OFFSET_MAPS = {(0, -1): ("h", 1, 0), (0, 1): ("h", 1, 1), (-1, 0): ("v", 0, 1), (1, 0): ("v", 1, 1),
                (-1, -1): ("d", 0, 0), (1, 1): ("d", 1, 1), (-1, 1): ("a", 0, 1), (1, -1): ("a", 1, 0)}


def similarity_planes(luma: torch.Tensor, k: int, scale, *, buffers=None) -> dict:
    """``{(dy, dx): exp(-scale |Y(p) - Y(p + (dy, dx))|)}`` ``(B, 1, H, W)`` for the neighbour
    offsets the gates of a ``k``-way connection read (8 for three-way, 4 for one-way); outside the
    image the luma is edge-replicated (the operator ignores those gates anyway).

    The planes are views of at most four difference maps (see ``_EDGE_MAPS``), each computed once.
    ``buffers`` (no autograd): a callable ``(name, shape) -> tensor`` giving the maps' storage,
    filled in place (the fast inference path's workspace).
    """
    H, W = luma.shape[-2:]
    yp = torch.nn.functional.pad(luma, (1, 1, 1, 1), mode="replicate")
    offsets = list(dict.fromkeys(off for _, _, off in gate_slots(k)))
    maps = {}
    for name in dict.fromkeys(_OFFSET_MAPS[o][0] for o in offsets):
        (r1, c1), (r2, c2) = _EDGE_MAPS[name]
        a, b = yp[..., r1, c1], yp[..., r2, c2]
        if buffers is None:
            maps[name] = torch.exp(-scale * (a - b).abs())
        else:
            m = torch.sub(a, b, out=buffers("sim_" + name, a.shape))
            maps[name] = m.abs_().mul_(-scale).exp_()
    out = {}
    for off in offsets:
        name, r, c = _OFFSET_MAPS[off]
        out[off] = maps[name][..., r:r + H, c:c + W]
    return out


def luma_similarity(luma: torch.Tensor, k: int, scale) -> torch.Tensor:
    """``exp(-scale |Y(p) - Y(n)|)`` for every direction and gate slot: ``(B, 4, k, 1, H, W)``,
    ``n`` the neighbour of :data:`NEIGHBOURS` (the middle one for ``k = 1``)."""
    planes = similarity_planes(luma, k, scale)
    B, _, H, W = luma.shape
    return torch.cat([planes[off] for _, _, off in gate_slots(k)], dim=1).reshape(B, 4, k, 1, H, W)
