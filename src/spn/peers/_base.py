"""Shared input checks and the common shape of a peer refiner."""
from __future__ import annotations

from dataclasses import asdict, fields

import torch


def check_inputs(image, coarse, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``image (3, H, W)`` in [0, 1] and ``coarse (K, H, W)`` probabilities.

    Returns both as contiguous float32 CPU tensors (the peers run on the CPU).
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{who}: image must be a torch.Tensor (3, H, W), got {type(image).__name__}")
    if not isinstance(coarse, torch.Tensor):
        raise TypeError(f"{who}: coarse must be a torch.Tensor (K, H, W), got {type(coarse).__name__}")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"{who}: image must be (3, H, W), got {tuple(image.shape)}")
    if coarse.dim() != 3 or coarse.shape[0] < 1:
        raise ValueError(f"{who}: coarse must be (K, H, W) class probabilities, got {tuple(coarse.shape)}")
    if image.shape[1:] != coarse.shape[1:]:
        raise ValueError(f"{who}: image {tuple(image.shape)} and coarse {tuple(coarse.shape)} differ in H, W "
                         "(upsample the coarse map to the image first)")
    if not image.is_floating_point() or not coarse.is_floating_point():
        raise TypeError(f"{who}: image and coarse must be floating point, got {image.dtype} and {coarse.dtype}")
    image = image.detach().to("cpu", torch.float32).contiguous()
    coarse = coarse.detach().to("cpu", torch.float32).contiguous()
    # a sum is NaN/inf when an element is (and cheap, unlike an element-wise isfinite)
    if not bool(torch.isfinite(image.sum())) or not bool(torch.isfinite(coarse.sum())):
        raise ValueError(f"{who}: image or coarse has NaN/inf values")
    return image, coarse


def renormalize(probs: torch.Tensor, fallback: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Clamp ``(K, H, W)`` scores to >= 0 and divide by their sum per pixel.

    Where every class is ~0 (sum < eps) the ``fallback`` probabilities are used.
    """
    p = probs.clamp(min=0)
    s = p.sum(0, keepdim=True)
    ok = s > eps
    return torch.where(ok, p / s.clamp(min=eps), fallback)


class Configured:
    """A method with parameters: subclasses set ``name``, ``title`` and ``params_class`` (the
    dataclass of their parameters); ``Cls(**params)`` builds ``self.params`` (unknown names ->
    TypeError listing the valid ones, bad values -> the dataclass's ValueError)."""

    name = "peer"
    title = "peer"
    params_class: type

    def __init__(self, **params):
        known = {f.name for f in fields(self.params_class)}
        bad = sorted(set(params) - known)
        if bad:
            raise TypeError(f"{self.name}: unknown parameters {bad}; valid are {sorted(known)}")
        self.params = self.params_class(**params)

    def config(self) -> dict:
        return {"name": self.name, **asdict(self.params)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params})"


class Peer(Configured):
    """A refiner: ``refine(image (3, H, W) in [0, 1], coarse (K, H, W)) -> probs (K, H, W)``.

    Subclasses set ``name``, ``title``, ``params_class`` (the dataclass of their parameters) and
    implement ``_refine`` (see :class:`Configured`).
    """

    def refine(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        image, coarse = check_inputs(image, coarse, self.name)
        with torch.no_grad():
            return self._refine(image, coarse)

    def _refine(self, image: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
