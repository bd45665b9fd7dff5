"""Kaggle from a laptop: push / status / pull / sweep / analyze over the Kaggle CLI (kaggle>=2.2.5), and a rehearsal.

    python -m tools.kaggle push NOTEBOOK [-p NAME VALUE ...] [-f PARAMS.yaml] [--slug SLUG] [--resume-from SLUG]
                                [--internet] [--cpu] [--wait] [--pull]
    python -m tools.kaggle sweep NOTEBOOK --alphas 0 0.01 0.1 0.2 0.3 [--slug PREFIX] [--sessions 2] [--analyze]
                                 [-a NAME VALUE ...] [--ignore-quota] [push options]
    python -m tools.kaggle analyze KERNEL [KERNEL ...] [-f PARAMS.yaml] [-p NAME VALUE ...] [--wait] [--pull]
    python -m tools.kaggle status SLUG[/VERSION] [--wait]
    python -m tools.kaggle pull SLUG[/VERSION]
    python -m tools.kaggle rehearse NOTEBOOK [-p NAME VALUE ...] [-f PARAMS.yaml] [--data FOLDER] [--resume-from DIR]

The CLI is driven through its Python API in-process (`KaggleApi.kernels_push/kernels_status/kernels_output`), so
its own validation, authentication and HTTP code run unchanged and we read structured answers instead of its prints.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from tools.notebook import ANALYZE_NOTEBOOK
from utils import run_files
from utils.report import ANSI_COLOUR, render_html
from utils.runtime import (
    BUILD_RECORD,
    DATASETS_MOUNT,
    EVALUATION_RESERVE_HOURS,
    EXECUTED_NOTEBOOK,
    KAGGLE_SESSION_HOURS,
    NOTEBOOKS_MOUNT,
    REHEARSAL_REPLICAS_ENV,
    REPO_ROOT,
    write_atomic,
)

ROOT_METADATA = REPO_ROOT / "kernel-metadata.json"
BUILD_ROOT = REPO_ROOT / "build" / "kaggle"
RESULTS_ROOT = REPO_ROOT / "results"
UTILS_DIR = REPO_ROOT / "utils"

METADATA_FILE = "kernel-metadata.json"
UTILS_CELL_TAG = "kaggle-utils"
MACHINE_SHAPE_T4X2 = "NvidiaTeslaT4"  # "GPU T4 x2"; enable_gpu alone asked for the retired P100
# Keras' ResNet50 no-top weights (keras/src/applications/resnet.py), what weights="imagenet" downloads.
IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_NOTOP_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/resnet/{IMAGENET_NOTOP_FILE}"

# The rules `kaggle kernels push` applies in kaggle 2.2.5 (KaggleApi.valid_push_* and kernels_push); a test keeps
# these in step with the installed CLI.
VALID_LANGUAGES = ("python", "r", "rmarkdown")
VALID_KERNEL_TYPES = ("script", "notebook")
VALID_PINNING_TYPES = ("original", "latest")
RETIRED_MACHINE_SHAPES = ("nvidiateslap100", "tpuv38", "tpu1vmv38", "tpuv232", "tpuv2256")
BOOL_FIELDS = ("is_private", "enable_gpu", "enable_tpu", "enable_internet")
TITLE_MIN, TITLE_MAX = 5, 50  # the CLI checks the minimum; Kaggle's server refuses longer titles
TITLE_HASH_LENGTH = 6  # hex digits of the parameters' hash that keep a shortened title unique
SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

RUNNING_STATES = ("QUEUED", "RUNNING", "NEW_SCRIPT")
CANCEL_STATES = ("CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")
EXIT_ERROR = 1  # setup, build, push or network problem
EXIT_RUN_FAILED = 3  # the kernel ran and ended in ERROR
EXIT_CANCELLED = 4
POLL_FIRST, POLL_MAX = 30.0, 600.0  # seconds between status polls: doubling from the first up to the max
WAIT_TIMEOUT = 13 * 3600.0  # Kaggle stops GPU sessions after 12 h
MAX_POLL_FAILURES = 5  # consecutive network failures tolerated while waiting
MAX_SESSIONS = 2  # Kaggle runs at most 2 batch GPU sessions per user at once
# Kaggle's words (the `error` of a refused SaveKernel) for "Maximum batch GPU session count of 2 reached." (try
# again when one ends) and "Maximum weekly GPU quota of 30.00 hours reached." (stop until the quota resets).
SESSION_LIMIT_RE = re.compile(r"session count", re.I)
QUOTA_RE = re.compile(r"\bquota\b", re.I)
TRACEBACK_LINES = 60  # of a failed run's log, in its report
REPORT_SKIPPED_KEYS = ("environment", "confusion_matrix")  # in a built report's run record table
ANALYZE_PARAMS = REPO_ROOT / "params" / "analyze-kaggle.yaml"  # the analysis preset of `analyze` and `sweep --analyze`
REHEARSAL_ROOT = REPO_ROOT / "build" / "kaggle-rehearsal"
REHEARSAL_OWNER = "rehearsal"  # the kernel id's owner in a rehearsal's build (nothing is pushed)
REHEARSAL_REPLICAS = 2  # the two T4s of "GPU T4 x2", as logical CPU devices
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: every download fails at once, as with the internet off
MIN_SECRET_LENGTH = 8  # shorter "secrets" would match ordinary text

# Older CLIs fail silently where this tool relies on them: before 2.2.5 `status` and `output` ignore an
# OWNER/SLUG/VERSION reference (they answer for the latest version), before 2.2.2 `kernels_output` fetches one page
# of 20 files (a pull silently incomplete), and up to 2.2.3 `import kaggle` without credentials calls exit(1).
MIN_CLI_VERSION = (2, 2, 5)
MIN_CLI = ".".join(map(str, MIN_CLI_VERSION))
CLI_INSTALL = f"run `.venv/bin/pip install 'kaggle>={MIN_CLI}'` (see requirements.txt)"
CLI_MISSING = (f"the Kaggle CLI (Python package `kaggle` >= {MIN_CLI}, with `kagglesdk`) is not installed in this "
               f"environment: {CLI_INSTALL}")


class KaggleError(RuntimeError):
    """A failure reported to the user as one message and a non-zero exit code, without a traceback."""

    def __init__(self, message: str, code: int = EXIT_ERROR, transient: bool = False):
        super().__init__(message)
        self.code = code
        self.transient = transient


# ---------------------------------------------------------------------------------------------- credentials


def kaggle_config_dir() -> Path:
    """The folder kaggle 2.2.5 reads kaggle.json from: $KAGGLE_CONFIG_DIR, ~/.kaggle, else (Linux) ~/.config/kaggle."""
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return Path(configured)
    legacy = Path(os.path.expanduser("~")) / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path(os.path.expanduser("~")) / ".config") / "kaggle"
    return legacy


def _read_kaggle_json() -> dict[str, Any]:
    """The contents of kaggle.json, {} when absent or unreadable (the CLI ignores a broken file too)."""
    try:
        data = json.loads((kaggle_config_dir() / "kaggle.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _token_files() -> list[Path]:
    """The access-token files kaggle 2.2.5 looks for."""
    home = Path(os.path.expanduser("~")) / ".kaggle"
    return [home / "access_token", home / "access_token.txt"]


def _read_text(path: Path) -> str:
    """A small file's stripped text, '' when it cannot be read."""
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def credentials_source() -> str | None:
    """Where the Kaggle CLI would find credentials (a name, never the secret), None when it would find none."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    for path in _token_files():
        if path.is_file() and _read_text(path):
            return str(path)
    # The CLI merges kaggle.json with KAGGLE_* variables (variables win) before looking for username + key.
    merged = _read_kaggle_json()
    merged.update({k[len("KAGGLE_"):].lower(): v for k, v in os.environ.items() if k.startswith("KAGGLE_")})
    if merged.get("username") and merged.get("key"):
        from_env = os.environ.get("KAGGLE_KEY")
        return "KAGGLE_USERNAME/KAGGLE_KEY" if from_env else str(kaggle_config_dir() / "kaggle.json")
    if Path(os.path.expanduser("~/.kaggle/credentials.json")).is_file():
        return "kaggle auth login (~/.kaggle/credentials.json)"
    return None


def credentials_help(problem: str = "no Kaggle credentials found") -> str:
    """The problem, then how to give the Kaggle CLI (2.2.5) credentials."""
    config = kaggle_config_dir() / "kaggle.json"
    return (f"{problem}. Create a token on kaggle.com -> Settings -> API, then use one of:\n"
            f"  * Create New Token / legacy API key: save the downloaded kaggle.json as {config} and run "
            f"`chmod 600 {config}`, or export KAGGLE_USERNAME=<user> and KAGGLE_KEY=<key>;\n"
            "  * Generate New Token (access token): export KAGGLE_API_TOKEN=<token>, or save it to "
            "~/.kaggle/access_token and `chmod 600` it;\n"
            "  * or run `kaggle auth login` (OAuth in a browser).")


def secret_values() -> list[str]:
    """The credential values visible to this process, to make sure none of them leaves it."""
    values = [os.environ.get("KAGGLE_KEY", ""), _read_kaggle_json().get("key", "")]
    token = os.environ.get("KAGGLE_API_TOKEN", "")
    values.append(token)
    if token and Path(token).is_file():
        values.append(_read_text(Path(token)))
    values += [_read_text(path) for path in _token_files() if path.is_file()]
    return sorted({v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH})


# ---------------------------------------------------------------------------------------------- the CLI


def cli_version(text: str) -> tuple[int, ...]:
    """A version string's leading numbers, e.g. '2.2.5rc1' -> (2, 2, 5); () when it has none."""
    numbers = []
    for part in str(text).split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
        if match.group() != part:
            break
    return tuple(numbers)


