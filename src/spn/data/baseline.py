"""Coarse maps from a trained baseline: the coarse source ``"baseline:RUN_DIR"``.

The paper trains the SPN on the coarse segmentations of a baseline network (HELEN) or of a
pre-trained segmenter (VOC). :class:`BaselineCoarse` wraps any dataset of the common contract
and fills ``item["coarse"]`` with ``softmax(baseline(image))`` (float32 ``(K, H, W)``, class
probabilities at image resolution). The baseline's low-resolution logits (``1/8`` of the image)
are computed once per item and cached, in memory and optionally on disk (``cache_dir``,
one safetensors file per item, keyed by the baseline checkpoint's digest); the cheap bilinear
upsampling and softmax are redone on every access, which is exactly ``softmax(baseline(image))``.

Workflow for a dataset without coarse maps::

    spn train --data folder:DATA --model baseline --out runs/base
    spn train --data folder:DATA --model spn_three_way --coarse baseline:runs/base --out runs/spn

In Python, ``build_dataset(spec, coarse="baseline:RUN_DIR", coarse_options={"cache_dir": ...})``
builds the dataset without coarse maps and wraps it.

Shape:
    - item ``"coarse"``: ``(K, H, W)`` float32, ``softmax(baseline(image))``

Example:
    >>> import tempfile
    >>> from spn.data import build_dataset
    >>> from spn.models import create_model
    >>> from spn.models.checkpoint import save_checkpoint
    >>> run = tempfile.mkdtemp()
    >>> _ = save_checkpoint(run, create_model("baseline", num_classes=6, width=4, depth=1), cfg={}, step=0)
    >>> ds = build_dataset("synthetic", split="val", num_images=1, size=32, coarse=f"baseline:{run}")
    >>> ds[0]["coarse"].shape
    torch.Size([6, 32, 32])
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch.utils.data import Dataset

from ..models.checkpoint import load_checkpoint
from ..utils.io import atomic_write_bytes
from .coarse import register_coarse_source


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))
    return s[:120] + "-" + hashlib.sha1(str(name).encode()).hexdigest()[:10]


class BaselineCoarse(Dataset):
    """``base`` with ``"coarse"`` = ``softmax(baseline(image))``.

    Args:
        base: a dataset of the common contract (its own ``"coarse"``, if any, is replaced).
        baseline: a run directory / ``model.safetensors`` of a trained ``baseline`` model, or the
            model itself (an ``nn.Module`` with ``forward_low`` and ``upsample``, e.g.
            :class:`spn.models.BaselineNet`).
        device: where the baseline runs.
        cache_dir: optional folder for the on-disk cache of the low-resolution logits.
    """

    def __init__(self, base, baseline, device: str | torch.device = "cpu", cache_dir=None):
        if isinstance(baseline, (str, Path)):
            run = Path(baseline)
            model, info = load_checkpoint(run, map_location=device)
            if info["model"] != "baseline":
                raise ValueError(f"--coarse baseline:{run}: that run holds a {info['model']!r} model, "
                                 "not a 'baseline' (train one with: spn train --model baseline)")
            self.key = str(info["files"]["model"].get("sha256", ""))[:16] or f"step{info['step']}"
        elif isinstance(baseline, torch.nn.Module):
            model = baseline.to(device).eval()
            self.key = None
        else:
            raise TypeError(f"baseline must be a run directory or a model, got {type(baseline).__name__}")
        if not hasattr(model, "forward_low") or not hasattr(model, "upsample"):
            raise TypeError(f"the baseline model {type(model).__name__} lacks forward_low/upsample")
        K = getattr(base, "num_classes", None)
        if K is not None and model.num_classes != K:
            raise ValueError(f"the baseline predicts {model.num_classes} classes but the dataset has {K}")
        self.base = base
        self.model = model
        self.device = torch.device(device)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None and self.key is None:
            raise ValueError("an on-disk coarse cache needs a baseline checkpoint (run directory), not a bare model")
        self._memory: dict[int, torch.Tensor] = {}

    # dataset attributes of the contract
    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def class_names(self):
        return getattr(self.base, "class_names", [f"class_{i}" for i in range(self.num_classes)])

    @property
    def ignore_index(self) -> int:
        return getattr(self.base, "ignore_index", 255)

    def info(self) -> dict:
        d = dict(self.base.info()) if hasattr(self.base, "info") else {}
        d["coarse"] = "baseline"
        return d

    def __len__(self) -> int:
        return len(self.base)

    def _disk_path(self, name: str) -> Path:
        return self.cache_dir / self.key / f"{_safe_name(name)}.safetensors"

    @torch.no_grad()
    def low_logits(self, index: int, item: dict) -> torch.Tensor:
        """The baseline's logits ``(K, h, w)`` at its working resolution (cached)."""
        if index in self._memory:
            return self._memory[index]
        image = item["image"]
        size = [int(s) for s in image.shape[-2:]]
        path = self._disk_path(item.get("name", str(index))) if self.cache_dir is not None else None
        low = None
        if path is not None and path.is_file():
            try:
                blob = st_load(path.read_bytes())
                if blob["size"].tolist() == size:
                    low = blob["logits"]
            except (SafetensorError, KeyError, ValueError, RuntimeError, OSError):
                low = None  # a damaged cache entry is recomputed
        if low is None:
            low = self.model.forward_low(image.unsqueeze(0).to(self.device))[0].float().cpu()
            if path is not None:
                atomic_write_bytes(path, st_save({"logits": low.contiguous(), "size": torch.tensor(size)}))
        self._memory[index] = low
        return low

    @torch.no_grad()
    def __getitem__(self, index: int) -> dict:
        item = dict(self.base[index])
        low = self.low_logits(int(index), item)
        logits = self.model.upsample(low.unsqueeze(0), item["image"].shape[-2:])[0]
        item["coarse"] = torch.softmax(logits, dim=0).float().contiguous()
        return item


@register_coarse_source("baseline")
def _baseline_source(dataset, run_dir: str, device="cpu", cache_dir=None) -> BaselineCoarse:
    return BaselineCoarse(dataset, run_dir, device=device, cache_dir=cache_dir)
