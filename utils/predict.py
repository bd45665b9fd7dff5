"""Predict command: P(fake) and a label for every image in files and folders, with a saved model.keras."""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from utils import run_files
from utils.data import CLASS_NAMES, IMAGE_EXTENSIONS, scan_files
from utils.pipeline import DEFAULT_RESIZE_MODE, run_resize_mode
from utils.runtime import write_atomic

DEFAULT_THRESHOLD = 0.5
PROGRESS_EVERY = 500


def collect_paths(inputs: Sequence[str | os.PathLike]) -> tuple[list[str], list[dict]]:
    """Image files from files and folders (recursive, .jpg/.jpeg/.png any case), and records of missing inputs."""
    paths: list[str] = []
    missing: list[dict] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = [os.path.join(root, name) for root, _, names in os.walk(item) for name in names
                     if name.lower().endswith(IMAGE_EXTENSIONS)]
            paths.extend(sorted(found))
        elif os.path.isfile(item):
            paths.append(item)  # named explicitly: tried whatever its extension, scan_files says if it is no image
        else:
            missing.append({"path": item, "reason": "no such file or folder"})
    return list(dict.fromkeys(paths)), missing


def recorded_threshold(model_path: str | os.PathLike) -> float | None:
    """The validation-chosen threshold the analysis recorded in the model's run folder (threshold.json), if any."""
    record = Path(model_path).resolve().parent / run_files.THRESHOLD
    try:
        value = json.loads(record.read_text())["threshold"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, (int, float)) and 0 <= value <= 1 else None


def recorded_resize_mode(model_path: str | os.PathLike) -> str:
    """How the model's run brought images to size: resize_mode in its params.json (else metrics.json's params).

    Runs recorded before resize_mode existed resized whole images (utils.pipeline.DEFAULT_RESIZE_MODE); so does a model
    without a run folder around it.
    """
    folder = Path(model_path).resolve().parent
    for name, key in ((run_files.PARAMS, None), (run_files.METRICS, "params")):
        try:
            record = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        params = record.get(key) if key and isinstance(record, dict) else record
        if isinstance(params, dict):
            return run_resize_mode(params)
    return DEFAULT_RESIZE_MODE


def model_image_size(model: Any) -> int:
    """The square input size of a model from its input shape [None, S, S, 3]."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise ValueError(f"model input shape {shape} is not [batch, S, S, 3] with a fixed square size S")
    return int(shape[1])


def _short(error: Exception) -> str:
    """A decoder error's message without TensorFlow's op-name decoration."""
    text = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", str(error)).strip()
    return (text.splitlines() or [type(error).__name__])[0][:200]


def _decode(paths: list[str], image_size: int, resize_mode: str = DEFAULT_RESIZE_MODE
            ) -> tuple[np.ndarray, list[str], list[dict]]:
    """Decode a batch as the run evaluated; when the batch fails, file by file so only the bad files are dropped."""
    from utils.pipeline import load_images

    try:
        return load_images(paths, image_size, resize_mode), paths, []
    except Exception:  # tf raises InvalidArgumentError and friends; one bad file must not lose the batch
        images, good, bad = [], [], []
        for path in paths:
            try:
                images.append(load_images([path], image_size, resize_mode)[0])
                good.append(path)
            except Exception as error:
                bad.append({"path": path, "reason": f"cannot decode: {_short(error)}"})
        stack = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), dtype=np.float32)
        return stack, good, bad


def predict_files(model: Any, paths: list[str], batch_size: int = 32, threshold: float = DEFAULT_THRESHOLD,
                  progress: Callable[[int, int], None] | None = None, resize_mode: str = DEFAULT_RESIZE_MODE
                  ) -> tuple[list[dict], list[dict]]:
    """Rows {path, p_fake, label} for the readable images and records {path, reason} for the unreadable ones.

    resize_mode: how the model's run brought images to size (recorded_resize_mode), "resize" or a centre "crop".
    """
    from utils.evaluation import predict_proba

    image_size = model_image_size(model)
    good, unreadable = scan_files(list(paths))
    rows: list[dict] = []
    for start in range(0, len(good), batch_size):
        images, decoded, bad = _decode(good[start:start + batch_size], image_size, resize_mode)
        unreadable.extend(bad)
        if len(decoded):
            p_fake = predict_proba(model, images, batch_size)
            rows.extend({"path": path, "p_fake": float(p), "label": CLASS_NAMES[int(p >= threshold)]}
                        for path, p in zip(decoded, p_fake))
        if progress is not None:
            progress(min(start + batch_size, len(good)), len(good))
    return rows, unreadable


def rows_to_csv(rows: list[dict]) -> str:
    """CSV text with columns path, p_fake, label."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["path", "p_fake", "label"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({**row, "p_fake": f"{row['p_fake']:.6f}"} for row in rows)
    return buffer.getvalue()