def installed_cli_version() -> str | None:
    """The installed `kaggle` distribution's version, read without importing it (None when it is not installed)."""
    from importlib import metadata

    try:
        return metadata.version("kaggle")
    except metadata.PackageNotFoundError:
        return None


def load_cli() -> type:
    """The installed CLI's KaggleApi class, refused below MIN_CLI_VERSION (importing `kaggle` authenticates and
    prints, so it is silenced; an old one exits when it finds no credentials)."""
    version = installed_cli_version()
    if version is not None and cli_version(version) < MIN_CLI_VERSION:
        raise KaggleError(f"kaggle {version} is installed; this tool needs kaggle >= {MIN_CLI} (older versions follow "
                          f"the latest run instead of the pushed version and pull 20 files at most): {CLI_INSTALL}")
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import kaggle
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise KaggleError(CLI_MISSING) from None
    except SystemExit:  # kaggle <= 2.2.3 calls exit(1) on import when it finds no credentials
        raise KaggleError(credentials_help()) from None
    found = str(getattr(kaggle, "__version__", version or "0"))
    if cli_version(found) < MIN_CLI_VERSION:
        raise KaggleError(f"kaggle {found} is importable here; this tool needs kaggle >= {MIN_CLI}: {CLI_INSTALL}")
    return KaggleApi


def connect() -> tuple[Any, str]:
    """An authenticated KaggleApi of the installed CLI and the Kaggle user name it authenticated as."""
    api_class = load_cli()
    source = credentials_source()
    if source is None:
        raise KaggleError(credentials_help())
    api = api_class()
    # The class reads its config folder and the LOCALHOST switch once, at import: follow the environment as it is now.
    api.config_dir = str(kaggle_config_dir())
    api.config = os.path.join(api.config_dir, api.config_file)
    local = os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST"
    api.args = [a for a in api_class.args if a != "--local"] + (["--local"] if local else [])
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            api.authenticate()
    except SystemExit:
        raise KaggleError(credentials_help(f"Kaggle did not accept the credentials from {source}")) from None
    except _request_errors() as exc:
        raise KaggleError(f"cannot reach Kaggle to check the credentials from {source}: {exc}") from None
    for line in printed.getvalue().splitlines():  # e.g. the CLI's "kaggle.json is readable by other users"
        print(line, file=sys.stderr)
    user = api.config_values.get(api.CONFIG_NAME_USER)
    if not user:
        raise KaggleError(credentials_help(f"the Kaggle credentials from {source} name no user"))
    return api, str(user)


def _request_errors() -> tuple[type[BaseException], ...]:
    """The exception types of the HTTP library the CLI uses."""
    import requests

    return (requests.RequestException,)


def _http_failure(action: str, exc: BaseException) -> KaggleError:
    """One message for an HTTP failure: what we tried, the status code and what the server said."""
    import requests

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    said = str(exc)
    if response is not None:
        with contextlib.suppress(ValueError, AttributeError):
            said = response.json().get("message") or said
    if isinstance(exc, requests.HTTPError) and status is not None:
        transient = status >= 500 or status == 429
        return KaggleError(f"{action}: Kaggle answered HTTP {status}: {said}", transient=transient)
    return KaggleError(f"{action}: cannot reach Kaggle: {said}", transient=True)


# ---------------------------------------------------------------------------------------------- build


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


def kernel_metadata(root: dict[str, Any], owner: str, title: str, code_file: str, private: bool = True,
                    internet: bool = False, kernel_sources: tuple[str, ...] = (), gpu: bool = True) -> dict[str, Any]:
    """A pushed kernel's metadata: the root file's sources and settings, our id/title/code, T4 x2 (or, with
    gpu=False, no accelerator), internet off."""
    meta = {"id": f"{owner}/{slugify(title)}"}
    meta.update({key: value for key, value in root.items() if key not in ("id", "id_no")})
    meta.update({
        "title": title,
        "code_file": code_file,
        "is_private": private,
        "enable_gpu": bool(gpu),
        "enable_tpu": False,
        # The CLI defaults internet to on; the run must not depend on it (utils travel inside the notebook).
        "enable_internet": bool(internet),
        "machine_shape": root.get("machine_shape") or MACHINE_SHAPE_T4X2,
        # Earlier kernels' outputs, attached read-only under /kaggle/input: a run to continue from its backup, or
        # the training runs an analysis compares.
        "kernel_sources": list(dict.fromkeys([*root.get("kernel_sources", []), *kernel_sources])),
    })
    if not gpu:
        meta.pop("machine_shape")  # no accelerator: the CLI's default CPU session
    return meta


def _check_source(kind: str, source: Any, parts: tuple[int, ...]) -> str | None:
    """Why a data source reference is malformed (the CLI's rules), None when it is fine."""
    if not isinstance(source, str) or source.count("/") + 1 not in parts or not all(source.split("/")):
        return f"{kind} {source!r} must look like owner/slug" + ("[/version]" if len(parts) > 1 else "")
    return None


