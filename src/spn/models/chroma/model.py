"""The chroma SPN module, its config and its registration (see :mod:`spn.models.chroma`)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ...image.resample import area_downsample, bilinear_upsample, check_factor, low_size
from ...nn import CONNECTIONS, SpatialPropagation
from ...ops import DIRECTIONS, propagate
from ...utils.config import option
from ..blocks import UNet, check_maps
from ..registry import register_model
from .fast import forward_fast
from .similarity import gate_slots, luma_similarity, similarity_planes

__all__ = ["CHROMA_MERGES", "GATE_MODES", "ChromaSPN", "ChromaSPNConfig", "check_chroma_inputs"]

_MODEL = "model"
#: merges that keep the chroma's scale ("sum" would multiply it by four)
CHROMA_MERGES = ("mean", "max", "learned")
#: how the guidance network's output becomes gates (see ChromaSPNConfig.gates)
GATE_MODES = ("slots", "strength")


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


def check_chroma_inputs(luma, chroma_low, factor: int) -> None:
    """Clear errors for inputs that are not ``luma (B, 1, H, W)`` and ``chroma_low (B, 2,
    ceil(H/F), ceil(W/F))`` floating tensors."""
    check_maps(luma=(luma, 1), chroma_low=(chroma_low, 2))
    if chroma_low.shape[0] != luma.shape[0]:
        raise ValueError(f"luma and chroma_low differ in batch size: {luma.shape[0]} vs {chroma_low.shape[0]}")
    want = low_size(luma.shape[-2:], factor)
    if tuple(chroma_low.shape[-2:]) != want:
        H, W = luma.shape[-2:]
        raise ValueError(f"chroma_low is {chroma_low.shape[-2]}x{chroma_low.shape[-1]} but the factor-{factor} "
                         f"subsampling of a {H}x{W} luma is {want[0]}x{want[1]}")


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
                for d, j, off in gate_slots(k):
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
        """The fast inference path (:func:`spn.models.chroma.fast.forward_fast`)."""
        return forward_fast(self, luma, chroma_low, f)


@register_model("chroma_one_way", ChromaSPNConfig, "chroma SPN (guided chroma upsampling), one-way (k = 1)")
def chroma_one_way(cfg: ChromaSPNConfig) -> ChromaSPN:
    """The chroma SPN with the one-way connection."""
    return ChromaSPN(cfg, "one_way")


@register_model("chroma_three_way", ChromaSPNConfig, "chroma SPN (guided chroma upsampling), three-way (k = 3)")
def chroma_three_way(cfg: ChromaSPNConfig) -> ChromaSPN:
    """The chroma SPN with the three-way connection."""
    return ChromaSPN(cfg, "three_way")
