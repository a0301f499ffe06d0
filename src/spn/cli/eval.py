"""``spn eval``: metrics of a checkpoint on a dataset split, next to those of its coarse input
(:func:`spn.evaluation.run_eval`; options generated from :class:`spn.evaluation.EvalConfig`)."""
from __future__ import annotations

from spn.evaluation import EvalConfig, run_eval
from spn.evaluation_chroma import run_chroma_eval

from .options import add_config_options, build_config

HELP = ("evaluate a checkpoint on a dataset split (coarse input vs refined output, Table 3 format; "
        "--task chroma: PSNR / SSIM per photo)")


def add_arguments(p) -> None:
    add_config_options(p, EvalConfig)


def run(args) -> int:
    cfg = build_config(EvalConfig, args)
    _, text = run_chroma_eval(cfg) if cfg.task == "chroma" else run_eval(cfg)
    print(text)
    return 0
