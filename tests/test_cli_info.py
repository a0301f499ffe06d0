"""``spn info``: version, active backend and thread count, as text and as JSON."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import spn
from spn.cli import main
from spn.ops import _backend, active_backend


@pytest.fixture
def clean_backend(monkeypatch):
    monkeypatch.delenv("SPN_BACKEND", raising=False)
    monkeypatch.setattr(_backend, "_state", dict(_backend._state))
    return monkeypatch


def info_json(capsys) -> dict:
    assert main(["info", "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out)


def test_info_json(clean_backend, capsys):
    info = info_json(capsys)
    assert info["spn"] == spn.__version__
    assert info["torch"] == torch.__version__
    assert info["backend_cpu"] == active_backend("cpu")
    assert info["threads"] == torch.get_num_threads() and info["threads"] >= 1
    assert isinstance(info["cuda_available"], bool)
    if _backend.extension_available():
        assert info["backend_cpu"].startswith("cpp")
        assert info["extension_error"] is None


def test_info_follows_thread_count(clean_backend, capsys):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert info_json(capsys)["threads"] == 1
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
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    fields = {ln.split()[0]: ln.split(None, 1)[1] for ln in lines if ln.strip()}
    assert fields["spn"] == spn.__version__
    assert fields["threads"] == str(torch.get_num_threads())
    assert fields["backend_cpu"] == active_backend()
    if _backend.extension_available():
        assert "extension_error" not in fields  # only shown when there is one


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"spn {spn.__version__}"


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
    assert info["spn"] == spn.__version__
    assert info["threads"] >= 1
    assert "backend_cpu" in info
