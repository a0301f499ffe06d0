"""The console script's options are generated from the config dataclasses: every field is an
option with its help and default, the parsed defaults are the dataclass defaults, ``--config``
round-trips a saved config, and -q / -v set how much goes to stderr."""
from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch

from spn.cli import build_parser, main
from spn.cli.options import add_config_options, build_config, given_options
from spn.cli.refine import RefineConfig
from spn.evaluation import EvalConfig
from spn.experiments.compare import CompareConfig
from spn.experiments.demo import DemoConfig
from spn.models import BaselineConfig, ChromaSPNConfig, SPNConfig
from spn.training import TrainConfig
from spn.utils.config import option_fields

from spn.tasks import list_tasks, task_options  # noqa: E402

#: each command's config dataclasses; the tasks' options dataclasses of the command come on top
COMMAND_CONFIGS = {
    "train": (TrainConfig, SPNConfig, BaselineConfig, ChromaSPNConfig),
    "eval": (EvalConfig,),
    "refine": (RefineConfig,),
    "compare": (CompareConfig,),
    "demo": (),
}
COMMAND_CONFIGS = {c: classes + tuple(task_options(c).values()) for c, classes in COMMAND_CONFIGS.items()}


def _flags(spec, name, default):
    flags = list(spec.flags or ("--" + name.replace("_", "-"),))
    if default is True:  # a bool that is on by default has only its negative spelling
        flags = []
    return flags + ([spec.negative] if spec.negative else [])


@pytest.mark.parametrize("command", list(COMMAND_CONFIGS))
def test_every_config_field_is_an_option_with_its_help(command):
    _, subparsers = build_parser()
    p = subparsers[command]
    actions = {s: a for a in p._actions for s in a.option_strings}
    for cls in COMMAND_CONFIGS[command]:
        for f, spec in option_fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            for flag in _flags(spec, f.name, default):
                assert flag in actions, f"{command}: {cls.__name__}.{f.name} has no option {flag}"
            main_flag = _flags(spec, f.name, default)[0]
            want = spec.negative_help if main_flag == spec.negative else spec.help
            assert want in actions[main_flag].help
    # and nothing but the fields and the generic options
    fields = {flag for cls in COMMAND_CONFIGS[command] for f, spec in option_fields(cls)
              for flag in _flags(spec, f.name, f.default)}
    extra = set(actions) - fields - {"-h", "--help", "--config", "-q", "--quiet", "-v", "--verbose", "--debug"}
    assert extra <= {"--json", "--task"}, extra
    assert actions["--task"].choices == list_tasks()


@pytest.mark.parametrize("cls, required", [
    (TrainConfig, []), (EvalConfig, ["--checkpoint", "c", "--data", "d"]),
    (RefineConfig, ["--image", "i", "--out", "o"]),
    (CompareConfig, ["--data", "d", "--out", "o"]), (DemoConfig, []),
])
def test_parsed_defaults_are_the_dataclass_defaults(cls, required):
    p = argparse.ArgumentParser()
    add_config_options(p, cls)
    cfg = build_config(cls, p.parse_args(required))
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            assert getattr(cfg, f.name) == f.default, f.name
        elif f.default_factory is not dataclasses.MISSING:
            assert getattr(cfg, f.name) == f.default_factory(), f.name


def test_types_flags_and_merging():
    p = argparse.ArgumentParser()
    add_config_options(p, TrainConfig)
    args = p.parse_args(["--steps", "7", "--lr", "0.5", "--no-flip", "--no-val", "--cache", "--no-progress",
                         "--data-option", "size=64", "--data-option", "name=x", "--model-option", "residual=false"])
    assert given_options(args, TrainConfig) == {
        "steps": 7, "lr": 0.5, "flip": False, "val_split": None, "cache": True, "progress": False,
        "data_options": {"size": 64, "name": "x"}, "model_cfg": {"residual": False}}
    # dict options are merged into a base config key by key
    base = TrainConfig(data_options={"size": 32, "num_images": 4})
    cfg = build_config(TrainConfig, args, base=base)
    assert cfg.data_options == {"size": 64, "num_images": 4, "name": "x"}
    for bad in (["--steps", "0"], ["--steps", "x"], ["--optimizer", "lbfgs"], ["--data-option", "novalue"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


def test_missing_required_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--data", "synthetic"])
    assert exc.value.code == 2
    assert "the following arguments are required: --checkpoint" in capsys.readouterr().err


def test_train_config_round_trips_through_config_json(tmp_path):
    """A run's config.json read with --config gives back the resolved config of that run."""
    from spn.cli.train import add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    out = tmp_path / "run"
    argv = ["--data", "synthetic", "--data-option", "num_images=2", "--data-option", "size=32",
            "--model", "spn_one_way", "--guidance-width", "4", "--guidance-depth", "1", "--channels", "4",
            "--patch-size", "16", "--batch-size", "2", "--steps", "1", "--no-progress", "--no-val",
            "--threads", "1", "--out", str(out)]
    assert main(["train", *argv]) == 0
    saved = json.loads((out / "config.json").read_text())["train_config"]
    again = config_from_args(p.parse_args(["--config", str(out / "config.json")]))
    assert again.to_dict() == saved
    assert again.model_cfg["guidance_width"] == 4 and again.model_cfg["num_classes"] == 6
    # options given with --config override it; the model options stay those of the file
    over = config_from_args(p.parse_args(["--config", str(out / "config.json"), "--steps", "3", "--channels", "8"]))
    assert over.steps == 3 and over.model_cfg["channels"] == 8 and over.model_cfg["guidance_width"] == 4


@pytest.mark.parametrize("model, argv, want", [
    ("spn_three_way", ["--guidance-width", "4", "--guidance-depth", "2"], {"guidance_width": 4, "guidance_depth": 2}),
    ("spn_one_way", ["--guidance-width", "5", "--shared-gates"], {"guidance_width": 5, "shared_gates": True}),
    ("baseline", ["--baseline-width", "6", "--baseline-depth", "1"], {"width": 6, "depth": 1}),
])
def test_model_width_options_say_what_they_mean(model, argv, want):
    from spn.cli.train import add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--model", model, *argv]))
    assert cfg.model_cfg == want


def _baseline_run(tmp_path):
    from spn.models import create_model
    from spn.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    run = tmp_path / "base"
    save_checkpoint(run, create_model("baseline", num_classes=3, width=4, depth=1), cfg={}, step=0)
    img = tmp_path / "im.png"
    from spn.data import write_image, write_mask

    write_image(img, torch.rand(3, 64, 64))
    write_mask(tmp_path / "co.png", torch.zeros(64, 64, dtype=torch.long))
    return run, img, tmp_path / "co.png"


@pytest.mark.parametrize("flags, shown", [([], True), (["-q"], False), (["-v"], True)])
def test_quiet_and_verbose_set_the_messages(tmp_path, capsys, flags, shown):
    run, img, co = _baseline_run(tmp_path)
    argv = ["refine", "--checkpoint", str(run), "--image", str(img), "--coarse", str(co), "--out",
            str(tmp_path / "o.png"), *flags]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert ("[spn refine] note: baseline segments from the image alone" in err) == shown
    # errors are shown even with -qq
    assert main(["refine", "--checkpoint", str(tmp_path / "nope"), "--image", str(img), "--out", "x.png", "-qq"]) == 1
    assert "spn refine: error:" in capsys.readouterr().err
