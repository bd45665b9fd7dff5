"""The installed Kaggle CLI as this tool uses it: credentials, loading and version check, an authenticated connection,
and how a failure ends (KaggleError and the exit codes)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

EXIT_ERROR = 1  # setup, build, push or network problem
EXIT_RUN_FAILED = 3  # the kernel ran and ended in ERROR
EXIT_CANCELLED = 4
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
    except request_errors() as exc:
        raise KaggleError(f"cannot reach Kaggle to check the credentials from {source}: {exc}") from None
    for line in printed.getvalue().splitlines():  # e.g. the CLI's "kaggle.json is readable by other users"
        print(line, file=sys.stderr)
    user = api.config_values.get(api.CONFIG_NAME_USER)
    if not user:
        raise KaggleError(credentials_help(f"the Kaggle credentials from {source} name no user"))
    return api, str(user)


def request_errors() -> tuple[type[BaseException], ...]:
    """The exception types of the HTTP library the CLI uses."""
    import requests

    return (requests.RequestException,)

