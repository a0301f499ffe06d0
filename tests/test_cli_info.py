"""``spn info``: version, active backend and thread count, as text and as JSON, checked against
independent sources (the installed distribution's metadata, the interpreter, the thread count we
set, the ops the extension registered)."""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest
import torch

from spn.cli import main
from spn.ops import _backend


@pytest.fixture
def clean_backend(monkeypatch):
    monkeypatch.delenv("SPN_BACKEND", raising=False)
    monkeypatch.setattr(_backend, "_state", dict(_backend._state))
    return monkeypatch


def info_json(capsys) -> dict:
    assert main(["info", "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


PY = "{}.{}.{}".format(*sys.version_info[:3])


def test_info_json(clean_backend, capsys):
    info = info_json(capsys)
    assert info["spn"] == importlib.metadata.version("spn-propagation")  # what pip installed (pyproject.toml)
    assert info["torch"] == importlib.metadata.version("torch")
    assert info["python"] == PY
    assert info["cuda_available"] is (torch.cuda.device_count() > 0)
    # the compiled backend is reported exactly when the extension registered its ops
    registered = hasattr(torch.ops.spn, "propagate_fwd") and hasattr(torch.ops.spn, "propagate4_fwd")
    assert info["backend_cpu"].startswith("cpp") == registered
    assert (info["extension_error"] is None) == registered
    if not registered:
        assert info["backend_cpu"].startswith("reference")


def test_info_follows_thread_count(clean_backend, capsys):
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert info_json(capsys)["threads"] == n
    finally:
        torch.set_num_threads(before)


def test_info_forced_reference(clean_backend, capsys):
    clean_backend.setenv("SPN_BACKEND", "reference")
    assert info_json(capsys)["backend_cpu"] == "reference (forced by SPN_BACKEND)"


def test_info_broken_extension(clean_backend, capsys):
    clean_backend.setattr(_backend, "_state", {"loaded": False, "error": "ImportError: x", "warned": False})
    info = info_json(capsys)
    assert info["backend_cpu"] == "reference (spn._C not importable)"
    assert info["extension_error"] == "ImportError: x"
    # text form shows the error too
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "ImportError: x" in text and "reference (spn._C not importable)" in text


def test_info_text(clean_backend, capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert main(["info"]) == 0
    finally:
        torch.set_num_threads(before)
    lines = capsys.readouterr().out.splitlines()
    fields = {ln.split()[0]: ln.split(None, 1)[1] for ln in lines if ln.strip()}
    assert fields["spn"] == importlib.metadata.version("spn-propagation")
    assert fields["python"] == PY
    assert fields["threads"] == "1"
    # the text form shows what the JSON form does, the error line only when there is an error
    info = info_json(capsys)
    assert fields["backend_cpu"] == info["backend_cpu"]
    assert ("extension_error" in fields) == (info["extension_error"] is not None)


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"spn {importlib.metadata.version('spn-propagation')}"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "info" in out and "usage" in out.lower()


def test_python_dash_m_spn_info():
    """The module entry point works in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-m", "spn", "info", "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["spn"] == importlib.metadata.version("spn-propagation")
    assert info["threads"] >= 1
    assert info["backend_cpu"].startswith(("cpp", "reference"))
