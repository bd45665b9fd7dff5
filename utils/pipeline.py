"""Pipeline: a split's images through tf.data: decode (DCT-scaled JPEG), resize or crop, cache, shuffle, batch.

TensorFlow is imported inside the functions: indexing a dataset and reading a run's record must not pay for it.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from utils.data import JPEG_MAGIC, DataError, Split

if TYPE_CHECKING:
    import tensorflow as tf

CACHE_RAM_FRACTION = 0.4  # share of available RAM a decoded in-memory cache may take
SHUFFLE_BUFFER = 2048  # post-cache element shuffle; bounded because the cache already holds every image
JPEG_RATIOS = (8, 4, 2)  # the DCT downscales libjpeg can apply while decoding (tf.io.decode_jpeg ratio)
HEADER_SAMPLE = 64  # image headers read to size a crop-mode training cache


# How an image becomes S x S: "resize" scales the whole image (the study's way); "crop" keeps the image's own scale
# and cuts an S x S window out of it (random when training, central otherwise), so no resampling blurs the pixels.
RESIZE_MODES = ("resize", "crop")
DEFAULT_RESIZE_MODE = "resize"  # also what runs recorded before resize_mode existed were trained with


def _available_ram() -> int | None:
    """Available RAM in bytes (/proc/meminfo MemAvailable, else os.sysconf), None when unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cache_decision(n_images: int, image_size: int) -> bool:
    """Whether the decoded uint8 images (N*S*S*3 bytes) fit the in-memory cache budget."""
    available = _available_ram()
    if available is None:
        return False
    return n_images * image_size * image_size * 3 < CACHE_RAM_FRACTION * available


