"""Chroma upsampling with a trained chroma SPN: the one path from a model and a photo (or its
luma and subsampled chroma) to full-resolution chroma, shared by ``spn eval / compare / refine
--task chroma``, the chroma demo and Python users.

- :func:`predict_chroma` ``(model, luma, chroma_low, factor=None) -> chroma``: no gradients,
  eval mode (restored afterwards), one image or a batch, clamped to [0, 1].
- :class:`ChromaUpsampler`: a model (or a run directory, :meth:`ChromaUpsampler.from_checkpoint`)
  with :meth:`~ChromaUpsampler.upsample` (luma + subsampled chroma -> chroma) and
  :meth:`~ChromaUpsampler.reconstruct` (an RGB photo -> the photo rebuilt from its own chroma
  subsampled ``F`` times, what ``spn refine --task chroma`` writes).

Shape:
    - luma: ``(1, H, W)`` or ``(B, 1, H, W)`` in [0, 1]
    - chroma_low: ``(2, ceil(H/F), ceil(W/F))`` or batched; (Cb, Cr) with 0.5 for grey
    - output: ``(2, H, W)`` or ``(B, 2, H, W)``

Example:
    >>> import torch
    >>> from spn.inference_chroma import ChromaUpsampler
    >>> from spn.models import create_model
    >>> up = ChromaUpsampler(create_model("chroma_three_way", factor=4, guidance_width=4))
    >>> up.upsample(torch.rand(1, 30, 40), torch.rand(2, 8, 10)).shape
    torch.Size([2, 30, 40])
    >>> up.reconstruct(torch.rand(3, 30, 40)).shape
    torch.Size([3, 30, 40])
"""
from __future__ import annotations

import numpy as np
import torch

from spn.data.color import chroma_item
from spn.image.color import ycbcr_to_rgb
from spn.models.chroma import ChromaSPN

__all__ = ["ChromaUpsampler", "as_rgb_tensor", "is_chroma_model", "predict_chroma"]


def is_chroma_model(model) -> bool:
    """Whether ``model`` declares the chroma models' output (``model.task``, as
    :class:`spn.models.chroma.ChromaSPN` does): ``(B, 2, H, W)`` chroma from luma and low chroma."""
    return getattr(model, "task", None) == ChromaSPN.task


@torch.no_grad()
def predict_chroma(model, luma: torch.Tensor, chroma_low: torch.Tensor, factor: int | None = None) -> torch.Tensor:
    """The model's full-resolution chroma, clamped to [0, 1] (float32, on the input's device).

    Shape:
        - luma: ``(1, H, W)`` or ``(B, 1, H, W)``
        - chroma_low: ``(2, h, w)`` or ``(B, 2, h, w)``
        - output: ``(2, H, W)`` or ``(B, 2, H, W)``
    """
    if not isinstance(luma, torch.Tensor) or not isinstance(chroma_low, torch.Tensor):
        raise TypeError("luma and chroma_low must be torch.Tensors")
    if not is_chroma_model(model):
        raise ValueError(f"model {getattr(model, 'name', type(model).__name__)!r} is not a chroma model "
                         "(train one with spn train --task chroma)")
    squeeze = luma.dim() == 3
    if squeeze != (chroma_low.dim() == 3):
        raise ValueError(f"luma {tuple(luma.shape)} and chroma_low {tuple(chroma_low.shape)}: give both "
                         "unbatched or both batched")
    y, c = (luma[None], chroma_low[None]) if squeeze else (luma, chroma_low)
    try:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = y.device, torch.float32
    was = model.training
    model.eval()
    try:
        out = model(y.to(device=device, dtype=dtype), c.to(device=device, dtype=dtype), factor)
    finally:
        model.train(was)
    out = out.float()
    # a chroma model's output is its own fresh tensor: clamp it in place
    out = (out.clamp_(0, 1) if isinstance(model, ChromaSPN) else out.clamp(0, 1)).to(luma.device)
    return out[0] if squeeze else out


