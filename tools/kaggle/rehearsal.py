"""The rehearsal: the kernel `push` would send, run here as Kaggle runs it (papermill in a simulated /kaggle, inputs
mounted read-only as in 2026, no credentials, internet off, T4 x2 as two logical CPU devices, a TPU v5e-8's 8 chips as
8 JAX host devices), ending in the report `pull` would leave."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tools.kaggle.build import METADATA_FILE, accelerator_choice, build_kernel, slugify
from tools.kaggle.cli import EXIT_RUN_FAILED, KaggleError
from tools.kaggle.logs import run_error
from tools.kaggle.reports import finish_report
from utils.accelerator import MACHINE_DEVICES, REHEARSAL_REPLICAS_ENV, virtual_devices_env
from utils.runtime import DATASETS_MOUNT, EXECUTED_NOTEBOOK, NOTEBOOKS_MOUNT, REPO_ROOT, write_atomic

REHEARSAL_ROOT = REPO_ROOT / "build" / "kaggle-rehearsal"
REHEARSAL_OWNER = "rehearsal"  # the kernel id's owner in a rehearsal's build (nothing is pushed)
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: every download fails at once, as with the internet off


def _remove_tree(path: Path) -> None:
    """Delete a folder even where the rehearsal made it read-only (never following symlinks)."""
    if not path.exists() and not path.is_symlink():
        return
    for folder, dirs, _ in os.walk(path):
        for name in dirs:
            target = Path(folder) / name
            if not target.is_symlink():
                target.chmod(0o755)
    path.chmod(0o755)
    shutil.rmtree(path)


def input_mount(kind: str, ref: str, layout: str = "2026") -> Path:
    """Where Kaggle mounts a source under /kaggle/input: since 2026 datasets/<owner>/<slug> and
    notebooks/<owner>/<slug> (a kernel's output), before that <slug> for both."""
    owner, slug = ref.split("/")[:2]
    if layout == "legacy":
        return Path(slug)
    return Path({"dataset": DATASETS_MOUNT, "kernel": NOTEBOOKS_MOUNT}[kind]) / owner / slug


def make_read_only(path: Path) -> None:
    """Files 0444 and folders 0555, as Kaggle mounts inputs (symlinks left alone)."""
    for folder, dirs, files in os.walk(path, topdown=False):
        for name in files:
            if not (Path(folder) / name).is_symlink():
                (Path(folder) / name).chmod(0o444)
        for name in dirs:
            if not (Path(folder) / name).is_symlink():
                (Path(folder) / name).chmod(0o555)
    path.chmod(0o555)


def rehearsal_devices(accelerator: str) -> int:
    """The devices standing for an accelerator's (utils.accelerator.MACHINE_DEVICES): 2 for the T4s, 8 for the TPU's
    chips, 1 for the CPU."""
    return MACHINE_DEVICES.get(accelerator_choice(accelerator), 1)


def kernel_env(input_dir: Path, working: Path, accelerator: str = "gpu", internet: bool = False,
               devices: int | None = None) -> dict[str, str]:
    """The environment of a simulated Kaggle kernel: its folders, KAGGLE_KERNEL_RUN_TYPE, the devices standing for
    the accelerator, no credentials, no repository on the path and (internet off) every download sent to a dead proxy.

    "gpu": $KAGGLE_REHEARSAL_REPLICAS `devices` (default 2), the logical CPU devices TensorFlow splits for the T4s;
    "tpu": the same count (default 8) and XLA's `devices` host devices for JAX (utils.accelerator.virtual_devices_env),
    one per TPU chip; "cpu": neither.
    """
    devices = rehearsal_devices(accelerator) if devices is None else devices
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("KAGGLE_") and key not in ("PYTHONPATH",) and "proxy" not in key.lower()}
    env.update({"KAGGLE_KERNEL_RUN_TYPE": "Batch", "KAGGLE_INPUT_ROOT": str(input_dir),
                "KAGGLE_WORKING_ROOT": str(working)})
    if accelerator != "cpu":
        env[REHEARSAL_REPLICAS_ENV] = str(devices)
    if accelerator == "tpu":
        env.update(virtual_devices_env(devices))
    if not internet:
        env.update({name: DEAD_PROXY for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")})
    return env


def kernel_command(notebook: Path, working: Path) -> list[str]:
    """Kaggle's run of a pushed notebook: papermill into <working>/__notebook__.ipynb with the working folder as cwd."""
    return [sys.executable, "-m", "papermill", str(notebook), str(working / EXECUTED_NOTEBOOK), "--cwd", str(working),
            "-k", "python3", "--log-output", "--no-progress-bar"]


def execute_kernel(folder: Path, input_dir: Path, working: Path, accelerator: str = "gpu", internet: bool = False,
                   devices: int | None = None) -> tuple[int, str]:
    """Run a built kernel as Kaggle does: papermill on the pushed notebook, cwd = the working folder, the executed
    copy at <working>/__notebook__.ipynb while it runs and deleted after; the exit code and the run log."""
    meta = json.loads((Path(folder) / METADATA_FILE).read_text())
    working.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    command = kernel_command(Path(folder) / meta["code_file"], working)
    with subprocess.Popen(command, cwd=working, env=kernel_env(input_dir, working, accelerator, internet, devices),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
        for line in process.stdout:
            log.append(line)
            print(line, end="", flush=True)
    (working / EXECUTED_NOTEBOOK).unlink(missing_ok=True)  # gone once the run ends, as on Kaggle
    return process.returncode, "".join(log)


def rehearse(notebook: Path, params: dict[str, Any], title: str, data: Path | None = None,
             resume_from: Path | None = None, accelerator: str = "gpu", internet: bool = False,
             rehearsal_root: Path | None = None, devices: int | None = None) -> tuple[int, Path]:
    """Build the kernel `push` would send and run it here in a simulated /kaggle; the exit code and its report.

    <root>/<slug>/ holds input/ (mounted as Kaggle does since 2026: the dataset in the 140k layout at
    datasets/<owner>/<slug>, an attached earlier output read-only at notebooks/rehearsal/<name>) and output/ (what
    /kaggle/working held, the log and <slug>.html, as `pull` leaves them); the builds go to <root>/kernels/.
    `accelerator` is the push's ("gpu", "tpu", "cpu"); `devices` the devices standing for it (kernel_env; default 2
    for the T4s, 8 for the TPU's chips).
    """
    devices = rehearsal_devices(accelerator) if devices is None else devices
    if accelerator == "cpu" and devices != 1:
        raise KaggleError(f"a CPU kernel runs on one device, not {devices}: drop --replicas, or rehearse with "
                          "--accelerator gpu|tpu")
    if accelerator != "cpu" and devices < 2:
        raise KaggleError(f"--replicas {devices}: the {accelerator.upper()} path needs at least 2 devices (the "
                          "single-device path is --accelerator cpu, or --cpu)")
    root = Path(rehearsal_root or REHEARSAL_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    attached = None
    if resume_from is not None:
        resume_from = Path(resume_from)
        if not resume_from.is_dir():
            raise KaggleError(f"--resume-from {resume_from} is not a folder (a rehearsal's output/ or a pulled run)")
        name = resume_from.name if resume_from.name != "output" else resume_from.parent.name
        attached = f"{REHEARSAL_OWNER}/{name}"
    folder = build_kernel(notebook, params, REHEARSAL_OWNER, title, build_root=root / "kernels", internet=internet,
                          accelerator=accelerator, resume_from=attached)
    slug = folder.name
    staged = None
    if resume_from is not None:  # copied before the simulation folder is cleared: it may lie inside it
        staged = Path(tempfile.mkdtemp(prefix=".attached-", dir=root))
        shutil.copytree(resume_from, staged / "output", symlinks=True)
    sim = root / slug
    _remove_tree(sim)
    input_dir, working, output = sim / "input", sim / "working", sim / "output"
    input_dir.mkdir(parents=True)
    dataset = Path(data) if data is not None else None
    if dataset is None:
        from utils import synthetic  # the embedded default, generated in the 140k layout on first use

        dataset = synthetic.default_dataset_dir()
    if not dataset.is_dir():
        raise KaggleError(f"--data {dataset} is not a folder")
    meta = json.loads((folder / METADATA_FILE).read_text())
    # The data given stands for the first dataset source (the 140k dataset in kernel-metadata.json).
    for source in meta.get("dataset_sources", [])[:1] or [f"{REHEARSAL_OWNER}/{slugify(dataset.name) or 'data'}"]:
        mount = input_dir / input_mount("dataset", source)
        mount.parent.mkdir(parents=True, exist_ok=True)
        mount.symlink_to(dataset.resolve(), target_is_directory=True)
    if staged is not None:
        mount = input_dir / input_mount("kernel", attached)
        mount.parent.mkdir(parents=True, exist_ok=True)
        (staged / "output").rename(mount)
        staged.rmdir()
        make_read_only(mount)
    print(f"rehearsing {folder / notebook.name} in {sim} (accelerator {accelerator}: {devices} device(s), internet "
          f"{'on' if internet else 'off'})", flush=True)
    code, log = execute_kernel(folder, input_dir, working, accelerator, internet, devices)
    working.rename(output)
    write_atomic(output / f"{slug}.log", log)
    state = "COMPLETE" if code == 0 else "ERROR"
    report = finish_report(output, slug, state, log)
    if code:
        print(f"error: the rehearsal of {slug} failed: the notebook raised {run_error(log) or 'an error (see log)'}; "
              f"report: {report}", file=sys.stderr, flush=True)
        return EXIT_RUN_FAILED, report
    print(f"rehearsal of {slug} COMPLETE; outputs in {output}; report: {report}", flush=True)
    return 0, report

