"""The house's import rules (docs/architecture.md, "Layers"): layers import downward only. Every
import of the package is read from its syntax tree (``import``/``from`` anywhere, inside functions
too, and ``importlib.import_module`` / ``__import__`` calls with a literal name)."""
import ast
import os
import shutil

import pytest

from helpers import ROOT

PACKAGE = os.path.join(ROOT, "emr_d2")

# layer (a module or package of emr_d2) -> what it must not import (prefixes of module names)
FORBIDDEN = {
    "emr_d2.data": ("emr_d2.modeling", "emr_d2.engine", "emr_d2.evaluation", "emr_d2.cli",
                    "emr_d2.calibration", "emr_d2.predictor", "emr_d2.batch_predict",
                    "emr_d2.napari_plugin", "emr_d2.visualization"),
    "emr_d2.linking": ("torch", "detectron2", "emr_d2.config", "emr_d2.data", "emr_d2.modeling",
                       "emr_d2.engine", "emr_d2.evaluation", "emr_d2.cli", "emr_d2.calibration",
                       "emr_d2.predictor"),
    "emr_d2.config": ("emr_d2.data", "emr_d2.modeling", "emr_d2.engine", "emr_d2.evaluation",
                      "emr_d2.calibration", "emr_d2.predictor"),
    "emr_d2.evaluation": ("emr_d2.modeling", "emr_d2.engine", "emr_d2.calibration",
                          "emr_d2.predictor"),
    "emr_d2.modeling": ("emr_d2.data", "emr_d2.evaluation", "emr_d2.engine", "emr_d2.calibration",
                        "emr_d2.predictor"),
    "emr_d2": ("tools", "benchmarks", "benchmark_runner", "known_warnings"),
}


def module_name(path: str) -> str:
    relative = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return relative.removesuffix(".__init__")


def imports_of(path: str) -> list[tuple[int, list[str]]]:
    """(line, the absolute module names it imports) of every import statement or call in a module
    of the package (``from a import b`` imports ``a`` and ``a.b``, which may be a module)."""
    name = module_name(path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found.append((node.lineno, [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            found.append((node.lineno, [module, *(f"{module}.{a.name}" for a in node.names)]))
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id == "__import__"))):
            found.append((node.lineno, [node.args[0].value]))
    return found


def violations(root: str = PACKAGE) -> list[str]:
    """'file:line: layer imports module' for every import that breaks a rule of FORBIDDEN."""
    found = []
    for folder, _, files in os.walk(root):
        for file in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, file)
            name = module_name(path)
            rules = [(layer, bad) for layer, bad in FORBIDDEN.items()
                     if name == layer or name.startswith(layer + ".")]
            for line, modules in imports_of(path):
                for layer, bad in rules:
                    hit = next((m for m in modules for b in bad
                                if m == b or m.startswith(b + ".")), None)
                    if hit:
                        found.append(f"{os.path.relpath(path, ROOT)}:{line}: {layer} imports "
                                     f"{hit}")
    return sorted(set(found))


def test_layers_import_downward_only():
    assert violations() == []


@pytest.mark.parametrize("layer_file,statement,expected", [
    ("data/extra.py", "def f():\n    from ..modeling import roi_heads\n",
     "emr_d2.data imports emr_d2.modeling"),
    ("linking/extra.py", "import torch\n", "emr_d2.linking imports torch"),
    ("config_extra.py", "from . import data\n", None),
    ("evaluation/extra.py", "import importlib\nimportlib.import_module('emr_d2.engine')\n",
     "emr_d2.evaluation imports emr_d2.engine"),
    ("modeling/extra.py", "from emr_d2.data.window import SliceWindow\n",
     "emr_d2.modeling imports emr_d2.data"),
    ("predictor_extra.py", "import benchmark_runner\n", "emr_d2 imports benchmark_runner"),
])
def test_a_forbidden_import_is_named_by_file_and_line(tmp_path, monkeypatch, layer_file,
                                                      statement, expected):
    """The rule test fails on a forbidden import, naming the file and line (a copy of the package
    with one module added)."""
    copy = tmp_path / "emr_d2"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / layer_file).write_text(statement)
    monkeypatch.setattr("test_import_rules.ROOT", str(tmp_path))
    found = violations(str(copy))
    if expected is None:  # emr_d2.config_extra is not emr_d2.config: no rule applies
        assert found == []
        return
    assert len(found) == 1 and found[0].startswith(f"emr_d2/{layer_file}:")
    assert expected in found[0]
