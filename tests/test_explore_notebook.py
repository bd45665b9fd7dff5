"""One papermill run of notebooks/explore.ipynb on a plain real/ + ai/ folder with planted shortcuts and leakage."""
import json
import shutil

import pytest
from conftest import TINY_SIZE, assert_report_shows_figures, run_from_notebooks

# Every test reads the one explore run; its report (pandas tables, scikit-learn probes) is rendered again under
# Kaggle's pinned versions.
pytestmark = [pytest.mark.slow, pytest.mark.kaggle_versions]


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    """A real/ + ai/ folder (real at JPEG quality 95, fake at 70; one real image copied twice) and its explore run."""
    from utils import synthetic

    root = tmp_path_factory.mktemp("plain-dataset")
    for folder, fake, quality in (("real", False, 95), ("ai", True, 70)):
        (root / folder).mkdir()
        for i in range(10):
            image = synthetic.make_image(i, fake, image_size=TINY_SIZE, seed=5)
            (root / folder / f"{i:03d}.jpg").write_bytes(synthetic.encode_jpeg(image, quality))
    shutil.copy(root / "real" / "000.jpg", root / "real" / "copy.jpg")
    out = tmp_path_factory.mktemp("explore")
    run_from_notebooks("explore.ipynb", out, {"data_dir": str(root), "seed": 0, "max_images": None})
    return root, out, json.loads((out / "audit.json").read_text())


def test_writes_report_and_figures(explored):
    _, out, _ = explored
    for name in ("audit.json", "explore.ipynb", "explore.html", "samples.png", "mean_images.png",
                 "intensity_histograms.png", "spectra.png", "duplicates_exact.png", "shortcuts.png"):
        assert (out / name).is_file(), name
    assert_report_shows_figures(out / "explore.ipynb", out / "explore.html", sorted(out.glob("*.png")))


def test_audit_counts_properties_and_quality_warning(explored):
    root, _, report = explored
    assert report["dataset"]["root"] == str(root)
    totals = {cls: sum(split[cls] for split in report["counts"].values()) for cls in ("real", "fake")}
    assert totals == {"real": 11, "fake": 10}
    assert set(report["counts"]) == {"train", "val"}  # a plain folder has no official test split
    by_class = report["properties"]["by_class"]
    assert by_class["real"]["jpeg_quality"]["median"] == 95 and by_class["fake"]["jpeg_quality"]["median"] == 70
    assert by_class["real"]["sizes"] == {f"{TINY_SIZE}x{TINY_SIZE}": 1.0}
    assert any(w.startswith("JPEG quality differs") for w in report["warnings"])
    assert report["params"]["data_dir"] == str(root)


def test_planted_copy_is_an_exact_duplicate(explored):
    _, _, report = explored
    exact = report["duplicates"]["exact"]
    assert exact["n_pairs"] == 1
    pair = exact["examples"][0]
    assert {pair["path_a"].rsplit("/", 1)[1], pair["path_b"].rsplit("/", 1)[1]} == {"000.jpg", "copy.jpg"}
    # Seed 0 splits the copies onto both sides (asserted, so the leakage warning below is always checked).
    assert {pair["split_a"], pair["split_b"]} == {"train", "val"} and exact["across"] == {"train-val": 1}
    assert any("1 exact duplicate pair(s) across splits train-val" in w for w in report["warnings"])


def test_shortcut_probes_flag_the_planted_quality_difference(explored):
    """Real at JPEG quality 95, fake at 70: the file size alone separates them, and the audit says so."""
    _, out, report = explored
    shortcuts = report["shortcuts"]
    assert shortcuts["n"] == {"real": 11, "fake": 10} and shortcuts["warn_at"] == 0.65
    assert shortcuts["probes"]["file_size"]["balanced_accuracy"] > 0.9
    assert shortcuts["probes"]["file_size"]["mean_real"] > shortcuts["probes"]["file_size"]["mean_fake"]
    assert {"log_spectrum_1d", "all_scalars", "hf_share_0.3", "mean_gradient", "std_g"} <= set(shortcuts["probes"])
    assert "file_size" in shortcuts["flagged"]
    assert any(w.startswith("trivial probe file_size separates real from fake") for w in report["warnings"])
    assert "Shortcut probes" in (out / "explore.html").read_text()
