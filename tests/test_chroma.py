"""The chroma task: resampling alignment, YCbCr, PSNR / SSIM, the photo data, the chroma SPN,
the chroma peers (joint bilateral upsampling, grey guided filter), training and the commands."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from spn.data import PhotoDataset, PhotoPatches, build_dataset, chroma_item, rgb_to_ycbcr, write_image, ycbcr_to_rgb
from spn.inference_chroma import ChromaUpsampler, predict_chroma
from spn.metrics import psnr, ssim
from spn.models import create_model
from spn.models.chroma import workspace as chroma_model
from spn.models.chroma import NEIGHBOURS, luma_similarity, release_workspace, similarity_planes
from spn.image.resample import area_downsample, bilinear_upsample, upsample_then_area_matrix
from spn.peers.chroma import get_chroma_peer, joint_bilateral_upsample, list_chroma_peers
from spn.peers.guided_filter import guided_filter_gray


# --- resampling ------------------------------------------------------------------------------

@pytest.mark.parametrize("f", [2, 4, 8])
@pytest.mark.parametrize("H, W", [(32, 48), (37, 45)])
def test_area_then_bilinear_reproduces_a_linear_ramp_away_from_borders(f, H, W):
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    ramp = (0.3 * yy - 0.7 * xx + 2.0)[None, None]
    low = area_downsample(ramp, f)
    assert low.shape[-2:] == (math.ceil(H / f), math.ceil(W / f))
    # block q averages pixels f*q .. f*q+f-1: its value is the ramp at the block centre f*q + (f-1)/2
    q = torch.arange(H // f, dtype=torch.float64)
    assert torch.allclose(low[0, 0, : H // f, 0], 0.3 * (f * q + (f - 1) / 2) - 0.7 * (f - 1) / 2 + 2.0)
    up = bilinear_upsample(low, f, (H, W))
    # interior: between the first and the last full block centre, far from a padded block
    y0, y1 = f, (H // f - 1) * f
    x0, x1 = f, (W // f - 1) * f
    assert torch.allclose(up[..., y0:y1, x0:x1], ramp[..., y0:y1, x0:x1], atol=1e-9)


def test_bilinear_upsample_rejects_a_map_of_the_wrong_size():
    with pytest.raises(ValueError, match="not the factor-8 subsampling"):
        bilinear_upsample(torch.zeros(1, 2, 5, 5), 8, (64, 64))
    with pytest.raises(ValueError, match="factor must be >= 1"):
        area_downsample(torch.zeros(1, 1, 4, 4), 0)


def test_bilinear_upsample_into_a_buffer_by_hand_and_against_pytorch():
    # one row [0, 8] upsampled by 2: pixel p reads (p + 0.5)/2 - 0.5 = -0.25, 0.25, 0.75, 1.25,
    # clamped to the samples at the ends: 0, 2, 6, 8
    out = torch.full((1, 1, 1, 4), float("nan"))
    with torch.no_grad():
        bilinear_upsample(torch.tensor([[[[0.0, 8.0]]]]), 2, (1, 4), out=out)
    assert out.flatten().tolist() == [0.0, 2.0, 6.0, 8.0]
    torch.manual_seed(0)
    for f, (H, W) in itertools.product([1, 2, 3, 4, 8], [(30, 37), (32, 40), (5, 3), (1, 1)]):
        low = torch.rand(2, 3, math.ceil(H / f), math.ceil(W / f))
        want = torch.nn.functional.interpolate(low, size=(low.shape[-2] * f, low.shape[-1] * f), mode="bilinear",
                                               align_corners=False)[..., :H, :W]
        big = torch.full((2, 5, H, W), float("nan"))  # a strided destination: channels 1..3 of a wider map
        with torch.no_grad():
            got = bilinear_upsample(low, f, (H, W), out=big[:, 1:4], scratch=torch.empty(10 ** 5))
        assert got.data_ptr() == big[:, 1:4].data_ptr()
        assert torch.allclose(big[:, 1:4], want, atol=1e-6), (f, H, W)
        assert bool(big[:, 0].isnan().all()) and bool(big[:, 4].isnan().all())
    with pytest.raises(ValueError, match=r"out must be a \(1, 1, 8, 8\) tensor"):
        bilinear_upsample(torch.zeros(1, 1, 2, 2), 4, (8, 8), out=torch.zeros(1, 1, 8, 9))
    with pytest.raises(RuntimeError, match="does not record gradients"):
        bilinear_upsample(torch.zeros(1, 1, 2, 2, requires_grad=True), 4, (8, 8), out=torch.zeros(1, 1, 8, 8))


def test_upsample_then_area_matrix_by_hand_and_against_the_two_functions():
    # n = 4, f = 2, s = 2: the upsampled line of [a, b] is [a, (3a + b)/4, (a + 3b)/4, b] (see
    # above), and its pair means are [(7a + b)/8, (a + 7b)/8]
    m = upsample_then_area_matrix(4, 2, 2, dtype=torch.float64)
    assert torch.allclose(m, torch.tensor([[7 / 8, 1 / 8], [1 / 8, 7 / 8]], dtype=torch.float64))
    torch.manual_seed(4)
    for f, s, (H, W) in [(8, 4, (37, 45)), (4, 4, (32, 40)), (8, 1, (9, 17)), (2, 2, (7, 5)), (8, 2, (64, 24))]:
        low = torch.rand(2, 3, math.ceil(H / f), math.ceil(W / f), dtype=torch.float64)
        my = upsample_then_area_matrix(H, f, s, dtype=torch.float64)
        mx = upsample_then_area_matrix(W, f, s, dtype=torch.float64)
        want = area_downsample(bilinear_upsample(low, f, (H, W)), s)
        assert torch.allclose(my.t() @ low @ mx, want, atol=1e-12), (f, s, H, W)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        upsample_then_area_matrix(0, 2, 2)


# --- colour ------------------------------------------------------------------------------------

def test_ycbcr_of_primaries_by_hand_and_round_trip():
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    y, cb, cr = rgb_to_ycbcr(red).flatten().tolist()
    assert y == pytest.approx(0.299)
    assert cb == pytest.approx(0.5 - 0.299 / 1.772)      # (B - Y) / 1.772
    assert cr == pytest.approx(0.5 + (1 - 0.299) / 1.402)  # (R - Y) / 1.402 = 0.5
    blue = rgb_to_ycbcr(torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)).flatten().tolist()
    assert blue == pytest.approx([0.114, 1.0, 0.5 - 0.114 / 1.402])
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        rgb_to_ycbcr(torch.rand(4, 5, 5))


def test_chroma_item_shapes_and_values():
    img = torch.rand(3, 20, 30)
    it = chroma_item(img, 4)
    assert it["luma"].shape == (1, 20, 30) and it["chroma"].shape == (2, 20, 30)
    assert it["chroma_low"].shape == (2, 5, 8)
    ycc = rgb_to_ycbcr(img)
    assert torch.allclose(it["chroma_low"][:, 1, 2], ycc[1:, 4:8, 8:12].mean((1, 2)), atol=1e-6)


# --- metrics -----------------------------------------------------------------------------------

def test_psnr_closed_form():
    a = torch.full((3, 8, 8), 0.5)
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    assert psnr(a, a + 0.01, data_range=1.0) == pytest.approx(40.0)
    assert psnr(a, a) == float("inf")
    b = a.clone()
    b[0, 0, 0] = float("nan")
    assert math.isnan(psnr(a, b))


def test_ssim_of_constant_images_by_hand():
    # no variance: SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1), C1 = (0.01 L)^2; the contrast term is 1
    c1 = (0.01 * 1.0) ** 2
    a, b = torch.full((16, 16), 0.2, dtype=torch.float64), torch.full((16, 16), 0.6, dtype=torch.float64)
    want = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)
    assert ssim(a, b) == pytest.approx(want, rel=1e-9)
    x = torch.rand(3, 20, 20)
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, 1 - x) < 0  # anti-correlated structure
    with pytest.raises(ValueError, match="smaller than the 11x11 window"):
        ssim(torch.zeros(8, 8), torch.zeros(8, 8))


def test_ssim_of_one_window_by_hand():
    # an 11x11 image has one valid window: SSIM is the closed form with Gaussian-weighted moments
    g = torch.exp(-(torch.arange(11.0, dtype=torch.float64) - 5) ** 2 / (2 * 1.5 ** 2))
    w = torch.outer(g, g)
    w = w / w.sum()
    x = torch.rand(11, 11, dtype=torch.float64)
    y = (0.7 * x + 0.2 * torch.rand(11, 11, dtype=torch.float64))
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * x * x).sum() - mx ** 2, (w * y * y).sum() - my ** 2
    cxy = (w * x * y).sum() - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    want = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    assert ssim(x, y) == pytest.approx(float(want), rel=1e-12)


def test_ssim_and_psnr_match_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(3, 40, 50, generator=gen, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(3, 40, 50, generator=gen, dtype=torch.float64)).clamp(0, 1)
    want = metrics.structural_similarity(a.numpy(), b.numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1.0)
    assert ssim(a, b) == pytest.approx(float(want), rel=1e-9)
    assert psnr(a, b) == pytest.approx(metrics.peak_signal_noise_ratio(a.numpy(), b.numpy(), data_range=1.0))


# --- data ---------------------------------------------------------------------------------------

def _photo_folder(root, n=5, size=(40, 56), seed=0):
    gen = torch.Generator().manual_seed(seed)
    for i in range(n):
        write_image(root / f"p{i}.png", torch.rand(3, *size, generator=gen))
    return root


def test_photo_folder_split_and_items(tmp_path):
    _photo_folder(tmp_path, n=5)
    train, val = PhotoDataset(tmp_path, "train", factor=8), PhotoDataset(tmp_path, "val", factor=8)
    assert train.names == ["p0", "p1", "p2", "p3"] and val.names == ["p4"]
    it = val[0]
    assert it["chroma_low"].shape == (2, 5, 7) and it["factor"] == 8
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("p3\np1\n")
    (tmp_path / "splits" / "val.txt").write_text("p0\n")
    assert build_dataset(f"photos:{tmp_path}", split="train", factor=4).names == ["p3", "p1"]
    with pytest.raises(ValueError, match="no coarse maps"):
        build_dataset(f"photos:{tmp_path}", split="train", coarse="gt-downsample:8")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        PhotoDataset(tmp_path / "nope")


def test_corrupt_photo_is_named_or_skipped(tmp_path):
    _photo_folder(tmp_path, n=2)
    (tmp_path / "p0.png").write_bytes(b"not a png")
    ds = PhotoDataset(tmp_path, "all", factor=4)
    with pytest.raises(ValueError, match="p0.png"):
        ds[0]
    with pytest.warns(UserWarning, match="p0"):
        assert PhotoDataset(tmp_path, "all", factor=4, on_corrupt="skip")[0]["name"] == "p1"


def test_photo_patches_are_deterministic_crops_of_the_photo(tmp_path):
    _photo_folder(tmp_path, n=2, size=(64, 80))
    ds = PhotoDataset(tmp_path, "all", factor=4)
    p1, p2 = PhotoPatches(ds, size=32, seed=3, scales=(1.0,)), PhotoPatches(ds, size=32, seed=3, scales=(1.0,))
    for i in range(len(p1)):
        a, b = p1[i], p2[i]
        assert a["name"] == b["name"] and torch.equal(a["chroma"], b["chroma"])
        assert a["chroma_low"].shape == (2, 8, 8)
        # the patch is a crop of the photo (flipped as its name says)
        name = a["name"]
        y, x = (int(t[1:]) for t in name.split("@")[1].split(",")[1:3])
        crop = ds[i // p1.patches_per_image]["image"][:, y:y + 32, x:x + 32]
        if ",lr" in name:
            crop = crop.flip(-1)
        if ",ud" in name:
            crop = crop.flip(-2)
        assert torch.equal(a["image"], crop)
    with pytest.raises(ValueError, match="multiple of the factor"):
        PhotoPatches(ds, size=30)


def test_skimage_photos_split():
    pytest.importorskip("skimage")
    from spn.data.photos import SKIMAGE_SPLITS

    val = build_dataset("photos:skimage", split="val", factor=8)
    assert val.names == SKIMAGE_SPLITS["val"]
    assert not set(SKIMAGE_SPLITS["train"]) & set(SKIMAGE_SPLITS["val"])
    assert val[0]["image"].shape == (3, 512, 512)  # astronaut


# --- the model -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["chroma_one_way", "chroma_three_way"])
@pytest.mark.parametrize("kw", [{}, {"merge": "learned", "luma_detail": True}, {"guidance_scale": 1}])
def test_zero_gates_return_the_bilinear_chroma_exactly(name, kw, monkeypatch):
    model = create_model(name, factor=4, guidance_width=4, **kw).eval()
    luma, low = torch.rand(2, 1, 30, 37), torch.rand(2, 2, 8, 10)
    real = model.guide

    def zero(*a):
        out = real(*a)
        out["gates"] = torch.zeros_like(out["gates"])
        out["detail"] = None if out["detail"] is None else torch.zeros_like(out["detail"])
        return out

    monkeypatch.setattr(model, "guide", zero)
    out = model(luma, low)
    # the aligned bilinear upsampling, written out: PyTorch's bilinear (align_corners=False) of the
    # low map to (8*4, 10*4), cropped
    want = torch.nn.functional.interpolate(low, size=(32, 40), mode="bilinear", align_corners=False)[..., :30, :37]
    assert torch.allclose(out, want, atol=1e-6)


def test_gates_are_stable_and_edge_aware():
    torch.manual_seed(0)
    model = create_model("chroma_three_way", factor=4, guidance_width=4, gate_init_std=1.0, gate_init_bias=0.0)
    luma = torch.rand(1, 1, 24, 24)
    g = model.gates(luma, torch.rand(1, 2, 24, 24) - 0.5, 4)
    assert g.shape == (1, 4, 3, 1, 24, 24)
    assert bool((g >= 0).all()) and float(g.detach().sum(2).max()) < 1.0
    # the similarity factor: exp(-lambda |Y(p) - Y(n)|), n read in the previous scan line
    sim = luma_similarity(luma, 3, 10.0)
    r, c = 7, 9
    for d, name in enumerate(("left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top")):
        for j, (dy, dx) in enumerate(NEIGHBOURS[name]):
            want = math.exp(-10.0 * abs(float(luma[0, 0, r, c] - luma[0, 0, r + dy, c + dx])))
            assert float(sim[0, d, j, 0, r, c]) == pytest.approx(want, rel=1e-5)


def test_similarity_planes_at_every_pixel_against_a_loop():
    torch.manual_seed(1)
    luma, lam = torch.rand(2, 1, 5, 6), 7.5
    H, W = 5, 6
    for k in (1, 3):
        planes = similarity_planes(luma, k, torch.tensor(lam))
        assert len(planes) == (8 if k == 3 else 4)
        for (dy, dx), plane in planes.items():
            for b, y, x in itertools.product(range(2), range(H), range(W)):
                # outside the image the luma is edge-replicated
                ny, nx = min(max(y + dy, 0), H - 1), min(max(x + dx, 0), W - 1)
                want = math.exp(-lam * abs(float(luma[b, 0, y, x]) - float(luma[b, 0, ny, nx])))
                assert float(plane[b, 0, y, x]) == pytest.approx(want, rel=1e-5, abs=1e-7)


FAST_CASES = [("chroma_three_way", {}, (2, 30, 37), 4), ("chroma_three_way", {}, (1, 64, 64), 8),
              ("chroma_one_way", {}, (2, 41, 23), 8), ("chroma_three_way", {"guidance_scale": 1}, (1, 17, 22), 2),
              ("chroma_three_way", {"guidance_scale": 2, "shared_gates": False}, (2, 19, 26), 4),
              ("chroma_one_way", {"edge_aware": False, "merge": "max"}, (1, 24, 33), 8),
              ("chroma_three_way", {"propagations": 2, "guidance_chroma": False}, (1, 20, 20), 4)]


@pytest.mark.parametrize("name, kw, shape, f", FAST_CASES)
def test_fast_inference_path_matches_the_general_path(name, kw, shape, f):
    torch.manual_seed(2)
    model = create_model(name, factor=f, guidance_width=4, gate_init_std=0.5, gate_init_bias=0.0, **kw).eval()
    with torch.no_grad():
        model.mix.copy_(torch.tensor([[0.9, 0.2], [-0.3, 1.1]]))
        model.log_edge_scale.fill_(math.log(6.0))
    assert model.fast_path_applies()
    B, H, W = shape
    luma, low = torch.rand(B, 1, H, W), torch.rand(B, 2, math.ceil(H / f), math.ceil(W / f))
    want = model(luma, low)  # with autograd: the general path (the reference)
    with torch.no_grad():
        fast = model(luma, low)
        model.fast_inference = False
        general = model(luma, low)
    assert torch.allclose(general, want.detach(), atol=1e-6)
    assert torch.allclose(fast, want.detach(), atol=1e-5)
    # the mix and the propagation matter here: the output is not the bilinear chroma
    assert float((want.detach() - bilinear_upsample(low, f, (H, W))).abs().max()) > 1e-3


def test_fast_path_buffers_are_reused_but_never_returned(monkeypatch):
    torch.manual_seed(3)
    model = create_model("chroma_three_way", factor=4, guidance_width=4, gate_init_std=0.5).eval()
    a = (torch.rand(1, 1, 24, 32), torch.rand(1, 2, 6, 8))
    b = (torch.rand(1, 1, 16, 16), torch.rand(1, 2, 4, 4))
    release_workspace()
    with torch.no_grad():
        out_a = model(*a)
        kept = out_a.clone()
        storages = {key: t.data_ptr() for key, t in chroma_model._WORKSPACE.storages.items()}
        out_b = model(*b)  # smaller: the same storages again
        assert {key: t.data_ptr() for key, t in chroma_model._WORKSPACE.storages.items()} == storages
        assert torch.equal(out_a, kept)  # the first output was not overwritten
        again = model(*a)
        with torch.inference_mode():  # buffers made in inference mode ...
            release_workspace()
            in_mode = model(*b)
        after = model(*b)  # ... are replaced outside it
        monkeypatch.setattr(chroma_model, "WORKSPACE_LIMIT_BYTES", 0)  # nothing cached: fresh buffers
        release_workspace()
        uncached = model(*a)
        assert not chroma_model._WORKSPACE.storages
    model.fast_inference = False
    with torch.no_grad():
        assert torch.allclose(out_b, model(*b), atol=1e-6) and torch.allclose(in_mode, out_b, atol=1e-6)
        assert torch.allclose(after, out_b, atol=1e-6)
        assert torch.allclose(again, kept) and torch.allclose(uncached, kept)
    release_workspace()


def test_model_train_and_inference_paths_agree_and_backprop():
    model = create_model("chroma_three_way", factor=8, guidance_width=4, merge="learned", luma_detail=True,
                         gate_init_std=0.1)
    luma, low = torch.rand(2, 1, 40, 48), torch.rand(2, 2, 5, 6)
    out = model(luma, low)
    with torch.no_grad():
        same = model(luma, low)
    assert torch.allclose(out, same, atol=1e-6)
    out.sum().backward()
    assert model.log_edge_scale.grad is not None and model.guidance.head.weight.grad.abs().sum() > 0


def test_model_input_errors():
    model = create_model("chroma_one_way", factor=8, guidance_width=4)
    with pytest.raises(ValueError, match="factor-8 subsampling of a 40x48 luma is 5x6"):
        model(torch.rand(1, 1, 40, 48), torch.rand(1, 2, 10, 12))
    with pytest.raises(ValueError, match=r"luma must be \(B, 1, H, W\)"):
        model(torch.rand(1, 3, 40, 48), torch.rand(1, 2, 5, 6))
    with pytest.raises(ValueError, match="guidance_scale must be 1, 2 or 4"):
        create_model("chroma_one_way", guidance_scale=3)
    with pytest.raises(ValueError, match="merge must be one of"):
        create_model("chroma_one_way", merge="sum")


# --- peers ---------------------------------------------------------------------------------------

def test_bilinear_and_bicubic_peers_on_a_ramp():
    H, W, f = 40, 48, 4
    xx = torch.arange(W, dtype=torch.float32).expand(H, W)
    chroma = torch.stack([0.2 + 0.01 * xx, 0.8 - 0.005 * xx])
    low = area_downsample(chroma[None], f)[0]
    luma = torch.rand(1, H, W)
    for name in ("bilinear", "bicubic"):
        out = get_chroma_peer(name).upsample(luma, low, f)
        assert torch.allclose(out[:, :, 2 * f:-2 * f], chroma[:, :, 2 * f:-2 * f], atol=1e-5), name


def test_cubic_upsample_matches_pytorch_bicubic_with_its_kernel():
    # PyTorch's bicubic (align_corners=False) is Keys' kernel with a = -0.75 on the same grid
    from spn.peers.chroma import cubic_upsample

    x = torch.rand(2, 6, 7, dtype=torch.float64)
    want = torch.nn.functional.interpolate(x[None], size=(24, 28), mode="bicubic", align_corners=False)[0]
    assert torch.allclose(cubic_upsample(x, 4, (24, 28), a=-0.75), want, atol=1e-12)


def _jbu_naive(luma, low, f, r, ss, sr):
    H, W = luma.shape[-2:]
    h, w = low.shape[-2:]
    ylow = area_downsample(luma[None], f)[0, 0]
    out = torch.zeros(low.shape[0], H, W, dtype=torch.float64)
    for y, x in itertools.product(range(H), range(W)):
        num, den = torch.zeros(low.shape[0], dtype=torch.float64), 0.0
        uy, ux = (y + 0.5) / f - 0.5, (x + 0.5) / f - 0.5
        for qy, qx in itertools.product(range(y // f - r, y // f + r + 1), range(x // f - r, x // f + r + 1)):
            if 0 <= qy < h and 0 <= qx < w:
                wgt = math.exp(-((uy - qy) ** 2 + (ux - qx) ** 2) / (2 * ss ** 2)) * \
                    math.exp(-(float(luma[0, y, x]) - float(ylow[qy, qx])) ** 2 / (2 * sr ** 2))
                num += wgt * low[:, qy, qx].double()
                den += wgt
        out[:, y, x] = num / den
    return out


def test_joint_bilateral_upsampling_against_a_per_pixel_loop():
    gen = torch.Generator().manual_seed(1)
    luma, low = torch.rand(1, 10, 13, generator=gen, dtype=torch.float64), torch.rand(2, 3, 4, generator=gen,
                                                                                       dtype=torch.float64)
    got = joint_bilateral_upsample(luma, low, 4, radius=1, sigma_spatial=0.7, sigma_range=0.2)
    assert torch.allclose(got, _jbu_naive(luma, low, 4, 1, 0.7, 0.2), atol=1e-10)


def test_jbu_follows_a_luma_edge_better_than_bilinear():
    H = W = 32
    luma = torch.zeros(1, H, W)
    luma[:, :, 13:] = 1.0  # an edge inside a block of 8
    chroma = torch.full((2, H, W), 0.3)
    chroma[:, :, 13:] = 0.7
    low = area_downsample(chroma[None], 8)[0]
    err = {n: float((get_chroma_peer(n).upsample(luma, low, 8) - chroma).abs().mean()) for n in ("bilinear", "jbu")}
    assert err["jbu"] < 0.5 * err["bilinear"]


def test_grey_guided_filter_against_a_window_loop():
    gen = torch.Generator().manual_seed(2)
    I, p = torch.rand(1, 9, 11, generator=gen, dtype=torch.float64), torch.rand(2, 9, 11, generator=gen,
                                                                                dtype=torch.float64)
    r, eps = 1, 1e-3
    H, W = I.shape[-2:]
    a = torch.zeros(2, H, W, dtype=torch.float64)
    b = torch.zeros(2, H, W, dtype=torch.float64)
    for y, x in itertools.product(range(H), range(W)):
        win = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
        Iw, pw = I[0][win], p[(slice(None),) + win]
        mi, mp = Iw.mean(), pw.mean((1, 2))
        a[:, y, x] = ((Iw * pw).mean((1, 2)) - mi * mp) / (Iw.var(unbiased=False) + eps)
        b[:, y, x] = mp - a[:, y, x] * mi
    q = torch.zeros_like(p)
    for y, x in itertools.product(range(H), range(W)):
        win = (slice(None), slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
        q[:, y, x] = a[win].mean((1, 2)) * I[0, y, x] + b[win].mean((1, 2))
    assert torch.allclose(guided_filter_gray(I, p, r, eps), q, atol=1e-10)


def test_every_chroma_peer_keeps_a_constant_chroma_and_checks_its_inputs():
    luma = torch.rand(1, 24, 30)
    low = torch.empty(2, 3, 4)
    low[0], low[1] = 0.3, 0.6
    for name in list_chroma_peers():
        out = get_chroma_peer(name).upsample(luma, low, 8)
        assert out.shape == (2, 24, 30)
        assert torch.allclose(out[0], torch.full((24, 30), 0.3), atol=1e-5), name
        assert torch.allclose(out[1], torch.full((24, 30), 0.6), atol=1e-5), name
    with pytest.raises(ValueError, match="valid chroma peers are"):
        get_chroma_peer("densecrf")
    with pytest.raises(TypeError, match="unknown parameters"):
        get_chroma_peer("jbu", sigma=1)
    with pytest.raises(ValueError, match="NaN"):
        get_chroma_peer("bilinear").upsample(luma, torch.full((2, 3, 4), float("nan")), 8)


# --- inference, training and the commands ---------------------------------------------------------

def _photos_with_colour_edges(root, n=5, size=64, seed=0):
    """Photos whose colour edges follow their luma edges: discs of random colours on a background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = np.ones((size, size, 3)) * rng.random(3)
        for _ in range(6):
            cy, cx, rad = rng.integers(0, size, 2).tolist() + [int(rng.integers(4, 14))]
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < rad ** 2] = rng.random(3)
        write_image(root / f"s{i}.png", torch.from_numpy(img.transpose(2, 0, 1)).float())
    return root


