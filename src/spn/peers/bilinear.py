"""The "coarse / bilinear" row: the coarse map as given (already upsampled to the image)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._base import Peer


@dataclass
class BilinearParams:
    """No parameters: the coarse maps reach the peers bilinearly upsampled to the image size."""


class Bilinear(Peer):
    """``refine(image (3,H,W), coarse (K,H,W)) -> coarse`` (a copy), the no-refinement baseline."""

    name = "bilinear"
    title = "coarse (bilinear)"

    params_class = BilinearParams

    def _refine(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return coarse.clone()
