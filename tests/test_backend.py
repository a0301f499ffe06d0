"""Backend selection: ``SPN_BACKEND=reference`` forces the pure-PyTorch reference, and a
missing/broken compiled extension falls back on it with one RuntimeWarning."""
from __future__ import annotations

import sys
import warnings

import pytest
import torch

import spn
import spn.ops.propagation as prop
from spn.ops import _backend, active_backend, extension_available, normalize_gates, propagate, propagate4
from spn.ops import propagate4_ref, propagate_ref

needs_ext = pytest.mark.skipif(not extension_available(), reason="compiled extension spn._C not importable")

F64 = dict(atol=1e-10, rtol=1e-10)


@pytest.fixture
def restore_state(monkeypatch):
    """Snapshot the backend state; monkeypatch restores the original dict object afterwards."""
    monkeypatch.delenv("SPN_BACKEND", raising=False)
    monkeypatch.setattr(_backend, "_state", dict(_backend._state))
    yield monkeypatch


@pytest.fixture
def broken_extension(restore_state):
    restore_state.setattr(_backend, "_state", {"loaded": False, "error": "ImportError: x", "warned": False})
    return restore_state


@pytest.fixture
def counting_reference(monkeypatch):
    """Count calls of the reference from the public API."""
    calls = {"propagate_ref": 0, "propagate4_ref": 0}

    def wrap(name, fn):
        def inner(*a, **k):
            calls[name] += 1
            return fn(*a, **k)

        return inner

    monkeypatch.setattr(prop, "propagate_ref", wrap("propagate_ref", propagate_ref))
    monkeypatch.setattr(prop, "propagate4_ref", wrap("propagate4_ref", propagate4_ref))
    return calls


def case(seed=0, four=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64)
    shape = (2, 4, 3, 3, 5, 4) if four else (2, 3, 3, 5, 4)
    g = normalize_gates(torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1)
    return x, g


def run_both(x, g, four):
    """Output and gradients of the public API."""
    x = x.clone().requires_grad_(True)
    g = g.clone().requires_grad_(True)
    out = propagate4(x, g, "max") if four else propagate(x, g, "right_to_left")
    gx, gg = torch.autograd.grad(out, (x, g), torch.ones_like(out))
    return out.detach(), gx, gg


# --------------------------------------------------------------------------- SPN_BACKEND


@needs_ext
@pytest.mark.parametrize("value", ["reference", "ref", "python", " Reference "])
@pytest.mark.parametrize("four", [False, True], ids=["propagate", "propagate4"])
def test_forced_reference_runs_reference_with_same_numbers(restore_state, counting_reference, value, four):
    x, g = case(1, four)
    kernel = run_both(x, g, four)
    assert counting_reference == {"propagate_ref": 0, "propagate4_ref": 0}, "kernel path expected"
    restore_state.setenv("SPN_BACKEND", value)
    assert active_backend() == "reference (forced by SPN_BACKEND)"
    forced = run_both(x, g, four)
    assert counting_reference["propagate4_ref" if four else "propagate_ref"] == 1
    for a, b in zip(kernel, forced):
        torch.testing.assert_close(a, b, **F64)


@needs_ext
@pytest.mark.parametrize("value", ["", "auto", " Auto "])
def test_auto_keeps_the_kernel(restore_state, counting_reference, value):
    restore_state.setenv("SPN_BACKEND", value)
    x, g = case(2)
    propagate(x, g, 0)
    assert counting_reference["propagate_ref"] == 0
    assert active_backend() in ("cpp (spn._C, OpenMP, avx2)", "cpp (spn._C, OpenMP, sse2)")


@pytest.mark.parametrize("value", ["cpp", "kernel", "referense", "cuda", "1"])
@pytest.mark.parametrize("four", [False, True], ids=["propagate", "propagate4"])
def test_unknown_backend_values_are_an_error_that_lists_the_valid_ones(restore_state, counting_reference, value,
                                                                       four):
    restore_state.setenv("SPN_BACKEND", value)
    x, g = case(2, four)
    with pytest.raises(ValueError) as info:
        propagate4(x, g) if four else propagate(x, g, 0)
    msg = str(info.value)
    assert "\n" not in msg and f"SPN_BACKEND={value!r}" in msg
    for valid in ("auto", "reference", "triton"):
        assert valid in msg, msg
    assert counting_reference == {"propagate_ref": 0, "propagate4_ref": 0}, "nothing ran"
    with pytest.raises(ValueError, match="SPN_BACKEND"):
        active_backend()


