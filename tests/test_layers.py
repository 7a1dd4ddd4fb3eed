"""Imports run one way: every module imports only from the modules below it, function-local and
TYPE_CHECKING imports included (a deferred import is a dependency all the same), and Hydra's
plugins sit on top of the core, never under it. The diagram in docs/internals.md ("How it works") is this
layering, top layer first."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import REPO

SRC = REPO / "src"
# bottom to top; within a layer, a module may import only those listed before it
LAYERS = [
    ("vocabulary", ["moonprop.config", "moonprop.jobs", "moonprop.hydra_internals"]),
    ("ML core", ["moonprop.schedule", "moonprop.model", "moonprop.data", "moonprop.module", "moonprop.batched"]),
    ("record", ["moonprop.stats", "moonprop.plot", "moonprop.mlflow_internals", "moonprop.logged_model",
                "moonprop.tracking", "moonprop.report", "moonprop.summary", "moonprop.recorder"]),
    ("training", ["moonprop.loggers", "moonprop.callbacks", "moonprop.train", "moonprop.evaluation"]),
    ("orchestration", ["moonprop.sweep", "moonprop.environment", "moonprop.preflight"]),
    ("CLI", ["moonprop.cli", "moonprop.api", "moonprop.__main__", "moonprop"]),
    ("plugins", ["hydra_plugins.moonprop_batched.launcher", "hydra_plugins.moonprop_search.search",
                 "hydra_plugins.moonprop_search._trial", "hydra_plugins.moonprop_race.race"]),
]
ORDER = [module for _, modules in LAYERS for module in modules]


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(SRC).with_suffix("").parts)
    return name.removesuffix(".__init__")


def project_imports(path: Path) -> set[str]:
    """Every module of this project that `path` imports, wherever in the file the import is."""
    found = set()
    package = module_name(path).rpartition(".")[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .search import y
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], *filter(None, [base])])
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from moonprop import plot`
            if base != "moonprop":  # the package itself, whose __init__ every import of a module runs
                found.add(base)
    return {name for name in found if name in ORDER}


def sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.stem != "__init__" or p.parent.name == "moonprop"
                  if "conf" not in p.parts and p.stat().st_size > 0)


def test_every_module_has_its_place_in_the_layers():
    assert sorted(module_name(p) for p in sources()) == sorted(ORDER)


def test_every_import_runs_down():
    upward = []
    for path in sources():
        name = module_name(path)
        for imported in project_imports(path):
            if imported != name and ORDER.index(imported) > ORDER.index(name):
                upward.append(f"{name} imports {imported}")
    assert upward == []


def test_the_docs_diagram_is_the_layering():
    page = (REPO / "docs" / "internals.md").read_text()
    diagram = page.split("# How it works", 1)[1].split("```", 2)[1]
    # one line a layer, top layer first: "<layer>  module.py, module.py, ..."
    shown = [(match.group(1), re.findall(r"[\w/]+\.py", match.group(2)))
             for line in diagram.splitlines() if (match := re.match(r"([A-Za-z][A-Za-z ]*?)\s{2,}(\S.*)", line))]
    expected = [(layer, [m.replace(".", "/").removeprefix("moonprop/") + ".py" for m in modules if m != "moonprop"])
                for layer, modules in reversed(LAYERS)]
    assert shown == expected
