"""Kaggle from a laptop: the push / status / pull / sweep pipeline over the Kaggle CLI (kaggle>=2).

    python -m tools.kaggle push NOTEBOOK [-p NAME VALUE ...] [-f PARAMS.yaml] [--slug SLUG] [--wait] [--pull]
    python -m tools.kaggle sweep NOTEBOOK --alphas 0 0.01 0.1 0.2 0.3 [push options]
    python -m tools.kaggle status SLUG [--wait]
    python -m tools.kaggle pull SLUG

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
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from utils.report import render_html
from utils.runtime import REPO_ROOT, write_atomic

ROOT_METADATA = REPO_ROOT / "kernel-metadata.json"
BUILD_ROOT = REPO_ROOT / "build" / "kaggle"
RESULTS_ROOT = REPO_ROOT / "results"
UTILS_DIR = REPO_ROOT / "utils"

METADATA_FILE = "kernel-metadata.json"
EXECUTED_NOTEBOOK = "__notebook__.ipynb"  # the name Kaggle's papermill run gives the executed notebook
BUILD_RECORD = "kaggle-build.json"  # written by the generated cell into /kaggle/working: commit and params of the run
UTILS_CELL_TAG = "kaggle-utils"
MACHINE_SHAPE_T4X2 = "NvidiaTeslaT4"  # "GPU T4 x2"; enable_gpu alone asked for the retired P100

# The rules `kaggle kernels push` applies in kaggle 2.2.5 (KaggleApi.valid_push_* and kernels_push); a test keeps
# these in step with the installed CLI.
VALID_LANGUAGES = ("python", "r", "rmarkdown")
VALID_KERNEL_TYPES = ("script", "notebook")
VALID_PINNING_TYPES = ("original", "latest")
RETIRED_MACHINE_SHAPES = ("nvidiateslap100", "tpuv38", "tpu1vmv38", "tpuv232", "tpuv2256")
BOOL_FIELDS = ("is_private", "enable_gpu", "enable_tpu", "enable_internet")
TITLE_MIN, TITLE_MAX = 5, 50  # the CLI checks the minimum; Kaggle's server refuses longer titles
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
MIN_SECRET_LENGTH = 8  # shorter "secrets" would match ordinary text

CLI_MISSING = ("the Kaggle CLI (Python package `kaggle` >= 2, with `kagglesdk`) is not installed in this "
               "environment: run `.venv/bin/pip install 'kaggle>=2.0'` (see requirements.txt)")


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


def load_cli() -> type:
    """The installed CLI's KaggleApi class (importing `kaggle` authenticates and prints, so it is silenced)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import kaggle
            from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise KaggleError(CLI_MISSING) from None
    if int(str(getattr(kaggle, "__version__", "0")).split(".")[0]) < 2:
        raise KaggleError(f"{CLI_MISSING}; found kaggle {kaggle.__version__}")
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


def variant_title(notebook: Path, params_file: str | None, cli_params: list[tuple[str, str]]) -> str:
    """A kernel title naming the notebook and its variant, e.g. 'train alpha 0.1' (slug train-alpha-0-1)."""
    words = [Path(notebook).stem] + ([Path(params_file).stem] if params_file else [])
    words += [f"{name} {value}" for name, value in cli_params]
    return " ".join(words)


def kernel_metadata(root: dict[str, Any], owner: str, title: str, code_file: str,
                    private: bool = True) -> dict[str, Any]:
    """A pushed kernel's metadata: the root file's sources and settings, our id/title/code, T4 x2, internet off."""
    meta = {"id": f"{owner}/{slugify(title)}"}
    meta.update({key: value for key, value in root.items() if key not in ("id", "id_no")})
    meta.update({
        "title": title,
        "code_file": code_file,
        "is_private": private,
        "enable_gpu": True,
        "enable_tpu": False,
        # The CLI defaults internet to on; the run must not depend on it (utils travel inside the notebook).
        "enable_internet": False,
        "machine_shape": root.get("machine_shape") or MACHINE_SHAPE_T4X2,
    })
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


