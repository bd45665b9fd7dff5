"""Data: find a real-vs-fake face dataset and index it into train/val/test splits (utils.pipeline feeds them)."""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from utils import runtime, synthetic

CLASS_NAMES = ("real", "fake")  # index 0 = real, 1 = fake
REAL_ALIASES = ("real", "authentic", "original", "genuine")
FAKE_ALIASES = ("fake", "ai", "generated", "synthetic", "gan", "deepfake")
SPLIT_ALIASES = {"train": ("train", "training"), "valid": ("valid", "val", "validation"), "test": ("test", "testing")}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

NAME_140K = "140k-real-and-fake-faces"
NAME_MANJILKARKI = "deepfake-and-real-images"
MAX_WRAPPER_DEPTH = 3  # single-subfolder wrappers descended into by index_dataset
MAX_SEARCH_DEPTH = 4  # folder depth below an attached source's folder searched by find_kaggle_dataset
SCAN_TAIL_BYTES = 1024
SCAN_WORKERS = 16
MULTI_SOURCE_LAYOUT = "multi-source"  # the layout of an index that pools several datasets (data_dir a list)

JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"


class DataError(ValueError):
    """A dataset folder that cannot be used, with a message naming what was found and what was expected."""


@dataclass
class Split:
    """Image paths and their labels (0 = real, 1 = fake), in the same order."""

    paths: list[str]
    labels: list[int]

    def __len__(self) -> int:
        """Number of images."""
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Images per class, e.g. {"real": 10, "fake": 12}."""
        return {name: sum(1 for label in self.labels if label == index) for index, name in enumerate(CLASS_NAMES)}


def cap_split(split: Split, max_images: int | None, seed: int = 0) -> Split:
    """At most max_images per class of a split (seeded, order kept); the split itself when None."""
    if max_images is None:
        return split
    rng = np.random.default_rng(seed)
    labels = np.asarray(split.labels)
    keep = []
    for index in range(len(CLASS_NAMES)):
        members = np.flatnonzero(labels == index)
        if len(members) > max_images:
            members = rng.choice(members, size=int(max_images), replace=False)
        keep.extend(members.tolist())
    keep.sort()
    return Split([split.paths[i] for i in keep], [int(split.labels[i]) for i in keep])


@dataclass
class DatasetIndex:
    """An indexed dataset: where it was found, its layout, its splits and the bad files left out."""

    name: str
    root: str
    layout: str
    train: Split
    val: Split
    test: Split | None
    skipped: list[dict] = field(default_factory=list)
    # Several datasets pooled (data_dir a list, see index_sources): one entry per source, {"name", "root", "layout",
    # "counts", "held_out"}. Empty for a single dataset, which is then its own one source.
    sources: list[dict] = field(default_factory=list)
    holdout_source: str | None = None  # the source left out of training (its every image is the test split)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split; "test" only when the dataset has an official test split."""
        counts = {"train": self.train.counts(), "val": self.val.counts()}
        if self.test is not None:
            counts["test"] = self.test.counts()
        return counts

    def pooled(self) -> Split:
        """Every image of every split (train, val, then test) as one Split."""
        parts = [self.train, self.val] + ([self.test] if self.test is not None else [])
        return Split([p for s in parts for p in s.paths], [label for s in parts for label in s.labels])

    def source_names(self) -> list[str]:
        """The names of the pooled sources in data_dir order; [name] for a single dataset."""
        return [source["name"] for source in self.sources] or [self.name]

    def source_of(self, split: Split) -> list[str]:
        """The source name of each image of a split, found by the source roots the paths lie under (longest first)."""
        if not self.sources:
            return [self.name] * len(split)
        # Longest root first, so a path is never credited to a folder that merely shares a prefix with its own.
        roots = sorted(((os.path.join(s["root"], ""), s["name"]) for s in self.sources), key=lambda r: -len(r[0]))
        names = []
        for path in split.paths:
            name = next((n for root, n in roots if path.startswith(root)), None)
            if name is None:
                raise DataError(f"{path} lies under none of the sources' roots {[r for r, _ in roots]}")
            names.append(name)
        return names

    def by_source(self, split: Split) -> dict[str, Split]:
        """A split's images per source (data_dir order, sources without images in it left out), order kept."""
        names = self.source_of(split)
        parts = {}
        for source in self.source_names():
            keep = [i for i, n in enumerate(names) if n == source]
            if keep:
                parts[source] = Split([split.paths[i] for i in keep], [int(split.labels[i]) for i in keep])
        return parts


