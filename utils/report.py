"""Reports: an executed notebook rendered to a standalone HTML page that reads as a report."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from utils.runtime import write_atomic

# The report shows prose, tables and figures; the code stays in the executed .ipynb beside it (and in notebooks/),
# so a reader is not made to scroll through it. The parameters in force are printed by the notebooks themselves.
HIDE_CODE = True


def render_html(ipynb: str | os.PathLike, html: str | os.PathLike | None = None, hide_code: bool = HIDE_CODE) -> Path:
    """Render an executed notebook to a standalone HTML report beside it (or at `html`), code cells hidden."""
    import nbformat
    from nbconvert import HTMLExporter

    ipynb = Path(ipynb)
    html = Path(html) if html else ipynb.with_suffix(".html")
    exporter = HTMLExporter(exclude_input=hide_code, exclude_input_prompt=hide_code, exclude_output_prompt=hide_code)
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    return write_atomic(html, body)


def count_images(html_text: str) -> int:
    """Inline PNG figures in a rendered report (nbconvert's own CSS icons are data: URLs, not <img> tags)."""
    return len(re.findall(r'<img\b[^>]*\bsrc="data:image/png;base64,', html_text))


def parameter_table(params: Mapping[str, Any]) -> Any:
    """The parameters in force as a one-column table, for the top of a report (whose code cells are hidden)."""
    import pandas as pd

    return pd.DataFrame({"value": {name: repr(value) if isinstance(value, str) else str(value)
                                   for name, value in params.items()}}).rename_axis("parameter")
