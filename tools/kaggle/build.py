"""The kernel folder a push sends, build/kaggle/<slug>/: its kernel-metadata.json (from the root one), its title and
slug, and the notebook with its parameters injected and utils embedded, checked for unknown parameters, what an
offline kernel cannot do, and credentials. Whether the metadata is valid is left to the Kaggle CLI (calls.push_folder)."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tools.kaggle.cli import CLI_MISSING, KaggleError, secret_values
from tools.notebook import check_notebook_parameters, notebook_defaults
from utils.accelerator import MACHINE_SHAPES, checked_accelerator, keras_backend_for
from utils.runtime import BUILD_RECORD, REPO_ROOT, write_atomic

ROOT_METADATA = REPO_ROOT / "kernel-metadata.json"
BUILD_ROOT = REPO_ROOT / "build" / "kaggle"
UTILS_DIR = REPO_ROOT / "utils"

METADATA_FILE = "kernel-metadata.json"
UTILS_CELL_TAG = "kaggle-utils"
# Docker image settings a TPU kernel must not carry: a TPU push with a pinned docker_image ran on the CPU image
# (github.com/Kaggle/kaggle-cli/issues/1197); without one Kaggle picks its TPU image (jax[tpu] beside tensorflow-cpu).
DOCKER_KEYS = ("docker_image", "docker_image_pinning_type")
TPU_DOCKER_ISSUE = "https://github.com/Kaggle/kaggle-cli/issues/1197"
# Keras' ResNet50 no-top weights (keras/src/applications/resnet.py), what weights="imagenet" downloads.
IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_NOTOP_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/resnet/{IMAGENET_NOTOP_FILE}"

TITLE_MIN, TITLE_MAX = 5, 50  # the CLI checks the minimum; Kaggle's server refuses longer titles
TITLE_HASH_LENGTH = 6  # hex digits of the parameters' hash that keep a shortened title unique
SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def load_root_metadata(path: Path | None = None) -> dict[str, Any]:
    """The repository's kernel-metadata.json, the template every pushed kernel's metadata derives from."""
    path = Path(path or ROOT_METADATA)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise KaggleError(f"{path} is missing: it holds the kernel settings (dataset_sources, machine_shape, ...)") \
            from None
    except ValueError as exc:
        raise KaggleError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise KaggleError(f"{path} must hold a JSON object")
    return meta


def slugify(text: str) -> str:
    """The slug Kaggle makes of a title (python-slugify, as the CLI uses)."""
    try:
        from slugify import slugify as _slugify
    except ImportError:
        raise KaggleError(CLI_MISSING) from None
    return _slugify(text)


def fit_title(parts: list[str], identity: Any) -> str:
    """The parts joined as a title when Kaggle takes it (title and slug <= 50 characters); else as many whole parts
    as fit and a hash of `identity` (e.g. all parameters), so any number of parameters gives a short, unique title."""
    title = " ".join(parts)
    if len(title) <= TITLE_MAX and len(slugify(title)) <= TITLE_MAX:
        return title
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:TITLE_HASH_LENGTH]
    kept: list[str] = []
    for part in parts:
        candidate = " ".join([*kept, part, digest])
        if len(candidate) > TITLE_MAX or len(slugify(candidate)) > TITLE_MAX:
            break
        kept.append(part)
    if not kept:  # even the first part is too long (a long --slug): its start, cut to fit
        kept = [parts[0][:TITLE_MAX - TITLE_HASH_LENGTH - 1].rstrip(" -_.")]
    return " ".join([*kept, digest])


def variant_title(notebook: Path, params_file: str | None, cli_params: list[tuple[str, str]],
                  params: dict[str, Any] | None = None) -> str:
    """A kernel title naming the notebook and its variant, e.g. 'train alpha 0.1' (slug train-alpha-0-1).

    Too long for Kaggle, it keeps the first parts and ends in a hash of the notebook and all parameters in force.
    """
    parts = [Path(notebook).stem] + ([Path(params_file).stem] if params_file else [])
    parts += [f"{name} {value}" for name, value in cli_params]
    identity = {"notebook": Path(notebook).stem, "params": params if params is not None else cli_params}
    return fit_title(parts, identity)


def root_accelerator(root: dict[str, Any], path: Path | None = None) -> str:
    """The accelerator the root kernel-metadata.json asks for by its machine_shape (utils.accelerator.MACHINE_SHAPES:
    NvidiaTeslaT4 is "gpu", TpuV5E8 "tpu"; none: "gpu"); any other shape is refused, naming the flag that overrides it."""
    shape = root.get("machine_shape")
    if not shape:
        return "gpu"
    for accelerator, known in MACHINE_SHAPES.items():
        if shape == known:
            return accelerator
    shapes = ", ".join(f"{known!r} ({accelerator})" for accelerator, known in MACHINE_SHAPES.items())
    raise KaggleError(f"{Path(path or ROOT_METADATA)}: machine_shape {shape!r} is not one this tool knows ({shapes}); "
                      "set one of those there, or choose with --accelerator gpu|tpu|cpu. Nothing was built or pushed")


def accelerator_choice(accelerator: str, name: str = "accelerator") -> str:
    """`accelerator` when it is one of utils.accelerator.ACCELERATORS, else a KaggleError naming it (as `name`)."""
    try:
        return checked_accelerator(accelerator, name)
    except ValueError as error:
        raise KaggleError(str(error)) from None


def resolve_accelerator(flag: str | None, root_metadata: Path | None = None) -> str:
    """The accelerator of a push: the --accelerator (or --cpu) given, else what the root kernel-metadata.json's
    machine_shape asks for (checked before anything is built)."""
    if flag is not None:
        return accelerator_choice(flag, "--accelerator")
    return root_accelerator(load_root_metadata(root_metadata), root_metadata)


def kernel_metadata(root: dict[str, Any], owner: str, title: str, code_file: str, private: bool = True,
                    internet: bool = False, kernel_sources: tuple[str, ...] = (),
                    accelerator: str = "gpu") -> dict[str, Any]:
    """A pushed kernel's metadata: the root file's sources and settings, our id/title/code, internet off, and the
    machine of `accelerator`: "gpu" GPU T4 x2, "tpu" TPU v5e-8 (without the root's docker image), "cpu" none."""
    accelerator_choice(accelerator)
    meta = {"id": f"{owner}/{slugify(title)}"}
    meta.update({key: value for key, value in root.items() if key not in ("id", "id_no")})
    meta.update({
        "title": title,
        "code_file": code_file,
        "is_private": private,
        # machine_shape decides the machine; the CLI still sends these flags (kagglesdk marks them deprecated).
        "enable_gpu": accelerator == "gpu",
        "enable_tpu": accelerator == "tpu",
        # The CLI defaults internet to on (kaggle 2.2.5 kernels_push, kaggle_api_extended.py:7268); the run must not
        # depend on it (utils travel inside the notebook).
        "enable_internet": bool(internet),
        # Earlier kernels' outputs, attached read-only under /kaggle/input: a run to continue from its backup, or
        # the training runs an analysis compares.
        "kernel_sources": list(dict.fromkeys([*root.get("kernel_sources", []), *kernel_sources])),
    })
    if accelerator in MACHINE_SHAPES:  # (for GPU T4 x2: enable_gpu alone asked for the retired P100)
        meta["machine_shape"] = MACHINE_SHAPES[accelerator]
    else:
        meta.pop("machine_shape", None)  # no accelerator: the CLI's default CPU session
    dropped = [key for key in DOCKER_KEYS if key in meta] if accelerator == "tpu" else []
    if dropped:
        for key in dropped:
            del meta[key]
        print(f"warning: {', '.join(dropped)} of the root kernel-metadata.json left out of the TPU kernel: a TPU push with a "
              f"pinned docker image ran on the CPU image ({TPU_DOCKER_ISSUE})", file=sys.stderr, flush=True)
    return meta


def notebook_parameters(notebook: Path) -> set[str] | None:
    """The names a notebook's `parameters` cell assigns, None when it has no such cell."""
    defaults = notebook_defaults(notebook)
    return None if defaults is None else set(defaults)


def utils_payload(utils_dir: Path | None = None) -> tuple[bytes, list[str]]:
    """A reproducible zip of utils/*.py (fixed timestamps, sorted) and the file names in it."""
    utils_dir = Path(utils_dir or UTILS_DIR)
    names = sorted(path.name for path in utils_dir.glob("*.py"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            info = zipfile.ZipInfo(f"utils/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, (utils_dir / name).read_bytes())
    return buffer.getvalue(), [f"utils/{name}" for name in names]


def _git(*args: str) -> str | None:
    """Output of a read-only git command in the repository, None when git or the commit is unavailable."""
    try:
        done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode("utf-8", "replace")


def git_revision(files: list[str]) -> tuple[str, list[str]]:
    """The checked-out commit ('unknown' without one) and which of `files` differ from it (by git blob hash)."""
    commit = (_git("rev-parse", "--verify", "HEAD") or "").strip() or "unknown"
    committed: dict[str, str] = {}
    if commit != "unknown":
        for entry in (_git("ls-tree", "-z", "HEAD", "--", "utils/") or "").split("\0"):
            if "\t" in entry:
                info, path = entry.split("\t", 1)
                committed[path] = info.split()[2]
    changed = []
    for name in files:
        data = (REPO_ROOT / name).read_bytes()
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        if committed.get(name) != blob:
            changed.append(name)
    changed += [path for path in sorted(committed) if path.endswith(".py") and path not in files]  # deleted here
    return commit, changed


def utils_cell_source(payload: bytes, record: dict[str, Any]) -> str:
    """The generated first cell: unpack the embedded utils into a temp folder, put it first on sys.path, record it."""
    encoded = base64.encodebytes(payload).decode("ascii").strip()
    record_literal = repr(json.dumps(record, sort_keys=True, default=str))
    return "\n".join([
        "# Generated by `python -m tools.kaggle push`; do not edit. Kaggle receives only this notebook and runs it",
        "# without internet, so the repository's utils package travels inside it (a base64 zip of utils/*.py).",
        "# Nothing is installed: the code runs on the TensorFlow/Keras of Kaggle's image.",
        "import base64, io, json, os, sys, tempfile, zipfile",
        "",
        f"KAGGLE_BUILD = json.loads({record_literal})",
        '_utils_zip = base64.b64decode("""',
        encoded,
        '""")',
        "_utils_root = tempfile.mkdtemp(prefix='kaggle-utils-')",
        "zipfile.ZipFile(io.BytesIO(_utils_zip)).extractall(_utils_root)",
        "for _name in [m for m in sys.modules if m == 'utils' or m.startswith('utils.')]:",
        "    del sys.modules[_name]  # a `utils` imported before (e.g. from the image) must not shadow ours",
        "sys.path.insert(0, _utils_root)",
        "os.environ['UTILS_GIT_COMMIT'] = KAGGLE_BUILD['commit']",
        "# Keras' backend is fixed at its first import, so it is chosen here, before any cell can import Keras: JAX",
        "# for a training on a TPU (Kaggle's TPU image has TensorFlow's CPU build: only JAX sees the TPU), else",
        "# TensorFlow.",
        "from utils.accelerator import check_accelerator, select_backend",
        "select_backend(KAGGLE_BUILD['keras_backend'])",
        "from utils.runtime import on_kaggle, working_root  # /kaggle/working, or a rehearsal's",
        "if on_kaggle() and working_root().is_dir():",
        f"    with open(working_root() / '{BUILD_RECORD}', 'w') as _record:",
        "        json.dump(KAGGLE_BUILD, _record, indent=2)",
        "print(f\"utils from commit {KAGGLE_BUILD['commit']}\""
        " + (f\" with local changes to {KAGGLE_BUILD['changed']}\" if KAGGLE_BUILD['changed'] else ''))",
        "# Pushed for an accelerator but not given it (account not phone-verified, accelerator not granted): stop now,",
        "# before the session spends hours training on the CPU.",
        "check_accelerator(KAGGLE_BUILD['accelerator'])",
    ])


def check_no_secret(folder: Path) -> None:
    """Refuse a build folder in which a credential value appears (also inside the embedded utils zip)."""
    secrets = secret_values()
    if not secrets:
        return
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        texts = [text] + [_decode_payload(cell) for cell in _utils_cells(text)]
        if any(secret in t for secret in secrets for t in texts):
            raise KaggleError(f"{path} contains a Kaggle credential: nothing was pushed; remove the key from it "
                              "(or from utils/) and push again")


def _utils_cells(notebook_text: str) -> list[str]:
    """Sources of the generated utils cells in a notebook's JSON text."""
    with contextlib.suppress(ValueError, AttributeError):
        cells = json.loads(notebook_text).get("cells", [])
        return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                for c in cells if UTILS_CELL_TAG in c.get("metadata", {}).get("tags", [])]
    return []


def _decode_payload(cell_source: str) -> str:
    """The concatenated text of the files in a generated cell's zip."""
    match = re.search(r'b64decode\("""(.*?)"""\)', cell_source, re.S)
    if not match:
        return ""
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(match.group(1)))) as archive:
        return "\n".join(archive.read(name).decode("utf-8", "replace") for name in archive.namelist())


def check_parameters(notebook: Path, params: dict[str, Any]) -> None:
    """Every parameter must be one the notebook's `parameters` cell assigns (a typo would run the default)."""
    try:
        check_notebook_parameters(notebook, params)
    except ValueError as error:
        raise KaggleError(f"{error}\nnothing was pushed") from None


def imagenet_help(internet_flag: str = "--internet") -> str:
    """Why weights="imagenet" cannot run on an offline kernel, and how to attach the weights instead."""
    return ("weights='imagenet' makes Keras download the ResNet50 weights, but the kernel runs with internet off: it "
            "would fail on that download after the dataset scan, having spent GPU quota. Attach them as a Kaggle "
            f"dataset instead: download {IMAGENET_NOTOP_URL}, upload it as a (private) dataset, add owner/dataset to "
            "dataset_sources in kernel-metadata.json and pass -p weights "
            f"/kaggle/input/datasets/<owner>/<dataset>/{IMAGENET_NOTOP_FILE} (where Kaggle mounts it since 2026; "
            "older kernels saw /kaggle/input/<dataset>/: the kernel's input panel shows the path); "
            f"or switch the kernel's internet on explicitly with {internet_flag}")


def check_offline(notebook: Path, params: dict[str, Any], internet: bool) -> None:
    """Refuse, before any GPU time is spent, parameters that need the internet of a kernel that has none."""
    weights = {**(notebook_defaults(notebook) or {}), **params}.get("weights")
    if weights == "imagenet" and not internet:
        raise KaggleError(imagenet_help())


def build_kernel(notebook: Path, params: dict[str, Any], owner: str, title: str, private: bool = True,
                 root_metadata: Path | None = None, build_root: Path | None = None, internet: bool = False,
                 kernel_sources: tuple[str, ...] = (), accelerator: str = "gpu",
                 resume_from: str | None = None) -> Path:
    """Render build/kaggle/<slug>/: kernel-metadata.json and the notebook with utils and parameters injected.

    The kernel's record (KAGGLE_BUILD) says what the push asked for, so the kernel can stop at once when it did not
    get it: the accelerator (one of utils.accelerator.ACCELERATORS) and the Keras backend its first cell selects
    for it, and the run a resume must find attached (`resume_from`).
    """
    import nbformat
    import papermill

    notebook = Path(notebook)
    accelerator_choice(accelerator)
    check_parameters(notebook, params)
    check_offline(notebook, params, internet)
    root = load_root_metadata(root_metadata)
    slug = slugify(title)
    if not slug:
        raise KaggleError(f"title {title!r} gives an empty slug")
    folder = Path(build_root or BUILD_ROOT) / slug
    if folder.exists():
        shutil.rmtree(folder)  # a stale notebook of an earlier build must not be pushed
    folder.mkdir(parents=True)
    target = folder / notebook.name
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        papermill.execute_notebook(str(notebook), str(target), parameters=params, prepare_only=True,
                                   kernel_name="python3", language="python", progress_bar=False)
    nb = nbformat.read(str(target), as_version=4)
    nb.metadata.pop("papermill", None)  # local paths; Kaggle's own papermill run writes its own
    payload, files = utils_payload()
    commit, changed = git_revision(files)
    if changed:
        base = f"commit {commit}" if commit != "unknown" else "any git commit (none found)"
        print(f"warning: {', '.join(changed)} differ from {base}: the kernel runs the working-tree version, and "
              "its record says so", file=sys.stderr)
    record = {"commit": commit, "changed": changed, "utils_sha256": hashlib.sha256(payload).hexdigest(),
              "notebook": notebook.name, "slug": slug, "params": params,
              "accelerator": accelerator, "keras_backend": keras_backend_for(accelerator, notebook.name),
              "resume_from": resume_from,
              "kernel_sources": [*kernel_sources, *([resume_from] if resume_from else [])],
              "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    cell = nbformat.v4.new_code_cell(utils_cell_source(payload, record), metadata={"tags": [UTILS_CELL_TAG]})
    nb.cells.insert(0, cell)
    write_atomic(target, nbformat.writes(nb))
    meta = kernel_metadata(root, owner, title, notebook.name, private, internet, tuple(record["kernel_sources"]),
                           accelerator)
    write_atomic(folder / METADATA_FILE, json.dumps(meta, indent=2) + "\n")
    check_no_secret(folder)
    return folder