@dataclass
class _Layout:
    name: str
    layout: str
    root: str
    # split ("train" | "valid" | "test" | "all") -> class index -> class folders
    folders: dict[str, dict[int, list[str]]]


# ---------------------------------------------------------------------------------------------- folder layout


def _subdirs(folder: str) -> list[str]:
    """Non-hidden subfolders of a folder, sorted by name so results never depend on filesystem order."""
    try:
        with os.scandir(folder) as entries:
            names = [e.name for e in entries if not e.name.startswith(".") and e.is_dir()]
    except OSError:
        return []
    return [os.path.join(folder, name) for name in sorted(names)]


def _child(folder: str, name: str) -> str | None:
    """The subfolder whose name equals `name` case-insensitively, if any."""
    for path in _subdirs(folder):
        if os.path.basename(path).lower() == name:
            return path
    return None


def _class_of(name: str) -> int | None:
    """Class index of a folder name (case-insensitive alias match), None when it is no class folder."""
    name = name.lower()
    if name in REAL_ALIASES:
        return 0
    if name in FAKE_ALIASES:
        return 1
    return None


def _split_of(name: str) -> str | None:
    """Split key of a folder name (case-insensitive alias match), None when it is no split folder."""
    name = name.lower()
    for split, aliases in SPLIT_ALIASES.items():
        if name in aliases:
            return split
    return None


def _class_folders(folder: str) -> dict[int, list[str]]:
    """Class index -> class subfolders of a folder (several aliases of one class are merged)."""
    classes: dict[int, list[str]] = {}
    for path in _subdirs(folder):
        index = _class_of(os.path.basename(path))
        if index is not None:
            classes.setdefault(index, []).append(path)
    return classes


def _expected() -> str:
    """What a dataset folder should contain, for error messages."""
    splits = "; ".join(f"{key}: {'/'.join(aliases)}" for key, aliases in SPLIT_ALIASES.items())
    return (f"expected class folders for real ({'/'.join(REAL_ALIASES)}) and fake ({'/'.join(FAKE_ALIASES)}), "
            f"case-insensitive, either directly or inside split folders ({splits})")


def _found(folder: str) -> str:
    """The subfolders of a folder, for error messages."""
    names = [os.path.basename(p) for p in _subdirs(folder)]
    return f"subfolders {names}" if names else "no subfolders"


def _known_layout(folder: str) -> tuple[str, str, str] | None:
    """(name, layout, split root) when the folder is, or directly wraps, one of the two Kaggle datasets."""
    # 140k: <root>/real_vs_fake/real-vs-fake/{train,valid,test}/{real,fake}; data_dir may be any of the three
    inner = _child(folder, "real_vs_fake")
    for candidate in (inner and _child(inner, "real-vs-fake"), _child(folder, "real-vs-fake"), folder):
        if candidate and os.path.basename(candidate).lower() == "real-vs-fake":
            return NAME_140K, "140k", candidate
    # manjilkarki: <root>/Dataset/{Train,Validation,Test}/{Real,Fake}; "Dataset" alone is too generic a name
    for candidate in (_child(folder, "dataset"), folder):
        if candidate and os.path.basename(candidate).lower() == "dataset":
            names = {os.path.basename(p).lower() for p in _subdirs(candidate)}
            if {"train", "validation"} <= names:
                return NAME_MANJILKARKI, "manjilkarki", candidate
    return None


