"""Command-line options generated from config dataclasses.

Every field declared with :func:`spn.utils.config.option` becomes an option: ``--field-name``
(or the spelling the field names), its type from the annotation, its default and help from the
field. Bools are flags (``--x`` sets True; a ``negative`` spelling such as ``--no-x`` sets the
``negative_value``); ``dict`` fields take repeated ``KEY=VALUE`` pairs (values parsed as JSON,
else kept as text) merged into the dict; ``list`` fields take repeated values. Options default to
"not given", so :func:`build_config` can lay what the user typed over a base config: the
dataclass defaults, or the JSON file of ``--config FILE.json`` (a run's ``config.json`` works).

Example:
    >>> import argparse
    >>> from spn.cli.options import add_config_options, build_config
    >>> from spn.training import TrainConfig
    >>> p = argparse.ArgumentParser()
    >>> add_config_options(p, TrainConfig)
    >>> cfg = build_config(TrainConfig, p.parse_args(["--steps", "5", "--no-flip", "--data-option", "size=64"]))
    >>> cfg.steps, cfg.flip, cfg.data_options
    (5, False, {'size': 64})
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing

from spn.utils.config import option_fields

__all__ = ["UsageError", "add_config_options", "build_config", "given_options", "number"]


class UsageError(Exception):
    """A command line that cannot be run (a required option is missing); the console script
    reports it like argparse does (usage line, exit status 2)."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _kind(tp) -> type:
    """The type an annotation asks for, ``X | None`` -> ``X``; ``list[str]`` -> ``list``."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"a config field must have one type (or that type | None), got {tp}")
        return _kind(args[0])
    return origin or tp


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _key_value(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        val = json.loads(v)
    except json.JSONDecodeError:
        val = v
    return k.strip(), val


def number(kind: type, minimum=None):
    """An argparse ``type`` for ``int`` or ``float`` values, optionally ``>= minimum``."""
    what = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if minimum is not None and v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what} >= {minimum}, got {v}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _help(spec, default, kind) -> str:
    if spec.default_help is not None:
        return f"{spec.help} (default: {spec.default_help})"
    if default is dataclasses.MISSING:
        return f"{spec.help} (required)"
    if kind is bool or default is None or default == {} or default == []:
        return spec.help
    return f"{spec.help} (default: {default})"


def add_config_options(parser: argparse.ArgumentParser, cls, *, prefix: str = "", config_file: bool = True,
                       groups: dict | None = None) -> None:
    """Add an option for every command-line field of the config dataclass ``cls``.

    ``prefix`` is put before the destination names (to keep two configs apart in one parser);
    ``groups`` (title -> argparse group) is shared between calls so that fields of several
    configs with the same ``group`` land in one ``--help`` section. ``config_file`` adds
    ``--config FILE.json``.
    """
    groups = {} if groups is None else groups
    hints = typing.get_type_hints(cls)
    if config_file:
        parser.add_argument("--config", metavar="FILE.json", default=None,
                            help=f"start from the {cls.__name__} fields stored in a JSON file"
                                 + (f" (or the file holding it under {cls.section!r}, as a run saves it)"
                                    if getattr(cls, "section", None) else "")
                                 + "; the options given here override it")
    for f, spec in option_fields(cls):
        if spec.group is None:
            target = parser
        else:
            if spec.group not in groups:
                groups[spec.group] = parser.add_argument_group(spec.group)
            target = groups[spec.group]
        dest = prefix + f.name
        kind = _kind(hints[f.name])
        default = _default(f)
        flags = spec.flags or (_flag(f.name),)
        common = dict(dest=dest, default=argparse.SUPPRESS)
        if kind is bool:
            if default is not True:
                target.add_argument(*flags, action="store_const", const=True, help=_help(spec, default, kind),
                                    **common)
        elif kind is dict:
            target.add_argument(*flags, action="append", type=_key_value, metavar=spec.metavar or "KEY=VALUE",
                                help=spec.help, **common)
        elif kind is list:
            target.add_argument(*flags, action="append", metavar=spec.metavar, help=spec.help, **common)
        elif kind in (int, float, str):
            metavar = spec.metavar or {int: "N", float: "X"}.get(kind)
            target.add_argument(*flags, type=str if kind is str else number(kind, spec.minimum),
                                choices=spec.choices, metavar=metavar, help=_help(spec, default, kind), **common)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line form for type {kind!r}")
        if spec.negative:
            target.add_argument(spec.negative, action="store_const", const=spec.negative_value,
                                help=spec.negative_help, **common)


def given_options(args: argparse.Namespace, cls, *, prefix: str = "") -> dict:
    """Field name -> value of the options of ``cls`` given on the command line (a ``dict`` field's
    pairs as a dict, a ``list`` field's values as a list)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f, _ in option_fields(cls):
        dest = prefix + f.name
        if hasattr(args, dest):
            v = getattr(args, dest)
            out[f.name] = dict(v) if _kind(hints[f.name]) is dict else v
    return out


def build_config(cls, args: argparse.Namespace, *, base=None, prefix: str = ""):
    """The config of a command line: ``base`` (default: the ``--config`` file, else the dataclass
    defaults) with the options given on top; ``dict`` fields are merged key by key. Runs the
    config's ``validate()``. A required field that is neither given nor in the file -> UsageError."""
    given = given_options(args, cls, prefix=prefix)
    if base is None and getattr(args, "config", None):
        base = cls.load(args.config)
    if base is not None:
        merged = {k: ({**getattr(base, k), **v} if isinstance(v, dict) else v) for k, v in given.items()}
        cfg = dataclasses.replace(base, **merged)
    else:
        missing = [(spec.flags or (_flag(f.name),))[0] for f, spec in option_fields(cls)
                   if f.name not in given and _default(f) is dataclasses.MISSING]
        if missing:
            raise UsageError(f"the following arguments are required: {', '.join(missing)}")
        cfg = cls(**given)
    return cfg.validate() if hasattr(cfg, "validate") else cfg
