"""utils.probes: per-image features, cross-validated shortcut probes and the spectrum-probe baseline, on tiny images."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from utils import probes, synthetic

SIZE = 32


def _checker(size: int = SIZE) -> np.ndarray:
    """A +-12 period-2 checkerboard: all its energy at the Nyquist corner, like a transposed-convolution artefact."""
    return np.where(np.indices((size, size)).sum(axis=0) % 2 == 0, 12.0, -12.0)[..., None]


def _write_set(folder, n: int, fake: bool, quality: int = 90, brightness: float | None = None,
               seed: int = 0) -> list[str]:
    """n JPEGs of the synthetic scene generator (same generator for both classes) with a planted difference.

    brightness: contrast halved and this offset added, so the class's intensity range no longer overlaps another's.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = synthetic.make_image(i, fake, image_size=SIZE, seed=seed)
        if brightness is not None:
            image = np.clip(0.5 * image + brightness, 0, 255).astype(np.uint8)
        path = folder / f"{i:03d}.jpg"
        path.write_bytes(synthetic.encode_jpeg(image, quality))
        paths.append(str(path))
    return paths


def test_image_features_are_finite_and_the_spectrum_has_a_fixed_length():
    rng = np.random.default_rng(0)
    for shape in ((24, 24, 3), (SIZE, 48, 3), (300, 280, 3)):  # tiny, non-square, larger than the crop
        scalars, spectrum = probes.image_features(rng.uniform(0, 255, shape), file_size=1000)
        assert list(scalars) == list(probes.FILE_FEATURES + probes.PIXEL_FEATURES)
        assert all(np.isfinite(v) for v in scalars.values())
        assert spectrum.shape == (probes.SPECTRUM_BINS,) and np.isfinite(spectrum).all()
    scalars, _ = probes.image_features(np.full((SIZE, SIZE, 3), 128.0), file_size=500)
    assert scalars["hf_share_0.3"] == 0.0 and scalars["bits_per_pixel"] == pytest.approx(8 * 500 / SIZE ** 2)
    with pytest.raises(ValueError, match="RGB"):
        probes.image_features(np.zeros((SIZE, SIZE)))


def test_checkerboard_raises_the_high_frequency_share_and_the_corner_of_the_spectrum():
    smooth = np.clip(synthetic.make_image(0, False, image_size=SIZE, seed=1), 20, 235).astype(np.float64)
    plain, plain_spectrum = probes.image_features(smooth)
    marked, marked_spectrum = probes.image_features(smooth + _checker())
    for band in probes.HF_BANDS:
        assert marked[f"hf_share_{band:g}"] > plain[f"hf_share_{band:g}"]
    assert marked_spectrum[-1] > plain_spectrum[-1] + 1  # the last bin holds the Nyquist corner
    np.testing.assert_allclose(marked_spectrum[:4], plain_spectrum[:4], atol=0.2)  # low frequencies untouched
    assert "file_size" not in plain  # decoded arrays have no file


def test_file_size_shortcut_is_found_and_shuffled_labels_are_not(tmp_path):
    """Same generator, real saved at JPEG quality 95 and fake at 60: the file size alone separates them."""
    by_class = {"real": _write_set(tmp_path / "real", 20, False, quality=95),
                "fake": _write_set(tmp_path / "fake", 20, True, quality=60)}
    result = probes.probe_files(by_class, seed=0, max_workers=2)
    assert result["n"] == {"real": 20, "fake": 20} and result["unreadable"] == []
    size = result["probes"]["file_size"]
    assert size["balanced_accuracy"] > 0.9 and size["roc_auc"] > 0.9 and size["folds"] == 5
    assert size["mean_real"] > size["mean_fake"]  # higher quality, bigger files
    assert "file_size" in result["flagged"] and "bits_per_pixel" in result["flagged"]
    assert "mean_r" not in result["flagged"]  # the colour statistics are drawn alike for both classes
    # The same features with labels shuffled: no probe may look like a shortcut.
    scalars, spectra, _ = probes.features_from_files(by_class["real"] + by_class["fake"], max_workers=2)
    labels = np.random.default_rng(3).permutation([0] * 20 + [1] * 20)
    shuffled = probes.shortcut_probes(scalars, spectra, labels, seed=0)
    accuracies = [r["balanced_accuracy"] for r in shuffled["probes"].values()]
    assert np.mean(accuracies) < 0.6 and max(accuracies) < 0.8


