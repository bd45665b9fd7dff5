"""Reports: an executed notebook rendered to a standalone HTML page that reads as a report."""
from __future__ import annotations

import base64
import html as html_escape
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

from utils.notebook_start import executed_notebook, report_hint
from utils.runtime import on_kaggle, write_atomic

# The report shows prose, tables and figures; the code stays in the executed .ipynb beside it (and in notebooks/),
# so a reader is not made to scroll through it. The parameters in force are printed by the notebooks themselves.
HIDE_CODE = True
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # terminal colours in tracebacks


def render_html(ipynb: str | os.PathLike, html: str | os.PathLike | None = None, hide_code: bool = HIDE_CODE) -> Path:
    """Render an executed notebook to a standalone HTML report beside it (or at `html`), code cells hidden."""
    import nbformat
    from nbconvert import HTMLExporter

    ipynb = Path(ipynb)
    html = Path(html) if html else ipynb.with_suffix(".html")
    exporter = HTMLExporter(exclude_input=hide_code, exclude_input_prompt=hide_code, exclude_output_prompt=hide_code)
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    return write_atomic(html, body)


def render_in_kernel(out: str | os.PathLike, stem: str) -> Path | None:
    """This run's executed notebook copied into `out` as <stem>.ipynb and rendered beside it; None when there is none.

    Called from a notebook's last cell, so the report is in the run folder however the notebook was run: Kaggle keeps
    the executed notebook only while the run goes (its output listing never holds it), and the papermill command
    leaves only its OUTPUT_PATH (notebook_start.executed_notebook finds both). The copy holds every cell before this
    one. The renderer is the image's nbconvert; should it fail on what we ask of it, a plain report of the same
    outputs is written instead, and the printed line says which ran. In Jupyter it prints how to get the report.
    """
    executed = executed_notebook()
    if executed is None:
        if not on_kaggle():
            print(report_hint(stem), flush=True)
        return None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notebook = out / f"{stem}.ipynb"
    if executed.resolve() != notebook.resolve():
        shutil.copyfile(executed, notebook)
    target = out / f"{stem}.html"
    try:
        import nbconvert

        path, how = render_html(notebook, target), f"nbconvert {nbconvert.__version__}"
    except Exception as exc:  # noqa: BLE001 -- whatever breaks in the renderer, the run's report must come back
        path, how = render_plain_html(notebook, target), f"plain fallback, nbconvert failed: {type(exc).__name__}: {exc}"
    print(f"report: {path} ({how})", flush=True)
    return path


def render_plain_html(ipynb: str | os.PathLike, html: str | os.PathLike) -> Path:
    """A dependency-free HTML report of an executed notebook: markdown as text, outputs (text, HTML, PNG) in order."""
    import json

    cells = json.loads(Path(ipynb).read_text(encoding="utf-8")).get("cells", [])
    parts = []
    for cell in cells:
        source = "".join(cell.get("source", []))
        if cell.get("cell_type") == "markdown":
            parts.append(f"<pre style='white-space: pre-wrap'>{html_escape.escape(source)}</pre>")
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                png = "".join(data["image/png"]).replace("\n", "")
                base64.b64decode(png, validate=True)  # a broken figure fails here, not in the reader's browser
                parts.append(f'<img src="data:image/png;base64,{png}">')
            elif "text/html" in data:
                parts.append("".join(data["text/html"]))
            else:
                text = "".join(output.get("text", data.get("text/plain", "")))
                text = text or "\n".join(output.get("traceback", []))
                if text:
                    parts.append(f"<pre>{html_escape.escape(ANSI_COLOUR.sub('', text))}</pre>")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html_escape.escape(Path(ipynb).stem)
            + "</title></head><body>" + "\n".join(parts) + "</body></html>\n")
    return write_atomic(html, page)


def count_images(html_text: str) -> int:
    """Inline PNG figures in a rendered report (nbconvert's own CSS icons are data: URLs, not <img> tags)."""
    return len(re.findall(r'<img\b[^>]*\bsrc="data:image/png;base64,', html_text))


def parameter_table(params: Mapping[str, Any]) -> Any:
    """The parameters in force as a one-column table, for the top of a report (whose code cells are hidden)."""
    import pandas as pd

    return pd.DataFrame({"value": {name: repr(value) if isinstance(value, str) else str(value)
                                   for name, value in params.items()}}).rename_axis("parameter")
