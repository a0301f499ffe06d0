"""The task registry (spn.tasks): names, errors listing the valid names, options that belong to
one task only, and the commands built from it."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from spn.cli import build_parser, main
from spn.tasks import COMMANDS, get_task, list_tasks, register_task, task_options
from spn.utils.config import ConfigBase, option


def test_the_registered_tasks_and_an_unknown_name():
    assert list_tasks()[0] == "seg" and "chroma" in list_tasks()
    assert get_task(None) is get_task("seg")
    with pytest.raises(ValueError) as exc:
        get_task("depth")
    assert str(exc.value) == f"unknown task 'depth'; valid tasks are {', '.join(list_tasks())}"
    for name in list_tasks():
        task = get_task(name)
        assert task.name == name and set(task.options) == set(COMMANDS)
        assert task_options("train")[name] is task.options["train"]


def test_a_task_that_only_trains(tmp_path, capsys):
    """A task with the loop's methods and train options only (BaseTask's defaults for the rest):
    registered, trained through the one loop, its other commands a clear error."""
    import torch

    from spn.tasks import _TASKS, BaseTask, NoOptions, train
    from spn.training import TrainConfig

    @dataclass
    class MeanOpts(ConfigBase):
        target: float = option(0.5, help="the value to learn")

    class MeanTask(BaseTask):  # learn a constant map: the smallest task there is
        name = "mean"
        help = "mean: a constant"
        options = {"train": MeanOpts}

        def build_datasets(self, cfg, device, run_dir, train_dataset=None, val_dataset=None, need_val=True):
            from spn.data import build_dataset
            return build_dataset("synthetic", split="train", num_images=2, size=32, coarse="none"), None, None

        def data_info(self, ds):
            return {"num_classes": 1}

        def patches(self, train_ds, cfg):
            from spn.data import PatchDataset
            return PatchDataset(train_ds, size=cfg.patch_size, patches_per_image=1, flip=False, seed=cfg.seed)

        def model_options(self, cfg, dinfo):
            return "baseline", {"num_classes": 1, "width": 4, "depth": 1}

        def loss(self, dmodel, batch, device, ctx, cfg):
            out = dmodel(batch["image"], None)
            target = self.train_options(cfg.task_options).target
            s = ((out - target) ** 2).sum()
            return s / out.numel(), s.detach().double(), torch.tensor(float(out.numel()), dtype=torch.float64)

        def evaluate(self, model, val_ds, limit=None):
            return {}

    class Half:
        name = "half"

    with pytest.raises(ValueError, match="lacks prepare, build_datasets"):
        register_task(Half())
    with pytest.raises(ValueError, match="registered twice"):
        register_task(get_task("chroma"))
    register_task(MeanTask())
    try:
        assert get_task("mean").options["eval"] is NoOptions
        cfg = TrainConfig(task="mean", task_options={"target": 0.25}, patch_size=16, batch_size=2, steps=2,
                          out=str(tmp_path / "run"), progress=False, val_split=None, threads=1)
        s = train(cfg)
        assert s["steps"] == 2 and all(v > 0 for v in s["losses"])
        saved = json.loads((tmp_path / "run" / "config.json").read_text())["train_config"]
        assert saved["task"] == "mean" and saved["task_options"] == {"target": 0.25}
        assert main(["eval", "--task", "mean", "--checkpoint", str(tmp_path / "run"), "--data", "synthetic",
                     "-q"]) == 1
        assert "--task mean has no `spn eval`" in capsys.readouterr().err
    finally:
        _TASKS.pop("mean", None)


def test_every_command_takes_task_from_the_registry():
    _, subparsers = build_parser()
    for command in ("train", "eval", "compare", "refine", "demo"):
        actions = {s: a for a in subparsers[command]._actions for s in a.option_strings}
        assert actions["--task"].choices == list_tasks(), command


def test_an_option_of_another_task_is_an_error(tmp_path, capsys):
    assert main(["train", "--factor", "4", "--steps", "1", "--out", str(tmp_path / "r"), "-q"]) == 1
    assert "--task seg does not use --factor" in capsys.readouterr().err
    assert main(["eval", "--task", "chroma", "--checkpoint", "x", "--data", "d", "--protocol", "voc", "-q"]) == 1
    assert "--task chroma does not use --protocol" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_train_stores_the_task_and_its_options(tmp_path):
    from spn.cli.train import add_arguments, config_from_args
    import argparse

    out = tmp_path / "run"
    argv = ["--data", "synthetic", "--data-option", "num_images=2", "--data-option", "size=32", "--model",
            "baseline", "--baseline-width", "4", "--baseline-depth", "1", "--patch-size", "16", "--batch-size",
            "2", "--steps", "1", "--no-progress", "--no-val", "--threads", "1", "--coarse", "gt-downsample:4",
            "--out", str(out)]
    assert main(["train", *argv, "-q"]) == 0
    saved = json.loads((out / "config.json").read_text())["train_config"]
    assert saved["task"] == "seg"
    assert saved["task_options"] == {"coarse": "gt-downsample:4", "coarse_kind": None}
    p = argparse.ArgumentParser()
    add_arguments(p)
    again = config_from_args(p.parse_args(["--config", str(out / "config.json"), "--coarse-kind", "probs"]))
    assert again.task_options == {"coarse": "gt-downsample:4", "coarse_kind": "probs"}
    # another task given over a stored run starts from that task's defaults
    chroma = config_from_args(p.parse_args(["--config", str(out / "config.json"), "--task", "chroma", "--model",
                                            "spn_one_way"]))
    assert chroma.task == "chroma" and chroma.task_options == {"factor": 8, "loss": "l1"}
    assert chroma.model == "chroma_one_way"  # the task names the model
    with pytest.raises(ValueError, match="--task chroma trains chroma_one_way, chroma_three_way"):
        config_from_args(p.parse_args(["--config", str(out / "config.json"), "--task", "chroma"]))


def test_a_failed_compare_leaves_no_empty_out_folder(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--data", "synthetic", "--split", "val", "--coarse", "none", "--limit", "1",
            "--peers", "bilinear", "--no-time-512", "--figure-rows", "0", "--out", str(out), "-q"]
    assert main(argv) == 1
    assert "has no 'coarse' map" in capsys.readouterr().err
    assert not out.exists()
    out.mkdir()  # a folder that was there before stays
    assert main(argv) == 1
    assert out.is_dir()
