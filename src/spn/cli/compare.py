"""``spn compare``: checkpoints against the classical methods of their task and the input
(options generated from :class:`spn.experiments.compare.CompareConfig` and the task's compare
options; the task's ``compare`` runs it: :func:`spn.experiments.compare.compare_from_config`
for segmentation)."""
from __future__ import annotations

from pathlib import Path

from spn.experiments.compare import CompareConfig
from spn.utils.io import check_output_path

from .options import add_config_options, add_task_arguments, build_config, task_from_args

HELP = "compare SPN checkpoints with dense CRF / guided filter / bilinear on the same images"


def add_arguments(p) -> None:
    add_config_options(p, CompareConfig)
    add_task_arguments(p, "compare")


def run(args) -> int:
    cfg = build_config(CompareConfig, args)
    task, opts = task_from_args(args, "compare")
    out = Path(cfg.out)
    existed = out.exists()
    check_output_path(cfg.out, "--out", directory=True)  # before the work, not after it
    try:
        res = task.compare(cfg, opts)
    except BaseException:
        # a failed comparison leaves no empty --out folder behind (one it did not create is kept)
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    with open(res["report"], encoding="utf-8") as f:
        print(f.read())
    print(f"wrote {res['report']}, {res['json']}" + (f", {res['figure']}" if res.get("figure") else ""))
    return 0
