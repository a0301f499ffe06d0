"""``spn demo``: baseline -> one-way / three-way SPN refinement on the procedural scenes, with a
report (Table 3 format), metrics JSON, a figure and the checkpoints (:mod:`spn.experiments.demo`;
options generated from :class:`spn.experiments.demo.DemoConfig`)."""
from __future__ import annotations

from spn.experiments.demo import DemoConfig, run_demo

from .options import add_config_options, build_config, given_options

HELP = "train baseline + one-way/three-way SPNs on synthetic scenes; write report.md, metrics.json, figure.png"


def add_arguments(p) -> None:
    add_config_options(p, DemoConfig)


def run(args) -> int:
    # --quick picks the quick preset; a --config file (demo_config.json, metrics.json) is used as it is
    base = None if args.config else DemoConfig.preset(quick=bool(given_options(args, DemoConfig).get("quick")))
    res = run_demo(build_config(DemoConfig, args, base=base))
    with open(res["report"], encoding="utf-8") as f:
        print(f.read())
    return 0
