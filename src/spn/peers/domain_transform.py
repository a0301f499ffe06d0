"""Domain-transform recursive filter (Gastal & Oliveira, SIGGRAPH 2011) as one-way propagation.

The recursive filter of the domain transform is exactly a one-way spatial propagation
(``K = 1``): along a scan, ``J[n] = (1 - g[n]) I[n] + g[n] J[n-1]`` with the gate

    g[n] = a ** d[n],  a = exp(-sqrt(2) / sigma_H),  d[n] = 1 + sigma_s / sigma_r * |I[n] - I[n-1]|_1

read at the destination pixel ``n`` (``I[n-1]`` is the previous pixel in scan order, the colour
difference is summed over the three channels). So ``g = exp(-sqrt(2)/sigma_H * (1 + sigma_s/sigma_r
* |dI|))``: near 1 in flat regions (long-range smoothing), near 0 across edges (no leakage).
Each iteration ``i = 1..N`` runs left->right, right->left, top->bottom, bottom->top one after the
other (each pass filters the previous pass's output) with
``sigma_H_i = sigma_s * sqrt(3) * 2**(N - i) / sqrt(4**N - 1)``, all through ``spn.ops.propagate``
with one gate map shared by every class channel. The ``K`` class maps are filtered, then
renormalised.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spn.ops import propagate

from ._base import Peer, renormalize


def edge_gates(image: torch.Tensor, direction: str, sigma_h: float, sigma_s: float, sigma_r: float) -> torch.Tensor:
    """Gates ``(1, 1, 1, H, W)`` of the recursive filter for one scan direction.

    ``image`` is ``(3, H, W)``; the gate at a pixel uses the colour difference to the pixel
    scanned just before it (the first scanned line gets a gate that the operator ignores).
    """
    I = image
    d = torch.zeros_like(I[0])
    if direction == "left_to_right":
        d[:, 1:] = (I[:, :, 1:] - I[:, :, :-1]).abs().sum(0)
    elif direction == "right_to_left":
        d[:, :-1] = (I[:, :, :-1] - I[:, :, 1:]).abs().sum(0)
    elif direction == "top_to_bottom":
        d[1:, :] = (I[:, 1:, :] - I[:, :-1, :]).abs().sum(0)
    elif direction == "bottom_to_top":
        d[:-1, :] = (I[:, :-1, :] - I[:, 1:, :]).abs().sum(0)
    else:
        raise ValueError(f"unknown direction {direction!r}")
    g = torch.exp(-math.sqrt(2.0) / sigma_h * (1.0 + sigma_s / sigma_r * d))
    return g[None, None, None]


def domain_transform_filter(image: torch.Tensor, src: torch.Tensor, sigma_s: float, sigma_r: float,
                            iterations: int = 3) -> torch.Tensor:
    """Recursive-filter domain transform of ``src (K, H, W)`` guided by ``image (3, H, W)``.

    Returns ``(K, H, W)``.
    """
    x = src[None].float().contiguous()
    N = iterations
    for i in range(1, N + 1):
        sigma_h = sigma_s * math.sqrt(3.0) * 2 ** (N - i) / math.sqrt(4 ** N - 1)
        for direction in ("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top"):
            g = edge_gates(image.float(), direction, sigma_h, sigma_s, sigma_r).contiguous()
            x = propagate(x, g, direction)
    return x[0]


@dataclass
class DomainTransformParams:
    """``sigma_s`` spatial extent in pixels, ``sigma_r`` range extent (image in [0, 1])."""

    sigma_s: float = 30.0
    sigma_r: float = 0.2
    iterations: int = 3

    def __post_init__(self):
        for f in ("sigma_s", "sigma_r"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"domain_transform: {f} must be a positive number, got {v!r}")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"domain_transform: iterations must be an int >= 1, got {self.iterations!r}")


class DomainTransform(Peer):
    """``refine(image (3,H,W) in [0,1], coarse (K,H,W)) -> probs (K,H,W)``: edge-aware recursive filter."""

    name = "domain_transform"
    title = "domain transform"

    params_class = DomainTransformParams

    def _refine(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        p = self.params
        q = domain_transform_filter(image, coarse, float(p.sigma_s), float(p.sigma_r), p.iterations)
        return renormalize(q, coarse)
