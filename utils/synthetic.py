"""Synthetic data: the embedded default dataset, face-like images whose fake class carries a spatial upsampling trace.

Real and fake images come from one scene generator, get per-channel colour statistics drawn from one distribution
and a luminance grain of one random strength and one power spectrum, then go through the same JPEG encoder at the
same quality. What tells them apart is a faint periodic modulation of the content, of the same strength and the same
radial frequency in both classes: in a fake, the grid-aligned checkerboard an upsampler whose taps do not balance
leaves along both axes (the artifacts Odena et al. 2016, Frank et al. 2020 and Durall et al. 2020 describe); in a
real image, a texture of the same power at an oblique angle (a stand-in for the periodic traces cameras leave too).
Radially averaged, their spectra are the same, so no global statistic (file size, sharpness, high-frequency share
or energy at any band, colour, the 1-D spectrum) separates the classes, as on real FFHQ / StyleGAN faces: the explore
notebook's shortcut probes measure this (tests/test_synthetic.py too). Only the orientation of the pattern differs,
which a convolution sees and a global statistic does not.

Other generators for cross-generator tests (`upsampler="nearest"` or `"bilinear"`) leave no checkerboard: their fakes'
grain is drawn at half size and enlarged by pixel replication or bilinear interpolation, which correlates
neighbouring pixels by their phase, while their real images' grain is the same kernel on full-size noise (the same
spectrum). The data loader names them `synthetic:<upsampler>` (e.g. in the analysis notebook's `extra_data_dirs`).
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
# Standard deviation of the grain in grey levels, drawn per image from one range for both classes: its strength
# varies more between images than anything the fingerprint changes, so no sharpness or file-size cue is left.
GRAIN_STD = (4.0, 10.0)
# Depth of the periodic modulation of the content (both classes): the fake's checkerboard multiplies each pixel by
# 1 + gain x (cos along rows + cos along columns) / 2, as the uneven kernel overlap of an upsampler does.
CHECKERBOARD_GAIN = 0.16
# The trace's wave vector in cycles per 64 pixels: the checkerboard runs at its length, 13 (a period of 4.9 px),
# along both axes, the real texture along the vector and its perpendicular (23 degrees off the axes). A Pythagorean
# triple puts both at one radius; at this moderate frequency the Sobel and Laplacian filters respond to the two
# orientations within 4 and 7 percent of each other (at 0.6 x Nyquist the Laplacian differs by 38 percent).
TRACE_VECTOR = (5, 12)
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


def _filter(field: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """The separable kernel `taps` x `taps` applied along both axes (wrapping at the border, like the FFT)."""
    from scipy import ndimage

    for axis in (0, 1):
        field = ndimage.convolve1d(field, taps, axis=axis, mode="wrap")
    return field


def make_grain(rng: np.random.Generator, size: int, fake: bool, upsampler: str = "transposed") -> np.ndarray:
    """Unit-variance grain [size, size]: `upsampler`'s kernel on half-size noise (a fake that injects noise before
    upsampling) or on full-size noise (a real image, or the default generator, whose trace is in the content).

    Upsampling is zero insertion followed by the kernel. Zero-inserted noise of variance 4 has the flat power
    spectrum of full-size noise of variance 1 (averaged over the 2x2 phases), so both classes' grain has the same
    spectrum |K(f)|^2; only the fake's variance and correlation change with the pixel's phase.
    """
    taps = np.asarray(UPSAMPLERS[upsampler], dtype=np.float64)
    if fake and upsampler not in CONTENT_TRACE:
        field = np.zeros((size, size))
        field[0::2, 0::2] = 2.0 * rng.standard_normal((size // 2, size // 2))
    else:
        field = rng.standard_normal((size, size))
    return _filter(field, taps) / np.sum(taps ** 2)


def _trace_cycles(size: int) -> tuple[int, tuple[int, int]]:
    """(cycles per image of the checkerboard along each axis, an oblique wave vector of exactly that length).

    TRACE_VECTOR scaled by size / 64: a Pythagorean triple, so the oblique texture sits at the checkerboard's exact
    radial frequency (no band edge of a radial statistic can fall between them), a whole number of cycles per image
    (no spectral leakage). Sizes that are not multiples of 64 get the nearest whole-number vectors.
    """
    scale = size / 64
    ax, ay = TRACE_VECTOR
    cycles = int(round(np.hypot(ax, ay) * scale))
    return cycles, (int(round(ax * scale)), int(round(ay * scale)))


def checkerboard(size: int, gain: float | None = None) -> np.ndarray:
    """Per-pixel gain [size, size] of an unbalanced upsampler: 1 + gain x (cosine along rows + along columns) / 2."""
    gain = CHECKERBOARD_GAIN if gain is None else gain
    cycles, _ = _trace_cycles(size)
    wave = np.cos(2 * np.pi * cycles * np.arange(size) / size)
    return 1.0 + gain * (wave[:, None] + wave[None, :]) / 2


def oblique_texture(rng: np.random.Generator, size: int, gain: float | None = None) -> np.ndarray:
    """Per-pixel gain [size, size]: the checkerboard turned by about 23 degrees (two perpendicular cosines), random phases.

    Same radial frequency, same power and the same number of spectral peaks as the checkerboard, so a radially
    averaged spectrum (and every statistic built on one, in amplitude or in power) cannot tell them apart; only the
    orientation can. Turned left or right at random.
    """
    gain = CHECKERBOARD_GAIN if gain is None else gain
    _, (kx, ky) = _trace_cycles(size)
    if rng.integers(2):
        kx, ky = ky, kx
    y, x = np.mgrid[0:size, 0:size]
    phases = rng.uniform(0, 2 * np.pi, 2)
    waves = np.cos(2 * np.pi * (kx * x + ky * y) / size + phases[0]) + np.cos(2 * np.pi * (-ky * x + kx * y) / size + phases[1])
    return 1.0 + gain * waves / 2


# The fake class's generator fingerprint; "transposed" makes the embedded default, the others unseen generators.
# Per-axis grain kernels. "transposed" leaves the grain white (its trace is the checkerboard in the content);
# "nearest" (pixel replication) and "bilinear" (half-pixel centres) enlarge the fakes' injected noise.
UPSAMPLERS = {"transposed": (1.0,), "nearest": (1.0, 1.0), "bilinear": (0.25, 0.75, 0.75, 0.25)}
# Generators whose trace is the checkerboard in the content (their reals get the turned plaid); the others leave theirs
# in the grain, enlarged from half size.
CONTENT_TRACE = ("transposed",)
DEFAULT_UPSAMPLER = "transposed"
# How a data_dir names a generated dataset (utils.data.resolve_data_dir): "synthetic:<upsampler>".
GENERATOR_PREFIX = "synthetic:"
GENERATOR_NAMES = tuple(GENERATOR_PREFIX + name for name in UPSAMPLERS)


def _check_upsampler(upsampler: str) -> None:
    if upsampler not in UPSAMPLERS:
        raise ValueError(f"upsampler must be one of {sorted(UPSAMPLERS)}, got {upsampler!r}")


def make_image(index: int, fake: bool, image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0,
               upsampler: str = DEFAULT_UPSAMPLER) -> np.ndarray:
    """One uint8 RGB image, deterministic from (seed, index, class); a fake carries `upsampler`'s trace."""
    _check_upsampler(upsampler)
    rng = np.random.default_rng([seed, index, int(fake)])
    img = _render_scene(_scene_params(rng), image_size, rng)
    # Colour statistics drawn from one distribution for both classes: a colour histogram cannot tell them apart.
    target_mean = rng.uniform(70, 170) + rng.uniform(-20, 20, 3)
    target_std = rng.uniform(30, 60) * rng.uniform(0.85, 1.15, 3)
    img = (img - img.mean(axis=(0, 1))) / (img.std(axis=(0, 1)) + 1e-8) * target_std + target_mean
    if upsampler in CONTENT_TRACE:
        trace = checkerboard(image_size) if fake else oblique_texture(rng, image_size)
        img = img * trace[..., None]
    # Luminance grain: JPEG keeps luma at full resolution but halves chroma, which would erase a period-2 pattern.
    img = img + (rng.uniform(*GRAIN_STD) * make_grain(rng, image_size, fake, upsampler))[..., None]
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
    recipe = {"version": 2, "counts": DEFAULT_COUNTS, "image_size": image_size, "seed": seed,
              "jpeg_quality": JPEG_QUALITY, "taps": UPSAMPLERS[upsampler], "grain_std": GRAIN_STD,
              "checkerboard_gain": CHECKERBOARD_GAIN, "trace_vector": TRACE_VECTOR}
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
