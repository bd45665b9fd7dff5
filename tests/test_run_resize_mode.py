"""Prediction and analysis bring images to size the way the run did: resize_mode from its record, "resize" if absent."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 32


def _checkerboard(path: Path, side: int = 64) -> Path:
    """A 1-pixel checkerboard PNG: a crop keeps it, a resize to half its size averages it to flat grey."""
    board = ((np.indices((side, side)).sum(axis=0) % 2) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.repeat(board[..., None], 3, axis=2)).save(path)
    return path


def _pattern_detector(path: Path) -> Path:
    """A saved model whose P(fake) is ~1 on pixel-level alternation and exactly 0.5 on a flat image."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    edges = keras.layers.Conv2D(1, (1, 2), use_bias=False, name="difference")(inputs)  # left minus right pixel
    peak = keras.layers.GlobalMaxPooling2D()(edges)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(peak))
    kernel = np.zeros((1, 2, 3, 1), np.float32)
    kernel[0, 0], kernel[0, 1] = 1 / 3, -1 / 3
    model.get_layer("difference").set_weights([kernel])
    model.get_layer("head").set_weights([np.array([[-0.05, 0.05]], np.float32), np.zeros(2, np.float32)])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def boards(tmp_path_factory) -> Path:
    """A class-folder dataset of 64-px checkerboards (4 real, 4 fake)."""
    root = tmp_path_factory.mktemp("boards")
    for label in ("real", "fake"):
        for i in range(4):
            _checkerboard(root / label / f"{i}.png")
    return root


@pytest.mark.parametrize("record, expected", [
    ({"params.json": {"resize_mode": "crop"}}, "crop"),
    ({"metrics.json": {"params": {"resize_mode": "crop"}}}, "crop"),  # params.json lost: the run record's copy
    ({"params.json": {"alpha": 0.2}}, "resize"),  # a run recorded before resize_mode existed
    ({}, "resize"),  # a model outside any run folder
])
def test_recorded_resize_mode(tmp_path, record, expected):
    from utils.predict import recorded_resize_mode

    for name, content in record.items():
        (tmp_path / name).write_text(json.dumps(content))
    assert recorded_resize_mode(tmp_path / "model.keras") == expected


def test_predict_follows_the_runs_resize_mode(boards, tmp_path, capsys):
    from utils import predict

    p_fake = {}
    for mode in ("crop", "resize"):
        model = _pattern_detector(tmp_path / mode / "model.keras")
        (model.parent / "params.json").write_text(json.dumps({"image_size": SIZE, "resize_mode": mode}))
        assert predict.predict_cli(["--model", str(model), str(boards / "real"), "--csv", str(tmp_path / f"{mode}.csv")]) == 0
        assert f"images brought to size by {mode!r}" in capsys.readouterr().err
        rows = list(csv.DictReader(io.StringIO((tmp_path / f"{mode}.csv").read_text())))
        p_fake[mode] = [float(r["p_fake"]) for r in rows]
    assert len(p_fake["crop"]) == 4 and min(p_fake["crop"]) > 0.99  # the crop kept the checkerboard
    assert max(abs(p - 0.5) for p in p_fake["resize"]) < 0.01  # the resize flattened it


def test_analysis_follows_the_runs_resize_mode(boards, tmp_path):
    from utils import analysis

    p_val = {}
    for mode in ("crop", None):
        run_dir = tmp_path / str(mode)
        _pattern_detector(run_dir / "model.keras")
        params = {"alpha": 0.2, "image_size": SIZE, "seed": 0, "val_split": 0.5, "data_dir": str(boards),
                  "max_images": None, **({"resize_mode": mode} if mode else {})}
        (run_dir / "metrics.json").write_text(json.dumps({"params": params}))
        run = analysis.load_run(run_dir)
        assert run.resize_mode == (mode or "resize")
        p_val[mode] = run.p["val"]
        robustness = analysis.robustness(run, grid={"blur_sigma": [0]}, max_images=2)
        assert robustness["n"].iloc[0] == 4
    assert len(p_val["crop"]) == 4 and p_val["crop"].min() > 0.99
    assert np.abs(p_val[None] - 0.5).max() < 0.01  # an older run without the key resized, as it was trained
