"""utils.sweep: two tiny alphas through train.ipynb (one trained, one reused), then analyze.ipynb over both."""
import json

import pytest

from conftest import TINY_TRAIN_PARAMS


def test_run_folder_names():
    from utils.sweep import run_folder

    assert [run_folder("r", a).name for a in (0, 0.01, 0.1, 0.2)] == ["alpha-0", "alpha-0.01", "alpha-0.1", "alpha-0.2"]


@pytest.mark.parametrize("alphas, message", [([0.1, 0.1], "distinct"), ([1.5], "in \\[0, 1\\)"), ([], "at least one")])
def test_bad_alphas_are_refused(alphas, message, tmp_path):
    from utils.sweep import sweep

    with pytest.raises(ValueError, match=message):
        sweep(alphas, {}, tmp_path)


def test_tiny_sweep_trains_each_alpha_and_compares_them(tiny_dataset, tiny_run, tmp_path):
    """alpha 0 is trained (1 epoch); alpha 0.2 reuses a copy of the tiny run, as the sweep reuses finished runs."""
    import shutil

    from utils import sweep

    shutil.copytree(tiny_run, tmp_path / "alpha-0.2")
    model_time = (tmp_path / "alpha-0.2" / "model.keras").stat().st_mtime_ns
    params = {**TINY_TRAIN_PARAMS, "epochs": 1, "data_dir": str(tiny_dataset), "output_dir": "ignored"}
    code = sweep.main(["--alphas", "0", "0.2", "--output-root", str(tmp_path),
                       *[x for k, v in params.items() for x in ("-p", k, json.dumps(v))],
                       "-a", "robustness", json.dumps({"jpeg_quality": [100, 30]}), "-a", "robustness_images", "2",
                       "-a", "gradcam_samples", "1"])
    assert code == 0
    trained = json.loads((tmp_path / "alpha-0" / "metrics.json").read_text())
    assert trained["params"]["alpha"] == 0.0 and trained["epochs_run"] == 1
    reused = json.loads((tmp_path / "alpha-0.2" / "metrics.json").read_text())
    assert reused["params"]["alpha"] == 0.2 and reused["epochs_run"] == TINY_TRAIN_PARAMS["epochs"]
    assert (tmp_path / "alpha-0.2" / "model.keras").stat().st_mtime_ns == model_time  # not retrained
    record = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    table = record["alpha_table"]
    assert [row["alpha"] for row in table] == [0.0, 0.2] and [row["baseline"] for row in table] == [True, False]
    assert (tmp_path / "analysis" / "alpha.png").is_file() and (tmp_path / "analysis" / "analyze.html").is_file()