def _manifest_name(split_root: str, layout: str) -> str | None:
    """The "name" in a manifest.json at the dataset root (the embedded synthetic dataset writes one), if any."""
    import json

    root = os.path.dirname(split_root)
    if layout == "140k" and os.path.basename(root).lower() == "real_vs_fake":
        root = os.path.dirname(root)
    try:
        with open(os.path.join(root, "manifest.json")) as handle:
            name = json.load(handle).get("name")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def _split_folders(folder: str) -> dict[str, dict[int, list[str]]]:
    """Split key -> class folders for a folder holding split folders; {} when it holds none."""
    splits: dict[str, list[str]] = {}
    for path in _subdirs(folder):
        key = _split_of(os.path.basename(path))
        if key is not None:
            splits.setdefault(key, []).append(path)
    result: dict[str, dict[int, list[str]]] = {}
    for key, paths in splits.items():
        merged: dict[int, list[str]] = {}
        for path in paths:
            classes = _class_folders(path)
            if set(classes) != {0, 1}:
                raise DataError(f"split folder {path} has {_found(path)}; {_expected()}")
            for index, dirs in classes.items():
                merged.setdefault(index, []).extend(dirs)
        result[key] = merged
    if result and "train" not in result and "valid" not in result:
        raise DataError(f"{folder} has only split folders {sorted(result)}; a train or valid split is needed "
                        f"({'/'.join(SPLIT_ALIASES['train'] + SPLIT_ALIASES['valid'])})")
    return result


def _detect_layout(folder: str) -> _Layout:
    """Recognise the dataset layout of a folder, descending through single-subfolder wrappers."""
    current = folder
    for _ in range(MAX_WRAPPER_DEPTH + 1):
        known = _known_layout(current)
        if known is not None:
            name, layout, split_root = known
            splits = _split_folders(split_root)
            if not splits:
                raise DataError(f"{split_root} looks like the {name} dataset but has {_found(split_root)}; "
                                f"{_expected()}")
            return _Layout(_manifest_name(split_root, layout) or name, layout, split_root, splits)
        splits = _split_folders(current)
        if splits:
            return _Layout(os.path.basename(current), "split-folders", current, splits)
        classes = _class_folders(current)
        if set(classes) == {0, 1}:
            return _Layout(os.path.basename(current), "class-folders", current, {"all": classes})
        subdirs = _subdirs(current)
        if len(subdirs) != 1 or classes:
            break
        current = subdirs[0]  # Kaggle datasets often wrap everything in one folder
    where = current if current == folder else f"{current} (inside {folder})"
    raise DataError(f"unknown dataset layout in {where}: found {_found(current)}; {_expected()}")


def _images_under(folders: list[str]) -> list[str]:
    """Image files (by extension, case-insensitive) found recursively in the folders, sorted."""
    found = []
    for top in folders:
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found.extend(os.path.join(dirpath, f) for f in filenames
                         if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found)


# ---------------------------------------------------------------------------------------------- finding data


def find_kaggle_dataset(input_root: str | None = None) -> str | None:
    """The root of an attached 140k (preferred) or manjilkarki dataset under the Kaggle input folder, or None.

    Every attached source is searched (runtime.attached_sources: datasets/<owner>/<slug>/, its newest
    versions/<N>/, or <slug>/ in the older layout), each in name order; the first of a kind is taken.
    """
    matches: dict[str, str] = {}
    for source in runtime.attached_sources(input_root):
        queue = deque([(str(source), 0)])
        # breadth-first over folders only, never into image folders, so the 140k files are not listed
        while queue:
            folder, depth = queue.popleft()
            known = _known_layout(folder)
            if known is not None:
                matches.setdefault(known[1], folder)
                continue
            if depth >= MAX_SEARCH_DEPTH:
                continue
            for sub in _subdirs(folder):
                if _class_of(os.path.basename(sub)) is None:
                    queue.append((sub, depth + 1))
    return matches.get("140k") or matches.get("manjilkarki")


