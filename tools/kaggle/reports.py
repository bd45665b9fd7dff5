"""The HTML report a pulled (or rehearsed) run folder ends with, <slug>.html: the notebook's own, or one built from
the files and the log the run left."""
from __future__ import annotations

import base64
import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tools.kaggle.logs import run_error, traceback_text
from utils import run_files
from utils.report import render_html
from utils.runtime import BUILD_RECORD, EXECUTED_NOTEBOOK

REPORT_SKIPPED_KEYS = ("environment", "confusion_matrix")  # in a built report's run record table


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

