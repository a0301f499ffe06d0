"""spn.evaluation: metrics of a model on a dataset against hand-computed values; restriction."""
from __future__ import annotations

import pytest
import torch

from fakes import DictDataset, FixedLogits, LogCoarse, random_items
from spn import evaluation as ev
from spn import inference as inf


# --- predict / evaluate ----------------------------------------------------------------------

def test_identity_model_gives_coarse_metrics():
    ds = DictDataset(random_items(n=3), 4)
    res = ev.evaluate(LogCoarse(), ds)
    assert res["num_images"] == 3 and res["num_classes"] == 4
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "per_class_iou", "pixels"):
        assert res["coarse"][key] == res["refined"][key]
    assert res["refined"]["pixels"] == 3 * (23 * 29 - 3)
    sec = res["seconds_per_image"]
    assert sec["n"] == 3 and sec["median"] > 0 and sec["mean"] > 0


def test_evaluate_counts_against_hand_computed_metrics():
    """Two 2 x 2 images, 3 classes, one ignored pixel; the model always says class 1 and the coarse
    maps are one-hot with one wrong pixel each. Every number below is counted by hand."""
    masks = [torch.tensor([[0, 1], [1, 2]]), torch.tensor([[1, 1], [255, 0]])]
    coarse_labels = [torch.tensor([[0, 1], [2, 2]]), torch.tensor([[1, 0], [0, 0]])]
    items = [{"image": torch.rand(3, 2, 2), "mask": m, "name": f"im{i}",
              "coarse": torch.nn.functional.one_hot(c, 3).permute(2, 0, 1).float()}
             for i, (m, c) in enumerate(zip(masks, coarse_labels))]
    res = ev.evaluate(FixedLogits([0.0, 2.0, 1.0]), DictDataset(items, 3), warmup=0)
    ref = res["refined"]
    # 7 labelled pixels; class 1 is right on its 4 pixels; classes 0 (2 px) and 2 (1 px) are never predicted
    assert ref["pixels"] == 7
    assert ref["pixel_accuracy"] == pytest.approx(4 / 7)
    assert ref["per_class_iou"] == pytest.approx([0.0, 4 / 7, 0.0])
    assert ref["per_class_accuracy"] == pytest.approx([0.0, 1.0, 0.0])
    assert ref["mean_iou"] == pytest.approx(4 / 21) and ref["mean_accuracy"] == pytest.approx(1 / 3)
    assert ref["per_class_f1"] == pytest.approx([0.0, 8 / 11, 0.0])
    # the coarse input: class 0 tp 2 of gt 2 / predicted 3; class 1 tp 2 of 4 / 2; class 2 tp 1 of 1 / 2
    co = res["coarse"]
    assert co["pixel_accuracy"] == pytest.approx(5 / 7)
    assert co["per_class_iou"] == pytest.approx([2 / 3, 1 / 2, 1 / 2])
    assert co["mean_iou"] == pytest.approx(5 / 9)
    assert res["num_images"] == 2 and res["seconds_per_image"]["n"] == 2


def test_evaluate_restrict_to_present():
    H, W = 6, 8
    mask = torch.zeros(H, W, dtype=torch.long)
    mask[:, 4:] = 2
    coarse = torch.full((3, H, W), 0.05)
    coarse[0, :, :4] = 0.9
    coarse[2, :, 4:] = 0.9
    item = {"image": torch.rand(3, H, W), "mask": mask, "coarse": coarse, "name": "a"}
    model = FixedLogits([1.0, 5.0, 2.0])  # always says class 1, absent from the coarse map
    plain = ev.evaluate(model, DictDataset([item], 3))
    assert plain["refined"]["pixel_accuracy"] == 0.0
    res = ev.evaluate(model, DictDataset([item], 3), restrict_to_present=True)
    # restricted to {0, 2}: class 2 wins everywhere -> right half correct
    assert res["refined"]["pixel_accuracy"] == pytest.approx(0.5)
    assert res["coarse"]["pixel_accuracy"] == 1.0
    assert res["restrict_to_present"] is True
    probs = inf.predict(model, item["image"], coarse, restrict=True)
    assert torch.all(probs[1] == 0) and torch.allclose(probs.sum(0), torch.ones(H, W))
    no_coarse = dict(item)
    del no_coarse["coarse"]
    with pytest.raises(ValueError, match="restrict_to_present needs coarse"):
        ev.evaluate(model, DictDataset([no_coarse], 3), restrict_to_present=True)


def test_evaluate_voc_protocol_matches_restriction():
    items = random_items(n=2, K=4, seed=3)
    model = FixedLogits([0.0, 0.5, 3.0, 1.0])
    a = ev.evaluate(model, DictDataset(items, 4), restrict_to_present=True)
    b = ev.evaluate(model, DictDataset(items, 4), protocol="voc")
    assert a["refined"]["per_class_iou"] == b["refined"]["per_class_iou"]
    assert b["protocol"] == "voc"
    with pytest.raises(ValueError, match="unknown protocol"):
        ev.evaluate(model, DictDataset(items, 4), protocol="nope")


def test_evaluate_errors():
    items = random_items(n=2, K=3)
    with pytest.raises(ValueError, match="predicts 2 classes"):
        ev.evaluate(FixedLogits([0.0, 1.0]), DictDataset(items, 3))
    with pytest.raises(ValueError, match="empty"):
        ev.evaluate(LogCoarse(), DictDataset([], 3))
    with pytest.raises(ValueError, match="limit"):
        ev.evaluate(LogCoarse(), DictDataset(items, 3), limit=0)
    res = ev.evaluate(LogCoarse(), DictDataset(items, 3), limit=1)
    assert res["num_images"] == 1