def notebook_parameters(notebook: Path) -> set[str] | None:
    """The names a notebook's `parameters` cell assigns, None when it has no such cell."""
    import ast

    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        return None
    names: set[str] = set()
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
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


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
        "if 'KAGGLE_KERNEL_RUN_TYPE' in os.environ and os.path.isdir('/kaggle/working'):",
        f"    with open('/kaggle/working/{BUILD_RECORD}', 'w') as _record:",
        "        json.dump(KAGGLE_BUILD, _record, indent=2)",
        "print(f\"utils from commit {KAGGLE_BUILD['commit']}\""
        " + (f\" with local changes to {KAGGLE_BUILD['changed']}\" if KAGGLE_BUILD['changed'] else ''))",
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


def build_kernel(notebook: Path, params: dict[str, Any], owner: str, title: str, private: bool = True,
                 root_metadata: Path | None = None, build_root: Path | None = None) -> Path:
    """Render build/kaggle/<slug>/: kernel-metadata.json and the notebook with utils and parameters injected."""
    import nbformat
    import papermill

    notebook = Path(notebook)
    check_parameters(notebook, params)
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
              "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    cell = nbformat.v4.new_code_cell(utils_cell_source(payload, record), metadata={"tags": [UTILS_CELL_TAG]})
    nb.cells.insert(0, cell)
    write_atomic(target, nbformat.writes(nb))
    meta = kernel_metadata(root, owner, title, notebook.name, private)
    write_atomic(folder / METADATA_FILE, json.dumps(meta, indent=2) + "\n")
    validate_metadata(meta, folder)
    check_no_secret(folder)
    return folder


# ---------------------------------------------------------------------------------------------- push, status, pull


def push_folder(api: Any, folder: Path) -> str:
    """`kaggle kernels push -p folder` through the CLI's API; the kernel reference owner/slug."""
    meta = json.loads((Path(folder) / METADATA_FILE).read_text())
    ref = meta["id"]
    try:
        response = api.kernels_push(str(folder))
    except ValueError as exc:
        raise KaggleError(f"the Kaggle CLI refused {Path(folder) / METADATA_FILE}: {exc}") from None
    except _request_errors() as exc:
        raise _http_failure(f"push of {ref} failed", exc) from None
    if response is None or response.error:
        said = response.error if response is not None else "no answer"
        raise KaggleError(f"Kaggle refused the push of {ref} (title {meta['title']!r}): {said}")
    invalid = list(response.invalid_dataset_sources or [])
    if invalid:
        raise KaggleError(f"Kaggle pushed {ref} but could not attach dataset source(s) {invalid}: the run will stop "
                          "with 'no dataset attached'; check dataset_sources in kernel-metadata.json")
    version = f" version {response.version_number}" if response.version_number else ""
    print(f"pushed {ref}{version}: {response.url}", flush=True)
    return ref


def kernel_ref(slug: str, user: str) -> str:
    """owner/slug for a slug given with or without its owner (default: the authenticated user)."""
    if "/" not in slug:
        return f"{user}/{slug}"
    if slug.count("/") != 1 or not all(slug.split("/")):
        raise KaggleError(f"kernel {slug!r} must be SLUG or OWNER/SLUG")
    return slug


def kernel_status(api: Any, ref: str) -> tuple[str, str | None]:
    """The latest version's state (QUEUED, RUNNING, COMPLETE, ERROR, CANCEL_*) and Kaggle's failure message."""
    try:
        response = api.kernels_status(ref)
    except ValueError as exc:
        raise KaggleError(str(exc)) from None
    except _request_errors() as exc:
        raise _http_failure(f"cannot get the status of {ref}", exc) from None
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
    text = re.sub(r"\x1b\[[0-9;]*m", "", _log_text(log))
    found = None
    for line in text.splitlines():
        match = re.match(r"\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt)):\s*(\S.*)$", line)
        if match and not match.group(1).endswith(("PapermillExecutionError", "CellExecutionError")):
            found = f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2).strip()}"
    return found


