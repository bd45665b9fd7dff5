"""tools.kaggle: the build (metadata, parameters, embedded utils, no secrets) and the real CLI against a stand-in.

No internet and no Kaggle account: the CLI's endpoint table (kagglesdk.kaggle_env) is pointed at a stand-in Kaggle on
127.0.0.1 (tests/kaggle_standin.py) that executes each pushed notebook in a simulated /kaggle and serves back only
what /kaggle/working then holds and the log, under Kaggle's session limit, with version numbers and a 401.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from kaggle_standin import QUOTA_ERROR, SESSION_LIMIT_ERROR, KaggleStandIn, tiny_140k

from tools.kaggle.build import (
    IMAGENET_NOTOP_FILE,
    SLUG_RE,
    TITLE_MAX,
    UTILS_CELL_TAG,
    build_kernel,
    fit_title,
    notebook_parameters,
    slugify,
    variant_title,
)
from tools.kaggle.calls import kernel_ref, push_folder, pushed_name, wait_for
from tools.kaggle.cli import (
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_RUN_FAILED,
    MIN_CLI,
    MIN_CLI_VERSION,
    KaggleError,
    cli_version,
    connect,
    load_cli,
)
from tools.kaggle.commands import kaggle_cli
from tools.kaggle.logs import run_error
from tools.kaggle.sweep import expected_gpu_hours, measured_epoch_seconds
from tools.notebook import parse_value
from utils.report import count_images
from utils.runtime import BUILD_RECORD, EXECUTED_NOTEBOOK, KAGGLE_SESSION_HOURS

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = "k3y-" + "9f8e7d6c5b4a39281706f5e4d3c2b1a0"  # a fake legacy key: must never leave the process
USER = "tester"
DATA_ERROR = ("no dataset attached under /kaggle/input: add xhlulu/140k-real-and-fake-faces to the notebook's inputs "
              "(kernel-metadata.json dataset_sources)")


TINY_BODY = """\
from PIL import Image
from utils import runtime
out = runtime.resolve_output_dir(output_dir)
out.mkdir(parents=True, exist_ok=True)
runtime.write_json(out / "metrics.json", {"alpha": alpha, "finished": True})
Image.new("RGB", (8, 8), (200, 30, 30)).save(out / "figure.png")
root = runtime.input_root()
seen = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "140k" not in str(p))
runtime.write_json(out / "inputs.json", {"files": seen})
for i in range(extra_files):
    (out / "extra").mkdir(exist_ok=True)
    (out / "extra" / f"{i:03d}.txt").write_text(str(i))
print("alpha", alpha)
if fail:
    raise ValueError(f"alpha {alpha} refused by the tiny notebook")
"""


def make_notebook(path: Path, with_parameters: bool = True) -> Path:
    """A tiny notebook (seconds to run): writes metrics.json, a PNG, what it found under the input folder and
    `extra_files` files into output_dir through the embedded utils; raises when `fail`."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell("alpha = 0.2\noutput_dir = 'results/run'\nextra_files = 0\nfail = False\n"
                                       "weights = None")
    if with_parameters:
        params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(TINY_BODY)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real Kaggle config is read or touched: temp HOME and config folder, no KAGGLE_* variables, no proxy."""
    for key in list(os.environ):
        if key.startswith("KAGGLE_") or key.lower() in ("http_proxy", "https_proxy", "all_proxy") or key == "VERBOSE":
            monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return tmp_path


@pytest.fixture
def creds(isolated, monkeypatch):
    """Legacy KAGGLE_USERNAME/KAGGLE_KEY credentials (they skip the CLI's token check)."""
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    return isolated


def cells_tagged(nb: dict, tag: str) -> list[str]:
    """Sources of a notebook's cells carrying a tag."""
    return ["".join(c["source"]) for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]


def payload_files(cell_source: str) -> dict[str, str]:
    """The files embedded in a generated utils cell."""
    encoded = re.search(r'b64decode\("""(.*?)"""\)', cell_source, re.S).group(1)
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(encoded))) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


# ---------------------------------------------------------------------------------------------- build


def test_variant_title_gives_the_slug():
    """Slug = notebook stem (+ params file) + parameters, and the title resolves to it."""
    title = variant_title(Path("notebooks/train.ipynb"), None, [("alpha", "0.1")])
    assert slugify(title) == "train-alpha-0-1"
    title = variant_title(Path("train.ipynb"), "params/kaggle-t4.yaml", [("alpha", "0.01"), ("epochs", "3")])
    assert slugify(title) == "train-kaggle-t4-alpha-0-01-epochs-3"


