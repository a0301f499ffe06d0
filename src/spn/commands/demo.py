"""``spn demo``: baseline -> one-way / three-way SPN refinement on the procedural scenes, with a
report (Table 3 format), metrics JSON, a figure and the checkpoints (see :mod:`spn.engine.demo`)."""
from __future__ import annotations

HELP = "train baseline + one-way/three-way SPNs on synthetic scenes; write report.md, metrics.json, figure.png"


def add_arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="the short version (about 2 minutes on 2 cores; full: about 10)")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="output folder (default: runs/demo)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--coarse", default="gt-downsample:8", metavar="SRC",
                   help="coarse maps the SPNs refine: gt-downsample:F (default gt-downsample:8: simulated maps 8x "
                        "smaller than the image), baseline (the baseline CNN's output, the paper's HELEN protocol), "
                        "or auto (the baseline's output, falling back to gt-downsample:8 when the baseline is too "
                        "weak or too strong)")
    p.add_argument("--baseline-steps", type=int, default=None, metavar="N", help="override the baseline's training steps")
    p.add_argument("--spn-steps", type=int, default=None, metavar="N", help="override each SPN's training steps")
    p.add_argument("--no-compare", action="store_true", help="skip the comparison with the classical refiners")
    p.add_argument("--force", action="store_true", help="replace the runs of an earlier demo in --out")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="progress bars (default: when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="re-raise errors with a traceback")


def run(args) -> int:
    from spn.engine.demo import DemoConfig, run_demo

    over = dict(out=args.out, threads=args.threads, seed=args.seed, coarse=args.coarse,
                compare=not args.no_compare, force=args.force, progress=args.progress)
    if args.baseline_steps is not None:
        over["baseline_steps"] = args.baseline_steps
    if args.spn_steps is not None:
        over["spn_steps"] = args.spn_steps
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    cfg = DemoConfig.preset(quick=args.quick, **over)
    res = run_demo(cfg)
    print(open(res["report"], encoding="utf-8").read())
    return 0
