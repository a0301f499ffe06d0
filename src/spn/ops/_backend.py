"""The one place where the propagation backend is chosen.

``spn._C`` (the compiled C++/OpenMP kernels) is imported under a guard. If it is missing or
broken, the package keeps working on the pure-PyTorch reference and warns once, saying how to
rebuild. ``SPN_BACKEND=reference`` forces the reference (for debugging and comparisons).
"""
from __future__ import annotations

import os
import warnings

import torch

_REBUILD = (
    "rebuild it with `make install` (or `pip install --no-build-isolation -e .` "
    "inside the project's virtual environment, after `pip install torch==2.13.0`)"
)

_state: dict = {"loaded": None, "error": None, "warned": False}


def _load() -> bool:
    if _state["loaded"] is None:
        try:
            from spn import _C  # noqa: F401  (registers torch.ops.spn.*)

            from . import _custom  # noqa: F401  (fake impls and autograd formulas)

            _state["loaded"] = True
        except Exception as exc:  # ImportError, undefined symbols, ABI mismatch...
            _state["loaded"] = False
            _state["error"] = f"{type(exc).__name__}: {exc}"
    return bool(_state["loaded"])


def extension_available() -> bool:
    """Whether the compiled extension ``spn._C`` imported."""
    return _load()


def extension_error() -> str | None:
    _load()
    return _state["error"]


def forced_reference() -> bool:
    return os.environ.get("SPN_BACKEND", "").strip().lower() in ("reference", "ref", "python")


def use_kernel(t: torch.Tensor) -> bool:
    """True when the compiled kernel should run for tensors like ``t``."""
    if forced_reference():
        return False
    if t.device.type != "cpu":
        return False  # no compiled kernel for this device: the reference runs there
    if _load():
        return True
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(
            f"spn: the compiled extension spn._C could not be imported ({_state['error']}); "
            f"falling back on the slow pure-PyTorch reference. To fix it, {_REBUILD}.",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


def active_backend(device: str = "cpu") -> str:
    """Name of the backend that runs for tensors on ``device``."""
    if forced_reference():
        return "reference (forced by SPN_BACKEND)"
    if torch.device(device).type != "cpu":
        return "reference"
    return "cpp (spn._C, OpenMP)" if _load() else "reference (spn._C not importable)"
