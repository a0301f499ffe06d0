"""The seg demo's shipped weights (``spn/weights/demo_hard``) and the demo's path that uses them.

- the shipped models load and do what their model card says on scenes of the test split, which
  neither their training nor the demo's validation saw: the three-way SPN refining the shipped
  baseline's output beats that baseline (an independent model) by a wide margin;
- a demo that trains writes the files (float16 safetensors + the dense CRF's tuned parameters),
  and a demo with the same training settings then uses them instead of training: its numbers are
  those of the trained checkpoints rounded to float16, scored afresh; another setting, or
  ``train=True``, trains again and says why.
"""
from __future__ import annotations

import json

import pytest

import spn.experiments.demo_weights as dw
from spn.data import BaselineCoarse, build_dataset
from spn.evaluation import evaluate
from spn.experiments.demo import DemoConfig
from spn.models.checkpoint import load_checkpoint
from spn.peers import densecrf_available
from spn.tasks import get_task

TINY = dict(size=48, train_images=3, val_images=2, patch_size=32, batch_size=2, baseline_steps=3, spn_steps=3,
            baseline_cfg={"width": 4, "depth": 1}, spn_cfg={"channels": 4, "guidance_width": 4, "guidance_depth": 1},
            figure_rows=0, progress=False, threads=1, family="hard", coarse="baseline", compare_time_512=False,
            compare_peers=["bilinear"] + (["densecrf"] if densecrf_available() else []))


def _demo(tmp_path, name, **kw):
    cfg = DemoConfig(**dict(TINY, out=str(tmp_path / name), **kw))
    return get_task("seg").demo(cfg), cfg


def test_shipped_hard_weights_load_and_beat_their_baseline_on_unseen_scenes():
    weights = dw.load_demo_weights(dw.shipped_dir("hard"))
    stored = weights["baseline"]["meta"]["demo_training"]
    # the shipped files are what the default demo's settings train
    assert stored == dw.training_settings(DemoConfig.preset(family="hard"))
    assert weights["crf"] is not None and set(weights["crf"]["best"]) >= {"bil_sxy", "bil_srgb", "iterations"}
    # eight scenes of the test split (disjoint from the training and validation streams)
    test = build_dataset("synthetic:hard", split="test", coarse="none", num_images=8, size=stored["size"])
    base = evaluate(weights["baseline"]["model"], test)["refined"]
    coarse = BaselineCoarse(test, weights["baseline"]["model"])
    # the SPNs refine exactly the baseline's output (the coarse row is the baseline's score)
    three = evaluate(weights["spn_three_way"]["model"], coarse)
    assert three["coarse"]["mean_iou"] == pytest.approx(base["mean_iou"], abs=1e-9)
    # the model card: +15.6 (one-way) and +10.7 (three-way) mIoU points over the baseline on the
    # validation split; here both must be ahead by over 5 points in mIoU and in boundary IoU
    for name, ev in (("spn_one_way", evaluate(weights["spn_one_way"]["model"], coarse)), ("spn_three_way", three)):
        for key in ("mean_iou", "boundary_iou"):
            assert ev["refined"][key] > base[key] + 0.05, (name, key, base[key], ev["refined"][key])