def as_rgb_tensor(image) -> torch.Tensor:
    """An RGB photo as a float32 tensor ``(3, H, W)`` in [0, 1]: from a tensor ``(3, H, W)``
    (float in [0, 1]), a numpy array ``(H, W, 3)`` (uint8, or float in [0, 1]) or a PIL image."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(f"an image tensor must be float (3, H, W) in [0, 1], got {image.dtype} "
                             f"{tuple(image.shape)}")
        t = image.float()
    else:
        if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
            image = np.asarray(image.convert("RGB"))
        a = np.asarray(image)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"an image array must be (H, W, 3), got shape {a.shape}")
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        elif np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float32)
        else:
            raise ValueError(f"an image array must be uint8 or float in [0, 1], got {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
    if not bool(torch.isfinite(t.sum())):
        raise ValueError("the image has NaN/inf values")
    if t.numel() and (float(t.min()) < 0 or float(t.max()) > 1):
        raise ValueError(f"image values must lie in [0, 1], got [{float(t.min()):.3g}, {float(t.max()):.3g}]")
    return t


class ChromaUpsampler:
    """A trained chroma SPN applied to photos (see the module docstring).

    ``factor`` (default: the model's) is the chroma subsampling of the inputs.

    Example:
        >>> import numpy as np
        >>> from spn.inference_chroma import ChromaUpsampler
        >>> from spn.models import create_model
        >>> up = ChromaUpsampler(create_model("chroma_one_way", factor=8, guidance_width=4))
        >>> up.reconstruct(np.zeros((24, 40, 3), dtype=np.uint8)).shape
        torch.Size([3, 24, 40])
    """

    def __init__(self, model: torch.nn.Module, *, factor: int | None = None, source: str | None = None):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"ChromaUpsampler needs a torch.nn.Module (or use ChromaUpsampler.from_checkpoint), "
                            f"got {type(model).__name__}")
        if not is_chroma_model(model):
            raise ValueError(f"model {getattr(model, 'name', type(model).__name__)!r} is not a chroma model "
                             "(train one with spn train --task chroma)")
        self.model = model
        self.factor = int(factor if factor is not None else model.factor)
        self.source = source or f"model {getattr(model, 'name', type(model).__name__)!r}"
        self.info: dict = {}

    @classmethod
    def from_checkpoint(cls, run, device="cpu", factor: int | None = None) -> "ChromaUpsampler":
        """The chroma model of a run directory of ``spn train --task chroma`` on ``device``."""
        from spn.models.checkpoint import load_checkpoint

        model, info = load_checkpoint(run, map_location=device)
        if not is_chroma_model(model):
            raise ValueError(f"checkpoint {run} holds {info.get('model')!r}, not a chroma model "
                             "(train one with spn train --task chroma)")
        up = cls(model, factor=factor, source=f"checkpoint {run}")
        up.info = info
        return up

    def upsample(self, luma: torch.Tensor, chroma_low: torch.Tensor, factor: int | None = None) -> torch.Tensor:
        """Full-resolution chroma ``(2, H, W)`` (or batched) from the luma and the chroma
        subsampled ``factor`` times (default :attr:`factor`)."""
        return predict_chroma(self.model, luma, chroma_low, factor or self.factor)

    __call__ = upsample

    def reconstruct(self, image, factor: int | None = None) -> torch.Tensor:
        """The RGB photo ``(3, H, W)`` rebuilt from its luma and its own chroma subsampled
        ``factor`` times (area averaging), in [0, 1]. ``image``: see :func:`as_rgb_tensor`."""
        f = int(factor or self.factor)
        item = chroma_item(as_rgb_tensor(image), f)
        chroma = self.upsample(item["luma"], item["chroma_low"], f)
        return ycbcr_to_rgb(torch.cat([item["luma"], chroma])).clamp(0, 1)

    def split(self, image, factor: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(luma (1, H, W), chroma_low (2, h, w))`` of an RGB photo: the model's inputs."""
        item = chroma_item(as_rgb_tensor(image), int(factor or self.factor))
        return item["luma"], item["chroma_low"]
