"""The ``spn`` console script: one entry point, one subcommand per module of this package.

Each subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``; its options are generated from its config dataclass
(:mod:`spn.cli.options`). Commands do not import each other: what two of them share lives in
the library below (:mod:`spn.inference`, :mod:`spn.evaluation`, :mod:`spn.data`, ...).

Every subcommand also takes ``-q`` / ``-v`` (fewer / more messages on stderr, through
:mod:`logging`) and ``--debug`` (re-raise errors with a traceback instead of a one-line
message). Messages go to stderr, results (reports, JSON) to stdout. An error, including an
operating-system one (permission denied, no space left on device, not a directory, is a
directory), is one line ``spn CMD: error: ...`` and exit status 1.

Example:
    >>> from spn.cli import build_parser
    >>> parser, commands = build_parser()
    >>> list(commands)
    ['info', 'bench', 'train', 'eval', 'refine', 'compare', 'demo', 'corpus']
"""
from __future__ import annotations

import argparse
import logging
import sys

from spn.utils.io import os_error_message

from . import bench, compare, demo, info, refine, train
from . import corpus as corpus_command
from . import eval as eval_command
from .options import UsageError

# name -> module; the order is the order of ``spn --help``
COMMANDS = {
    "info": info,
    "bench": bench,
    "train": train,
    "eval": eval_command,
    "refine": refine,
    "compare": compare,
    "demo": demo,
    "corpus": corpus_command,
}

log = logging.getLogger("spn")


class _Formatter(logging.Formatter):
    """``[spn CMD] message`` for information, ``spn CMD: warning: ...`` / ``spn CMD: error: ...``."""

    def __init__(self, command: str):
        super().__init__()
        self.command = command

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            msg += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.ERROR:
            return f"spn {self.command}: error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"spn {self.command}: warning: {msg}"
        return f"[spn {self.command}] {msg}"


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("messages")
    g.add_argument("-q", "--quiet", action="count", default=0,
                   help="fewer messages on stderr (-q: warnings and errors only, -qq: errors only)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more messages on stderr (debug)")
    g.add_argument("--debug", action="store_true", help="re-raise errors with a traceback")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """``(parser, {name: subparser})`` of the console script."""
    from spn import __version__

    parser = argparse.ArgumentParser(
        prog="spn",
        description="Spatial propagation networks (Liu et al., NIPS 2017): operator, training, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"spn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = {}
    for name, mod in COMMANDS.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        _add_common(p)
        subparsers[name] = p
    return parser, subparsers


def _log_level(args) -> int:
    steps = getattr(args, "verbose", 0) - getattr(args, "quiet", 0)
    return {1: logging.DEBUG, 0: logging.INFO, -1: logging.WARNING}.get(
        max(-2, min(1, steps)), logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser, subparsers = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(args.command))
    saved = (log.level, log.propagate)
    log.addHandler(handler)
    log.setLevel(_log_level(args))
    log.propagate = False
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except UsageError as exc:
        subparsers[args.command].error(str(exc))  # exits with status 2, as argparse does
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        # OSError: also permission denied, no space left, not a directory, is a directory...
        if args.debug:
            raise
        if isinstance(exc, OSError) and (exc.errno is not None or getattr(exc, "spn_message", None)):
            log.error(os_error_message(exc))
        else:
            log.error(str(exc))
        return 1
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


if __name__ == "__main__":
    sys.exit(main())