def test_build_folder(creds, tmp_path):
    """Metadata derived from the root file; parameters injected; utils carried and importable; no secret."""
    notebook = make_notebook(tmp_path / "src" / "train.ipynb")
    folder = build_kernel(notebook, {"alpha": 0.1}, USER, "train alpha 0.1", build_root=tmp_path / "build")
    assert folder == tmp_path / "build" / "train-alpha-0-1"
    assert sorted(p.name for p in folder.iterdir()) == ["kernel-metadata.json", "train.ipynb"]

    meta = json.loads((folder / "kernel-metadata.json").read_text())
    root = json.loads((REPO_ROOT / "kernel-metadata.json").read_text())
    assert meta["id"] == "tester/train-alpha-0-1" and meta["title"] == "train alpha 0.1"
    assert meta["code_file"] == "train.ipynb" and meta["kernel_type"] == "notebook" and meta["language"] == "python"
    assert meta["machine_shape"] == "NvidiaTeslaT4" and meta["enable_gpu"] is True
    assert meta["enable_internet"] is False and meta["is_private"] is True
    assert meta["dataset_sources"] == root["dataset_sources"] == ["xhlulu/140k-real-and-fake-faces"]

    nb = json.loads((folder / "train.ipynb").read_text())
    assert nb["cells"][0]["metadata"]["tags"] == [UTILS_CELL_TAG]
    injected = cells_tagged(nb, "injected-parameters")
    assert len(injected) == 1 and "alpha = 0.1" in injected[0]
    assert "alpha = 0.2" in cells_tagged(nb, "parameters")[0]  # defaults stay; the injected cell overrides them
    utils_cell = cells_tagged(nb, UTILS_CELL_TAG)[0]
    code = re.sub(r'b64decode\("""(.*?)"""\)', "", utils_cell, flags=re.S)
    assert "pip install" not in code and not re.search(r"^\s*[!%]", code, re.M)  # Kaggle's TF/Keras as they are
    files = payload_files(utils_cell)
    assert {"utils/__init__.py", "utils/runtime.py", "utils/model.py"} <= set(files)
    assert not any(name.startswith("tools/") for name in files)  # the laptop commands stay on the laptop
    assert files["utils/runtime.py"] == (REPO_ROOT / "utils" / "runtime.py").read_text()

    # Run the generated cell in a fresh interpreter away from the repository: `utils` must come from the payload.
    script = utils_cell + "\nimport utils.runtime\nprint(json.dumps({'file': utils.runtime.__file__, " \
                          "'build': KAGGLE_BUILD, 'commit': os.environ['UTILS_GIT_COMMIT']}))\n"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KAGGLE_KERNEL_RUN_TYPE")}
    (tmp_path / "cell.py").write_text(script)  # the payload is longer than one command-line argument may be
    done = subprocess.run([sys.executable, "cell.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["file"].startswith(str(REPO_ROOT)) and "kaggle-utils-" in result["file"]
    assert result["build"]["params"] == {"alpha": 0.1} and result["build"]["slug"] == "train-alpha-0-1"
    assert result["commit"] == result["build"]["commit"]
    assert result["build"]["accelerator"] == "gpu" and result["build"]["resume_from"] is None

    # The key appears nowhere in the build, not even inside the embedded zip.
    for path in folder.rglob("*"):
        assert SECRET not in path.read_text()
    assert all(SECRET not in text for text in files.values())


def test_build_for_the_cpu_and_a_resume(creds, tmp_path):
    """--cpu asks Kaggle for no accelerator and tells the kernel so; a resume attaches that kernel and says which run
    the kernel must find (both in the record the generated cell writes and checks)."""
    notebook = make_notebook(tmp_path / "src" / "train.ipynb")
    folder = build_kernel(notebook, {}, USER, "train on cpu", build_root=tmp_path / "b", accelerator="cpu",
                          resume_from="tester/train-alpha-0-2", kernel_sources=("tester/other-run",))
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["enable_gpu"] is False and meta["enable_tpu"] is False and "machine_shape" not in meta
    assert meta["kernel_sources"] == ["tester/other-run", "tester/train-alpha-0-2"]
    cell = cells_tagged(json.loads((folder / "train.ipynb").read_text()), UTILS_CELL_TAG)[0]
    record = json.loads(re.search(r"KAGGLE_BUILD = json.loads\((.*)\)", cell).group(1)[1:-1].encode().decode(
        "unicode_escape"))
    assert record["accelerator"] == "cpu" and record["resume_from"] == "tester/train-alpha-0-2"
    assert record["keras_backend"] == "tensorflow"
    assert "check_accelerator(KAGGLE_BUILD['accelerator'])" in cell


def build_record(folder: Path, notebook: str) -> dict:
    """The KAGGLE_BUILD record of a built kernel's generated first cell."""
    cell = cells_tagged(json.loads((folder / notebook).read_text()), UTILS_CELL_TAG)[0]
    return json.loads(re.search(r"KAGGLE_BUILD = json.loads\((.*)\)", cell).group(1)[1:-1].encode().decode(
        "unicode_escape"))


def root_with(tmp_path: Path, monkeypatch, **change) -> Path:
    """A root kernel-metadata.json with these keys changed (None: removed), in place of the repository's."""
    root = json.loads((REPO_ROOT / "kernel-metadata.json").read_text())
    root.update(change)
    path = tmp_path / "root-metadata.json"
    path.write_text(json.dumps({key: value for key, value in root.items() if value is not None}))
    monkeypatch.setattr("tools.kaggle.build.ROOT_METADATA", path)
    return path


def test_build_for_a_tpu(creds, tmp_path, monkeypatch, capsys):
    """A TPU v5e-8 push: machine_shape TpuV5E8 with enable_tpu, no GPU, and none of the root's docker image settings
    (a TPU push with a pinned image ran on the CPU image: kaggle-cli issue 1197, said in a warning). Its training
    records the JAX backend (only JAX sees the TPU); the analysis stays on TensorFlow, as does everything on a GPU."""
    root_with(tmp_path, monkeypatch, docker_image="gcr.io/kaggle-images/python:v150",
              docker_image_pinning_type="original")
    train, analyze = make_notebook(tmp_path / "src" / "train.ipynb"), make_notebook(tmp_path / "src" / "analyze.ipynb")
    folder = build_kernel(train, {}, USER, "train on tpu", build_root=tmp_path / "b", accelerator="tpu")
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    assert meta["machine_shape"] == "TpuV5E8" and meta["enable_tpu"] is True and meta["enable_gpu"] is False
    assert "docker_image" not in meta and "docker_image_pinning_type" not in meta
    err = capsys.readouterr().err
    assert "docker_image, docker_image_pinning_type" in err and "kaggle-cli/issues/1197" in err
    assert {key: build_record(folder, "train.ipynb")[key] for key in ("accelerator", "keras_backend")} == \
        {"accelerator": "tpu", "keras_backend": "jax"}
    folder = build_kernel(analyze, {}, USER, "analyze on tpu", build_root=tmp_path / "b", accelerator="tpu")
    assert build_record(folder, "analyze.ipynb")["keras_backend"] == "tensorflow"
    capsys.readouterr()
    for notebook in (train, analyze):
        folder = build_kernel(notebook, {}, USER, f"{notebook.stem} on gpu", build_root=tmp_path / "b")
        record, meta = build_record(folder, notebook.name), json.loads((folder / "kernel-metadata.json").read_text())
        assert record["accelerator"] == "gpu" and record["keras_backend"] == "tensorflow"
        assert meta["machine_shape"] == "NvidiaTeslaT4" and meta["enable_gpu"] is True and meta["enable_tpu"] is False
        assert meta["docker_image"] == "gcr.io/kaggle-images/python:v150"  # a GPU kernel keeps the root's image
    assert "docker_image" not in capsys.readouterr().err
    with pytest.raises(KaggleError, match="accelerator 'none' is invalid"):
        build_kernel(train, {}, USER, "train on none", build_root=tmp_path / "b", accelerator="none")


def test_generated_cell_selects_the_backend_before_keras(creds, tmp_path):
    """The first cell sets KERAS_BACKEND from the record before anything imports Keras (its backend is fixed at the
    first import): run in a fresh interpreter that refuses any import of keras, tensorflow or jax, off Kaggle (where
    the accelerator check does nothing)."""
    notebook = make_notebook(tmp_path / "src" / "train.ipynb")
    folder = build_kernel(notebook, {}, USER, "train on tpu", build_root=tmp_path / "b", accelerator="tpu")
    cell = cells_tagged(json.loads((folder / "train.ipynb").read_text()), UTILS_CELL_TAG)[0]
    assert cell.index("select_backend(KAGGLE_BUILD['keras_backend'])") < \
        cell.index("check_accelerator(KAGGLE_BUILD['accelerator'])")
    guard = ("import importlib.abc, sys\n"
             "class NoKeras(importlib.abc.MetaPathFinder):\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] in ('keras', 'tensorflow', 'jax'):\n"
             "            raise ImportError(f'{name} imported by the first cell')\n"
             "sys.meta_path.insert(0, NoKeras())\n")
    script = guard + cell + ("\nprint(json.dumps({'backend': os.environ.get('KERAS_BACKEND'), 'imported': sorted("
                             "m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'jax'))}))\n")
    (tmp_path / "cell.py").write_text(script)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "KERAS_BACKEND") and not k.startswith("KAGGLE_")}
    done = subprocess.run([sys.executable, "cell.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"backend": "jax", "imported": []}


@pytest.mark.parametrize("command", [["push", "TINY"], ["sweep", "TINY", "--alphas", "0", "0.2"],
                                     ["analyze", "faces-alpha-0", "faces-alpha-0-2"], ["rehearse", "TINY"]])
def test_an_unknown_root_machine_shape_stops_before_anything_is_built(isolated, tmp_path, monkeypatch, capsys,
                                                                         command):
    """A machine_shape in the root kernel-metadata.json that is not T4 x2's or TPU v5e-8's (e.g. the retired P100)
    stops every command at once, before credentials, builds or pushes: the file, the value, the shapes known and
    the flag that chooses instead."""
    path = root_with(tmp_path, monkeypatch, machine_shape="NvidiaTeslaP100")
    notebook = str(make_notebook(tmp_path / "train.ipynb"))
    argv = [notebook if arg == "TINY" else arg for arg in command]
    code, out, err = run_cli([*argv, "--build-dir" if command[0] != "rehearse" else "--rehearsal-dir",
                              str(tmp_path / "build")], capsys)
    assert code == EXIT_ERROR and "Traceback" not in out + err
    for part in (str(path), "'NvidiaTeslaP100'", "'NvidiaTeslaT4' (gpu)", "'TpuV5E8' (tpu)", "--accelerator"):
        assert part in err, err
    assert "credentials" not in err.lower() and not (tmp_path / "build").exists()


def test_the_root_machine_shape_or_the_flag_chooses_the_accelerator(isolated, tmp_path, monkeypatch):
    """Default: the root file's machine_shape (none: T4 x2); --accelerator (or --cpu) overrides it, even an unknown
    one; --cpu and --accelerator together are refused by the parser."""
    from tools.kaggle.build import resolve_accelerator
    from tools.kaggle.commands import kaggle_parser

    for shape, expected in (("TpuV5E8", "tpu"), ("NvidiaTeslaT4", "gpu"), (None, "gpu")):
        root_with(tmp_path, monkeypatch, machine_shape=shape)
        assert resolve_accelerator(None) == expected
    root_with(tmp_path, monkeypatch, machine_shape="TpuV99")
    assert [resolve_accelerator(flag) for flag in ("gpu", "tpu", "cpu")] == ["gpu", "tpu", "cpu"]
    parser = kaggle_parser()
    for command in (["push", "x.ipynb"], ["sweep", "x.ipynb"], ["analyze", "k-one"], ["rehearse", "x.ipynb"]):
        assert parser.parse_args([*command, "--cpu"]).accelerator == "cpu"
        assert parser.parse_args([*command, "--accelerator", "tpu"]).accelerator == "tpu"
        assert parser.parse_args(command).accelerator is None
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--cpu", "--accelerator", "tpu"])


def test_rehearsal_devices_stand_for_the_accelerators(tmp_path, monkeypatch, capsys):
    """T4 x2: two logical CPU devices for TensorFlow; TPU v5e-8: eight JAX host devices (XLA's flag, JAX on the CPU)
    for its eight chips; CPU: neither. A device count that does not fit the accelerator stops before any build."""
    from tools.kaggle.rehearsal import kernel_env
    from utils.accelerator import REHEARSAL_REPLICAS_ENV

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3 --xla_dump_to=/tmp/x")
    gpu, tpu, cpu = (kernel_env(tmp_path, tmp_path, accelerator) for accelerator in ("gpu", "tpu", "cpu"))
    assert gpu[REHEARSAL_REPLICAS_ENV] == "2" and "JAX_PLATFORMS" not in gpu
    assert tpu[REHEARSAL_REPLICAS_ENV] == "8" and tpu["JAX_PLATFORMS"] == "cpu"
    assert tpu["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=8"
    assert REHEARSAL_REPLICAS_ENV not in cpu and "JAX_PLATFORMS" not in cpu
    assert kernel_env(tmp_path, tmp_path, "tpu", devices=4)[REHEARSAL_REPLICAS_ENV] == "4"
    notebook = str(make_notebook(tmp_path / "train.ipynb"))
    for flags, refusal in ((["--replicas", "1"], "the GPU path needs at least 2 devices"),
                           (["--accelerator", "tpu", "--replicas", "1"], "the TPU path needs at least 2 devices"),
                           (["--cpu", "--replicas", "2"], "a CPU kernel runs on one device, not 2")):
        code, out, err = run_cli(["rehearse", notebook, *flags, "--rehearsal-dir", str(tmp_path / "r")], capsys)
        assert code == EXIT_ERROR and refusal in err and "Traceback" not in out + err, err
        assert not (tmp_path / "r").exists()


def test_hours_are_measured_on_the_same_accelerator(tmp_path):
    """A T4 x2 epoch says nothing of a TPU's: the estimate uses only the pulled runs whose build record names the
    sweep's accelerator (a record without one ran on the GPU; the old "none" is the CPU)."""
    from tools.kaggle.sweep import pulled_records, run_accelerator

    for slug, accelerator, seconds in (("run-gpu", "gpu", 3600.0), ("run-tpu", "tpu", 600.0),
                                       ("run-old", None, 7200.0), ("run-none", "none", 99.0)):
        (tmp_path / slug / "train").mkdir(parents=True)
        (tmp_path / slug / "train" / "metrics.json").write_text(json.dumps({"training_seconds": seconds,
                                                                             "epochs_run": 10}))
        if accelerator:
            (tmp_path / slug / BUILD_RECORD).write_text(json.dumps({"accelerator": accelerator}))
    slugs = ["run-gpu", "run-tpu", "run-old", "run-none"]
    assert [run_accelerator(tmp_path / slug) for slug in slugs] == ["gpu", "tpu", "gpu", "cpu"]
    assert measured_epoch_seconds(tmp_path, slugs) == pytest.approx(540.0)  # mean of 360 and 720
    assert measured_epoch_seconds(tmp_path, slugs, "tpu") == pytest.approx(60.0)
    assert measured_epoch_seconds(tmp_path, ["run-gpu"], "tpu") is None
    assert sorted(pulled_records(tmp_path, slugs, "gpu")) == ["run-gpu", "run-old"]
    assert sorted(pulled_records(tmp_path, slugs)) == sorted(slugs)


def test_build_refuses_a_secret_in_utils(creds, tmp_path, monkeypatch):
    """A credential pasted into utils/ would be pushed inside the payload: the build stops instead."""
    leaky = tmp_path / "utils"
    leaky.mkdir()
    (leaky / "__init__.py").write_text("")
    (leaky / "oops.py").write_text(f"KEY = {SECRET!r}\n")
    monkeypatch.setattr("tools.kaggle.build.UTILS_DIR", leaky)
    monkeypatch.setattr("tools.kaggle.build.REPO_ROOT", tmp_path)
    notebook = make_notebook(tmp_path / "train.ipynb")
    with pytest.raises(KaggleError, match="contains a Kaggle credential"):
        build_kernel(notebook, {}, USER, "train leaky", build_root=tmp_path / "build")


def test_build_rejects_unknown_or_uninjectable_parameters(isolated, tmp_path):
    """A typo'd parameter would silently run the default on a GPU: refused before pushing."""
    notebook = make_notebook(tmp_path / "train.ipynb")
    with pytest.raises(KaggleError, match=r"alfa: no such parameter of train.ipynb; did you mean alpha\?"):
        build_kernel(notebook, {"alfa": 0.1}, USER, "train alfa 0.1", build_root=tmp_path / "build")
    bare = make_notebook(tmp_path / "bare.ipynb", with_parameters=False)
    with pytest.raises(KaggleError, match="no cell tagged 'parameters'"):
        build_kernel(bare, {"alpha": 0.1}, USER, "bare alpha 0.1", build_root=tmp_path / "build")


def test_real_train_notebook_builds(creds, tmp_path):
    """notebooks/train.ipynb declares alpha and builds with it injected."""
    notebook = REPO_ROOT / "notebooks" / "train.ipynb"
    assert "alpha" in (notebook_parameters(notebook) or {}), f"{notebook} declares no alpha parameter"
    folder = build_kernel(notebook, {"alpha": 0.1}, USER, "train alpha 0.1", build_root=tmp_path / "build")
    nb = json.loads((folder / "train.ipynb").read_text())
    assert "alpha = 0.1" in cells_tagged(nb, "injected-parameters")[0]


def test_long_variants_get_short_unique_titles():
    """Any number of parameters: a title of at most 50 characters whose slug it resolves to, unique per variant."""
    cli = [("alpha", "0.1"), ("epochs", "1"), ("image_size", "32"), ("batch_size", "8")]
    params = {name: parse_value(value) for name, value in cli}
    title = variant_title(Path("notebooks/train.ipynb"), "params/kaggle-t4x2.yaml", cli, params)
    assert len(title) <= TITLE_MAX and len(slugify(title)) <= TITLE_MAX
    assert title.startswith("train kaggle-t4x2 alpha 0.1")
    other = variant_title(Path("notebooks/train.ipynb"), "params/kaggle-t4x2.yaml", cli[:3] + [("batch_size", "16")],
                          {**params, "batch_size": 16})
    assert other != title and slugify(other) != slugify(title)
    assert variant_title(Path("notebooks/train.ipynb"), "params/kaggle-t4x2.yaml", cli, params) == title  # stable
    many = [(f"parameter_{i}", str(i)) for i in range(30)]
    assert len(variant_title(Path("train.ipynb"), None, many, dict(many))) <= TITLE_MAX
    long_prefix = fit_title(["x" * 60, "alpha 0.1"], {"alpha": 0.1})
    assert len(long_prefix) <= TITLE_MAX and SLUG_RE.fullmatch(slugify(long_prefix))


def test_imagenet_refused_unless_internet(creds, tmp_path):
    """weights='imagenet' would fail on the offline kernel after the dataset scan: refused at build time, with how
    to attach the weights as a dataset; --internet switches the kernel's internet on instead."""
    notebook = make_notebook(tmp_path / "train.ipynb")
    with pytest.raises(KaggleError, match="internet off") as info:
        build_kernel(notebook, {"weights": "imagenet"}, USER, "train imagenet", build_root=tmp_path / "b")
    assert IMAGENET_NOTOP_FILE in str(info.value) and "dataset_sources" in str(info.value)
    assert "-p weights /kaggle/input/" in str(info.value) and "--internet" in str(info.value)
    assert not (tmp_path / "b").exists()
    folder = build_kernel(notebook, {"weights": "imagenet"}, USER, "train imagenet", build_root=tmp_path / "b",
                          internet=True)
    assert json.loads((folder / "kernel-metadata.json").read_text())["enable_internet"] is True


# ---------------------------------------------------------------------------------------------- stand-in Kaggle


@pytest.fixture(scope="module")
def dataset_140k(tmp_path_factory):
    """A few generated images per class in the 140k layout, attached to every stand-in run."""
    return tiny_140k(tmp_path_factory.mktemp("data") / "faces")


@pytest.fixture
def stand_in(creds, tmp_path, monkeypatch, dataset_140k):
    """The stand-in Kaggle, with the real CLI pointed at it (KAGGLE_API_ENVIRONMENT=LOCALHOST, endpoint table)."""
    from kagglesdk import kaggle_env

    server = KaggleStandIn(tmp_path / "kaggle", dataset_140k)
    server.thread.start()
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setitem(kaggle_env._env_to_endpoint, kaggle_env.KaggleEnv.LOCAL, server.url)
    yield server
    server.wait_idle()
    server.server.shutdown()
    server.server.server_close()


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """python -m tools.kaggle in-process: exit code, stdout, stderr."""
    code = kaggle_cli(argv)
    out, err = capsys.readouterr()
    return code, out, err


TINY_TRAIN = ["-p", "epochs", "1", "-p", "image_size", "32", "-p", "batch_size", "4", "-p", "rotation", "0",
              "-p", "zoom", "0", "-p", "output_dir", "run"]
TINY_ANALYSIS = ["-a", "robustness", json.dumps({"jpeg_quality": [100, 30]}), "-a", "robustness_images", "2",
                 "-a", "gradcam_samples", "1", "-a", "bootstrap_resamples", "100", "-a", "baseline_train_images", "4",
                 "-a", "per_run_figures", "all"]


TINY_PLAN_TRAINING = {"epochs": 1, "image_size": 32, "batch_size": 4, "rotation": 0.0, "zoom": 0.0,
                      "output_dir": "run"}
TINY_PLAN_ANALYSIS = {"robustness": {"jpeg_quality": [100, 30]}, "robustness_images": 2, "gradcam_samples": 1,
                      "bootstrap_resamples": 100, "baseline_train_images": 4, "per_run_figures": "first-per-alpha"}


def tiny_plan(tmp_path: Path, seeds: list[int]) -> Path:
    """params/study-alpha.yaml with these seeds, a 1-epoch 32 px training and a small analysis."""
    import yaml

    plan = yaml.safe_load((REPO_ROOT / "params" / "study-alpha.yaml").read_text())
    plan["seeds"] = seeds
    plan["training"]["parameters"] = TINY_PLAN_TRAINING
    plan["analysis"]["parameters"] = TINY_PLAN_ANALYSIS
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_plan_sweep_and_its_analysis_on_kaggle(stand_in, tmp_path, capsys):
    """`sweep --plan`, mounted as Kaggle does in 2026: the plan's slopes x seeds run (as on T4 x2: two replicas, two
    sessions at once) with its hash and are pulled with the report each kernel rendered; then analyze.ipynb runs on
    Kaggle with their outputs attached and the plan given, and its report (the verdict, figures) comes back. An expired
    token on a status poll is re-authenticated once."""
    from utils import study_plan, study_tests

    build, results = tmp_path / "build", tmp_path / "results"
    path = tiny_plan(tmp_path, [1, 2])
    plan = study_plan.load_plan(path)
    # Calls 0-6: the status of the 4 variants (never pushed), the quota, the first two pushes; 7: the first poll.
    stand_in.unauthorized_calls = {7}
    code, out, err = run_cli(["sweep", "--plan", str(path), "--slug", "faces", "--poll", "0.2", "--poll-max", "1",
                              "--build-dir", str(build), "--results-dir", str(results)], capsys)
    assert code == 0, err + out[-3000:]
    assert "re-authenticating once" in err
    assert "2 slopes x 2 seeds = 4 runs" in out and "power: with 2 seed pairs" in out

    assert [c["method"] for c in stand_in.calls[:7]] == ["GetKernelSessionStatus"] * 4 + [
        "GetAcceleratorQuotaStatistics", "SaveKernel", "SaveKernel"]
    assert stand_in.calls[7]["code"] == 401 and stand_in.calls[7]["method"] == "GetKernelSessionStatus"
    assert stand_in.max_active <= 2
    pushes = stand_in.method_calls("SaveKernel")
    slugs = [f"faces-alpha-{a}-seed-{s}" for a in ("0", "0-2") for s in (1, 2)]
    assert [p["body"]["slug"] for p in pushes] == [f"tester/{slug}" for slug in [*slugs, "faces-analysis"]]
    for push in pushes:
        sent = push["body"]
        assert len(sent["newTitle"]) <= TITLE_MAX and slugify(sent["newTitle"]) == sent["slug"].split("/")[1]
        assert sent["machineShape"] == "NvidiaTeslaT4" and sent["enableGpu"] is True and sent["enableInternet"] is False
        assert sent["datasetDataSources"] == ["xhlulu/140k-real-and-fake-faces"]
        assert base64.b64decode(push["auth"].split()[1]).decode() == f"{USER}:{SECRET}"
    assert not pushes[0]["body"].get("kernelDataSources")
    assert pushes[4]["body"]["kernelDataSources"] == [f"tester/{slug}" for slug in slugs]

    for slug, (alpha, seed) in zip(slugs, [(a, s) for a in (0.0, 0.2) for s in (1, 2)]):
        dest = results / slug
        run = dest / "run"
        assert not (dest / EXECUTED_NOTEBOOK).exists() and (dest / f"{slug}.log").is_file()
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["finished"] is True and metrics["epochs_run"] == 1
        assert (metrics["params"]["alpha"], metrics["params"]["seed"]) == (alpha, seed)
        assert metrics["params"]["plan_hash"] == plan["hash"] and metrics["params"]["time_budget_hours"] is None
        assert metrics["dataset"]["root"].startswith("/") and "/datasets/xhlulu/140k-real-and-fake-faces" in \
            metrics["dataset"]["root"]
        assert "2 replica(s)" in (dest / f"{slug}.log").read_text() and (run / "model.keras").is_file()
        assert json.loads((dest / BUILD_RECORD).read_text())["slug"] == slug
        pngs = sorted(run.glob("*.png"))
        report = (dest / f"{slug}.html").read_text()
        assert report == (run / "train.html").read_text() and count_images(report) == len(pngs)
        assert "LeakyReLU" in report and "Traceback" not in report

    import nbconvert

    dest = results / "faces-analysis"
    log = (dest / "faces-analysis.log").read_text()
    assert f"(nbconvert {nbconvert.__version__})" in log  # the kernel's own renderer made the report, no fallback
    analysis = dest / "analysis"
    record = json.loads((analysis / "analysis.json").read_text())
    assert record["params"]["run_dirs"] == [f"tester/{slug}" for slug in slugs]
    study = record["study"]
    assert study["plan"]["hash"] == plan["hash"] and study["n_pairs"] == 2 and not study["missing_runs"]
    assert study["verdict"] in study_tests.VERDICTS
    report = (dest / "faces-analysis.html").read_text()
    assert report == (analysis / "analyze.html").read_text()
    assert count_images(report) == len(list(analysis.rglob("*.png"))) > 0
    assert f"VERDICT: {study['verdict']}" in report and "Traceback" not in report
    assert SECRET not in out + err + report


def test_plan_sweep_says_its_cost_before_pushing_and_continues_next_week(stand_in, tmp_path, capsys):
    """Before any push a plan says its runs, hours per run (an estimate: none ran), weeks of quota and the difference
    it can detect; a quota refusal stops it with what is left, for the same command next week."""
    stand_in.quota_pushes = 0
    code, out, err = run_cli(["sweep", "--plan", str(tiny_plan(tmp_path, [1, 2])), "--poll", "0.2", "--poll-max",
                              "0.5", "--build-dir", str(tmp_path / "b"), "--results-dir", str(tmp_path / "r")], capsys)
    assert code == EXIT_ERROR and not stand_in.kernels  # nothing ran
    assert "4 runs, 8.00 h per run (estimated, not measured), 32.0 h in all" in out
    assert "1.1 weeks of a 30 GPU h weekly quota" in out and "power: with 2 seed pairs and 20000 test images" in out
    assert "run the same command next week" in out
    assert QUOTA_ERROR in err and "left: alpha-study-alpha-0-seed-1" in err
    code, out, err = run_cli(["sweep", "--plan", str(tmp_path / "plan.yaml"), "-p", "epochs", "2"], capsys)
    assert code == EXIT_ERROR and "--plan fixes the slopes, seeds and parameters: drop -p" in err


def test_plan_analysis_refuses_a_run_of_another_plan(stand_in, tmp_path, capsys):
    """Runs that finished before (pulled, not pushed again): one of them recorded another plan's hash, so the analysis
    is refused before it is pushed, naming the run; the others' training time is the measured cost per run."""
    from utils import study_plan

    path = tiny_plan(tmp_path, [1, 2])
    plan = study_plan.load_plan(path)
    for alpha, a in ((0.0, "0"), (0.2, "0-2")):
        for seed in (1, 2):
            params = {**study_plan.run_parameters(plan, alpha, seed), "output_dir": "run"}
            if (a, seed) == ("0-2", 2):
                params["plan_hash"] = "0123456789ab"
            stand_in.add_version(f"tester/alpha-study-alpha-{a}-seed-{seed}", "COMPLETE", {
                "run/metrics.json": json.dumps({"finished": True, "training_seconds": 2 * 3600, "params": params})})
    code, out, err = run_cli(["sweep", "--plan", str(path), "--poll", "0.2", "--build-dir", str(tmp_path / "b"),
                              "--results-dir", str(tmp_path / "r")], capsys)
    assert code == EXIT_ERROR and not stand_in.method_calls("SaveKernel")
    assert out.count("finished before; not pushed again") == 4
    assert "2.00 h per run (measured from a finished run of this plan)" in out
    assert ("the analysis refuses the sweep's runs: run alpha-study-alpha-0-2-seed-2 belongs to another plan: its "
            f"plan_hash is '0123456789ab', the plan 'alpha-study' has '{plan['hash']}'") in err


def test_explore_comes_back_with_its_own_report(stand_in, tmp_path, capsys):
    """explore.ipynb pushed on the attached dataset: the audit's counts, warnings and probes are in the report that
    comes back, not a page of figures made after the fact."""
    results = tmp_path / "results"
    code, out, err = run_cli(["push", str(REPO_ROOT / "notebooks" / "explore.ipynb"), "-p", "max_images", "6",
                              "-p", "output_dir", "explore", "--pull", "--poll", "0.2", "--poll-max", "1",
                              "--build-dir", str(tmp_path / "b"), "--results-dir", str(results)], capsys)
    assert code == 0, err + out[-3000:]
    slug = stand_in.method_calls("SaveKernel")[0]["body"]["slug"].split("/")[1]
    dest = results / slug
    audit = json.loads((dest / "explore" / "audit.json").read_text())
    report = (dest / f"{slug}.html").read_text()
    assert report == (dest / "explore" / "explore.html").read_text()
    assert "140k-real-and-fake-faces" in report and "Made by `python -m tools.kaggle`" not in report
    assert "balanced accuracy" in report.lower() or "probe" in report.lower()
    for warning in audit["warnings"]:
        assert warning.split(":")[0] in report
    assert count_images(report) == len(list((dest / "explore").glob("*.png"))) > 0


def test_error_run_is_reported_from_the_log_and_its_files(stand_in, tmp_path, capsys):
    """An ERROR run of a newer version: status follows that version, prints the notebook's exception, and pull
    leaves a report with the log's traceback and what the run wrote (every page of the listing)."""
    notebook = make_notebook(tmp_path / "train.ipynb")
    ref = "tester/train-alpha-0-3-extra-files-25-fail-true"
    stand_in.add_version(ref, "COMPLETE", {"old.txt": "from version 1"})  # an earlier version that worked
    results = tmp_path / "results"
    code, out, err = run_cli(["push", str(notebook), "-p", "alpha", "0.3", "-p", "extra_files", "25", "-p", "fail",
                              "True", "--pull", "--poll", "0.2", "--poll-max", "1", "--build-dir",
                              str(tmp_path / "b"), "--results-dir", str(results)], capsys)
    assert code == EXIT_RUN_FAILED, err
    assert "version 2" in out
    assert all(p["body"].get("versionLabel") == "v2" for p in stand_in.method_calls("GetKernelSessionStatus"))
    assert "the notebook raised ValueError: alpha 0.3 refused by the tiny notebook" in err
    dest = results / ref.split("/")[1]
    assert not (dest / "old.txt").exists()  # version 2's outputs, not version 1's
    assert len(list((dest / "results" / "run" / "extra").iterdir())) == 25  # two pages of the listing
    assert len(stand_in.method_calls("ListKernelSessionOutput")) >= 2
    report = (dest / f"{ref.split('/')[1]}.html").read_text()
    assert "The run failed" in report and "ValueError" in report and "refused by the tiny notebook" in report
    assert "Traceback" in report or "Exception encountered" in report
    assert count_images(report) == 1 and "extra/024.txt" in report

    # `status` alone, later: the latest version, the same message; exit code 3.
    code, out, err = run_cli(["status", ref.split("/")[1]], capsys)
    assert code == EXIT_RUN_FAILED and "ValueError: alpha 0.3 refused" in err and "Traceback" not in out + err

    # `pull` alone, later, of version 1: that version's files and a report of its own.
    (dest / "results").rename(tmp_path / "v2-results")
    code, out, err = run_cli(["pull", f"{ref}/1", "--results-dir", str(results)], capsys)
    assert code == 0, err
    assert (dest / "old.txt").read_text() == "from version 1" and not (dest / "results").exists()
    assert "COMPLETE" in (dest / f"{ref.split('/')[1]}.html").read_text()


@pytest.mark.parametrize("layout, mount", [("2026", "notebooks/tester/tiny-run"), ("legacy", "tiny-run")])
def test_resume_from_attaches_the_previous_output(stand_in, tmp_path, capsys, layout, mount):
    """push --resume-from SLUG attaches that kernel's output as a kernel source: it appears under /kaggle/input,
    at notebooks/<owner>/<slug>/ as Kaggle mounts it since 2026 and at <slug>/ as before."""
    stand_in.layout = layout
    notebook = make_notebook(tmp_path / "train.ipynb")
    common = ["--poll", "0.2", "--poll-max", "1", "--build-dir", str(tmp_path / "b"), "--results-dir",
              str(tmp_path / "results")]
    assert run_cli(["push", str(notebook), "--slug", "tiny-run", "--pull", *common], capsys)[0] == 0
    code, out, err = run_cli(["push", str(notebook), "--slug", "tiny-run", "--resume-from", "tiny-run", "--pull",
                              *common], capsys)
    assert code == 0, err
    pushes = stand_in.method_calls("SaveKernel")
    assert pushes[1]["body"]["kernelDataSources"] == ["tester/tiny-run"]
    seen = json.loads((tmp_path / "results" / "tiny-run" / "results" / "run" / "inputs.json").read_text())["files"]
    assert f"{mount}/results/run/metrics.json" in seen and f"{mount}/kaggle-build.json" in seen


def test_sweep_under_the_session_limit(stand_in, tmp_path, capsys):
    """3 alphas with a foreign session running: at most 2 sessions at once, the refused push retried, every run
    waited for and pulled with its report; run again, nothing is pushed."""
    notebook = make_notebook(tmp_path / "train.ipynb")
    stand_in.foreign_sessions, stand_in.foreign_end_after_refusals = 1, 1
    argv = ["sweep", str(notebook), "--alphas", "0", "0.01", "0.1", "--slug", "tiny-sweep", "--poll", "0.2",
            "--poll-max", "0.5", "--build-dir", str(tmp_path / "b"), "--results-dir", str(tmp_path / "results")]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert stand_in.refusals == [SESSION_LIMIT_ERROR] and "pushing it again when a session ends" in err
    assert stand_in.max_active <= 2
    slugs = ["tiny-sweep-alpha-0", "tiny-sweep-alpha-0-01", "tiny-sweep-alpha-0-1"]
    assert sorted(stand_in.kernels) == [f"tester/{slug}" for slug in slugs]
    for slug, alpha in zip(slugs, (0.0, 0.01, 0.1)):
        run = tmp_path / "results" / slug / "results" / "run"
        assert json.loads((run / "metrics.json").read_text())["alpha"] == alpha
        assert count_images((tmp_path / "results" / slug / f"{slug}.html").read_text()) == 1
    pushed = len(stand_in.method_calls("SaveKernel"))
    code, out, err = run_cli(argv, capsys)
    assert code == 0 and len(stand_in.method_calls("SaveKernel")) == pushed
    assert out.count("finished before; not pushed again") == 3


def test_sweep_stops_at_the_quota_and_continues_later(stand_in, tmp_path, capsys):
    """A quota refusal stops pushing: what ran is waited for and pulled, what is left and its GPU hours are said;
    the same command later pushes only what is left."""
    notebook = make_notebook(tmp_path / "train.ipynb")
    stand_in.quota_pushes = 2
    argv = ["sweep", str(notebook), "--alphas", "0", "0.01", "0.1", "--poll", "0.2", "--poll-max", "0.5",
            "--build-dir", str(tmp_path / "b"), "--results-dir", str(tmp_path / "results")]
    code, out, err = run_cli(argv, capsys)
    assert code == EXIT_ERROR
    assert QUOTA_ERROR in err and "left: train-alpha-0-1" in err and "GPU hours" in err
    assert "ran: train-alpha-0, train-alpha-0-01" in err
    assert (tmp_path / "results" / "train-alpha-0" / "train-alpha-0.html").is_file()
    assert (tmp_path / "results" / "train-alpha-0-01" / "train-alpha-0-01.html").is_file()
    stand_in.quota_pushes = None  # the week is over
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert [c["body"]["slug"] for c in stand_in.method_calls("SaveKernel") if c["code"] == 200][-1] == \
        "tester/train-alpha-0-1"
    assert len(stand_in.kernels["tester/train-alpha-0"]) == 1  # not pushed again
    assert (tmp_path / "results" / "train-alpha-0-1" / "train-alpha-0-1.html").is_file()


def test_gpu_kernel_without_a_gpu_stops_at_once(stand_in, tmp_path, capsys):
    """An account Kaggle gives no GPU (not phone-verified): the kernel pushed for T4 x2 stops in its first cell with
    what to check, within a minute and before any data is read; pushed with --cpu on purpose, it runs."""
    import time

    stand_in.gpu_granted = False
    notebook = make_notebook(tmp_path / "train.ipynb")
    common = ["--pull", "--poll", "0.2", "--poll-max", "1", "--build-dir", str(tmp_path / "b"), "--results-dir",
              str(tmp_path / "results")]
    started = time.monotonic()
    code, out, err = run_cli(["push", str(notebook), "--slug", "gpu-asked", *common], capsys)
    assert code == EXIT_RUN_FAILED, err
    assert time.monotonic() - started < 60
    assert "phone" in err and "GPU" in err
    dest = tmp_path / "results" / "gpu-asked"
    assert not (dest / "results").exists()  # the notebook's own cells never ran
    assert "phone" in (dest / "gpu-asked.html").read_text()
    code, out, err = run_cli(["push", str(notebook), "--slug", "cpu-meant", "--cpu", *common], capsys)
    assert code == 0, err
    sent = stand_in.method_calls("SaveKernel")[-1]["body"]
    assert sent["enableGpu"] is False and not sent.get("machineShape")
    assert json.loads((tmp_path / "results" / "cpu-meant" / "results" / "run" / "metrics.json").read_text())["finished"]


SESSION_BODY = """\
import json, os, sys
from utils import runtime
names = ("KAGGLE_REHEARSAL_REPLICAS", "XLA_FLAGS", "JAX_PLATFORMS", "KERAS_BACKEND")
runtime.write_json(runtime.working_root() / "session.json",
                   {**{name: os.environ.get(name) for name in names}, "keras_imported": "keras" in sys.modules})
"""


def test_push_asks_kaggle_for_the_accelerator(stand_in, tmp_path, monkeypatch, capsys):
    """--accelerator tpu sends machineShape TpuV5E8 with enableTpu and without the root's docker image; Kaggle (the
    stand-in) gives it a TPU session (8 JAX host devices here) in which the first cell chose Keras' JAX backend before
    any import of Keras. The default sends T4 x2 (or the root file's shape); --accelerator cpu and --cpu neither."""
    from tools.kaggle.sweep import run_accelerator

    root_with(tmp_path, monkeypatch, docker_image="gcr.io/kaggle-images/python:v150",
              docker_image_pinning_type="original")
    stand_in.session_limit = 10  # the pushes below that are not waited for still run meanwhile
    notebook = make_notebook(tmp_path / "train.ipynb")
    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells[1] = nbformat.v4.new_code_cell(SESSION_BODY)
    nbformat.write(nb, str(notebook))
    common = ["--build-dir", str(tmp_path / "b"), "--results-dir", str(tmp_path / "results")]
    code, out, err = run_cli(["push", str(notebook), "--slug", "on-the-tpu", "--accelerator", "tpu", "--pull",
                              "--poll", "0.2", "--poll-max", "1", *common], capsys)
    assert code == 0, err
    assert "kaggle-cli/issues/1197" in err
    sent = stand_in.method_calls("SaveKernel")[-1]["body"]
    assert sent["machineShape"] == "TpuV5E8" and sent["enableTpu"] is True and sent["enableGpu"] is False
    assert not sent.get("dockerImage") and not sent.get("dockerImagePinningType")
    session = json.loads((tmp_path / "results" / "on-the-tpu" / "session.json").read_text())
    assert session["KAGGLE_REHEARSAL_REPLICAS"] == "8" and session["JAX_PLATFORMS"] == "cpu"
    assert "--xla_force_host_platform_device_count=8" in session["XLA_FLAGS"]
    assert session["KERAS_BACKEND"] == "jax" and session["keras_imported"] is False
    assert run_accelerator(tmp_path / "results" / "on-the-tpu") == "tpu"  # the pulled build record says so

    def pushed(*flags: str) -> dict:
        code, out, err = run_cli(["push", str(notebook), "--slug", f"push-{len(stand_in.calls)}", *flags, *common],
                                 capsys)
        assert code == 0, err
        return stand_in.method_calls("SaveKernel")[-1]["body"]

    sent = pushed()
    assert sent["machineShape"] == "NvidiaTeslaT4" and sent["enableGpu"] is True and sent["enableTpu"] is False
    for flags in (["--accelerator", "cpu"], ["--cpu"]):
        sent = pushed(*flags)
        assert not sent.get("machineShape") and sent["enableGpu"] is False and sent["enableTpu"] is False
    root_with(tmp_path, monkeypatch, machine_shape="TpuV5E8")
    assert pushed()["machineShape"] == "TpuV5E8"
    assert pushed("--accelerator", "gpu")["machineShape"] == "NvidiaTeslaT4"  # the flag over the root file


def test_a_sweep_is_checked_against_its_accelerators_quota(stand_in, tmp_path, capsys):
    """GPU and TPU hours are separate weekly pools, read from the same `kaggle quota` answer: a TPU sweep is refused
    by the TPU hours left however many GPU hours are, and the reverse; a CPU sweep checks no quota."""
    notebook = make_notebook(tmp_path / "train.ipynb")
    argv = ["sweep", str(notebook), "--alphas", "0", "0.2", "--poll", "0.2", "--poll-max", "0.5",
            "--build-dir", str(tmp_path / "b"), "--results-dir", str(tmp_path / "results")]
    stand_in.gpu_hours_used, stand_in.tpu_hours_used = 0.0, 15.0
    code, out, err = run_cli([*argv, "--accelerator", "tpu"], capsys)
    assert code == EXIT_ERROR and not stand_in.method_calls("SaveKernel"), err
    assert "expects about 18.0 TPU hours for 2 run(s)" in out and "TPU quota left this week: 5.0 of 20 h" in out
    assert "of the TPU quota" in err and "--ignore-quota" in err
    stand_in.gpu_hours_used, stand_in.tpu_hours_used = 25.0, 0.0
    code, out, err = run_cli(argv, capsys)
    assert code == EXIT_ERROR and not stand_in.method_calls("SaveKernel"), err
    assert "GPU quota left this week: 5.0 of 30 h" in out and "of the GPU quota" in err
    quota_calls = len(stand_in.method_calls("GetAcceleratorQuotaStatistics"))
    stand_in.overrides["SaveKernel"] = (200, {"error": QUOTA_ERROR})  # nothing runs
    code, out, err = run_cli([*argv, "--cpu"], capsys)
    assert len(stand_in.method_calls("GetAcceleratorQuotaStatistics")) == quota_calls
    assert "quota left" not in out and "expects about" not in out


def test_sweep_says_its_gpu_hours_and_refuses_more_than_the_quota(stand_in, tmp_path, capsys):
    """Before pushing, the sweep sets the GPU hours it expects beside `kaggle quota`'s answer; more than is left this
    week is refused unless --ignore-quota."""
    notebook = make_notebook(tmp_path / "train.ipynb")
    stand_in.gpu_hours_used = 20.0
    argv = ["sweep", str(notebook), "--alphas", "0", "0.2", "--poll", "0.2", "--poll-max", "0.5",
            "--build-dir", str(tmp_path / "b"), "--results-dir", str(tmp_path / "results")]
    code, out, err = run_cli(argv, capsys)
    assert code == EXIT_ERROR and not stand_in.method_calls("SaveKernel")
    assert "expects about 18.0 GPU hours for 2 run(s)" in out and "left this week: 10.0 of 30 h" in out
    assert "--ignore-quota" in err and "Traceback" not in err
    code, out, err = run_cli([*argv, "--ignore-quota"], capsys)
    assert code == 0, err
    assert len(stand_in.method_calls("SaveKernel")) == 2


def test_expected_gpu_hours_from_a_measured_epoch(tmp_path):
    """A pulled run's own epoch time sets the estimate; without one, a session per run (or the time budget)."""
    run = tmp_path / "train-alpha-0" / "train"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"training_seconds": 3600.0, "epochs_run": 10}))
    seconds = measured_epoch_seconds(tmp_path, ["train-alpha-0", "train-alpha-0-2"])
    assert seconds == 360.0
    hours, how = expected_gpu_hours({"epochs": 100}, 2, seconds)
    assert hours == pytest.approx(2 * (10.0 + 0.5)) and "360 s per epoch" in how
    assert expected_gpu_hours({"epochs": 100, "time_budget_hours": 4}, 3, None)[0] == pytest.approx(13.5)
    assert expected_gpu_hours({}, 2, None)[0] == pytest.approx(2 * KAGGLE_SESSION_HOURS)


