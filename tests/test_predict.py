"""python -m utils.predict on a folder mixing good images with corrupt ones, and its threshold lookup."""
import csv
import io
import json
import shutil

import pytest
from PIL import Image


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, tiny_dataset):
    """Good JPEGs (one in a subfolder, one as .JPEG), a good PNG, and a 0-byte, a truncated and a garbled JPEG."""
    folder = tmp_path_factory.mktemp("to-predict")
    test = tiny_dataset / "real_vs_fake" / "real-vs-fake" / "test"
    sources = sorted((test / "real").glob("*.jpg"))[:2] + sorted((test / "fake").glob("*.jpg"))[:2]
    (folder / "sub").mkdir()
    good = [shutil.copy(sources[0], folder / "a.jpg"), shutil.copy(sources[1], folder / "sub" / "b.JPEG"),
            shutil.copy(sources[2], folder / "c.jpg")]
    Image.open(sources[3]).save(folder / "sub" / "d.PNG")
    good.append(folder / "sub" / "d.PNG")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(sources[0].read_bytes()[:300])
    # Valid start and end markers (passes the header/trailer scan) but no decodable content in between.
    (folder / "garbled.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9")
    (folder / "notes.txt").write_text("not an image")
    return folder, sorted(str(p) for p in good)


def test_predict_folder_with_corrupt_files(mixed_folder, tiny_run, tmp_path, capsys):
    from utils import predict

    folder, good = mixed_folder
    out_csv = tmp_path / "out" / "predictions.csv"
    code = predict.predict_cli(["--model", str(tiny_run / "model.keras"), str(folder), "--csv", str(out_csv),
                                "--threshold", "0.5", "--batch-size", "2", "--progress-every", "2"])
    captured = capsys.readouterr()
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert sorted(r["path"] for r in rows) == good
    assert all(0 <= float(r["p_fake"]) <= 1 and r["label"] == ("fake" if float(r["p_fake"]) >= 0.5 else "real")
               for r in rows)
    assert list(csv.DictReader(io.StringIO(captured.out))) == rows  # the same table on stdout
    for name in ("empty.jpg", "truncated.jpg", "garbled.jpg"):
        assert f"unreadable: {folder / name}" in captured.err, name
    assert "notes.txt" not in captured.err + captured.out
    assert "summary: 4 classified" in captured.err and "3 unreadable" in captured.err
    assert "2/5 images" in captured.err and "5/5 images" in captured.err  # progress over the 5 files passing the scan
    assert "garbled.jpg: cannot decode: " in captured.err and "{{" not in captured.err


def test_predict_nothing_readable_exits_1(tiny_run, tmp_path, capsys):
    from utils import predict

    (tmp_path / "empty.jpg").write_bytes(b"")
    assert predict.predict_cli(["--model", str(tiny_run / "model.keras"), str(tmp_path / "empty.jpg"),
                                str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "empty file" in err


def test_recorded_threshold(tmp_path):
    from utils.predict import recorded_threshold

    model = tmp_path / "model.keras"
    assert recorded_threshold(model) is None
    (tmp_path / "threshold.json").write_text(json.dumps({"threshold": 0.73, "method": "youden"}))
    assert recorded_threshold(model) == 0.73
    (tmp_path / "threshold.json").write_text("{broken")
    assert recorded_threshold(model) is None


def test_collect_paths_recursive_and_case_insensitive(mixed_folder, tmp_path):
    from utils.predict import collect_paths

    folder, good = mixed_folder
    paths, missing = collect_paths([folder, tmp_path / "nowhere"])
    names = sorted(p.rsplit("/", 1)[1] for p in paths)
    assert names == ["a.jpg", "b.JPEG", "c.jpg", "d.PNG", "empty.jpg", "garbled.jpg", "truncated.jpg"]
    assert missing == [{"path": str(tmp_path / "nowhere"), "reason": "no such file or folder"}]


def test_an_images_score_does_not_depend_on_its_neighbours(tmp_path):
    """The same 256-px JPEG gets the same P(fake) alone and in a folder beside a 100-px JPEG and a PNG copy of itself:
    its decode scale (the JPEG DCT downscale) is its own, not the smallest among the files predicted with it."""
    import keras
    import numpy as np

    from utils import synthetic
    from utils.predict import predict_files

    folder = tmp_path / "mixed"
    folder.mkdir()
    face = folder / "face.jpg"
    face.write_bytes(synthetic.encode_jpeg(synthetic.make_image(0, True, image_size=256, seed=5), quality=90))
    (folder / "small.jpg").write_bytes(synthetic.encode_jpeg(synthetic.make_image(1, False, image_size=100, seed=5), 90))
    Image.open(face).save(folder / "face-copy.png")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(keras.layers.Rescaling(1 / 64)(inputs))
    x = keras.layers.Dense(2)(keras.layers.Flatten()(x))  # every pixel counts: no pooling hides a change
    model = keras.Model(inputs, keras.layers.Softmax()(x))
    alone, _ = predict_files(model, [str(face)])
    together, _ = predict_files(model, sorted(str(p) for p in folder.iterdir()))
    scores = {row["path"]: row["p_fake"] for row in together}
    assert len(scores) == 3
    assert scores[str(face)] == pytest.approx(alone[0]["p_fake"], abs=1e-6)
    assert predict_files(model, [str(folder / "small.jpg")])[0][0]["p_fake"] == pytest.approx(
        scores[str(folder / "small.jpg")], abs=1e-6)
    assert np.isfinite(scores[str(folder / "face-copy.png")])