def validate_metadata(meta: dict[str, Any], folder: Path) -> None:
    """Check kernel metadata like `kaggle kernels push` (2.2.5) does, plus Kaggle's title limit; raise KaggleError."""
    where = Path(folder) / METADATA_FILE

    def fail(message: str) -> None:
        raise KaggleError(f"{where}: {message}")

    title = meta.get("title")
    if not isinstance(title, str) or not TITLE_MIN <= len(title) <= TITLE_MAX:
        fail(f"title must be {TITLE_MIN} to {TITLE_MAX} characters, got {title!r} (pass a shorter --slug)")
    code_file = meta.get("code_file")
    if not code_file:
        fail("code_file is missing: name the notebook to upload")
    code_path = Path(folder) / str(code_file)
    if not code_path.is_file():
        fail(f"code_file {code_file} does not exist in {folder}")
    ident = meta.get("id")
    if not isinstance(ident, str) or ident.count("/") != 1 or not all(ident.split("/")):
        fail(f"id must be 'owner/slug' (no version), got {ident!r}")
    owner, slug = ident.split("/")
    if not OWNER_RE.fullmatch(owner):
        fail(f"id owner {owner!r} is not a Kaggle user name (still the <username> placeholder?)")
    if not SLUG_RE.fullmatch(slug) or not TITLE_MIN <= len(slug) <= TITLE_MAX:
        fail(f"id slug {slug!r} must be {TITLE_MIN} to {TITLE_MAX} lowercase letters, digits and single hyphens")
    if slugify(title) != slug:
        fail(f"title {title!r} resolves to slug {slugify(title)!r}, not {slug!r}: Kaggle names a new kernel after "
             "its title, so status and pull would look for the wrong kernel")
    if meta.get("language") not in VALID_LANGUAGES:
        fail(f"language must be one of {list(VALID_LANGUAGES)}, got {meta.get('language')!r}")
    if meta.get("kernel_type") not in VALID_KERNEL_TYPES:
        fail(f"kernel_type must be one of {list(VALID_KERNEL_TYPES)}, got {meta.get('kernel_type')!r}")
    for key in BOOL_FIELDS:
        if key in meta and meta[key] not in (True, False, "true", "false", "True", "False", "TRUE", "FALSE"):
            fail(f"{key} must be true or false, got {meta[key]!r}")
    if "enable_internet" not in meta:
        fail("enable_internet must be set explicitly: the CLI turns internet on when it is absent")
    checks = [("dataset_sources", "dataset", (2, 3)), ("kernel_sources", "kernel", (2, 3)),
              ("model_sources", "model instance version", (5,))]
    for key, kind, parts in checks:
        sources = meta.get(key, [])
        if not isinstance(sources, list):
            fail(f"{key} must be a list")
        for source in sources:
            problem = _check_source(kind, source, parts)
            if not problem and kind == "kernel" and len(source.split("/")[1]) < TITLE_MIN:
                problem = f"kernel source {source!r}: the CLI wants a slug of at least {TITLE_MIN} characters"
            if problem:
                fail(problem)
    pinning = meta.get("docker_image_pinning_type")
    if pinning is not None and pinning not in VALID_PINNING_TYPES:
        fail(f"docker_image_pinning_type must be one of {list(VALID_PINNING_TYPES)}, got {pinning!r}")
    shape = str(meta.get("machine_shape") or "")
    if shape.lower() in RETIRED_MACHINE_SHAPES:
        fail(f"machine_shape {shape!r} is retired; use {MACHINE_SHAPE_T4X2!r} (GPU T4 x2)")
    if meta.get("kernel_type") == "notebook":
        try:
            json.loads(code_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            fail(f"code_file {code_file} is not a JSON notebook: {exc}")


def notebook_defaults(notebook: Path) -> dict[str, Any] | None:
    """The names a notebook's `parameters` cell assigns and their literal defaults (None for a non-literal value);
    None when it has no such cell."""
    import ast

    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        return None
    defaults: dict[str, Any] = {}
    for cell in cells:  # ast, not papermill.inspect_notebook: that one skips lines with '=' in their comment
        try:
            tree = ast.parse(cell.source)
        except SyntaxError as exc:
            raise KaggleError(f"{notebook}: the parameters cell is not plain Python: {exc}") from None
        for node in tree.body:
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            else:
                continue
            try:
                value = ast.literal_eval(node.value) if node.value is not None else None
            except ValueError:
                value = None
            for target in targets:
                defaults.update({n.id: value for n in ast.walk(target) if isinstance(n, ast.Name)})
    return defaults


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
        "from utils.runtime import check_accelerator, on_kaggle, working_root  # /kaggle/working, or a rehearsal's",
        "if on_kaggle() and working_root().is_dir():",
        f"    with open(working_root() / '{BUILD_RECORD}', 'w') as _record:",
        "        json.dump(KAGGLE_BUILD, _record, indent=2)",
        "print(f\"utils from commit {KAGGLE_BUILD['commit']}\""
        " + (f\" with local changes to {KAGGLE_BUILD['changed']}\" if KAGGLE_BUILD['changed'] else ''))",
        "# Pushed for a GPU but given none (account not phone-verified, accelerator not granted): stop now, before",
        "# the session spends hours training on the CPU.",
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
    if not Path(notebook).is_file():
        raise KaggleError(f"notebook {notebook} does not exist")
    declared = notebook_parameters(notebook)
    if params and declared is None:
        raise KaggleError(f"{notebook} has no cell tagged 'parameters', so {sorted(params)} cannot be injected")
    unknown = sorted(set(params) - set(declared or ()))
    if unknown:
        raise KaggleError(f"{notebook} declares no parameter {unknown} (its parameters: {sorted(declared or ())})")


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
                 kernel_sources: tuple[str, ...] = (), gpu: bool = True, resume_from: str | None = None) -> Path:
    """Render build/kaggle/<slug>/: kernel-metadata.json and the notebook with utils and parameters injected.

    The kernel's record (KAGGLE_BUILD) says what the push asked for, so the kernel can stop at once when it did not
    get it: the accelerator ("gpu" or "none"), and the run a resume must find attached (`resume_from`).
    """
    import nbformat
    import papermill

    notebook = Path(notebook)
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
              "accelerator": "gpu" if gpu else "none", "resume_from": resume_from,
              "kernel_sources": [*kernel_sources, *([resume_from] if resume_from else [])],
              "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    cell = nbformat.v4.new_code_cell(utils_cell_source(payload, record), metadata={"tags": [UTILS_CELL_TAG]})
    nb.cells.insert(0, cell)
    write_atomic(target, nbformat.writes(nb))
    meta = kernel_metadata(root, owner, title, notebook.name, private, internet, tuple(record["kernel_sources"]), gpu)
    write_atomic(folder / METADATA_FILE, json.dumps(meta, indent=2) + "\n")
    validate_metadata(meta, folder)
    check_no_secret(folder)
    return folder


# ---------------------------------------------------------------------------------------------- calls to Kaggle


def _denied(exc: BaseException) -> bool:
    """An answer an expired token gives: HTTP 401, or the ValueError the CLI makes of a 401/403 on a kernel."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status == 401 or (isinstance(exc, ValueError) and "was denied" in str(exc))


def reauthenticate(api: Any) -> None:
    """Authenticate the CLI's API object again (an OAuth access token lives 12 h; authenticate() refreshes it)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except SystemExit:
        raise KaggleError(credentials_help("Kaggle no longer accepts the credentials")) from None


def api_call(api: Any, action: str, call: Callable[[], Any], reauth: bool = True) -> Any:
    """One CLI call; a refusal of the credentials re-authenticates once and retries; failures become KaggleError."""
    for attempt in (1, 2):
        try:
            return call()
        except (ValueError, *_request_errors()) as exc:
            if reauth and attempt == 1 and _denied(exc):
                print(f"{action}: Kaggle refused the credentials (HTTP 401/403); re-authenticating once",
                      file=sys.stderr, flush=True)
                reauthenticate(api)
                continue
            if isinstance(exc, _request_errors()):
                raise _http_failure(action, exc) from None
            raise KaggleError(f"{action}: {exc}") from None
    raise AssertionError("unreachable")


def pushed_name(ref: str | None) -> tuple[str, str] | None:
    """Owner and slug in a push answer's `ref` ('/code/owner/slug', 'owner/slug' or a URL); None if it names none."""
    parts = [part for part in re.sub(r"^[a-z]+://[^/]+", "", ref or "").split("/") if part]
    if parts and parts[0] in ("code", "kernels"):
        parts = parts[1:]
    if len(parts) >= 2 and OWNER_RE.fullmatch(parts[0]) and SLUG_RE.fullmatch(parts[1]):
        return parts[0], parts[1]
    return None


