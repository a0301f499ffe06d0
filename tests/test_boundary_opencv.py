"""The boundary metrics against OpenCV's primitives, as the authors' code uses them.

References, rebuilt here from OpenCV calls (the definitions, not the authors' code):
- CascadePSP's mBA: the region is ``cv2.morphologyEx(gt, MORPH_GRADIENT, ellipse) > 0`` with
  ``ellipse = cv2.getStructuringElement(MORPH_ELLIPSE, (2r+1, 2r+1))``; for several classes the
  union of that region over the classes other than void; the accuracy there (void not scored),
  averaged over the five radii, then over the images.
- boundary IoU (boundary-iou-api ``mask_to_boundary``): pad the mask with one pixel of zeros
  (``cv2.copyMakeBorder``), erode ``d`` times with a 3 x 3 square (``cv2.erode``), crop, and
  subtract from the mask; the IoU of the two boundaries per image, averaged over the images.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spn.metrics.boundary import (BoundaryScores, boundary_region, boundary_width, ellipse_kernel,
                                  gradient_region, mba_radii)

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (a test dependency) is not installed: "
                                        "`pip install opencv-python-headless`")

SIZES = [(5, 5), (13, 17), (64, 48), (121, 203)]


def _field(rng, H, W, cell):
    """A smooth random field: noise on a coarse grid, resized with bicubic interpolation."""
    small = rng.standard_normal((max(2, H // cell), max(2, W // cell))).astype(np.float32)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)


def _blobs(rng, H, W, cell=8):
    """A binary blob mask, uint8 0/1, that usually touches the frame."""
    return (_field(rng, H, W, cell) > 0.3).astype(np.uint8)


def _labels(rng, H, W, K=3, void=255, cell=8):
    """A K-class label map from the argmax of K fields, with void where the top two are close."""
    f = np.stack([_field(rng, H, W, cell) for _ in range(K)])
    lab = f.argmax(0).astype(np.int64)
    top2 = np.sort(f, axis=0)[-2:]
    lab[(top2[1] - top2[0]) < 0.05] = void
    return lab


def _cv_mask_to_boundary(mask: np.ndarray, d: int, frame: bool = True) -> np.ndarray:
    h, w = mask.shape
    kernel = np.ones((3, 3), np.uint8)
    if frame:
        padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        eroded = cv2.erode(padded, kernel, iterations=d)[1:h + 1, 1:w + 1]
    else:  # OpenCV's default border leaves the frame out of the erosion
        eroded = cv2.erode(mask, kernel, iterations=d)
    return mask - eroded


def _cv_gradient_region(labels: np.ndarray, r: int, void: int = 255) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    region = np.zeros(labels.shape, bool)
    for c in np.unique(labels):
        if c == void:
            continue
        region |= cv2.morphologyEx((labels == c).astype(np.uint8), cv2.MORPH_GRADIENT, k) > 0
    return region


def _cv_mba_image(gt: np.ndarray, pred: np.ndarray, void: int = 255) -> float:
    accs = []
    for r in mba_radii(gt.shape):
        region = _cv_gradient_region(gt, r, void) & (gt != void)
        accs.append((gt[region] == pred[region]).sum() / region.sum())
    return float(sum(accs) / len(accs))


def _cv_biou_image(gt: np.ndarray, pred: np.ndarray) -> float:
    d = max(1, int(round(0.02 * np.sqrt(gt.shape[0] ** 2 + gt.shape[1] ** 2))))
    bg, bp = _cv_mask_to_boundary(gt, d), _cv_mask_to_boundary(pred, d)
    return float(((bg * bp) > 0).sum() / ((bg + bp) > 0).sum())


@pytest.mark.parametrize("r", list(range(0, 41)))
def test_ellipse_kernel_is_opencvs(r):
    want = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)).astype(bool)
    assert np.array_equal(ellipse_kernel(r).numpy(), want)


@pytest.mark.parametrize("shape", SIZES)
def test_gradient_region_is_opencvs_morphological_gradient(shape):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    H, W = shape
    for r in (1, 2, 3, 5, 8):
        m = _blobs(rng, H, W, cell=4)
        want = cv2.morphologyEx(m, cv2.MORPH_GRADIENT,
                                cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
        assert np.array_equal(gradient_region(torch.from_numpy(m), r).numpy(), want), (shape, r)
        lab = _labels(rng, H, W, cell=4)
        got = gradient_region(torch.from_numpy(lab), r).numpy()
        assert np.array_equal(got, _cv_gradient_region(lab, r)), (shape, r, "multi-class")


@pytest.mark.parametrize("shape", SIZES)
@pytest.mark.parametrize("frame", [True, False])
def test_boundary_region_is_the_authors_mask_to_boundary(shape, frame):
    rng = np.random.default_rng(7 + shape[0])
    H, W = shape
    for d in (1, 2, 3, boundary_width(shape), 7):
        m = _blobs(rng, H, W, cell=4)
        want = _cv_mask_to_boundary(m, d, frame) > 0
        got = boundary_region(torch.from_numpy(m).bool(), d, frame=frame).numpy()
        assert np.array_equal(got, want), (shape, d, frame)
    full = np.ones((H, W), np.uint8)  # a mask filling the image: its boundary is the frame band
    assert np.array_equal(boundary_region(torch.from_numpy(full).bool(), 2).numpy(),
                          _cv_mask_to_boundary(full, 2) > 0)


def test_boundary_width_is_the_authors_dilation():
    for H, W in [(5, 5), (480, 640), (1080, 1920), (2160, 3840), (333, 517), (25, 0)]:
        want = max(1, int(round(0.02 * np.sqrt(H ** 2 + W ** 2))))
        assert boundary_width((H, W)) == want


def test_scores_on_640x480_blobs_match_the_references():
    """Binary masks at CascadePSP's size (radii 1, 1, 2, 2, 3 of the ellipse; d = 16): a
    coarse prediction (the blob downsampled 16 times, upsampled back) against the truth."""
    rng = np.random.default_rng(0)
    s = BoundaryScores(2, widths=(1,))
    mba, biou = [], []
    for _ in range(3):
        gt = _blobs(rng, 480, 640, cell=64)
        small = cv2.resize(gt.astype(np.float32), (40, 30), interpolation=cv2.INTER_AREA)
        pred = (cv2.resize(small, (640, 480), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.uint8)
        s.update(torch.from_numpy(pred), torch.from_numpy(gt))
        mba.append(_cv_mba_image(gt, pred))
        biou.append(_cv_biou_image(gt, pred))
    m = s.compute()
    assert mba_radii((480, 640)) == [1, 1, 2, 2, 3] and boundary_width((480, 640)) == 16
    assert m["mba"] == pytest.approx(sum(mba) / 3, abs=1e-12)
    assert m["boundary_iou"] == pytest.approx(sum(biou) / 3, abs=1e-12)
    assert m["boundary_iou_images"] == 3 and m["mba_images"] == 3


def test_multiclass_mba_with_void_matches_the_reference():
    rng = np.random.default_rng(1)
    s = BoundaryScores(3, widths=(1,))
    want = []
    for shape in [(400, 500), (700, 800)]:  # radii 1,1,1,2,2 (R = 3) and 1,1,2,3,4 (R = 5)
        gt = _labels(rng, *shape, cell=32)
        pred = _labels(rng, *shape, cell=32)
        pred[pred == 255] = 0
        pred = np.where(rng.random(shape) < 0.7, np.where(gt == 255, 0, gt), pred)
        s.update(torch.from_numpy(pred), torch.from_numpy(gt))
        want.append(_cv_mba_image(gt, pred))
    assert s.compute()["mba"] == pytest.approx(sum(want) / 2, abs=1e-12)


def test_binary_boundary_iou_scores_the_object_only():
    """For two classes the object is class 1 (the background is not scored), as HQ-SAM's mBIoU;
    with three classes every class present is an object of its image."""
    rng = np.random.default_rng(2)
    gt, pred = _blobs(rng, 60, 80), _blobs(rng, 60, 80)
    s = BoundaryScores(2, widths=(1,))
    s.update(torch.from_numpy(pred), torch.from_numpy(gt))
    assert s.compute()["boundary_iou"] == pytest.approx(_cv_biou_image(gt, pred), abs=1e-12)
    s3 = BoundaryScores(3, widths=(1,))
    s3.update(torch.from_numpy(pred), torch.from_numpy(gt))
    both = [_cv_biou_image(gt, pred), _cv_biou_image(1 - gt, 1 - pred)]
    assert s3.compute()["boundary_iou"] == pytest.approx(math.fsum(both) / 2, abs=1e-12)