def resolve_data_dir(data_dir: str | None) -> str:
    """The dataset folder: a generated "synthetic:<upsampler>", an existing folder, an attached Kaggle one, or the default."""
    if str(data_dir).startswith(synthetic.GENERATOR_PREFIX):
        if data_dir not in synthetic.GENERATOR_NAMES:
            raise DataError(f"data_dir {data_dir!r} names no generator; the generated datasets are "
                            f"{', '.join(synthetic.GENERATOR_NAMES)}")
        return str(synthetic.default_dataset_dir(upsampler=data_dir.removeprefix(synthetic.GENERATOR_PREFIX)))
    if data_dir not in (None, ""):
        path = os.path.abspath(os.path.expanduser(str(data_dir)))
        if not os.path.isdir(path):
            raise DataError(f"data_dir {path} does not exist or is not a folder")
        return path
    found = find_kaggle_dataset()
    if found is not None:
        return found
    if runtime.on_kaggle():
        raise DataError(f"no known dataset attached under {runtime.input_root()}: add xhlulu/140k-real-and-fake-faces "
                        "to the notebook's inputs (kernel-metadata.json dataset_sources), or give data_dir; "
                        f"{runtime.describe_attached()}")
    return str(synthetic.default_dataset_dir())


# ---------------------------------------------------------------------------------------------- bad files


def _check_file(path: str) -> str | None:
    """Why a file is not a usable image (reading only its first and last bytes), None when it looks fine."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as handle:
            head = handle.read(len(_PNG_MAGIC))
            handle.seek(max(0, size - SCAN_TAIL_BYTES))
            tail = handle.read()
    except OSError as error:
        return f"unreadable: {error}"
    if head.startswith(JPEG_MAGIC):
        return None if _JPEG_END in tail else "truncated JPEG (no FFD9 end marker)"
    if head.startswith(_PNG_MAGIC):
        return None if _PNG_END in tail else "truncated PNG (no IEND chunk at the end)"
    return f"not a JPEG or PNG image (starts with {head[:4]!r})"


def scan_files(paths: list[str]) -> tuple[list[str], list[dict]]:
    """Split paths into usable images (input order kept) and skipped records {"path", "reason"}."""
    with ThreadPoolExecutor(max_workers=SCAN_WORKERS) as pool:
        reasons = list(pool.map(_check_file, paths, chunksize=64))
    good = [p for p, reason in zip(paths, reasons) if reason is None]
    skipped = [{"path": p, "reason": reason} for p, reason in zip(paths, reasons) if reason is not None]
    return good, skipped


# ---------------------------------------------------------------------------------------------- indexing


def _subset(paths: list[str], max_images: int | None, seed: int, stream: int) -> list[str]:
    """A seeded random subset of at most max_images of the (sorted) paths, kept sorted."""
    if max_images is None or len(paths) <= max_images:
        return paths
    rng = np.random.default_rng([seed, stream])
    chosen = rng.choice(len(paths), size=max_images, replace=False)
    return [paths[i] for i in sorted(chosen)]


def _collect(layout: _Layout, splits: list[str], max_images: int | None, seed: int, stream: int,
             skipped: list[dict]) -> Split:
    """The usable images of the given splits' class folders, capped per class, as one Split."""
    paths: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(CLASS_NAMES):
        folders = [d for split in splits for d in layout.folders[split][index]]
        found = _subset(_images_under(folders), max_images, seed, stream * 2 + index)
        good, bad = scan_files(found)
        skipped.extend(bad)
        if not good:
            raise DataError(f"class {name!r} has no usable images in {folders} ({len(found)} files with extensions "
                            f"{'/'.join(IMAGE_EXTENSIONS)} found, {len(bad)} skipped as bad)")
        paths.extend(good)
        labels.extend([index] * len(good))
    return Split(paths, labels)


def _sorted_split(paths: list[str], labels: list[int]) -> Split:
    """A Split sorted by path, so its order depends only on which files it holds."""
    order = sorted(range(len(paths)), key=paths.__getitem__)
    return Split([paths[i] for i in order], [int(labels[i]) for i in order])