def test_status_cancelled_and_running(stand_in, capsys):
    """CANCEL_* exits non-zero; a running kernel without --wait just reports its state."""
    stand_in.add_version("tester/gone-run", "CANCEL_ACKNOWLEDGED")
    stand_in.add_version("tester/busy-run", "RUNNING")
    assert kaggle_cli(["status", "gone-run"]) == EXIT_CANCELLED
    assert kaggle_cli(["status", "tester/busy-run/1"]) == 0
    out, err = capsys.readouterr()
    assert "cancelled" in err and "tester/busy-run/1: RUNNING" in out


@pytest.mark.parametrize("answer, shown", [
    ((200, {"error": QUOTA_ERROR}), QUOTA_ERROR),
    ((403, {"code": 403, "message": "Permission 'kernels.create' was denied"}), "HTTP 403: Permission"),
])
def test_push_refused_shows_what_the_server_said(stand_in, tmp_path, capsys, answer, shown):
    """A refused push stops with exit code 1 and the server's words, no traceback."""
    stand_in.overrides["SaveKernel"] = answer
    notebook = make_notebook(tmp_path / "train.ipynb")
    code, out, err = run_cli(["push", str(notebook), "-p", "alpha", "0.1", "--build-dir", str(tmp_path / "build")],
                             capsys)
    assert code == EXIT_ERROR
    assert shown in err and "tester/train-alpha-0-1" in err and "Traceback" not in out + err


