"""Boundary IoU, trimap accuracy and mBA against values counted by hand on small masks (the
counts are in the comments); tests/test_boundary_opencv.py checks them against OpenCV."""
from __future__ import annotations

import math

import pytest
import torch

from spn.metrics import get_protocol
from spn.metrics.boundary import BoundaryScores, boundary_width, ellipse_kernel, gradient_region, mba_radii


def _square(H, W, r0, r1, c0, c1):
    m = torch.zeros(H, W, dtype=torch.long)
    m[r0:r1, c0:c1] = 1
    return m


def test_boundary_width_is_two_percent_of_the_diagonal():
    assert boundary_width((6, 6)) == 1            # 0.02 * 8.49 = 0.17 -> at least 1
    assert boundary_width((100, 100)) == 3        # 0.02 * 141.4 = 2.83
    assert boundary_width((300, 400)) == 10       # 0.02 * 500


def test_boundary_iou_on_a_5x5_mask_counted_by_hand():
    # 5x5, d = 1 (0.02 * 7.07 = 0.14 -> at least 1). GT: class 1 on rows 1-3, cols 1-3; the
    # prediction is the square one column right (cols 2-4), touching the right frame.
    #   GT          pred        GT boundary  pred boundary (frame)  (frame-free)
    #   . . . . .   . . . . .   . . . . .    . . . . .              . . . . .
    #   . 1 1 1 .   . . 1 1 1   . b b b .    . . b b b              . . b b b
    #   . 1 1 1 .   . . 1 1 1   . b . b .    . . b . b              . . b . .
    #   . 1 1 1 .   . . 1 1 1   . b b b .    . . b b b              . . b b b
    #   . . . . .   . . . . .   . . . . .    . . . . .              . . . . .
    # GT boundary: the 8-ring around (2, 2). Prediction: (2, 3) is interior; (2, 4) is next to
    # the frame, a contour for the authors (8 pixels), not without the frame (7 pixels).
    # Common: (1, 2), (1, 3), (3, 2), (3, 3) = 4. IoU = 4 / (8 + 8 - 4) = 4/12; frame-free 4/11.
    gt = _square(5, 5, 1, 4, 1, 4)
    pred = _square(5, 5, 1, 4, 2, 5)
    for frame, want in ((True, 4 / 12), (False, 4 / 11)):
        s = BoundaryScores(2, widths=(1,), frame=frame)
        s.update(pred, gt)
        m = s.compute()
        assert m["boundary_iou"] == pytest.approx(want) and m["boundary_frame"] is frame
        assert m["per_class_boundary_iou"][1] == pytest.approx(want)


def test_boundary_iou_of_a_shifted_square():
    # 6x6, d = 1. GT: class 1 on rows 1-4, cols 1-4; prediction: the square one column right.
    gt = _square(6, 6, 1, 5, 1, 5)
    pred = _square(6, 6, 1, 5, 2, 6)
    s = BoundaryScores(2, widths=(1,))
    s.update(pred, gt)
    m = s.compute()
    # class 1: GT boundary = the 12-pixel ring of the 4x4 square. Predicted: the square touches
    # the right frame, a contour: 16 - 4 interior (rows 2-3, cols 3-4) = 12 pixels (rows 1 and 4,
    # cols 2 and 5 of rows 2-3). Common: rows 1 and 4, cols 2-4 = 6. IoU = 6 / (12 + 12 - 6).
    # class 0: GT = the 20-pixel frame, all of it boundary. Predicted class 0: rows 0 and 5 (12)
    # and cols 0-1 of rows 1-4 (8), all boundary (col 0 on the frame, col 1 next to the square):
    # 20. Common: rows 0 and 5 and col 0 of rows 1-4 = 16. IoU = 16 / (20 + 20 - 16).
    assert m["per_class_boundary_iou"] == pytest.approx([16 / 24, 6 / 18])
    # two classes: a binary mask, whose object is class 1 (the background is not scored)
    assert m["boundary_iou"] == pytest.approx(6 / 18) and m["boundary_objects"] == [1]
    # frame-free (and both classes scored): the predicted square's boundary loses col 5 of rows
    # 2-3: 10 pixels, common 6 -> 6/16. class 0: GT = the 20-pixel frame, all of it within 1 of
    # the square. Predicted class 0: its boundary is rows 0 and 5, cols 1-5 (10) and col 1 of rows
    # 1-4 (4) = 14 (col 0 and the corners (0, 0), (5, 0) are 2 away from the square). Common: the
    # 10 of rows 0 and 5 -> 10 / (20 + 14 - 10).
    s = BoundaryScores(2, widths=(1,), frame=False, objects=(0, 1))
    s.update(pred, gt)
    m = s.compute()
    assert m["per_class_boundary_iou"] == pytest.approx([10 / 24, 6 / 16])
    assert m["boundary_iou"] == pytest.approx((10 / 24 + 6 / 16) / 2)


