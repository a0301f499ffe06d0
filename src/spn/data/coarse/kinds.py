"""The declared kind of a stored coarse map (``probs``, ``logits``, ``labels``, optionally with a
scale), from an option, a ``coarse.json`` sidecar, or the file type.

Example:
    >>> from spn.data.coarse import resolve_coarse_kind
    >>> str(resolve_coarse_kind("logits"))
    'logits'
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("spn.data.coarse")

#: what a stored coarse map holds (declared, never guessed)
COARSE_KINDS = ("probs", "logits", "labels")
#: the sidecar file of a folder of coarse maps: {"kind": "probs" | "logits" | "labels", "scale": 255}
SIDECAR = "coarse.json"


@dataclass(frozen=True)
class CoarseKind:
    """What a coarse array holds: ``kind`` is ``"probs"``, ``"logits"``, ``"labels"`` or None (by
    file type: ``.png`` labels, ``.npy`` probs); ``scale`` divides the values first (``probs:255``
    for uint8 probabilities); ``origin`` says where the declaration came from (for messages)."""

    kind: str | None = None
    scale: float | None = None
    origin: str = "default"

    def __str__(self) -> str:
        k = self.kind or "by file type"
        return f"{k}:{self.scale:g}" if self.scale is not None else k

    def same(self, other: "CoarseKind") -> bool:
        return (self.kind, self.scale) == (other.kind, other.scale)


def coarse_kind_option(group: str | None = None):
    """The ``coarse_kind`` field of a command's config (``--coarse-kind KIND[:SCALE]``)."""
    from ...utils.config import option

    return option(None, metavar="KIND", group=group,
                  help="what stored coarse files hold: probs | logits | labels, optionally KIND:SCALE "
                       "(probs:255 for uint8 probabilities); wins over a coarse.json beside the maps",
                  default_help="the coarse.json beside the maps, else probs for .npy and labels for .png")


def parse_coarse_kind(spec, origin: str = "--coarse-kind") -> CoarseKind:
    """``"probs"``, ``"logits"``, ``"labels"``, ``"KIND:SCALE"`` (e.g. ``"probs:255"``), a dict
    ``{"kind": ..., "scale": ...}`` (a sidecar's content), a :class:`CoarseKind` or None (by file
    type) -> :class:`CoarseKind`. Anything else -> ValueError listing the kinds.

    Example:
        >>> from spn.data import parse_coarse_kind
        >>> k = parse_coarse_kind("probs:255")
        >>> k.kind, k.scale, str(k)
        ('probs', 255.0, 'probs:255')
    """
    if spec is None:
        return CoarseKind(None, None, "default")
    if isinstance(spec, CoarseKind):
        return spec
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"kind", "scale"})
        if unknown:
            raise ValueError(f"{origin}: unknown key(s) {unknown}; a coarse kind has 'kind' and optional 'scale'")
        kind, scale = spec.get("kind"), spec.get("scale")
    elif isinstance(spec, str):
        kind, _, scale = spec.strip().partition(":")
        scale = scale or None
    else:
        raise TypeError(f"{origin}: a coarse kind must be a string like 'probs' or 'probs:255', got {spec!r}")
    if kind not in COARSE_KINDS:
        raise ValueError(f"{origin}: unknown coarse kind {kind!r}; valid kinds: {', '.join(COARSE_KINDS)} "
                         "(optionally KIND:SCALE, e.g. probs:255 for uint8 probabilities)")
    if scale is not None:
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            raise ValueError(f"{origin}: the scale of {spec!r} must be a number, e.g. probs:255") from None
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"{origin}: the scale of {spec!r} must be a positive number")
        if kind == "labels":
            raise ValueError(f"{origin}: label maps take no scale (got {spec!r})")
    return CoarseKind(kind, scale, origin)


def read_sidecar(folder) -> CoarseKind | None:
    """The kind declared by ``FOLDER/coarse.json`` (``{"kind": "probs", "scale": 255}``), or None
    when the folder has no such file."""
    if folder is None:
        return None
    f = Path(folder) / SIDECAR
    if not f.is_file():
        return None
    from ...utils.io import read_json

    return parse_coarse_kind(read_json(f, "coarse sidecar"), origin=str(f))


def resolve_coarse_kind(option=None, folder=None, flag: str = "--coarse-kind") -> CoarseKind:
    """The kind of the coarse maps of ``folder``: the option when given (it wins over the sidecar;
    a sidecar that says otherwise gets a warning), else ``folder/coarse.json``, else by file type."""
    opt = parse_coarse_kind(option, flag) if option is not None else None
    side = read_sidecar(folder)
    if opt is not None and side is not None and not opt.same(side):
        log.warning(f"{flag} {opt} overrides {side.origin}, which declares {side}")
    return opt or side or CoarseKind(None, None, "default")


def _declared(kind: CoarseKind) -> str:
    if kind.origin.startswith("the default") or kind.origin == "default":
        return f"read as {kind.kind} ({'the default' if kind.origin == 'default' else kind.origin})"
    return f"declared {kind.kind} by {kind.origin}"
