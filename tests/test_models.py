"""spn.models: shapes, registry errors, one-way vs three-way, gradients, identity at init."""
import json

import pytest
import torch

from spn.models import (BaselineConfig, SPNConfig, SPNRefiner, create_model, list_models, make_config,
                        model_config_class)
from spn.models.blocks import UNet

K = 4
SMALL = dict(channels=8, guidance_width=8, guidance_depth=2)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models: one thread is as fast, and immune to oversubscribed cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _inputs(B=2, H=37, W=50, k=K, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(B, 3, H, W, generator=g)
    coarse = torch.softmax(3 * torch.randn(B, k, H, W, generator=g), dim=1)
    return image, coarse


def test_registry_lists_the_models():
    assert list_models() == ["baseline", "spn_one_way", "spn_three_way", "chroma_one_way", "chroma_three_way",
                             "mask_refiner"]
    assert model_config_class("baseline") is BaselineConfig
    assert model_config_class("spn_three_way") is SPNConfig


@pytest.mark.parametrize("name", ["baseline", "spn_one_way", "spn_three_way"])
@pytest.mark.parametrize("size", [(37, 50), (64, 64), (16, 24)])
def test_output_shape_any_size(name, size):
    torch.manual_seed(0)
    cfg = {"width": 8, "depth": 2} if name == "baseline" else SMALL
    model = create_model(name, num_classes=K, **cfg)
    image, coarse = _inputs(H=size[0], W=size[1])
    out = model(image, coarse)
    assert out.shape == (2, K, *size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert model.name == name
    assert model.needs_coarse == (name != "baseline")


@pytest.mark.parametrize("name", ["baseline", "spn_one_way", "spn_three_way"])
def test_config_is_json_and_rebuilds_the_same_model(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3)
    cfg = json.loads(json.dumps(model.config))
    assert cfg["num_classes"] == 3
    again = create_model(name, **cfg)
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="baseline, spn_one_way, spn_three_way"):
        create_model("spn_five_way", num_classes=3)


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="chanels"):
        create_model("spn_three_way", num_classes=3, chanels=16)
    with pytest.raises(TypeError, match="channels"):  # SPN option given to the baseline
        create_model("baseline", num_classes=3, channels=16)


def test_missing_num_classes_and_bad_values():
    with pytest.raises(TypeError, match="num_classes"):
        create_model("baseline")
    with pytest.raises(ValueError, match="channels"):
        create_model("spn_three_way", num_classes=3, channels=0)
    with pytest.raises(ValueError, match="merge"):
        create_model("spn_three_way", num_classes=3, merge="median")
    with pytest.raises(ValueError, match="normalize"):
        create_model("spn_one_way", num_classes=3, normalize="sometimes")
    with pytest.raises(ValueError, match="scale"):
        make_config("spn_one_way", num_classes=3, scale=4)
    with pytest.raises(TypeError, match="shared_gates"):
        create_model("spn_one_way", num_classes=3, shared_gates="yes")


def test_one_way_and_three_way_differ_only_in_k():
    torch.manual_seed(0)
    m1 = create_model("spn_one_way", num_classes=K, **SMALL)
    m3 = create_model("spn_three_way", num_classes=K, **SMALL)
    assert m1.config == m3.config
    s1, s3 = m1.state_dict(), m3.state_dict()
    assert list(s1) == list(s3)
    differ = [k for k in s1 if s1[k].shape != s3[k].shape]
    assert differ == ["guidance.unet.head.weight", "guidance.unet.head.bias"]
    C = SMALL["channels"]
    assert s1["guidance.unet.head.weight"].shape[0] == 4 * 1 * C
    assert s3["guidance.unet.head.weight"].shape[0] == 4 * 3 * C
    assert m1.propagation.k == 1 and m3.propagation.k == 3
    assert m1.propagation.merge == m3.propagation.merge == "max"
    assert m1.propagation.normalize == m3.propagation.normalize == "clip"


@pytest.mark.parametrize("shared,cg", [(False, 8), (True, 1)])
def test_gate_layout(shared, cg):
    torch.manual_seed(0)
    m = create_model("spn_three_way", num_classes=K, shared_gates=shared, **SMALL)
    image, coarse = _inputs(H=33, W=40)
    g = m.gates(image, coarse)
    assert g.shape == (2, 4 * 3 * cg, 17, 20)  # half resolution, ceil


def test_full_resolution_scale():
    torch.manual_seed(0)
    m = create_model("spn_one_way", num_classes=K, scale=1, **SMALL)
    image, coarse = _inputs(H=20, W=28)
    assert m.gates(image, coarse).shape[-2:] == (20, 28)
    assert m(image, coarse).shape == (2, K, 20, 28)


@pytest.mark.parametrize("name", ["spn_one_way", "spn_three_way"])
def test_untrained_spn_is_close_to_identity_on_coarse(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=K, **SMALL).eval()
    image, coarse = _inputs()
    with torch.no_grad():
        probs = torch.softmax(model(image, coarse), dim=1)
        gates = model.gates(image, coarse)
    assert gates.abs().max() < 0.05  # near-zero gates: propagation starts near the identity
    assert (probs - coarse).abs().max() < 2e-3
    assert torch.equal(probs.argmax(1), coarse.argmax(1))


def test_gradients_reach_the_guidance_network():
    torch.manual_seed(0)
    model = create_model("spn_three_way", num_classes=K, **SMALL)
    image, coarse = _inputs(H=32, W=32)
    target = torch.randint(0, K, (2, 32, 32))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # the last head layer starts at zero (identity at init), so one step makes it nonzero first
    for _ in range(2):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(image, coarse), target)
        loss.backward()
        opt.step()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(image, coarse), target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
    head = model.guidance.unet.head.weight.grad
    stem = model.guidance.unet.stem.body[0].weight.grad
    assert head.abs().sum() > 0 and stem.abs().sum() > 0


