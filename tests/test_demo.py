"""``run_demo`` on a test-sized configuration: the outputs hold the numbers the saved checkpoints
really score, the config round-trips, and the report shows the metrics file's numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from spn.data import build_dataset
from spn.evaluation import evaluate
from spn.experiments.demo import DemoConfig
from spn.models.checkpoint import load_checkpoint
from spn.tasks import get_task


def run_demo(cfg):
    """The segmentation task's demo (:func:`spn.experiments.demo.run_demo` with the task)."""
    return get_task("seg").demo(cfg)

TINY = dict(size=48, train_images=3, val_images=2, patch_size=32, batch_size=2, baseline_steps=2, spn_steps=2,
            baseline_cfg={"width": 4, "depth": 1}, spn_cfg={"channels": 4, "guidance_width": 4, "guidance_depth": 1},
            figure_rows=2, progress=False, threads=1, coarse="auto")


def _tiny(tmp_path, **kw):
    d = dict(TINY, out=str(tmp_path / "demo"))
    d.update(kw)
    return DemoConfig(**d)


def test_run_demo_writes_report_metrics_figure(tmp_path):
    cfg = _tiny(tmp_path, compare=True, compare_peers=["bilinear"], compare_limit=1, compare_time_512=False)
    m = run_demo(cfg)
    out = tmp_path / "demo"
    # the config round-trips through both files that hold it
    assert DemoConfig.load(out / "demo_config.json") == cfg
    assert DemoConfig.load(out / "metrics.json") == cfg
    data = json.loads((out / "metrics.json").read_text())
    assert data["num_val_images"] == 2 and data["mode"] == "full"
    rows = data["results"]
    assert "+1 way SPN" in rows and "+3 way SPN" in rows
    assert any(k.startswith("baseline CNN") for k in rows)
    # each run holds the model it names, trained for the steps asked, with the demo's model options
    steps = {"baseline": cfg.baseline_steps, "spn_one_way": cfg.spn_steps, "spn_three_way": cfg.spn_steps}
    models = {}
    for run, n in steps.items():
        models[run], info = load_checkpoint(out / "runs" / run)
        assert info["model"] == run and info["step"] == n
        stored = json.loads((out / "runs" / run / "config.json").read_text())["train_config"]
        want = cfg.baseline_cfg if run == "baseline" else cfg.spn_cfg
        assert {k: stored["model_cfg"][k] for k in want} == want and stored["steps"] == n
    # the numbers of metrics.json are what the saved checkpoints score on the val scenes, with the
    # coarse maps of the recorded source built afresh
    val = build_dataset("synthetic", split="val", coarse=data["coarse_source"], num_images=cfg.val_images,
                        size=cfg.size)
    for run, title in (("spn_one_way", "+1 way SPN"), ("spn_three_way", "+3 way SPN")):
        again = evaluate(models[run], val)["refined"]
        for key in ("pixel_accuracy", "mean_accuracy", "mean_iou"):
            assert rows[title][key] == pytest.approx(again[key], abs=1e-12), (title, key)
    # the coarse source follows the rule: baseline output unless its mIoU is out of range
    base = data["baseline_val_miou"]
    in_range = cfg.min_baseline_miou <= base <= cfg.max_baseline_miou
    assert data["coarse_source"].startswith("baseline:") == in_range
    assert (data["fallback"] is None) == in_range
    report = (out / "report.md").read_text()
    assert "| method | overall AC | mean AC | mean IoU | boundary IoU | mBA | s/image |" in report
    three = rows["+3 way SPN"]
    assert (f"| +3 way SPN | {100 * three['pixel_accuracy']:.2f} | {100 * three['mean_accuracy']:.2f} | "
            f"{100 * three['mean_iou']:.2f} |") in report
    assert "figure.png" in report
    assert ("Fallback" in report) == (not in_range)
    assert data["compare"] is not None and "Comparison with classical refiners" in report
    # the figure: 2 rows x 5 columns of 48 x 48 cells under a title and column titles
    with Image.open(out / "figure.png") as im:
        w, h = im.size
        arr = np.asarray(im.convert("RGB"))
    assert w >= 5 * 48 and 2 * 48 < h < 2 * 48 + 80
    assert arr.std() > 10  # not blank
    assert m["report"] == str(out / "report.md")
    # rerunning into the same folder needs force
    with pytest.raises(ValueError, match="--force"):
        run_demo(_tiny(tmp_path, compare=False))


def test_run_demo_forced_fallback_and_no_compare(tmp_path):
    # an impossible mIoU floor forces the fallback to simulated coarse maps
    cfg = _tiny(tmp_path, compare=False, min_baseline_miou=1.0, max_baseline_miou=1.0, figure_rows=0)
    data = run_demo(cfg)
    assert data["coarse_source"] == "gt-downsample:8"
    assert "too weak" in data["fallback"]
    assert "coarse input (gt-downsample:8)" in data["results"]
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "**Fallback:**" in report and "skipped" in report
    assert not (tmp_path / "demo" / "figure.png").exists()


def test_demo_config_validation_and_preset():
    q = DemoConfig.preset(quick=True)
    f = DemoConfig.preset()
    assert q.quick and not f.quick
    assert q.spn_steps < f.spn_steps and q.baseline_steps <= f.baseline_steps
    with pytest.raises(ValueError, match="spn_steps"):
        DemoConfig(spn_steps=0).validate()
    with pytest.raises(ValueError, match="coarse"):
        DemoConfig(coarse="nope").validate()
    with pytest.raises(ValueError, match="min_baseline_miou"):
        DemoConfig(min_baseline_miou=0.9, max_baseline_miou=0.1).validate()


def test_spn_demo_cli_errors(tmp_path, capsys):
    from spn.cli import main

    (tmp_path / "file").write_text("x")
    assert main(["demo", "--quick", "--out", str(tmp_path / "file"), "--no-compare"]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--coarse", "bogus"]) == 1
    assert "coarse" in capsys.readouterr().err


def test_default_demo_refines_the_baseline_output_with_fast_spns():
    cfg = DemoConfig.preset()
    assert cfg.coarse == "baseline" and cfg.family == "simple"
    assert cfg.spn_cfg["shared_gates"] and cfg.spn_cfg["guidance_coarse"]


def test_both_families_run_into_one_report(tmp_path):
    cfg = _tiny(tmp_path, family="both", coarse="baseline", compare=False)
    m = run_demo(cfg)
    out = tmp_path / "demo"
    for fam, data in (("simple", "synthetic"), ("hard", "synthetic:hard")):
        sub = json.loads((out / fam / "metrics.json").read_text())
        assert sub["config"]["family"] == fam
        assert f"--data {data}`" in (out / fam / "report.md").read_text()
        assert set(sub["results"]) == set(m["results"][fam])
    report = (out / "report.md").read_text()
    assert "## Family `simple`" in report and "## Family `hard`" in report
    assert json.loads((out / "metrics.json").read_text())["config"]["family"] == "both"
    with pytest.raises(ValueError, match="family"):
        DemoConfig(family="nope").validate()
