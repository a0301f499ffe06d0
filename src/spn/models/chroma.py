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

import dataclasses
import math
import threading
from dataclasses import dataclass

import torch
from torch import nn

from ..nn import CONNECTIONS, SpatialPropagation
from ..ops import DIRECTIONS, propagate
from ..utils.config import option
from .blocks import UNet
from .registry import register_model
from ..image.resample import (area_downsample, bilinear_upsample, check_factor, low_size, upsample_height,
                       upsample_then_area_matrix, upsample_width)

__all__ = ["CHROMA_MERGES", "ChromaSPN", "ChromaSPNConfig", "NEIGHBOURS", "WORKSPACE_LIMIT_BYTES",
           "check_chroma_inputs", "luma_similarity", "release_workspace", "similarity_planes"]

_MODEL = "model"
#: merges that keep the chroma's scale ("sum" would multiply it by four)
CHROMA_MERGES = ("mean", "max", "learned")
#: how the guidance network's output becomes gates (see ChromaSPNConfig.gates)
GATE_MODES = ("slots", "strength")

#: The neighbour ``(dy, dx)`` a destination pixel reads through gate slot ``j`` of each direction
#: (three-way; one-way uses the middle slot), in the order of :data:`spn.ops.DIRECTIONS`: the
#: previous scan line, slot 0 at the lower lateral index (the operator's contract).
NEIGHBOURS = {
    "left_to_right": ((-1, -1), (0, -1), (1, -1)),
    "right_to_left": ((-1, 1), (0, 1), (1, 1)),
    "top_to_bottom": ((-1, -1), (-1, 0), (-1, 1)),
    "bottom_to_top": ((1, -1), (1, 0), (1, 1)),
}


