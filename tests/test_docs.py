"""The ``Example:`` sections of the docstrings run and print what they say (doctest), and
docs/architecture.md names every layer that tests/test_layers.py checks."""
from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

from test_layers import LAYERS, SRC, module_names

# the operator layers (ops, nn) and the operator benchmark are documented by their own issues
SKIP = ("spn.ops", "spn.nn", "spn.benchmarking", "spn.__main__", "spn._C")
MODULES = sorted(n for n in module_names(SRC) if not n.startswith(SKIP))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert res.failed == 0, f"{res.failed} of {res.attempted} doctest examples of {name} failed"


def test_public_modules_have_examples():
    """The modules a user imports first carry a runnable example."""
    for name in ("spn.data", "spn.models", "spn.metrics", "spn.viz", "spn.inference", "spn.evaluation",
                 "spn.training", "spn.utils.timer", "spn.utils.config", "spn.cli.options"):
        mod = importlib.import_module(name)
        assert doctest.DocTestFinder().find(mod, name)[0].examples, f"{name} has no example in its docstring"


def test_architecture_diagram_matches_the_checked_layers():
    """Every layer of tests/test_layers.py is in the diagram of docs/architecture.md, in its order."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    diagram = text.split("```")[1]
    names = {"__root__": "spn/__init__.py"}
    position = {}
    for group in LAYERS:
        m = re.search(rf"^(?:\s*\d+)?\s+{re.escape(names.get(group, group))}\s", diagram, re.M)
        assert m, f"docs/architecture.md: the diagram lacks the layer {group}"
        position[group] = m.start()
    for a in LAYERS:
        for b in LAYERS:
            if LAYERS[a] > LAYERS[b]:
                assert position[a] < position[b], f"the diagram puts {a} below {b}"
            if LAYERS[a] == LAYERS[b] and a != b:  # one layer: listed together, no layer between
                lo, hi = sorted((position[a], position[b]))
                assert not re.search(r"^\s*\d+\s", diagram[lo + 1:hi].split("\n", 1)[-1], re.M), (a, b)
