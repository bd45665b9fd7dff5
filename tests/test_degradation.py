"""Train-time degradations (utils.degradation): each op's effect, seeding, and that only the training split gets them."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from utils import degradation, pipeline
from utils.data import DataError, Split

SIZE = 32
ALL_ON = {**degradation.DEFAULT_DEGRADATION, "blur_prob": 1.0, "jpeg_prob": 1.0, "rescale_prob": 1.0,
          "noise_prob": 1.0}


def _texture(seed: int = 0) -> np.ndarray:
    """A float32 [S, S, 3] image with detail at every scale: a smooth gradient plus pixel noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 200, SIZE, dtype=np.float32)
    smooth = (ramp[:, None] + ramp[None, :])[..., None] / 2
    return np.clip(smooth + rng.normal(0, 40, (SIZE, SIZE, 3)), 0, 255).astype(np.float32)


def _high_frequency(image) -> float:
    """Mean squared difference between neighbouring pixels: the energy at the finest scale."""
    x = np.asarray(image, dtype=np.float64)
    return float(np.mean(np.diff(x, axis=0) ** 2) + np.mean(np.diff(x, axis=1) ** 2))


def test_blur_lowers_high_frequency_energy_monotonically_and_sigma_0_is_identity():
    image = _texture()
    energies = [_high_frequency(degradation.gaussian_blur(image, s, max_sigma=3.0)) for s in (0.0, 0.5, 1.0, 2.0, 3.0)]
    assert all(a > b for a, b in zip(energies, energies[1:])), energies
    assert energies[-1] < 0.1 * energies[0]
    np.testing.assert_array_equal(degradation.gaussian_blur(image, 0.0, max_sigma=3.0).numpy(), image)
    flat = np.full((SIZE, SIZE, 3), 90.0, np.float32)  # mirrored edges: a flat image stays flat up to the border
    np.testing.assert_allclose(degradation.gaussian_blur(flat, 3.0).numpy(), flat, atol=1e-3)


def test_jpeg_changes_pixels_and_lower_quality_changes_more():
    image = _texture()
    errors = [float(np.abs(degradation.jpeg(image, q).numpy() - np.rint(image)).mean()) for q in (95, 70, 30, 5)]
    assert errors[0] > 0.5, "re-encoding must change the pixels"
    assert all(a < b for a, b in zip(errors, errors[1:])), errors


def test_rescale_factor_1_is_identity_and_smaller_factors_lose_detail():
    image = _texture()
    np.testing.assert_array_equal(degradation.rescale(image, 1.0).numpy(), image)
    energies = [_high_frequency(degradation.rescale(image, f)) for f in (1.0, 0.75, 0.5, 0.25)]
    assert all(a > b for a, b in zip(energies, energies[1:])), energies
    assert degradation.rescale(image, 0.5).shape == image.shape


def test_noise_std_matches_sigma():
    grey = np.full((64, 64, 3), 128.0, np.float32)  # far from 0 and 255, so clipping does not shrink the noise
    for sigma in (2.0, 10.0):
        diff = degradation.gaussian_noise(grey, sigma, seed=[3, 4]).numpy() - grey
        assert abs(diff.std() - sigma) < 0.05 * sigma and abs(diff.mean()) < 0.1 * sigma
    np.testing.assert_array_equal(degradation.gaussian_noise(grey, 0.0, seed=[3, 4]).numpy(), grey)


def test_probability_0_is_identity_and_1_applies_the_range():
    image = np.rint(_texture()).astype(np.uint8)
    off = dict(degradation.DEFAULT_DEGRADATION)
    assert degradation.config(off) is None and not degradation.active(off)
    np.testing.assert_array_equal(degradation.degrade(image, [1, 2], off).numpy(), image)
    # probability 1 with a one-point range: exactly that degradation at that strength
    blur_only = {**off, "blur_prob": 1.0, "blur_sigma": [2.0, 2.0]}
    expected = np.clip(np.rint(degradation.gaussian_blur(image.astype(np.float32), 2.0, max_sigma=2.0)), 0, 255)
    np.testing.assert_array_equal(degradation.degrade(image, [1, 2], blur_only).numpy(), expected)
    # probability 0.5: some keys blur, others leave the image untouched
    half = {**blur_only, "blur_prob": 0.5}
    untouched = [np.array_equal(degradation.degrade(image, [k, 0], half).numpy(), image) for k in range(40)]
    assert 8 < sum(untouched) < 32


