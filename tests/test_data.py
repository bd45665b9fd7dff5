"""Tests for utils.data: layout detection, splits, several sources, bad-file scanning and the Kaggle input search."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import write_image

from utils import data
from utils.data import DataError, DatasetIndex, Split


def _fill(folder: Path, n: int, seed: int, ext: str = ".jpg") -> list[Path]:
    """n images named img_000.jpg ... in a folder."""
    return [write_image(folder / f"img_{i:03d}{ext}", seed * 1000 + i) for i in range(n)]


def _tree(root: Path, spec: dict[str, int], seed: int = 0) -> Path:
    """Images per relative class folder, e.g. {"train/real": 4}."""
    for i, (rel, n) in enumerate(sorted(spec.items())):
        _fill(root / rel, n, seed * 100 + i)
    return root


def _make_140k(root: Path, n: int = 4) -> Path:
    split_root = root / "real_vs_fake" / "real-vs-fake"
    _tree(split_root, {f"{s}/{c}": n for s in ("train", "valid", "test") for c in ("real", "fake")})
    for name in ("train.csv", "valid.csv", "test.csv"):  # label 1 = real there; folders are authoritative
        (root / name).write_text("id,original_path,label,label_str,path\n")
    return root


def _make_manjilkarki(root: Path, n: int = 4) -> Path:
    _tree(root / "Dataset", {f"{s}/{c}": n for s in ("Train", "Validation", "Test") for c in ("Real", "Fake")})
    return root


def _assert_labels_match_folders(split: data.Split) -> None:
    for path, label in zip(split.paths, split.labels):
        parts = {p.lower() for p in Path(path).parts}
        assert (label == 0) == bool(parts & set(data.REAL_ALIASES)), path
        assert (label == 1) == bool(parts & set(data.FAKE_ALIASES)), path


# ---------------------------------------------------------------------------------------------- layouts


def test_pooled_joins_every_split_in_order():
    index = DatasetIndex("d", "/r", "x", train=Split(["a", "b"], [0, 1]), val=Split(["c"], [1]), test=None)
    assert (index.pooled().paths, index.pooled().labels) == (["a", "b", "c"], [0, 1, 1])
    index.test = Split(["t"], [0])
    assert index.pooled().paths == ["a", "b", "c", "t"] and index.pooled().counts() == {"real": 2, "fake": 2}


@pytest.mark.parametrize("entry", ["", "real_vs_fake", "real_vs_fake/real-vs-fake"])
def test_140k_layout_from_any_entry_folder(tmp_path, entry):
    root = _make_140k(tmp_path / "140k-real-and-fake-faces")
    index = data.index_dataset(str(root / entry) if entry else str(root))
    assert (index.name, index.layout) == ("140k-real-and-fake-faces", "140k")
    assert index.root == str(root / "real_vs_fake" / "real-vs-fake")
    # pool = train + valid folders (8 per class), split 75:25; test kept as is
    assert index.counts() == {"train": {"real": 6, "fake": 6}, "val": {"real": 2, "fake": 2},
                              "test": {"real": 4, "fake": 4}}
    for split in (index.train, index.val, index.test):
        _assert_labels_match_folders(split)
    assert all("/test/" in p for p in index.test.paths)
    assert not any("/test/" in p for p in index.train.paths + index.val.paths)
    assert not set(index.train.paths) & set(index.val.paths)
    assert index.skipped == []


@pytest.mark.parametrize("entry", ["", "Dataset"])
def test_manjilkarki_layout_with_capitalised_names(tmp_path, entry):
    root = _make_manjilkarki(tmp_path / "deepfake-and-real-images")
    index = data.index_dataset(str(root / entry) if entry else str(root))
    assert (index.name, index.layout) == ("deepfake-and-real-images", "manjilkarki")
    assert index.counts() == {"train": {"real": 6, "fake": 6}, "val": {"real": 2, "fake": 2},
                              "test": {"real": 4, "fake": 4}}
    assert all("/Test/" in p for p in index.test.paths)
    assert not any("/Test/" in p for p in index.train.paths + index.val.paths)
    for split in (index.train, index.val, index.test):
        _assert_labels_match_folders(split)


def test_split_folders_with_case_insensitive_aliases(tmp_path):
    root = _tree(tmp_path / "my-faces", {"Training/Authentic": 6, "Training/GAN": 6, "VAL/Authentic": 2,
                                         "VAL/GAN": 2, "Testing/Authentic": 3, "Testing/GAN": 3, "notes/other": 2})
    index = data.index_dataset(str(root))
    assert (index.name, index.layout, index.root) == ("my-faces", "split-folders", str(root))
    assert index.counts() == {"train": {"real": 6, "fake": 6}, "val": {"real": 2, "fake": 2},
                              "test": {"real": 3, "fake": 3}}
    assert all("/Testing/" in p for p in index.test.paths)
    assert not any("/Testing/" in p or "/notes/" in p for p in index.train.paths + index.val.paths)


def test_class_folders_recursive_and_other_folders_ignored(tmp_path):
    root = _tree(tmp_path / "faces", {"real": 4, "real/nested/deeper": 4, "ai": 8, "misc": 5})
    (root / "real" / "readme.txt").write_text("not an image, wrong extension: not even scanned")
    index = data.index_dataset(str(root))
    assert (index.name, index.layout, index.test) == ("faces", "class-folders", None)
    assert index.counts() == {"train": {"real": 6, "fake": 6}, "val": {"real": 2, "fake": 2}}
    assert any("/nested/deeper/" in p for p in index.train.paths + index.val.paths)
    assert not any("/misc/" in p for p in index.train.paths + index.val.paths)
    _assert_labels_match_folders(index.train)
    assert index.skipped == []


def test_single_subfolder_wrappers_are_descended(tmp_path):
    inner = _tree(tmp_path / "wrapper" / "v1" / "images", {"Real": 4, "Fake": 4})
    (tmp_path / "wrapper" / "metadata.csv").write_text("files beside the wrapper do not matter\n")
    index = data.index_dataset(str(tmp_path / "wrapper"))
    assert (index.name, index.layout, index.root) == ("images", "class-folders", str(inner))
    assert index.counts() == {"train": {"real": 3, "fake": 3}, "val": {"real": 1, "fake": 1}}


def test_wrapped_140k_dataset_is_recognised(tmp_path):
    _make_140k(tmp_path / "input" / "140k-real-and-fake-faces")
    index = data.index_dataset(str(tmp_path / "input"))
    assert (index.name, index.layout) == ("140k-real-and-fake-faces", "140k")


def test_manifest_name_marks_the_embedded_synthetic_dataset(tmp_path):
    root = _make_140k(tmp_path / "synthetic-faces" / "abc123", n=2)
    (root / "manifest.json").write_text('{"name": "synthetic-faces", "version": 1}')
    index = data.index_dataset(str(root))
    assert (index.name, index.layout) == ("synthetic-faces", "140k")
    (root / "manifest.json").write_text("not json")
    assert data.index_dataset(str(root)).name == "140k-real-and-fake-faces"


def test_real_synthetic_generator_output_is_indexed(tmp_path):
    from utils import synthetic
    root = synthetic.generate_dataset(tmp_path / "syn", counts={"train": 3, "valid": 1, "test": 2}, image_size=16)
    (Path(root) / "manifest.json").write_text('{"name": "%s"}' % synthetic.DATASET_NAME)
    index = data.index_dataset(str(root))
    assert (index.name, index.layout) == (synthetic.DATASET_NAME, "140k")
    assert index.counts() == {"train": {"real": 3, "fake": 3}, "val": {"real": 1, "fake": 1},
                              "test": {"real": 2, "fake": 2}}
    assert index.skipped == []


# ---------------------------------------------------------------------------------------------- splits


def test_split_is_stratified_deterministic_and_seeded(tmp_path):
    root = _tree(tmp_path / "faces", {"real": 20, "fake": 12})
    a = data.index_dataset(str(root), val_split=0.25, seed=1)
    assert a.counts() == {"train": {"real": 15, "fake": 9}, "val": {"real": 5, "fake": 3}}
    assert sorted(a.train.paths + a.val.paths) == sorted(str(p) for p in root.rglob("*.jpg"))
    again = data.index_dataset(str(root), val_split=0.25, seed=1)
    assert (again.train, again.val) == (a.train, a.val)
    other = data.index_dataset(str(root), val_split=0.25, seed=2)
    assert other.counts() == a.counts()
    assert set(other.val.paths) != set(a.val.paths)
    assert data.index_dataset(str(root), val_split=0.5, seed=1).counts()["val"] == {"real": 10, "fake": 6}


def test_max_images_caps_each_class_with_a_seeded_subset(tmp_path):
    root = _make_140k(tmp_path / "ds", n=10)  # pool 20 per class, test 10 per class
    index = data.index_dataset(str(root), max_images=8, seed=0)
    assert index.counts() == {"train": {"real": 6, "fake": 6}, "val": {"real": 2, "fake": 2},
                              "test": {"real": 8, "fake": 8}}
    test_real = sorted(p for p in index.test.paths if "/real/" in p)
    first_n = sorted(str(p) for p in (root / "real_vs_fake/real-vs-fake/test/real").glob("*.jpg"))[:8]
    assert test_real != first_n  # a random subset, not the first files
    assert data.index_dataset(str(root), max_images=8, seed=0).test == index.test
    assert data.index_dataset(str(root), max_images=8, seed=5).test != index.test


def test_bad_parameters_raise(tmp_path):
    root = _tree(tmp_path / "faces", {"real": 4, "fake": 4})
    with pytest.raises(DataError, match="val_split"):
        data.index_dataset(str(root), val_split=1.0)
    with pytest.raises(DataError, match="max_images"):
        data.index_dataset(str(root), max_images=0)
    with pytest.raises(DataError, match="cannot split"):
        data.index_dataset(str(_tree(tmp_path / "tiny", {"real": 1, "fake": 3})))


# ---------------------------------------------------------------------------------------------- several sources


@pytest.fixture
def two_sources(tmp_path) -> tuple[str, str]:
    """A 140k-layout dataset with a test split (8 pool + 4 test per class) and a class-folder one without (8 per class)."""
    with_test = _make_140k(tmp_path / "kaggle", n=4)
    without_test = _tree(tmp_path / "faces", {"real": 8, "fake": 8}, seed=1)
    return str(with_test), str(without_test)


def test_several_sources_are_pooled_per_split_and_remember_their_source(two_sources):
    first, second = two_sources
    index = data.index_dataset([first, second], val_split=0.25, seed=3)
    alone = [data.index_dataset(d, val_split=0.25, seed=3) for d in two_sources]
    assert (index.name, index.layout) == ("140k-real-and-fake-faces + faces", data.MULTI_SOURCE_LAYOUT)
    # Each source split as it is alone, then joined per split; only the first has an official test split.
    assert index.train == Split(alone[0].train.paths + alone[1].train.paths, alone[0].train.labels + alone[1].train.labels)
    assert index.val.paths == alone[0].val.paths + alone[1].val.paths and index.test == alone[0].test
    assert index.counts() == {"train": {"real": 12, "fake": 12}, "val": {"real": 4, "fake": 4},
                              "test": {"real": 4, "fake": 4}}
    assert [(s["name"], s["root"], s["layout"], s["held_out"]) for s in index.sources] == [
        ("140k-real-and-fake-faces", alone[0].root, "140k", False), ("faces", alone[1].root, "class-folders", False)]
    assert index.sources[0]["counts"] == alone[0].counts() and index.sources[1]["counts"] == alone[1].counts()
    assert "test" not in index.sources[1]["counts"]  # no test split: its images are in train and val only
    assert index.source_names() == ["140k-real-and-fake-faces", "faces"] and index.holdout_source is None
    # Every image's source is recovered from its path, and per source the split is that source's own.
    for split in ("train", "val"):
        parts = index.by_source(getattr(index, split))
        assert [parts[s["name"]] for s in index.sources] == [getattr(a, split) for a in alone]
    assert set(index.source_of(index.test)) == {"140k-real-and-fake-faces"}
    assert list(index.by_source(index.test)) == ["140k-real-and-fake-faces"]
    # A single dataset is its own one source, and a one-entry list is that dataset alone.
    assert alone[1].sources == [] and alone[1].source_of(alone[1].val) == ["faces"] * len(alone[1].val)
    assert data.index_dataset([second], seed=3) == alone[1]


def test_sources_with_one_name_are_suffixed_and_capped_each(tmp_path):
    roots = [str(_tree(tmp_path / parent / "faces", {"real": 8, "fake": 6}, seed=i)) for i, parent in enumerate("abc")]
    index = data.index_dataset(roots, seed=0, max_images=4)
    assert index.source_names() == ["faces", "faces-2", "faces-3"]
    for source in index.sources:  # max_images caps each class of each source: 4 per class, split 3:1
        assert source["counts"] == {"train": {"real": 3, "fake": 3}, "val": {"real": 1, "fake": 1}}
    assert index.counts() == {"train": {"real": 9, "fake": 9}, "val": {"real": 3, "fake": 3}}
    assert index.test is None
    names = index.source_of(index.train)
    assert all(path.startswith(roots[int(name[-1]) - 1 if name != "faces" else 0] + "/")
               for path, name in zip(index.train.paths, names))
    # A root that merely starts like another (.../faces vs .../faces-extra) is told apart: roots end in a separator.
    prefix = str(_tree(tmp_path / "a" / "faces-extra", {"real": 4, "fake": 4}, seed=7))
    mixed = data.index_dataset([roots[0], prefix])
    assert {n: len(s) for n, s in mixed.by_source(mixed.train).items()} == {"faces": 10, "faces-extra": 6}


@pytest.mark.parametrize("holdout", ["faces", 1, "ENTRY"])
def test_holdout_source_is_the_whole_test_split_and_never_trained_on(two_sources, holdout):
    first, second = two_sources
    holdout = second if holdout == "ENTRY" else holdout
    index = data.index_dataset([first, second], seed=3, holdout_source=holdout)
    alone = [data.index_dataset(d, seed=3) for d in two_sources]
    assert index.holdout_source == "faces" and [s["held_out"] for s in index.sources] == [True, False][::-1]
    # Training and validation: the other source's own train and val; its official test split is left unused.
    assert index.train == alone[0].train and index.val == alone[0].val
    # Test: every image of the held-out source, all its splits, none of them in train or val.
    assert sorted(index.test.paths) == sorted(alone[1].pooled().paths) and len(index.test) == 16
    assert set(index.source_of(index.test)) == {"faces"}
    assert not set(index.test.paths) & set(index.train.paths + index.val.paths)
    assert index.sources[1]["counts"] == {"test": {"real": 8, "fake": 8}}
    assert index.sources[0]["counts"] == {"train": {"real": 6, "fake": 6}, "val": {"real": 2, "fake": 2}}


def test_bad_source_lists_name_the_entry(two_sources, tmp_path):
    first, second = two_sources
    missing, unknown = str(tmp_path / "nowhere"), str(_tree(tmp_path / "notes", {"cats": 2}))
    cases = [([], "data_dir is an empty list: expected"),
             ([first, missing], f"entry 1 ({missing!r}) does not exist or is not a folder: expected"),
             ([first, first + "/"], f"entry 1 ({first + '/'!r}) repeats entry 0 ({first!r})"),
             ([first, None], "entry 1 (None) is not a dataset: expected a folder path"),
             ([first, "synthetic:pixelshuffle"], "entry 1 ('synthetic:pixelshuffle') names no generator"),
             ([first, first + "/real_vs_fake"], f"entries 0 ({first!r}) and 1 ({first + '/real_vs_fake'!r}) overlap"),
             ([first, unknown], f"entry 1 ({unknown!r}): unknown dataset layout")]
    for data_dir, message in cases:
        with pytest.raises(DataError, match=re.escape(message)):
            data.index_dataset(data_dir)
    for holdout, message in (("nobody", "names none of the sources: expected one of ['140k-real-and-fake-faces', "
                                        "'faces']"),
                             (2, "no index of data_dir: expected 0 to 1"), (True, "names none of the sources")):
        with pytest.raises(DataError, match=re.escape(message)):
            data.index_dataset([first, second], holdout_source=holdout)
    for data_dir in (first, [first]):
        with pytest.raises(DataError, match="holdout_source 'faces' needs .*two or more datasets"):
            data.index_dataset(data_dir, holdout_source="faces")


# ---------------------------------------------------------------------------------------------- bad files


def _truncated_jpeg(path: Path) -> Path:
    write_image(path, seed=99, size=32)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def test_scan_files_skips_bad_files_with_reasons(tmp_path):
    good_jpg = write_image(tmp_path / "good.jpg", 1)
    png_named_jpg = write_image(tmp_path / "png_inside.jpg", 2, fmt="PNG")
    good_png = write_image(tmp_path / "good.png", 3)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("this is not an image at all")
    truncated = _truncated_jpeg(tmp_path / "truncated.jpg")
    truncated_png = tmp_path / "truncated.png"
    truncated_png.write_bytes(write_image(tmp_path / "full.png", 4, size=32).read_bytes()[:-40])
    paths = [str(p) for p in (good_jpg, empty, png_named_jpg, text, truncated, good_png, truncated_png)]
    good, skipped = data.scan_files(paths)
    assert good == [str(good_jpg), str(png_named_jpg), str(good_png)]
    reasons = {Path(r["path"]).name: r["reason"] for r in skipped}
    assert set(reasons) == {"empty.jpg", "text.jpg", "truncated.jpg", "truncated.png"}
    assert "0 bytes" in reasons["empty.jpg"]
    assert "not a JPEG or PNG" in reasons["text.jpg"]
    assert "truncated JPEG" in reasons["truncated.jpg"]
    assert "truncated PNG" in reasons["truncated.png"]


def test_truncated_jpeg_really_fails_to_decode(tmp_path):
    import tensorflow as tf

    truncated = _truncated_jpeg(tmp_path / "truncated.jpg")
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_image(tf.io.read_file(str(truncated)), channels=3, expand_animations=False)


def test_index_dataset_lists_skipped_files_and_keeps_good_ones(tmp_path):
    root = _tree(tmp_path / "faces", {"real": 4, "fake": 4})
    (root / "real" / "empty.jpg").write_bytes(b"")
    (root / "fake" / "text.jpeg").write_text("nope")
    _truncated_jpeg(root / "fake" / "cut.JPG")
    index = data.index_dataset(str(root))
    assert index.counts() == {"train": {"real": 3, "fake": 3}, "val": {"real": 1, "fake": 1}}
    assert sorted(Path(r["path"]).name for r in index.skipped) == ["cut.JPG", "empty.jpg", "text.jpeg"]
    used = index.train.paths + index.val.paths
    assert not any(Path(p).name in ("cut.JPG", "empty.jpg", "text.jpeg") for p in used)


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_layout_names_folder_found_and_expected(tmp_path):
    root = _tree(tmp_path / "stuff", {"cats": 2, "dogs": 2})
    with pytest.raises(DataError) as error:
        data.index_dataset(str(root))
    message = str(error.value)
    assert str(root) in message and "cats" in message and "dogs" in message
    assert "authentic" in message and "synthetic" in message and "validation" in message


def test_only_one_class_is_an_unknown_layout(tmp_path):
    root = _tree(tmp_path / "halfway", {"real": 3})
    with pytest.raises(DataError, match=r"unknown dataset layout.*\['real'\]"):
        data.index_dataset(str(root))


def test_split_folder_without_classes_names_it(tmp_path):
    root = _tree(tmp_path / "ds", {"train/real": 3, "train/fake": 3, "test/pictures": 2})
    with pytest.raises(DataError, match=r"split folder .*test has subfolders \['pictures'\]"):
        data.index_dataset(str(root))


def test_empty_class_names_the_class_folder(tmp_path):
    root = _tree(tmp_path / "faces", {"real": 4})
    (root / "fake").mkdir()
    (root / "fake" / "broken.jpg").write_bytes(b"")
    with pytest.raises(DataError) as error:
        data.index_dataset(str(root))
    assert str(root / "fake") in str(error.value) and "1 skipped" in str(error.value)


def test_missing_data_dir_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=str(missing)):
        data.index_dataset(str(missing))


# ---------------------------------------------------------------------------------------------- resolving


def test_find_kaggle_dataset_in_new_style_mount(tmp_path):
    input_root = tmp_path / "input"
    _tree(input_root / "datasets" / "someone" / "unrelated", {"images/cats": 2})
    slug = _make_140k(input_root / "datasets" / "xhlulu" / "140k-real-and-fake-faces", n=2)
    assert data.find_kaggle_dataset(str(input_root)) == str(slug)
    assert data.index_dataset(data.find_kaggle_dataset(str(input_root))).layout == "140k"


def test_find_kaggle_dataset_prefers_140k_and_handles_absence(tmp_path):
    input_root = tmp_path / "input"
    assert data.find_kaggle_dataset(str(input_root)) is None
    manjil = _make_manjilkarki(input_root / "a-deepfake-and-real-images", n=1)
    assert data.find_kaggle_dataset(str(input_root)) == str(manjil)
    big = _make_140k(input_root / "z" / "140k-real-and-fake-faces", n=1)
    assert data.find_kaggle_dataset(str(input_root)) == str(big)


def test_find_kaggle_dataset_in_the_older_mount_and_beside_an_attached_output(tmp_path):
    """Before 2026 a dataset lay at /kaggle/input/<slug>; an attached kernel output beside it is no dataset."""
    input_root = tmp_path / "input"
    (input_root / "notebooks" / "me" / "train-old" / "train").mkdir(parents=True)
    (input_root / "notebooks" / "me" / "train-old" / "train" / "params.json").write_text("{}")
    slug = _make_140k(input_root / "140k-real-and-fake-faces", n=1)
    assert data.find_kaggle_dataset(str(input_root)) == str(slug)


def test_find_kaggle_dataset_takes_the_newest_mounted_version(tmp_path):
    """A dataset mounted with versions/<N> below it: the highest N, compared as numbers (10 after 9)."""
    mount = tmp_path / "input" / "datasets" / "xhlulu" / "140k-real-and-fake-faces"
    for version in (9, 10, 2):
        _make_140k(mount / "versions" / str(version), n=2)
    found = data.find_kaggle_dataset(str(tmp_path / "input"))
    assert found == str(mount / "versions" / "10")
    assert data.index_dataset(found).root == str(mount / "versions" / "10" / "real_vs_fake" / "real-vs-fake")


@pytest.fixture
def fake_synthetic(monkeypatch, tmp_path):
    """Replace the embedded default's generation (slow) by a marker folder."""
    target = tmp_path / "synthetic-faces"
    monkeypatch.setattr(data.synthetic, "default_dataset_dir", lambda **kwargs: target)
    return target


def test_resolve_data_dir_order(monkeypatch, tmp_path, fake_synthetic):
    input_root = tmp_path / "input"
    monkeypatch.setenv("KAGGLE_INPUT_ROOT", str(input_root))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    explicit = _tree(tmp_path / "mine", {"real": 1})
    assert data.resolve_data_dir(str(explicit)) == str(explicit)
    assert data.resolve_data_dir(None) == str(fake_synthetic)  # nothing attached, not on Kaggle
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    _tree(input_root / "datasets" / "someone" / "cats", {"images/tabby": 1})
    with pytest.raises(DataError, match="no known dataset attached.*xhlulu/140k-real-and-fake-faces") as error:
        data.resolve_data_dir(None)
    assert "datasets/someone/cats/: images/" in str(error.value)  # what is attached, to see what went wrong
    slug = _make_140k(input_root / "datasets" / "xhlulu" / "140k-real-and-fake-faces", n=1)
    assert data.resolve_data_dir(None) == str(slug)
    assert data.resolve_data_dir("") == str(slug)