# What the real CLI's kernels_push refuses before it sends anything (kaggle 2.2.5), changed in a built
# kernel-metadata.json; broken.ipynb is a code file that is not a JSON notebook.
CLI_REFUSALS = [
    ({"title": "tiny"}, "Title must be at least five characters"),
    ({"id": "tester/train-alpha-0-1/3"}, "cannot contain a version"),
    ({"code_file": "missing.ipynb"}, "Source file not found"),
    ({"code_file": "broken.ipynb"}, "Expecting value"),
    ({"language": "julia"}, "A valid language must be specified in the metadata"),
    ({"kernel_type": "app"}, "A valid kernel type must be specified in the metadata"),
    ({"dataset_sources": ["140k-real-and-fake-faces"]}, "Dataset must be specified in the form of"),
    ({"kernel_sources": ["tester/tiny"]}, "Kernel slug must be at least five characters"),
    ({"model_sources": ["google/resnet/keras/50"]}, "Model instance version must be specified in the form of"),
    ({"docker_image_pinning_type": "newest"}, "the docker_image_pinning_type must be one of"),
    ({"is_private": "yes"}, "Invalid boolean value: yes"),
]


@pytest.mark.parametrize("change, refusal", CLI_REFUSALS)
def test_metadata_the_cli_refuses_is_one_message_and_no_push(stand_in, tmp_path, change, refusal):
    """A kernel-metadata.json the real CLI refuses: one KaggleError naming that file with the CLI's own words, exit
    code 1, and nothing reaches Kaggle."""
    notebook = make_notebook(tmp_path / "train.ipynb")
    folder = build_kernel(notebook, {"alpha": 0.1}, USER, "train alpha 0.1", build_root=tmp_path / "build")
    (folder / "broken.ipynb").write_text("not a notebook")
    meta_file = folder / "kernel-metadata.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), **change}))
    api, _ = connect()
    with pytest.raises(KaggleError) as info:
        push_folder(api, folder)
    assert str(info.value).startswith(f"{meta_file}: the Kaggle CLI refused it before sending anything, so nothing "
                                      "was pushed: ")
    assert refusal in str(info.value) and info.value.code == EXIT_ERROR
    assert stand_in.calls == []