def test_brightness_shortcut_is_found_by_the_colour_means(tmp_path):
    by_class = {"real": _write_set(tmp_path / "real", 15, False, brightness=0),
                "fake": _write_set(tmp_path / "fake", 15, True, brightness=128)}
    result = probes.probe_files(by_class, seed=0, max_workers=1)
    for channel in probes.COLOUR_CHANNELS:
        assert result["probes"][f"mean_{channel}"]["balanced_accuracy"] > 0.9
    table = probes.probe_table(result)
    assert table.loc["mean_g", "shortcut"] == "WARNING" and table["balanced accuracy"].is_monotonic_decreasing
    assert set(result["mean_spectrum"]) == {"real", "fake"}


def test_unreadable_files_are_listed_not_fatal(tmp_path):
    good = _write_set(tmp_path / "real", 3, False)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    scalars, spectra, unreadable = probes.features_from_files(good + [str(broken)], max_workers=1)
    assert list(scalars.index) == good and spectra.shape == (3, probes.SPECTRUM_BINS)
    assert unreadable == [str(broken)]


def test_cross_validated_probe_reduces_folds_and_needs_two_per_class():
    x = np.r_[np.zeros(3), np.ones(10)]
    y = np.r_[np.zeros(3), np.ones(10)].astype(int)
    result = probes.cross_validated_probe(x, y, folds=5)
    assert result["folds"] == 3 and result["balanced_accuracy"] == 1.0
    assert probes.cross_validated_probe(np.arange(5.0), [0, 1, 1, 1, 1]) is None  # one real image: nothing to test
    with pytest.raises(ValueError, match="labels must be 0"):
        probes.cross_validated_probe(np.arange(4.0), [0, 1, 2, 1])


def test_shortcut_probes_warn_above_the_threshold_only():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(30), np.ones(30)].astype(int)
    scalars = pd.DataFrame({"planted": y + rng.normal(0, 0.3, 60), "noise": rng.normal(0, 1, 60)})
    result = probes.shortcut_probes(scalars, rng.normal(0, 1, (60, probes.SPECTRUM_BINS)), y, seed=0)
    assert result["flagged"] == ["planted", probes.ALL_SCALARS_PROBE]
    assert set(result["probes"]) == {"planted", "noise", probes.ALL_SCALARS_PROBE, probes.SPECTRUM_PROBE}
    strict = probes.shortcut_probes(scalars, rng.normal(0, 1, (60, probes.SPECTRUM_BINS)), y, warn_at=1.0)
    assert strict["flagged"] == []


def test_spectrum_probe_baseline_fits_on_train_and_scores_held_out_images():
    """Plain images against ones with a planted Nyquist checkerboard: fit on one seed's images, rank another seed's.

    (The embedded default's own classes are built so that this probe cannot separate them: tests/test_synthetic.py.)
    """
    def batch(seed: int, n: int = 15) -> tuple[np.ndarray, np.ndarray]:
        images = np.stack([np.clip(synthetic.make_image(i, fake, image_size=SIZE, seed=seed) + (_checker() if fake else 0),
                                   0, 255) for fake in (False, True) for i in range(n)])
        return probes.spectra_from_images(images), np.r_[np.zeros(n), np.ones(n)].astype(int)

    x_train, y_train = batch(seed=0)
    x_test, y_test = batch(seed=1)
    probe = probes.fit_spectrum_probe(x_train, y_train)
    p = probes.probe_p_fake(probe, x_test)
    assert p.shape == (30,) and ((p >= 0) & (p <= 1)).all()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y_test, p) > 0.95  # on images it never saw
    shuffled = probes.fit_spectrum_probe(x_train, np.random.default_rng(0).permutation(y_train))
    assert abs(roc_auc_score(y_test, probes.probe_p_fake(shuffled, x_test)) - 0.5) < 0.3  # nothing to learn
    with pytest.raises(ValueError, match="both real"):
        probes.fit_spectrum_probe(x_train[:15], y_train[:15])


def test_probes_module_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, utils.probes, utils.audit; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("conftest").REPO_ROOT))
    assert out.stdout.strip() == "False"


def test_jpeg_files_and_decoded_arrays_give_the_same_spectrum(tmp_path):
    """The audit reads files with Pillow, the analysis feeds decoded arrays: one feature for both."""
    image = synthetic.make_image(0, True, image_size=SIZE, seed=2)
    path = tmp_path / "x.png"
    Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8)).save(path)
    _, from_file, _ = probes.features_from_files([str(path)], max_workers=1)
    from_array = probes.spectra_from_images(np.asarray(Image.open(path).convert("RGB"))[None])
    np.testing.assert_allclose(from_file[0], from_array[0])
