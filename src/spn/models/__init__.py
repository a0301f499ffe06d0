"""Segmentation models: the baseline CNN and the SPN refiners (one-way and three-way).

Every model is an ``nn.Module`` with ``forward(image (B, 3, H, W), coarse (B, K, H, W) or None)
-> logits (B, K, H, W)``, a ``.name`` and a ``.config`` (the JSON-able kwargs it was built with).
Build them with :func:`create_model`.
"""
from __future__ import annotations

import dataclasses

from torch import nn

from .baseline import BaselineNet
from .blocks import ConvBlock, UNet
from .config import BaselineConfig, SPNConfig
from .spn import GuidanceNet, SPNRefiner

# name -> (config dataclass, builder(config) -> module, one-line description)
_REGISTRY = {
    "baseline": (BaselineConfig, BaselineNet, "baseline CNN: symmetric U-Net at 1/8 resolution (ignores coarse)"),
    "spn_one_way": (SPNConfig, lambda c: SPNRefiner(c, "one_way"), "SPN refiner, one-way connection (k = 1)"),
    "spn_three_way": (SPNConfig, lambda c: SPNRefiner(c, "three_way"), "SPN refiner, three-way connection (k = 3)"),
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return list(_REGISTRY)


def describe_models() -> dict[str, str]:
    return {k: v[2] for k, v in _REGISTRY.items()}


def model_config_class(name: str):
    """The config dataclass of model ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid models are {', '.join(_REGISTRY)}")
    return _REGISTRY[name][0]


def make_config(name: str, **cfg):
    """Validate ``cfg`` for model ``name`` and return its config dataclass.

    Unknown model -> ValueError listing the valid names; unknown keys -> TypeError naming them.
    """
    cls = model_config_class(name)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(cfg) - set(fields))
    if unknown:
        raise TypeError(f"unknown option(s) for model {name!r}: {', '.join(unknown)}; "
                        f"valid options are {', '.join(fields)}")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in cfg and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise TypeError(f"model {name!r} needs option(s) {', '.join(missing)}")
    return cls(**cfg)


def create_model(name: str, **cfg) -> nn.Module:
    """Build model ``name`` ("baseline", "spn_one_way", "spn_three_way") from keyword options
    (see :class:`BaselineConfig` and :class:`SPNConfig`; ``num_classes`` is required)."""
    config = make_config(name, **cfg)
    model = _REGISTRY[name][1](config)
    model.name = name
    return model


__all__ = [
    "BaselineConfig", "BaselineNet", "ConvBlock", "GuidanceNet", "SPNConfig", "SPNRefiner", "UNet",
    "create_model", "describe_models", "list_models", "make_config", "model_config_class",
]
