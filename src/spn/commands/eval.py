"""``spn eval``: metrics of a checkpoint on a dataset split, next to those of its coarse input."""
from __future__ import annotations

HELP = "evaluate a checkpoint on a dataset split (coarse input vs refined output, Table 3 format)"


def add_arguments(p) -> None:
    from spn.metrics import list_protocols

    p.add_argument("--checkpoint", required=True, metavar="RUN",
                   help="run directory (or its model.safetensors) written by `spn train`")
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="dataset: synthetic | folder:PATH | voc:PATH | helen:PATH")
    p.add_argument("--split", default="val", help="dataset split (default: val)")
    p.add_argument("--coarse", default=None, metavar="SRC",
                   help="coarse source: files | gt-downsample:F | none | baseline:RUN_DIR "
                        "(default: the dataset's default)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate the first N images only")
    p.add_argument("--protocol", default="plain", choices=list_protocols(),
                   help="evaluation protocol (default: plain; voc restricts the refined classes to those "
                        "of the coarse input)")
    p.add_argument("--restrict-to-present", action="store_true",
                   help="restrict the refined output to the classes present in the coarse input")
    p.add_argument("--json", default=None, metavar="PATH", help="write all metrics as JSON")
    p.add_argument("--report", default=None, metavar="PATH", help="write a markdown report")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="re-raise errors with a traceback")


def run(args) -> int:
    from spn.evaluation import EvalConfig, run_eval

    cfg = EvalConfig(**{k: getattr(args, k) for k in (
        "checkpoint", "data", "split", "coarse", "limit", "protocol", "restrict_to_present", "json", "report",
        "threads", "progress")})
    res, text = run_eval(cfg)
    print(text)
    return 0