def test_same_key_same_image_other_key_other_image():
    image = np.rint(_texture()).astype(np.uint8)
    first, again = (degradation.degrade(image, [5, 6], ALL_ON).numpy() for _ in range(2))
    other = degradation.degrade(image, [5, 7], ALL_ON).numpy()
    assert first.dtype == np.uint8 and first.shape == image.shape
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other) and not np.array_equal(first, image)


def test_example_strengths_run_from_mildest_to_harshest():
    settings = dict(degradation.DEFAULT_DEGRADATION)
    assert degradation.example_strengths("blur", settings) == [0.0, 1.5, 3.0]
    assert degradation.example_strengths("jpeg", settings) == [100, 65, 30]
    assert degradation.example_strengths("rescale", settings) == [1.0, 0.75, 0.5]


def test_plot_examples_saves_one_row_per_image_and_degradation(tmp_path):
    settings = {**degradation.DEFAULT_DEGRADATION, "blur_prob": 0.5, "jpeg_prob": 0.5}
    figure = degradation.plot_examples(np.stack([_texture(0), _texture(1)]), settings, tmp_path / "examples.png")
    assert (tmp_path / "examples.png").stat().st_size > 0
    assert len(figure.axes) == 2 * 2 * (degradation.EXAMPLE_STEPS + 1)
    with pytest.raises(ValueError, match="probability above 0"):
        degradation.plot_examples(np.stack([_texture()]), degradation.DEFAULT_DEGRADATION)


def test_range_checks_name_the_bounds():
    assert degradation.valid_range("blur_sigma", [0, 3]) and degradation.valid_range("jpeg_quality", (30, 100))
    for name, value in (("blur_sigma", [3.0, 1.0]), ("blur_sigma", [0.0]), ("blur_sigma", "0-3"),
                        ("jpeg_quality", [30.5, 90]), ("jpeg_quality", [0, 90]), ("rescale_range", [0.0, 1.0]),
                        ("noise_sigma", [0.0, float("nan")]), ("noise_sigma", [True, 5])):
        assert not degradation.valid_range(name, value), (name, value)
    assert "1 <= low <= high <= 100" in degradation.range_expected("jpeg_quality")


# ---------------------------------------------------------------------------------------------- in the pipeline


@pytest.fixture(scope="module")
def six_images(tmp_path_factory) -> Split:
    """Six 32-px PNGs of textured noise; labels 0..5 serve as ids (the pipeline carries labels through unchanged)."""
    root = tmp_path_factory.mktemp("degrade")
    paths = []
    for i in range(6):
        path = root / f"{i}.png"
        Image.fromarray(np.rint(_texture(i)).astype(np.uint8)).save(path)
        paths.append(str(path))
    return Split(paths, list(range(6)))


def _by_id(ds) -> list[dict[int, np.ndarray]]:
    """Two epochs of a dataset as {id: image}, so comparisons do not depend on the (shuffled) order."""
    epochs = []
    for _ in range(2):
        epochs.append({int(i): x for images, ids in ds for x, i in zip(images.numpy(), ids.numpy())})
    return epochs


def test_training_pipeline_is_seeded_per_image_and_fresh_each_epoch(six_images):
    clean = pipeline.load_images(six_images.paths, SIZE)
    runs = [_by_id(pipeline.make_dataset(six_images, SIZE, 4, training=True, seed=s, cache=True, degradation=ALL_ON))
            for s in (7, 7, 8)]
    same, again, other = runs
    for i in range(6):
        np.testing.assert_array_equal(same[0][i], again[0][i])  # same seed: same degraded images, epoch by epoch
        np.testing.assert_array_equal(same[1][i], again[1][i])
        assert not np.array_equal(same[0][i], clean[i])
        assert not np.array_equal(same[0][i], same[1][i])  # each epoch degrades afresh
        assert not np.array_equal(same[0][i], other[0][i])  # another seed, other draws


def test_degradations_off_and_evaluation_pipelines_are_clean(six_images):
    clean = pipeline.load_images(six_images.paths, SIZE)
    off = _by_id(pipeline.make_dataset(six_images, SIZE, 4, training=True, seed=1, cache=False,
                                       degradation=degradation.config(degradation.DEFAULT_DEGRADATION)))
    for i in range(6):
        np.testing.assert_array_equal(off[0][i], clean[i])
    with pytest.raises(DataError, match="training split only"):
        pipeline.make_dataset(six_images, SIZE, 4, training=False, degradation=ALL_ON)
    evaluated = np.concatenate([b[0].numpy() for b in pipeline.make_dataset(six_images, SIZE, 4, training=False)])
    np.testing.assert_array_equal(evaluated, clean)