def test_chroma_upsampler_api():
    model = create_model("chroma_three_way", factor=4, guidance_width=4)
    up = ChromaUpsampler(model)
    img = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    rgb = up.reconstruct(img)
    assert rgb.shape == (3, 20, 28) and float(rgb.min()) >= 0 and float(rgb.max()) <= 1
    luma, low = up.split(img)
    assert torch.allclose(up.upsample(luma, low), predict_chroma(model, luma, low))
    with pytest.raises(ValueError, match="not a chroma model"):
        ChromaUpsampler(create_model("spn_three_way", num_classes=3, channels=4, guidance_width=4))
    with pytest.raises(ValueError, match="must lie in"):
        up.reconstruct(torch.full((3, 8, 8), 2.0))


def test_train_eval_compare_refine_chroma_commands(tmp_path, capsys):
    from spn.cli import main

    data = _photos_with_colour_edges(tmp_path / "photos", n=5, size=48)
    run = tmp_path / "run"
    assert main(["train", "--task", "chroma", "--data", f"photos:{data}", "--factor", "4", "--steps", "4",
                 "--batch-size", "2", "--patch-size", "32", "--guidance-width", "4", "--threads", "1",
                 "--out", str(run), "--no-progress", "-q"]) == 0
    info = json.loads((run / "checkpoint.json").read_text())
    assert info["model"] == "chroma_three_way" and info["model_config"]["factor"] == 4
    assert "PSNR RGB" in capsys.readouterr().out
    js = tmp_path / "eval.json"
    assert main(["eval", "--task", "chroma", "--checkpoint", str(run), "--data", f"photos:{data}",
                 "--json", str(js), "-q"]) == 0
    res = json.loads(js.read_text())
    assert res["factor"] == 4 and res["num_images"] == 1 and len(res["per_image"]) == 1
    out = tmp_path / "cmp"
    assert main(["compare", "--task", "chroma", "--checkpoint", f"spn={run}", "--peers", "bilinear,jbu",
                 "--data", f"photos:{data}", "--out", str(out), "--no-time-512", "-q"]) == 0
    cmp = json.loads((out / "compare.json").read_text())
    assert list(cmp["methods"]) == ["bilinear", "joint bilateral upsampling", "spn"]
    assert (out / "compare.md").is_file() and (out / "compare.png").is_file()
    # the same photo: the comparison's bilinear and model rows are spn eval's
    for row, key in (("bilinear", "bilinear"), ("spn", "model")):
        for metric in ("psnr_rgb", "ssim_rgb", "psnr_chroma"):
            assert cmp["methods"][row]["median"][metric] == pytest.approx(res[key]["median"][metric])
    img_out = tmp_path / "rebuilt.png"
    assert main(["refine", "--task", "chroma", "--checkpoint", str(run), "--image", str(data / "s0.png"),
                 "--out", str(img_out), "-q"]) == 0
    assert img_out.is_file()
    assert main(["eval", "--task", "chroma", "--checkpoint", str(run), "--data", f"photos:{data}",
                 "--coarse", "gt-downsample:8", "-q"]) == 1
    assert main(["train", "--task", "chroma", "--data", "synthetic", "--steps", "1", "--out",
                 str(tmp_path / "r2"), "-q"]) == 1
    assert "photos:PATH" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.learning