@pytest.mark.parametrize("command, root_change, refusal", [
    (["push", "TINY", "-p", "alpha", "0.1"], {"language": "julia"}, "A valid language must be specified"),
    (["sweep", "TINY", "--alphas", "0", "0.2"], {"language": "julia"}, "A valid language must be specified"),
    (["analyze", "faces-alpha-0", "faces-alpha-0-2"], {"kernel_type": "app"}, "A valid kernel type must be specified"),
    (["analyze", "faces-alpha-0", "tiny"], {}, "Kernel slug must be at least five characters"),
])
def test_commands_stop_at_the_clis_refusal(stand_in, tmp_path, monkeypatch, capsys, command, root_change, refusal):
    """push, sweep and analyze with metadata the CLI refuses (from the root kernel-metadata.json, or a kernel source
    given on the command line): exit code 1 with the built file and the CLI's words, no traceback, and no push
    reached Kaggle (the sweep pushes none of its variants)."""
    root = json.loads((REPO_ROOT / "kernel-metadata.json").read_text())
    (tmp_path / "root-metadata.json").write_text(json.dumps({**root, **root_change}))
    monkeypatch.setattr("tools.kaggle.build.ROOT_METADATA", tmp_path / "root-metadata.json")
    notebook = str(make_notebook(tmp_path / "train.ipynb"))
    build = tmp_path / "build"
    argv = [notebook if arg == "TINY" else arg for arg in command]
    code, out, err = run_cli([*argv, "--build-dir", str(build), "--results-dir", str(tmp_path / "results")], capsys)
    assert code == EXIT_ERROR, err
    assert re.search(re.escape(f"error: {build}{os.sep}") + r"[a-z0-9-]+" + re.escape(f"{os.sep}kernel-metadata.json: "
                     "the Kaggle CLI refused it before sending anything, so nothing was pushed: "), err), err
    assert refusal in err and "Traceback" not in out + err
    assert not stand_in.method_calls("SaveKernel")


