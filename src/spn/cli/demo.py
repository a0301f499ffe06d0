"""``spn demo``: the task's demo (segmentation: baseline -> one-way / three-way SPN refinement
on the procedural scenes, the shipped models of ``--family hard`` or trained ones,
:mod:`spn.experiments.demo`; chroma: :mod:`spn.experiments.chroma`),
with a report, metrics JSON, a figure and the checkpoints. The options are generated from the
tasks' demo configs (:class:`spn.experiments.demo.DemoConfig`, ...)."""
from __future__ import annotations

from .options import add_task_arguments, task_from_args

HELP = ("baseline + one-way/three-way SPNs on synthetic scenes against the classical refiners (--family hard: "
        "the shipped models, evaluated; otherwise or with --train: trained); write report.md, metrics.json, "
        "figure.png (--task chroma: chroma SPNs on real photos; --task mask: the shipped mask refiner on real photos)")


def add_arguments(p) -> None:
    p.add_argument("--config", metavar="FILE.json", default=None,
                   help="start from the task's demo config stored in a JSON file (demo_config.json, or the "
                        "metrics.json holding it under 'config', as a demo saves it); the options given here "
                        "override it")
    add_task_arguments(p, "demo")


def run(args) -> int:
    from spn.tasks import get_task, task_options

    cls = task_options("demo")[get_task(getattr(args, "task", None)).name]
    # --quick picks the quick preset; a --config file (demo_config.json, metrics.json) is used as it is
    quick = bool(getattr(args, "task_option.quick", False))
    if args.config:
        base = cls.load(args.config)
    else:
        base = cls.preset(quick=quick) if hasattr(cls, "preset") else cls()
    task, cfg = task_from_args(args, "demo", base=base)
    res = task.demo(cfg)
    with open(res["report"], encoding="utf-8") as f:
        print(f.read())
    return 0
