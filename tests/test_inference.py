"""spn.inference: padding to a model's size multiple, real models at any size, input errors."""
from __future__ import annotations

import pytest
import torch

from fakes import LogCoarse, NeedsMultiple
from spn import inference as inf


def test_predict_pads_to_model_multiple_and_crops():
    m = NeedsMultiple(K=3)
    img = torch.rand(3, 21, 35)
    probs = inf.predict(m, img)
    assert probs.shape == (3, 21, 35)
    assert m.seen == [(32, 48)]
    assert torch.allclose(probs.sum(0), torch.ones(21, 35))
    # the crop keeps the top-left corner: the ramp of column j is j * k
    logits = inf.predict_logits(m, img)
    assert torch.equal(logits[2, 0], 2 * torch.arange(35, dtype=torch.float32))
    batch = inf.predict_logits(m, torch.rand(2, 3, 21, 35))
    assert batch.shape == (2, 3, 21, 35)


@pytest.mark.parametrize("name", ["baseline", "spn_one_way", "spn_three_way"])
def test_predict_real_models_any_size(name):
    from spn.models import create_model

    torch.manual_seed(0)
    kw = {"num_classes": 3, "width": 4, "depth": 2} if name == "baseline" else \
        {"num_classes": 3, "channels": 4, "guidance_width": 4, "guidance_depth": 2}
    model = create_model(name, **kw)
    model.train()
    img = torch.rand(3, 27, 33)
    coarse = None if name == "baseline" else torch.softmax(torch.randn(3, 27, 33), 0)
    probs = inf.predict(model, img, coarse)
    assert probs.shape == (3, 27, 33)
    assert model.training  # restored
    assert torch.allclose(probs.sum(0), torch.ones(27, 33), atol=1e-5)
    if name != "baseline":
        # untrained SPN ~ identity: argmax equals the coarse argmax almost everywhere
        assert (probs.argmax(0) == coarse.argmax(0)).float().mean() > 0.95
        with pytest.raises(ValueError, match="coarse"):
            inf.predict(model, img, None)


def test_predict_errors():
    with pytest.raises(ValueError, match="does not match image"):
        inf.predict(LogCoarse(), torch.rand(3, 5, 5), torch.rand(3, 4, 5))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        inf.predict(LogCoarse(), torch.rand(4, 5, 5), None)
