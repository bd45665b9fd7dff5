"""Shortcut probes: trivial per-image statistics and a 1-D spectrum, and how well a linear model separates the classes.

A detector is only interesting where such trivial cues fail. Each probe is a (standardised) logistic regression,
cross-validated with stratified folds: one per scalar feature (file size, bits per pixel, sharpness, high-frequency
share at several bands, colour statistics), one on all scalars together, and one on the azimuthally averaged log
amplitude spectrum (the 1-D profile of Durall et al. 2020). The same spectrum probe, fit on a run's training images
and scored on its test images, is the trivial baseline the analysis reports beside the CNN.

numpy, scipy, scikit-learn and Pillow only: no TensorFlow here, so the audit does not pay for it.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from utils.data import CLASS_NAMES

WARN_ACCURACY = 0.65  # cross-validated balanced accuracy above which a trivial probe is called a shortcut
CV_FOLDS = 5
PROBE_CROP = 256  # pixel features use a central crop of at most this side (cost bound; a crop keeps the spectrum)
SPECTRUM_BINS = 32  # radial bins of the 1-D spectrum over 0..sqrt(2) x Nyquist (the corner holds the checkerboard)
HF_BANDS = (0.3, 0.5, 0.7, 0.9)  # radii (in units of the Nyquist frequency) above which the amplitude share is taken
ENERGY_BAND = 0.5  # radius above which the power (squared amplitude) share is taken
COLOUR_CHANNELS = ("r", "g", "b")
# Per-image scalars, in the order the tables list them; file_size and bits_per_pixel need the file.
FILE_FEATURES = ("file_size", "bits_per_pixel")
PIXEL_FEATURES = (("mean_gradient", "laplacian_var")
                  + tuple(f"hf_share_{b:g}" for b in HF_BANDS) + (f"hf_energy_{ENERGY_BAND:g}",)
                  + tuple(f"mean_{c}" for c in COLOUR_CHANNELS) + tuple(f"std_{c}" for c in COLOUR_CHANNELS)
                  + ("saturation",))
SPECTRUM_PROBE = "log_spectrum_1d"
ALL_SCALARS_PROBE = "all_scalars"


# ----------------------------------------------------------------------------------------------- features

def _central_crop(image: np.ndarray, side: int = PROBE_CROP) -> np.ndarray:
    """Central square crop of at most `side` pixels: cropping, unlike resizing, leaves the frequency content alone."""
    h, w = image.shape[:2]
    s = min(h, w, side)
    top, left = (h - s) // 2, (w - s) // 2
    return image[top:top + s, left:left + s]


def _radius(shape: tuple[int, int]) -> np.ndarray:
    """Radial frequency of every FFT bin in units of Nyquist (0.5 cycles/pixel): 0 at DC, sqrt(2) at the corner."""
    fy, fx = np.fft.fftfreq(shape[0])[:, None], np.fft.fftfreq(shape[1])[None, :]
    return np.hypot(fy, fx) / 0.5


def image_features(rgb: Any, file_size: int | None = None) -> tuple[dict[str, float], np.ndarray]:
    """(scalar features, 1-D log spectrum of SPECTRUM_BINS values) of one RGB image in 0..255 [H, W, 3]."""
    from scipy import ndimage

    image = np.asarray(rgb, dtype=np.float64)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be RGB shaped [H, W, 3], got shape {image.shape}")
    height, width = image.shape[:2]
    image = _central_crop(image)
    gray = image @ np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as PIL's convert("L")
    features: dict[str, float] = {}
    if file_size is not None:
        features["file_size"] = float(file_size)
        # Per pixel of the whole image: compression strength and detail, with the resolution divided out.
        features["bits_per_pixel"] = 8.0 * file_size / (height * width)
    features["mean_gradient"] = float(np.mean(np.hypot(ndimage.sobel(gray, axis=0), ndimage.sobel(gray, axis=1))))
    features["laplacian_var"] = float(np.var(ndimage.laplace(gray)))
    # Orthonormal FFT of the mean-free image: amplitudes do not grow with the image size, DC carries nothing.
    amplitude = np.abs(np.fft.fft2(gray - gray.mean(), norm="ortho"))
    radius = _radius(gray.shape)
    total, power = amplitude.sum(), (amplitude ** 2).sum()
    for band in HF_BANDS:
        features[f"hf_share_{band:g}"] = float(amplitude[radius > band].sum() / total) if total > 0 else 0.0
    features[f"hf_energy_{ENERGY_BAND:g}"] = (float((amplitude[radius > ENERGY_BAND] ** 2).sum() / power)
                                              if power > 0 else 0.0)
    for k, channel in enumerate(COLOUR_CHANNELS):
        features[f"mean_{channel}"] = float(image[..., k].mean())
    for k, channel in enumerate(COLOUR_CHANNELS):
        features[f"std_{channel}"] = float(image[..., k].std())
    high, low = image.max(axis=-1), image.min(axis=-1)
    features["saturation"] = float(np.mean(np.where(high > 0, (high - low) / np.maximum(high, 1e-9), 0.0)))
    return features, radial_log_spectrum(amplitude, radius)


def radial_log_spectrum(amplitude: np.ndarray, radius: np.ndarray, bins: int = SPECTRUM_BINS) -> np.ndarray:
    """log(1 + mean amplitude) in `bins` equal radial bins over 0..sqrt(2) x Nyquist, DC left out, gaps interpolated.

    The log of the ring mean, not the mean of the logs: a periodic peak (one strong bin in a ring) then stands out.
    """
    edges = np.linspace(0.0, np.sqrt(2.0), bins + 1)
    which = np.clip(np.digitize(radius.ravel(), edges) - 1, 0, bins - 1)
    keep = radius.ravel() > 0
    counts = np.bincount(which[keep], minlength=bins)
    sums = np.bincount(which[keep], weights=amplitude.ravel()[keep], minlength=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    filled = counts > 0
    # A small image has fewer rings than bins: its empty bins take the value between their filled neighbours.
    return np.log1p(np.interp(centres, centres[filled], sums[filled] / counts[filled]))


def _file_features(path: str) -> tuple[dict[str, float], np.ndarray] | None:
    """Features of one image file (decoded with Pillow at full resolution), or None when it cannot be read."""
    try:
        size = os.path.getsize(path)
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return image_features(rgb, size)


def features_from_files(paths: Iterable[str | os.PathLike], max_workers: int = 4
                        ) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """(scalar features [N rows], spectra [N, SPECTRUM_BINS], unreadable paths) of the readable files, in order."""
    paths = [os.fspath(p) for p in paths]
    if max_workers > 1 and len(paths) > 1:
        # Decoding and the FFTs release the GIL, so threads use every core without pickling images.
        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            results = list(pool.map(_file_features, paths))
    else:
        results = [_file_features(p) for p in paths]
    ok = [r for r in results if r is not None]
    frame = pd.DataFrame([r[0] for r in ok], columns=list(FILE_FEATURES + PIXEL_FEATURES))
    frame.index = [p for p, r in zip(paths, results) if r is not None]
    spectra = np.stack([r[1] for r in ok]) if ok else np.zeros((0, SPECTRUM_BINS))
    return frame, spectra, [p for p, r in zip(paths, results) if r is None]


def spectra_from_images(images: Any) -> np.ndarray:
    """1-D log spectra [N, SPECTRUM_BINS] of a decoded batch [N, H, W, 3] (e.g. the pixels a CNN is fed)."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be a batch of RGB images shaped [N, H, W, 3], got shape {x.shape}")
    return np.stack([image_features(image)[1] for image in x]) if len(x) else np.zeros((0, SPECTRUM_BINS))


