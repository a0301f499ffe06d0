"""The layers of spn depend one way (docs/architecture.md), checked on the import graph.

Every ``import`` / ``from ... import`` in ``src/spn`` (at any depth: inside functions too) is
resolved to a module of the package and mapped to its layer. A module may import a module of
its own package, or one of a strictly lower layer; an import of a higher layer (upward) or of
another package of the same layer (sideways) fails, and so does a subcommand importing another
subcommand. A new top-level module or package must be given a layer here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "spn"

#: top-level module or package of spn -> layer (low to high). "__root__" is spn/__init__.py
#: (the version and the operator re-exports).
LAYERS = {
    "utils": 0,
    "ops": 1, "image": 1,
    "__root__": 2,
    "nn": 3,
    "models": 4,
    "data": 5,
    "metrics": 6, "viz": 6,
    "inference": 7, "inference_chroma": 7, "inference_mask": 7, "peers": 7,
    "evaluation": 8, "evaluation_chroma": 8, "evaluation_mask": 8,
    "training": 9,
    "experiments": 10, "benchmarking": 10,
    "tasks": 11,
    "cli": 12,
    "__main__": 13,
}
#: compiled modules (no .py file) and the package they belong to: ``spn._C`` is the ops' kernels
EXTENSIONS = {"spn._C": "ops"}
#: modules of spn.cli that the subcommands may share
CLI_SHARED = {"spn.cli", "spn.cli.options"}
#: the public re-exports spn/__init__.py makes lazily (inside its module ``__getattr__``): the
#: one exception to the layer order, so that ``spn.Refiner`` works without ``import spn``
#: importing the layers above it
ROOT_LAZY = {"spn.inference"}


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file below ``root`` (the ``spn`` folder)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = (root.name,) + f.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _resolve(base: str, level: int, is_package: bool) -> str:
    pkg = base.split(".") if is_package else base.split(".")[:-1]
    if level > 1:
        pkg = pkg[: len(pkg) - (level - 1)]
    return ".".join(pkg)


def _lazy_getattr_imports(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside a module-level ``def __getattr__``."""
    out = set()
    for fn in tree.body:
        if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__":
            out |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path], lazy_ok=frozenset()) -> list[tuple[int, str]]:
    """``(line, imported spn module)`` for every import of ``path`` that lands in the package
    (leaving out the imports of ``lazy_ok`` modules made inside a module ``__getattr__``)."""
    top = name.split(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    lazy = _lazy_getattr_imports(tree) if lazy_ok else set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == top or alias.name.startswith(top + "."):
                    found.append((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = _resolve(name, node.level, is_package)
                if node.module:
                    mod = f"{mod}.{node.module}"
            else:
                mod = node.module or ""
            if not (mod == top or mod.startswith(top + ".")):
                continue
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                target = sub if sub in modules or sub in EXTENSIONS else mod
                if id(node) in lazy and target in lazy_ok:
                    continue
                found.append((node.lineno, target))
    return found


def group_of(name: str) -> str:
    if name in EXTENSIONS:
        return EXTENSIONS[name]
    parts = name.split(".")
    return "__root__" if len(parts) == 1 else parts[1]


def violations(root: Path, layers: dict = LAYERS) -> list[str]:
    """Every upward or sideways import below ``root``, and every import between subcommands."""
    modules = module_names(root)
    out = []
    for name, path in modules.items():
        g = group_of(name)
        if g not in layers:
            out.append(f"{path}: module {name} has no layer (add its package to LAYERS)")
            continue
        lazy_ok = ROOT_LAZY if g == "__root__" else frozenset()
        for line, target in imports_of(name, path, modules, lazy_ok):
            t = group_of(target)
            where = f"{path.relative_to(root.parent)}:{line}"
            if t not in layers:
                out.append(f"{where}: {name} imports {target}, which has no layer")
            elif t == g:
                if g == "cli" and name not in CLI_SHARED and target not in CLI_SHARED:
                    out.append(f"{where}: subcommand {name} imports subcommand {target}")
                elif g == "cli" and name not in CLI_SHARED and target == "spn.cli":
                    out.append(f"{where}: subcommand {name} imports the console script {target}")
            elif layers[t] > layers[g]:
                out.append(f"{where}: {name} (layer {g}) imports {target} from the higher layer {t}")
            elif layers[t] == layers[g]:
                out.append(f"{where}: {name} (layer {g}) imports {target} sideways, from {t}")
    return out


def test_no_module_imports_from_a_higher_layer_or_sideways():
    found = violations(SRC)
    assert not found, "layer violations:\n" + "\n".join(found)


def test_only_the_lazy_root_reexport_is_exempt(tmp_path):
    """spn/__init__.py may import spn.inference inside its module __getattr__, nothing else upward."""
    spn = _tree(tmp_path, {
        "__init__.py": "def __getattr__(name):\n    from .inference import Refiner\n    return Refiner\n"
                       "def other():\n    from .training import train\n",
        "inference.py": "",
        "training.py": "",
    })
    found = "\n".join(violations(spn, {"__root__": 2, "inference": 7, "training": 9}))
    assert "imports spn.training from the higher layer training" in found
    assert "spn.inference" not in found
    import spn as real

    from spn.inference import Refiner
    assert real.Refiner is Refiner


def test_every_package_has_a_layer():
    tops = {group_of(n) for n in module_names(SRC)}
    assert tops <= set(LAYERS), sorted(tops - set(LAYERS))
    assert {"ops", "image", "nn", "models", "data", "metrics", "viz", "inference", "evaluation", "training",
            "experiments", "tasks", "cli"} <= tops


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        f = root / "spn" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return root / "spn"


def test_the_check_finds_upward_sideways_and_command_imports(tmp_path):
    spn = _tree(tmp_path, {
        "__init__.py": "",
        "ops/__init__.py": "",
        "ops/kernel.py": "def f():\n    from spn.models import net  # upward, inside a function\n",
        "models/__init__.py": "from ..ops import kernel\n",          # downward: fine
        "models/net.py": "from . import other\nimport spn.ops.kernel\n",
        "models/other.py": "",
        "metrics/__init__.py": "from spn.viz import draw\n",          # sideways
        "viz/__init__.py": "",
        "viz/draw.py": "from .. import metrics\n",                 # sideways, relative
        "cli/__init__.py": "from . import a, b\n",
        "cli/options.py": "",
        "cli/a.py": "from .b import run\nfrom . import options\n",  # command -> command
        "cli/b.py": "from spn.cli import options\ndef run():\n    pass\n",
        "stray.py": "",
    })
    found = "\n".join(violations(spn))
    assert "spn.ops.kernel (layer ops) imports spn.models.net from the higher layer models" in found
    assert "spn.metrics (layer metrics) imports spn.viz.draw sideways" in found
    assert "spn.viz.draw (layer viz) imports spn.metrics sideways" in found
    assert "subcommand spn.cli.a imports subcommand spn.cli.b" in found
    assert "module spn.stray has no layer" in found
    assert "spn.models" not in found.replace("imports spn.models.net", "")  # the models' own imports are fine
    assert "spn.cli.b" not in found.split("subcommand spn.cli.a imports subcommand spn.cli.b")[1]
    assert len(found.splitlines()) == 5


@pytest.mark.parametrize("name, level, is_package, want", [
    ("spn.models.checkpoint", 2, False, "spn"),
    ("spn.models.checkpoint", 1, False, "spn.models"),
    ("spn.cli", 1, True, "spn.cli"),
    ("spn.data", 2, True, "spn"),
])
def test_relative_imports_resolve(name, level, is_package, want):
    assert _resolve(name, level, is_package) == want


# --- no code outside spn/tasks branches on a task's name ---------------------------------------

def _is_task_call(node: ast.AST) -> bool:
    """``option(...)`` / ``field(...)``: a config field's declaration."""
    return isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("option",
                                                                                                       "field")


def task_name_uses(path: Path, names: set[str]) -> list[str]:
    """Where ``path`` decides something by a task's name: a task name (a string constant) compared
    (``==``, ``!=``, ``in``; also inside a tuple, list or set compared), used as a dict key, given
    as ``task=`` or ``choices=``, or as the default of a ``task`` field. A task name used as a key
    of an item (``item["chroma"]``) or a model's declaration (``task = "chroma"``) is not a
    branch."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def literals(node):
        if isinstance(node, ast.Constant) and node.value in names:
            return [node.value]
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return [v for e in node.elts for v in literals(e)]
        return []

    found = []
    for node in ast.walk(tree):
        hits = []
        if isinstance(node, ast.Compare):
            hits = [v for e in [node.left, *node.comparators] for v in literals(e)]
        elif isinstance(node, ast.Dict):  # a table keyed by task names (an item's "chroma" key is data)
            keys = [v for k in node.keys if k is not None for v in literals(k)]
            hits = keys if len(set(keys)) > 1 else []
        elif isinstance(node, ast.Call):
            hits = [v for kw in node.keywords if kw.arg in ("task", "choices") for v in literals(kw.value)]
        elif isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "task" and _is_task_call(node.value):
            hits = [v for a in node.value.args for v in literals(a)]
        found += [f"{path}:{node.lineno}: task name {v!r}" for v in hits]
    return found


def test_no_code_outside_tasks_branches_on_a_task_name():
    from spn.tasks import list_tasks

    names = set(list_tasks())
    assert {"seg", "chroma"} <= names
    found = []
    for f in sorted(SRC.rglob("*.py")):
        if "tasks" not in f.relative_to(SRC).parts[:1]:
            found += task_name_uses(f, names)
    assert not found, "task names outside spn/tasks (ask the task object instead):\n" + "\n".join(found)


def test_the_task_name_check_finds_branches(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        'def f(cfg, item, given):\n'
        '    if cfg.task == "chroma":\n'              # a comparison
        '        pass\n'
        '    if given.get("task") in ("seg", "x"):\n'  # inside a tuple compared
        '        pass\n'
        '    TASKS = {"seg": 1, "chroma": 2}\n'        # a table keyed by task names
        '    g(task="chroma", choices=("seg",))\n'    # task= and choices=\n'
        '    return item["chroma"], {"chroma": 1}\n'   # an item key, an item: fine
        'class M:\n'
        '    task = "chroma"\n'                        # a model's declaration: fine
        'class C:\n'
        '    task: str = option("seg", help="")\n')   # the default of a task field
    found = task_name_uses(f, {"seg", "chroma"})
    lines = sorted(int(x.split(":")[1]) for x in found)
    assert lines == [2, 4, 6, 6, 7, 7, 12], found