def push_folder(api: Any, folder: Path) -> str:
    """`kaggle kernels push -p folder` through the CLI's API; the pushed version as OWNER/SLUG/VERSION.

    Status and pull then follow that version, under the name Kaggle gave the kernel, not whatever runs latest.
    """
    meta = json.loads((Path(folder) / METADATA_FILE).read_text())
    ref = meta["id"]
    response = api_call(api, f"push of {ref} failed", lambda: api.kernels_push(str(folder)))
    if response is None or response.error:
        said = response.error if response is not None else "no answer"
        raise KaggleError(f"Kaggle refused the push of {ref} (title {meta['title']!r}): {said}")
    for kind, invalid in (("dataset", response.invalid_dataset_sources), ("kernel", response.invalid_kernel_sources)):
        if invalid:
            asked = meta.get(f"{kind}_sources", [])
            raise KaggleError(f"Kaggle pushed {ref} but attached only {len(asked) - len(invalid)} of its {len(asked)} "
                              f"{kind} sources; it refused {list(invalid)}, so the run would miss them. Check that "
                              f"each exists and finished (a kernel source is a kernel's output); if every one does, "
                              f"Kaggle caps the sources of one notebook below {len(asked)}: attach fewer (e.g. "
                              "`analyze` one seed's kernels at a time)")
    owner, slug = pushed_name(response.ref) or tuple(ref.split("/"))
    if f"{owner}/{slug}" != ref:
        print(f"Kaggle named the kernel {owner}/{slug} (asked for {ref}); following that", flush=True)
    version = response.version_number
    print(f"pushed {owner}/{slug}" + (f" version {version}" if version else "") + f": {response.url}", flush=True)
    return f"{owner}/{slug}/{version}" if version else f"{owner}/{slug}"


def kernel_ref(slug: str, user: str) -> str:
    """OWNER/SLUG[/VERSION] for a kernel given as SLUG, OWNER/SLUG or OWNER/SLUG/VERSION (default owner: the user)."""
    parts = slug.split("/")
    if len(parts) == 1 and parts[0]:
        return f"{user}/{slug}"
    if len(parts) in (2, 3) and all(parts) and (len(parts) == 2 or parts[2].isdigit()):
        return slug
    raise KaggleError(f"kernel {slug!r} must be SLUG, OWNER/SLUG or OWNER/SLUG/VERSION")


def kernel_status(api: Any, ref: str, reauth: bool = True) -> tuple[str, str | None]:
    """The state of a version (QUEUED, RUNNING, COMPLETE, ERROR, CANCEL_*; the latest without one) and Kaggle's
    failure message."""
    response = api_call(api, f"cannot get the status of {ref}", lambda: api.kernels_status(ref), reauth)
    state = getattr(response.status, "name", str(response.status))
    return state, response.failure_message


def wait_for(api: Any, ref: str, poll: float = POLL_FIRST, poll_max: float = POLL_MAX,
             timeout: float = WAIT_TIMEOUT, sleep: Callable[[float], None] = time.sleep) -> tuple[str, str | None]:
    """Poll the status with exponential backoff until the run ends; its final state and failure message."""
    start, delay, last, failures = time.monotonic(), poll, None, 0
    while True:
        try:
            state, message = kernel_status(api, ref)
            failures = 0
        except KaggleError as exc:
            failures += 1
            if not exc.transient or failures > MAX_POLL_FAILURES:
                raise
            print(f"{ref}: {exc} (retrying)", file=sys.stderr, flush=True)
            state, message = last, None
        if state != last and state is not None:
            print(f"{ref}: {state} after {time.monotonic() - start:.0f} s", flush=True)
            last = state
        if state is not None and state not in RUNNING_STATES:
            return state, message
        if time.monotonic() - start > timeout:
            raise KaggleError(f"{ref} is still {state} after {timeout:.0f} s; check again later with "
                              f"`python -m tools.kaggle status {ref} --wait`")
        sleep(delay)
        delay = min(delay * 2, poll_max)


def _log_text(log: str) -> str:
    """Plain text of a Kaggle run log (a JSON list of {stream_name, time, data} records, or plain text)."""
    records: list[Any] = []
    with contextlib.suppress(ValueError):
        parsed = json.loads(log)
        records = parsed if isinstance(parsed, list) else []
    if not records:
        for line in log.splitlines():  # the log may also come one record per line, with list punctuation
            with contextlib.suppress(ValueError):
                records.append(json.loads(line.strip().lstrip("[,").rstrip(",]")))
    data = [r["data"] for r in records if isinstance(r, dict) and isinstance(r.get("data"), str)]
    return "".join(data) if data else log


def run_error(log: str) -> str | None:
    """The exception the notebook raised, e.g. 'DataError: no dataset attached ...', from a run log."""
    text = ANSI_COLOUR.sub("", _log_text(log))
    found = None
    for line in text.splitlines():
        match = re.match(r"\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)):\s*(\S.*)$", line)
        if match and not match.group(1).endswith(("PapermillExecutionError", "CellExecutionError")):
            found = f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2).strip()}"
    return found


def traceback_text(log: str, lines: int = TRACEBACK_LINES) -> str:
    """The end of a run log from its last traceback (or its last lines), without terminal colours."""
    text = ANSI_COLOUR.sub("", _log_text(log))
    rows = text.splitlines()
    starts = [i for i, row in enumerate(rows) if row.lstrip().startswith(("Traceback", "-----"))
              or "Exception encountered at" in row]
    return "\n".join(rows[starts[-1] if starts else 0:][-lines:])


