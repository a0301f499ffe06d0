"""The one place where the propagation backend is chosen.

The operator is one family of ops, ``torch.ops.spn.propagate_fwd/bwd`` and
``propagate4_fwd/bwd`` (:mod:`spn.ops._custom`), with a kernel per device on each: the compiled
C++/OpenMP kernels (``spn._C``) for CPU tensors, the Triton kernels (:mod:`spn.ops.triton`) for
CUDA tensors. The dispatcher picks the kernel by device; this module only decides whether the
ops can run at all, or whether the pure-PyTorch reference runs instead:

- ``spn._C`` is imported under a guard. If it is missing or broken, CPU tensors run the
  reference and a one-time warning says how to rebuild.
- triton is imported lazily, under a guard. Where it is missing, CUDA tensors run the reference
  (float32 accumulation) with a one-time warning saying how to fix it.

``SPN_BACKEND`` (read at every call) takes one of :data:`BACKENDS`; any other value is an error:

- unset, empty or ``auto``: the above;
- ``reference`` (or ``ref``, ``python``): the reference everywhere (debugging, comparisons);
- ``triton``: the Triton kernels, also on CPU tensors when Triton's interpreter is on
  (``TRITON_INTERPRET=1`` set before import), which is how the tests run them without a GPU.
"""
from __future__ import annotations

import os
import warnings

import torch

_REBUILD = (
    "rebuild it with `make install` (or `pip install --no-build-isolation -e .` "
    "inside the project's virtual environment, after `pip install torch==2.13.0`)"
)

_TRITON_FIX = "install it with `pip install triton` in this environment (a CUDA build of torch is needed)"

_state: dict = {"loaded": None, "error": None, "warned": False}
_triton_state: dict = {"warned": False}


def _load() -> bool:
    if _state["loaded"] is None:
        try:
            from . import _custom  # noqa: F401  (the ops' schemas, fake impls and autograd formulas)
            from spn import _C  # noqa: F401  (registers the ops' CPU kernels)

            _state["loaded"] = True
        except Exception as exc:  # ImportError, undefined symbols, ABI mismatch...
            _state["loaded"] = False
            _state["error"] = f"{type(exc).__name__}: {exc}"
    return bool(_state["loaded"])


def _warn_once(state: dict, message: str) -> None:
    """One RuntimeWarning per process, pointing at the line that called the public function."""
    if not state["warned"]:
        state["warned"] = True
        warnings.warn(message, RuntimeWarning, stacklevel=5)  # _warn_once < use_* < use_ops < propagate* < caller


def extension_available() -> bool:
    """Whether the compiled extension ``spn._C`` imported."""
    return _load()


def extension_error() -> str | None:
    _load()
    return _state["error"]


#: the values ``SPN_BACKEND`` takes, each with what it selects
BACKENDS = {"": "auto", "auto": "auto", "reference": "reference", "ref": "reference", "python": "reference",
            "triton": "triton"}


def _requested() -> str:
    """``"auto"``, ``"reference"`` or ``"triton"``, from ``SPN_BACKEND``; an error for anything else."""
    raw = os.environ.get("SPN_BACKEND", "")
    value = BACKENDS.get(raw.strip().lower())
    if value is None:
        raise ValueError(f"SPN_BACKEND={raw!r} is not a backend; valid values are auto (or unset), "
                         f"reference (or ref, python) and triton")
    return value


def forced_reference() -> bool:
    return _requested() == "reference"


def forced_triton() -> bool:
    return _requested() == "triton"


def triton_ops():
    """The Triton kernels' module (:mod:`spn.ops.triton.ops`; loading it registers them on the
    ``spn`` ops), or ``None`` where triton is unusable."""
    from . import triton as _triton

    return _triton.load()


def use_triton(t: torch.Tensor) -> bool:
    """True when the Triton kernels should run for tensors like ``t`` (and are registered): CUDA
    tensors when triton imports, and every tensor under ``SPN_BACKEND=triton`` (CPU ones in the
    interpreter, where they replace the C++ kernels as the ops' CPU kernels)."""
    if forced_reference():
        return False
    if forced_triton() and t.device.type in ("cpu", "cuda"):
        from . import triton as _triton

        if triton_ops() is None:
            raise RuntimeError(f"SPN_BACKEND=triton, but triton cannot be imported ({_triton.error()}); "
                               f"{_TRITON_FIX}, or unset SPN_BACKEND")
        if t.device.type == "cpu" and not _triton.interpreting():
            raise RuntimeError("SPN_BACKEND=triton on CPU tensors runs Triton's interpreter, which must be "
                               "switched on before triton is imported: set TRITON_INTERPRET=1 in the "
                               "environment (or unset SPN_BACKEND)")
        return True
    if t.device.type != "cuda":
        return False
    if triton_ops() is not None:
        return True
    from . import triton as _triton

    _warn_once(_triton_state, f"spn: triton could not be imported ({_triton.error()}); CUDA tensors run the slow "
                              f"pure-PyTorch reference (float32 accumulation). To fix it, {_TRITON_FIX}.")
    return False


def use_kernel(t: torch.Tensor) -> bool:
    """True when the compiled CPU kernels should run for tensors like ``t``."""
    if forced_reference():
        return False
    if t.device.type != "cpu":
        return False  # no compiled kernel for this device: the reference runs there
    if _load():
        return True
    _warn_once(_state, f"spn: the compiled extension spn._C could not be imported ({_state['error']}); "
                       f"falling back on the slow pure-PyTorch reference. To fix it, {_REBUILD}.")
    return False


def use_ops(t: torch.Tensor) -> bool:
    """True when ``torch.ops.spn.*`` has a kernel to run for tensors like ``t`` (and it is
    wanted); False when the reference should run instead."""
    return use_triton(t) or use_kernel(t)


def _triton_backend_name(kind: str) -> str:
    from . import triton as _triton

    if not _triton.importable():
        return "error: SPN_BACKEND=triton but triton is not importable" if forced_triton() else \
            "reference (triton not importable)"
    if kind == "cpu" and not _triton.interpreting():
        return "error: SPN_BACKEND=triton on CPU needs TRITON_INTERPRET=1"
    name = f"triton {_triton.version()}" + (" (interpreter)" if _triton.interpreting() else "")
    return name + (", forced by SPN_BACKEND" if kind == "cpu" else "")


def triton_info() -> dict:
    """The GPU backend's state for ``spn info``: triton's version, interpreter mode, import error."""
    from . import triton as _triton

    return {"triton": _triton.version(), "triton_interpreter": _triton.interpreting(), "triton_error": _triton.error()}


def active_backend(device: str = "cpu") -> str:
    """Name of the backend that runs for tensors on ``device``."""
    if forced_reference():
        return "reference (forced by SPN_BACKEND)"
    kind = torch.device(device).type
    if kind == "cuda" or (kind == "cpu" and forced_triton()):
        return _triton_backend_name(kind)
    if kind != "cpu":
        return "reference"
    return f"cpp (spn._C, OpenMP, {kernel_isa()})" if _load() else "reference (spn._C not importable)"


def kernel_isa() -> str | None:
    """The instruction set the compiled CPU kernels run with: ``"avx2"`` (the CPU has AVX2 and
    FMA; ``SPN_NO_AVX2=1`` turns it off) or ``"sse2"``; ``None`` without the extension."""
    if not _load():
        return None
    return str(torch.ops.spn.kernel_isa())
