"""The model registry: ``@register_model(name, config_cls, description)`` and
:func:`create_model`.

Every model is an ``nn.Module`` with ``forward(image (B, 3, H, W), coarse (B, K, H, W) or None)
-> logits (B, K, H, W)``, a ``.name`` and a ``.config`` (the JSON-able options it was built with,
``dataclasses.asdict`` of its config). A builder takes the validated config dataclass and returns
the module; :func:`create_model` validates the keyword options first, so an unknown model or
option is an error that lists the valid ones.

Example:
    >>> from spn.models import create_model, list_models
    >>> list_models()
    ['baseline', 'spn_one_way', 'spn_three_way', 'chroma_one_way', 'chroma_three_way', 'mask_refiner']
    >>> m = create_model("spn_three_way", num_classes=6, channels=8, guidance_width=8)
    >>> m.name, m.config["channels"]
    ('spn_three_way', 8)
    >>> create_model("nope", num_classes=6)
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'nope'; valid models are baseline, spn_one_way, spn_three_way, chroma_one_way, chroma_three_way, mask_refiner
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from torch import nn

# name -> (config dataclass, builder(config) -> module, one-line description)
_REGISTRY: dict[str, tuple[type, Callable, str]] = {}


def register_model(name: str, config_cls: type, description: str = ""):
    """Decorator: register ``builder(config) -> nn.Module`` (a function or a class) as model ``name``.

    ``config_cls`` is the dataclass of its options (``num_classes`` among them). Registering a
    name twice is an error.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a model name must be a non-empty string, got {name!r}")
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"model {name!r}: config_cls must be a dataclass, got {config_cls!r}")

    def deco(builder: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = (config_cls, builder, description)
        return builder

    return deco


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, in registration order."""
    return list(_REGISTRY)


def describe_models() -> dict[str, str]:
    """Model name -> one-line description."""
    return {k: v[2] for k, v in _REGISTRY.items()}


def model_config_class(name: str) -> type:
    """The config dataclass of model ``name`` (unknown name -> ValueError listing the valid ones)."""
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
    """Build model ``name`` from keyword options (``num_classes`` is required; see the config
    dataclass of the model, e.g. :class:`~spn.models.SPNConfig`)."""
    config = make_config(name, **cfg)
    model = _REGISTRY[name][1](config)
    model.name = name
    return model
