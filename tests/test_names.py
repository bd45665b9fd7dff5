"""One name, one thing: no two public functions, classes or module constants in utils/ and tools/ share a name."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The `python -m` entry point every command module has: one name by convention, never imported by another module.
ENTRY_POINT = "main"


def public_names(path: Path) -> list[str]:
    """The public functions, classes and module-level constants a module defines."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [target.id for target in node.targets if isinstance(target, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [name for name in names if not name.startswith("_")]


def test_no_two_modules_define_the_same_public_name():
    """A reader who meets a name knows which module's thing it is."""
    where = defaultdict(list)
    for path in sorted([*REPO_ROOT.glob("utils/*.py"), *REPO_ROOT.glob("tools/*.py")]):
        for name in public_names(path):
            where[name].append(str(path.relative_to(REPO_ROOT)))
    shared = {name: paths for name, paths in where.items() if len(paths) > 1 and name != ENTRY_POINT}
    assert not shared, f"public names defined in several modules: {shared}"
    assert len(where[ENTRY_POINT]) >= 2  # the exception is in use, so it is not a stale one
