"""ARCHITECTURE.md's invariants and the size budget, read from the code itself (ast), so they stay true.

Each rule names the layer, what it may not import, and why; a change that breaks one fails here
with the module and the import, before it becomes the shape of the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "advisor"
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 300


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text(), str(path))
    return found


MODULES = _modules()


def _imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _in(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# (layer, imports it may not make, why)
RULES = [
    ("advisor.workload", ("advisor.checks", "advisor.indexes", "advisor.commands", "advisor.report", "advisor.scan"),
     "the workload is read before anything analyses it: it imports no analysis or rendering"),
    ("advisor.checks", ("psycopg", "advisor.db.session", "advisor.db.connect", "advisor.commands", "advisor.report"),
     "checks never open a connection: they read the Context"),
    ("advisor.report", ("psycopg", "advisor.db.session", "advisor.commands"),
     "report/ only renders what commands gathered"),
    ("advisor.db", ("advisor.checks", "advisor.commands", "advisor.report"), "db/ reads the target; it knows no finding"),
    ("advisor.indexes", ("advisor.checks", "advisor.commands", "advisor.report"), "index advice is computed, not rendered"),
    ("advisor.bench", ("advisor.report", "advisor.commands"), "bench/ measures and returns results; report/ renders them"),
]


@pytest.mark.parametrize(("layer", "forbidden", "why"), RULES, ids=[r[0] for r in RULES])
def test_layers_import_only_downwards(layer, forbidden, why):
    broken = [f"{name} imports {imported}" for name, tree in MODULES.items() if _in(name, layer)
              for imported in sorted(_imports(tree)) if any(_in(imported, f) for f in forbidden)]
    assert not broken, f"{why}: " + "; ".join(broken)


# Who may open a connection themselves: the one session, and what exists to measure, route, manage a
# throwaway cluster or replay the demo's application (ARCHITECTURE.md, Invariants).
OPENERS = ("advisor.db.connect", "advisor.db.session", "advisor.db.embedded", "advisor.demo", "advisor.bench",
           "advisor.routing")


def test_only_the_session_and_the_measuring_code_open_connections():
    opening = []
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "psycopg":
                opening.append(name)
            if isinstance(node, ast.ImportFrom) and node.module == "advisor.db.connect" \
                    and any(a.name == "connect" for a in node.names):
                opening.append(name)
    assert sorted({n for n in opening if not any(_in(n, o) for o in OPENERS) or n == "advisor.db.connect"}
                  - {"advisor.db.connect"}) == []
    assert [n for n in opening if _in(n, "advisor.db") and n not in ("advisor.db.connect", "advisor.db.session",
                                                                     "advisor.db.embedded")] == []


def test_no_private_name_is_imported_across_modules():
    crossing = [f"{name} imports {node.module}.{a.name}" for name, tree in MODULES.items() for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("advisor")
                for a in node.names if a.name.startswith("_") and not a.name.startswith("__")
                and not _in(node.module, name.rsplit(".", 1)[0])]  # a package's private modules are its own
    assert not crossing, crossing


def test_functions_and_classes_keep_the_size_budget():
    over = []
    for name, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                lines = node.end_lineno - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if lines > limit:
                    over.append(f"{name}.{node.name}: {lines} lines (at most {limit})")
    assert not over, over
