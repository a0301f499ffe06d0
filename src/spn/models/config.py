"""Model configurations (dataclasses). ``model.config`` is ``dataclasses.asdict`` of these."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..ops.normalize import NORMALIZE_MODES
from ..ops.propagation import MERGES


def _positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


@dataclass
class BaselineConfig:
    """The paper's baseline CNN: a symmetric U-Net on the image downsampled by ``factor``.

    ``num_classes``: output classes K. ``width``: channels of the first level (doubling per
    level, capped at ``max_width``). ``depth``: number of stride-2 levels of the U-Net (at the
    working resolution). ``factor``: the working resolution is ``1/factor`` of the input (8 in
    the paper); logits are bilinearly upsampled back to the input size.
    """

    num_classes: int
    width: int = 16
    depth: int = 3
    factor: int = 8
    max_width: int = 256

    def __post_init__(self):
        _positive_int("num_classes", self.num_classes)
        _positive_int("width", self.width)
        _positive_int("depth", self.depth)
        _positive_int("factor", self.factor)
        _positive_int("max_width", self.max_width)


@dataclass
class SPNConfig:
    """The SPN refiner (three-way or one-way: the connection comes from the model name).

    ``num_classes``: K, classes of the coarse input and of the output.
    ``channels``: C', channels of the propagated hidden map (32 in the paper).
    ``guidance_width`` / ``guidance_depth``: first-level width and number of stride-2 levels of
    the guidance U-Net. ``guidance_coarse``: also feed the coarse scores to the guidance network.
    ``scale``: the propagation runs at ``1/scale`` of the input resolution (1 or 2; 2 = half,
    the paper's 64x64 for 128x128 patches). ``propagations``: how many times the SPN layer is
    applied (same gates). ``shared_gates``: one gate map for all C' channels (Cg = 1) instead
    of one per channel. ``normalize`` / ``merge``: see :class:`spn.nn.SpatialPropagation`.
    ``residual``: add ``log(coarse + eps)`` to the logits, so the network learns a correction of
    the coarse input. ``gate_init_std``: std of the guidance output layer's initial weights
    (small, so the untrained SPN is close to the identity).
    """

    num_classes: int
    channels: int = 32
    guidance_width: int = 16
    guidance_depth: int = 3
    guidance_coarse: bool = False
    scale: int = 2
    propagations: int = 1
    shared_gates: bool = False
    normalize: str = "clip"
    merge: str = "max"
    residual: bool = True
    eps: float = 1e-4
    gate_init_std: float = 1e-3

    def __post_init__(self):
        _positive_int("num_classes", self.num_classes)
        _positive_int("channels", self.channels)
        _positive_int("guidance_width", self.guidance_width)
        _positive_int("guidance_depth", self.guidance_depth)
        _positive_int("propagations", self.propagations)
        if self.scale not in (1, 2):
            raise ValueError(f"scale must be 1 (full resolution) or 2 (half resolution), got {self.scale!r}")
        if self.guidance_depth < self.scale - 1:
            raise ValueError("guidance_depth must be >= 1 when scale is 2")
        for flag in ("guidance_coarse", "shared_gates", "residual"):
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


def config_fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]
