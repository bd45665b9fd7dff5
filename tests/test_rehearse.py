"""The rehearsal: the exact kernel `push` sends, run here in a simulated /kaggle on the two-replica mixed-precision path
and on the TPU's path.

Four rehearsals of params/kaggle-t4x2.yaml with a few images per class share the module: one whose time budget ends
it after its first of two epochs, then one that attaches that output (read-only, as a kernel source) and finishes
it under the same MirroredStrategy over two logical CPU devices with mixed_float16; and two pushed for the TPU
(`--accelerator tpu`, max_images 10 and 11), which train under Keras' JAX backend with DataParallel over 8 virtual
host devices and mixed_bfloat16. The split sizes are odd, so batches do not split evenly over the replicas. Their
models are then evaluated and explained here, under TensorFlow. Bad values must fail in the rehearsal with the
notebook's own message.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from kaggle_standin import tiny_140k

from tools.kaggle.build import IMAGENET_NOTOP_FILE
from tools.kaggle.cli import EXIT_ERROR, EXIT_RUN_FAILED
from tools.kaggle.commands import kaggle_cli
from tools.kaggle.rehearsal import REHEARSAL_OWNER, input_mount
from utils.report import count_images
from utils.runtime import BUILD_RECORD, EXECUTED_NOTEBOOK

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO_ROOT / "notebooks" / "train.ipynb"
STUDY_PARAMS = REPO_ROOT / "params" / "kaggle-t4x2.yaml"
# 2 epochs of 6 images per class at 32 px, 2 per replica: a global batch of 4 and a learning rate of sqrt(2) x 0.001.
# The training split's 9 images end in a batch of 1 (a replica without an image) and the validation split's 3 in one
# that splits 2/1: both failed on two replicas before (issue 18).
MAX_IMAGES = 6
SMALL = ["-p", "epochs", "2", "-p", "image_size", "32", "-p", "batch_size", "2", "-p", "max_images", str(MAX_IMAGES)]
RUN_FOLDER = "train"  # output_dir in kaggle-t4x2.yaml: /kaggle/working/train
# The TPU rehearsals: 1 image per device on 8 devices (a global batch of 8), one epoch, max_images 10 and 11 a class:
# 20 and 22 images split 75:25 into training and validation (e.g. 15 and 5: a last batch of 7, and fewer validation
# images than devices), and 20 and 22 test images.
TPU_MAX_IMAGES = (10, 11)
TPU = ["--accelerator", "tpu", "-p", "epochs", "1", "-p", "batch_size", "1", "-p", "time_budget_hours", "0"]
# P(fake) of a float32 model under TensorFlow and under JAX: the same weights and arithmetic, other kernels.
BACKEND_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def rehearsals(tmp_path_factory):
    """The budget-stopped rehearsal and the one that continues it: {name: (exit code, output folder)}."""
    root = tmp_path_factory.mktemp("rehearsal")
    data = tiny_140k(root / "faces")
    sim = root / "sim"

    def rehearse(slug: str, *extra: str, data: Path = data) -> tuple[int, Path]:
        code = kaggle_cli(["rehearse", str(NOTEBOOK), "-f", str(STUDY_PARAMS), *SMALL, *extra, "--slug", slug,
                           "--data", str(data), "--rehearsal-dir", str(sim)])
        return code, sim / slug / "output"

    budget = rehearse("rehearsal-budget", "-p", "time_budget_hours", "0.000001")  # no time for a second epoch
    resumed = rehearse("rehearsal-resume", "-p", "time_budget_hours", "0", "--resume-from", str(budget[1]))
    tpu_data = tiny_140k(root / "faces-tpu", per_class=2 * max(TPU_MAX_IMAGES))  # test: max(TPU_MAX_IMAGES) a class
    tpu = {count: rehearse(f"rehearsal-tpu-{count}", *TPU, "-p", "max_images", str(count), data=tpu_data)
           for count in TPU_MAX_IMAGES}
    return {"budget": budget, "resumed": resumed, "tpu": tpu, "tpu_data": tpu_data, "data": data, "sim": sim}


def log_of(output: Path) -> str:
    """A rehearsal's run log (what Kaggle's listing gives as <slug>.log)."""
    return (output / f"{output.parent.name}.log").read_text()


def assert_report_shows_figures(output: Path) -> str:
    """The report `pull` would give exists and shows every figure the run folder holds."""
    report = (output / f"{output.parent.name}.html").read_text()
    pngs = sorted((output / RUN_FOLDER).glob("*.png"))
    assert {p.name for p in pngs} == {"training_curves.png", "confusion_matrix.png"}
    assert count_images(report) == len(pngs)
    return report


def test_time_budget_stops_after_the_last_epoch_that_fits(rehearsals):
    """Two replicas, mixed_float16: the budget ends training after epoch 1 of 2; the best checkpoint is still
    evaluated, metrics.json says unfinished, the backup stays for the next session and the report is there."""
    code, output = rehearsals["budget"]
    log = log_of(output)
    assert code == 0, log[-3000:]
    assert "strategy: MirroredStrategy with 2 replica(s) | precision: mixed_float16" in log
    assert "2 replica(s): global batch 4, learning rate 0.00141421" in log  # batch_size 2 per replica, lr x sqrt(2)
    assert "time budget reached after epoch 1/2" in log
    run = output / RUN_FOLDER
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] is False and metrics["epochs_run"] == 1 and "time budget" in metrics["stopped"]
    assert metrics["environment"]["precision"] == "mixed_float16"
    training = metrics["training"]  # the effective values, also in the report's parameter table
    assert training["replicas"] == 2 and training["global_batch"] == 4 and training["earlier_replicas"] == []
    assert training["effective_learning_rate"] == pytest.approx(0.001 * 2 ** 0.5) and "square root" in training["lr_scaling"]
    assert "effective_learning_rate" in (output / f"{output.parent.name}.html").read_text()
    assert metrics["params"]["time_budget_hours"] == 0.000001 and "test" in metrics
    counts = {split: sum(per_class.values()) for split, per_class in metrics["dataset"]["counts"].items()}
    assert counts == {"train": 9, "val": 3, "test": 6}  # the odd sizes this module is about
    assert metrics["val"]["n"] == 3 and metrics["test"]["n"] == 6  # every held-out image evaluated
    assert (run / "backup").is_dir() and (run / "model.keras").is_file()
    assert not (output / EXECUTED_NOTEBOOK).exists()  # gone when the run ended, as on Kaggle
    assert json.loads((output / BUILD_RECORD).read_text())["slug"] == "rehearsal-budget"
    assert_report_shows_figures(output)


def test_resume_from_the_attached_output_finishes_under_the_strategy(rehearsals):
    """The next session attaches the first one's output read-only, continues from its backup and finishes."""
    code, output = rehearsals["resumed"]
    log = log_of(output)
    assert code == 0, log[-3000:]
    assert "continuing the run attached at" in log and "resuming from" in log
    assert "MirroredStrategy with 2 replica(s) | precision: mixed_float16" in log
    build = json.loads((output / BUILD_RECORD).read_text())
    assert build["accelerator"] == "gpu" and build["resume_from"] == f"{REHEARSAL_OWNER}/rehearsal-budget"
    mount = input_mount("kernel", build["resume_from"])  # notebooks/<owner>/<slug>, as Kaggle mounts it in 2026
    attached = rehearsals["sim"] / "rehearsal-resume" / "input" / mount / RUN_FOLDER / "params.json"
    assert attached.is_file() and attached.stat().st_mode & 0o222 == 0  # mounted read-only
    run = output / RUN_FOLDER
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] is True and metrics["epochs_run"] == 2 and metrics["stopped"] is None
    history = (run / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1"]  # epoch 1 from the first session, 2 from this
    assert not (run / "backup").exists() and (run / "model.keras").is_file()
    report = assert_report_shows_figures(output)
    assert "Traceback" not in report


def test_mixed_float16_model_evaluates_and_explains(rehearsals):
    """The model trained under mixed_float16 over two replicas loads here computing in float32 (even under a
    mixed_float16 global policy), scores as the trained precision does within float16's error, and gives finite
    Grad-CAM maps; the best checkpoint holds no optimizer state (the backup does, while a run is unfinished)."""
    import keras

    from utils import data, evaluation, explanation, pipeline
    from utils.model import load_model

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")  # as in the notebook, whose evaluation loads it so
    saved = rehearsals["resumed"][1] / RUN_FOLDER / "model.keras"
    try:
        model = load_model(saved)  # for inference: uncompiled, float32
        trained = load_model(saved, dtype=None)  # in the precision it trained in
    finally:
        keras.mixed_precision.set_global_policy(before)
    assert {layer.dtype_policy.name for layer in model.layers if layer.name.endswith("_conv")} == {"float32"}
    assert {layer.dtype_policy.name for layer in trained.layers if layer.name.endswith("_conv")} == {"mixed_float16"}
    with zipfile.ZipFile(saved) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as weights:
        assert "optimizer" not in weights and "layers" in weights  # Adam's state stayed in the backup
    index = data.index_dataset(str(rehearsals["data"]), val_split=0.25, seed=42, max_images=MAX_IMAGES)
    y_true, p_fake = evaluation.collect_predictions(model, pipeline.make_dataset(index.test, 32, 4, training=False))
    assert p_fake.dtype == np.float32 and np.all((p_fake >= 0) & (p_fake <= 1)) and len(y_true) == len(index.test)
    _, p_trained = evaluation.collect_predictions(trained, pipeline.make_dataset(index.test, 32, 4, training=False))
    assert np.abs(p_fake - p_trained).max() < 1e-2
    images = pipeline.load_images(index.test.paths[:2], 32)
    maps = explanation.grad_cam(model, images)
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


@pytest.mark.parametrize("count", TPU_MAX_IMAGES)
def test_tpu_kernel_trains_under_jax_on_eight_devices(rehearsals, count):
    """Pushed for the TPU: metadata TpuV5E8, the first cell selects JAX, DataParallel over 8 devices with
    mixed_bfloat16; every training, validation and test image counted once, and the report says so."""
    code, output = rehearsals["tpu"][count]
    log = log_of(output)
    assert code == 0, log[-3000:]
    slug = output.parent.name
    meta = json.loads((rehearsals["sim"] / "kernels" / slug / "kernel-metadata.json").read_text())
    assert meta["machine_shape"] == "TpuV5E8" and meta["enable_tpu"] is True and meta["enable_gpu"] is False
    build = json.loads((output / BUILD_RECORD).read_text())
    assert build["accelerator"] == "tpu" and build["keras_backend"] == "jax"
    setup = "strategy: DataParallel with 8 replica(s) | precision: mixed_bfloat16 | Keras backend: jax"
    assert setup in log and "8 replica(s): global batch 8, learning rate 0.00282843" in log  # 0.001 x sqrt(8)
    run = output / RUN_FOLDER
    metrics = json.loads((run / "metrics.json").read_text())
    environment, training = metrics["environment"], metrics["training"]
    assert environment["keras_backend"] == "jax" and environment["replicas"] == 8
    assert environment["precision"] == "mixed_bfloat16" and environment["accelerator"].startswith("8 x virtual CPU")
    assert training["replicas"] == 8 and training["global_batch"] == 8 and training["precision"] == "mixed_bfloat16"
    counts = {split: sum(per_class.values()) for split, per_class in metrics["dataset"]["counts"].items()}
    assert counts["train"] + counts["val"] == 2 * count and counts["test"] == 2 * count
    assert counts["val"] % 8 and counts["test"] % 8  # last batches that do not fill the devices (10: 15 training images too)
    assert metrics["val"]["n"] == counts["val"] and metrics["test"]["n"] == counts["test"]
    assert metrics["finished"] is True and np.isfinite(metrics["final"]["loss"])
    report = assert_report_shows_figures(output)
    assert "mixed_bfloat16" in report and "8 x virtual CPU device" in report and "DataParallel" in report


def test_tpu_trained_model_scores_the_same_under_tensorflow(rehearsals, tmp_path):
    """The model.keras trained under JAX (mixed_bfloat16, 8 devices) loads under TensorFlow for the analysis and
    predict, and gives every test image the P(fake) that JAX gives it on the 8 devices, within BACKEND_TOLERANCE."""
    import os
    import subprocess
    import sys

    from utils import data, evaluation, pipeline
    from utils.accelerator import REHEARSAL_REPLICAS_ENV, virtual_devices_env
    from utils.model import load_model

    count = TPU_MAX_IMAGES[-1]
    saved = rehearsals["tpu"][count][1] / RUN_FOLDER / "model.keras"
    model = load_model(saved)
    assert {layer.dtype_policy.name for layer in model.layers if layer.name.endswith("_conv")} == {"float32"}
    index = data.index_dataset(str(rehearsals["tpu_data"]), val_split=0.25, seed=42, max_images=count)
    y_true, p_tensorflow = evaluation.collect_predictions(model, pipeline.make_dataset(index.test, 32, 8,
                                                                                       training=False))
    script = "\n".join([
        "import sys, numpy as np",
        "from utils import accelerator, data, evaluation, pipeline",
        "from utils.model import load_model",
        "accelerator.setup_accelerator(0)",
        f"index = data.index_dataset({str(rehearsals['tpu_data'])!r}, val_split=0.25, seed=42, max_images={count})",
        f"model = load_model({str(saved)!r})",
        "_, p = evaluation.collect_predictions(model, pipeline.make_dataset(index.test, 32, 8, training=False))",
        f"np.save({str(tmp_path / 'jax.npy')!r}, p)",
    ])
    env = {**os.environ, **virtual_devices_env(8), "KERAS_BACKEND": "jax", REHEARSAL_REPLICAS_ENV: "8",
           "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DataParallel with 8 replica(s)" in done.stdout
    p_jax = np.load(tmp_path / "jax.npy")
    assert len(p_jax) == len(p_tensorflow) == len(index.test) == 2 * count
    assert np.abs(p_jax - p_tensorflow).max() < BACKEND_TOLERANCE


def test_bad_values_fail_in_the_rehearsal(rehearsals, capsys):
    """An unknown dataset folder fails with the notebook's own message before any push; weights='imagenet' with
    the internet off is refused while building, with how to attach the weights instead."""
    sim = rehearsals["sim"]
    code = kaggle_cli(["rehearse", str(NOTEBOOK), "-f", str(STUDY_PARAMS), *SMALL, "-p", "data_dir",
                       "/kaggle/input/no-such-faces", "--slug", "rehearsal-bad-data", "--data", str(rehearsals["data"]),
                       "--rehearsal-dir", str(sim)])
    err = capsys.readouterr().err
    assert code == EXIT_RUN_FAILED
    message = "parameter data_dir='/kaggle/input/no-such-faces' is invalid"
    assert f"the notebook raised ValueError: {message}" in err
    report = (sim / "rehearsal-bad-data" / "output" / "rehearsal-bad-data.html").read_text()
    assert "The run failed" in report and message in report

    code = kaggle_cli(["rehearse", str(NOTEBOOK), "-f", str(STUDY_PARAMS), *SMALL, "-p", "weights", "imagenet",
                       "--slug", "rehearsal-imagenet", "--rehearsal-dir", str(sim)])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and "internet off" in err and IMAGENET_NOTOP_FILE in err
    assert not (sim / "rehearsal-imagenet").exists()


# ---------------------------------------------------------------------------------------------- the pieces, fast


def test_time_budget_resolution(monkeypatch):
    """None: just under Kaggle's session limit on Kaggle, off elsewhere; 0 off; hours as given."""
    from utils import parameters, training
    from utils.runtime import KAGGLE_SESSION_HOURS

    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    assert training.resolve_time_budget(None) is None and training.resolve_time_budget(0) is None
    assert training.resolve_time_budget(2) == 2.0
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert 0 < training.resolve_time_budget(None) < KAGGLE_SESSION_HOURS
    assert training.resolve_time_budget(0) is None
    with pytest.raises(ValueError, match="time_budget_hours"):
        parameters.validate_params({**{name: None for name in parameters.PARAMETERS}, **parameters.PARAMETER_DEFAULTS,
                                    "alpha": 0.2, "epochs": 1,
                                    "batch_size": 2, "image_size": 32, "val_split": 0.25, "seed": 0,
                                    "learning_rate": 0.001, "bn_momentum": 0.9, "early_stopping": 0,
                                    "output_dir": "x", "time_budget_hours": -1})


def test_unfinished_run_keeps_its_backup(tmp_path):
    """clean_backup leaves the backup of a run its time budget stopped (metrics.json finished: false)."""
    from utils import training

    (tmp_path / "backup").mkdir()
    (tmp_path / "metrics.json").write_text('{"finished": false}')
    training.clean_backup(tmp_path)
    assert (tmp_path / "backup").is_dir()
    (tmp_path / "metrics.json").write_text('{"finished": true}')
    training.clean_backup(tmp_path)
    assert not (tmp_path / "backup").exists()