def test_boundary_iou_is_a_mean_over_images():
    gt = _square(6, 6, 1, 5, 1, 5)
    s = BoundaryScores(3, widths=(1,))
    s.update(gt, gt)
    assert s.compute()["boundary_iou"] == 1.0
    assert math.isnan(s.compute()["per_class_boundary_iou"][2])  # class 2 never seen: left out
    # a second image: the shifted square (classes 0 and 1 scored: 16/24 and 6/18, mean 1/2)
    s.update(_square(6, 6, 1, 5, 2, 6), gt)
    m = s.compute()
    assert m["boundary_iou"] == pytest.approx((1 + 0.5) / 2) and m["boundary_iou_images"] == 2
    assert m["per_class_boundary_iou"][:2] == pytest.approx([(1 + 16 / 24) / 2, (1 + 6 / 18) / 2])
    # an image of one class only, predicted so: its boundary is the frame band, IoU 1
    s.update(torch.zeros(6, 6, dtype=torch.long), torch.zeros(6, 6, dtype=torch.long))
    assert s.compute()["boundary_iou"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_binary_boundary_iou_skips_images_without_the_object():
    s = BoundaryScores(2, widths=(1,))
    s.update(torch.zeros(6, 6, dtype=torch.long), torch.zeros(6, 6, dtype=torch.long))
    m = s.compute()
    assert math.isnan(m["boundary_iou"]) and m["boundary_iou_images"] == 0
    # predicted object, none in the truth: IoU 0
    s.update(_square(6, 6, 1, 3, 1, 3), torch.zeros(6, 6, dtype=torch.long))
    assert s.compute()["boundary_iou"] == 0.0


def test_boundary_iou_leaves_out_ignored_pixels():
    gt = _square(6, 6, 1, 5, 1, 5)
    gt[:, 5] = 255  # the last column is ignored
    pred = _square(6, 6, 1, 5, 2, 6)
    s = BoundaryScores(2, widths=(1,))
    s.update(pred, gt)
    # class 1: GT ring 12 (unchanged: col 5 was class 0). Predicted boundary (12, see above)
    # without col 5 (rows 1-4): 8; common 6 -> 6 / 14.
    # class 0: GT = the frame minus col 5 = 14, all boundary. Predicted (20) without col 5 (rows
    # 0 and 5): 18; common: the 14 -> 14 / 18.
    assert s.compute()["per_class_boundary_iou"] == pytest.approx([14 / 18, 6 / 14])
    assert s.compute()["boundary_iou"] == pytest.approx(6 / 14)


def test_trimap_accuracy_in_one_dimension():
    gt = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    pred = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0]])
    s = BoundaryScores(2, widths=(1, 2, 3, 4))
    s.update(pred, gt)
    # edges: cols 3, 4. bands: w=1 {3,4}, w=2 {2..5}, w=3 {1..6}, w=4 all; wrong: cols 3 and 7
    assert s.compute()["trimap_accuracy"] == pytest.approx([1 / 2, 3 / 4, 5 / 6, 6 / 8])


def test_trimap_bands_are_chessboard_and_pooled_over_images():
    gt = torch.zeros(5, 5, dtype=torch.long)
    gt[2, 2] = 1
    pred = torch.zeros(5, 5, dtype=torch.long)
    s = BoundaryScores(2, widths=(1, 2, 3))
    s.update(pred, gt)
    # edges: the centre and its 4 neighbours (5). w=2: the plus grown by one step of the 3x3
    # square = all but the 4 corners (21). w=3: all 25. Only the centre is wrong.
    assert s.compute()["trimap_accuracy"] == pytest.approx([4 / 5, 20 / 21, 24 / 25])
    # a second image, one row with an ignored pixel
    gt2 = torch.tensor([[255, 0, 0, 0, 1, 1, 1, 1]])
    pred2 = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    s.update(pred2, gt2)
    # image 2: edges at cols 0, 1 (255 | 0) and 3, 4; w=1 scored {1, 3, 4}: 2 right;
    # w=2 {1..5}: 4 right of 5; w=3 {1..6}: 5 of 6
    assert s.compute()["trimap_accuracy"] == pytest.approx([6 / 8, 24 / 26, 29 / 31])


def test_mba_radii_follow_cascadepsp():
    assert mba_radii((256, 256)) == [1, 1, 1, 1, 1]
    assert mba_radii((300, 600)) == [1, 1, 1, 2, 2]   # R = 3: 1 + int(0.4 i)
    assert mba_radii((1500, 1500)) == [1, 2, 4, 6, 8]  # R = 10: 1 + int(1.8 i)