def report_status(api: Any, ref: str, state: str, message: str | None) -> int:
    """Print a run's state (and on ERROR, why) and return the exit code it stands for."""
    if state == "ERROR":
        detail = None
        with contextlib.suppress(KaggleError, ValueError, *_request_errors()):
            detail = run_error(api.kernels_logs(ref) or "")
        why = "; ".join(part for part in (message, f"the notebook raised {detail}" if detail else None) if part)
        print(f"error: {ref} failed: {why or 'Kaggle gave no reason'}", file=sys.stderr, flush=True)
        return EXIT_RUN_FAILED
    if state in CANCEL_STATES:
        print(f"error: {ref} was cancelled ({state})", file=sys.stderr, flush=True)
        return EXIT_CANCELLED
    print(f"{ref}: {state}", flush=True)
    return 0


def pull(api: Any, ref: str, results_root: Path | None = None) -> Path:
    """Download a run's outputs into results/<slug>/ and render its executed notebook to <slug>.html there."""
    slug = ref.split("/")[1]
    dest = Path(results_root or RESULTS_ROOT) / slug
    try:
        files, _ = api.kernels_output(ref, str(dest), force=True, quiet=True)
    except ValueError as exc:
        raise KaggleError(str(exc)) from None
    except _request_errors() as exc:
        raise _http_failure(f"cannot download the outputs of {ref}", exc) from None
    executed = dest / EXECUTED_NOTEBOOK
    others = sorted(dest.glob("*.ipynb"))
    if not executed.is_file() and len(others) == 1:
        executed = others[0]  # a listing without Kaggle's usual name but with one notebook: that is the run
    if not executed.is_file():
        raise KaggleError(f"the outputs of {ref} ({len(files)} files in {dest}) hold no executed notebook "
                          f"{EXECUTED_NOTEBOOK}: has the run finished?")
    report = render_html(executed, dest / f"{slug}.html")
    print(f"pulled {len(files)} files of {ref} into {dest}; report: {report}", flush=True)
    return report


def follow(api: Any, ref: str, args: argparse.Namespace) -> int:
    """After a push: wait for the run (--wait or --pull), report it, and pull its outputs (--pull)."""
    if not (args.wait or args.pull):
        print(f"follow it with: python -m tools.kaggle status {ref} --wait", flush=True)
        return 0
    state, message = wait_for(api, ref, args.poll, args.poll_max, args.timeout)
    code = report_status(api, ref, state, message)
    if args.pull and state in ("COMPLETE", "ERROR"):
        try:
            pull(api, ref, args.results_dir)
        except KaggleError as exc:
            if code == 0:
                raise
            print(f"error: {exc}", file=sys.stderr)  # the run's failure stays the exit code
    return code


# ---------------------------------------------------------------------------------------------- command line


def _params(args: argparse.Namespace) -> dict[str, Any]:
    """Parameters from -f then -p (papermill's precedence), as tools.notebook reads them."""
    from tools.notebook import load_params, parse_value

    try:
        params = load_params(args.parameters_file)
    except (OSError, ValueError) as exc:
        raise KaggleError(str(exc)) from None
    params.update({name: parse_value(value) for name, value in args.parameter})
    return params


def _check_notebook(path: str) -> Path:
    """The notebook path, which must exist."""
    notebook = Path(path)
    if not notebook.is_file():
        raise KaggleError(f"notebook {notebook} does not exist")
    return notebook


def cmd_push(args: argparse.Namespace) -> int:
    """push: build, validate and push one kernel, then optionally wait and pull."""
    notebook = _check_notebook(args.notebook)
    params = _params(args)
    if args.slug and not (SLUG_RE.fullmatch(args.slug) and TITLE_MIN <= len(args.slug) <= TITLE_MAX):
        raise KaggleError(f"--slug {args.slug!r} must be {TITLE_MIN} to {TITLE_MAX} lowercase letters, digits and "
                          "single hyphens")
    title = args.slug.replace("-", " ") if args.slug else variant_title(notebook, args.parameters_file, args.parameter)
    check_parameters(notebook, params)  # before credentials: a typo needs no account to be reported
    api, user = connect()
    folder = build_kernel(notebook, params, user, title, private=not args.public, build_root=args.build_dir)
    print(f"built {folder}", flush=True)
    ref = push_folder(api, folder)
    return follow(api, ref, args)


