"""``spn compare``: SPN checkpoints against dense CRF, guided filter and the coarse input
(:func:`spn.experiments.compare.compare_from_config`; options generated from
:class:`spn.experiments.compare.CompareConfig`)."""
from __future__ import annotations

from spn.experiments.chroma import compare_chroma_from_config
from spn.experiments.compare import CompareConfig, compare_from_config
from spn.utils.io import check_output_path

from .options import add_config_options, build_config

HELP = "compare SPN checkpoints with dense CRF / guided filter / bilinear on the same images"


def add_arguments(p) -> None:
    add_config_options(p, CompareConfig)


def run(args) -> int:
    cfg = build_config(CompareConfig, args)
    check_output_path(cfg.out, "--out", directory=True)  # before the work, not after it
    res = compare_chroma_from_config(cfg) if cfg.task == "chroma" else compare_from_config(cfg)
    with open(res["report"], encoding="utf-8") as f:
        print(f.read())
    print(f"wrote {res['report']}, {res['json']}" + (f", {res['figure']}" if res.get("figure") else ""))
    return 0