@pytest.mark.parametrize("command", [["push", "notebooks/train.ipynb", "-p", "alpah", "0"],
                                     ["sweep", "notebooks/train.ipynb", "--alphas", "0", "0.2", "-p", "alpah", "0"]])
def test_a_misspelt_parameter_stops_before_anything_is_pushed(stand_in, tmp_path, capsys, command):
    """`-p alpah 0` (meaning the ReLU baseline) would train the default slope on Kaggle: push and sweep stop with the
    name and the closest real one, build nothing and push nothing."""
    argv = [str(REPO_ROOT / arg) if arg.endswith(".ipynb") else arg for arg in command]
    code, out, err = run_cli([*argv, "--build-dir", str(tmp_path / "build"), "--results-dir", str(tmp_path / "r")],
                             capsys)
    assert code == EXIT_ERROR, err
    assert "alpah: no such parameter of train.ipynb; did you mean alpha?" in err and "nothing was pushed" in err
    assert "Traceback" not in out + err
    assert stand_in.calls == [] and not (tmp_path / "build").exists()


def test_follow_the_name_kaggle_gave():
    """The push answer's ref names the kernel that status and pull must follow."""
    assert pushed_name("/code/tester/train-alpha-0-1") == ("tester", "train-alpha-0-1")
    assert pushed_name("https://www.kaggle.com/code/tester/renamed-kernel") == ("tester", "renamed-kernel")
    assert pushed_name("tester/train-alpha-0-1") == ("tester", "train-alpha-0-1")
    assert pushed_name("") is None
    assert kernel_ref("train-alpha-0-1", "tester") == "tester/train-alpha-0-1"
    assert kernel_ref("tester/train-alpha-0-1/3", "x") == "tester/train-alpha-0-1/3"
    with pytest.raises(KaggleError, match="OWNER/SLUG/VERSION"):
        kernel_ref("tester/train/latest", "x")


