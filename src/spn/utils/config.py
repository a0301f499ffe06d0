"""Dataclass configs as the single source of truth.

A config is a dataclass whose fields are declared with :func:`option`: the default, the help
text and, where the command line needs them, the option's spelling, metavar, choices and lower
bound. The ``spn`` console script generates each subcommand's options from these fields
(:mod:`spn.cli.options`), so a field, its default and its ``--help`` line cannot drift apart.
:class:`ConfigBase` gives the JSON round trip: ``to_dict`` / ``from_dict`` / ``load``, which is
what ``--config FILE.json`` reads and what a run saves as its ``config.json``.

Example:
    >>> from dataclasses import dataclass
    >>> from spn.utils.config import ConfigBase, option, option_spec
    >>> @dataclass
    ... class Cfg(ConfigBase):
    ...     steps: int = option(10, help="optimizer steps", minimum=1)
    ...     flip: bool = option(True, help="random flips", negative="--no-flip")
    >>> Cfg.from_dict({"steps": 3}).to_dict()
    {'steps': 3, 'flip': True}
    >>> option_spec(Cfg, "flip").negative
    '--no-flip'
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Sequence

from .io import read_json

__all__ = ["ConfigBase", "OptionSpec", "check_options", "option", "option_flag", "option_spec", "option_fields"]

_KEY = "spn_option"


@dataclass(frozen=True)
class OptionSpec:
    """How a config field appears on the command line (see :func:`option`)."""

    help: str
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    choices: tuple | None = None
    minimum: float | None = None
    group: str | None = None
    negative: str | None = None
    negative_value: Any = False
    negative_help: str | None = None
    default_help: str | None = None
    cli: bool = True


def option(default=MISSING, *, help: str, flags: Sequence[str] = (), metavar: str | None = None,
           choices: Sequence | None = None, minimum: float | None = None, group: str | None = None,
           negative: str | None = None, negative_value: Any = False, negative_help: str | None = None,
           default_help: str | None = None, cli: bool = True, default_factory=MISSING):
    """A dataclass field with its command-line option.

    Args:
        default / default_factory: as for ``dataclasses.field`` (neither: a required option).
        help: the ``--help`` text (the default is appended unless ``default_help`` replaces it).
        flags: the option strings; default ``--field-name``. Empty for a bool whose default is
            True: only ``negative`` then.
        metavar, choices: as for argparse. ``minimum``: a lower bound checked while parsing.
        group: the ``--help`` section.
        negative: an extra flag that stores ``negative_value`` (e.g. ``--no-flip`` -> False,
            ``--no-val`` -> None), with ``negative_help``.
        cli: False keeps the field off the command line (JSON and Python only).
    """
    spec = OptionSpec(help=help, flags=tuple(flags), metavar=metavar,
                      choices=tuple(choices) if choices is not None else None, minimum=minimum,
                      group=group, negative=negative, negative_value=negative_value,
                      negative_help=negative_help, default_help=default_help, cli=cli)
    kw = {"metadata": {_KEY: spec}}
    if default is not MISSING:
        kw["default"] = default
    if default_factory is not MISSING:
        kw["default_factory"] = default_factory
    return dataclasses.field(**kw)


def option_spec(cls, name: str) -> OptionSpec | None:
    """The :class:`OptionSpec` of field ``name`` of config class ``cls`` (None: a plain field)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get(_KEY)
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def option_fields(cls) -> list[tuple[dataclasses.Field, OptionSpec]]:
    """``(field, spec)`` of every field of ``cls`` declared with :func:`option` and ``cli=True``."""
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_KEY)
        if spec is not None and spec.cli:
            out.append((f, spec))
    return out


def option_flag(cls, name: str) -> str:
    """The command-line spelling of field ``name`` (``--field-name`` unless the field says otherwise)."""
    spec = option_spec(cls, name)
    return spec.flags[0] if spec is not None and spec.flags else "--" + name.replace("_", "-")


def check_options(cfg, *, required: Sequence[str] = (), at_least: dict | None = None) -> None:
    """Checks of a command's config whose errors name the option (``--limit must be >= 1, got 0``):
    the ``required`` fields must be non-empty strings, the fields of ``at_least`` (name ->
    minimum) at least their minimum when set."""
    cls = type(cfg)
    for name in required:
        v = getattr(cfg, name)
        if not isinstance(v, str) or not v:
            raise ValueError(f"{option_flag(cls, name)} is required")
    for name, minimum in (at_least or {}).items():
        v = getattr(cfg, name)
        if v is not None and v < minimum:
            raise ValueError(f"{option_flag(cls, name)} must be >= {minimum}, got {v}")


class ConfigBase:
    """JSON round trip of a config dataclass.

    ``section``: the key under which a larger JSON file (a run's ``config.json``, a demo's
    ``metrics.json``) holds the config; :meth:`load` accepts both that file and the bare config.
    Subclasses may define ``validate(self) -> self``; :meth:`from_dict` calls it.
    """

    section: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a dict; unknown keys -> TypeError naming them and the valid ones."""
        if not isinstance(d, dict):
            raise TypeError(f"a {cls.__name__} must be a JSON object, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise TypeError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}; "
                            f"valid keys are {', '.join(sorted(names))}")
        obj = cls(**d)
        return obj.validate() if hasattr(obj, "validate") else obj

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, path):
        """Read a config from a JSON file (the bare config, or a file holding it under ``section``)."""
        path = Path(path)
        d = read_json(path, "config file")
        if cls.section and isinstance(d, dict) and isinstance(d.get(cls.section), dict):
            d = d[cls.section]
        try:
            return cls.from_dict(d)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{path}: {exc}") from None
