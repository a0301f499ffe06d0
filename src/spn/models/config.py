"""Model configurations (dataclasses) and the named SPN presets.

``model.config`` is ``dataclasses.asdict`` of these. Each field's help text is also the help of
its ``spn train`` option (the fields marked for the command line; the others are reachable with
``--model-option KEY=VALUE``).

Example:
    >>> from spn.models import SPNConfig
    >>> SPNConfig.from_name("fast", num_classes=6).shared_gates
    True
    >>> SPNConfig.from_name("paper", num_classes=6) == SPNConfig(num_classes=6)
    True
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ops.normalize import NORMALIZE_MODES
from ..ops.propagation import MERGES
from ..utils.config import option

#: Named SPN settings: options that differ from the :class:`SPNConfig` defaults.
#: "paper": the library defaults (per-channel gates Cg = C' = 32, guidance width 16).
#: "fast": one gate map shared by the channels (Cg = 1) and a narrow guidance network that also
#: sees the coarse scores; about 3x faster per 512 x 512 image (the settings of ``spn demo``).
SPN_PRESETS: dict[str, dict] = {
    "paper": {},
    "fast": {"channels": 16, "guidance_width": 8, "guidance_depth": 3, "guidance_coarse": True,
             "shared_gates": True},
}


def spn_preset(name: str) -> dict:
    """A copy of the options of preset ``name`` (unknown name -> ValueError listing the valid ones)."""
    if name not in SPN_PRESETS:
        raise ValueError(f"unknown SPN preset {name!r}; valid presets are {', '.join(SPN_PRESETS)}")
    return dict(SPN_PRESETS[name])


def _positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_positive_ints(cfg, names) -> None:
    for name in names:
        _positive_int(name, getattr(cfg, name))


_MODEL = "model"  # the --help group of the model options


@dataclass
class BaselineConfig:
    """The paper's baseline CNN: a symmetric U-Net on the image downsampled by ``factor``; its
    logits are bilinearly upsampled back to the input size."""

    num_classes: int = option(help="output classes K", cli=False)
    width: int = option(16, help="baseline: channels of the first level of its U-Net (doubling per level)",
                        flags=("--baseline-width",), minimum=1, metavar="N", group=_MODEL)
    depth: int = option(3, help="baseline: number of stride-2 levels of its U-Net",
                        flags=("--baseline-depth",), minimum=1, metavar="N", group=_MODEL)
    factor: int = option(8, help="the U-Net works at 1/factor of the input (8 in the paper)", cli=False)
    max_width: int = option(256, help="cap on the channels of a level", cli=False)

    def __post_init__(self):
        _check_positive_ints(self, ("num_classes", "width", "depth", "factor", "max_width"))


@dataclass
class SPNConfig:
    """The SPN refiner (three-way or one-way: the connection comes from the model name).

    ``scale`` 2 runs the propagation at half resolution (the paper's 64 x 64 for 128 x 128
    patches). ``residual`` adds ``log(coarse + eps)`` to the logits, so the network learns a
    correction of the coarse input. ``normalize`` / ``merge``: see
    :class:`spn.nn.SpatialPropagation`. Named settings: :meth:`from_name`.
    """

    num_classes: int = option(help="K, classes of the coarse input and of the output", cli=False)
    channels: int = option(32, help="SPN: channels C' of the propagated map", minimum=1, metavar="N",
                           group=_MODEL)
    guidance_width: int = option(16, help="SPN: channels of the first level of the guidance U-Net",
                                 minimum=1, metavar="N", group=_MODEL)
    guidance_depth: int = option(3, help="SPN: number of stride-2 levels of the guidance U-Net",
                                 minimum=1, metavar="N", group=_MODEL)
    guidance_coarse: bool = option(False, help="SPN: feed the coarse scores to the guidance network too",
                                   group=_MODEL)
    scale: int = option(2, help="the propagation runs at 1/scale of the input (1 or 2)", cli=False)
    propagations: int = option(1, help="SPN: apply the propagation this many times (same gates)",
                               minimum=1, metavar="N", group=_MODEL)
    shared_gates: bool = option(False, help="SPN: one gate map for all channels (Cg = 1) instead of one per channel",
                                group=_MODEL)
    normalize: str = option("clip", help="gate normalisation (Theorem 3)", cli=False)
    merge: str = option("max", help="how the four directions are merged", cli=False)
    residual: bool = option(True, help="add log(coarse + eps) to the logits", cli=False)
    eps: float = option(1e-4, help="the eps of the residual", cli=False)
    gate_init_std: float = option(1e-3, help="std of the guidance output layer's initial weights", cli=False)
    aligned: bool = option(True, help="4x4 stride-2 convs (embedding, guidance) centred where the bilinear "
                                      "upsampling reads them; False: 3x3 stride-2 convs, half a pixel off (the "
                                      "ablation of tests/test_alignment.py)", cli=False)

    def __post_init__(self):
        _check_positive_ints(self, ("num_classes", "channels", "guidance_width", "guidance_depth", "propagations"))
        if self.scale not in (1, 2):
            raise ValueError(f"scale must be 1 (full resolution) or 2 (half resolution), got {self.scale!r}")
        if self.guidance_depth < self.scale - 1:
            raise ValueError("guidance_depth must be >= 1 when scale is 2")
        for flag in ("guidance_coarse", "shared_gates", "residual", "aligned"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZE_MODES)}, got {self.normalize!r}")
        if self.merge not in MERGES or self.merge == "none":  # the refiner needs one merged map
            raise ValueError(f"merge must be one of {', '.join(m for m in MERGES if m != 'none')}, got {self.merge!r}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        if not self.gate_init_std >= 0:
            raise ValueError(f"gate_init_std must be >= 0, got {self.gate_init_std}")

    @classmethod
    def from_name(cls, name: str, num_classes: int, **overrides) -> "SPNConfig":
        """The config of preset ``name`` (see :data:`SPN_PRESETS`), with ``overrides`` on top."""
        return cls(num_classes=num_classes, **{**spn_preset(name), **overrides})
