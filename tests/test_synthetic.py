"""The embedded default dataset: deterministic, 140k layout, classes differ by a generator fingerprint only."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils import audit, synthetic
from utils.data import index_dataset

SIZE = 64


def test_images_are_deterministic_from_the_seed():
    a = synthetic.make_image(5, fake=True, image_size=SIZE, seed=0)
    assert np.array_equal(a, synthetic.make_image(5, fake=True, image_size=SIZE, seed=0))
    assert not np.array_equal(a, synthetic.make_image(5, fake=True, image_size=SIZE, seed=1))
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return synthetic.generate_dataset(root, counts={"train": 150, "valid": 10, "test": 100}, image_size=SIZE)


def _load(paths):
    return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in paths])


def test_colour_statistics_do_not_separate_the_classes(sample):
    """A logistic regression on per-channel mean and std stays near chance (< 0.65) on held-out images."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    index = index_dataset(str(sample), val_split=0.25, seed=0)

    def features(split):
        x = _load(split.paths)
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1), np.array(split.labels)

    x_train, y_train = features(index.train)
    x_test, y_test = features(index.test)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    assert classifier.score(x_test, y_test) < 0.65


def test_same_format_size_and_jpeg_quality_for_both_classes(sample):
    index = index_dataset(str(sample), val_split=0.25, seed=0)
    props = audit.file_properties(index.test.paths)
    props["label"] = index.test.labels
    _, warnings = audit.compare_classes(props)
    assert warnings == []
    assert set(props["format"]) == {"JPEG"} and set(props["jpeg_quality"]) == {synthetic.JPEG_QUALITY}
    assert set(props["width"]) == {SIZE} and set(props["height"]) == {SIZE}


def test_fake_class_carries_the_upsampling_fingerprint(sample):
    """The periodic transposed-convolution artifact shows at the Nyquist frequency of the fake spectrum only."""
    index = index_dataset(str(sample), val_split=0.25, seed=0)
    by_class = {label: [p for p, y in zip(index.test.paths, index.test.labels) if y == label] for label in (0, 1)}
    real, fake = (audit.mean_log_spectrum(by_class[label], size=SIZE) for label in (0, 1))
    # A period-2 modulation along one axis shifts the image's low frequencies to that axis' Nyquist frequency:
    # in the shifted spectrum, row 0 / column 0 (Nyquist) at the centre column / row (zero frequency).
    centre = SIZE // 2
    for fake_peak, real_peak in ((fake[0, centre], real[0, centre]), (fake[centre, 0], real[centre, 0])):
        assert fake_peak > real_peak + 2  # log scale: several times the energy
    # Elsewhere at high frequency the fake has less energy than the real (the upsampler's fall-off).
    assert fake[0, 0] < real[0, 0]


def test_layout_and_csvs_follow_kaggle_140k(sample):
    base = sample / "real_vs_fake" / "real-vs-fake"
    assert len(list((base / "train" / "real").glob("*.jpg"))) == 150
    assert len(list((base / "test" / "fake").glob("*.jpg"))) == 100
    rows = list(csv.DictReader(open(sample / "test.csv")))
    assert len(rows) == 200
    # 140k's convention: label 1 = real.
    assert {(r["label"], r["label_str"]) for r in rows} == {("1", "real"), ("0", "fake")}
    assert all((base / r["path"]).is_file() for r in rows)
    index = index_dataset(str(sample), val_split=0.25, seed=0)
    assert index.layout == "140k" and index.counts()["test"] == {"real": 100, "fake": 100}


def test_default_dataset_is_generated_once_and_regenerated_when_incomplete(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "DEFAULT_COUNTS", {"train": 3, "valid": 1, "test": 2})
    root = synthetic.default_dataset_dir(tmp_path, image_size=16)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["name"] == "synthetic-faces"
    first = sorted(root.rglob("*.jpg"))[0]
    stamp = first.stat().st_mtime_ns
    assert synthetic.default_dataset_dir(tmp_path, image_size=16) == root and first.stat().st_mtime_ns == stamp
    (root / "manifest.json").unlink()  # as if an earlier generation was interrupted
    first.unlink()
    assert synthetic.default_dataset_dir(tmp_path, image_size=16) == root and first.is_file()
    assert index_dataset(str(root)).name == "synthetic-faces"


def test_bad_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        synthetic.generate_dataset(tmp_path, image_size=15)


# ------------------------------------------------------------------ other generators (cross-generator tests)

def test_other_generators_change_only_the_fake_upsampler():
    real = synthetic.make_image(7, fake=False, image_size=SIZE)
    fakes = {name: synthetic.make_image(7, fake=True, image_size=SIZE, upsampler=name) for name in synthetic.UPSAMPLERS}
    for name in synthetic.UPSAMPLERS:
        assert np.array_equal(real, synthetic.make_image(7, fake=False, image_size=SIZE, upsampler=name))
    assert not np.array_equal(fakes["transposed"], fakes["nearest"])
    assert not np.array_equal(fakes["transposed"], fakes["bilinear"])
    with pytest.raises(ValueError, match="upsampler must be one of"):
        synthetic.make_image(7, fake=True, upsampler="pixelshuffle")


@pytest.mark.parametrize("name", ["nearest", "bilinear"])
def test_other_generators_leave_no_period_2_pattern(name):
    """Unlike the transposed upsampler, neither alternates pixel intensity with period 2 (no checkerboard peak)."""
    def nyquist_energy(image):
        grey = image.astype(np.float64).mean(axis=-1)
        grey = grey - grey.mean()
        spectrum = np.abs(np.fft.fft2(grey))
        return spectrum[SIZE // 2, 0] + spectrum[0, SIZE // 2]  # the period-2 patterns along each axis

    def mean_energy(upsampler):
        return np.mean([nyquist_energy(synthetic.make_image(i, True, SIZE, upsampler=upsampler)) for i in range(20)])

    assert mean_energy(name) * 3 < mean_energy("transposed")


def test_generated_datasets_are_named_by_their_generator(tmp_path, monkeypatch):
    from utils.data import DataError, resolve_data_dir

    monkeypatch.setattr(synthetic, "DEFAULT_COUNTS", {"train": 3, "valid": 1, "test": 2})
    monkeypatch.setattr(synthetic, "DEFAULT_ROOT", tmp_path)
    default = resolve_data_dir(None)
    nearest = resolve_data_dir("synthetic:nearest")
    assert nearest != default and resolve_data_dir("synthetic:transposed") == default
    assert index_dataset("synthetic:nearest").name == "synthetic-faces-nearest"

    def real_images(root):
        return {path.read_bytes() for path in Path(root).rglob("real/*.jpg")}

    # New scenes, so a model trained on the default has seen none of this dataset's real images either.
    assert real_images(default) and real_images(nearest) and not real_images(default) & real_images(nearest)
    assert index_dataset(None).name == "synthetic-faces"
    with pytest.raises(DataError, match="synthetic:bilinear"):
        resolve_data_dir("synthetic:pixelshuffle")
