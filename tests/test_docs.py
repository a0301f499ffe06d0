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


# --------------------------------------------------------------------------- the pages themselves
# README.md is a front door (short); every relative link of README.md and docs/ resolves (file and
# #anchor); the operator's contract ships in docs/spec/; no page cites a tracker issue.

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_INLINE = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFDEF = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
_HTML = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The Markdown without fenced code, code spans and HTML comments (no links live there)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", _COMMENT.sub("", text)))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub makes for the headings of a Markdown file (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    """The relative links of a Markdown file whose file, or whose #anchor, does not exist."""
    text = _prose(path.read_text(encoding="utf-8"))
    targets = _INLINE.findall(text) + _REFDEF.findall(text) + _HTML.findall(text)
    bad = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
            continue  # http:, https:, mailto: ...: not this repository's files
        name, _, anchor = target.partition("#")
        dest = (path.parent / name).resolve() if name else path
        if not dest.exists():
            bad.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
            bad.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {target} (no such heading)")
    return bad


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_readme_is_at_most_250_lines():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail to docs/ (at most {README_MAX_LINES})"


def test_operator_contract_ships_in_docs_spec():
    spec = ROOT / "docs" / "spec" / "propagation.md"
    assert spec.is_file(), "docs/spec/propagation.md (the operator's contract) is missing"
    assert "# The spatial propagation operator" in spec.read_text(encoding="utf-8")


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_tracker_issue_numbers(page):
    hits = re.findall(r"\bissues? #?\d+", page.read_text(encoding="utf-8"), re.I)
    assert hits == [], f"{page.relative_to(ROOT)} cites tracker issues a reader cannot see: {hits}"


def test_the_link_checker_finds_what_is_broken(tmp_path):
    """The checker itself, on a page written here: a missing file, a missing heading, an image
    and a reference-style link are reported; good links, URLs and links in code are not."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.md").write_text("# Other page\n\n## The `spn demo` results\n")
    (tmp_path / "fig.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Same\n\n## Same\n\n"
        "[ok](sub/other.md) [ok anchor](sub/other.md#the-spn-demo-results) [self](#same-1)\n"
        "![ok image](fig.png) [web](https://example.org/x.md) [mail](mailto:a@b.c)\n"
        "[bad](missing.md) ![bad image](docs/fig.png) [bad anchor](sub/other.md#nope) [bad self](#same-2)\n"
        "`[in code](nowhere.md)`\n\n```\n[in a fence](nowhere.md)\n```\n"
        "<!-- [in a comment](nowhere.md) -->\n\n[ref]: gone/away.md\n"
    )
    found = [line.split(": ", 1)[1] for line in broken_links(page)]
    assert found == ["missing.md (no such file)", "docs/fig.png (no such file)",
                     "sub/other.md#nope (no such heading)", "#same-2 (no such heading)",
                     "gone/away.md (no such file)"]
