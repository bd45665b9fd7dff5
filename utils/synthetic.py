"""Synthetic data: the embedded default dataset, face-like images whose fake class carries a GAN upsampling fingerprint.

Real and fake images come from one scene generator and get per-channel colour statistics drawn from one
distribution, then go through the same JPEG encoder at the same quality. The only difference is how the fake
image reaches full resolution: rendered at half size and enlarged by a transposed-convolution-like upsampler
whose uneven kernel overlap leaves a periodic (checkerboard) pattern and a high-frequency fall-off, the
fingerprints documented for GAN images by Frank et al. (2020) and Durall et al. (2020).

Other generators for cross-generator tests differ only in that upsampler (`upsampler="nearest"` or "bilinear"); the
data loader names them `synthetic:<upsampler>` (e.g. in the analysis notebook's `extra_data_dirs`).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from utils.runtime import REPO_ROOT, write_atomic

DEFAULT_ROOT = REPO_ROOT / "data" / "synthetic-faces"
DATASET_NAME = "synthetic-faces"
# Per split and class; the pool (train + valid) is re-split 75:25 by the loader, as for the real 140k dataset.
DEFAULT_COUNTS = {"train": 400, "valid": 100, "test": 150}
DEFAULT_IMAGE_SIZE = 64
JPEG_QUALITY = 90
# Transposed-convolution taps (kernel 3, stride 2): even output pixels get the centre tap, odd ones the two outer
# taps, so centre != 2 x outer modulates intensity with period 2 — the checkerboard artifact.
UPSAMPLE_TAPS = (0.47, 1.06, 0.47)
SENSOR_NOISE = 3.0
_LAYOUT = Path("real_vs_fake") / "real-vs-fake"


def _pink_noise(rng: np.random.Generator, size: int, channels: int, beta: float = 2.0) -> np.ndarray:
    """Gaussian noise with a 1/f^beta power spectrum, like natural images, scaled to unit variance."""
    freqs = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    freqs[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.standard_normal((channels, size, size))) / freqs ** (beta / 2)
    field = np.real(np.fft.ifft2(spectrum))
    return (field - field.mean(axis=(1, 2), keepdims=True)) / (field.std(axis=(1, 2), keepdims=True) + 1e-8)


def _render_scene(params: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """A face-like scene at `size` px from resolution-independent parameters: background, hair, face, eyes, mouth."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    img = params["bg"][None, None, :] * (1 - 0.5 * yy[..., None]) + params["bg2"][None, None, :] * 0.5 * yy[..., None]
    img = img + 0.15 * np.moveaxis(_pink_noise(rng, size, 3), 0, -1)
    cx, cy, rx, ry = params["face"]
    head = ((xx - cx) / (rx * 1.12)) ** 2 + ((yy - cy + 0.06) / (ry * 1.1)) ** 2 < 1
    img[head & (yy < cy)] = params["hair"]
    face = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    shade = np.clip(1.15 - 0.35 * face - 0.25 * (xx - cx) * params["light"], 0.4, 1.2)
    texture = 1 + 0.05 * _pink_noise(rng, size, 1, beta=1.5)[0]
    inside = face < 1
    img[inside] = (params["skin"][None, :] * (shade * texture)[inside][:, None])
    for side in (-1, 1):
        ex, ey = cx + side * rx * 0.4, cy - ry * 0.15
        eye = ((xx - ex) / (rx * 0.17)) ** 2 + ((yy - ey) / (ry * 0.08)) ** 2 < 1
        img[eye] = params["eye"]
    mouth = (np.abs(yy - (cy + ry * 0.45)) < ry * 0.05) & (np.abs(xx - cx) < rx * 0.35)
    img[mouth] = params["lips"]
    return img


def _scene_params(rng: np.random.Generator) -> dict:
    """Random, resolution-independent scene parameters."""
    return {
        "bg": rng.uniform(0.1, 0.9, 3), "bg2": rng.uniform(0.1, 0.9, 3),
        "face": (rng.uniform(0.4, 0.6), rng.uniform(0.45, 0.6), rng.uniform(0.22, 0.32), rng.uniform(0.3, 0.4)),
        "hair": rng.uniform(0.0, 0.5, 3), "skin": np.array([0.85, 0.65, 0.5]) * rng.uniform(0.5, 1.15),
        "light": rng.uniform(-1, 1), "eye": rng.uniform(0.0, 0.3, 3), "lips": np.array([0.7, 0.3, 0.3]) * rng.uniform(0.6, 1.1),
    }


def _transposed_upsample(img: np.ndarray) -> np.ndarray:
    """2x upsampling by zero insertion and a 3-tap kernel per axis, as a stride-2 transposed convolution does."""
    a, b, _ = UPSAMPLE_TAPS
    for axis in (0, 1):
        img = np.moveaxis(img, axis, 0)
        out = np.empty((img.shape[0] * 2,) + img.shape[1:], dtype=np.float64)
        out[0::2] = b * img
        out[1::2] = a * (img + np.roll(img, -1, axis=0))
        img = np.moveaxis(out, 0, axis)
    return img


def _nearest_upsample(img: np.ndarray) -> np.ndarray:
    """2x upsampling by pixel replication (2x2 blocks), the nearest-neighbour resize some generators use."""
    return img.repeat(2, axis=0).repeat(2, axis=1)


def _bilinear_upsample(img: np.ndarray) -> np.ndarray:
    """2x bilinear upsampling (taps 1/4, 3/4 at half-pixel centres): smooth, no period-2 pattern, a weaker spectral fall-off."""
    for axis in (0, 1):
        img = np.moveaxis(img, axis, 0)
        before, after = np.concatenate([img[:1], img[:-1]]), np.concatenate([img[1:], img[-1:]])
        out = np.empty((img.shape[0] * 2,) + img.shape[1:], dtype=np.float64)
        out[0::2] = 0.25 * before + 0.75 * img
        out[1::2] = 0.75 * img + 0.25 * after
        img = np.moveaxis(out, 0, axis)
    return img