def index_dataset(data_dir: str | Sequence[str] | None, val_split: float = 0.25, seed: int = 0,
                  max_images: int | None = None, holdout_source: str | int | None = None) -> DatasetIndex:
    """Find the dataset, index its images, drop bad files and split the training pool stratified into train/val.

    A list of datasets is pooled per split, each image keeping its source (see index_sources); a one-entry list is
    that dataset alone. holdout_source (multi-source only) leaves one source out of training (see index_sources).
    """
    from sklearn.model_selection import train_test_split

    if isinstance(data_dir, (list, tuple)):
        entries = check_data_dirs(data_dir)
        if len(entries) > 1 or holdout_source is not None:
            return index_sources(entries, val_split, seed, max_images, holdout_source)
        data_dir = entries[0]
    elif holdout_source is not None:
        raise DataError(f"holdout_source {holdout_source!r} needs data_dir to be a list of two or more datasets "
                        f"(one to hold out, the others to train on), got data_dir {data_dir!r}")
    if not 0.0 < val_split < 1.0:
        raise DataError(f"val_split must be between 0 and 1 (exclusive), got {val_split}")
    if max_images is not None and max_images < 1:
        raise DataError(f"max_images must be a positive number of images per class or None, got {max_images}")
    layout = _detect_layout(resolve_data_dir(data_dir))
    skipped: list[dict] = []
    pool_splits = [s for s in ("all", "train", "valid") if s in layout.folders]
    pool = _collect(layout, pool_splits, max_images, seed, 0, skipped)
    test = _collect(layout, ["test"], max_images, seed, 1, skipped) if "test" in layout.folders else None
    try:
        train_paths, val_paths, train_labels, val_labels = train_test_split(
            pool.paths, pool.labels, test_size=val_split, random_state=seed, stratify=pool.labels)
    except ValueError as error:
        raise DataError(f"{layout.root}: cannot split {pool.counts()} images {1 - val_split:.0%}:{val_split:.0%} "
                        f"stratified by class (each class needs enough images for both parts): {error}") from error
    return DatasetIndex(name=layout.name, root=layout.root, layout=layout.layout,
                        train=_sorted_split(train_paths, train_labels), val=_sorted_split(val_paths, val_labels),
                        test=test, skipped=skipped)


# ---------------------------------------------------------------------------------------------- several sources


def check_data_dirs(entries: Sequence[Any]) -> list[str]:
    """The entries of a list data_dir, checked: non-empty, each an existing folder or a generator name, none twice."""
    generators = ", ".join(synthetic.GENERATOR_NAMES)
    if not entries:
        raise DataError("data_dir is an empty list: expected one or more dataset folders or generator names "
                        f"({generators})")
    seen: dict[str, int] = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry:
            raise DataError(f"data_dir entry {position} ({entry!r}) is not a dataset: expected a folder path or one "
                            f"of {generators} (None, the automatic choice, cannot be pooled)")
        if entry.startswith(synthetic.GENERATOR_PREFIX):
            if entry not in synthetic.GENERATOR_NAMES:
                raise DataError(f"data_dir entry {position} ({entry!r}) names no generator; the generated datasets "
                                f"are {generators}")
            key = entry
        else:
            key = os.path.realpath(os.path.expanduser(entry))
            if not os.path.isdir(key):
                raise DataError(f"data_dir entry {position} ({entry!r}) does not exist or is not a folder: expected "
                                f"an existing dataset folder or one of {generators}")
        if key in seen:
            raise DataError(f"data_dir entry {position} ({entry!r}) repeats entry {seen[key]} "
                            f"({entries[seen[key]]!r}): list each dataset once")
        seen[key] = position
    return list(entries)


def _distinct_names(names: list[str]) -> list[str]:
    """The names with a repeated one suffixed -2, -3, ... in order of appearance (never clashing with another)."""
    result: list[str] = []
    for name in names:
        candidate, number = name, 1
        while candidate in result or (candidate != name and candidate in names):
            number += 1
            candidate = f"{name}-{number}"
        result.append(candidate)
    return result


