"""``spn demo``: baseline -> one-way / three-way SPN refinement on the procedural scenes, with a
report (Table 3 format), metrics JSON, a figure and the checkpoints (:mod:`spn.experiments.demo`;
options generated from :class:`spn.experiments.demo.DemoConfig`)."""
from __future__ import annotations

from spn.experiments.chroma import ChromaDemoConfig, run_chroma_demo
from spn.experiments.demo import DemoConfig, run_demo

from .options import add_config_options, build_config, given_options

HELP = ("train baseline + one-way/three-way SPNs on synthetic scenes; write report.md, metrics.json, figure.png "
        "(--task chroma: chroma SPNs on real photos)")


def add_arguments(p) -> None:
    add_config_options(p, DemoConfig)


#: the options of ``spn demo`` that ``--task chroma`` uses, and its field they set
CHROMA_OPTIONS = {"out": "out", "quick": "quick", "seed": "seed", "threads": "threads", "spn_steps": "steps",
                  "compare": "compare", "progress": "progress", "force": "force"}


def _run_chroma(args, given: dict) -> int:
    other = sorted(k for k in given if k not in CHROMA_OPTIONS and k != "task")
    if other:
        raise ValueError(f"--task chroma does not use {', '.join('--' + k.replace('_', '-') for k in other)}")
    if args.config:
        cfg = ChromaDemoConfig.load(args.config).replace(**{CHROMA_OPTIONS[k]: v for k, v in given.items()
                                                            if k in CHROMA_OPTIONS})
    else:
        cfg = ChromaDemoConfig.preset(quick=bool(given.get("quick")),
                                      **{CHROMA_OPTIONS[k]: v for k, v in given.items()
                                         if k in CHROMA_OPTIONS and k != "quick"})
    res = run_chroma_demo(cfg)
    with open(res["report"], encoding="utf-8") as f:
        print(f.read())
    return 0


def run(args) -> int:
    given = given_options(args, DemoConfig)
    if given.get("task") == "chroma":
        return _run_chroma(args, given)
    # --quick picks the quick preset; a --config file (demo_config.json, metrics.json) is used as it is
    base = None if args.config else DemoConfig.preset(quick=bool(given.get("quick")))
    res = run_demo(build_config(DemoConfig, args, base=base))
    with open(res["report"], encoding="utf-8") as f:
        print(f.read())
    return 0
