"""utils.runtime's record writers: JSON-ready conversion and atomic writes (the papermill runs have their own tests)."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tools.notebook import parse_value
from utils.runtime import to_jsonable, write_atomic, write_json


def test_to_jsonable_converts_numpy_paths_and_missing_values():
    record = {"a": np.float32(0.5), "b": np.int64(3), "c": np.array([[1, 2]]), "d": Path("x/y"), 4: (np.nan, 1.0),
              "e": float("inf"), "f": pd.NA, "g": [np.bool_(True)], "h": "text"}
    assert to_jsonable(record) == {"a": 0.5, "b": 3, "c": [[1, 2]], "d": "x/y", "4": [None, 1.0], "e": None,
                                   "f": None, "g": [True], "h": "text"}


def test_write_json_is_strict_json(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"auc": np.float64("nan"), "n": np.int32(2)})
    text = path.read_text()
    assert "NaN" not in text and text.endswith("\n")
    assert json.loads(text) == {"auc": None, "n": 2}


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    path = write_atomic(tmp_path / "metrics.json", "old")

    class Boom:  # json.dumps falls back to str() for it, which fails: the record cannot be serialised
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_json(path, {"x": Boom()})
    with pytest.raises(TypeError):
        write_atomic(path, 3)  # not str or bytes: fails inside the temporary file's write
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind


@pytest.mark.parametrize("text, value", [("0.2", 0.2), ("None", None), ("[1, 2]", [1, 2]), ("true", True),
                                         ("results/x", "results/x")])
def test_parse_value_reads_command_line_values(text, value):
    assert parse_value(text) == value


def test_quiet_logs_silences_tensorflow_start_up_in_a_clean_environment():
    """A notebook run by plain papermill gets no TensorFlow C++ lines: quiet_logs works without any env set up."""
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT, TF_LOG_NOISE

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "ABSL", "GRPC"))}
    script = ("from utils import runtime\nruntime.quiet_logs()\nimport keras, numpy as np\n"
              "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])\n"
              "model.compile('adam', 'mse')\nmodel.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)\n"
              "import warnings\nwarnings.warn('a warning the user should see')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    assert not [marker for marker in TF_LOG_NOISE if marker in done.stderr], done.stderr
    assert "a warning the user should see" in done.stderr  # Python warnings still reach the user