def _holdout_position(holdout_source: str | int, entries: list[str], names: list[str]) -> int:
    """Where in data_dir the held-out source is: by its index, its source name or its data_dir entry."""
    if len(entries) < 2:
        raise DataError(f"holdout_source {holdout_source!r} needs two or more datasets in data_dir (one to hold "
                        f"out, the others to train on), got {entries!r}")
    if isinstance(holdout_source, int) and not isinstance(holdout_source, bool):
        if 0 <= holdout_source < len(entries):
            return holdout_source
        raise DataError(f"holdout_source {holdout_source} is no index of data_dir: expected 0 to {len(entries) - 1} "
                        f"or one of the source names {names}")
    if isinstance(holdout_source, str):
        if holdout_source in names:
            return names.index(holdout_source)
        if holdout_source in entries:
            return entries.index(holdout_source)
    raise DataError(f"holdout_source {holdout_source!r} names none of the sources: expected one of {names}, a "
                    f"data_dir entry {entries} or an index 0 to {len(entries) - 1}")


def _concat(parts: list[Split]) -> Split:
    """Splits joined in order."""
    return Split([p for s in parts for p in s.paths], [int(label) for s in parts for label in s.labels])


def index_sources(data_dirs: Sequence[str], val_split: float = 0.25, seed: int = 0, max_images: int | None = None,
                  holdout_source: str | int | None = None) -> DatasetIndex:
    """Several datasets pooled per split, each indexed alone as index_dataset would (same val_split/seed/max_images).

    train, val and test are the sources' train, val and test splits joined in data_dir order. A source without an
    official test split adds nothing to the pooled test split: its images are in train and val only, so its
    held-out numbers are validation numbers (no test split is carved out of it, because a run re-indexed later must
    find exactly the validation split it trained with). The test split exists when any source has one.

    With holdout_source (a source name, data_dir entry or index): train and val pool the other sources only, and
    the test split is every image of the held-out source (all of its splits, each capped by max_images as when it is
    indexed alone); the other sources' own test splits are then left unused.
    """
    entries = check_data_dirs(data_dirs)
    singles = []
    for position, entry in enumerate(entries):
        try:
            singles.append(index_dataset(entry, val_split, seed, max_images))
        except DataError as error:
            raise DataError(f"data_dir entry {position} ({entry!r}): {error}") from error
    roots = [os.path.realpath(single.root) for single in singles]
    for i, j in ((i, j) for i in range(len(roots)) for j in range(len(roots)) if i < j):
        if os.path.commonpath([roots[i], roots[j]]) in (roots[i], roots[j]):
            # One source inside another would list its images twice and blur which source an image came from.
            raise DataError(f"data_dir entries {i} ({entries[i]!r}) and {j} ({entries[j]!r}) overlap: dataset roots "
                            f"{singles[i].root} and {singles[j].root} lie one inside the other")
    names = _distinct_names([single.name for single in singles])
    held = None if holdout_source is None else _holdout_position(holdout_source, entries, names)
    train, val, test, sources, skipped = [], [], [], [], []
    for position, (name, single) in enumerate(zip(names, singles)):
        skipped.extend(single.skipped)
        if position == held:
            everything = single.pooled()
            part = _sorted_split(everything.paths, everything.labels)
            test.append(part)
            counts = {"test": part.counts()}
        else:
            train.append(single.train)
            val.append(single.val)
            counts = {"train": single.train.counts(), "val": single.val.counts()}
            if held is None and single.test is not None:
                test.append(single.test)
                counts["test"] = single.test.counts()
        sources.append({"name": name, "root": single.root, "layout": single.layout, "counts": counts,
                        "held_out": position == held})
    return DatasetIndex(name=" + ".join(names), root="; ".join(single.root for single in singles),
                        layout=MULTI_SOURCE_LAYOUT, train=_concat(train), val=_concat(val),
                        test=_concat(test) if test else None, skipped=skipped, sources=sources,
                        holdout_source=None if held is None else names[held])
