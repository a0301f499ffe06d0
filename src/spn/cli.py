"""The ``spn`` console script: one entry point, one subcommand per module.

Each subcommand lives in ``spn.commands.<name>`` and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> module; the order is the order of ``spn --help``
COMMANDS = {
    "info": "spn.commands.info",
    "bench": "spn.commands.bench",
    "train": "spn.commands.train",
    "eval": "spn.commands.eval",
    "refine": "spn.commands.refine",
    "compare": "spn.commands.compare",
    "demo": "spn.commands.demo",
}


def _load_commands() -> dict:
    mods = {}
    for name, modname in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:  # not written (yet); anything else is a real error
                continue
            raise
    return mods


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    from spn import __version__

    parser = argparse.ArgumentParser(
        prog="spn",
        description="Spatial propagation networks (Liu et al., NIPS 2017): operator, training, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"spn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = _load_commands()
    for name, mod in mods.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
    return parser, mods


def main(argv: list[str] | None = None) -> int:
    parser, mods = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(mods[args.command].run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, TypeError, RuntimeError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"spn {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