def report_status(api: Any, ref: str, state: str, message: str | None) -> int:
    """Print a run's state (and on ERROR, why) and return the exit code it stands for."""
    if state == "ERROR":
        detail = None
        with contextlib.suppress(KaggleError):
            detail = run_error(api_call(api, f"cannot read the log of {ref}", lambda: api.kernels_logs(ref)) or "")
        why = "; ".join(part for part in (message, f"the notebook raised {detail}" if detail else None) if part)
        print(f"error: {ref} failed: {why or 'Kaggle gave no reason'}", file=sys.stderr, flush=True)
        return EXIT_RUN_FAILED
    if state in CANCEL_STATES:
        print(f"error: {ref} was cancelled ({state})", file=sys.stderr, flush=True)
        return EXIT_CANCELLED
    print(f"{ref}: {state}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------- reports


def kernel_report(dest: Path, slug: str) -> Path | None:
    """The HTML report the kernel rendered before it ended (every notebook's last cell: report.render_in_kernel):
    the one named after the pushed notebook (its build record says which), shallowest first."""
    stem = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        stem = Path(json.loads((dest / BUILD_RECORD).read_text())["notebook"]).stem
    found = [path for path in dest.rglob("*.html") if path != dest / f"{slug}.html"]
    found.sort(key=lambda path: (path.stem != stem, not (path.parent / run_files.METRICS).is_file(), len(path.parts),
                                 str(path)))
    return found[0] if found else None


def _scalars(record: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """The scalar leaves of a JSON record as (dotted name, value), lists and environment left out."""
    if isinstance(record, dict):
        return [row for key, value in record.items() if key not in REPORT_SKIPPED_KEYS
                for row in _scalars(value, f"{prefix}{key}.")]
    return [] if isinstance(record, list) else [(prefix.rstrip("."), record)]


def _html_table(rows: list[tuple[str, Any]]) -> str:
    """A two-column HTML table."""
    import html

    body = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f"<table>{body}</table>"


def build_report(dest: Path, slug: str, state: str, log_text: str, report: Path) -> Path:
    """A report made of the run's files when no rendered one came back: state, error, metrics, history, figures."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    def shown(output: Any) -> Any:
        return new_code_cell("", outputs=[output])

    cells = [new_markdown_cell(f"# {slug}: {state}\n\nMade by `python -m tools.kaggle` from the files the run left "
                               "in its working folder (Kaggle's output listing holds no executed notebook).")]
    error = run_error(log_text)
    if state == "ERROR" or error:
        cells.append(new_markdown_cell("## The run failed\n\n" + (f"The notebook raised `{error}`; the end of the "
                                                                 "run log:" if error else "The end of the run log:")))
        cells.append(shown(new_output("stream", name="stderr", text=traceback_text(log_text) + "\n")))
    for metrics in sorted(dest.rglob(run_files.METRICS)):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(metrics.read_text())
            cells.append(new_markdown_cell(f"## Run record `{metrics.relative_to(dest)}`"))
            cells.append(shown(new_output("display_data", data={"text/html": _html_table(_scalars(record))})))
    for history in sorted(dest.rglob(run_files.HISTORY)):
        rows = history.read_text().splitlines()
        cells.append(new_markdown_cell(f"## History `{history.relative_to(dest)}` (last epochs)"))
        cells.append(shown(new_output("stream", name="stdout", text="\n".join(rows[:1] + rows[1:][-10:]) + "\n")))
    for png in sorted(dest.rglob("*.png")):
        cells.append(new_markdown_cell(f"### `{png.relative_to(dest)}`"))
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        cells.append(shown(new_output("display_data", data={"image/png": data})))
    files = sorted(p for p in dest.rglob("*") if p.is_file() and p != report)
    cells.append(new_markdown_cell("## Files\n\n" + "\n".join(f"- `{p.relative_to(dest)}` ({p.stat().st_size:,} bytes)"
                                                              for p in files)))
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}, "language_info": {"name": "python"}})
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{slug}.ipynb"
        nbformat.write(nb, str(source))
        return render_html(source, report)


def finish_report(dest: Path, slug: str, state: str, log_text: str = "") -> Path:
    """Leave <slug>.html in a downloaded run folder: Kaggle's executed notebook rendered if the listing held it, else
    the report the kernel rendered itself (COMPLETE runs), else one built from the run's files and log."""
    report = dest / f"{slug}.html"
    if (dest / EXECUTED_NOTEBOOK).is_file():
        return render_html(dest / EXECUTED_NOTEBOOK, report)
    rendered = kernel_report(dest, slug) if state == "COMPLETE" else None
    if rendered is not None:
        shutil.copyfile(rendered, report)
        return report
    return build_report(dest, slug, state, log_text, report)


def pull(api: Any, ref: str, results_root: Path | None = None, state: str | None = None) -> Path:
    """Download a run's outputs (that version's, given OWNER/SLUG/VERSION) into results/<slug>/ and leave its HTML
    report there as <slug>.html; the folder is replaced only once the download is complete."""
    slug = ref.split("/")[1]
    root = Path(results_root or RESULTS_ROOT)
    dest, partial = root / slug, root / f".{slug}.partial"
    if state is None:
        state, _ = kernel_status(api, ref)
        if state in RUNNING_STATES:
            raise KaggleError(f"{ref} is still {state}: its outputs come once it ends (status {ref} --wait)")
    shutil.rmtree(partial, ignore_errors=True)
    files, _ = api_call(api, f"cannot download the outputs of {ref}",
                        lambda: api.kernels_output(ref, str(partial), force=True, quiet=True))
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    log = dest / f"{slug}.log"  # the CLI saves the run log under the kernel's slug
    report = finish_report(dest, slug, state, log.read_text(encoding="utf-8") if log.is_file() else "")
    print(f"pulled {len(files)} files of {ref} into {dest}; report: {report}", flush=True)
    return report


def run_finished(dest: Path) -> bool:
    """False when a pulled run's metrics.json says a time budget ended it early (a later session continues it)."""
    for metrics in dest.rglob(run_files.METRICS):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if json.loads(metrics.read_text()).get("finished") is False:
                return False
    return True


def follow(api: Any, ref: str, args: argparse.Namespace) -> int:
    """After a push: wait for the run (--wait or --pull), report it, and pull its outputs (--pull)."""
    if not (args.wait or args.pull):
        print(f"follow it with: python -m tools.kaggle status {ref} --wait", flush=True)
        return 0
    state, message = wait_for(api, ref, args.poll, args.poll_max, args.timeout)
    code = report_status(api, ref, state, message)
    if args.pull and state in ("COMPLETE", "ERROR"):
        try:
            pull(api, ref, args.results_dir, state)
        except KaggleError as exc:
            if code == 0:
                raise
            print(f"error: {exc}", file=sys.stderr)  # the run's failure stays the exit code
    return code


# ---------------------------------------------------------------------------------------------- sweep


def _variant_seconds(dest: Path) -> float | None:
    """GPU seconds a pulled run took by its own record (training plus this execution's wall time), None unknown."""
    for metrics in dest.rglob(run_files.METRICS):
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            return float(json.loads(metrics.read_text()).get("wall_time_seconds"))
    return None


def sweep_summary(done: list[str], left: list[str], seconds: list[float]) -> str:
    """What ran, what is left and the GPU hours the rest needs (measured per run where possible)."""
    if seconds:
        per_run = sum(seconds) / len(seconds) / 3600
        need = f"about {per_run * len(left):.1f} GPU hours ({per_run:.2f} h per run, as measured so far)"
    else:
        need = (f"up to {KAGGLE_SESSION_HOURS * len(left):.0f} GPU hours (one {KAGGLE_SESSION_HOURS:g} h session "
                "each; no run measured yet)")
    return (f"ran: {', '.join(done) or 'none'}; left: {', '.join(left) or 'none'}; the rest needs {need}. Run the "
            "same command again once the quota allows: finished variants are not pushed again")


def run_sweep(api: Any, user: str, variants: list[dict[str, Any]], args: argparse.Namespace,
              sleep: Callable[[float], None] = time.sleep) -> int:
    """Run every variant with at most args.sessions at once: push when a session is free, wait, pull; continue a
    sweep begun before (finished variants are pulled, not pushed); stop pushing at a quota refusal."""
    results = Path(args.results_dir or RESULTS_ROOT)
    queue, running, done, codes, seconds = [], {}, [], [0], []
    for variant in variants:  # what an earlier run of this sweep left: Kaggle's latest version of each slug
        ref = f"{user}/{variant['slug']}"
        try:
            state, _ = kernel_status(api, ref, reauth=False)
        except KaggleError as exc:
            if exc.transient:
                raise  # unreachable is not "never pushed": pushing again could repeat a finished run
            state = None  # never pushed (Kaggle answers 404, or 403 for an unknown private kernel)
        if state in RUNNING_STATES:
            print(f"{ref}: already {state}; waiting for it", flush=True)
            running[variant["slug"]] = {**variant, "ref": ref, "pushed": time.monotonic()}
        elif state == "COMPLETE":
            dest = results / variant["slug"]
            if not (dest / f"{variant['slug']}.html").is_file():
                pull(api, ref, results, state)
            if run_finished(dest):
                print(f"{ref}: finished before; not pushed again", flush=True)
                done.append(variant["slug"])
            else:
                print(f"{ref}: stopped by its time budget; continuing it from its output", flush=True)
                queue.append({**variant, "resume": ref})
        else:
            queue.append(variant)
    delay, quota, waiting_since = args.poll, None, None
    while running or (queue and quota is None):
        while queue and quota is None and len(running) < args.sessions:
            variant = queue[0]
            folder = variant["build"](variant.get("resume"))
            try:
                ref = push_folder(api, folder)
            except KaggleError as exc:
                if SESSION_LIMIT_RE.search(str(exc)):
                    print(f"{exc}: pushing it again when a session ends", file=sys.stderr, flush=True)
                    break
                if QUOTA_RE.search(str(exc)):
                    quota = str(exc)
                    break
                raise
            queue.pop(0)
            running[variant["slug"]] = {**variant, "ref": ref, "pushed": time.monotonic()}
            delay = args.poll
        if not running:
            if queue and quota is None:  # sessions taken elsewhere: try again later
                waiting_since = waiting_since or time.monotonic()
                if time.monotonic() - waiting_since > args.timeout:
                    raise KaggleError(f"Kaggle refused every push for the session count for {args.timeout:.0f} s: "
                                      f"left: {', '.join(v['slug'] for v in queue)}; run the same command later")
                sleep(delay)
                delay = min(delay * 2, args.poll_max)
            continue
        waiting_since = None
        sleep(delay)
        delay = min(delay * 2, args.poll_max)
        for slug, variant in list(running.items()):
            try:
                state, message = kernel_status(api, variant["ref"])
            except KaggleError as exc:
                if not exc.transient:
                    raise
                print(f"{variant['ref']}: {exc} (retrying)", file=sys.stderr, flush=True)
                continue
            if state in RUNNING_STATES:
                if time.monotonic() - variant["pushed"] > args.timeout:
                    raise KaggleError(f"{variant['ref']} is still {state} after {args.timeout:.0f} s")
                continue
            del running[slug]
            codes.append(report_status(api, variant["ref"], state, message))
            delay = args.poll
            if state not in ("COMPLETE", "ERROR"):
                continue
            try:
                pull(api, variant["ref"], results, state)
            except KaggleError as exc:  # the others go on; the same command later pulls it again
                print(f"error: {exc}", file=sys.stderr, flush=True)
                codes.append(EXIT_ERROR)
                continue
            measured = _variant_seconds(results / slug)
            seconds += [measured] if measured else []
            if state == "COMPLETE" and not run_finished(results / slug):
                print(f"{variant['ref']}: stopped by its time budget; pushing it again to continue", flush=True)
                queue.append({**variant, "resume": "/".join(variant["ref"].split("/")[:2])})  # its latest output
            elif state == "COMPLETE":
                done.append(slug)
    if quota is not None:
        order = [v["slug"] for v in variants]
        ran = sorted(done, key=order.index)
        print(f"error: {quota}\n{sweep_summary(ran, [v['slug'] for v in queue], seconds)}", file=sys.stderr,
              flush=True)
        return EXIT_ERROR
    print(f"sweep done: {', '.join(done)} in {results}", flush=True)
    return max(codes)


# ---------------------------------------------------------------------------------------------- quota


def gpu_quota(api: Any) -> tuple[float, float] | None:
    """This week's GPU hours (left, allowed) as `kaggle quota` reports them; None when Kaggle does not say."""
    try:
        response = api_call(api, "cannot read the GPU quota", api.quota_view)
    except KaggleError as exc:
        print(f"warning: {exc}; going on without the quota check", file=sys.stderr, flush=True)
        return None
    quota = getattr(response, "gpu_quota", None)
    if quota is None or quota.total_time_allowed is None:
        return None
    allowed = quota.total_time_allowed.total_seconds() / 3600
    used = quota.time_used.total_seconds() / 3600 if quota.time_used is not None else 0.0
    return max(0.0, allowed - used), allowed


def measured_epoch_seconds(results: Path, slugs: list[str]) -> float | None:
    """Seconds per training epoch as this sweep's pulled runs recorded them (their mean), None before any."""
    rates = []
    for slug in slugs:
        for metrics in (Path(results) / slug).rglob(run_files.METRICS):
            with contextlib.suppress(OSError, ValueError, AttributeError, TypeError, KeyError, ZeroDivisionError):
                record = json.loads(metrics.read_text())
                rates.append(float(record["training_seconds"]) / int(record["epochs_run"]))
    return sum(rates) / len(rates) if rates else None


def expected_gpu_hours(params: dict[str, Any], runs: int, epoch_seconds: float | None) -> tuple[float, str]:
    """GPU hours `runs` trainings with these parameters need, and how that was estimated."""
    if epoch_seconds is not None:
        epochs = int(params.get("epochs") or 1)
        per_run = epoch_seconds * epochs / 3600 + EVALUATION_RESERVE_HOURS
        return per_run * runs, f"{per_run:.1f} h per run from a measured {epoch_seconds:.0f} s per epoch"
    budget = params.get("time_budget_hours")
    per_run = (float(budget) + EVALUATION_RESERVE_HOURS) if budget else KAGGLE_SESSION_HOURS
    source = f"time_budget_hours {budget:g}" if budget else f"one {KAGGLE_SESSION_HOURS:g} h session each"
    return per_run * runs, f"{per_run:.1f} h per run ({source}; no epoch measured yet, so a first session only)"


def check_quota(api: Any, params: dict[str, Any], runs: int, epoch_seconds: float | None, force: bool) -> None:
    """Say the GPU hours a sweep expects beside the weekly quota left; refuse one that cannot finish this week."""
    need, how = expected_gpu_hours(params, runs, epoch_seconds)
    quota = gpu_quota(api)
    if quota is None:
        print(f"this sweep expects about {need:.1f} GPU hours for {runs} run(s) ({how}); Kaggle did not report the "
              "quota left (`kaggle quota`)", flush=True)
        return
    left, allowed = quota
    print(f"this sweep expects about {need:.1f} GPU hours for {runs} run(s) ({how}); GPU quota left this week: "
          f"{left:.1f} of {allowed:.0f} h", flush=True)
    if need > left and not force:
        raise KaggleError(f"{runs} run(s) need about {need:.1f} GPU hours but {left:.1f} h are left this week: the "
                          "sweep would stop part-way. Sweep fewer alphas now, or pass --ignore-quota to start anyway "
                          "(a quota refusal stops pushing; running the same command next week continues it)")


# ---------------------------------------------------------------------------------------------- analysis on Kaggle


def analysis_title(refs: list[str], slug: str | None = None) -> str:
    """The analysis kernel's title: --slug as words, else the words the kernels' slugs share up to their variant
    (e.g. 'train kaggle t4x2 analysis' for train-kaggle-t4x2-alpha-0, ...-alpha-0-2), then 'analysis'."""
    if slug:
        return slug.replace("-", " ")
    words = [ref.split("/")[1].split("-") for ref in refs]
    common = []
    for column in zip(*words):
        if len(set(column)) > 1 or column[0] in ("alpha", "seed"):
            break
        common.append(column[0])
    return fit_title([*(common or words[0]), "analysis"], sorted(refs))


def push_analysis(api: Any, user: str, kernels: list[str], params: dict[str, Any], args: argparse.Namespace) -> int:
    """Push analyze.ipynb with the training kernels' outputs attached (run_dirs names them), then follow it."""
    refs = list(dict.fromkeys(kernel_ref(kernel, user) for kernel in kernels))
    params = {**params, "run_dirs": refs}
    check_parameters(ANALYZE_NOTEBOOK, params)
    title = analysis_title(refs, args.slug)
    folder = build_kernel(ANALYZE_NOTEBOOK, params, user, title, private=not args.public, build_root=args.build_dir,
                          internet=args.internet, kernel_sources=tuple(refs), gpu=not args.cpu)
    print(f"built {folder}, attaching the outputs of {len(refs)} training kernel(s)", flush=True)
    return follow(api, push_folder(api, folder), args)


# ---------------------------------------------------------------------------------------------- rehearsal


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


def kernel_env(input_dir: Path, working: Path, replicas: int, internet: bool) -> dict[str, str]:
    """The environment of a simulated Kaggle kernel: its folders, KAGGLE_KERNEL_RUN_TYPE, the replica split, no
    credentials, no repository on the path and (internet off) every download sent to a dead proxy."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("KAGGLE_") and key not in ("PYTHONPATH",) and "proxy" not in key.lower()}
    env.update({"KAGGLE_KERNEL_RUN_TYPE": "Batch", "KAGGLE_INPUT_ROOT": str(input_dir),
                "KAGGLE_WORKING_ROOT": str(working)})
    if replicas > 1:
        env[REHEARSAL_REPLICAS_ENV] = str(replicas)
    if not internet:
        env.update({name: DEAD_PROXY for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")})
    return env


def kernel_command(notebook: Path, working: Path) -> list[str]:
    """Kaggle's run of a pushed notebook: papermill into <working>/__notebook__.ipynb with the working folder as cwd."""
    return [sys.executable, "-m", "papermill", str(notebook), str(working / EXECUTED_NOTEBOOK), "--cwd", str(working),
            "-k", "python3", "--log-output", "--no-progress-bar"]


def execute_kernel(folder: Path, input_dir: Path, working: Path, replicas: int = REHEARSAL_REPLICAS,
                   internet: bool = False) -> tuple[int, str]:
    """Run a built kernel as Kaggle does: papermill on the pushed notebook, cwd = the working folder, the executed
    copy at <working>/__notebook__.ipynb while it runs and deleted after; the exit code and the run log."""
    meta = json.loads((Path(folder) / METADATA_FILE).read_text())
    working.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    command = kernel_command(Path(folder) / meta["code_file"], working)
    with subprocess.Popen(command, cwd=working, env=kernel_env(input_dir, working, replicas, internet),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
        for line in process.stdout:
            log.append(line)
            print(line, end="", flush=True)
    (working / EXECUTED_NOTEBOOK).unlink(missing_ok=True)  # gone once the run ends, as on Kaggle
    return process.returncode, "".join(log)


def rehearse(notebook: Path, params: dict[str, Any], title: str, data: Path | None = None,
             resume_from: Path | None = None, replicas: int = REHEARSAL_REPLICAS, internet: bool = False,
             rehearsal_root: Path | None = None) -> tuple[int, Path]:
    """Build the kernel `push` would send and run it here in a simulated /kaggle; the exit code and its report.

    <root>/<slug>/ holds input/ (mounted as Kaggle does since 2026: the dataset in the 140k layout at
    datasets/<owner>/<slug>, an attached earlier output read-only at notebooks/rehearsal/<name>) and output/ (what
    /kaggle/working held, the log and <slug>.html, as `pull` leaves them); the builds go to <root>/kernels/.
    replicas > 1 stands for the T4s (a GPU kernel); 1 is a kernel pushed with --cpu.
    """
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
                          gpu=replicas > 1, resume_from=attached)
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
    print(f"rehearsing {folder / notebook.name} in {sim} ({replicas} replica(s), internet "
          f"{'on' if internet else 'off'})", flush=True)
    code, log = execute_kernel(folder, input_dir, working, replicas, internet)
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


# ---------------------------------------------------------------------------------------------- command line


def _params(path: str | os.PathLike | None, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Parameters from a YAML file then NAME VALUE pairs (papermill's precedence), as tools.notebook reads them."""
    from tools.notebook import load_params, parse_value

    try:
        params = load_params(path)
    except (OSError, ValueError) as exc:
        raise KaggleError(str(exc)) from None
    params.update({name: parse_value(value) for name, value in pairs})
    return params


def _check_notebook(path: str) -> Path:
    """The notebook path, which must exist."""
    notebook = Path(path)
    if not notebook.is_file():
        raise KaggleError(f"notebook {notebook} does not exist")
    return notebook


def _check_slug(slug: str | None, option: str = "--slug") -> None:
    """A --slug must be a slug Kaggle accepts."""
    if slug and not (SLUG_RE.fullmatch(slug) and TITLE_MIN <= len(slug) <= TITLE_MAX):
        raise KaggleError(f"{option} {slug!r} must be {TITLE_MIN} to {TITLE_MAX} lowercase letters, digits and "
                          "single hyphens")


def _title(args: argparse.Namespace, notebook: Path, params: dict[str, Any]) -> str:
    """The kernel title: --slug spelled as words, else the notebook and its variant."""
    _check_slug(args.slug)
    if args.slug:
        return args.slug.replace("-", " ")
    return variant_title(notebook, args.parameters_file, args.parameter, params)


def cmd_push(args: argparse.Namespace) -> int:
    """push: build, validate and push one kernel, then optionally wait and pull."""
    notebook = _check_notebook(args.notebook)
    params = _params(args.parameters_file, args.parameter)
    title = _title(args, notebook, params)
    check_parameters(notebook, params)  # before credentials: a typo needs no account to be reported
    check_offline(notebook, params, args.internet)
    api, user = connect()
    resume = kernel_ref(args.resume_from, user) if args.resume_from else None
    folder = build_kernel(notebook, params, user, title, private=not args.public, build_root=args.build_dir,
                          internet=args.internet, gpu=not args.cpu, resume_from=resume)
    print(f"built {folder}" + (f", attaching the output of {resume} to continue it" if resume else ""), flush=True)
    ref = push_folder(api, folder)
    return follow(api, ref, args)


def cmd_sweep(args: argparse.Namespace) -> int:
    """sweep: one kernel per alpha, all built and validated first, at most --sessions running, each pulled."""
    notebook = _check_notebook(args.notebook)
    if any(name == "alpha" for name, _ in args.parameter):
        raise KaggleError("give alphas with --alphas, not -p alpha")
    for text in args.alphas:
        try:
            float(text)
        except ValueError:
            raise KaggleError(f"--alphas takes numbers, got {text!r}") from None
    _check_slug(args.slug)
    if args.sessions < 1:
        raise KaggleError(f"--sessions must be at least 1, got {args.sessions}")
    base = _params(args.parameters_file, args.parameter)
    check_parameters(notebook, {**base, "alpha": 0.0})
    check_offline(notebook, base, args.internet)
    api, user = connect()
    variants = []
    for text in args.alphas:
        params = {**base, "alpha": float(text)}
        if args.slug:
            title = fit_title([args.slug.replace("-", " "), f"alpha {text}"], {"slug": args.slug, "params": params})
        else:
            title = variant_title(notebook, args.parameters_file, [*args.parameter, ("alpha", text)], params)

        def build(resume: str | None, params: dict[str, Any] = params, title: str = title) -> Path:
            return build_kernel(notebook, params, user, title, private=not args.public, build_root=args.build_dir,
                                internet=args.internet, gpu=not args.cpu, resume_from=resume)

        variants.append({"slug": build(None).name, "build": build})
    slugs = [v["slug"] for v in variants]
    if len(set(slugs)) != len(slugs):
        raise KaggleError(f"--alphas {args.alphas} give the same kernel slug twice ({slugs}): list each alpha once")
    # A bad analysis parameter stops here, before any push.
    analysis = _analysis_params(args.analysis_parameters_file, args.analysis_parameter) if args.analyze else None
    results = Path(args.results_dir or RESULTS_ROOT)
    left = [slug for slug in slugs if not ((results / slug / f"{slug}.html").is_file() and run_finished(results / slug))]
    if left and not args.cpu:
        check_quota(api, base, len(left), measured_epoch_seconds(results, slugs), args.ignore_quota)
    code = run_sweep(api, user, variants, args)
    if analysis is None or code:
        return code
    print(f"analysing the sweep's {len(slugs)} runs on Kaggle", flush=True)
    return push_analysis(api, user, slugs, analysis, argparse.Namespace(**{**vars(args), "wait": True, "pull": True,
                                                                           "slug": None}))


def _analysis_params(path: str | None, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The analysis notebook's parameters: the Kaggle preset (or the file given), then each NAME VALUE pair."""
    params = _params(path or ANALYZE_PARAMS, pairs)
    if "run_dirs" in params and params.pop("run_dirs") not in (None, []):
        raise KaggleError("the analysis' run_dirs are the kernels it is given: name them, not -a run_dirs")
    check_parameters(ANALYZE_NOTEBOOK, params)
    return params


def cmd_analyze(args: argparse.Namespace) -> int:
    """analyze: push notebooks/analyze.ipynb with the given training kernels' outputs attached; it runs there."""
    params = _analysis_params(args.parameters_file, args.parameter)
    _check_slug(args.slug)
    api, user = connect()
    return push_analysis(api, user, args.kernels, params, args)


def cmd_status(args: argparse.Namespace) -> int:
    """status: the state of a kernel's latest version (or OWNER/SLUG/VERSION); with --wait, poll until it ends."""
    api, user = connect()
    ref = kernel_ref(args.slug, user)
    if args.wait:
        state, message = wait_for(api, ref, args.poll, args.poll_max, args.timeout)
    else:
        state, message = kernel_status(api, ref)
    return report_status(api, ref, state, message)


def cmd_pull(args: argparse.Namespace) -> int:
    """pull: outputs into results/<slug>/ and its HTML report there."""
    api, user = connect()
    pull(api, kernel_ref(args.slug, user), args.results_dir)
    return 0


def cmd_rehearse(args: argparse.Namespace) -> int:
    """rehearse: build the kernel push would send and run it here in a simulated /kaggle (two CPU replicas)."""
    notebook = _check_notebook(args.notebook)
    params = _params(args.parameters_file, args.parameter)
    title = _title(args, notebook, params)
    check_parameters(notebook, params)
    if args.replicas < 1:
        raise KaggleError(f"--replicas must be at least 1, got {args.replicas}")
    code, _ = rehearse(notebook, params, title, args.data, args.resume_from, args.replicas, args.internet,
                       args.rehearsal_dir)
    return code


def kaggle_parser() -> argparse.ArgumentParser:
    """The command line of python -m tools.kaggle."""
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="poll the status until the run ends")
    waiting.add_argument("--poll", type=float, default=POLL_FIRST, help="first poll interval in s (doubles)")
    waiting.add_argument("--poll-max", type=float, default=POLL_MAX, help="longest poll interval in s")
    waiting.add_argument("--timeout", type=float, default=WAIT_TIMEOUT, help="give up waiting after this many s")
    waiting.add_argument("--results-dir", type=Path, default=None, help="where pull writes <slug>/ (default results/)")

    building = argparse.ArgumentParser(add_help=False)
    building.add_argument("notebook", help="notebook to run on Kaggle, e.g. notebooks/train.ipynb")
    building.add_argument("-f", "--parameters-file", help="YAML file of parameters")
    building.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                          help="one parameter, overriding the file; repeatable")
    building.add_argument("--internet", action="store_true",
                          help="switch the kernel's internet on (needed for weights=imagenet; default off)")
    accelerator = argparse.ArgumentParser(add_help=False)
    accelerator.add_argument("--cpu", action="store_true",
                             help="run without an accelerator, on purpose (default GPU T4 x2: a kernel that gets no "
                                  "GPU stops at once)")

    sending = argparse.ArgumentParser(add_help=False, parents=[waiting, accelerator])
    sending.add_argument("--public", action="store_true", help="make the kernel public (default: private)")
    sending.add_argument("--pull", action="store_true", help="wait for the run, then pull its outputs")
    sending.add_argument("--build-dir", type=Path, default=None, help="where builds go (default build/kaggle/)")
    pushing = argparse.ArgumentParser(add_help=False, parents=[sending, building])

    main_parser = argparse.ArgumentParser(prog="python -m tools.kaggle", description=__doc__.splitlines()[0])
    commands = main_parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", parents=[pushing], help=cmd_push.__doc__)
    push.add_argument("--slug", help="kernel slug (default: notebook stem + parameters, e.g. train-alpha-0-1)")
    push.add_argument("--resume-from", metavar="SLUG",
                      help="attach this kernel's output (SLUG, OWNER/SLUG[/VERSION]) and continue its run from it")
    push.set_defaults(func=cmd_push)
    sweep = commands.add_parser("sweep", parents=[pushing], help=cmd_sweep.__doc__)
    sweep.add_argument("--alphas", nargs="+", required=True, help="LeakyReLU negative slopes, one kernel each")
    sweep.add_argument("--slug", help="slug prefix of the sweep's kernels (default: notebook stem + parameters)")
    sweep.add_argument("--sessions", type=int, default=MAX_SESSIONS,
                       help=f"kernels running at once (Kaggle allows {MAX_SESSIONS} GPU sessions)")
    sweep.add_argument("--ignore-quota", action="store_true",
                       help="start even when the GPU hours the sweep expects exceed the weekly quota left")
    sweep.add_argument("--analyze", action="store_true",
                       help="once every run finished, push notebooks/analyze.ipynb over them and pull its report")
    sweep.add_argument("--analysis-parameters-file", metavar="YAML",
                       help=f"parameters of the analysis (default {ANALYZE_PARAMS.relative_to(REPO_ROOT)})")
    sweep.add_argument("-a", "--analysis-parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help="one parameter of the analysis, overriding the file; repeatable")
    sweep.set_defaults(func=cmd_sweep)
    analyze = commands.add_parser("analyze", parents=[sending], help=cmd_analyze.__doc__)
    analyze.add_argument("kernels", nargs="+", metavar="KERNEL",
                         help="training kernels to compare (SLUG, OWNER/SLUG or OWNER/SLUG/VERSION)")
    analyze.add_argument("-f", "--parameters-file", metavar="YAML",
                         help=f"parameters of notebooks/analyze.ipynb (default {ANALYZE_PARAMS.relative_to(REPO_ROOT)})")
    analyze.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                         help="one parameter, overriding the file; repeatable")
    analyze.add_argument("--internet", action="store_true", help="switch the kernel's internet on (default off)")
    analyze.add_argument("--slug", help="kernel slug (default: the kernels' shared name + analysis)")
    analyze.set_defaults(func=cmd_analyze)
    status = commands.add_parser("status", parents=[waiting], help=cmd_status.__doc__)
    status.add_argument("slug", help="SLUG, OWNER/SLUG or OWNER/SLUG/VERSION")
    status.set_defaults(func=cmd_status)
    pulling = commands.add_parser("pull", help=cmd_pull.__doc__)
    pulling.add_argument("slug", help="SLUG, OWNER/SLUG or OWNER/SLUG/VERSION")
    pulling.add_argument("--results-dir", type=Path, default=None, help="where <slug>/ goes (default results/)")
    pulling.set_defaults(func=cmd_pull)
    rehearsal = commands.add_parser("rehearse", parents=[building], help=cmd_rehearse.__doc__)
    rehearsal.add_argument("--slug", help="kernel slug (default: as push names it)")
    rehearsal.add_argument("--data", type=Path, default=None,
                           help="dataset folder to attach (default: the embedded synthetic one, in the 140k layout)")
    rehearsal.add_argument("--resume-from", type=Path, default=None,
                           help="an earlier rehearsal's output/ (or a pulled run) to attach read-only and continue")
    rehearsal.add_argument("--replicas", type=int, default=REHEARSAL_REPLICAS,
                           help="logical CPU devices for MirroredStrategy (1: the single-device path)")
    rehearsal.add_argument("--rehearsal-dir", type=Path, default=None,
                           help="where the simulated /kaggle folders go (default build/kaggle-rehearsal/)")
    rehearsal.set_defaults(func=cmd_rehearse)
    return main_parser


def main(argv: list[str] | None = None) -> int:
    """Command line: push / sweep / analyze / status / pull / rehearse; errors: one line on stderr, a non-zero exit."""
    args = kaggle_parser().parse_args(argv)
    try:
        return args.func(args)
    except KaggleError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
