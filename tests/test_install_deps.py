"""The library and the demo's path run with only what ``make install`` installs.

CI's environment also holds the tests' packages (``make test-deps``: OpenCV, Triton, scikit-image,
which brings scipy, ...), so an import of one of them in library code passes every other test and
fails on a user's machine after ``make install`` (it happened: ``restore_void_band`` once imported
scipy, and ``make demo`` failed on a fresh clone while CI was green).

Here a child process blocks every installed package that the ``install`` recipe of the Makefile
does not bring (its ``pip install`` commands read from the Makefile, their dependencies followed
through the installed packages' metadata, except under ``--no-deps``), then imports every module
of ``spn``, loads every mask set, refines a photo with ``spn refine`` and runs the mask demo on
one set.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
requirements = pytest.importorskip("packaging.requirements")
canon = pytest.importorskip("packaging.utils").canonicalize_name

SHELL_OPS = {";", "&&", "||", "&", "|", ">", "2>&1", "}", "{", ")", "("}


def install_commands(makefile: str) -> list[tuple[list[str], bool]]:
    """``(requirements, no_deps)`` of every ``$(PIP) install`` of the Makefile's ``$(STAMP)`` recipe
    (``-e .``: the project itself, as ``"."``)."""
    m = re.search(r"^\$\(STAMP\):.*?\n((?:\t.*\n)+)", makefile, re.M)
    assert m, "the Makefile has no $(STAMP) recipe"
    recipe = m.group(1).replace("\\\n", " ")
    out = []
    for cmd in re.findall(r"\$\(PIP\) install (.*?)(?=\s(?:;|&&|\|\||&|>|\|)\s|\s>|$)", recipe, re.M):
        toks = cmd.split()
        reqs = [t for t in toks if not t.startswith("-") and t not in SHELL_OPS]
        out.append((reqs, "--no-deps" in toks))
    return out


def test_install_commands_are_read_from_a_recipe():
    mk = ("$(STAMP): a\n\t$(PIP) install -q foo bar==1.0 > log 2>&1 & x=$$!; \\\n"
          "\t  ( $(PIP) install -q baz && $(PIP) install -q --no-deps qux==2 ) > l2 & y=$$!; \\\n"
          "\t  $(PIP) install -q --no-build-isolation -e . || exit 1\n\ttouch x\n")
    assert install_commands(mk) == [(["foo", "bar==1.0"], False), (["baz"], False), (["qux==2"], True),
                                    (["."], False)]


def _project_requirements() -> list[str]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def site_distributions() -> dict:
    """Canonical name -> distribution of the packages installed in the environment's site
    directories (not the copies that a package vendors and puts on ``sys.path`` when it is
    imported, as setuptools does with its ``_vendor`` folder)."""
    import site

    dirs = [d for d in site.getsitepackages() + [site.getusersitepackages()] if Path(d).is_dir()]
    return {canon(d.metadata["Name"]): d for d in metadata.distributions(path=dirs) if d.metadata["Name"]}


def top_level_modules(dist) -> set[str]:
    """The importable top-level names of a distribution (its ``top_level.txt``, else its files)."""
    text = dist.read_text("top_level.txt")
    if text:
        return set(text.split())
    names = set()
    for f in dist.files or []:
        first = f.parts[0]
        if first.endswith((".dist-info", ".egg-info", ".data")) or first in ("..", "__pycache__"):
            continue
        names.add(first.split(".")[0])
    return names


def installed_closure(installed: dict | None = None) -> set[str]:
    """Canonical names of the distributions that the install recipe brings, as installed here."""
    installed = site_distributions() if installed is None else installed
    todo: list[tuple[str, bool]] = []
    for reqs, no_deps in install_commands((ROOT / "Makefile").read_text()):
        for r in reqs:
            names = _project_requirements() if r == "." else [r]
            todo += [(requirements.Requirement(n).name, no_deps) for n in names]
    seen: set[str] = set()
    while todo:
        name, no_deps = todo.pop()
        key = canon(name)
        if key in seen:
            continue
        seen.add(key)
        if no_deps:
            continue
        dist = installed.get(key)
        if dist is None:
            continue  # not installed here (pydensecrf2's build may fail): nothing of it to allow
        for spec in dist.requires or []:
            req = requirements.Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append((req.name, False))
    return seen


def blocked_modules() -> list[str]:
    """Top-level modules of installed distributions outside :func:`installed_closure` (a name that
    an allowed distribution also provides stays allowed)."""
    installed = site_distributions()
    allowed = installed_closure(installed)
    blocked, kept = set(), set()
    for key, dist in installed.items():
        (kept if key in allowed else blocked).update(top_level_modules(dist))
    return sorted(m for m in blocked - kept if m != "spn" and not m.startswith("_") and m.isidentifier())


CHILD = r"""
import importlib, importlib.abc, json, os, pkgutil, sys, tempfile, warnings
BLOCKED = set(json.loads(os.environ["SPN_BLOCKED"]))
hits = []

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            hits.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (not installed by make install)", name=name)
        return None

