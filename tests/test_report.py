"""utils.report: the report a kernel renders of itself before it ends, with nbconvert or, failing that, plainly."""
from __future__ import annotations

import base64
import io

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from utils import report
from utils.runtime import EXECUTED_NOTEBOOK


def png_bytes() -> bytes:
    """A small PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A simulated Kaggle kernel whose executed notebook (prose, a table, a warning, a figure) is being written."""
    working = tmp_path / "working"
    working.mkdir()
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setenv("KAGGLE_WORKING_ROOT", str(working))
    figure = base64.b64encode(png_bytes()).decode("ascii")
    nb = new_notebook(cells=[
        new_markdown_cell("# Audit\n\nWhat the *data* holds."),
        new_code_cell("print('counts')", outputs=[new_output("stream", name="stdout", text="WARNING: 3 duplicates\n")]),
        new_code_cell("table", outputs=[new_output("execute_result", data={"text/html": "<table><tr><td>640</td></tr>"
                                                                                   "</table>", "text/plain": "640"})]),
        new_code_cell("plot()", outputs=[new_output("display_data", data={"image/png": figure})]),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, str(working / EXECUTED_NOTEBOOK))
    return working


def test_render_in_kernel_with_nbconvert(kernel, capsys):
    """The executed notebook is copied beside the outputs and rendered there; the printed line names nbconvert."""
    import nbconvert

    out = kernel / "explore"
    path = report.render_in_kernel(out, "explore")
    assert path == out / "explore.html" and (out / "explore.ipynb").is_file()
    page = path.read_text()
    assert report.count_images(page) == 1 and "640" in page and "WARNING: 3 duplicates" in page
    assert "print(&#39;counts&#39;)" not in page and "print('counts')" not in page  # code hidden
    assert f"(nbconvert {nbconvert.__version__})" in capsys.readouterr().out


def test_render_in_kernel_falls_back_when_nbconvert_fails(kernel, capsys, monkeypatch):
    """A renderer that breaks still leaves a report with the same prose, outputs and figures, and says so."""
    def broken(*args, **kwargs):
        raise TypeError("template 'lab' needs a newer jinja2")

    monkeypatch.setattr(report, "render_html", broken)
    path = report.render_in_kernel(kernel / "analysis", "analyze")
    page = path.read_text()
    assert report.count_images(page) == 1 and "<td>640</td>" in page and "WARNING: 3 duplicates" in page
    assert "What the *data* holds." in page and "plot()" not in page
    said = capsys.readouterr().out
    assert "plain fallback, nbconvert failed: TypeError: template 'lab' needs a newer jinja2" in said


def test_render_in_kernel_does_nothing_off_kaggle(tmp_path, monkeypatch):
    """Off Kaggle the notebook runner renders the report: nothing is written here."""
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    assert report.render_in_kernel(tmp_path / "out", "train") is None
    assert not (tmp_path / "out").exists()