def cache_fits(split: Split, image_size: int, resize_mode: str = DEFAULT_RESIZE_MODE, training: bool = False) -> bool:
    """Whether what make_dataset caches of this split fits the in-memory cache budget (cache="auto").

    That is S x S images, except when training in crop mode: then the cache holds each image whole at its own scale
    (the random crop is cut after it, anew every epoch), sized from the largest image among a header sample.
    """
    if not (training and resize_mode == "crop"):
        return cache_decision(len(split.paths), image_size)
    step = max(1, len(split.paths) // HEADER_SAMPLE)
    dims = [d for d in map(_header_dims, split.paths[::step][:HEADER_SAMPLE]) if d is not None]
    # An image smaller than S is first enlarged until its shorter side is S (see _crop_source).
    pixels = [w * h * max(1.0, image_size / min(w, h)) ** 2 for _, w, h in dims] or [image_size * image_size]
    side = math.ceil(math.sqrt(max(pixels)))
    return cache_decision(len(split.paths), max(side, image_size))


def _header_dims(path: str) -> tuple[str, int, int] | None:
    """(format, width, height) from an image file's header (PIL reads no pixels), None when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(image.format), int(image.size[0]), int(image.size[1])
    except (OSError, ValueError, SyntaxError):
        return None


def _header_size(path: str) -> tuple[str, int] | None:
    """(format, shorter side) from an image file's header (PIL reads no pixels), None when unreadable."""
    dims = _header_dims(path)
    return None if dims is None else (dims[0], min(dims[1], dims[2]))


def jpeg_ratio(side: int, image_size: int) -> int:
    """DCT downscale (8, 4, 2 or 1) to decode a JPEG of shorter side `side` with: the largest still giving >= S px.

    A property of the image and the run's image_size alone, never of the other files in a split or batch: the same
    file is decoded the same way in training, evaluation and prediction, whatever lies beside it.
    """
    return next((r for r in JPEG_RATIOS if side >= r * image_size), 1)


def file_jpeg_ratio(path: str, image_size: int) -> int:
    """The DCT downscale resize mode decodes this file with (1 for anything but a readable JPEG), from its header."""
    header = _header_size(path)
    return jpeg_ratio(header[1], image_size) if header is not None and header[0] == "JPEG" else 1


def _check_resize_mode(resize_mode: str) -> None:
    """Raise a DataError naming resize_mode unless it is one of RESIZE_MODES."""
    if resize_mode not in RESIZE_MODES:
        raise DataError(f"resize_mode must be one of {', '.join(map(repr, RESIZE_MODES))}, got {resize_mode!r}")


def _decode(path: Any, image_size: int | None = None) -> Any:
    """Read an image file and decode it by content (JPEG/PNG, any channels) to RGB uint8 [H, W, 3].

    With image_size, a JPEG is decoded at 1/ratio size by libjpeg's DCT scaling (several times less work than a full
    decode plus a downscale), the ratio chosen from its own header by jpeg_ratio; PNGs and anything else, and every
    image without image_size, go through decode_image at full size.
    """
    import tensorflow as tf

    raw = tf.io.read_file(path)

    def decode_any() -> Any:
        return tf.io.decode_image(raw, channels=3, expand_animations=False, dtype=tf.uint8)

    def decode_jpeg() -> Any:
        shape = tf.io.extract_jpeg_shape(raw)
        side = tf.minimum(shape[0], shape[1])
        ratios = (1, *sorted(JPEG_RATIOS))
        # jpeg_ratio's rule in the graph: the index of the largest ratio r with side >= r * S (ratios ascending)
        index = tf.add_n([tf.cast(side >= r * image_size, tf.int32) for r in ratios[1:]])
        return tf.switch_case(index, [lambda r=r: tf.io.decode_jpeg(raw, channels=3, ratio=r) for r in ratios])

    if image_size is not None:
        is_jpeg = tf.equal(tf.strings.substr(raw, 0, len(JPEG_MAGIC)), JPEG_MAGIC)
        image = tf.cond(is_jpeg, decode_jpeg, decode_any)
    else:
        image = decode_any()
    image.set_shape([None, None, 3])
    return image


def _to_uint8(image: Any) -> Any:
    """Round and clip resampled pixels back to uint8."""
    import tensorflow as tf

    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _resize(image: Any, image_size: int) -> Any:
    """The whole image resized to S x S uint8 (no work when it already is S x S)."""
    import tensorflow as tf

    shape = tf.shape(image)

    def resize() -> Any:
        # Downscaling averages each output pixel's whole footprint ("area", a box filter), which keeps faces free of
        # aliasing (e.g. 256 -> 224) at about 3x the speed of bilinear with antialias=True, the input pipeline's
        # bottleneck on few CPU cores (results/bench). Upscaling needs no antialiasing: plain bilinear.
        down = tf.logical_and(shape[0] >= image_size, shape[1] >= image_size)
        resized = tf.cond(down, lambda: tf.image.resize(image, [image_size, image_size], method="area"),
                          lambda: tf.image.resize(image, [image_size, image_size], method="bilinear"))
        return _to_uint8(resized)

    same = tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size))
    image = tf.cond(same, lambda: image, resize)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def _crop_source(image: Any, image_size: int) -> Any:
    """The image at its own scale, or, when its shorter side is under S, enlarged (aspect kept) until it is S."""
    import tensorflow as tf

    shape = tf.shape(image)
    short = tf.minimum(shape[0], shape[1])

    def enlarge() -> Any:
        scale = image_size / tf.cast(short, tf.float32)
        # ceil and max: rounding must never leave a side one pixel short of the crop
        size = tf.maximum(tf.cast(tf.math.ceil(tf.cast(shape[:2], tf.float32) * scale - 1e-3), tf.int32), image_size)
        return _to_uint8(tf.image.resize(image, size, method="bilinear"))

    return tf.cond(short < image_size, enlarge, lambda: image)


def _centre_crop(image: Any, image_size: int) -> Any:
    """The central S x S window of an image at least S x S (the evaluation crop: the same every time)."""
    import tensorflow as tf

    shape = tf.shape(image)
    top, left = (shape[0] - image_size) // 2, (shape[1] - image_size) // 2
    crop = tf.image.crop_to_bounding_box(image, top, left, image_size, image_size)
    return tf.ensure_shape(crop, [image_size, image_size, 3])


def _random_crop(image: Any, image_size: int, key: Any) -> Any:
    """A random S x S window of an image at least S x S, drawn from the stateless `key` (shape [2])."""
    import tensorflow as tf

    crop = tf.image.stateless_random_crop(image, [image_size, image_size, 3], seed=key)
    return tf.ensure_shape(crop, [image_size, image_size, 3])


