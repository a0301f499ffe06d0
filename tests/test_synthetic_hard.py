"""The hard procedural family (`--data synthetic:hard`): deterministic, the
same classes, and its colour edges lie (measured against the simple family on the same seeds)."""
from __future__ import annotations

import pytest
import torch

from spn.data import build_dataset
from spn.metrics.boundary import edge_map


def _grad(image):
    gx = (image[:, :, 1:] - image[:, :, :-1]).abs().sum(0)
    gy = (image[:, 1:, :] - image[:, :-1, :]).abs().sum(0)
    g = torch.zeros(image.shape[1:])
    g[:, :-1] = torch.maximum(g[:, :-1], gx)
    g[:-1, :] = torch.maximum(g[:-1, :], gy)
    return g


def _edge_stats(spec, n=4):
    ds = build_dataset(spec, split="val", num_images=n, size=96, coarse="none")
    at_boundary, strong_elsewhere = [], []
    for i in range(n):
        item = ds[i]
        edges = edge_map(item["mask"])
        g = _grad(item["image"])
        at_boundary.append(g[edges].median())
        near = torch.nn.functional.max_pool2d(edges[None, None].float(), 7, 1, 3)[0, 0] > 0
        strong_elsewhere.append(((g > 0.4) & ~near).float().mean())
    return torch.stack(at_boundary).mean().item(), torch.stack(strong_elsewhere).mean().item()


def test_the_spec_and_its_errors():
    ds = build_dataset("synthetic:hard", split="train", num_images=2, size=48)
    assert ds.family == "hard" and ds.num_classes == 6 and ds.info()["family"] == "hard"
    a, b = ds[1], build_dataset("synthetic:hard", split="train", num_images=2, size=48)[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert a["name"] == "synthetic_hard_train_00001" and "coarse" in a
    simple = build_dataset("synthetic", split="train", num_images=2, size=48)[1]
    assert not torch.equal(simple["image"], a["image"])
    assert build_dataset("synthetic:simple", split="train", num_images=2, size=48)[1]["name"] == simple["name"]
    with pytest.raises(ValueError, match="hard"):
        build_dataset("synthetic:nope")


def test_colour_edges_lie_in_the_hard_family():
    simple_b, simple_clutter = _edge_stats("synthetic")
    hard_b, hard_clutter = _edge_stats("synthetic:hard")
    # lower colour contrast at the object boundaries ...
    assert hard_b < simple_b
    # ... and more strong edges away from any object boundary
    assert hard_clutter > 3 * simple_clutter
