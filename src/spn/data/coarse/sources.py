"""Coarse sources: how a dataset fills the ``"coarse"`` key of its items (``"files"``,
``"gt-downsample:F"``, ``"none"``, or ``"PREFIX:ARG"`` of a registered wrapping source).

Example:
    >>> from spn.data.coarse import parse_coarse_source
    >>> str(parse_coarse_source("gt-downsample:8")), parse_coarse_source("files").kind
    ('gt-downsample:8', 'files')
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

COARSE_SOURCES = ("files", "gt-downsample:F", "none")

# wrapping coarse sources: prefix -> wrap(dataset, arg, **options) -> dataset
_WRAPPERS: dict[str, Callable] = {}


@dataclass(frozen=True)
class CoarseSource:
    """A parsed coarse source: ``kind`` is ``"files"``, ``"gt-downsample"`` or ``"none"``;
    ``factor`` is the downsampling factor of ``"gt-downsample"`` (else 0)."""

    kind: str
    factor: int = 0

    def __str__(self) -> str:
        return f"gt-downsample:{self.factor}" if self.kind == "gt-downsample" else self.kind


def parse_coarse_source(spec: str | CoarseSource) -> CoarseSource:
    """Parse ``"files"``, ``"none"`` or ``"gt-downsample:F"`` (``F`` a positive integer).

    Raises ValueError, listing the valid sources, for anything else.
    """
    if isinstance(spec, CoarseSource):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"coarse source must be a string, got {type(spec).__name__}")
    s = spec.strip().lower()
    if s in ("files", "none"):
        return CoarseSource(s)
    if s.startswith("gt-downsample"):
        rest = s[len("gt-downsample"):]
        if rest.startswith(":"):
            try:
                factor = int(rest[1:])
            except ValueError:
                factor = 0
            if factor >= 1:
                return CoarseSource("gt-downsample", factor)
        raise ValueError(
            f"bad coarse source {spec!r}: gt-downsample needs a positive integer factor, "
            "e.g. 'gt-downsample:8'")
    raise ValueError(
        f"unknown coarse source {spec!r}; valid sources: {', '.join(COARSE_SOURCES)} "
        "(e.g. 'gt-downsample:8')" + "".join(f", or '{p}:...'" for p in sorted(_WRAPPERS)))


def register_coarse_source(prefix: str):
    """Decorator: register ``wrap(dataset, arg, **options) -> dataset`` as the coarse source
    ``"PREFIX:ARG"`` (``ARG`` is a path, e.g. a run directory). The dataset is built with coarse source ``"none"`` and handed to ``wrap``
    with the text after the colon and the ``coarse_options`` of :func:`spn.data.build_dataset`."""
    if not isinstance(prefix, str) or not prefix or ":" in prefix:
        raise ValueError(f"coarse source prefix must be a non-empty string without ':', got {prefix!r}")

    def deco(wrap: Callable) -> Callable:
        _WRAPPERS[prefix] = wrap
        return wrap

    return deco


def wrapping_source(spec) -> tuple[Callable, str] | None:
    """``(wrap, arg)`` when ``spec`` is ``"PREFIX:ARG"`` of a registered wrapping source, else None.
    An empty ``ARG`` is a ValueError."""
    if not isinstance(spec, str):
        return None
    prefix, sep, arg = spec.partition(":")
    if not sep or prefix not in _WRAPPERS:
        return None
    if not arg:
        raise ValueError(f"coarse source '{prefix}:' needs an argument, e.g. '{prefix}:runs/{prefix}'")
    return _WRAPPERS[prefix], arg


def absolute_coarse_spec(spec):
    """``spec`` with the argument of a wrapping source (a run directory: ``baseline:RUN``) made
    absolute, so a run can be resumed from another directory; other specs unchanged."""
    import os

    found = wrapping_source(spec) if isinstance(spec, str) else None
    if found is None:
        return spec
    prefix = spec.partition(":")[0]
    return f"{prefix}:{os.path.abspath(os.path.expanduser(found[1]))}"


def wrap_coarse_source(dataset, spec, **options):
    """``dataset`` wrapped by the coarse source ``spec`` when that is a registered wrapping source
    (with ``options``); otherwise ``dataset`` unchanged."""
    found = wrapping_source(spec)
    if found is None:
        return dataset
    wrap, arg = found
    return wrap(dataset, arg, **options)
