"""GPU backend: the CUDA kernels of the ``torch.ops.spn`` propagation ops, in Triton.

Imported lazily by :mod:`spn.ops._backend`, and under a guard: where ``triton`` is not
installed (or fails to import), nothing else in ``spn`` breaks; :func:`load` returns ``None`` and
:func:`error` says why.

CUDA tensors run these kernels. With ``TRITON_INTERPRET=1`` set before ``triton`` is imported,
Triton's interpreter runs them on CPU tensors (``SPN_BACKEND=triton`` routes CPU calls here);
that is how they are tested without a GPU.
"""
from __future__ import annotations

import os

_state: dict = {"module": None, "error": None, "tried": False}


def load():
    """The kernels' module (:mod:`spn.ops.triton.ops`, which registers them on the ``spn`` ops),
    or ``None`` if triton is unusable. Importing triton takes seconds, so this runs on first use,
    not at ``import spn``."""
    if not _state["tried"]:
        _state["tried"] = True
        try:
            from . import ops

            _state["module"] = ops
        except Exception as exc:  # ImportError, or a triton/torch version mismatch
            _state["error"] = f"{type(exc).__name__}: {exc}"
    return _state["module"]


def _triton():
    """``(triton module or None, import error or None)``; cheap (no op registration)."""
    try:
        import triton

        return triton, None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def importable() -> bool:
    """Whether ``import triton`` works (cheap; :func:`load` also registers the ops)."""
    return _triton()[0] is not None and (not _state["tried"] or _state["module"] is not None)


def available() -> bool:
    """Whether the Triton kernels imported and registered (loads them)."""
    return load() is not None


def error() -> str | None:
    """Why the Triton kernels are unusable, as far as known without loading them (``None``: no
    error seen)."""
    mod, err = _triton()
    if mod is None:
        return err
    return _state["error"]


def version() -> str | None:
    """The installed triton's version, or ``None``."""
    mod, _ = _triton()
    return None if mod is None else mod.__version__


def interpreting() -> bool:
    """Whether the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` before import)."""
    if _state["module"] is not None:
        return _state["module"].INTERPRETING
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


__all__ = ["available", "error", "importable", "interpreting", "load", "version"]
