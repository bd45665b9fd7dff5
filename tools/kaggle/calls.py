"""Calls to Kaggle: push a built folder, read a version's status (and wait for it to end), pull its outputs.

The CLI is driven through its Python API in-process (`KaggleApi.kernels_push/kernels_status/kernels_output`), so
its own validation, authentication and HTTP code run unchanged and we read structured answers instead of its prints.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tools.kaggle.build import METADATA_FILE, SLUG_RE
from tools.kaggle.cli import EXIT_CANCELLED, EXIT_RUN_FAILED, KaggleError, credentials_help, request_errors
from tools.kaggle.logs import run_error
from tools.kaggle.reports import finish_report
from utils.runtime import REPO_ROOT

RESULTS_ROOT = REPO_ROOT / "results"
OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
RUNNING_STATES = ("QUEUED", "RUNNING", "NEW_SCRIPT")
CANCEL_STATES = ("CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")
POLL_FIRST, POLL_MAX = 30.0, 600.0  # seconds between status polls: doubling from the first up to the max
WAIT_TIMEOUT = 13 * 3600.0  # Kaggle stops GPU sessions after 12 h
MAX_POLL_FAILURES = 5  # consecutive network failures tolerated while waiting


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
        except (ValueError, *request_errors()) as exc:
            if reauth and attempt == 1 and _denied(exc):
                print(f"{action}: Kaggle refused the credentials (HTTP 401/403); re-authenticating once",
                      file=sys.stderr, flush=True)
                reauthenticate(api)
                continue
            if isinstance(exc, request_errors()):
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


def _sent(exc: BaseException) -> bool:
    """Whether an error of the CLI's kernels_push came from its HTTP client (a request was made), not from the checks
    of the metadata and notebook it makes before sending anything (kaggle 2.2.5: kaggle_api_extended.py:7165-7280,
    then one upload at :7284)."""
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_globals.get("__name__") == "kagglesdk.kaggle_http_client":
            return True
        frame = frame.tb_next
    return False


def push_folder(api: Any, folder: Path) -> str:
    """`kaggle kernels push -p folder` through the CLI's API; the pushed version as OWNER/SLUG/VERSION.

    Status and pull then follow that version, under the name Kaggle gave the kernel, not whatever runs latest.
    """
    meta_file = Path(folder) / METADATA_FILE
    meta = json.loads(meta_file.read_text())
    ref = meta["id"]

    def push() -> Any:
        try:
            return api.kernels_push(str(folder))
        except (ValueError, TypeError) as exc:
            if _sent(exc):
                raise
            raise KaggleError(f"{meta_file}: the Kaggle CLI refused it before sending anything, so nothing was "
                              f"pushed: {exc}") from None

    response = api_call(api, f"push of {ref} failed", push)
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