@dataclass
class ChromaSPNConfig:
    """The chroma SPN (three-way or one-way: the connection comes from the model name).

    The guidance U-Net has ``guidance_width`` channels at its first level and
    ``guidance_depth`` stride-2 levels, and runs at ``1/guidance_scale`` of the image.
    ``factor`` is the chroma subsampling the model was trained for (the default of
    :meth:`ChromaSPN.forward`).
    """

    factor: int = option(8, help="chroma subsampling factor F the model is trained for", cli=False)
    guidance_width: int = option(8, help="channels of the first level of the guidance U-Net", cli=False)
    guidance_depth: int = option(2, help="stride-2 levels of the guidance U-Net", cli=False)
    guidance_scale: int = option(4, help="chroma SPN: the guidance network runs at 1/N of the image (1, 2 or 4)",
                                 flags=("--guidance-scale",), minimum=1, metavar="N", group=_MODEL)
    guidance_chroma: bool = option(True, help="the guidance network also sees the bilinear chroma", cli=False)
    edge_aware: bool = option(True, help="multiply the gates by the full-resolution luma similarity",
                              flags=(), negative="--no-edge-aware", negative_value=False, group=_MODEL,
                              negative_help="chroma SPN: gates from the guidance network alone (no luma "
                                            "similarity factor)")
    edge_scale: float = option(10.0, help="initial lambda of the luma similarity exp(-lambda |dY|)", cli=False)
    shared_gates: bool = option(True, help="one gate map for Cb and Cr (Cg = 1) instead of one each", cli=False)
    propagations: int = option(1, help="apply the propagation this many times (same gates)", cli=False)
    merge: str = option("mean", help="how the four directions are merged: mean, max, or learned (per-pixel "
                                     "weights from the guidance network)", cli=False)
    luma_detail: bool = option(False, help="add gain x luma detail (gains from the guidance network) to the "
                                           "bilinear chroma before the propagation", cli=False)
    gates: str = option("slots", help="slots: the network gives every gate (4 k Cg maps, a softmax over the k slots "
                                      "and a zero); strength: it gives one strength per direction (4 Cg maps, a "
                                      "sigmoid), shared by the k slots, times the luma similarity / k (cheaper: "
                                      "fewer maps to upsample)", cli=False)
    gate_init_std: float = option(1e-3, help="std of the guidance output layer's initial weights", cli=False)
    gate_init_bias: float = option(-4.0, help="initial bias of the gate logits (-4: gates near 0.02, the "
                                              "model starts close to the bilinear chroma)", cli=False)

    def __post_init__(self):
        for name in ("factor", "guidance_width", "guidance_depth", "guidance_scale", "propagations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.guidance_scale not in (1, 2, 4):
            raise ValueError(f"guidance_scale must be 1, 2 or 4, got {self.guidance_scale}")
        for flag in ("guidance_chroma", "edge_aware", "shared_gates", "luma_detail"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.gates not in GATE_MODES:
            raise ValueError(f"gates must be one of {', '.join(GATE_MODES)}, got {self.gates!r}")
        if self.merge not in CHROMA_MERGES:
            raise ValueError(f"merge must be one of {', '.join(CHROMA_MERGES)}, got {self.merge!r}")
        for name in ("edge_scale", "gate_init_std"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.edge_scale <= 0:
            raise ValueError(f"edge_scale must be > 0, got {self.edge_scale}")
        if isinstance(self.gate_init_bias, bool) or not isinstance(self.gate_init_bias, (int, float)) \
                or not math.isfinite(self.gate_init_bias):
            raise ValueError(f"gate_init_bias must be a finite number, got {self.gate_init_bias!r}")


#: The fast inference path keeps its full-resolution buffers (the gates, the bilinear chroma,
#: the similarity maps: 78 MiB per megapixel for three-way, 38 MiB for one-way) between calls,
#: per thread, up to this many bytes in all (about 6.5 MP three-way); larger images get fresh
#: buffers. Reusing them matters on CPU:
#: a fresh large tensor costs a page fault per 4 KiB page when first written, which took longer
#: than the arithmetic on the gates.
WORKSPACE_LIMIT_BYTES = 512 * 2 ** 20
_WORKSPACE = threading.local()


def release_workspace() -> None:
    """Free this thread's buffers of the fast inference path (:meth:`ChromaSPN.forward` under
    ``torch.no_grad()``); the next call allocates them again."""
    _WORKSPACE.__dict__.clear()


class _Buffers:
    """Named buffers for one call: cached per thread and reused (flat storages, grown as needed)
    while their total stays within :data:`WORKSPACE_LIMIT_BYTES`, else fresh."""

    def __init__(self, like: torch.Tensor):
        self.like = like
        self.cache = _WORKSPACE.__dict__.setdefault("storages", {})

    def __call__(self, name: str, shape) -> torch.Tensor:
        n = math.prod(int(v) for v in shape)
        key = (name, self.like.dtype, self.like.device)
        flat = self.cache.get(key)
        if flat is not None and flat.is_inference() and not torch.is_inference_mode_enabled():
            flat = None  # made under torch.inference_mode(): not writable outside it
        if flat is None or flat.numel() < n:
            self.cache.pop(key, None)
            total = sum(t.numel() * t.element_size() for t in self.cache.values())
            size = self.like.element_size()
            # 25% headroom, so that a slightly larger next image reuses the buffer: untouched
            # pages of an allocation cost nothing until written
            cap = n + n // 4 if total + (n + n // 4) * size <= WORKSPACE_LIMIT_BYTES else n
            flat = self.like.new_empty(cap)
            if total + cap * size <= WORKSPACE_LIMIT_BYTES:
                self.cache[key] = flat
        return flat[:n].view(*shape)


def check_chroma_inputs(luma, chroma_low, factor: int) -> None:
    """Clear errors for inputs that are not ``luma (B, 1, H, W)`` and ``chroma_low (B, 2,
    ceil(H/F), ceil(W/F))`` floating tensors."""
    for name, t, c in (("luma", luma, 1), ("chroma_low", chroma_low, 2)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4 or t.shape[1] != c:
            raise ValueError(f"{name} must be (B, {c}, H, W), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    if chroma_low.shape[0] != luma.shape[0]:
        raise ValueError(f"luma and chroma_low differ in batch size: {luma.shape[0]} vs {chroma_low.shape[0]}")
    want = low_size(luma.shape[-2:], factor)
    if tuple(chroma_low.shape[-2:]) != want:
        H, W = luma.shape[-2:]
        raise ValueError(f"chroma_low is {chroma_low.shape[-2]}x{chroma_low.shape[-1]} but the factor-{factor} "
                         f"subsampling of a {H}x{W} luma is {want[0]}x{want[1]}")


def _slots(k: int):
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
    offsets = list(dict.fromkeys(off for _, _, off in _slots(k)))
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
    return torch.cat([planes[off] for _, _, off in _slots(k)], dim=1).reshape(B, 4, k, 1, H, W)


class ChromaSPN(nn.Module):
    """Full-resolution chroma from luma + subsampled chroma (see the module docstring).

    ``connection``: ``"three_way"`` (model "chroma_three_way") or ``"one_way"``
    ("chroma_one_way").

    Shape:
        - luma: ``(B, 1, H, W)``, any ``H, W``
        - chroma_low: ``(B, 2, ceil(H/F), ceil(W/F))``
        - output: ``(B, 2, H, W)``

    Example:
        >>> import torch
        >>> from spn.models.chroma import ChromaSPN, ChromaSPNConfig
        >>> net = ChromaSPN(ChromaSPNConfig(factor=2, guidance_width=4), "one_way").eval()
        >>> net(torch.rand(2, 1, 16, 16), torch.rand(2, 2, 8, 8)).shape
        torch.Size([2, 2, 16, 16])
    """

    task = "chroma"

    def __init__(self, cfg: ChromaSPNConfig, connection: str = "three_way"):
        super().__init__()
        if connection not in CONNECTIONS:
            raise ValueError(f"unknown connection {connection!r}; valid: {', '.join(CONNECTIONS)}")
        self.cfg = cfg
        self.config = dataclasses.asdict(cfg)
        self.connection = connection
        self.name = f"chroma_{connection}"
        self.factor = cfg.factor
        self.k = CONNECTIONS[connection]
        self.cg = 1 if cfg.shared_gates else 2
        cin = 2 + (2 if cfg.guidance_chroma else 0)  # luma, luma detail, [Cb, Cr]
        ng = 4 * self.cg * (self.k if cfg.gates == "slots" else 1)
        cout = ng + (4 if cfg.merge == "learned" else 0) + (2 if cfg.luma_detail else 0)
        self.guidance = UNet(cin, cout, width=cfg.guidance_width, depth=cfg.guidance_depth, out_level=0,
                             stem_stride=1)
        nn.init.normal_(self.guidance.head.weight, std=cfg.gate_init_std)
        nn.init.zeros_(self.guidance.head.bias)
        nn.init.constant_(self.guidance.head.bias[:ng], cfg.gate_init_bias)
        self.log_edge_scale = nn.Parameter(torch.tensor(math.log(cfg.edge_scale)))
        if cfg.merge == "learned":
            self.merge_beta = nn.Parameter(torch.tensor(4.0))
        # the gates are stable by construction (softmax with a zero slot, times similarities <= 1)
        self.propagation = SpatialPropagation(connection, merge="mean" if cfg.merge == "learned" else cfg.merge,
                                              normalize=None)
        self.mix = nn.Parameter(torch.eye(2))

    def upsampled(self, chroma_low: torch.Tensor, size, factor: int | None = None) -> torch.Tensor:
        """The bilinear chroma ``(B, 2, H, W)`` of ``chroma_low`` (the model's starting point)."""
        return bilinear_upsample(chroma_low, factor or self.factor, size)

    def guide(self, luma: torch.Tensor, up: torch.Tensor, factor: int) -> dict:
        """What the guidance network decides, from the luma and the bilinear chroma ``up``
        (centred: ``Cb - 0.5, Cr - 0.5``), all at full resolution:

        - ``"gates"`` ``(B, 4, k, Cg, H, W)``: non-negative, summing to less than one over the
          ``k`` slots;
        - ``"merge"`` ``(B, 4, 1, H, W)`` weights of the four directions (softmax), with
          ``merge="learned"``, else None;
        - ``"detail"`` ``(B, 2, H, W)`` the gains of the luma detail added to ``up`` before the
          propagation, with ``luma_detail``, else None.
        """
        B, _, H, W = luma.shape
        s, k, cg = self.cfg.guidance_scale, self.k, self.cg
        detail = luma - bilinear_upsample(area_downsample(luma, factor), factor, (H, W))
        parts = [area_downsample(luma - 0.5, s), area_downsample(detail, s)]
        if self.cfg.guidance_chroma:
            parts.append(area_downsample(up, s))
        raw = self.guidance(torch.cat(parts, dim=1))
        h, w = raw.shape[-2:]
        slots = self.cfg.gates == "slots"
        ng = 4 * cg * (k if slots else 1)
        if slots:  # softmax over the k slots and a fixed zero logit ("keep the input"): k gates >= 0, sum < 1
            logits = raw[:, :ng].reshape(B, 4, k, cg, h, w)
            logits = torch.cat([logits, logits.new_zeros(B, 4, 1, cg, h, w)], dim=2)
            low = [torch.softmax(logits, dim=2)[:, :, :k].reshape(B, ng, h, w)]
        else:  # one strength in (0, 1/k) per direction: k gates >= 0, sum < 1
            low = [torch.sigmoid(raw[:, :ng]) / k]
        if self.cfg.merge == "learned":
            low.append(raw[:, ng:ng + 4])
        if self.cfg.luma_detail:
            low.append(raw[:, -2:])
        full = bilinear_upsample(torch.cat(low, dim=1) if len(low) > 1 else low[0], s, (H, W))
        if slots:
            g = full[:, :ng].reshape(B, 4, k, cg, H, W)
        elif self.cfg.edge_aware:  # the similarities, times the strength of their direction
            g = luma_similarity(luma, k, self.log_edge_scale.exp())
            strength = full[:, :ng].reshape(B, 4, 1, cg, H, W)
            g = g * strength if torch.is_grad_enabled() else (g.mul_(strength) if cg == 1 else g * strength)
        else:
            g = full[:, :ng].reshape(B, 4, 1, cg, H, W).expand(B, 4, k, cg, H, W)
        if self.cfg.edge_aware and slots:
            scale = self.log_edge_scale.exp()
            if torch.is_grad_enabled():
                g = g * luma_similarity(luma, k, scale)
            else:  # the same product, in place and without stacking the similarity planes
                g = g.contiguous()
                planes = similarity_planes(luma, k, scale)
                for d, j, off in _slots(k):
                    g[:, d, j].mul_(planes[off])
        merge = None
        if self.cfg.merge == "learned":
            # the weight of a direction: the network's logit plus beta times the direction's gate
            # sum at the pixel (how strongly it is connected to where the scan came from; full
            # resolution, so that the two sides of a luma edge choose differently)
            logit = full[:, ng:ng + 4] + self.merge_beta * g.sum(dim=(2, 3))
            merge = torch.softmax(logit, dim=1)[:, :, None]
        return {"gates": g.contiguous(), "merge": merge,
                "detail": full[:, -2:] * detail if self.cfg.luma_detail else None}

    def gates(self, luma: torch.Tensor, up: torch.Tensor, factor: int) -> torch.Tensor:
        """The gates of :meth:`guide`."""
        return self.guide(luma, up, factor)["gates"]

    def propagate(self, x: torch.Tensor, gates: torch.Tensor, merge: torch.Tensor | None) -> torch.Tensor:
        """Four-direction propagation of ``x (B, 2, H, W)``: :class:`~spn.nn.SpatialPropagation`
        (mean or max merge), or, with learned merge weights ``(B, 4, 1, H, W)``, the four
        directions of :func:`spn.ops.propagate` weighted by them."""
        if merge is None:
            return self.propagation(x, gates)
        out = None
        for d, name in enumerate(DIRECTIONS):
            hd = propagate(x, gates[:, d], name) * merge[:, d]
            out = hd if out is None else out + hd
        return out

    def fast_path_applies(self) -> bool:
        """Whether :meth:`forward` without autograd takes the fast inference path
        (:meth:`_forward_fast`): :attr:`fast_inference` is on and the gates are the default
        "slots" kind, with the "mean" or "max" merge and no luma detail."""
        cfg = self.cfg
        return (getattr(self, "fast_inference", True) and cfg.gates == "slots" and cfg.merge != "learned"
                and not cfg.luma_detail)

    def forward(self, luma: torch.Tensor, chroma_low: torch.Tensor, factor: int | None = None) -> torch.Tensor:
        f = check_factor(factor) if factor is not None else self.factor
        check_chroma_inputs(luma, chroma_low, f)
        chroma_low = chroma_low.to(luma.dtype)
        if not torch.is_grad_enabled() and self.fast_path_applies():
            return self._forward_fast(luma, chroma_low, f)
        H, W = luma.shape[-2:]
        up = (self.upsampled(chroma_low, (H, W), f) - 0.5).contiguous()
        guide = self.guide(luma, up, f)
        x = up if guide["detail"] is None else (up + guide["detail"]).contiguous()
        h = x
        for _ in range(self.cfg.propagations):
            h = self.propagate(h, guide["gates"], guide["merge"])
        out = up + torch.einsum("oc,bchw->bohw", self.mix, h - up)
        return out + 0.5

    def _forward_fast(self, luma: torch.Tensor, chroma_low: torch.Tensor, f: int) -> torch.Tensor:
        """:meth:`forward` without autograd, the same arithmetic up to float rounding (tested
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
        buf = _Buffers(luma)
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
        for d, j, off in _slots(k):  # one slot at a time: its upsampled gates are still in cache
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


@register_model("chroma_one_way", ChromaSPNConfig, "chroma SPN (guided chroma upsampling), one-way (k = 1)")
def chroma_one_way(cfg: ChromaSPNConfig) -> ChromaSPN:
    """The chroma SPN with the one-way connection."""
    return ChromaSPN(cfg, "one_way")


@register_model("chroma_three_way", ChromaSPNConfig, "chroma SPN (guided chroma upsampling), three-way (k = 3)")
def chroma_three_way(cfg: ChromaSPNConfig) -> ChromaSPN:
    """The chroma SPN with the three-way connection."""
    return ChromaSPN(cfg, "three_way")