def test_demo_exports_then_uses_the_weights_when_the_settings_match(tmp_path, monkeypatch):
    trained, cfg = _demo(tmp_path, "train")
    assert trained["weights"]["source"] == "trained"
    folder = tmp_path / "train" / "weights"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{n}.safetensors" for n in dw.MODEL_NAMES] + ([dw.CRF_FILE] if densecrf_available() else []))
    monkeypatch.setattr(dw, "shipped_dir", lambda family: folder)

    m, _ = _demo(tmp_path, "shipped")
    assert m["weights"]["source"] == "shipped" and m["weights"]["exported"] is None
    report = (tmp_path / "shipped" / "report.md").read_text()
    assert "**Models: shipped weights**" in report and "Every row comes from the shipped weights." in report
    assert not (tmp_path / "shipped" / "weights").exists()
    # independent of the export -> load -> checkpoint path: the trained float32 checkpoints,
    # rounded to float16 here, scored afresh on the validation scenes
    runs = tmp_path / "train" / "runs"
    base = dw.as_float16(load_checkpoint(runs / "baseline")[0])
    val = build_dataset("synthetic:hard", split="val", coarse="none", num_images=cfg.val_images, size=cfg.size)
    assert m["baseline_val_miou"] == pytest.approx(evaluate(base, val)["refined"]["mean_iou"], abs=1e-12)
    coarse = BaselineCoarse(val, base)
    for run, title in (("spn_one_way", "+1 way SPN"), ("spn_three_way", "+3 way SPN")):
        again = evaluate(dw.as_float16(load_checkpoint(runs / run)[0]), coarse)["refined"]
        assert m["results"][title]["mean_iou"] == pytest.approx(again["mean_iou"], abs=1e-12), title
    # the shipped runs are checkpoints like trained ones, marked as shipped
    _, info = load_checkpoint(tmp_path / "shipped" / "runs" / "spn_three_way")
    assert info["source"].startswith("shipped: ") and info["step"] == cfg.spn_steps
    if densecrf_available():  # the tuned CRF parameters are reused, not searched again
        grid = json.loads((tmp_path / "train" / "compare" / "crf_grid.json").read_text())
        assert {k: m["compare"]["crf_params"][k] for k in grid["best"]} == grid["best"]
        assert m["weights"]["crf"] == "shipped" and not (tmp_path / "shipped" / "compare" / "crf_grid.json").exists()
        assert "| tuned parameters shipped |" in report

    # another training setting, or train=True: trained again, and the reason is given
    other, _ = _demo(tmp_path, "other", spn_steps=4)
    assert other["weights"]["source"] == "trained" and "spn_steps 4 (shipped: 3)" in other["weights"]["why"]
    forced, _ = _demo(tmp_path, "forced", train=True, compare=False)
    assert forced["weights"]["source"] == "trained" and "--train" in forced["weights"]["why"]


def test_damaged_or_mixed_weight_files_are_one_clear_error(tmp_path):
    _demo(tmp_path, "a", compare=False)
    _demo(tmp_path, "b", compare=False, seed=1)
    folder = tmp_path / "a" / "weights"
    assert set(dw.load_demo_weights(folder)) == set(dw.MODEL_NAMES) | {"crf"}
    # files of two trainings mixed
    (folder / "spn_one_way.safetensors").write_bytes((tmp_path / "b" / "weights" / "spn_one_way.safetensors").read_bytes())
    with pytest.raises(ValueError, match="another training"):
        dw.load_demo_weights(folder)
    # a truncated file
    (folder / "baseline.safetensors").write_bytes(b"\x08\x00\x00")
    with pytest.raises(ValueError, match="cannot read the demo weights .*baseline.safetensors"):
        dw.load_demo_weights(folder)
    (folder / "baseline.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="baseline.safetensors"):
        dw.load_demo_weights(folder)


def test_spn_demo_cli_evaluates_the_shipped_hard_models(tmp_path, capsys):
    from spn.cli import main

    # the default settings (so the shipped models fit), on 3 validation scenes to keep it short
    cfg = tmp_path / "demo.json"
    cfg.write_text(json.dumps({"family": "hard", "val_images": 3, "figure_rows": 1, "compare_limit": 2,
                               "compare_peers": ["bilinear"] + (["densecrf"] if densecrf_available() else [])}))
    out = tmp_path / "seg"
    assert main(["demo", "--task", "seg", "--family", "hard", "--config", str(cfg), "--out", str(out),
                 "--threads", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "**Models: shipped weights**" in printed and "| shipped |" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["weights"]["source"] == "shipped" and m["num_val_images"] == 3
    # the shipped SPNs beat the shipped baseline they refine (two different models)
    assert m["results"]["+1 way SPN"]["mean_iou"] > m["baseline_val_miou"]
    assert m["results"]["+3 way SPN"]["mean_iou"] > m["baseline_val_miou"]
    # the runs are checkpoints `spn eval` takes
    assert main(["eval", "--checkpoint", str(out / "runs" / "spn_three_way"), "--data", "synthetic:hard",
                 "--split", "val", "--limit", "1", "--no-progress", "--coarse",
                 f"baseline:{out / 'runs' / 'baseline'}"]) == 0
