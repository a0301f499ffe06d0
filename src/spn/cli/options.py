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

__all__ = ["UsageError", "add_config_options", "add_task_options", "build_config", "given_options",
           "given_task_options", "number"]


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


def _key(f: dataclasses.Field, spec) -> str:
    """The option's first spelling: what identifies it on the command line."""
    return (spec.flags or (_flag(f.name),))[0]


def _add_field(parser, groups: dict, f: dataclasses.Field, spec, kind, dest: str, group: str | None,
               note: str = "") -> None:
    if group is None:
        target = parser
    else:
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        target = groups[group]
    default = _default(f)
    flags = spec.flags or (_flag(f.name),)
    common = dict(dest=dest, default=argparse.SUPPRESS)
    if kind is bool:
        if default is not True:
            target.add_argument(*flags, action="store_const", const=True, help=_help(spec, default, kind) + note,
                                **common)
    elif kind is dict:
        target.add_argument(*flags, action="append", type=_key_value, metavar=spec.metavar or "KEY=VALUE",
                            help=spec.help + note, **common)
    elif kind is list:
        target.add_argument(*flags, action="append", metavar=spec.metavar, help=spec.help + note, **common)
    elif kind in (int, float, str):
        metavar = spec.metavar or {int: "N", float: "X"}.get(kind)
        target.add_argument(*flags, type=str if kind is str else number(kind, spec.minimum),
                            choices=spec.choices, metavar=metavar, help=_help(spec, default, kind) + note, **common)
    else:
        raise TypeError(f"{f.name}: no command-line form for type {kind!r}")
    if spec.negative:
        target.add_argument(spec.negative, action="store_const", const=spec.negative_value,
                            help=(spec.negative_help or "") + note, **common)


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
        try:
            _add_field(parser, groups, f, spec, _kind(hints[f.name]), prefix + f.name, spec.group)
        except TypeError as exc:
            raise TypeError(f"{cls.__name__}.{exc}") from None


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


# --- the options of the tasks (spn.tasks) ---------------------------------------------------------

TASK_DEST = "task_option."


def _task_dest(f, spec) -> str:
    return TASK_DEST + _key(f, spec).lstrip("-").replace("-", "_")


def add_task_options(parser: argparse.ArgumentParser, classes: dict, *, default: str, helps: dict,
                     groups: dict | None = None) -> None:
    """``--task NAME`` (choices: the keys of ``classes``) and the options of every task's options
    dataclass (``classes``: task name -> dataclass). An option two tasks declare (the same first
    spelling) is added once; an option of one task only says so in its help and, when its field
    names no group, sits in that task's ``--help`` section."""
    groups = {} if groups is None else groups
    parser.add_argument("--task", choices=list(classes), default=argparse.SUPPRESS,
                        help="what to do: " + "; ".join(helps[n] for n in classes) + f" (default: {default})")
    owners: dict = {}
    for name, cls in classes.items():
        for f, spec in option_fields(cls):
            owners.setdefault(_key(f, spec), []).append(name)
    added: set = set()
    for name, cls in classes.items():
        hints = typing.get_type_hints(cls)
        for f, spec in option_fields(cls):
            key = _key(f, spec)
            if key in added:
                continue
            added.add(key)
            only = owners[key] == [name] and len(classes) > 1
            group = spec.group if spec.group is not None or not only else f"--task {name}"
            _add_field(parser, groups, f, spec, _kind(hints[f.name]), _task_dest(f, spec), group,
                       note=f" [--task {name}]" if only else "")


def given_task_options(args: argparse.Namespace, task: str, cls, classes: dict) -> dict:
    """Field name -> value of the options of task ``task`` (options dataclass ``cls``) given on the
    command line; an option of another task only -> ValueError naming it."""
    hints = typing.get_type_hints(cls)
    mine = {_task_dest(f, spec): f for f, spec in option_fields(cls)}
    out = {}
    for dest, f in mine.items():
        if hasattr(args, dest):
            v = getattr(args, dest)
            out[f.name] = dict(v) if _kind(hints[f.name]) is dict else v
    foreign = set()
    for other in classes.values():
        for f, spec in option_fields(other):
            dest = _task_dest(f, spec)
            if dest not in mine and hasattr(args, dest):
                foreign.add(spec.negative if spec.negative and _default(f) is True else _key(f, spec))
    if foreign:
        raise ValueError(f"--task {task} does not use {', '.join(sorted(foreign))}")
    return out


def build_config(cls, args: argparse.Namespace, *, base=None, prefix: str = "", given: dict | None = None):
    """The config of a command line: ``base`` (default: the ``--config`` file, else the dataclass
    defaults) with the options given on top (``given``: those of :func:`given_options`, or of
    :func:`given_task_options`); ``dict`` fields are merged key by key. Runs the config's
    ``validate()``. A required field that is neither given nor in the file -> UsageError."""
    given = given_options(args, cls, prefix=prefix) if given is None else given
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


def add_task_arguments(parser: argparse.ArgumentParser, command: str, groups: dict | None = None,
                       default_help: str | None = None) -> None:
    """``--task`` and the options of every registered task for ``command`` (:mod:`spn.tasks`);
    ``default_help`` says what the default is where it is not simply the default task."""
    from spn.tasks import DEFAULT_TASK, get_task, task_options

    classes = task_options(command)
    add_task_options(parser, classes, default=default_help or DEFAULT_TASK,
                     helps={n: get_task(n).help for n in classes}, groups=groups)


def task_from_args(args: argparse.Namespace, command: str, *, stored: str | None = None, base=None):
    """``(task, its options for command)`` of a command line: the task of ``--task`` (else
    ``stored``, else the default task) and its options dataclass, ``base`` (default: the
    dataclass defaults) with the options given on top."""
    from spn.tasks import get_task, task_options

    task = get_task(getattr(args, "task", None) or stored)
    classes = task_options(command)
    cls = classes[task.name]
    given = given_task_options(args, task.name, cls, classes)
    return task, build_config(cls, args, base=cls() if base is None else base, given=given)
