"""One name, one thing: no two public functions, classes or module constants in utils/ and tools/ share a name."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


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
    for path in sorted([*REPO_ROOT.glob("utils/**/*.py"), *REPO_ROOT.glob("tools/**/*.py")]):
        for name in public_names(path):
            where[name].append(str(path.relative_to(REPO_ROOT)))
    shared = {name: paths for name, paths in where.items() if len(paths) > 1}
    assert not shared, f"public names defined in several modules: {shared}"
    assert len(where) > 300  # every module was read (the command entry points included: notebook_cli, ...)
    assert {"notebook_cli", "sweep_cli", "predict_cli", "binary_metrics", "make_dataset"} <= set(where)
