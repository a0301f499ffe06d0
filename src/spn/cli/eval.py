"""``spn eval``: metrics of a checkpoint on a dataset split, next to those of its input
(options generated from :class:`spn.evaluation.EvalConfig` and the task's eval options; the
task's ``eval`` runs it: :func:`spn.evaluation.run_eval` for segmentation)."""
from __future__ import annotations

from spn.evaluation import EvalConfig

from .options import add_config_options, add_task_arguments, build_config, task_from_args

HELP = ("evaluate a checkpoint on a dataset split (coarse input vs refined output, Table 3 format; "
        "--task chroma: PSNR / SSIM per photo)")


def add_arguments(p) -> None:
    add_config_options(p, EvalConfig)
    add_task_arguments(p, "eval")


def run(args) -> int:
    cfg = build_config(EvalConfig, args)
    task, opts = task_from_args(args, "eval")
    _, text = task.eval(cfg, opts)
    print(text)
    return 0
