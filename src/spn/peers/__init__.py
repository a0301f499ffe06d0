"""Refinement peers of the paper's comparison: coarse/bilinear, dense CRF, guided filter, domain transform.

Every peer is built with ``get_peer(name, **params)`` and offers
``refine(image (3, H, W) float in [0, 1], coarse (K, H, W) probabilities) -> probs (K, H, W)``
(CPU, no gradients), plus ``name``, ``title`` (for tables and figures), ``params`` (a dataclass)
and ``config()``.

- ``"bilinear"``: the coarse input as is (the "coarse / bilinear" row).
- ``"densecrf"``: fully connected CRF (Kraehenbuehl & Koltun 2011); needs ``pydensecrf2``.
  ``spn.peers.densecrf.grid_search`` tunes it on a training split.
- ``"guided_filter"``: the colour guided filter (He et al.) of each class map, renormalised.
- ``"domain_transform"``: the domain-transform recursive filter (Gastal & Oliveira 2011) written
  as one-way ``spn.ops.propagate`` scans with image-edge gates.
"""
from __future__ import annotations

from ._base import Peer, check_inputs, renormalize
from .bilinear import Bilinear
from .densecrf import DenseCRF, DenseCRFParams, densecrf_available, grid_search
from .domain_transform import DomainTransform, domain_transform_filter
from .guided_filter import GuidedFilter, box_filter, guided_filter

PEERS = {
    "bilinear": Bilinear,
    "densecrf": DenseCRF,
    "guided_filter": GuidedFilter,
    "domain_transform": DomainTransform,
}


def list_peers() -> list[str]:
    return list(PEERS)


def get_peer(name: str, **params) -> Peer:
    """A peer by name with its parameters (unknown name -> ValueError, unknown param -> TypeError)."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; valid peers are {', '.join(PEERS)}")
    return PEERS[name](**params)


__all__ = [
    "PEERS", "Bilinear", "DenseCRF", "DenseCRFParams", "DomainTransform", "GuidedFilter", "Peer",
    "box_filter", "check_inputs", "densecrf_available", "domain_transform_filter", "get_peer",
    "grid_search", "guided_filter", "list_peers", "renormalize",
]