def test_propagations_twice_changes_output_once_gates_are_not_zero():
    torch.manual_seed(0)
    m1 = create_model("spn_three_way", num_classes=K, propagations=1, **SMALL)
    m2 = create_model("spn_three_way", num_classes=K, propagations=2, **SMALL)
    m2.load_state_dict(m1.state_dict())
    with torch.no_grad():
        for m in (m1, m2):
            torch.nn.init.normal_(m.guidance.unet.head.weight, std=0.2)
            torch.nn.init.normal_(m.head[-1].weight, std=0.2)
        m2.load_state_dict(m1.state_dict())
        image, coarse = _inputs(H=24, W=24)
        a, b = m1(image, coarse), m2(image, coarse)
    assert a.shape == b.shape
    assert not torch.allclose(a, b)


def test_spn_needs_a_matching_coarse_map():
    m = create_model("spn_three_way", num_classes=K, **SMALL)
    image, coarse = _inputs()
    with pytest.raises(ValueError, match="coarse"):
        m(image, None)
    with pytest.raises(ValueError, match=r"\(2, 4, 37, 50\)"):
        m(image, coarse[:, :3])
    with pytest.raises(ValueError, match="image"):
        m(image[:, :2], coarse)
    with pytest.raises(TypeError):
        m(image.numpy(), coarse)


def test_guidance_coarse_flag_feeds_the_coarse_map():
    torch.manual_seed(0)
    m = create_model("spn_three_way", num_classes=K, guidance_coarse=True, **SMALL)
    assert m.guidance.unet.stem.body[0].in_channels == 3 + K
    image, coarse = _inputs(H=16, W=16)
    assert m(image, coarse).shape == (2, K, 16, 16)


def test_baseline_ignores_coarse_and_works_at_one_eighth():
    torch.manual_seed(0)
    m = create_model("baseline", num_classes=K, width=8, depth=2).eval()
    image, coarse = _inputs(H=40, W=64)
    with torch.no_grad():
        a = m(image, coarse)
        b = m(image, None)
        low = m.forward_low(image)
    assert torch.equal(a, b)
    assert low.shape == (2, K, 5, 8)


def test_models_are_deterministic_given_the_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        m = create_model("spn_three_way", num_classes=K, **SMALL)
        image, coarse = _inputs(H=20, W=20)
        outs.append(m.gates(image, coarse))
    assert torch.equal(outs[0], outs[1])


def test_unet_output_level_and_padding():
    u = UNet(3, 5, width=4, depth=3, out_level=1)
    y = u(torch.rand(1, 3, 30, 45))
    assert y.shape == (1, 5, 15, 23)
    u2 = UNet(3, 5, width=4, depth=2, stem_stride=2)
    assert u2(torch.rand(1, 3, 30, 45)).shape == (1, 5, 15, 23)
    with pytest.raises(ValueError, match="out_level"):
        UNet(3, 5, depth=2, out_level=3)


def test_spn_refiner_rejects_unknown_connection():
    with pytest.raises(ValueError, match="connection"):
        SPNRefiner(SPNConfig(num_classes=3), connection="two_way")


def test_register_model_decorator_builds_through_create_model():
    from dataclasses import dataclass

    from spn.models import register_model
    from spn.models import registry

    @dataclass
    class TinyConfig:
        num_classes: int
        scale: float = 2.0

    class Tiny(torch.nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.cfg, self.config = cfg, {"num_classes": cfg.num_classes, "scale": cfg.scale}

        def forward(self, image, coarse=None):
            return self.cfg.scale * image[:, :1].expand(-1, self.cfg.num_classes, -1, -1)

    try:
        assert register_model("tiny_test", TinyConfig, "a test model")(Tiny) is Tiny
        assert list_models()[-1] == "tiny_test"
        m = create_model("tiny_test", num_classes=2, scale=3.0)
        assert m.name == "tiny_test" and m(torch.ones(1, 3, 4, 4)).sum().item() == 3.0 * 2 * 16
        with pytest.raises(ValueError, match="already registered"):
            register_model("tiny_test", TinyConfig)(Tiny)
        with pytest.raises(TypeError, match="unknown option.*width.*valid options are num_classes, scale"):
            create_model("tiny_test", num_classes=2, width=3)
        with pytest.raises(TypeError, match="dataclass"):
            register_model("not_a_config", dict)
    finally:
        registry._REGISTRY.pop("tiny_test", None)
    assert "tiny_test" not in list_models()


def test_named_spn_presets():
    from spn.models import SPN_PRESETS, spn_preset

    assert SPNConfig.from_name("paper", num_classes=5) == SPNConfig(num_classes=5)
    fast = SPNConfig.from_name("fast", num_classes=5)
    # the demo's settings: Cg = 1, a narrow guidance network that sees the coarse scores
    assert (fast.channels, fast.guidance_width, fast.guidance_depth) == (16, 8, 3)
    assert fast.shared_gates and fast.guidance_coarse
    assert fast.normalize == "clip" and fast.merge == "max" and fast.scale == 2  # the rest: defaults
    assert SPNConfig.from_name("fast", num_classes=5, channels=8).channels == 8
    m = create_model("spn_three_way", num_classes=5, **spn_preset("fast"))
    assert m.propagation is not None and m.guidance.cg == 1
    with pytest.raises(ValueError, match="unknown SPN preset 'huge'; valid presets are paper, fast"):
        SPNConfig.from_name("huge", num_classes=5)
    spn_preset("fast")["channels"] = 99  # a copy: the preset itself does not change
    assert SPN_PRESETS["fast"]["channels"] == 16
