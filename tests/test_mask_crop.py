"""Object-centred inference of the mask refiner: the crop box, the paste outside the crop, and the
agreement with the whole-photo path when the crop is the whole photo."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spn.inference_mask import MaskRefiner, crop_box, refine_crop, refine_tiled
from spn.models import create_model


def _net():
    torch.manual_seed(0)
    return create_model("mask_refiner", guidance_width=4).eval()


def test_crop_box_margin_hand_computed():
    fg = torch.zeros(100, 200, dtype=torch.bool)
    fg[40:60, 90:130] = True  # box 20 x 40: longer side 40, context 0.5 -> 20 pixels each side
    assert crop_box(fg, context=0.5, min_context=4) == (20, 80, 70, 150)
    # the minimum context wins for a small box: 3 x 5 box, 0.5 * 5 -> 3 < 10
    fg = torch.zeros(100, 200, dtype=torch.bool)
    fg[50:53, 100:105] = True
    assert crop_box(fg, context=0.5, min_context=10) == (40, 63, 90, 115)
    # 0.25 * 7 = 1.75 -> ceil 2
    fg = torch.zeros(30, 30, dtype=torch.bool)
    fg[10:17, 12:14] = True
    assert crop_box(fg, context=0.25, min_context=0) == (8, 19, 10, 16)


def test_crop_box_clamps_at_the_borders_and_empty():
    fg = torch.zeros(50, 80, dtype=torch.bool)
    fg[0:10, 75:80] = True  # touches the top and right borders; margin 5
    assert crop_box(fg, context=0.5, min_context=0) == (0, 15, 70, 80)
    fg = torch.zeros(50, 80, dtype=torch.bool)
    fg[2:48, 3:77] = True  # margin 37 everywhere: the whole photo
    assert crop_box(fg, context=0.5, min_context=16) == (0, 50, 0, 80)
    assert crop_box(torch.zeros(5, 5, dtype=torch.bool)) is None


def test_small_object_in_a_large_frame_pastes_the_coarse_mask_outside_the_crop():
    H, W = 300, 400
    image = np.full((H, W, 3), 40, np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    image[(yy - 200) ** 2 + (xx - 100) ** 2 <= 12 ** 2] = 220
    coarse = np.zeros((H, W), np.float32)
    coarse[190:212, 88:110] = 1.0
    coarse[0:3, 0:3] = 0.3  # a faint soft value far away: kept as it is outside the crop
    r = MaskRefiner(_net(), crop_size=64, context=0.5, min_context=16, keep=False)
    out = r.refine_proba(image, coarse)
    assert out.shape == (H, W) and out.dtype == np.float32
    # box rows 190..211, cols 88..109, side 22 -> margin max(16, 11) = 16
    y0, y1, x0, x1 = 174, 228, 72, 126
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[outside], coarse[outside])
    assert out[0, 0] == pytest.approx(0.3)
    inside = out[y0:y1, x0:x1]
    assert np.isfinite(inside).all() and not np.array_equal(inside, coarse[y0:y1, x0:x1])
    hard = r.refine(image, coarse)
    assert hard.shape == (H, W) and hard.dtype == np.bool_ and not hard[outside].any()


def test_crop_path_matches_whole_photo_path_when_the_crop_is_the_photo():
    net = _net()
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 48, 64, generator=g)
    coarse = torch.zeros(48, 64)
    coarse[10:40, 12:50] = 1.0
    with torch.no_grad():
        a = refine_crop(net, image, coarse, (0, 48, 0, 64), crop_size=64)  # no resize: one pass
        b = refine_tiled(net, image, coarse, global_size=512)
    torch.testing.assert_close(a, b)
    # and the class dispatches such a mask to the whole-photo path: crop on and off agree
    on = MaskRefiner(net, crop=True, min_context=16).refine_proba(image, coarse)
    off = MaskRefiner(net, crop=False).refine_proba(image, coarse)
    np.testing.assert_array_equal(on, off)


def test_crop_path_resizes_to_crop_size_and_back():
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, image, coarse):
            calls.append(tuple(image.shape[-2:]))
            return torch.logit(coarse.clamp(1e-4, 1 - 1e-4))  # returns the coarse mask

    net = _net()
    net.forward = Spy().forward
    coarse = torch.zeros(200, 300)
    coarse[100:120, 50:90] = 1.0  # box 20 x 40, margin 20 -> crop 60 x 80
    out = refine_crop(net, torch.rand(3, 200, 300), coarse, crop_box(coarse >= 0.5, 0.5, 4), crop_size=160)
    assert calls == [(120, 160)]
    assert out.shape == (200, 300)
    assert float(out[:80].abs().max()) == 0 and float(out[110, 70]) == pytest.approx(1.0, abs=1e-3)


def test_crop_settings_are_checked():
    net = _net()
    for kw in ({"crop": "yes"}, {"crop_size": 8}, {"crop_size": 200.0}, {"context": -1},
               {"context": float("nan")}, {"min_context": -2}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            MaskRefiner(net, **kw)
    r = MaskRefiner(net)
    assert (r.crop, r.crop_size, r.context, r.min_context) == (True, 320, 0.5, 16)
    assert "crop_size=320" in repr(r)


class _Logit(torch.nn.Module):
    """A stand-in network: the logit of ``rule(coarse, width)`` (a probability map)."""

    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def forward(self, image, coarse):
        return torch.logit(self.rule(coarse).clamp(1e-4, 1 - 1e-4))


def _stand_in(rule):
    net = _net()
    net.forward = _Logit(rule).forward
    return net


def _fine_mask(H, W):
    """A rectangle with a one-pixel line and a 2-pixel notch: details that a 4x shrink loses."""
    m = np.zeros((H, W), np.float32)
    m[100:300, 150:450] = 1.0
    m[200, 450:520] = 1.0  # a one-pixel antenna
    m[100:102, 300:302] = 0.0  # a 2 x 2 notch
    return m


def test_keep_returns_the_input_where_the_pass_keeps_its_decision():
    H, W = 400, 600
    m = _fine_mask(H, W)
    image = np.zeros((H, W, 3), np.uint8)
    same = _stand_in(lambda c: (c >= 0.5).float())  # keeps every decision at its own resolution
    calls = []
    spy = _stand_in(lambda c: calls.append(tuple(c.shape[-2:])) or (c >= 0.5).float())
    MaskRefiner(spy, crop_size=160, context=0.1, keep=True).refine_proba(image, m)
    assert max(calls[0]) == 160  # the crop (275 x 444 pixels) was shrunk to 160 for the pass
    kept = MaskRefiner(same, crop_size=160, context=0.1, keep=True).refine_proba(image, m)
    np.testing.assert_array_equal(kept, m)  # the input, pixel for pixel, antenna and notch included
    lost = MaskRefiner(same, crop_size=160, context=0.1, keep=False).refine_proba(image, m) >= 0.5
    assert not np.array_equal(lost, m >= 0.5)  # without keep the resampling loses them
    # the whole-photo path (the crop is the photo; global pass at 128 pixels) keeps them too
    whole = MaskRefiner(same, crop=False, global_size=128, keep=True).refine_proba(image, m)
    np.testing.assert_array_equal(whole, m)


def test_keep_takes_the_pass_near_its_changes_only():
    H, W = 400, 600
    m = _fine_mask(H, W)
    image = np.zeros((H, W, 3), np.uint8)

    def grow_left(c):  # fills the left quarter of the pass: a change far from the antenna
        out = (c >= 0.5).float()
        out[..., : c.shape[-1] // 4] = 1.0
        return out

    r = MaskRefiner(_stand_in(grow_left), crop=False, global_size=150, keep=True)
    out = r.refine_proba(image, m) >= 0.5
    # the pass (150 x 100: a quarter of the photo's resolution) filled columns < 37 of 150, i.e.
    # photo columns < 148: all foreground now, up to one pass pixel (4 photo pixels) of slack
    assert out[:, :144].all()
    # far from that change (more than two pass pixels, 8 photo pixels, beyond column 148), the input
    np.testing.assert_array_equal(out[:, 160:], m[:, 160:] >= 0.5)
    with pytest.raises(ValueError, match="keep"):
        MaskRefiner(_net(), keep="yes")


@pytest.mark.parametrize("level,changed_at", [(0.55, (0.0,)), (0.95, (0.0, 0.1, 0.4))])
def test_confidence_leaves_unsure_changes_out(level, changed_at):
    H, W = 120, 160
    m = np.zeros((H, W), np.float32)
    m[30:90, 60:120] = 1.0
    image = np.zeros((H, W, 3), np.uint8)

    def unsure_left(c):  # the left quarter becomes foreground with probability `level`
        out = (c >= 0.5).float()
        out[..., : c.shape[-1] // 4] = level
        return out

    for conf in (0.0, 0.1, 0.4):
        r = MaskRefiner(_stand_in(unsure_left), crop=False, keep=True, confidence=conf)
        out = r.refine_proba(image, m) >= 0.5
        np.testing.assert_array_equal(out[:, 41:], m[:, 41:] >= 0.5)  # untouched beyond the change
        assert out[:, :40].all() == (conf in changed_at)  # made only when the pass is sure enough
    with pytest.raises(ValueError, match="confidence"):
        MaskRefiner(_net(), confidence=0.5)