# ---------------------------------------------------------------------------------------------- set-up errors


def test_push_without_credentials_explains_the_token(isolated, tmp_path):
    """No token anywhere: `python -m tools.kaggle push` stops with the set-up message, builds and sends nothing."""
    notebook = make_notebook(tmp_path / "train.ipynb")
    build = tmp_path / "build"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env["KAGGLE_CONFIG_DIR"] = os.environ["KAGGLE_CONFIG_DIR"]  # empty temp folder
    done = subprocess.run([sys.executable, "-m", "tools.kaggle", "push", str(notebook), "-p", "alpha", "0.1",
                           "--build-dir", str(build)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == EXIT_ERROR
    assert "no Kaggle credentials found" in done.stderr and "Create New Token" in done.stderr
    assert "kaggle.json" in done.stderr and "chmod 600" in done.stderr and "KAGGLE_API_TOKEN" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not build.exists()


def test_missing_cli_is_one_message(creds, tmp_path, monkeypatch, capsys):
    """Without the kaggle package: exit code 1 and how to install it."""
    monkeypatch.setitem(sys.modules, "kaggle", None)  # makes `import kaggle` fail
    notebook = make_notebook(tmp_path / "train.ipynb")
    assert kaggle_cli(["push", str(notebook), "--build-dir", str(tmp_path / "build")]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "Kaggle CLI" in err and "pip install" in err and "Traceback" not in err


def fake_cli(root: Path, version: str, init: str = "") -> Path:
    """A site folder holding a `kaggle` distribution of `version` (metadata and package) whose import runs `init`."""
    (root / "kaggle").mkdir(parents=True)
    (root / "kaggle" / "__init__.py").write_text(f"__version__ = {version!r}\n{init}")
    (root / f"kaggle-{version}.dist-info").mkdir()
    (root / f"kaggle-{version}.dist-info" / "METADATA").write_text(f"Metadata-Version: 2.1\nName: kaggle\n"
                                                                   f"Version: {version}\n")
    return root


@pytest.mark.parametrize("version", ["2.0.1", "2.2.3"])
def test_old_cli_is_one_message(creds, tmp_path, version):
    """A .venv holding an older CLI (2.0.x pulls 20 files at most and follows the latest run; 2.2.3 exits on import
    without credentials): one message naming the version found and the install line; nothing built or pushed."""
    site = fake_cli(tmp_path / "site", version, "raise SystemExit(1)  # as kaggle <= 2.2.3 without credentials\n")
    notebook = make_notebook(tmp_path / "train.ipynb")
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-m", "tools.kaggle", "push", str(notebook), "--build-dir",
                           str(tmp_path / "build")], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == EXIT_ERROR
    assert f"kaggle {version} is installed; this tool needs kaggle >= {MIN_CLI}" in done.stderr
    assert f"pip install 'kaggle>={MIN_CLI}'" in done.stderr and "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "build").exists()


def test_cli_exiting_on_import_gives_the_credentials_help(isolated, tmp_path, monkeypatch, capsys):
    """An import of `kaggle` that calls exit(1) (no credentials) becomes the credentials help, not a silent exit 1."""
    site = fake_cli(tmp_path / "site", "2.2.5", "raise SystemExit(1)\n")
    monkeypatch.syspath_prepend(str(site))
    for name in [m for m in sys.modules if m == "kaggle" or m.startswith("kaggle.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr("tools.kaggle.cli.installed_cli_version", lambda: "2.2.5")
    with pytest.raises(KaggleError, match="no Kaggle credentials found") as info:
        load_cli()
    assert "kaggle.json" in str(info.value)


def test_cli_versions_compare_in_full():
    """2.2.10 is newer than 2.2.5 and 2.2.5rc1 is not older than 2.2.4 (a string or major-only check gets both wrong)."""
    assert cli_version("2.2.10") > MIN_CLI_VERSION > cli_version("2.2.4")
    assert cli_version("2.2.5rc1") == (2, 2, 5) and cli_version("3") > MIN_CLI_VERSION
    assert cli_version("dev") == ()


def test_run_error_reads_plain_logs():
    """The notebook's exception is found in a plain-text log too, skipping papermill's wrapper."""
    log = ("Traceback (most recent call last):\n  File x\npapermill.exceptions.PapermillExecutionError: \n"
           f"utils.data.DataError: {DATA_ERROR}\n")
    assert run_error(log) == f"DataError: {DATA_ERROR}"
    assert run_error("all good\n") is None


def test_wait_backs_off_exponentially(monkeypatch):
    """Status polls double their interval up to --poll-max and stop at the first final state."""
    states = iter(["QUEUED", "RUNNING", "RUNNING", "RUNNING", "RUNNING", "COMPLETE"])
    monkeypatch.setattr("tools.kaggle.calls.kernel_status", lambda api, ref: (next(states), None))
    delays: list[float] = []
    assert wait_for(None, "tester/train-alpha-0-1", poll=1, poll_max=4, sleep=delays.append) == ("COMPLETE", None)
    assert delays == [1, 2, 4, 4, 4]