# The fake class's generator fingerprint; "transposed" makes the embedded default, the others unseen generators.
UPSAMPLERS = {"transposed": _transposed_upsample, "nearest": _nearest_upsample, "bilinear": _bilinear_upsample}
DEFAULT_UPSAMPLER = "transposed"
# How a data_dir names a generated dataset (utils.data.resolve_data_dir): "synthetic:<upsampler>".
GENERATOR_PREFIX = "synthetic:"
GENERATOR_NAMES = tuple(GENERATOR_PREFIX + name for name in UPSAMPLERS)


def _check_upsampler(upsampler: str) -> None:
    if upsampler not in UPSAMPLERS:
        raise ValueError(f"upsampler must be one of {sorted(UPSAMPLERS)}, got {upsampler!r}")


def make_image(index: int, fake: bool, image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0,
               upsampler: str = DEFAULT_UPSAMPLER) -> np.ndarray:
    """One uint8 RGB image, deterministic from (seed, index, class); a fake is enlarged 2x by `upsampler`."""
    _check_upsampler(upsampler)
    rng = np.random.default_rng([seed, index, int(fake)])
    params = _scene_params(rng)
    if fake:
        low = _render_scene(params, image_size // 2, rng)
        low = low + rng.normal(0, SENSOR_NOISE / 255, low.shape)
        img = UPSAMPLERS[upsampler](low)
    else:
        img = _render_scene(params, image_size, rng)
        img = img + rng.normal(0, SENSOR_NOISE / 255, img.shape)
    # Colour statistics drawn from one distribution for both classes: a colour histogram cannot tell them apart.
    target_mean = rng.uniform(70, 170) + rng.uniform(-20, 20, 3)
    target_std = rng.uniform(30, 60) * rng.uniform(0.85, 1.15, 3)
    img = (img - img.mean(axis=(0, 1))) / (img.std(axis=(0, 1)) + 1e-8) * target_std + target_mean
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """JPEG bytes; both classes go through this one encoder at one quality."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def generate_dataset(root: str | os.PathLike, counts: dict[str, int] | None = None,
                     image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0, upsampler: str = DEFAULT_UPSAMPLER) -> Path:
    """Write the dataset in the Kaggle 140k layout (folders plus train/valid/test CSVs with label 1 = real)."""
    root = Path(root)
    counts = counts or DEFAULT_COUNTS
    _check_upsampler(upsampler)
    if image_size < 8 or image_size % 2:
        raise ValueError(f"synthetic image_size must be an even number >= 8, got {image_size}")
    jobs = []
    for split, n in counts.items():
        for label_str in ("real", "fake"):
            folder = root / _LAYOUT / split / label_str
            folder.mkdir(parents=True, exist_ok=True)
            # Split-specific index ranges keep every image distinct across splits (no leakage).
            offset = {"train": 0, "valid": 1_000_000, "test": 2_000_000}.get(split, 3_000_000)
            jobs += [(split, label_str, offset + i, folder / f"{offset + i:07d}.jpg") for i in range(n)]

    def write(job):
        _, label_str, index, path = job
        path.write_bytes(encode_jpeg(make_image(index, label_str == "fake", image_size, seed, upsampler)))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(write, jobs))
    for split in counts:
        rows = [(i, f"{label_str}/{p.name}", p.stem, int(label_str == "real"), label_str, f"{split}/{label_str}/{p.name}")
                for i, (s, label_str, _, p) in enumerate(j for j in jobs if j[0] == split)]
        with open(root / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", "original_path", "id", "label", "label_str", "path"])
            writer.writerows(rows)
    return root


def dataset_name(upsampler: str = DEFAULT_UPSAMPLER) -> str:
    """synthetic-faces for the embedded default, synthetic-faces-<upsampler> for another generator."""
    _check_upsampler(upsampler)
    return DATASET_NAME if upsampler == DEFAULT_UPSAMPLER else f"{DATASET_NAME}-{upsampler}"


def default_dataset_dir(root: str | os.PathLike | None = None, image_size: int = DEFAULT_IMAGE_SIZE,
                        seed: int | None = None, upsampler: str = DEFAULT_UPSAMPLER) -> Path:
    """The embedded default dataset (or another generator's), generated on first use, reused while its recipe holds."""
    _check_upsampler(upsampler)
    root = Path(root or DEFAULT_ROOT)
    if seed is None:
        # Each generator its own scenes: with the default's seed, another generator's real images would be the very
        # images a model trained on the default has seen, and a cross-generator test would score them as unseen.
        seed = list(UPSAMPLERS).index(upsampler)
    recipe = {"version": 1, "counts": DEFAULT_COUNTS, "image_size": image_size, "seed": seed,
              "jpeg_quality": JPEG_QUALITY, "taps": UPSAMPLE_TAPS, "noise": SENSOR_NOISE}
    if upsampler != DEFAULT_UPSAMPLER:
        # Only other generators add the key, so the default's folder (recorded by earlier runs) keeps its name.
        recipe["upsampler"] = upsampler
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]
    target = root / key
    manifest = target / "manifest.json"
    if manifest.is_file():
        return target
    # A half-written folder from an interrupted run is replaced; the manifest is written last.
    shutil.rmtree(target, ignore_errors=True)
    generate_dataset(target, DEFAULT_COUNTS, image_size, seed, upsampler)
    write_atomic(manifest, json.dumps({"name": dataset_name(upsampler), **recipe}, indent=2))
    return target
