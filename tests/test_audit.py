"""Tests for utils.audit on small generated images: shortcuts, leakage, spectra, plots."""
import json
import shutil
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from PIL import Image

from utils import audit


def _smooth_image(seed: int, size: int = 64) -> np.ndarray:
    """A distinct smooth RGB image (8x8 noise upscaled), so perceptual hashes of different seeds differ."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return np.asarray(small.resize((size, size), Image.BICUBIC)).astype(np.float64)


def _save(pixels: np.ndarray, path, **kwargs) -> str:
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, **kwargs)
    return str(path)


def _make_set(folder, seeds, fmt="JPEG", quality=90, size=64) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    ext = "jpg" if fmt == "JPEG" else "png"
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    return [_save(_smooth_image(s, size), folder / f"{s}.{ext}", format=fmt, **kwargs) for s in seeds]


@pytest.fixture
def leaky_splits(tmp_path):
    """train/val/test with one exact train->test copy, two near copies in test and one exact copy within train."""
    train = _make_set(tmp_path / "train", range(0, 8))
    val = _make_set(tmp_path / "val", range(100, 104))
    test = _make_set(tmp_path / "test", range(200, 204))
    exact = shutil.copy(train[0], tmp_path / "test" / "copy_of_train0.jpg")
    requality = _save(_smooth_image(1), tmp_path / "test" / "train1_q60.jpg", format="JPEG", quality=60)
    brighter = _save(_smooth_image(2) + 12, tmp_path / "test" / "train2_bright.jpg", format="JPEG", quality=90)
    within = shutil.copy(train[3], tmp_path / "train" / "copy_of_train3.jpg")
    splits = {"train": train + [str(within)], "val": val, "test": test + [str(exact), requality, brighter]}
    return splits, {"exact": (train[0], str(exact)), "within": (train[3], str(within)),
                    "near": {(train[1], requality), (train[2], brighter)}}


def test_find_duplicates_reports_planted_pairs_with_their_splits(leaky_splits):
    splits, planted = leaky_splits
    result = audit.find_duplicates(splits, max_distance=4)
    exact, near = result["exact"], result["near"]
    assert exact["n_pairs"] == 2
    assert exact["across"] == {"train-val": 0, "train-test": 1, "val-test": 0}
    assert exact["within"] == {"train": 1, "val": 0, "test": 0}
    assert exact["examples"][0]["split_a"] == "train" and exact["examples"][0]["split_b"] == "test"  # cross first
    assert (exact["examples"][0]["path_a"], exact["examples"][0]["path_b"]) == planted["exact"]
    assert near["n_pairs"] == 2, near["examples"]  # exact copies excluded, distinct images not flagged
    assert near["across"] == {"train-val": 0, "train-test": 2, "val-test": 0}
    assert {(e["path_a"], e["path_b"]) for e in near["examples"]} == planted["near"]
    assert all(e["split_a"] == "train" and e["split_b"] == "test" and e["distance"] <= 4 for e in near["examples"])
    assert result["unreadable"]["n"] == 0


def test_find_duplicates_lists_unreadable_files(tmp_path):
    good = _make_set(tmp_path, range(3))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    result = audit.find_duplicates({"train": good, "test": [str(broken)]})
    assert result["unreadable"] == {"n": 1, "examples": [str(broken)]}
    assert result["exact"]["n_pairs"] == result["near"]["n_pairs"] == 0
    props = audit.file_properties(good + [str(broken)])
    assert props["error"].notna().tolist() == [False, False, False, True]


def test_near_duplicate_pairs_matches_brute_force():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=(700, 1), dtype=np.uint64)
    hashes[650, 0] = hashes[3, 0] ^ np.uint64(0b1011)  # distance 3
    hashes[400, 0] = hashes[399, 0] ^ np.uint64(0b11111)  # distance 5: beyond max_distance
    i, j, d = audit.near_duplicate_pairs(hashes, max_distance=4, block=256)  # several tiles, incl. diagonal ones
    assert list(zip(i.tolist(), j.tolist(), d.tolist())) == [(3, 650, 3)]


def test_perceptual_and_content_hashes(tmp_path):
    paths = _make_set(tmp_path, range(3))
    copy = shutil.copy(paths[0], tmp_path / "copy.jpg")
    shas = audit.content_hashes(paths + [str(copy)])
    assert shas[0] == shas[3] and len(set(shas)) == 3 and len(shas[0]) == 64
    hashes = audit.perceptual_hashes(paths, hash_size=16)
    assert hashes.shape == (3, 4) and hashes.dtype == np.uint64


@pytest.mark.parametrize("quality", [50, 75, 95])
def test_jpeg_quality_estimate_is_close(tmp_path, quality):
    paths = _make_set(tmp_path, range(2), quality=quality)
    props = audit.file_properties(paths)
    assert all(abs(q - quality) <= 5 for q in props["jpeg_quality"])
    assert props["format"].tolist() == ["JPEG", "JPEG"] and props["width"].tolist() == [64, 64]


def test_file_properties_png_has_no_quality(tmp_path):
    props = audit.file_properties(_make_set(tmp_path, range(2), fmt="PNG"))
    assert props["format"].tolist() == ["PNG", "PNG"] and props["mode"].tolist() == ["RGB", "RGB"]
    assert props["jpeg_quality"].isna().all() and (props["file_size"] > 0).all()


def _labelled(real, fake):
    props = audit.file_properties(real + fake)
    return props.assign(label=[0] * len(real) + [1] * len(fake))


def test_format_bias_warns_naming_both_formats(tmp_path):
    props = _labelled(_make_set(tmp_path / "real", range(6), fmt="JPEG"),
                      _make_set(tmp_path / "fake", range(10, 16), fmt="PNG"))
    summary, warnings = audit.compare_classes(props)
    assert summary["real"]["formats"] == {"JPEG": 1.0} and summary["fake"]["formats"] == {"PNG": 1.0}
    format_warnings = [w for w in warnings if w.startswith("format differs")]
    assert format_warnings == ["format differs: real = JPEG (100%), fake = PNG (100%) — "
                               "a detector can learn the file format instead of the face"]


def test_quality_bias_warns(tmp_path):
    props = _labelled(_make_set(tmp_path / "real", range(6), quality=95),
                      _make_set(tmp_path / "fake", range(10, 16), quality=60))
    summary, warnings = audit.compare_classes(props)
    quality_warnings = [w for w in warnings if w.startswith("JPEG quality differs")]
    assert len(quality_warnings) == 1
    assert "real median = 95" in quality_warnings[0] and "fake median = 60" in quality_warnings[0]
    assert not any(w.startswith("format differs") for w in warnings)


def test_size_and_mode_bias_warn(tmp_path):
    real = _make_set(tmp_path / "real", range(4), size=64)
    fake = [_save(_smooth_image(s, 32).mean(axis=-1), tmp_path / f"fake{s}.jpg", format="JPEG", quality=90)
            for s in range(10, 14)]
    _, warnings = audit.compare_classes(_labelled(real, fake))
    assert any(w.startswith("image size differs: real = 64x64 (100%), fake = 32x32 (100%)") for w in warnings)
    assert any(w.startswith("colour mode differs: real = RGB (100%), fake = L (100%)") for w in warnings)


def test_unbiased_set_has_no_warnings(tmp_path):
    props = _labelled(_make_set(tmp_path / "real", range(8), quality=85),
                      _make_set(tmp_path / "fake", range(10, 18), quality=85))
    _, warnings = audit.compare_classes(props)
    assert warnings == []


def test_compare_classes_needs_labels(tmp_path):
    with pytest.raises(ValueError, match="label"):
        audit.compare_classes(audit.file_properties(_make_set(tmp_path, range(1))))


def test_audit_index_is_json_and_flags_leakage(leaky_splits):
    splits, _ = leaky_splits

    def split(paths):
        return SimpleNamespace(paths=paths, labels=[k % 2 for k in range(len(paths))])

    index = SimpleNamespace(name="toy", root="/data/toy", layout="split-folders", train=split(splits["train"]),
                            val=split(splits["val"]), test=split(splits["test"]), skipped=[{"path": "x.gif"}])
    report = audit.audit_index(index)
    json.dumps(report)
    assert report["dataset"] == {"name": "toy", "root": "/data/toy", "layout": "split-folders"}
    assert report["counts"]["train"] == {"real": 5, "fake": 4, "total": 9}
    assert report["skipped"]["n"] == 1
    assert report["duplicates"]["exact"]["across"]["train-test"] == 1
    assert "1 exact duplicate pair(s) across splits train-test" in " ".join(report["warnings"])
    assert "2 near-duplicate pair(s) across splits train-test" in " ".join(report["warnings"])
    capped = audit.audit_splits({"train": (splits["train"], [0] * 9)}, max_images=4)
    assert capped["audited"] == {"train": 4} and capped["counts"]["train"]["total"] == 9
    assert "cannot compare classes: no fake images" in capped["warnings"]


def test_mean_log_spectrum_shows_checkerboard_at_nyquist(tmp_path):
    size = 64
    checker = np.where(np.indices((size, size)).sum(axis=0) % 2 == 0, 16.0, -16.0)[..., None]
    plain = [_save(_smooth_image(s) * 0.8 + 20, tmp_path / f"plain{s}.png") for s in range(4)]
    marked = [_save(_smooth_image(s) * 0.8 + 20 + checker, tmp_path / f"marked{s}.png") for s in range(4)]
    spectrum_plain = audit.mean_log_spectrum(plain, size=size)
    spectrum_marked = audit.mean_log_spectrum(marked, size=size)
    assert spectrum_plain.shape == (size, size)
    assert spectrum_marked[0, 0] > spectrum_plain[0, 0] + 3  # fftshift puts (-N/2, -N/2) = Nyquist at [0, 0]
    high = audit.mean_log_spectrum(marked, size=size, high_pass=True)
    assert high[0, 0] > high[size // 2, size // 2]  # high-pass removes DC; the periodic peak remains
    profile = audit.azimuthal_average(spectrum_marked)
    assert profile.shape == (round(np.hypot(size / 2, size / 2)) + 1,)  # last ring = the Nyquist corner
    assert profile[-1] > audit.azimuthal_average(spectrum_plain)[-1] + 1  # ring averages the peak with neighbours


def test_plots_return_figures_and_write_pngs(tmp_path):
    from matplotlib.figure import Figure

    by_class = {"real": _make_set(tmp_path / "real", range(3)), "fake": _make_set(tmp_path / "fake", range(10, 13))}
    spectra = {name: audit.mean_log_spectrum(paths, size=32) for name, paths in by_class.items()}
    mean = audit.mean_image(by_class["real"], size=32)
    assert mean.shape == (32, 32, 3) and mean.dtype == np.float32
    figures = {
        "grid.png": audit.plot_sample_grid(by_class, n=4, path=tmp_path / "out" / "grid.png"),
        "mean.png": audit.plot_mean_images(by_class, size=32, path=tmp_path / "out" / "mean.png"),
        "hist.png": audit.plot_intensity_histograms(by_class, path=tmp_path / "out" / "hist.png"),
        "spectra.png": audit.plot_spectra(spectra, path=tmp_path / "out" / "spectra.png"),
    }
    for name, figure in figures.items():
        assert isinstance(figure, Figure)
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shortcut_audit_warns_about_a_planted_file_size_shortcut_and_plots_it(tmp_path):
    """Same image content in both classes, fakes saved at JPEG quality 40: the file size alone tells them apart."""
    from matplotlib.figure import Figure

    by_class = {"real": _make_set(tmp_path / "real", range(12), quality=95),
                "fake": _make_set(tmp_path / "fake", range(12), quality=40)}
    result = audit.shortcut_audit(by_class, seed=0, max_workers=1)
    json.dumps(result)
    assert result["n"] == {"real": 12, "fake": 12} and result["probes"]["file_size"]["balanced_accuracy"] > 0.9
    assert any(w.startswith("trivial probe file_size separates real from fake") and "file size" in w
               for w in result["warnings"])
    assert len(result["warnings"]) == len(result["flagged"])
    figure = audit.plot_shortcut_probes(result, path=tmp_path / "out" / "shortcuts.png")
    assert isinstance(figure, Figure) and (tmp_path / "out" / "shortcuts.png").read_bytes()[:4] == b"\x89PNG"
    too_few = audit.shortcut_audit({"real": by_class["real"][:1], "fake": by_class["fake"][:1]}, max_workers=1)
    assert too_few["probes"] == {} and "shortcut probes skipped" in too_few["warnings"][0]