def cmd_sweep(args: argparse.Namespace) -> int:
    """sweep: one kernel per alpha, all built (and validated) before the first push."""
    notebook = _check_notebook(args.notebook)
    if any(name == "alpha" for name, _ in args.parameter):
        raise KaggleError("give alphas with --alphas, not -p alpha")
    for text in args.alphas:
        try:
            float(text)
        except ValueError:
            raise KaggleError(f"--alphas takes numbers, got {text!r}") from None
    base = _params(args)
    check_parameters(notebook, {**base, "alpha": 0.0})
    api, user = connect()
    folders = []
    for text in args.alphas:
        title = variant_title(notebook, args.parameters_file, [*args.parameter, ("alpha", text)])
        params = {**base, "alpha": float(text)}
        folders.append(build_kernel(notebook, params, user, title, private=not args.public,
                                    build_root=args.build_dir))
    refs = [push_folder(api, folder) for folder in folders]
    return max([follow(api, ref, args) for ref in refs], default=0)


def cmd_status(args: argparse.Namespace) -> int:
    """status: the latest version's state; with --wait, poll until it ends."""
    api, user = connect()
    ref = kernel_ref(args.slug, user)
    if args.wait:
        state, message = wait_for(api, ref, args.poll, args.poll_max, args.timeout)
    else:
        state, message = kernel_status(api, ref)
    return report_status(api, ref, state, message)


def cmd_pull(args: argparse.Namespace) -> int:
    """pull: outputs into results/<slug>/ and the executed notebook as HTML."""
    api, user = connect()
    pull(api, kernel_ref(args.slug, user), args.results_dir)
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line of python -m tools.kaggle."""
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="poll the status until the run ends")
    waiting.add_argument("--poll", type=float, default=POLL_FIRST, help="first poll interval in s (doubles)")
    waiting.add_argument("--poll-max", type=float, default=POLL_MAX, help="longest poll interval in s")
    waiting.add_argument("--timeout", type=float, default=WAIT_TIMEOUT, help="give up waiting after this many s")
    waiting.add_argument("--results-dir", type=Path, default=None, help="where pull writes <slug>/ (default results/)")

    pushing = argparse.ArgumentParser(add_help=False, parents=[waiting])
    pushing.add_argument("notebook", help="notebook to run on Kaggle, e.g. notebooks/train.ipynb")
    pushing.add_argument("-f", "--parameters-file", help="YAML file of parameters")
    pushing.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                         help="one parameter, overriding the file; repeatable")
    pushing.add_argument("--public", action="store_true", help="make the kernel public (default: private)")
    pushing.add_argument("--pull", action="store_true", help="wait for the run, then pull its outputs")
    pushing.add_argument("--build-dir", type=Path, default=None, help="where builds go (default build/kaggle/)")

    main_parser = argparse.ArgumentParser(prog="python -m tools.kaggle", description=__doc__.splitlines()[0])
    commands = main_parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", parents=[pushing], help=cmd_push.__doc__)
    push.add_argument("--slug", help="kernel slug (default: notebook stem + parameters, e.g. train-alpha-0-1)")
    push.set_defaults(func=cmd_push)
    sweep = commands.add_parser("sweep", parents=[pushing], help=cmd_sweep.__doc__)
    sweep.add_argument("--alphas", nargs="+", required=True, help="LeakyReLU negative slopes, one kernel each")
    sweep.set_defaults(func=cmd_sweep)
    status = commands.add_parser("status", parents=[waiting], help=cmd_status.__doc__)
    status.add_argument("slug", help="SLUG or OWNER/SLUG")
    status.set_defaults(func=cmd_status)
    pulling = commands.add_parser("pull", help=cmd_pull.__doc__)
    pulling.add_argument("slug", help="SLUG or OWNER/SLUG")
    pulling.add_argument("--results-dir", type=Path, default=None, help="where <slug>/ goes (default results/)")
    pulling.set_defaults(func=cmd_pull)
    return main_parser


def main(argv: list[str] | None = None) -> int:
    """Command line: push / sweep / status / pull; errors are one line on stderr and a non-zero exit code."""
    args = parser().parse_args(argv)
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
