"""``spn eval``: metrics of a checkpoint on a dataset split, next to those of its coarse input."""
from __future__ import annotations

import sys

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


def run_eval(args) -> tuple[dict, str]:
    import torch

    from spn.data import build_dataset
    from spn.engine import report
    from spn.models.checkpoint import checkpoint_classes, load_checkpoint
    from spn.engine.evaluate import evaluate
    from spn.utils.io import write_json, write_markdown

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    model, info = load_checkpoint(args.checkpoint)
    k_ckpt, names_ckpt = checkpoint_classes(info, model)
    dataset = build_dataset(args.data, split=args.split, coarse=args.coarse)
    k_data = getattr(dataset, "num_classes", None)
    if k_ckpt is not None and k_data is not None and k_ckpt != k_data:
        raise ValueError(f"checkpoint {args.checkpoint} predicts {k_ckpt} classes but dataset "
                         f"{args.data!r} has {k_data}")
    if len(dataset) == 0:
        raise ValueError(f"dataset {args.data!r} split {args.split!r} has no images")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    res = evaluate(model, dataset, limit=args.limit, protocol=args.protocol,
                   restrict_to_present=args.restrict_to_present, progress=progress)
    model_name = getattr(model, "name", info.get("model", "model"))
    res.update({
        "checkpoint": str(args.checkpoint),
        "model": model_name,
        "data": args.data,
        "split": args.split,
        "coarse_source": args.coarse,
    })
    results = eval_results(res, model_name)
    res["table"] = report.results_json(results)
    if args.json:
        write_json(args.json, res)
    text = eval_markdown(res, results)
    if args.report:
        write_markdown(args.report, text)
    return res, text


def eval_results(res: dict, model_name: str) -> dict:
    """Rows of the report: the coarse input (when the items had one) and the model output."""
    results = {}
    if res.get("coarse") is not None:
        results["coarse input"] = {"metrics": res["coarse"], "seconds_per_image": None}
    results[model_name] = {"metrics": res["refined"], "seconds_per_image": res["seconds_per_image"]}
    return results


def eval_markdown(res: dict, results: dict) -> str:
    from spn.engine import report

    lines = [
        f"# spn eval: {res['model']} on {res['data']} ({res['split']})",
        "",
        f"- checkpoint: `{res['checkpoint']}`",
        f"- images: {res['num_images']}, classes: {res['num_classes']}, protocol: {res['protocol']}"
        + (", refined output restricted to the coarse input's classes" if res["restrict_to_present"] else ""),
        f"- coarse source: {res['coarse_source'] or 'dataset default'}",
        f"- seconds per image (model call, this machine): median {res['seconds_per_image']['median']:.4g}, "
        f"mean {res['seconds_per_image']['mean']:.4g}",
        "",
        report.table3_markdown(results),
    ]
    extra = report.protocol_markdown(results, res["protocol"])
    if extra:
        lines += [extra]
    lines += [report.per_class_markdown(results, res.get("class_names"))]
    return "\n".join(lines)


def run(args) -> int:
    res, text = run_eval(args)
    print(text)
    return 0
