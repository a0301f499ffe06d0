"""The chroma SPN: guided chroma upsampling with a learned spatial propagation (task ``chroma``).

A colour photograph in BT.601 YCbCr keeps its luma ``Y`` at full resolution and its chroma
``(Cb, Cr)`` subsampled ``F`` times (area averaging, :func:`spn.image.resample.area_downsample`;
4:2:0 video and JPEG do this with ``F = 2``). The model restores full-resolution chroma:

1. ``up``: the subsampled chroma upsampled bilinearly (aligned with the area averaging,
   :func:`~spn.image.resample.bilinear_upsample`): the map to propagate, ``(B, 2, H, W)``;
2. gates: a guidance U-Net sees the luma, its detail lost to the subsampling
   (``Y - up(down(Y))``) and ``up``, area-downsampled by ``guidance_scale``. Its ``k`` outputs of
   each direction (and gate channel) and a fixed zero are passed through a softmax, and the
   first ``k`` are the gates: non-negative and summing to less than one, so the propagation is
   stable by construction (Theorem 3) and needs no normalisation. They are upsampled back with
   the aligned bilinear upsampling (which keeps both properties). With ``edge_aware`` every gate
   is then multiplied by ``exp(-lambda |Y(p) - Y(n)|)`` (at most one), the luma similarity of the
   pixel ``p`` and the neighbour ``n`` it reads in the previous scan line (``lambda`` learned):
   the gates see full-resolution luma edges although the network runs at lower resolution;
3. ``h = SpatialPropagation(up, gates)`` (``normalize=None``; one gate map shared by Cb and Cr,
   ``Cg = 1``; four directions, ``merge`` "mean"; ``propagations`` times), one-way or three-way;
4. output: ``up + M (h - up)``, ``M`` a learned 2 x 2 channel mix starting at the identity: the
   refined chroma is a residual on the bilinear one. With zero gates it *is* the bilinear
   chroma, exactly and unshifted (tested).

Chroma is in the [0, 1] convention of JPEG (``Cb, Cr = 0.5`` for grey); see
:mod:`spn.image.color` for the conversions.

Shape:
    - luma: ``(B, 1, H, W)`` float in [0, 1]
    - chroma_low: ``(B, 2, ceil(H/F), ceil(W/F))``
    - output: ``(B, 2, H, W)``

Example:
    >>> import torch
    >>> from spn.models import create_model
    >>> net = create_model("chroma_three_way", factor=4, guidance_width=4).eval()
    >>> y, low = torch.rand(1, 1, 30, 45), torch.rand(1, 2, 8, 12)
    >>> net(y, low).shape
    torch.Size([1, 2, 30, 45])
"""
from __future__ import annotations

from .fast import forward_fast
from .model import CHROMA_MERGES, GATE_MODES, ChromaSPN, ChromaSPNConfig, check_chroma_inputs
from .similarity import NEIGHBOURS, gate_slots, luma_similarity, similarity_planes
from .workspace import WORKSPACE_LIMIT_BYTES, Buffers, release_workspace

__all__ = ["CHROMA_MERGES", "GATE_MODES", "NEIGHBOURS", "WORKSPACE_LIMIT_BYTES", "Buffers", "ChromaSPN",
           "ChromaSPNConfig", "check_chroma_inputs", "forward_fast", "gate_slots", "luma_similarity",
           "release_workspace", "similarity_planes"]
