"""The dense CRF search of `spn compare`: it covers weak settings and "off",
so the tuned CRF never scores below its own input on the tuning split; stages search around the
best of the previous stage; `spn compare` tunes by default; absent classes leave the per-class
columns."""
from __future__ import annotations

import json

import pytest
import torch

from spn.data import build_dataset
from spn.metrics import get_protocol

pytest.importorskip("pydensecrf.densecrf")

from spn.peers.densecrf import DEFAULT_CRF_GRID, DenseCRF, DenseCRFParams, grid_search  # noqa: E402


def _input_miou(ds, n):
    proto = get_protocol("plain", num_classes=ds.num_classes)
    for i in range(n):
        proto.accumulate(ds[i]["coarse"].argmax(0), ds[i]["mask"])
    return proto.compute()["mean_iou"]


def test_the_default_search_includes_off_and_weak_settings():
    stage1 = DEFAULT_CRF_GRID[0]
    assert 0.0 in stage1["bil_compat"] and 0.0 in stage1["gauss_compat"]
    assert min(v for v in stage1["bil_compat"] if v > 0) <= 1.0
    assert min(stage1["iterations"]) < 5 and max(stage1["unary_scale"]) > 1


def test_compat_zero_returns_the_input():
    g = torch.Generator().manual_seed(0)
    coarse = torch.softmax(3 * torch.randn(3, 12, 16, generator=g), 0)
    out = DenseCRF(bil_compat=0.0, gauss_compat=0.0, iterations=2).refine(torch.rand(3, 12, 16, generator=g), coarse)
    assert torch.equal(out.argmax(0), coarse.argmax(0))


def test_a_strong_crf_that_hurts_is_not_chosen():
    # thin bars and rings at 1/8: DeepLab's strong CRF (compat 10) wipes out the thin parts
    ds = build_dataset("synthetic", split="train", num_images=2, size=64, coarse="gt-downsample:8")
    grid = [{"bil_compat": [10.0, 0.0], "gauss_compat": [3.0, 0.0], "iterations": [5]}]
    res = grid_search(ds, grid, limit=2)
    assert res["input_mean_iou"] == pytest.approx(_input_miou(ds, 2))
    assert res["best_mean_iou"] >= res["input_mean_iou"] - 1e-12
    strong = [r for r in res["results"] if r["params"]["bil_compat"] == 10 and r["params"]["gauss_compat"] == 3]
    assert len(strong) == 1 and len(res["results"]) == 4


def test_stages_search_around_the_best_of_the_previous_stage():
    ds = build_dataset("synthetic", split="train", num_images=1, size=48, coarse="gt-downsample:8")
    res = grid_search(ds, [{"bil_compat": [0.0, 3.0]}, {"bil_srgb": [5.0, 30.0]}], limit=1)
    assert len(res["results"]) == 4
    first = max(res["results"][:2], key=lambda r: r["mean_iou"])  # ties keep the first
    if res["results"][0]["mean_iou"] >= res["results"][1]["mean_iou"]:
        first = res["results"][0]
    for r in res["results"][2:]:
        assert r["params"]["bil_compat"] == first["params"]["bil_compat"]
    assert res["best_mean_iou"] == max(r["mean_iou"] for r in res["results"])


def test_unary_scale_is_checked():
    with pytest.raises(ValueError, match="unary_scale"):
        DenseCRFParams(unary_scale=0)


def test_spn_compare_tunes_the_crf_by_default_and_drops_absent_classes(tmp_path, monkeypatch, capsys):
    import spn.experiments.compare as cmp
    from spn.cli import main

    small = [{"bil_compat": [0.0, 3.0], "iterations": [2]}]
    real = cmp.grid_search
    monkeypatch.setattr(cmp, "grid_search", lambda *a, **k: real(*a, **{**k, "param_grid": small}))
    out = tmp_path / "cmp"
    rc = main(["compare", "--data", "synthetic", "--coarse", "gt-downsample:8", "--peers", "bilinear,densecrf",
               "--limit", "1", "--crf-grid-limit", "1", "--no-time-512", "--figure-rows", "0",
               "--out", str(out)])
    assert rc == 0
    grid = json.loads((out / "crf_grid.json").read_text())
    assert len(grid["results"]) == 2 and grid["best_mean_iou"] >= grid["input_mean_iou"]
    report = (out / "compare.md").read_text()
    assert "tuned on 1 training image(s)" in report and "boundary IoU" in report
    header = next(line for line in report.splitlines() if line.startswith("| method"))
    ds = build_dataset("synthetic", split="val", coarse="gt-downsample:8")
    present = set(torch.unique(ds[0]["mask"]).tolist()) - {255}
    for c, name in enumerate(ds.class_names):
        assert (f"{name} (IoU)" in header) == (c in present)
    assert (out / "trimap.png").exists()
    # --no-crf-grid: the fixed parameters, no search
    out2 = tmp_path / "cmp2"
    assert main(["compare", "--data", "synthetic", "--coarse", "gt-downsample:8", "--peers", "densecrf",
                 "--limit", "1", "--no-crf-grid", "--no-time-512", "--figure-rows", "0", "--out", str(out2)]) == 0
    assert not (out2 / "crf_grid.json").exists()