sys.meta_path.insert(0, Block())
import numpy as np
import spn
failed = {}
for m in pkgutil.walk_packages(spn.__path__, "spn."):
    if m.name == "spn.__main__":  # the entry point: importing it runs the CLI
        continue
    try:
        importlib.import_module(m.name)
    except Exception as exc:
        failed[m.name] = f"{type(exc).__name__}: {exc}"
from spn.data.masksets import PRIMARY, build_maskset
sets = {name: len(build_maskset(name)) for name in PRIMARY}
from PIL import Image
from spn.cli import main
tmp = tempfile.mkdtemp()
img = np.zeros((48, 64, 3), np.uint8); img[12:36, 16:48] = 200
mask = np.zeros((48, 64), np.uint8); mask[14:34, 18:46] = 255
Image.fromarray(img).save(f"{tmp}/photo.png"); Image.fromarray(mask).save(f"{tmp}/mask.png")
rc = main(["refine", f"{tmp}/photo.png", "--mask", f"{tmp}/mask.png", "--out", f"{tmp}/out.png"])
refined = np.asarray(Image.open(f"{tmp}/out.png")).tolist() if rc == 0 else None
from spn.experiments.mask_demo import MaskDemoConfig, run_mask_demo
res = run_mask_demo(MaskDemoConfig(out=f"{tmp}/demo", sets=["imgaug-quokka"], figure_rows=1, threads=1))
print(json.dumps({"failed": failed, "sets": sets, "refine_rc": rc, "refined_values": sorted(set(sum(refined, [])))
                  if refined else None, "demo_methods": list(res["sets"]["imgaug-quokka"]["perturbed"]["scores"]),
                  "blocked_hits": sorted(set(hits))}))
"""


def test_blocked_list_holds_the_test_packages_and_not_the_library_ones():
    # as after an earlier test imported setuptools (torch's cpp_extension does): its vendored
    # packages on sys.path are not installed distributions, and are not blocked
    pytest.importorskip("setuptools")
    blocked = set(blocked_modules())
    assert "jaraco" not in blocked
    # what the tests install and the library must not need
    for mod in ("pytest", "hypothesis"):
        assert mod in blocked
    # what `make install` brings
    for mod in ("torch", "numpy", "PIL", "safetensors", "tqdm", "imgviz"):
        assert mod not in blocked


@pytest.mark.slow
def test_library_and_demo_path_need_only_what_make_install_installs(tmp_path):
    pytest.importorskip("setuptools")  # imported by earlier tests in a whole run (see above)
    blocked = blocked_modules()
    env = {**os.environ, "SPN_BLOCKED": json.dumps(blocked), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # the Triton kernels need Triton (the GPU backend, installed with it); `spn.ops` picks another
    # backend without them, and every other module imports
    optional = {m: why for m, why in out["failed"].items()
                if m.startswith("spn.ops.triton.") and "No module named 'triton'" in why}
    assert {m: why for m, why in out["failed"].items() if m not in optional} == {}
    from spn.data.masksets import PRIMARY  # the sets of the packages make install installs

    assert set(out["sets"]) == set(PRIMARY) and all(n > 0 for n in out["sets"].values())
    assert out["refine_rc"] == 0 and out["refined_values"] == [0, 255]
    assert out["demo_methods"][:2] == ["coarse", "spn"]
