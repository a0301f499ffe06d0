"""Checks of the whole test session.

- The compiled kernels must be there. Without ``spn._C`` the kernel tests skip and the suite
  would pass on the pure-PyTorch reference alone, so the session stops at once instead.
  ``SPN_ALLOW_REFERENCE_ONLY=1`` allows such a reference-only run on purpose.
- Tests marked ``triton_interp`` need ``SPN_BACKEND=triton TRITON_INTERPRET=1`` set before
  triton is imported, so they run in a pytest process of their own (``make test``'s second job:
  ``SPN_BACKEND=triton TRITON_INTERPRET=1 python -m pytest -m triton_interp tests/test_triton_interp.py``).
  A run whose ``-m`` does not name that marker leaves them out.
"""
from __future__ import annotations

import os

import pytest

ALLOW_REFERENCE_ONLY = "SPN_ALLOW_REFERENCE_ONLY"


def pytest_sessionstart(session):
    if os.environ.get(ALLOW_REFERENCE_ONLY, "").strip() == "1":
        return
    from spn.ops import _backend

    if not _backend.extension_available():
        pytest.exit(f"spn: the compiled kernels spn._C are missing ({_backend.extension_error()}), so the kernel "
                    f"tests would be skipped; build them with `make install`, or set {ALLOW_REFERENCE_ONLY}=1 to "
                    f"test the reference alone on purpose", returncode=1)


def pytest_collection_modifyitems(config, items):
    if "triton_interp" in (config.option.markexpr or ""):
        return  # the run chose them (or chose to leave them out)
    keep, leave = [], []
    for item in items:
        (leave if item.get_closest_marker("triton_interp") else keep).append(item)
    if leave:
        config.hook.pytest_deselected(items=leave)
        items[:] = keep
