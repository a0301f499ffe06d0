"""``spn train``: train the baseline CNN or an SPN refiner (single process or under torchrun)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "train the baseline CNN or an SPN refiner (one-way / three-way) on a dataset"

EPILOG = """\
examples:
  spn train --data synthetic --model spn_three_way --steps 500 --out runs/spn3
  spn train --data folder:DATA --model baseline --out runs/base
  spn train --data folder:DATA --coarse baseline:runs/base --out runs/spn3
  spn train --resume --out runs/spn3 --steps 1000
      (continue a stopped run: its config.json is reloaded, give only what changes)
  torchrun --nproc_per_node 2 -m spn train --data synthetic --batch-size 4 --out runs/ddp

coarse maps: an SPN refines coarse segmentations. Datasets without coarse maps need
--coarse gt-downsample:8 (simulated from the ground truth) or --coarse baseline:RUN_DIR
(the softmax of a baseline trained first with --model baseline); spn train stops with
that advice otherwise. Command-line flags override the values of --config FILE.json.
"""


def _kv(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        val = json.loads(v)
    except json.JSONDecodeError:
        val = v
    return k.strip(), val


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EPILOG
    g = p.add_argument_group("data")
    g.add_argument("--data", help="synthetic | folder:PATH | voc:PATH | helen:PATH (default synthetic)")
    g.add_argument("--data-option", action="append", type=_kv, metavar="KEY=VALUE", default=None,
                   help="extra dataset option (repeatable), e.g. num_images=32 or size=128 for synthetic")
    g.add_argument("--coarse", metavar="SRC",
                   help="coarse maps: files | gt-downsample:F | none | baseline:RUN_DIR (default: the dataset's)")
    g.add_argument("--patch-size", type=_positive_int, help="training patch side (default 128, as in the paper)")
    g.add_argument("--patches-per-image", type=_positive_int, help="patches per image and epoch (default 4)")
    g.add_argument("--no-flip", dest="flip", action="store_const", const=False, help="no random left-right flips")
    g.add_argument("--num-workers", type=int, help="DataLoader worker processes (default 0)")
    g.add_argument("--on-corrupt", choices=["error", "skip"], help="unreadable files: stop (default) or skip them")
    g.add_argument("--cache", action="store_const", const=True, help="keep decoded images in memory")
    g.add_argument("--val-split", help="evaluate on this split at the end (default val)")
    g.add_argument("--no-val", dest="val_split", action="store_const", const="", help="skip the final evaluation")
    g.add_argument("--val-items", type=_positive_int, help="evaluate on at most this many images")

    g = p.add_argument_group("model")
    g.add_argument("--model", help="baseline | spn_one_way | spn_three_way (default spn_three_way)")
    g.add_argument("--width", type=_positive_int, help="first-level width of the U-Net (baseline) / guidance network (SPN)")
    g.add_argument("--depth", type=_positive_int, help="number of stride-2 levels of that U-Net")
    g.add_argument("--channels", type=_positive_int, help="SPN: channels C' of the propagated map (default 32)")
    g.add_argument("--propagations", type=_positive_int, help="SPN: apply the propagation this many times (default 1)")
    g.add_argument("--shared-gates", action="store_const", const=True, help="SPN: one gate map for all channels")
    g.add_argument("--guidance-coarse", action="store_const", const=True,
                   help="SPN: feed the coarse scores to the guidance network too")
    g.add_argument("--model-option", action="append", type=_kv, metavar="KEY=VALUE", default=None,
                   help="any other model option (repeatable), e.g. scale=1 or residual=false")

    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=_positive_int, help="optimizer steps (default 1000)")
    g.add_argument("--epochs", type=float, help="passes over the training patches (instead of --steps)")
    g.add_argument("--batch-size", type=_positive_int, help="patches per step and process (default 8)")
    g.add_argument("--optimizer", choices=["adam", "sgd"], help="adam (default, lr 1e-3) or sgd (paper: lr 1e-4, momentum 0.9)")
    g.add_argument("--lr", type=float, help="learning rate (default per optimizer)")
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, help="weight decay (default 0)")
    g.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    g.add_argument("--seed", type=int, help="seed of the initialisation and the data order (default 0)")

    g = p.add_argument_group("run")
    g.add_argument("--out", help="run directory (default runs/MODEL)")
    g.add_argument("--resume", action="store_const", const=True, help="continue the run in --out from its last checkpoint")
    g.add_argument("--config", metavar="FILE.json", help="load a TrainConfig from JSON (a run's config.json works)")
    g.add_argument("--log-interval", type=_positive_int, help="steps between log.jsonl lines (default 10)")
    g.add_argument("--ckpt-interval", type=_positive_int, help="steps between checkpoints (default 100)")
    g.add_argument("--threads", type=_positive_int, help="torch CPU threads")
    g.add_argument("--device", help="cpu (default) | cuda | cuda:N | auto")
    g.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")
    g.add_argument("--progress", dest="progress", action="store_const", const=True,
                   help="progress bar even when stderr is not a terminal")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    g.add_argument("--debug", action="store_true", help="show the full traceback on errors")


# CLI attribute -> TrainConfig field (same name unless listed)
_DIRECT = ("data", "coarse", "model", "patch_size", "patches_per_image", "flip", "num_workers", "on_corrupt",
           "cache", "val_items", "steps", "epochs", "batch_size", "optimizer", "lr", "momentum",
           "weight_decay", "grad_clip", "seed", "out", "resume", "log_interval", "ckpt_interval", "threads",
           "device", "progress")


def config_from_args(args):
    """The :class:`~spn.training.TrainConfig` of the parsed arguments."""
    from spn.training import TrainConfig, load_config

    if getattr(args, "config", None):
        cfg = load_config(args.config)
    elif getattr(args, "resume", None):
        # resuming: start from the run's own config.json, so only what changes needs repeating
        out = args.out or f"runs/{args.model or TrainConfig.model}"
        stored = Path(out) / "config.json"
        cfg = load_config(stored) if stored.is_file() else TrainConfig()
    else:
        cfg = TrainConfig()
    changes = {}
    for name in _DIRECT:
        v = getattr(args, name, None)
        if v is not None:
            changes[name] = v
    if changes.get("steps") is not None:
        changes.setdefault("epochs", None)
    if changes.get("epochs") is not None and "steps" not in changes:
        changes["steps"] = None
    if getattr(args, "val_split", None) is not None:
        changes["val_split"] = args.val_split or None
    if args.data_option:
        changes["data_options"] = {**cfg.data_options, **dict(args.data_option)}
    model = changes.get("model", cfg.model)
    mcfg = dict(cfg.model_cfg) if model == cfg.model else {}
    is_spn = model != "baseline"
    if args.width is not None:
        mcfg["guidance_width" if is_spn else "width"] = args.width
    if args.depth is not None:
        mcfg["guidance_depth" if is_spn else "depth"] = args.depth
    for name in ("channels", "propagations", "shared_gates", "guidance_coarse"):
        v = getattr(args, name, None)
        if v is not None:
            mcfg[name] = v
    if args.model_option:
        mcfg.update(dict(args.model_option))
    changes["model_cfg"] = mcfg
    if "out" not in changes and not getattr(args, "config", None) and not getattr(args, "resume", None):
        changes["out"] = f"runs/{model}"
    cfg = cfg.replace(**changes)
    return cfg.validate()


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def run(args) -> int:
    from spn.training import train

    cfg = config_from_args(args)
    summary = train(cfg)
    if summary.get("checkpoint") is None:  # not rank 0 under torchrun: rank 0 reports
        return 0
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=2, default=str))
        return 0
    print(f"trained {summary['model']} for steps {summary['start_step']}..{summary['steps']} "
          f"(global batch {summary['global_batch_size']}, {summary['world_size']} process(es)) "
          f"in {summary['elapsed_s']:.1f} s")
    print(f"final loss {_fmt(summary['final_loss'])}, mean of the last 10 steps {_fmt(summary['mean_loss'])}")
    val = summary.get("val")
    if val:
        ref = val.get("refined") or {}
        line = f"val ({val.get('num_images')} images): {summary['model']} mIoU {_fmt(ref.get('mean_iou'))}"
        if val.get("coarse"):
            line += f", coarse input mIoU {_fmt(val['coarse'].get('mean_iou'))}"
        print(line)
    print(f"checkpoint: {summary['run_dir']}", file=sys.stdout)
    return 0
