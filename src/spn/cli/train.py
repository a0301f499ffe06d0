"""``spn train``: train the baseline CNN or an SPN refiner (single process or under torchrun).

The options are generated from :class:`spn.training.TrainConfig` (shared by every task), the
tasks' train options dataclasses (``--task``, :mod:`spn.tasks`) and, for the model, from the
command-line fields of :class:`spn.models.SPNConfig`, :class:`spn.models.BaselineConfig` and
:class:`spn.models.ChromaSPNConfig`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from spn.models import BaselineConfig, ChromaSPNConfig, SPNConfig
from spn.tasks import get_task, train
from spn.training import TrainConfig

from .options import add_config_options, add_task_arguments, given_options, task_from_args

HELP = "train the baseline CNN or an SPN refiner (one-way / three-way) on a dataset"

EPILOG = """\
examples:
  spn train --data synthetic --model spn_three_way --steps 500 --out runs/spn3
  spn train --data folder:DATA --model baseline --out runs/base
  spn train --data folder:DATA --coarse baseline:runs/base --out runs/spn3
  spn train --resume --out runs/spn3 --steps 1000
      (continue a stopped run: its config.json is reloaded, give only what changes)
  torchrun --nproc_per_node 2 -m spn train --data synthetic --batch-size 4 --out runs/ddp
  spn train --task chroma --data photos:skimage --factor 8 --out runs/chroma3
      (guided chroma upsampling of photos: --model chroma_three_way | chroma_one_way)

coarse maps: an SPN refines coarse segmentations. Datasets without coarse maps need
--coarse gt-downsample:8 (simulated from the ground truth) or --coarse baseline:RUN_DIR
(the softmax of a baseline trained first with --model baseline); spn train stops with
that advice otherwise. Command-line flags override the values of --config FILE.json.
"""

MODEL = "model."  # prefix of the model options' destinations
_MODEL_CONFIGS = (SPNConfig, BaselineConfig, ChromaSPNConfig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    groups: dict = {}
    add_config_options(p, TrainConfig, groups=groups)
    add_task_arguments(p, "train", groups=groups)
    for cls in _MODEL_CONFIGS:
        add_config_options(p, cls, prefix=MODEL, config_file=False, groups=groups)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def config_from_args(args) -> TrainConfig:
    """The :class:`~spn.training.TrainConfig` of the parsed arguments: the ``--config`` file (or,
    with ``--resume``, the run's own ``config.json``; else the defaults) with the options given on top."""
    given = given_options(args, TrainConfig)
    if getattr(args, "config", None):
        cfg = TrainConfig.load(args.config)
    elif given.get("resume"):
        # resuming: start from the run's own config.json, so only what changes needs repeating
        out = given.get("out") or f"runs/{given.get('model') or TrainConfig.model}"
        stored = Path(out) / "config.json"
        cfg = TrainConfig.load(stored) if stored.is_file() else TrainConfig()
    else:
        cfg = TrainConfig()
    changes = {k: v for k, v in given.items() if k not in ("data_options", "model_cfg")}
    if changes.get("steps") is not None:
        changes.setdefault("epochs", None)
    if changes.get("epochs") is not None and "steps" not in changes:
        changes["steps"] = None
    if "data_options" in given:
        changes["data_options"] = {**cfg.data_options, **given["data_options"]}
    stored_task = get_task(cfg.task)  # the task of the --config file or resumed run (None: the default)
    same = getattr(args, "task", stored_task.name) == stored_task.name
    task, opts = task_from_args(args, "train", stored=stored_task.name,
                                base=stored_task.options["train"].from_dict(cfg.task_options) if same else None)
    changes["task"], changes["task_options"] = task.name, opts.to_dict()
    model = task.model_name(changes.get("model", cfg.model))  # chroma: spn_three_way -> chroma_three_way
    if model != changes.get("model", cfg.model):
        changes["model"] = model
    mcfg = dict(cfg.model_cfg) if model == cfg.model else {}
    for cls in _MODEL_CONFIGS:
        mcfg.update(given_options(args, cls, prefix=MODEL))
    mcfg.update(given.get("model_cfg", {}))
    changes["model_cfg"] = mcfg
    if "out" not in changes and not getattr(args, "config", None) and not given.get("resume"):
        changes["out"] = f"runs/{model}"
    return cfg.replace(**changes).validate()


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def run(args) -> int:
    cfg = config_from_args(args)
    summary = train(cfg)
    if summary.get("checkpoint") is None:  # not rank 0 under torchrun: rank 0 reports
        return 0
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=2, default=str))
        return 0
    print(f"trained {summary['model']} for steps {summary['start_step']}..{summary['steps']} "
          f"(global batch {summary['global_batch_size']}, {summary['world_size']} process(es)) "
          f"in {summary['elapsed_s']:.1f} s")
    print(f"final loss {_fmt(summary['final_loss'])}, mean of the last 10 steps {_fmt(summary['mean_loss'])}")
    line = get_task(cfg.task).train_summary(summary)
    if line:
        print(line)
    print(f"checkpoint: {summary['run_dir']}")
    return 0
