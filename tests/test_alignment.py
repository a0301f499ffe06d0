"""The SPN refiner's down- and up-sampling are aligned.

A refiner with zero gates (the propagation is the identity), an embedding set by hand to the 2x2
block mean (the centre 2x2 taps of its 4x4 kernel, 1/4 each), and an identity head returns
``bilinear_up(area_down(coarse))``. Block means sit at ``2i + 0.5`` and bilinear upsampling
(``align_corners=False``) reads them there, so a linear ramp comes back unchanged away from the
borders and a sharp edge keeps its position, at any parity of the edge and of the image size.
The pre-fix refiner (``aligned=False``, 3x3 stride-2 embedding) shifts both by half a pixel.
"""
from __future__ import annotations

import pytest
import torch

from spn.models import SPNConfig, SPNRefiner
from spn.models.checkpoint import load_checkpoint, save_checkpoint


def _identity_refiner(K: int, aligned: bool = True) -> SPNRefiner:
    cfg = SPNConfig(num_classes=K, channels=K, guidance_width=4, guidance_depth=2, shared_gates=True,
                    residual=False, aligned=aligned)
    net = SPNRefiner(cfg, "three_way").eval()
    with torch.no_grad():
        conv, _, one = net.embed
        conv.weight.zero_()
        conv.bias.zero_()
        for c in range(K):
            if aligned:  # 4x4, padding 1: taps 1..2 are input pixels 2i, 2i+1
                conv.weight[c, c, 1:3, 1:3] = 0.25
            else:  # 3x3, padding 1: tap 1 is input pixel 2i (the best a 3x3 stride-2 conv can do)
                conv.weight[c, c, 1, 1] = 1.0
        one.weight.zero_()
        one.bias.zero_()
        one.weight[:, :, 0, 0] = torch.eye(K)
        # zero gates: the guidance network's last layer outputs 0
        net.guidance.unet.head.weight.zero_()
        net.guidance.unet.head.bias.zero_()
        c3, _, c1 = net.head
        c3.weight.zero_()
        c3.bias.zero_()
        for c in range(K):
            c3.weight[c, c, 1, 1] = 1.0
        c1.weight.zero_()
        c1.bias.zero_()
        c1.weight[:, :, 0, 0] = torch.eye(K)
    return net


def _run(net, coarse):
    image = torch.rand(1, 3, *coarse.shape[-2:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return net(image, coarse)


def test_the_aligned_convs_are_4x4():
    net = SPNRefiner(SPNConfig(num_classes=3), "three_way")
    assert net.embed[0].kernel_size == (4, 4) and net.embed[0].stride == (2, 2)
    assert net.guidance.unet.stem.body[0].kernel_size == (4, 4)
    old = SPNRefiner(SPNConfig(num_classes=3, aligned=False), "three_way")
    assert old.embed[0].kernel_size == (3, 3)


@pytest.mark.parametrize("H,W", [(16, 24), (17, 23)])
def test_a_ramp_comes_back_unshifted(H, W):
    # two channels: a horizontal ramp and a vertical ramp (non-negative, the ReLU passes them)
    xs = torch.arange(W, dtype=torch.float32)
    ys = torch.arange(H, dtype=torch.float32)
    coarse = torch.stack([xs.expand(H, W), ys[:, None].expand(H, W)])[None]
    out = _run(_identity_refiner(2), coarse)
    # away from the borders (the first and last pixel of each axis; odd sizes pad one more) the
    # ramp is exact
    inner = (slice(None), slice(None), slice(1, H - 2), slice(1, W - 2))
    assert torch.allclose(out[inner], coarse[inner], atol=1e-5)
    # the pre-fix refiner shifts it by half a pixel on even sizes (x - 0.5); on odd sizes its
    # interpolation by ceil(H/2)/H also stretches it
    old = _run(_identity_refiner(2, aligned=False), coarse)
    if H % 2 == 0 and W % 2 == 0:
        assert torch.allclose(old[inner], coarse[inner] - 0.5, atol=1e-5)
    else:
        assert not torch.allclose(old[inner], coarse[inner], atol=0.1)


@pytest.mark.parametrize("edge", [8, 9, 12, 13])
@pytest.mark.parametrize("W", [24, 25])
def test_a_sharp_edge_keeps_its_position(edge, W):
    H = 10
    labels = (torch.arange(W) >= edge).long().expand(H, W)
    coarse = torch.nn.functional.one_hot(labels, 2).permute(2, 0, 1).float()[None]
    out = _run(_identity_refiner(2), coarse)
    assert torch.equal(out.argmax(1)[0], labels)
    # the transition is symmetric about the edge: the two pixels beside it are 0.5 -/+ the same
    # (even edge: 0.25 / 0.75; odd edge, whose block mean is 0.5: 0.375 / 0.625)
    p = out[0, 1, 0]
    expect = (0.25, 0.75) if edge % 2 == 0 else (0.375, 0.625)
    assert p[edge - 1].item() == pytest.approx(expect[0], abs=1e-6)
    assert p[edge].item() == pytest.approx(expect[1], abs=1e-6)


def test_the_pre_fix_refiner_moves_an_edge_at_an_odd_column():
    W, edge = 24, 9
    labels = (torch.arange(W) >= edge).long().expand(8, W)
    coarse = torch.nn.functional.one_hot(labels, 2).permute(2, 0, 1).float()[None]
    old = _run(_identity_refiner(2, aligned=False), coarse).argmax(1)[0]
    assert not torch.equal(old, labels)  # the column at the edge changes class
    assert torch.equal(_run(_identity_refiner(2), coarse).argmax(1)[0], labels)


def test_a_config_without_aligned_is_rebuilt_aligned_and_unaligned_weights_are_refused(tmp_path):
    """No compatibility default: a config that does not say ``aligned`` gets the model's default
    (aligned), and 3x3 weights of an unaligned refiner do not fit it: one error naming the shapes."""
    net = SPNRefiner(SPNConfig(num_classes=3, channels=4, guidance_width=4, guidance_depth=2,
                               aligned=False), "three_way")
    net.config.pop("aligned")
    save_checkpoint(tmp_path / "old", net, {}, 1, data_info={"num_classes": 3})
    with pytest.raises(ValueError, match=r"the weights do not fit the model \(shape mismatch .*\(4, 3, 3, 3\) vs \(4, 3, 4, 4\)"):
        load_checkpoint(tmp_path / "old")
