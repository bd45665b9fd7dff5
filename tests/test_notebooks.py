"""The notebooks as committed: one commented `parameters` cell each, kept in step with utils.parameters.PARAMETERS (the
one definition of the train notebook's parameters) and with the presets in params/; short, stripped, python3."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from tools.kaggle.build import notebook_defaults
from utils import parameters

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
# Which notebook each preset is for.
PRESETS = {"cpu-demo.yaml": "train", "kaggle-t4x2.yaml": "train", "kaggle-tpu.yaml": "train", "analyze-demo.yaml": "analyze",
           "analyze-kaggle.yaml": "analyze", "explore-demo.yaml": "explore"}
MAX_CELLS = 25


def parameters_cell(notebook: Path) -> str:
    """The source of the notebook's one cell tagged `parameters`."""
    cells = [c for c in json.loads(notebook.read_text())["cells"]
             if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{notebook.name}: {len(cells)} cells tagged 'parameters', expected one"
    return "".join(cells[0]["source"])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_parameter_is_commented_on_its_line(notebook):
    """The parameters cell is the parameters' reference: one assignment a line, each with a comment saying its meaning."""
    source = parameters_cell(notebook)
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and node.lineno == node.end_lineno, \
            f"{notebook.name}: line {node.lineno} of the parameters cell is not a one-line assignment"
        line = source.splitlines()[node.lineno - 1]
        assert "  # " in line and len(line.split("  # ", 1)[1].strip()) > 10, \
            f"{notebook.name}: parameter {node.targets[0].id} has no comment saying what it means"


def test_train_parameters_cell_matches_the_definition():
    """Same names in the same order and the same defaults as parameters.PARAMETERS, and the defaults pass its checks."""
    defaults = notebook_defaults(REPO_ROOT / "notebooks" / "train.ipynb")
    assert list(defaults) == list(parameters.PARAMETERS), "train.ipynb's parameters differ from parameters.PARAMETERS"
    for name, (default, *_rest) in parameters.PARAMETERS.items():
        assert defaults[name] == default, f"{name}: the notebook says {defaults[name]!r}, PARAMETERS {default!r}"
    assert parameters.validate_params(defaults) == defaults
    assert parameters.PARAMETER_DEFAULTS == {name: defaults[name] for name in parameters.ADDED_LATER}


@pytest.mark.parametrize("preset, notebook", sorted(PRESETS.items()))
def test_presets_name_only_the_notebooks_parameters(preset, notebook):
    """A preset's every key is a parameter of its notebook (a typo would silently run the default)."""
    values = yaml.safe_load((REPO_ROOT / "params" / preset).read_text())
    declared = notebook_defaults(REPO_ROOT / "notebooks" / f"{notebook}.ipynb")
    assert set(values) <= set(declared), f"{preset}: {sorted(set(values) - set(declared))} not in {notebook}.ipynb"
    if notebook == "train":
        parameters.validate_params({**declared, **values, "data_dir": None})


def test_every_preset_is_known():
    """Each file in params/ is checked above, but the study plans (study-*.yaml: tests/test_study_plan.py)."""
    presets = [path.name for path in (REPO_ROOT / "params").glob("*.yaml") if not path.name.startswith("study-")]
    assert sorted(presets) == sorted(PRESETS)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_short_stripped_and_python3(notebook):
    """Under ~25 cells, committed without outputs, kernelspec python3, and its last cell renders its report on Kaggle."""
    nb = json.loads(notebook.read_text())
    assert len(nb["cells"]) <= MAX_CELLS, f"{notebook.name}: {len(nb['cells'])} cells"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert f'render_in_kernel(out, "{notebook.stem}")' in "".join(code[-1]["source"])