def test_chroma_spn_learns_to_beat_bilinear(tmp_path):
    from spn.tasks import train
    from spn.training import TrainConfig

    data = _photos_with_colour_edges(tmp_path / "photos", n=10, size=64, seed=1)
    cfg = TrainConfig(task="chroma", data=f"photos:{data}", task_options={"factor": 8}, model="chroma_three_way",
                      model_cfg={"guidance_width": 8, "guidance_scale": 2}, steps=150, batch_size=4,
                      patch_size=64, lr=3e-3, out=str(tmp_path / "run"), threads=1, progress=False)
    val = train(cfg)["val"]
    assert val["model"]["mean"]["psnr_rgb"] > val["bilinear"]["mean"]["psnr_rgb"] + 1.0


def test_cosine_schedule_closed_form():
    from spn.training.loop import scheduled_lr

    assert scheduled_lr(2e-3, 0, 100) == pytest.approx(2e-3)
    assert scheduled_lr(2e-3, 50, 100) == pytest.approx(1e-3)
    assert scheduled_lr(2e-3, 100, 100) == pytest.approx(0.0, abs=1e-12)


def test_chroma_demo_end_to_end_on_a_small_folder(tmp_path):
    from spn.experiments.chroma import ChromaDemoConfig
    from spn.tasks import get_task

    data = _photos_with_colour_edges(tmp_path / "photos", n=5, size=48)
    cfg = ChromaDemoConfig(out=str(tmp_path / "demo"), data=f"photos:{data}", factor=4, steps=3, batch_size=2,
                           patch_size=32, threads=1, progress=False, time_mp=False, figure_rows=1,
                           model_cfg={"guidance_width": 4})
    m = get_task("chroma").demo(cfg)
    assert set(m["evaluations"]) == {"chroma_one_way", "chroma_three_way"}
    assert list(m["compare"]["methods"])[-2:] == ["one-way SPN", "three-way SPN"]
    text = (tmp_path / "demo" / "report.md").read_text()
    assert "three-way SPN" in text and "joint bilateral upsampling" in text
    with pytest.raises(ValueError, match="--force"):
        get_task("chroma").demo(cfg)


def test_spn_demo_task_chroma_command(tmp_path, capsys):
    from spn.cli import main

    data = _photos_with_colour_edges(tmp_path / "photos", n=5, size=48)
    conf = tmp_path / "demo.json"
    conf.write_text(json.dumps({"data": f"photos:{data}", "factor": 4, "batch_size": 2, "patch_size": 32,
                                "model_cfg": {"guidance_width": 4}, "time_mp": False, "figure_rows": 1}))
    out = tmp_path / "demo"
    assert main(["demo", "--task", "chroma", "--config", str(conf), "--spn-steps", "2", "--quick", "--threads", "1",
                 "--out", str(out), "--no-progress", "-q"]) == 0
    saved = json.loads((out / "demo_config.json").read_text())
    assert saved["steps"] == 2 and saved["quick"] is True and saved["factor"] == 4
    assert "three-way SPN" in capsys.readouterr().out
    assert main(["demo", "--task", "chroma", "--baseline-steps", "3", "--out", str(out), "-q"]) == 1
    assert "does not use --baseline-steps" in capsys.readouterr().err
