"""Evaluation protocols: plain, VOC (restriction to the coarse classes), HELEN (group F-measures)."""
import math

import numpy as np
import pytest
import torch

from spn.data import HELEN_CLASSES
from spn.metrics import (HELEN_CLASS_NAMES, HELEN_GROUPS, ConfusionMatrix, get_protocol, group_scores, helen_groups,
                         list_protocols, restrict_to_coarse_classes)


def test_registry_lists_names_on_unknown():
    assert list_protocols() == ["plain", "voc", "helen"]
    with pytest.raises(ValueError, match="plain, voc, helen"):
        get_protocol("cityscapes")


def test_plain_hand_computed():
    p = get_protocol("plain", num_classes=3, class_names=["bg", "a", "b"])
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(2, 0, 1).float()
    assert torch.equal(p.prepare(logits, None), logits)  # plain leaves scores alone
    p.accumulate(pred, target)
    m = p.compute()
    # 7 valid pixels, 5 right
    assert m["pixels"] == 7
    assert m["pixel_accuracy"] == pytest.approx(5 / 7)
    # class accuracies: bg 2/3, a 2/2, b 1/2
    assert m["mean_accuracy"] == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    # IoU: bg tp2 / (3 + 3 - 2) = 0.5; a 2 / (2 + 3 - 2) = 2/3; b 1 / (2 + 1 - 1) = 0.5
    assert m["per_class_iou"] == pytest.approx([0.5, 2 / 3, 0.5])
    assert m["mean_iou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert m["protocol"] == "plain" and m["class_names"] == ["bg", "a", "b"]
    head = p.headline(m)
    assert list(head) == ["overall AC", "mean AC", "mean IoU"]
    assert list(p.detail(m)) == ["bg", "a", "b"] and p.detail_title == "IoU"
    p.reset()
    assert p.compute()["pixels"] == 0


def test_voc_restriction_removes_absent_classes():
    # coarse says classes {0, 1} only; the refined scores prefer class 2 on two pixels
    coarse = torch.zeros(3, 2, 2)
    coarse[0] = torch.tensor([[0.9, 0.2], [0.6, 0.3]])
    coarse[1] = 1 - coarse[0]
    logits = torch.tensor([
        [[5.0, 0.0], [1.0, 0.0]],
        [[0.0, 4.0], [0.0, 1.0]],
        [[9.0, 0.0], [3.0, 9.0]],  # class 2 wins at (0,0), (1,0), (1,1) without the restriction
    ])
    p = get_protocol("voc", num_classes=3)
    out = p.prepare(logits, coarse)
    assert out.shape == logits.shape
    assert torch.isinf(out[2]).all() and (out[2] < 0).all()
    assert torch.equal(out[:2], logits[:2])
    pred = out.argmax(0)
    assert pred.tolist() == [[0, 1], [0, 1]]
    target = torch.tensor([[0, 1], [2, 1]])
    p.accumulate(pred, target)
    m = p.compute()
    assert m["pixel_accuracy"] == pytest.approx(3 / 4)
    # IoU: 0 -> 1/(1+2-1) = 0.5, 1 -> 2/2 = 1, 2 -> 0/1 = 0
    assert m["per_class_iou"] == pytest.approx([0.5, 1.0, 0.0])
    assert m["protocol"] == "voc"


def test_voc_restriction_is_per_image_in_a_batch():
    coarse = torch.zeros(2, 3, 1, 2)
    coarse[0, 0] = 1.0            # image 0: only class 0
    coarse[1, 1, 0, 0] = 1.0      # image 1: classes 1 and 2
    coarse[1, 2, 0, 1] = 1.0
    logits = torch.randn(2, 3, 1, 2)
    out = restrict_to_coarse_classes(logits, coarse)
    assert torch.isinf(out[0, 1:]).all() and torch.isfinite(out[0, 0]).all()
    assert torch.isinf(out[1, 0]).all() and torch.isfinite(out[1, 1:]).all()


def test_voc_needs_coarse_and_matching_shapes():
    p = get_protocol("voc", num_classes=3)
    with pytest.raises(ValueError, match="coarse"):
        p.prepare(torch.zeros(3, 2, 2), None)
    with pytest.raises(ValueError, match="differ in shape"):
        p.prepare(torch.zeros(3, 2, 2), torch.zeros(3, 2, 3))
    with pytest.raises(ValueError, match="4 classes, expected 3"):
        p.prepare(torch.zeros(4, 2, 2), torch.zeros(4, 2, 2))


def test_num_classes_inferred_from_first_prepare():
    p = get_protocol("plain")
    with pytest.raises(ValueError, match="num_classes unknown"):
        p.accumulate(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long))
    p.prepare(torch.zeros(1, 4, 2, 2))
    p.accumulate(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 3], [3, 255]]))
    assert len(p.compute()["per_class_iou"]) == 4


def test_bad_inputs():
    with pytest.raises(ValueError, match="class names"):
        get_protocol("plain", num_classes=3, class_names=["a"])
    p = get_protocol("plain", num_classes=2)
    with pytest.raises(TypeError):
        p.prepare([[0.0]])
    with pytest.raises(ValueError):
        p.prepare(torch.zeros(2, 2))
    with pytest.raises(TypeError, match="integer"):
        p.accumulate(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        p.accumulate(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), 7))


