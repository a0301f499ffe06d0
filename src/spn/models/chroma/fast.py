"""The chroma SPN's fast inference path: :meth:`ChromaSPN.forward` without autograd, fused by
hand (the same arithmetic up to float rounding, tested against the general path).
"""
from __future__ import annotations

import torch

from ...image.resample import (area_downsample, bilinear_upsample, low_size, upsample_height,
                               upsample_then_area_matrix, upsample_width)
from .similarity import gate_slots, similarity_planes
from .workspace import Buffers

__all__ = ["forward_fast"]


def forward_fast(self, luma: torch.Tensor, chroma_low: torch.Tensor, f: int) -> torch.Tensor:
    """:meth:`ChromaSPN.forward` of the model ``self`` without autograd, the same arithmetic up to float rounding (tested
    against the general path): full-resolution maps are written in place into reused
    buffers (see :data:`WORKSPACE_LIMIT_BYTES`); the bilinear upsampling is the separable
    :func:`~spn.image.resample.bilinear_upsample` with ``out``; the guidance input comes
    from the low maps (:func:`~spn.image.resample.upsample_then_area_matrix`); the guidance
    network runs channels-last; the slot softmax is written out; the luma similarity is
    computed once per pair of opposite neighbour offsets (:func:`similarity_planes`) and
    multiplied into each slot's gates right after their upsampling; the channel mix is done
    in place on the propagated map."""
    B, _, H, W = luma.shape
    s, k, cg = self.cfg.guidance_scale, self.k, self.cg
    buf = Buffers(luma)
    lh = max(low_size((H, W), f)[0], low_size((H, W), s)[0]) + 2
    scratch = buf("scratch", (B * 2 * lh * W,))
    # the bilinear chroma, centred (the map to propagate)
    up = bilinear_upsample(chroma_low, f, (H, W), out=buf("up", (B, 2, H, W)), scratch=scratch).sub_(0.5)
    # the guidance input at 1/s: area averages of the bilinear upsampling by f are linear in
    # the low map, My.T @ low @ Mx, so the full-resolution luma detail is never made
    my = upsample_then_area_matrix(H, f, s, dtype=luma.dtype, device=luma.device)
    mx = upsample_then_area_matrix(W, f, s, dtype=luma.dtype, device=luma.device)
    luma_s = area_downsample(luma, s)
    parts = [luma_s - 0.5, luma_s - my.t() @ area_downsample(luma, f) @ mx]
    if self.cfg.guidance_chroma:
        parts.append(my.t() @ chroma_low @ mx - 0.5)
    # channels-last: the same convolutions, faster on CPU for these narrow layers
    raw = self.guidance(torch.cat(parts, dim=1).contiguous(memory_format=torch.channels_last))
    raw = raw.contiguous()
    h, w = raw.shape[-2:]
    ng = 4 * k * cg
    # the softmax over the k slots and a zero logit, written out (faster than torch.softmax
    # over a middle dimension): g_j = exp(l_j - m) / (exp(-m) + sum_i exp(l_i - m))
    logits = raw[:, :ng].reshape(B, 4, k, cg, h, w)
    top = logits.amax(dim=2, keepdim=True).clamp_min_(0)
    e = (logits - top).exp_()
    low = e.div_(e.sum(dim=2, keepdim=True).add_(top.neg_().exp_())).reshape(B, ng, h, w)
    gates = buf("gates", (B, 4, k, cg, H, W))
    flat = gates.view(B, ng, H, W)
    planes = similarity_planes(luma, k, self.log_edge_scale.exp(), buffers=buf) if self.cfg.edge_aware else {}
    if s == 1:
        flat.copy_(low)
    else:  # along the width for all slots at once, then along the height slot by slot
        tmp = buf("scratch", (B, ng, h + 2, W))
        upsample_width(torch.nn.functional.pad(low, (1, 1, 1, 1), mode="replicate"), s, tmp)
    for d, j, off in gate_slots(k):  # one slot at a time: its upsampled gates are still in cache
        c = (d * k + j) * cg
        g = flat[:, c:c + cg]
        if s > 1:
            upsample_height(tmp[:, c:c + cg], s, g)
        if planes:
            g.mul_(planes[off])
    x = up
    for _ in range(self.cfg.propagations):
        x = self.propagation(x, gates)
    # out = up + M (x - up) + 0.5, in place on x (the operator's fresh output)
    d = x.sub_(up)
    d0, d1 = d[:, 0], d[:, 1]
    keep = buf("keep", d0.shape).copy_(d0)
    (m00, m01), (m10, m11) = self.mix.tolist()
    d0.mul_(m00).add_(d1, alpha=m01)
    d1.mul_(m11).add_(keep, alpha=m10)
    return d.add_(up).add_(0.5)