def _decode_resize(path: Any, image_size: int, resize_mode: str = DEFAULT_RESIZE_MODE, training: bool = False) -> Any:
    """Read and decode an image file to RGB uint8 and bring it to S x S as resize_mode says.

    "resize": the whole image resized to S x S (a JPEG DCT-downscaled first by its own jpeg_ratio). "crop": the
    central S x S window (evaluation), or, when training, the whole image at its own scale (shorter side at least S)
    for make_dataset to cut a random window from after its cache; never DCT-downscaled, which would change its scale.
    """
    _check_resize_mode(resize_mode)
    if resize_mode == "resize":
        return _resize(_decode(path, image_size), image_size)
    image = _decode(path)
    image = _crop_source(image, image_size)
    return image if training else _centre_crop(image, image_size)


def _cores() -> int:
    """CPU cores this process may use (at least 2, so reading and decoding overlap)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, usable or 2)


def _op_determinism() -> bool:
    """Whether tf.config.experimental.enable_op_determinism() is on (then the input order must be exact too)."""
    from tensorflow.python.framework.config import is_op_determinism_enabled

    return bool(is_op_determinism_enabled())


def _epoch_keys(seed: int) -> "tf.data.Dataset":
    """An endless repeat of one random int64 that is drawn anew, from `seed`, on every pass over the dataset.

    Zipped beside the images it gives every element of one epoch the same epoch key and each epoch another, in a
    sequence fixed by the seed (tf.data.Dataset.random re-randomised per iteration, as the seeded shuffles are).
    """
    import tensorflow as tf

    return (tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
            .flat_map(lambda key: tf.data.Dataset.from_tensors(key).repeat()))


def make_dataset(split: Split, image_size: int, batch_size: int, training: bool, seed: int = 0,
                 cache: bool | str = "auto", resize_mode: str = DEFAULT_RESIZE_MODE,
                 degradation: dict[str, Any] | None = None) -> "tf.data.Dataset":
    """A tf.data pipeline of (float32 images [B,S,S,3] in 0..255, int32 labels [B]) for a split.

    Training order is seeded (file shuffle before decoding, element shuffle after the cache) but not exact: parallel
    decodes are emitted as they finish, so neighbouring images may swap between runs, unless op determinism is on.
    Evaluation order is always the split's order.

    resize_mode: "resize" or "crop" (see RESIZE_MODES). degradation: the train-time degradations
    (utils.degradation.config), training only. The random crop and the degradations run after the cache, so every
    epoch draws them anew; their draws are keyed by (an epoch key from the seed, the image's index in the split),
    which makes them exact for a given seed even where the image order is not.
    """
    import tensorflow as tf

    from utils.degradation import config as degradation_config
    from utils.degradation import degrade

    if len(split.paths) != len(split.labels):
        raise DataError(f"split has {len(split.paths)} paths but {len(split.labels)} labels")
    _check_resize_mode(resize_mode)
    if degradation is not None and not training:
        raise DataError("degradation applies to the training split only; evaluation and prediction see clean images")
    settings = degradation_config(degradation) if degradation is not None else None
    crop = training and resize_mode == "crop"
    autotune = tf.data.AUTOTUNE
    deterministic = not training or _op_determinism()
    # Per-image draws after the cache (random crop, degradations) are keyed by the image's index in the split, which
    # then travels with it; without them the pipeline is the study's, element for element.
    keyed = crop or settings is not None
    numbers = (tf.range(len(split.paths), dtype=tf.int64),) if keyed else ()
    ds = tf.data.Dataset.from_tensor_slices((tf.constant(split.paths, dtype=tf.string),
                                             tf.constant(split.labels, dtype=tf.int32), *numbers))
    if training and len(split.paths) > 1:
        ds = ds.shuffle(len(split.paths), seed=seed, reshuffle_each_iteration=True)
    # One decode per usable core from the start: AUTOTUNE starts low and re-tunes on a doubling period, and while
    # the shuffle buffer below fills a whole epoch that halved the first-epoch rate on 2 cores (results/bench).
    ds = ds.map(lambda path, label, *number: (_decode_resize(path, image_size, resize_mode, training),
                                              label, *number),
                num_parallel_calls=_cores(), deterministic=deterministic)
    if cache == "auto":
        cache = cache_fits(split, image_size, resize_mode, training)
    if isinstance(cache, str):
        ds = ds.cache(cache)  # a file path: cache on disk
    elif cache:
        ds = ds.cache()
    if training and len(split.paths) > 1:
        # after a cache every epoch replays the first epoch's order; mix it again
        ds = ds.shuffle(min(len(split.paths), SHUFFLE_BUFFER), seed=seed + 1, reshuffle_each_iteration=True)
    if keyed:
        def per_image(element: Any, epoch: Any) -> Any:
            image, label, number = element
            key = tf.stack([epoch, number])
            if crop:
                image = _random_crop(image, image_size, tf.random.experimental.stateless_fold_in(key, 0))
            if settings is not None:
                image = degrade(image, tf.random.experimental.stateless_fold_in(key, 1), settings)
            return image, label

        ds = tf.data.Dataset.zip((ds, _epoch_keys(seed + 2))).map(per_image, num_parallel_calls=_cores(),
                                                                  deterministic=deterministic)
    ds = ds.batch(batch_size, drop_remainder=False)
    ds = ds.map(lambda images, labels: (tf.cast(images, tf.float32), labels), num_parallel_calls=autotune,
                deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.prefetch(autotune).with_options(options)


def fill_batches(ds: "tf.data.Dataset", multiple: int) -> "tf.data.Dataset":
    """Each batch brought up to a multiple of `multiple` images by repeating its first ones (at most multiple - 1).

    Training on that many replicas: every replica then gets the same number of images, at least one, at every step
    (Keras 3 averages the first batch over the replicas, which fails on unequal shares, and batch normalisation
    fails on a replica given none). Repeating rather than dropping keeps every image in every epoch and the epoch's
    step count (known to tf.data, so Keras sees no early end); batches of a global batch size are left alone but
    the last, whose few repeated images weigh double in that one step.
    """
    import tensorflow as tf

    def fill(*batch: Any) -> Any:
        size = tf.shape(batch[0])[0]

        def repeated() -> Any:
            index = tf.range(-(-size // multiple) * multiple) % size
            return tuple(tf.gather(part, index) for part in batch)

        filled = tf.cond(size % multiple == 0, lambda: tuple(batch), repeated)
        return filled if len(filled) > 1 else filled[0]

    return ds.map(fill)


def pad_batches(ds: "tf.data.Dataset", multiple: int) -> "tf.data.Dataset":
    """(images, labels, real) batches: each padded to a multiple of `multiple` with blank images, `real` False there.

    Prediction on that many replicas: each then gets the same number of images, at least one; the outputs of the
    padding are dropped by `real`. Batches of images alone get labels 0; padded labels are 0 too.
    """
    import tensorflow as tf

    def pad(*batch: Any) -> Any:
        images = batch[0]
        labels = batch[1] if len(batch) > 1 else tf.zeros(tf.shape(images)[:1], tf.int32)
        size = tf.shape(images)[0]
        extra = -size % multiple

        def padded(part: Any) -> Any:
            return tf.pad(part, [[0, extra]] + [[0, 0]] * (part.shape.rank - 1))

        return padded(images), padded(labels), tf.range(size + extra) < size

    return ds.map(pad)


def load_images(paths: list[str], image_size: int, resize_mode: str = DEFAULT_RESIZE_MODE) -> np.ndarray:
    """Images as float32 [N,S,S,3] in 0..255, decoded and brought to S x S exactly as make_dataset evaluates them."""
    if not paths:
        _check_resize_mode(resize_mode)
        return np.zeros((0, image_size, image_size, 3), dtype=np.float32)
    ds = make_dataset(Split(list(paths), [0] * len(paths)), image_size, batch_size=64, training=False, cache=False,
                      resize_mode=resize_mode)
    return np.concatenate([images.numpy() for images, _ in ds], axis=0)


def run_resize_mode(params: Mapping[str, Any] | None) -> str:
    """The resize_mode a run recorded in its params (params.json, or metrics.json's "params"); older runs resized."""
    mode = (params or {}).get("resize_mode", DEFAULT_RESIZE_MODE)
    _check_resize_mode(mode)
    return mode
