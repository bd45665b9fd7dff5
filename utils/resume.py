"""Resume: claim a run folder, and continue the run an attached earlier Kaggle version left in the same folder."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from utils import run_files
from utils.parameters import PARAMETER_DEFAULTS
from utils.runtime import write_json

# Parameters that may change between a run and its continuation in the same output folder.
RESUMABLE_CHANGES = ("epochs", "early_stopping", "output_dir", "time_budget_hours", "allow_replica_change")


class ResumeNotFoundError(FileNotFoundError):
    """A push asked to continue a run (--resume-from) whose folder is in none of the attached outputs."""


def _working_relative(output_dir: str | os.PathLike) -> Path | None:
    """The run folder relative to the working folder (where an attached output holds it too); None outside it."""
    from utils.runtime import working_root

    try:
        relative = Path(output_dir).resolve().relative_to(working_root().resolve())
    except ValueError:
        return None  # an absolute output_dir outside the working folder is not returned by Kaggle either
    return relative if relative.parts else None


def attached_run(output_dir: str | os.PathLike) -> Path | None:
    """The same run folder in an attached earlier kernel's output (read-only under the input folder), if any.

    A pushed version starts on a fresh machine; `push --resume-from` attaches the previous version's output
    (notebooks/<owner>/<slug>/ since 2026, <slug>/ before: runtime.attached_sources), where the run folder sits at
    the same path relative to the working folder. A folder with a resume backup is preferred, then the newest.
    """
    from utils.runtime import attached_sources, on_kaggle

    relative = _working_relative(output_dir) if on_kaggle() else None
    if relative is None:
        return None
    found = [source / relative for source in attached_sources() if (source / relative / run_files.PARAMS).is_file()]
    found.sort(key=lambda folder: ((folder / run_files.BACKUP).is_dir(), (folder / run_files.PARAMS).stat().st_mtime))
    return found[-1] if found else None


def check_resume_attached(output_dir: str | os.PathLike) -> None:
    """Raise ResumeNotFoundError when the push asked to resume (the build record's resume_from) and no run was attached.

    Called before any data is scanned, so a resume that cannot happen costs seconds, not a session trained afresh.
    """
    from utils.runtime import NOTEBOOKS_MOUNT, build_record, describe_attached, input_root, parse_kernel_ref

    ref = (build_record() or {}).get("resume_from")
    if not ref:
        return
    relative = _working_relative(output_dir)
    if relative is None:
        raise ResumeNotFoundError(f"this kernel was pushed with --resume-from {ref}, but output_dir {output_dir} lies "
                                  "outside the working folder, which is all Kaggle returns and attaches: use a relative "
                                  "output_dir (e.g. 'train') in both versions")
    owner, slug = parse_kernel_ref(ref)
    raise ResumeNotFoundError(
        f"this kernel was pushed with --resume-from {ref}, but no attached output holds its run folder {relative}/ "
        f"(with params.json): looked for {NOTEBOOKS_MOUNT}/{owner or '<owner>'}/{slug}/[versions/<N>/]{relative}/ "
        f"and {slug}/{relative}/ under {input_root()}. Stopped before any data was scanned. "
        f"{describe_attached()}\nCheck that {ref} ran with the same output_dir and saved its output "
        f"(python -m tools.kaggle pull {ref} shows it), or push without --resume-from to start afresh.")


def _holds_run(output_dir: Path) -> bool:
    """Whether the folder holds a run of its own to continue or reuse (a resume backup or a best checkpoint)."""
    return (output_dir / run_files.BACKUP).exists() or (output_dir / run_files.MODEL).exists()


def copy_attached_run(source: Path, output_dir: Path) -> int:
    """Copy an attached run folder's files into the run folder (writable copies: the source is read-only)."""
    copied = 0
    for path in sorted(source.rglob("*")):
        if path.is_file():
            target = output_dir / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)  # no copystat: a read-only mode would follow the file
            copied += 1
    return copied


def claim_output_dir(output_dir: str | os.PathLike, params: dict[str, Any]) -> Path:
    """Create the run folder; refuse one holding a run with other parameters rather than overwrite its results.

    On Kaggle, an empty run folder is first filled from the same folder of an attached earlier version's output,
    so training continues from its backup across sessions; a push that asked to resume and finds no such folder
    stops here (check_resume_attached).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not _holds_run(output_dir):
        source = attached_run(output_dir)
        if source is None:
            check_resume_attached(output_dir)
        else:
            count = copy_attached_run(source, output_dir)
            print(f"continuing the run attached at {source} ({count} files copied into {output_dir})", flush=True)
    params_file = output_dir / run_files.PARAMS
    if params_file.is_file() and _holds_run(output_dir):
        previous = json.loads(params_file.read_text())
        # A parameter added since that run was recorded ran at its default.
        changed = {k: (previous.get(k, PARAMETER_DEFAULTS.get(k)), v) for k, v in params.items()
                   if k not in RESUMABLE_CHANGES and previous.get(k, PARAMETER_DEFAULTS.get(k)) != v}
        if changed:
            diff = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(f"output_dir {output_dir} holds a run with other parameters ({diff}); "
                             "choose another output_dir or delete that folder")
    write_json(params_file, params)
    return output_dir
