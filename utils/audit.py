"""Dataset audit: per-class file properties (format/size/quality shortcuts), trivial probes, split leakage, spectra."""
from __future__ import annotations

import hashlib
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter, JpegImagePlugin

from utils import probes
from utils.data import CLASS_NAMES, DatasetIndex, cap_split
from utils.figures import finish, new_figure
from utils.runtime import to_jsonable

# libjpeg's standard (IJG, Annex K) luminance table in natural row-major order, the order Pillow >= 8.3 reports.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)
_QUALITIES = np.arange(1, 101)
# libjpeg's jpeg_quality_scaling + jpeg_add_quant_table (force_baseline), one row per quality 1..100.
_IJG_SCALED = np.clip((_IJG_LUMA[None, :] * np.where(_QUALITIES < 50, 5000 // _QUALITIES, 200 - 2 * _QUALITIES)[:, None]
                       + 50) // 100, 1, 255)
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}

PROPORTION_TOL = 0.1  # total-variation distance between class distributions of a categorical property that warns
QUALITY_TOL = 5  # difference of median JPEG quality that warns
FILE_SIZE_RATIO = 1.5  # ratio of median file sizes that warns
SIZE_RATIO = 1.1  # ratio of median width or height that warns when sizes are too varied to compare as categories
MAX_SIZE_CATEGORIES = 20  # above this many distinct WxH, sizes are compared by their medians
MAX_EXAMPLES = 20
_CONSEQUENCE = "a detector can learn {what} instead of the face"


# ----------------------------------------------------------------------------------------------- file properties

def estimate_jpeg_quality(quantization: Mapping[int, Sequence[int]] | None) -> int | None:
    """IJG quality 1..100 whose scaled standard luminance table is closest (L1) to table 0; None without one."""
    if not quantization or 0 not in quantization or len(quantization[0]) != 64:
        return None
    table = np.asarray(quantization[0], dtype=np.int64)
    return int(_QUALITIES[np.argmin(np.abs(_IJG_SCALED - table[None, :]).sum(axis=1))])


def _file_row(path: str) -> dict[str, Any]:
    row: dict[str, Any] = {"path": path, "width": None, "height": None, "mode": None, "format": None,
                           "file_size": None, "jpeg_quality": None, "subsampling": None, "error": None}
    try:
        row["file_size"] = os.path.getsize(path)
        with Image.open(path) as image:  # lazy: reads the header and JPEG tables, not the pixels
            row.update(width=image.width, height=image.height, mode=image.mode, format=image.format)
            if isinstance(image, JpegImagePlugin.JpegImageFile):
                row["jpeg_quality"] = estimate_jpeg_quality(getattr(image, "quantization", None))
                row["subsampling"] = _SUBSAMPLING.get(JpegImagePlugin.get_sampling(image))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        row["error"] = f"{type(error).__name__}: {error}"
    return row


def _parallel_map(function: Callable[[str], Any], paths: Iterable[str], max_workers: int) -> list[Any]:
    # PIL decoding and hashlib release the GIL, so threads scale on file-bound work without pickling.
    paths = [os.fspath(p) for p in paths]
    if max_workers <= 1 or len(paths) < 2:
        return [function(p) for p in paths]
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        return list(pool.map(function, paths))


def file_properties(paths: Iterable[str | os.PathLike], max_workers: int = 8) -> pd.DataFrame:
    """Per-file header properties: path, width, height, mode, format, file_size, jpeg_quality, subsampling, error."""
    frame = pd.DataFrame(_parallel_map(_file_row, paths, max_workers),
                         columns=["path", "width", "height", "mode", "format", "file_size", "jpeg_quality",
                                  "subsampling", "error"])
    for column in ("width", "height", "file_size", "jpeg_quality"):
        frame[column] = frame[column].astype("Int64")  # nullable: None for unreadable files / non-JPEG
    return frame


# ----------------------------------------------------------------------------------------------- class comparison

def _stats(values: pd.Series) -> dict[str, float] | None:
    values = pd.to_numeric(values.dropna(), errors="coerce").dropna().astype(float)
    if values.empty:
        return None
    return {"mean": float(values.mean()), "median": float(values.median()), "min": float(values.min()),
            "max": float(values.max())}


def _shares(values: pd.Series) -> dict[str, float]:
    values = values.dropna().astype(str)
    if values.empty:
        return {}
    return {str(k): float(v) for k, v in values.value_counts(normalize=True).items()}


def _describe_shares(shares: Mapping[str, float], top: int = 3) -> str:
    if not shares:
        return "none"
    items = [f"{name} ({share:.0%})" for name, share in list(shares.items())[:top]]
    more = len(shares) - top
    return ", ".join(items) + (f", … {more} more" if more > 0 else "")


def _tvd(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _class_column(props: pd.DataFrame) -> pd.Series:
    if "label" not in props.columns:
        raise ValueError(f"compare_classes needs a 'label' column (0 = real, 1 = fake), "
                         f"got columns {list(props.columns)}")

    def name(label: Any) -> str:
        if isinstance(label, str):
            return label
        if int(label) not in range(len(CLASS_NAMES)):
            raise ValueError(f"label {label!r} is not a class index of {CLASS_NAMES}")
        return CLASS_NAMES[int(label)]

    return props["label"].map(name)


def _class_summary(frame: pd.DataFrame) -> dict[str, Any]:
    ok = frame[frame["error"].isna()] if "error" in frame.columns else frame
    sizes = ok["width"].astype(str) + "x" + ok["height"].astype(str)
    jpeg = ok[ok["jpeg_quality"].notna()]
    return {
        "n": int(len(frame)), "n_unreadable": int(len(frame) - len(ok)),
        "width": _stats(ok["width"]), "height": _stats(ok["height"]),
        "n_distinct_sizes": int(sizes.nunique()), "sizes": dict(itertools.islice(_shares(sizes).items(), 10)),
        "modes": _shares(ok["mode"]), "formats": _shares(ok["format"]),
        "subsampling": _shares(jpeg["subsampling"]) if "subsampling" in jpeg.columns else {},
        "file_size": _stats(ok["file_size"]), "jpeg_quality": _stats(jpeg["jpeg_quality"]),
    }


def compare_classes(props: pd.DataFrame, proportion_tol: float = PROPORTION_TOL, quality_tol: float = QUALITY_TOL,
                    file_size_ratio: float = FILE_SIZE_RATIO) -> tuple[dict[str, dict], list[str]]:
    """Per-class summary of file_properties (+ "label") and warnings for properties that separate real from fake."""
    names = _class_column(props)
    summary = {name: _class_summary(props[names == name]) for name in CLASS_NAMES if (names == name).any()}
    missing = [name for name in CLASS_NAMES if name not in summary]
    if missing:
        return summary, [f"cannot compare classes: no {' or '.join(missing)} images"]
    a_name, b_name = CLASS_NAMES
    a, b = summary[a_name], summary[b_name]
    warnings: list[str] = []

    def categorical(prop: str, key: str, what: str, full: Callable[[str], dict[str, float]] | None = None) -> None:
        share_a, share_b = (full(a_name), full(b_name)) if full else (a[key], b[key])
        if share_a and share_b and _tvd(share_a, share_b) >= proportion_tol:
            warnings.append(f"{prop} differs: {a_name} = {_describe_shares(share_a)}, {b_name} = "
                            f"{_describe_shares(share_b)} — {_CONSEQUENCE.format(what=what)}")

    categorical("format", "formats", "the file format")
    categorical("colour mode", "modes", "the colour mode")
    categorical("JPEG chroma subsampling", "subsampling", "chroma-subsampling artefacts")
    ok = props["error"].isna() if "error" in props.columns else pd.Series(True, index=props.index)
    if max(a["n_distinct_sizes"], b["n_distinct_sizes"]) <= MAX_SIZE_CATEGORIES:
        def size_shares(name: str) -> dict[str, float]:
            rows = props[ok & (names == name)]
            return _shares(rows["width"].astype(str) + "x" + rows["height"].astype(str))

        categorical("image size", "sizes", "the resolution or resizing artefacts", size_shares)
    elif a["width"] and b["width"]:
        ratios = [max(a[k]["median"], b[k]["median"]) / max(min(a[k]["median"], b[k]["median"]), 1)
                  for k in ("width", "height")]
        if max(ratios) >= SIZE_RATIO:
            warnings.append(f"image size differs: {a_name} median = {a['width']['median']:.0f}x"
                            f"{a['height']['median']:.0f}, {b_name} median = {b['width']['median']:.0f}x"
                            f"{b['height']['median']:.0f} — "
                            f"{_CONSEQUENCE.format(what='the resolution or resizing artefacts')}")
    if a["jpeg_quality"] and b["jpeg_quality"]:
        qa, qb = a["jpeg_quality"]["median"], b["jpeg_quality"]["median"]
        if abs(qa - qb) >= quality_tol:
            warnings.append(f"JPEG quality differs: {a_name} median = {qa:.0f}, {b_name} median = {qb:.0f} — "
                            f"{_CONSEQUENCE.format(what='the compression strength')}")
    if a["file_size"] and b["file_size"]:
        sa, sb = a["file_size"]["median"], b["file_size"]["median"]
        ratio = max(sa, sb) / max(min(sa, sb), 1.0)
        if ratio >= file_size_ratio:
            warnings.append(f"file size differs: {a_name} median = {_human_bytes(sa)}, {b_name} median = "
                            f"{_human_bytes(sb)} ({ratio:.1f}x) — "
                            f"{_CONSEQUENCE.format(what='compression strength or image detail')}")
    return summary, warnings


# ----------------------------------------------------------------------------------------------- leakage

def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _phash_words(path: str, hash_size: int) -> np.ndarray:
    import imagehash  # pulls in scipy; only needed here

    with Image.open(path) as image:
        # JPEG DCT-domain downscale: phash only looks at a (4*hash_size)^2 thumbnail, so full decoding is wasted.
        image.draft("L", (hash_size * 8, hash_size * 8))
        bits = imagehash.phash(image, hash_size=hash_size).hash.flatten()
    bits = np.concatenate([bits, np.zeros(-len(bits) % 64, dtype=bool)])
    return np.packbits(bits).view(">u8").astype(np.uint64)


def _or_none(function: Callable[[str], Any]) -> Callable[[str], Any]:
    def wrapped(path: str) -> Any:
        try:
            return function(path)
        except (OSError, ValueError, Image.DecompressionBombError):
            return None
    return wrapped


def content_hashes(paths: Iterable[str | os.PathLike], max_workers: int = 8) -> list[str]:
    """SHA-256 hex digest of each file's bytes."""
    return _parallel_map(_sha256, paths, max_workers)


def perceptual_hashes(paths: Iterable[str | os.PathLike], hash_size: int = 8, max_workers: int = 8) -> np.ndarray:
    """imagehash.phash of each image packed into uint64 words: shape [n, ceil(hash_size**2 / 64)]."""
    paths = [os.fspath(p) for p in paths]
    hashes = _parallel_map(_or_none(lambda p: _phash_words(p, hash_size)), paths, max_workers)
    bad = [p for p, h in zip(paths, hashes) if h is None]
    if bad:
        raise ValueError(f"cannot read {len(bad)} image(s) for perceptual hashing, e.g. {bad[0]}")
    return np.stack(hashes) if hashes else np.zeros((0, -(-hash_size * hash_size // 64)), dtype=np.uint64)


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _POPCOUNT8[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1, dtype=np.uint8)


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int = 4, block: int = 2048,
                         max_workers: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j of hash rows with Hamming distance <= max_distance, as (i, j, distance) arrays.

    Exhaustive XOR + popcount over block x block tiles of the upper triangle, in threads (numpy releases the GIL):
    n^2/2 comparisons, memory O(block^2) per thread (2048^2 uint64 = 32 MB). Measured 0.8-1.8 s per 1e8 comparisons
    per core on a shared 2-core box, so 140k 64-bit hashes (9.8e9 comparisons) take ~1-2 min on 2 cores. Exact, and
    unlike bucket-based multi-index hashing its cost does not depend on how the hashes cluster (faces hash alike).
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    if hashes.ndim == 1:
        hashes = hashes[:, None]
    n = len(hashes)
    upper = np.triu(np.ones((block, block), dtype=bool), k=1)

    def row_of_tiles(i0: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        found, rows = [], hashes[i0:i0 + block]
        for j0 in range(i0, n, block):
            cols = hashes[j0:j0 + block]
            distance = _popcount(rows[:, None, 0] ^ cols[None, :, 0])
            if hashes.shape[1] > 1:  # more than 64 bits can exceed uint8
                distance = distance.astype(np.uint16)
                for word in range(1, hashes.shape[1]):
                    distance += _popcount(rows[:, None, word] ^ cols[None, :, word])
            mask = distance <= max_distance
            if j0 == i0:
                mask &= upper[:len(rows), :len(cols)]
            ii, jj = np.nonzero(mask)
            if len(ii):
                found.append((ii + i0, jj + j0, distance[ii, jj].astype(np.uint16)))
        return found

    starts = range(0, n, block)
    if max_workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            tiles = [t for row in pool.map(row_of_tiles, starts) for t in row]
    else:
        tiles = [t for i0 in starts for t in row_of_tiles(i0)]
    if not tiles:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint16)
    return tuple(np.concatenate([t[k] for t in tiles]) for k in range(3))


def _pair_summary(names: list[str], pair_counts: np.ndarray, examples: list[dict], max_examples: int) -> dict:
    # cross-split examples first: they are the leakage that inflates validation/test scores
    examples = sorted(examples, key=lambda e: e["split_a"] == e["split_b"])[:max_examples]
    return {"n_pairs": int(np.triu(pair_counts).sum()),
            "within": {s: int(pair_counts[k, k]) for k, s in enumerate(names)},
            "across": {f"{names[a]}-{names[b]}": int(pair_counts[a, b])
                       for a, b in itertools.combinations(range(len(names)), 2)},
            "examples": examples}


def _example(names: list[str], split_a: int, split_b: int, path_a: str, path_b: str, distance: int) -> dict:
    if split_a > split_b:
        split_a, split_b, path_a, path_b = split_b, split_a, path_b, path_a
    return {"split_a": names[split_a], "path_a": path_a, "split_b": names[split_b], "path_b": path_b,
            "distance": int(distance)}


def find_duplicates(split_paths: Mapping[str, Sequence[str | os.PathLike]], max_distance: int = 4, hash_size: int = 8,
                    max_examples: int = MAX_EXAMPLES, max_workers: int = 8) -> dict[str, Any]:
    """Exact (SHA-256) and near (phash Hamming <= max_distance, not exact) duplicate pairs within and across splits.

    Counts are pairs ("within" per split, "across" per "a-b" split pair in the given order); examples list
    cross-split pairs first. Unreadable files are listed, not fatal. Cost: one header-scaled decode and one read
    per image for hashing, plus near_duplicate_pairs for the search.
    """
    names = list(split_paths)
    paths = [os.fspath(p) for s in names for p in split_paths[s]]
    split_of = np.array([k for k, s in enumerate(names) for _ in split_paths[s]], dtype=np.int64)
    shas = _parallel_map(_or_none(_sha256), paths, max_workers)
    phashes = _parallel_map(_or_none(lambda p: _phash_words(p, hash_size)), paths, max_workers)
    ok = np.array([s is not None and h is not None for s, h in zip(shas, phashes)], dtype=bool)

    exact_counts, exact_examples = np.zeros((len(names), len(names)), dtype=np.int64), []
    groups: dict[str, list[int]] = {}
    for index in np.flatnonzero(ok):
        groups.setdefault(shas[index], []).append(int(index))
    group_of = np.full(len(paths), -1, dtype=np.int64)
    for group_id, members in enumerate(groups.values()):
        group_of[members] = group_id
        if len(members) < 2:
            continue
        # pairs counted combinatorially per split pair, so a file copied 1000 times does not enumerate 500k pairs
        per_split = [[m for m in members if split_of[m] == k] for k in range(len(names))]
        for a, b in itertools.combinations_with_replacement(range(len(names)), 2):
            ma, mb = per_split[a], per_split[b]
            count = len(ma) * (len(ma) - 1) // 2 if a == b else len(ma) * len(mb)
            if count:
                exact_counts[a, b] += count
                if len(exact_examples) < 4 * max_examples:
                    first, second = (ma[0], ma[1]) if a == b else (ma[0], mb[0])
                    exact_examples.append(_example(names, a, b, paths[first], paths[second], 0))

    near_counts, near_examples = np.zeros((len(names), len(names)), dtype=np.int64), []
    kept = np.flatnonzero(ok)
    if len(kept) > 1:
        i, j, d = near_duplicate_pairs(np.stack([phashes[k] for k in kept]), max_distance,
                                       max_workers=min(max_workers, os.cpu_count() or 1))
        i, j = kept[i], kept[j]
        distinct = group_of[i] != group_of[j]
        i, j, d = i[distinct], j[distinct], d[distinct]
        split_i, split_j = np.minimum(split_of[i], split_of[j]), np.maximum(split_of[i], split_of[j])
        np.add.at(near_counts, (split_i, split_j), 1)
        cross = split_i != split_j
        for k in np.concatenate([np.flatnonzero(cross)[:max_examples], np.flatnonzero(~cross)[:max_examples]]):
            near_examples.append(_example(names, int(split_of[i[k]]), int(split_of[j[k]]), paths[i[k]], paths[j[k]],
                                          int(d[k])))
    return {
        "n_images": len(paths), "splits": {s: len(split_paths[s]) for s in names},
        "hash_size": hash_size, "max_distance": max_distance,
        "unreadable": {"n": int((~ok).sum()), "examples": [p for p, good in zip(paths, ok) if not good][:max_examples]},
        "exact": _pair_summary(names, exact_counts, exact_examples, max_examples),
        "near": _pair_summary(names, near_counts, near_examples, max_examples),
    }


def _leakage_warnings(duplicates: Mapping[str, Any]) -> list[str]:
    warnings = []
    for kind, what in (("exact", "exact duplicate"), ("near", "near-duplicate")):
        for pair, count in duplicates[kind]["across"].items():
            if count:
                warnings.append(f"{count} {what} pair(s) across splits {pair} — images shared between splits "
                                "inflate validation/test scores")
    return warnings


# ----------------------------------------------------------------------------------------------- images and plots

def _load(path: str, mode: str = "RGB", size: int | None = None, exact_size: bool = True) -> np.ndarray:
    with Image.open(path) as image:
        if size is not None:
            image.draft(mode, (size, size))  # JPEG: decode at reduced scale, still >= size
        image = image.convert(mode)
        if size is not None and exact_size:
            image = image.resize((size, size), Image.BILINEAR)
        elif size is not None and max(image.size) > size:
            image.thumbnail((size, size), Image.BILINEAR)
        return np.asarray(image)


def _require_paths(paths: Sequence[Any], what: str) -> list[str]:
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError(f"{what} needs at least one image path, got none")
    return paths


def plot_sample_grid(paths_by_class: Mapping[str, Sequence[str | os.PathLike]], n: int = 8, seed: int = 0,
                     path: str | os.PathLike | None = None, thumb: int = 160) -> Any:
    """Figure with n random images per class (one row each), titled with format and size to spot shortcuts."""
    rng = np.random.default_rng(seed)
    figure, axes = new_figure(len(paths_by_class), n, size=(1.7, 2.0))
    for row, (name, paths) in enumerate(paths_by_class.items()):
        paths = [os.fspath(p) for p in paths]
        chosen = [paths[k] for k in rng.choice(len(paths), size=min(n, len(paths)), replace=False)] if paths else []
        for col, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=12)
            if col >= len(chosen):
                ax.set_frame_on(False)
                continue
            with Image.open(chosen[col]) as image:
                ax.set_title(f"{image.format} {image.width}x{image.height}", fontsize=7)
            ax.imshow(_load(chosen[col], "RGB", thumb, exact_size=False))
    finish(figure, path)
    return figure


def mean_image(paths: Sequence[str | os.PathLike], size: int = 128, max_workers: int = 8) -> np.ndarray:
    """Pixel-wise mean RGB image (float32 0..255, [size, size, 3]) after resizing every image to size x size."""
    paths = _require_paths(paths, "mean_image")
    total = np.zeros((size, size, 3), dtype=np.float64)
    for image in _parallel_map(lambda p: _load(p, "RGB", size), paths, max_workers):
        total += image
    return (total / len(paths)).astype(np.float32)


def plot_mean_images(paths_by_class: Mapping[str, Sequence[str | os.PathLike]], size: int = 128,
                     path: str | os.PathLike | None = None, max_workers: int = 8) -> Any:
    """Figure with each class's mean image and, for two classes, the per-pixel |difference| (alignment bias)."""
    means = {name: mean_image(paths, size, max_workers) for name, paths in paths_by_class.items()}
    names = list(means)
    figure, axes = new_figure(1, len(names) + (len(names) == 2), size=(3.2, 3.4))
    axes = axes[0]
    for ax, name in zip(axes, names):
        ax.imshow(np.clip(means[name], 0, 255).astype(np.uint8))
        ax.set_title(f"mean {name} (n={len(paths_by_class[name])})")
        ax.axis("off")
    if len(names) == 2:
        diff = np.abs(means[names[1]] - means[names[0]]).mean(axis=-1)
        shown = axes[-1].imshow(diff, cmap="magma")
        axes[-1].set_title(f"|{names[1]} − {names[0]}|")
        axes[-1].axis("off")
        figure.colorbar(shown, ax=axes[-1], shrink=0.8)
    finish(figure, path)
    return figure


def intensity_histograms(paths: Sequence[str | os.PathLike], bins: int = 64, size: int = 256,
                         max_workers: int = 8) -> np.ndarray:
    """Per-channel RGB intensity densities [3, bins] over images downscaled to at most size (JPEG draft decoding)."""
    paths = _require_paths(paths, "intensity_histograms")
    edges = np.linspace(0, 256, bins + 1)
    counts = np.zeros((3, bins), dtype=np.float64)
    for image in _parallel_map(lambda p: _load(p, "RGB", size, exact_size=False), paths, max_workers):
        for channel in range(3):
            counts[channel] += np.histogram(image[..., channel], bins=edges)[0]
    return counts / counts.sum(axis=1, keepdims=True)


def plot_intensity_histograms(paths_by_class: Mapping[str, Sequence[str | os.PathLike]],
                              path: str | os.PathLike | None = None, bins: int = 64, size: int = 256,
                              max_workers: int = 8) -> Any:
    """Figure with one panel per RGB channel overlaying each class's intensity density."""
    histograms = {name: intensity_histograms(paths, bins, size, max_workers) for name, paths in paths_by_class.items()}
    centers = (np.arange(bins) + 0.5) * 256 / bins
    figure, axes = new_figure(1, 3, size=(4.0, 3.2), sharey=True)
    axes = axes[0]
    for channel, (ax, channel_name) in enumerate(zip(axes, ("red", "green", "blue"))):
        for name, histogram in histograms.items():
            ax.plot(centers, histogram[channel], label=name)
        ax.set_title(channel_name)
        ax.set_xlabel("intensity")
    axes[0].set_ylabel("density")
    axes[0].legend()
    finish(figure, path)
    return figure


def _log_spectrum(path: str, size: int, high_pass: bool) -> np.ndarray:
    with Image.open(path) as image:
        gray = image.convert("L")  # full decode on purpose: DCT-domain downscaling would reshape the spectrum
    if min(gray.size) < size:  # rare; upsampling adds its own spectral signature, cropping larger images does not
        scale = size / min(gray.size)
        gray = gray.resize((max(size, round(gray.width * scale)), max(size, round(gray.height * scale))),
                           Image.BICUBIC)
    left, top = (gray.width - size) // 2, (gray.height - size) // 2
    gray = gray.crop((left, top, left + size, top + size))  # crop, not resize: resampling low-passes fingerprints
    pixels = np.asarray(gray, dtype=np.float64)
    if high_pass:  # residual after a 3x3 box blur: suppresses image content so periodic artefacts stand out
        pixels = pixels - np.asarray(gray.filter(ImageFilter.BoxBlur(1)), dtype=np.float64)
    return np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(pixels))))


def mean_log_spectrum(paths: Sequence[str | os.PathLike], size: int = 128, high_pass: bool = False,
                      max_workers: int = 8) -> np.ndarray:
    """Mean over images of fftshifted log(1+|FFT2|) of a central size x size grayscale crop; [size, size] float64.

    DC sits at [size//2, size//2]; the Nyquist corner (period-2 patterns, GAN upsampling checkerboards) at [0, 0].
    """
    paths = _require_paths(paths, "mean_log_spectrum")
    total = np.zeros((size, size), dtype=np.float64)
    for spectrum in _parallel_map(lambda p: _log_spectrum(p, size, high_pass), paths, max_workers):
        total += spectrum
    return total / len(paths)


def azimuthal_average(spectrum: np.ndarray) -> np.ndarray:
    """Mean of a centred 2-D spectrum over rings of integer radius from the DC bin (Durall et al. 2020 1-D profile)."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    if spectrum.ndim != 2:
        raise ValueError(f"azimuthal_average expects a 2-D spectrum, got shape {spectrum.shape}")
    y, x = np.indices(spectrum.shape)
    radius = np.rint(np.hypot(y - spectrum.shape[0] // 2, x - spectrum.shape[1] // 2)).astype(np.int64).ravel()
    return np.bincount(radius, weights=spectrum.ravel()) / np.maximum(np.bincount(radius), 1)


def plot_spectra(spectra_by_class: Mapping[str, np.ndarray], path: str | os.PathLike | None = None) -> Any:
    """Figure with each class's mean log spectrum, their difference (last − first) and the 1-D azimuthal profiles."""
    names = list(spectra_by_class)
    if not names:
        raise ValueError("plot_spectra needs at least one class spectrum, got none")
    panels = len(names) + (len(names) == 2) + 1
    figure, axes = new_figure(1, panels, size=(3.6, 3.4))
    axes = axes[0]
    low = min(float(np.min(s)) for s in spectra_by_class.values())
    high = max(float(np.max(s)) for s in spectra_by_class.values())
    for ax, name in zip(axes, names):
        shown = ax.imshow(spectra_by_class[name], cmap="viridis", vmin=low, vmax=high)
        ax.set_title(f"{name}: mean log(1+|FFT|)")
        ax.axis("off")
    figure.colorbar(shown, ax=axes[len(names) - 1], shrink=0.8)
    if len(names) == 2:
        diff = spectra_by_class[names[1]] - spectra_by_class[names[0]]
        limit = float(np.max(np.abs(diff))) or 1.0
        shown = axes[2].imshow(diff, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[2].set_title(f"{names[1]} − {names[0]}")
        axes[2].axis("off")
        figure.colorbar(shown, ax=axes[2], shrink=0.8)
    profile_ax = axes[-1]
    for name in names:
        profile = azimuthal_average(spectra_by_class[name])
        profile_ax.plot(np.arange(len(profile)) / spectra_by_class[name].shape[0], profile, label=name)
    profile_ax.axvline(0.5, color="grey", lw=0.8, ls="--")  # Nyquist along an axis; beyond it only the corners
    profile_ax.set_xlabel("spatial frequency (cycles/pixel)")
    profile_ax.set_ylabel("mean log(1+|FFT|)")
    profile_ax.set_title("azimuthal average")
    profile_ax.legend()
    finish(figure, path)
    return figure


# ----------------------------------------------------------------------------------------------- whole audit

def audit_splits(splits: Mapping[str, tuple[Sequence[str | os.PathLike], Sequence[int]]], max_images: int | None = None,
                 seed: int = 0, max_distance: int = 4, max_examples: int = MAX_EXAMPLES,
                 max_workers: int = 8) -> dict[str, Any]:
    """JSON-ready audit of {split: (paths, labels)}: counts, per-class comparison + warnings, duplicate summary.

    max_images caps the images per split that are opened (random, seeded); counts always cover every image.
    Sampling cuts duplicate recall roughly quadratically, so cap only as far as time requires.
    """
    rng = np.random.default_rng(seed)
    counts, sampled = {}, {}
    for name, (paths, labels) in splits.items():
        paths, labels = [os.fspath(p) for p in paths], [int(label) for label in labels]
        if len(paths) != len(labels):
            raise ValueError(f"split {name!r} has {len(paths)} paths but {len(labels)} labels")
        counts[name] = {cls: labels.count(k) for k, cls in enumerate(CLASS_NAMES)} | {"total": len(paths)}
        keep = (np.sort(rng.choice(len(paths), size=max_images, replace=False))
                if max_images is not None and len(paths) > max_images else np.arange(len(paths)))
        sampled[name] = ([paths[k] for k in keep], [labels[k] for k in keep])
    frames = []
    for name, (paths, labels) in sampled.items():
        frame = file_properties(paths, max_workers)
        frames.append(frame.assign(label=labels, split=name))
    props = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["path", "label", "error"])
    by_class, class_warnings = compare_classes(props) if len(props) else ({}, ["no images to audit"])
    duplicates = find_duplicates({name: paths for name, (paths, _) in sampled.items()}, max_distance=max_distance,
                                 max_examples=max_examples, max_workers=max_workers)
    unreadable = props[props["error"].notna()] if len(props) else props
    unreadable_examples = [{"path": p, "error": e} for p, e in zip(unreadable["path"], unreadable["error"])]
    return to_jsonable({
        "counts": counts, "max_images": max_images, "seed": seed,
        "audited": {name: len(paths) for name, (paths, _) in sampled.items()},
        "properties": {"by_class": by_class,
                       "unreadable": {"n": len(unreadable_examples), "examples": unreadable_examples[:max_examples]}},
        "duplicates": duplicates,
        "warnings": class_warnings + _leakage_warnings(duplicates),
    })


def audit_index(index: Any, max_images: int | None = None, seed: int = 0, max_distance: int = 4,
                max_examples: int = MAX_EXAMPLES, max_workers: int = 8) -> dict[str, Any]:
    """audit_splits over any object with train/val/test (paths, labels) splits, plus its name, root, layout, skipped."""
    splits = {}
    for name in ("train", "val", "test"):
        split = getattr(index, name, None)
        if split is not None:
            splits[name] = (split.paths, split.labels)
    if not splits:
        raise ValueError(f"audit_index needs an object with train/val/test splits, got {type(index).__name__}")
    skipped = list(getattr(index, "skipped", None) or [])
    report = {"dataset": {k: to_jsonable(getattr(index, k, None)) for k in ("name", "root", "layout")},
              "skipped": {"n": len(skipped), "examples": to_jsonable(skipped[:max_examples])}}
    return report | audit_splits(splits, max_images, seed, max_distance, max_examples, max_workers)


# ----------------------------------------------------------------------------------------------- notebook views

def paths_by_class(index: DatasetIndex, max_images: int | None = None, seed: int = 0) -> dict[str, list[str]]:
    """Image paths per class name over all splits of an index, at most max_images per class (seeded random)."""
    split = cap_split(index.pooled(), max_images, seed)
    by_class: dict[str, list[str]] = {name: [] for name in CLASS_NAMES}
    for path, label in zip(split.paths, split.labels):
        by_class[CLASS_NAMES[int(label)]].append(os.fspath(path))
    return by_class


def class_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """One column per class of an audit report: size, colour mode, format, file size and JPEG quality at a glance."""
    def median(stats: Any) -> Any:
        return None if not stats else stats["median"]

    rows = {}
    for name, s in report["properties"]["by_class"].items():
        rows[name] = {"images audited": s["n"], "unreadable": s["n_unreadable"],
                      "median width": median(s["width"]), "median height": median(s["height"]),
                      "distinct sizes": s["n_distinct_sizes"], "sizes": _describe_shares(s["sizes"]),
                      "colour modes": _describe_shares(s["modes"]), "formats": _describe_shares(s["formats"]),
                      "median file size": _human_bytes(median(s["file_size"])) if s["file_size"] else None,
                      "median JPEG quality": median(s["jpeg_quality"]),
                      "chroma subsampling": _describe_shares(s["subsampling"])}
    return pd.DataFrame(rows)


def duplicate_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """Exact and near duplicate pair counts of an audit report, within each split and across each split pair."""
    rows = {}
    for kind in ("exact", "near"):
        summary = report["duplicates"][kind]
        rows[kind] = {**{f"within {s}": n for s, n in summary["within"].items()},
                      **{f"across {pair}": n for pair, n in summary["across"].items()}, "total": summary["n_pairs"]}
    return pd.DataFrame(rows)


def plot_duplicate_pairs(examples: Sequence[Mapping[str, Any]], n: int = 6, thumb: int = 128,
                         path: str | os.PathLike | None = None) -> Any:
    """Figure with up to n duplicate example pairs (one pair per column: path_a above path_b), or None without pairs."""
    examples = list(examples)[:n]
    if not examples:
        return None
    figure, axes = new_figure(2, len(examples), size=(2.2, 2.3))
    for col, example in enumerate(examples):
        for row, key in enumerate(("a", "b")):
            ax = axes[row, col]
            ax.axis("off")
            ax.imshow(_load(example[f"path_{key}"], "RGB", thumb, exact_size=False))
            ax.set_title(f"{example[f'split_{key}']}: {Path(example[f'path_{key}']).name}"
                         + (f"\nHamming {example['distance']}" if row == 1 else ""), fontsize=7)
    finish(figure, path)
    return figure


# ----------------------------------------------------------------------------------------------- shortcut probes

# What each probe's feature stands for, in the warning's "a detector can learn ..." sentence.
_PROBE_WHAT = {"file_size": "the file size", "bits_per_pixel": "the compression strength (bits per pixel)",
               "mean_gradient": "the image sharpness", "laplacian_var": "the image sharpness",
               "saturation": "the colour saturation", probes.ALL_SCALARS_PROBE: "a mix of global image statistics",
               probes.SPECTRUM_PROBE: "a global frequency profile (one 1-D spectrum per image)"}


def _probe_what(name: str) -> str:
    if name.startswith(("hf_share", "hf_energy")):
        return "the share of high-frequency content"
    if name.startswith(("mean_", "std_")):
        return "the colour statistics"
    return _PROBE_WHAT.get(name, name)


def shortcut_audit(paths_by_class: Mapping[str, Sequence[str | os.PathLike]], seed: int = 0,
                   folds: int = probes.CV_FOLDS, warn_at: float = probes.WARN_ACCURACY,
                   max_workers: int = 4) -> dict[str, Any]:
    """Cross-validated trivial probes (utils.probes) on the images per class, with a warning per probe above warn_at."""
    result = probes.probe_files(paths_by_class, folds=folds, seed=seed, warn_at=warn_at, max_workers=max_workers)
    warnings = []
    for name in result["flagged"]:
        r = result["probes"][name]
        warnings.append(f"trivial probe {name} separates real from fake: balanced accuracy "
                        f"{r['balanced_accuracy']:.2f} (ROC AUC {r['roc_auc']:.2f}, {r['folds']}-fold logistic "
                        f"regression; > {warn_at:.2f} warns) — {_CONSEQUENCE.format(what=_probe_what(name))}")
    if not result["probes"]:
        warnings.append("shortcut probes skipped: each class needs at least two readable images")
    return to_jsonable(result | {"warnings": warnings})


def plot_shortcut_probes(result: Mapping[str, Any], path: str | os.PathLike | None = None) -> Any:
    """Balanced accuracy of every probe (fold spread, chance and warning lines) and the mean 1-D spectrum per class."""
    table = probes.probe_table(result).iloc[::-1]  # best probe at the top of a horizontal bar chart
    figure, axes = new_figure(1, 2, size=(5.2, max(3.2, 0.26 * len(table) + 1.2)))
    bars, spectrum_ax = axes[0]
    colours = ["tab:red" if flag else "tab:blue" for flag in table["shortcut"]]
    bars.barh(table.index, table["balanced accuracy"], xerr=table["± (folds)"], color=colours, alpha=0.8,
              capsize=2)
    bars.axvline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    bars.axvline(result["warn_at"], color="tab:red", linestyle="--", linewidth=1,
                 label=f"warning ({result['warn_at']:.2f})")
    bars.set(xlim=(0.3, 1.02), xlabel="cross-validated balanced accuracy",
             title="Trivial probes (logistic regression)")
    bars.tick_params(axis="y", labelsize=8)
    bars.legend(loc="lower right", fontsize=8)
    radius = (np.arange(result["spectrum_bins"]) + 0.5) * np.sqrt(2.0) / result["spectrum_bins"]
    for name, spectrum in result.get("mean_spectrum", {}).items():
        spectrum_ax.plot(radius, spectrum, label=name)
    spectrum_ax.axvline(1.0, color="grey", linestyle="--", linewidth=0.8)  # Nyquist along an axis
    spectrum_ax.set(xlabel="radial frequency / Nyquist (corner = sqrt 2)", ylabel="mean log(1 + |FFT|)",
                    title="1-D spectrum fed to the spectrum probe")
    if result.get("mean_spectrum"):
        spectrum_ax.legend()
    finish(figure, path)
    return figure