def predict_parser() -> argparse.ArgumentParser:
    """Command-line interface of python -m utils.predict."""
    p = argparse.ArgumentParser(
        prog="python -m utils.predict",
        description="Probability of being fake and a real/fake label for every image in the given files and folders "
                    "(folders searched recursively for .jpg/.jpeg/.png). Unreadable files are listed and skipped.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    p.add_argument("--model", required=True, help="a training run's model.keras")
    p.add_argument("--csv", help="write the predictions to this CSV file (path, p_fake, label)")
    p.add_argument("--threshold", type=float, default=None,
                   help="P(fake) at or above which an image is labelled fake; default: the validation-chosen "
                        f"threshold in the run folder's {run_files.THRESHOLD} (written by the analysis notebook), "
                        f"else {DEFAULT_THRESHOLD}")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--progress-every", type=int, default=PROGRESS_EVERY,
                   help=f"print a progress line to stderr every N images (default {PROGRESS_EVERY})")
    return p


def predict_cli(argv: list[str] | None = None) -> int:
    """Command line: python -m utils.predict --model RUN/model.keras PATH [PATH ...] [--csv OUT.csv]."""
    args = predict_parser().parse_args(argv)
    if args.batch_size < 1:
        predict_parser().error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        predict_parser().error(f"--threshold must be a probability in [0, 1], got {args.threshold}")
    if not os.path.isfile(args.model):
        predict_parser().error(f"--model {args.model} is not a file (expected a training run's model.keras)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from utils.model import load_model

    paths, missing = collect_paths(args.paths)
    threshold, source = args.threshold, "--threshold"
    if threshold is None:
        threshold = recorded_threshold(args.model)
        source = f"validation-chosen ({run_files.THRESHOLD})"
        if threshold is None:
            threshold, source = DEFAULT_THRESHOLD, "default"
    resize_mode = recorded_resize_mode(args.model)
    print(f"{len(paths)} image file(s); threshold {threshold:.4f} ({source}); images brought to size by "
          f"{resize_mode!r} as the run was", file=sys.stderr, flush=True)
    model = load_model(args.model)
    every = max(1, args.progress_every)
    last = [0]

    def progress(done: int, total: int) -> None:
        if done // every > last[0] // every or (done == total and total >= every):
            print(f"  {done}/{total} images", file=sys.stderr, flush=True)
        last[0] = done

    rows, unreadable = predict_files(model, paths, args.batch_size, threshold, progress, resize_mode)
    unreadable = missing + unreadable
    sys.stdout.write(rows_to_csv(rows))
    if args.csv:
        print(f"wrote {write_atomic(args.csv, rows_to_csv(rows))}", file=sys.stderr)
    counts = {name: sum(row["label"] == name for row in rows) for name in CLASS_NAMES}
    print(f"summary: {len(rows)} classified ({', '.join(f'{n} {name}' for name, n in counts.items())}), "
          f"{len(unreadable)} unreadable, threshold {threshold:.4f}", file=sys.stderr)
    for bad in unreadable:
        print(f"  unreadable: {bad['path']}: {bad['reason']}", file=sys.stderr)
    if not rows:
        print("no image could be classified", file=sys.stderr)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(predict_cli())