def test_helen_group_f_measures_hand_computed():
    p = get_protocol("helen")
    assert p.num_classes == 11 and p.names() == HELEN_CLASS_NAMES
    # labels: 1 skin, 2/3 brows, 4/5 eyes, 6 nose, 7 upper lip, 8 inner mouth, 9 lower lip, 10 hair
    target = torch.tensor([[4, 5, 2, 3, 6, 1, 0, 10, 6, 255]])
    pred = torch.tensor([[5, 5, 3, 7, 6, 1, 0, 1, 1, 4]])
    p.accumulate(pred, target)
    m = p.compute()
    f = m["f_measure"]
    assert f["eyes"] == pytest.approx(1.0)           # left eye read as right eye is still "eye"
    assert f["brows"] == pytest.approx(2 * 1 / (2 + 1))
    assert f["nose"] == pytest.approx(2 * 1 / (2 + 1))
    assert f["mouth"] == pytest.approx(0.0)          # one false positive, no GT mouth
    assert f["upper_lip"] == pytest.approx(0.0)
    assert math.isnan(f["lower_lip"]) and math.isnan(f["inner_mouth"])
    # skin: GT 1 pixel, predicted on 3 (itself, the hair pixel, a nose pixel)
    assert f["skin"] == pytest.approx(2 * 1 / (1 + 3))
    # overall = components 2..9 as one region: GT 6 pixels, predicted 5, all 5 inside the GT
    # (the brow labelled upper lip still counts); the ignored pixel (255) does not count
    assert f["overall"] == pytest.approx(2 * 5 / (6 + 5))
    assert m["group_iou"]["overall"] == pytest.approx(5 / 6)
    assert list(p.headline(m)) == ["skin", "brows", "eyes", "nose", "mouth", "U-lip", "L-lip",
                                   "in-mouth", "overall"]
    assert p.headline(m)["overall"] == pytest.approx(10 / 11)
    # per-label F1: left eye (GT 1 pixel, never predicted) and right eye
    assert p.detail_title == "F-measure"
    assert p.detail(m)["left_eye"] == pytest.approx(0.0)
    assert p.detail(m)["right_eye"] == pytest.approx(2 * 1 / (1 + 2))


def test_helen_accumulates_over_images_before_the_ratio():
    p = get_protocol("helen")
    p.accumulate(torch.tensor([[4, 4]]), torch.tensor([[4, 0]]))   # eyes: tp 1, gt 1, pred 2
    p.accumulate(torch.tensor([[0, 0]]), torch.tensor([[4, 4]]))   # eyes: tp 0, gt 2, pred 0
    f = p.compute()["f_measure"]["eyes"]
    assert f == pytest.approx(2 * 1 / (3 + 2))  # not the mean of per-image F (2/3 and 0)


def test_helen_needs_eleven_classes_and_groups_match_data_module():
    with pytest.raises(ValueError, match="HELEN"):
        get_protocol("helen", num_classes=5)
    g = helen_groups()
    assert g["brows"] == [2, 3] and g["eyes"] == [4, 5] and g["mouth"] == [7, 8, 9]
    assert g["upper_lip"] == [7] and g["lower_lip"] == [9] and g["inner_mouth"] == [8]
    assert g["skin"] == [1] and g["nose"] == [6] and g["overall"] == list(range(2, 10))


def test_helen_groups_and_scores():
    assert HELEN_GROUPS["brows"] == [2, 3] and HELEN_GROUPS["eyes"] == [4, 5]
    assert HELEN_GROUPS["mouth"] == [7, 8, 9] and HELEN_GROUPS["overall"] == list(range(2, 10))
    assert {"skin", "nose", "upper_lip", "lower_lip", "inner_mouth"} <= set(HELEN_GROUPS)
    cm = ConfusionMatrix(11)
    t = torch.tensor([2, 2, 3, 3, 4, 1, 1, 0])
    p = torch.tensor([3, 2, 3, 1, 4, 1, 0, 0])
    cm.update(t, p)
    s = group_scores(cm, HELEN_GROUPS)
    # brows as one region: gt 4 pixels, predicted 3 (2,3,3... index 0,1,2), tp 3 -> F1 = 6 / 7
    assert s["brows"]["f1"] == pytest.approx(6 / 7) and s["brows"]["iou"] == pytest.approx(3 / 4)
    assert s["eyes"]["f1"] == pytest.approx(1.0)
    assert s["skin"]["f1"] == pytest.approx(2 * 1 / (2 + 2))
    assert np.isnan(s["nose"]["f1"])
    with pytest.raises(ValueError):
        group_scores(torch.zeros(3, 3), HELEN_GROUPS)


def test_restrict_to_coarse_classes_hand_made():
    # coarse argmax: classes 0 and 2 present, 1 absent
    coarse = torch.zeros(3, 2, 2)
    coarse[0, 0, :] = 1
    coarse[2, 1, :] = 1
    logits = torch.tensor([1.0, 5.0, 2.0])[:, None, None].expand(3, 2, 2).clone()
    out = restrict_to_coarse_classes(logits, coarse)
    assert torch.isinf(out[1]).all() and (out[1] < 0).all()
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[2])
    assert (out.argmax(0) == 2).all()
    # batched form, per image
    every = torch.nn.functional.one_hot(torch.tensor([[0, 1], [2, 0]]), 3).permute(2, 0, 1).float()
    b = restrict_to_coarse_classes(torch.stack([logits, logits]), torch.stack([coarse, every]))
    assert torch.isinf(b[0, 1]).all() and torch.isfinite(b[1]).all()
    with pytest.raises(ValueError, match="differ in shape"):
        restrict_to_coarse_classes(logits, coarse[:2])


def test_the_protocol_and_the_dataset_agree_on_the_helen_labels():
    """The protocol's label ids are the order in which the dataset reads the label files."""
    assert HELEN_CLASS_NAMES == list(HELEN_CLASSES)
    assert len(HELEN_CLASS_NAMES) == 11 and HELEN_CLASS_NAMES[0] == "background" and HELEN_CLASS_NAMES[10] == "hair"
