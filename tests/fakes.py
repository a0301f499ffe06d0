"""Small stand-ins shared by the tests: a list dataset and models with known outputs."""
from __future__ import annotations

import torch


class DictDataset:
    """A list of items following the dataset contract."""

    def __init__(self, items, num_classes, ignore_index=255):
        self.items = items
        self.num_classes = num_classes
        self.class_names = [f"c{i}" for i in range(num_classes)]
        self.ignore_index = ignore_index

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def random_items(n=3, K=4, H=23, W=29, seed=0, coarse=True):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        mask = torch.randint(0, K, (H, W), generator=g)
        mask[0, :3] = 255
        it = {"image": torch.rand(3, H, W, generator=g), "mask": mask, "name": f"im{i}"}
        if coarse:
            it["coarse"] = torch.softmax(3 * torch.randn(K, H, W, generator=g), 0)
        items.append(it)
    return items


class LogCoarse(torch.nn.Module):
    """An "identity" refiner: returns log(coarse)."""

    name = "spn_identity"

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, image, coarse):
        return torch.log(coarse + 1e-12) + self.dummy


class FixedLogits(torch.nn.Module):
    """Always predicts the given per-class scores (K,) at every pixel."""

    name = "baseline"

    def __init__(self, scores):
        super().__init__()
        self.register_buffer("scores", torch.tensor(scores, dtype=torch.float32))

    def forward(self, image, coarse=None):
        B, _, H, W = image.shape
        return self.scores[None, :, None, None].expand(B, -1, H, W).clone()


class NeedsMultiple(torch.nn.Module):
    name = "baseline"
    size_multiple = 16

    def __init__(self, K=3):
        super().__init__()
        self.K = K
        self.seen = []

    def forward(self, image, coarse=None):
        self.seen.append(tuple(image.shape[-2:]))
        assert image.shape[-2] % 16 == 0 and image.shape[-1] % 16 == 0
        B, _, H, W = image.shape
        ramp = torch.arange(W, dtype=torch.float32)[None, None, None].expand(B, self.K, H, W)
        return ramp * torch.arange(self.K, dtype=torch.float32)[None, :, None, None]