# ----------------------------------------------------------------------------------------------- probes

def make_probe(seed: int = 0) -> Any:
    """Standardise, then an L2 logistic regression with balanced class weights (a constant guess scores 0.5)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000,
                                                              random_state=seed))


def _check_xy(x: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Finite 2-D float features and 0/1 labels of one row each."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features must be [N, d] with one label per row, got shape {x.shape} and {len(y)} labels")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (fake), found {sorted(set(np.unique(y).tolist()))}")
    return x, y.astype(np.int64)


def cross_validated_probe(x: Any, labels: Any, folds: int = CV_FOLDS, seed: int = 0) -> dict[str, Any] | None:
    """Stratified k-fold accuracy, balanced accuracy and ROC AUC (mean and std over folds) of make_probe on x.

    Folds are reduced to the smaller class's count; None when a class has fewer than two images (nothing to test).
    Columns that are not finite for every row are dropped (e.g. file_size of decoded arrays).
    """
    from sklearn.model_selection import StratifiedKFold, cross_validate

    x, y = _check_xy(x, labels)
    x = x[:, np.isfinite(x).all(axis=0)]
    smaller = int(min((y == 0).sum(), (y == 1).sum()))
    k = min(int(folds), smaller)
    if k < 2 or x.shape[1] == 0:
        return None
    scores = cross_validate(make_probe(seed), x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed),
                            scoring=("accuracy", "balanced_accuracy", "roc_auc"))
    result: dict[str, Any] = {"folds": k, "n": int(len(y))}
    for name in ("accuracy", "balanced_accuracy", "roc_auc"):
        result[name] = float(np.mean(scores[f"test_{name}"]))
        result[f"{name}_std"] = float(np.std(scores[f"test_{name}"]))
    return result


def shortcut_probes(scalars: pd.DataFrame, spectra: Any, labels: Any, folds: int = CV_FOLDS, seed: int = 0,
                    warn_at: float = WARN_ACCURACY) -> dict[str, Any]:
    """Every probe (each scalar alone, all scalars, the 1-D spectrum) cross-validated, with warnings above warn_at."""
    x_spectra, y = _check_xy(spectra, labels)
    if len(scalars) != len(y):
        raise ValueError(f"scalars must have one row per label, got {len(scalars)} rows for {len(y)} labels")
    probes: dict[str, Any] = {}
    for name in scalars.columns:
        column = pd.to_numeric(scalars[name], errors="coerce").to_numpy(dtype=np.float64)
        result = cross_validated_probe(column, y, folds, seed)
        if result is None:
            continue
        # Class means and standard deviations say which way the shortcut points.
        for k, cls in enumerate(CLASS_NAMES):
            result[f"mean_{cls}"] = float(np.nanmean(column[y == k]))
            result[f"std_{cls}"] = float(np.nanstd(column[y == k]))
        probes[name] = result
    probes[ALL_SCALARS_PROBE] = cross_validated_probe(scalars.to_numpy(dtype=np.float64), y, folds, seed)
    probes[SPECTRUM_PROBE] = cross_validated_probe(x_spectra, y, folds, seed)
    probes = {name: r for name, r in probes.items() if r is not None}
    flagged = [name for name, r in probes.items() if r["balanced_accuracy"] > warn_at]
    return {"n": {cls: int((y == k).sum()) for k, cls in enumerate(CLASS_NAMES)}, "folds": folds, "seed": seed,
            "warn_at": warn_at, "metric": "balanced_accuracy", "probes": probes, "flagged": flagged,
            "spectrum_bins": SPECTRUM_BINS,
            "mean_spectrum": {cls: x_spectra[y == k].mean(axis=0).tolist() for k, cls in enumerate(CLASS_NAMES)
                              if (y == k).any()}}


def probe_files(paths_by_class: Mapping[str, Sequence[str | os.PathLike]], folds: int = CV_FOLDS, seed: int = 0,
                warn_at: float = WARN_ACCURACY, max_workers: int = 4) -> dict[str, Any]:
    """shortcut_probes over image files per class name ({"real": [...], "fake": [...]}), unreadable ones listed."""
    unknown = set(paths_by_class) - set(CLASS_NAMES)
    if unknown:
        raise ValueError(f"paths_by_class keys must be class names {CLASS_NAMES}, got {sorted(unknown)}")
    paths = [os.fspath(p) for cls in CLASS_NAMES for p in paths_by_class.get(cls, [])]
    label_of = {os.fspath(p): CLASS_NAMES.index(cls) for cls in CLASS_NAMES for p in paths_by_class.get(cls, [])}
    scalars, spectra, unreadable = features_from_files(paths, max_workers)
    result = shortcut_probes(scalars, spectra, [label_of[p] for p in scalars.index], folds, seed, warn_at)
    return result | {"unreadable": unreadable}


def probe_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """One row per probe of shortcut_probes, sorted by balanced accuracy: scores, fold spread, class means, flag."""
    rows = {name: {"balanced accuracy": r["balanced_accuracy"], "± (folds)": r["balanced_accuracy_std"],
                   "accuracy": r["accuracy"], "ROC AUC": r["roc_auc"],
                   "mean real": r.get("mean_real"), "mean fake": r.get("mean_fake"),
                   "shortcut": "WARNING" if name in result["flagged"] else ""}
            for name, r in result["probes"].items()}
    columns = ["balanced accuracy", "± (folds)", "accuracy", "ROC AUC", "mean real", "mean fake", "shortcut"]
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("probe")
    return frame.sort_values("balanced accuracy", ascending=False)


# ----------------------------------------------------------------------------------------------- baseline

def fit_spectrum_probe(spectra: Any, labels: Any, seed: int = 0) -> Any:
    """The spectrum probe fit on (training) spectra: predict_proba(spectra)[:, 1] is its P(fake)."""
    x, y = _check_xy(spectra, labels)
    if len(np.unique(y)) < 2:
        raise ValueError("the spectrum probe needs both real (0) and fake (1) training images")
    return make_probe(seed).fit(x, y)


def probe_p_fake(probe: Any, spectra: Any) -> np.ndarray:
    """P(fake) of a fitted probe for each row of spectra."""
    x = np.asarray(spectra, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"spectra must be [N, bins], got shape {x.shape}")
    return probe.predict_proba(x)[:, 1]
