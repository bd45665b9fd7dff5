"""The embedded default dataset: deterministic, 140k layout, classes differ by a spatial generator fingerprint only."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils import audit, probes, synthetic
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


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """Shortcut probes (utils.probes, as the explore notebook's audit) on 150 images per class of each generator."""
    results = {}
    for name in synthetic.UPSAMPLERS:
        folder = tmp_path_factory.mktemp(f"probe-{name}")
        paths = {}
        for cls in ("real", "fake"):
            paths[cls] = [folder / f"{cls}-{i}.jpg" for i in range(150)]
            for i, path in enumerate(paths[cls]):
                path.write_bytes(synthetic.encode_jpeg(synthetic.make_image(i, cls == "fake", SIZE, upsampler=name)))
        results[name] = probes.probe_files(paths)
    return results


@pytest.mark.parametrize("name", list(synthetic.UPSAMPLERS))
def test_no_global_statistic_separates_the_classes(probed, name):
    """Every scalar probe (file size, sharpness, high-frequency share at each band, colour), all scalars together and
    the 1-D log spectrum stay at or below the audit's warning level, as on real FFHQ / StyleGAN faces."""
    result = probed[name]
    expected = set(probes.FILE_FEATURES + probes.PIXEL_FEATURES) | {probes.ALL_SCALARS_PROBE, probes.SPECTRUM_PROBE}
    assert set(result["probes"]) == expected and result["unreadable"] == []
    scores = {probe: r["balanced_accuracy"] for probe, r in result["probes"].items()}
    assert result["flagged"] == [] and max(scores.values()) <= probes.WARN_ACCURACY, scores


def _orientation(image: np.ndarray) -> float:
    """Log of the luma's amplitude at the checkerboard's four axis peaks over that at the eight oblique ones."""
    grey = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    amplitude = np.abs(np.fft.fft2(grey - grey.mean()))
    size = grey.shape[0]
    k, (a, b) = synthetic._trace_cycles(size)
    axis = [(k, 0), (-k, 0), (0, k), (0, -k)]
    oblique = [(sx * u, sy * v) for u, v in ((a, b), (b, a)) for sx in (1, -1) for sy in (1, -1)]
    return float(np.log(np.mean([amplitude[i % size, j % size] for i, j in axis])
                        / np.mean([amplitude[i % size, j % size] for i, j in oblique])))


def test_fake_class_carries_a_spatial_fingerprint_that_survives_jpeg(sample):
    """A probe that knows where to look (the trace's orientation: axis-aligned or oblique) separates the classes the
    global probes cannot: the trace is there, after JPEG, for a detector to find."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    index = index_dataset(str(sample), val_split=0.25, seed=0)
    x = np.array([[_orientation(image)] for image in _load(index.test.paths)])
    accuracy = cross_val_score(LogisticRegression(max_iter=1000), x, index.test.labels, cv=5).mean()
    assert accuracy >= 0.95


@pytest.mark.parametrize("size", [64, 128, 256])
def test_both_traces_have_one_power_at_one_radius(size):
    """The checkerboard and the oblique texture put the same power on the same radius of the 2-D spectrum."""
    rng = np.random.default_rng(0)
    traces = {"fake": synthetic.checkerboard(size) - 1, "real": synthetic.oblique_texture(rng, size) - 1}
    fy, fx = np.meshgrid(np.fft.fftfreq(size) * size, np.fft.fftfreq(size) * size, indexing="ij")
    radius = np.hypot(fy, fx)
    rings = {}
    for name, trace in traces.items():
        power = np.abs(np.fft.fft2(trace)) ** 2 / size ** 2
        assert np.isclose(power.sum() / size ** 2, np.mean(trace ** 2))  # Parseval: all of it is the trace
        rings[name] = {round(float(r), 6): float(power[radius == r].sum()) for r in np.unique(radius[power > 1e-9])}
    cycles, vector = synthetic._trace_cycles(size)
    assert np.hypot(*vector) == cycles and 0 not in vector  # oblique, exactly on the checkerboard's ring
    assert rings["fake"].keys() == rings["real"].keys() == {cycles}
    assert np.isclose(rings["fake"][cycles], rings["real"][cycles])
    assert np.isclose(np.mean(traces["fake"] ** 2), synthetic.CHECKERBOARD_GAIN ** 2 / 4)


@pytest.mark.parametrize("name", list(synthetic.UPSAMPLERS))
def test_real_and_fake_grain_share_one_spectrum(name):
    """Averaged over draws, both classes' grain has unit variance and one power spectrum, whichever generator."""
    rng = np.random.default_rng(0)
    size, draws = 32, 400
    grains = {fake: np.stack([synthetic.make_grain(rng, size, fake, name) for _ in range(draws)]) for fake in (0, 1)}
    power = {fake: (np.abs(np.fft.fft2(g)) ** 2).mean(axis=0) / size ** 2 for fake, g in grains.items()}
    assert np.isclose(grains[0].var(), 1.0, atol=0.05) and np.isclose(grains[1].var(), 1.0, atol=0.05)
    # Single bins are noisy (and near the kernel's zeros tiny): the total absolute gap is a few percent of the power.
    assert np.abs(power[1] - power[0]).sum() < 0.1 * power[0].sum()


def test_same_format_size_and_jpeg_quality_for_both_classes(sample):
    index = index_dataset(str(sample), val_split=0.25, seed=0)
    props = audit.file_properties(index.test.paths)
    props["label"] = index.test.labels
    _, warnings = audit.compare_classes(props)
    assert warnings == []
    assert set(props["format"]) == {"JPEG"} and set(props["jpeg_quality"]) == {synthetic.JPEG_QUALITY}
    assert set(props["width"]) == {SIZE} and set(props["height"]) == {SIZE}


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

def test_other_generators_change_only_the_grain():
    """Same scene and colours (equal once blurred); grain and trace are each generator's own."""
    from scipy import ndimage

    def smooth(image):
        return ndimage.gaussian_filter(image.astype(float), (2, 2, 0))

    reals = {name: smooth(synthetic.make_image(7, fake=False, image_size=SIZE, upsampler=name))
             for name in synthetic.UPSAMPLERS}
    fakes = {name: synthetic.make_image(7, fake=True, image_size=SIZE, upsampler=name) for name in synthetic.UPSAMPLERS}
    other_scene = smooth(synthetic.make_image(8, fake=False, image_size=SIZE))
    for name in ("nearest", "bilinear"):
        assert np.abs(reals[name] - reals["transposed"]).mean() < np.abs(other_scene - reals["transposed"]).mean() / 5
        assert not np.array_equal(fakes["transposed"], fakes[name])
    with pytest.raises(ValueError, match="upsampler must be one of"):
        synthetic.make_image(7, fake=True, upsampler="pixelshuffle")


@pytest.mark.parametrize("name", ["nearest", "bilinear"])
def test_other_generators_leave_other_traces(name):
    """No checkerboard in their content; their fakes' grain, enlarged from half size, correlates pixels by phase."""
    assert np.mean([_orientation(synthetic.make_image(i, True, SIZE, upsampler=name)) for i in range(30)]) < \
        np.mean([_orientation(synthetic.make_image(i, True, SIZE)) for i in range(30)]) - 1
    rng = np.random.default_rng(1)
    grains = {fake: np.stack([synthetic.make_grain(rng, 32, fake, name) for _ in range(200)]) for fake in (0, 1)}

    def neighbour_correlation(grain, start):  # of columns start, start + 2, ... with their right-hand neighbours
        return np.corrcoef(grain[:, :, start:-1:2].ravel(), grain[:, :, start + 1::2].ravel())[0, 1]

    for fake, grain in grains.items():
        gap = abs(neighbour_correlation(grain, 0) - neighbour_correlation(grain, 1))
        assert (gap > 0.2) if fake else (gap < 0.05)
    if name == "nearest":  # each half-size noise value copied to a 2 x 2 block: one phase's neighbours are equal
        assert max(neighbour_correlation(grains[1], 0), neighbour_correlation(grains[1], 1)) > 0.999


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