def test_mba_is_a_mean_over_images():
    s = BoundaryScores(2, widths=(1,))
    # image 1: region (radius 1 disk meets both labels) = cols 3, 4; col 3 wrong -> 1/2
    s.update(torch.tensor([[0, 0, 0, 1, 1, 1, 1, 0]]), torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]]))
    # image 2: a single class-1 pixel in 5x5: region = it and its 4 neighbours; it is wrong -> 4/5
    gt = torch.zeros(5, 5, dtype=torch.long)
    gt[2, 2] = 1
    s.update(torch.zeros(5, 5, dtype=torch.long), gt)
    # image 3: one label only: no region, skipped
    s.update(torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long))
    m = s.compute()
    assert m["mba"] == pytest.approx((1 / 2 + 4 / 5) / 2) and m["mba_images"] == 2


def test_mba_uses_opencvs_ellipse_from_radius_2():
    # 350x350: R = 700/300 = 2.33, radii 1 + int(0.267 i) = 1, 1, 1, 1, 2. One class-1 pixel in
    # the middle, predicted as background. Radius 1 (the plus): region = it and its 4 neighbours,
    # 1 wrong -> 4/5. Radius 2, OpenCV's ellipse: rows of 1, 5, 5, 5, 1 pixels = 17, 1 wrong ->
    # 16/17 (the disk x^2 + y^2 <= 4 has 13 pixels and would give 12/13).
    gt = torch.zeros(350, 350, dtype=torch.long)
    gt[175, 175] = 1
    s = BoundaryScores(2, widths=(1,))
    s.update(torch.zeros_like(gt), gt)
    assert mba_radii((350, 350)) == [1, 1, 1, 1, 2]
    assert s.compute()["mba"] == pytest.approx((4 * 4 / 5 + 16 / 17) / 5)
    assert int(gradient_region(gt, 2).sum()) == 17 and ellipse_kernel(2).sum() == 17


def test_mba_marks_pixels_next_to_void_as_cascadepsp_does():
    # radius 1 in one row: the window is a pixel and its two neighbours. GT 0 0 1 1 v v: the
    # windows of cols 1, 2 hold 0 and 1, those of cols 3 and 4 hold 1 and void (col 4 is void,
    # not scored): region = cols 1, 2, 3. Prediction 0 0 1 0 0 0: col 3 wrong -> 2/3.
    gt = torch.tensor([[0, 0, 1, 1, 255, 255]])
    s = BoundaryScores(2, widths=(1,))
    s.update(torch.tensor([[0, 0, 1, 0, 0, 0]]), gt)
    assert gradient_region(gt, 1).tolist() == [[False, True, True, True, True, False]]
    assert s.compute()["mba"] == pytest.approx(2 / 3)


def test_bad_input_is_a_clear_error():
    s = BoundaryScores(2)
    with pytest.raises(ValueError, match="differ in shape"):
        s.update(torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="widths"):
        BoundaryScores(2, widths=(0,))
    with pytest.raises(ValueError, match="empty label maps"):
        s.update(torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="objects must be classes in 0..1"):
        BoundaryScores(2, objects=(2,))
    with pytest.raises(ValueError, match="ellipse radius"):
        ellipse_kernel(-1)


def test_the_protocol_reports_them_beside_miou():
    gt = _square(6, 6, 1, 5, 1, 5)
    proto = get_protocol("plain", num_classes=2, boundary=True)
    proto.accumulate(_square(6, 6, 1, 5, 2, 6), gt)
    m = proto.compute()
    cols = proto.headline(m)
    assert list(cols)[:5] == ["overall AC", "mean AC", "mean IoU", "boundary IoU", "mBA"]
    assert cols["boundary IoU"] == pytest.approx(6 / 18)  # class 1, the object (see above)
    assert len(m["trimap_accuracy"]) == 20 and m["trimap_widths"] == list(range(1, 21))
    plain = get_protocol("plain", num_classes=2)
    plain.accumulate(gt, gt)
    assert "boundary IoU" not in plain.headline(plain.compute())


def test_spn_eval_reports_them(tmp_path):
    import json

    from spn.cli import main
    from spn.models import create_model
    from spn.models.checkpoint import save_checkpoint

    # an untrained SPN returns its coarse input (zero last layer): its boundary scores are the input's
    torch.manual_seed(0)
    m = create_model("spn_three_way", num_classes=6, channels=4, guidance_width=4, guidance_depth=2)
    save_checkpoint(tmp_path / "run", m, {}, 0, data_info={"num_classes": 6})
    rc = main(["eval", "--checkpoint", str(tmp_path / "run"), "--data", "synthetic", "--limit", "2",
               "--json", str(tmp_path / "e.json"), "--report", str(tmp_path / "e.md"), "--no-progress"])
    assert rc == 0
    res = json.loads((tmp_path / "e.json").read_text())
    for key in ("boundary_iou", "mba"):
        assert res["refined"][key] == pytest.approx(res["coarse"][key])
    assert len(res["refined"]["trimap_accuracy"]) == 20
    report = (tmp_path / "e.md").read_text()
    assert "| boundary IoU | mBA |" in report and "Trimap accuracy" in report
