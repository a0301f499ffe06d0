"""``spn compare``: SPN checkpoints against dense CRF, guided filter and the coarse input."""
from __future__ import annotations

import sys

HELP = "compare SPN checkpoints with dense CRF / guided filter / bilinear on the same images"

DEFAULT_PEERS = "bilinear,densecrf,guided_filter"


def add_arguments(p) -> None:
    from spn.metrics import list_protocols
    from spn.peers import list_peers

    p.add_argument("--data", required=True, metavar="SPEC",
                   help="dataset: synthetic | folder:PATH | voc:PATH | helen:PATH")
    p.add_argument("--checkpoint", action="append", default=[], metavar="NAME=RUN",
                   help="an SPN (or baseline) run directory to compare, with its name in the table, "
                        "e.g. one-way=runs/one; repeat for several")
    p.add_argument("--peers", default=DEFAULT_PEERS, metavar="LIST",
                   help=f"comma-separated refiners among {', '.join(list_peers())} or 'none' "
                        f"(default: {DEFAULT_PEERS}; densecrf is left out with a warning when "
                        "pydensecrf2 is not installed and the default is used)")
    p.add_argument("--split", default="val", help="dataset split (default: val)")
    p.add_argument("--coarse", default=None, metavar="SRC",
                   help="coarse source: files | gt-downsample:F | baseline:RUN_DIR (default: the dataset's)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="compare on the first N images only")
    p.add_argument("--protocol", default="plain", choices=list_protocols(),
                   help="evaluation protocol (voc: classes restricted to those of the coarse input; "
                        "helen: F-measures of Table 1)")
    p.add_argument("--crf-grid", action="store_true",
                   help="tune the dense CRF by grid search (mean IoU) on the training split first")
    p.add_argument("--crf-grid-limit", type=int, default=8, metavar="N",
                   help="training images used by --crf-grid (default: 8)")
    p.add_argument("--crf", action="append", default=[], metavar="KEY=VALUE",
                   help="a dense CRF parameter (gauss_sxy, gauss_compat, bil_sxy, bil_srgb, bil_compat, "
                        "iterations), e.g. --crf bil_sxy=60; repeat for several")
    p.add_argument("--figure-rows", type=int, default=4, metavar="N", help="images in the figure (0: none)")
    p.add_argument("--no-time-512", dest="time_512", action="store_false",
                   help="skip the 512 x 512 timing of every method")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: compare.md, compare.json, compare.png (and crf_grid.json)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    p.add_argument("--debug", action="store_true", help="re-raise errors with a traceback")


def _parse_peers(text: str) -> tuple[list[str], bool]:
    from spn.peers import list_peers

    if text.strip().lower() == "none":
        return [], False
    peers = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in peers if p not in list_peers()]
    if bad:
        raise ValueError(f"unknown peer(s) {', '.join(bad)}; valid peers are {', '.join(list_peers())}")
    return peers, text == DEFAULT_PEERS


def _parse_crf(values) -> dict:
    from dataclasses import fields

    from spn.peers.densecrf import DenseCRFParams

    types = {f.name: f.type for f in fields(DenseCRFParams)}
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        key = key.strip()
        if not sep or key not in types:
            raise ValueError(f"--crf expects KEY=VALUE with KEY in {', '.join(types)}, got {v!r}")
        try:
            out[key] = int(val) if key == "iterations" else float(val)
        except ValueError:
            raise ValueError(f"--crf {key}: {val!r} is not a number") from None
    return out


def run(args) -> int:
    import torch

    from spn.data import build_dataset
    from spn.engine.compare import checkpoint_args, run_compare
    from spn.utils.io import write_json
    from spn.peers import densecrf_available

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.figure_rows < 0:
        raise ValueError(f"--figure-rows must be >= 0, got {args.figure_rows}")
    checkpoints = checkpoint_args(args.checkpoint)
    peers, default = _parse_peers(args.peers)
    if "densecrf" in peers and not densecrf_available():
        if default:
            print("spn compare: warning: pydensecrf2 is not installed; leaving out the dense CRF "
                  "(pip install pydensecrf2)", file=sys.stderr)
            peers.remove("densecrf")
        else:
            raise RuntimeError("the densecrf peer needs pydensecrf: pip install pydensecrf2")
    if not peers and not checkpoints:
        raise ValueError("nothing to compare: give --checkpoint NAME=RUN and/or --peers")
    crf_params = _parse_crf(args.crf)
    if args.crf_grid and "densecrf" not in peers:
        raise ValueError("--crf-grid needs the densecrf peer in --peers")
    dataset = build_dataset(args.data, split=args.split, coarse=args.coarse)
    if args.crf_grid:
        from spn.peers.densecrf import grid_search

        train = build_dataset(args.data, split="train", coarse=args.coarse)
        print(f"spn compare: dense CRF grid search on {min(args.crf_grid_limit, len(train))} training images",
              file=sys.stderr)
        grid = grid_search(train, limit=args.crf_grid_limit, protocol=args.protocol, base=crf_params)
        write_json(f"{args.out}/crf_grid.json", grid)
        crf_params = grid["best"]
        print(f"spn compare: best dense CRF mean IoU {100 * grid['best_mean_iou']:.2f}: {crf_params}",
              file=sys.stderr)
    res = run_compare(dataset, checkpoints, peers, args.out, limit=args.limit, protocol=args.protocol,
                      crf_params=crf_params or None, figure_rows=args.figure_rows, time_512=args.time_512,
                      data_label=f"{args.data} ({args.split})")
    with open(res["report"], encoding="utf-8") as f:
        print(f.read())
    print(f"wrote {res['report']}, {res['json']}" + (f", {res['figure']}" if res.get("figure") else ""))
    return 0