def test_forced_reference_emits_no_warning(restore_state):
    restore_state.setenv("SPN_BACKEND", "reference")
    restore_state.setattr(_backend, "_state", {"loaded": False, "error": "ImportError: x", "warned": False})
    x, g = case(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        propagate(x, g, 0)


def test_non_cpu_tensors_use_the_reference():
    assert active_backend("meta") == "reference"
    assert _backend.use_kernel(torch.empty(1, device="meta")) is False


# --------------------------------------------------------------------------- broken extension


@pytest.mark.parametrize("four", [False, True], ids=["propagate", "propagate4"])
def test_broken_extension_warns_once_and_falls_back(broken_extension, counting_reference, four):
    x, g = case(4, four)
    with pytest.warns(RuntimeWarning, match=r"spn\._C could not be imported \(ImportError: x\)") as rec:
        first = run_both(x, g, four)
    runtime = [w for w in rec if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1
    msg = str(runtime[0].message)
    assert "reference" in msg and "make install" in msg, "the warning must say how to fix it"
    assert runtime[0].filename == __file__, "the warning must point at the caller's line"
    assert _backend._state["warned"] is True

    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        second = run_both(x, g, four)
        propagate(x, g[:, 0] if four else g, 1)
        propagate4(x, g if four else torch.stack([g] * 4, 1))
    assert not [w for w in again if issubclass(w.category, RuntimeWarning)], "warn only once"

    name = "propagate4_ref" if four else "propagate_ref"
    assert counting_reference[name] >= 2
    want = (propagate4_ref(x, g, "max") if four else propagate_ref(x, g, "right_to_left"))
    torch.testing.assert_close(first[0], want, **F64)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_broken_extension_reports(broken_extension):
    assert extension_available() is False
    assert _backend.extension_error() == "ImportError: x"
    assert active_backend() == "reference (spn._C not importable)"


def test_failed_import_is_caught(restore_state):
    """A real failing ``from spn import _C`` is caught by the guard, not raised."""
    restore_state.setattr(_backend, "_state", {"loaded": None, "error": None, "warned": False})
    restore_state.delattr(spn, "_C", raising=False)
    restore_state.setitem(sys.modules, "spn._C", None)  # makes the import raise ImportError
    assert extension_available() is False
    assert _backend.extension_error().startswith(("ImportError", "ModuleNotFoundError"))
    x, g = case(5)
    with pytest.warns(RuntimeWarning, match=r"falling back"):
        out = propagate(x, g, 2)
    torch.testing.assert_close(out, propagate_ref(x, g, 2), **F64)


@needs_ext
def test_state_restored_after_fixtures():
    """Runs after the tests above (file order): the real extension is back in use."""
    assert _backend._state["loaded"] is True
    assert extension_available()
    assert active_backend().startswith("cpp")


# --------------------------------------------------------------------------- the test session


@pytest.mark.parametrize("allow", [None, "1"], ids=["default", "reference_only_on_purpose"])
def test_a_session_without_the_compiled_kernels_fails_unless_allowed(tmp_path, allow):
    """tests/conftest.py stops the session when spn._C is missing, so the kernel tests cannot all
    skip and leave the reference passing alone; SPN_ALLOW_REFERENCE_ONLY=1 allows it on purpose."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "no_spn_c.py").write_text("import sys\nsys.modules['spn._C'] = None  # import spn._C fails\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SPN_BACKEND", "SPN_ALLOW_REFERENCE_ONLY")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(root / "src"), env.get("PYTHONPATH", "")])
    if allow:
        env["SPN_ALLOW_REFERENCE_ONLY"] = allow
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no_spn_c", "-p", "no:cacheprovider",
                           "tests/test_utils.py", "--collect-only"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    if allow:
        assert proc.returncode == 0, out[-3000:]
    else:
        assert proc.returncode != 0, out[-3000:]
        assert "spn._C are missing" in out and "SPN_ALLOW_REFERENCE_ONLY=1" in out, out[-3000:]
