"""tools.kaggle: the build (metadata, parameters, embedded utils, no secrets) and the real CLI against a stand-in.

No internet and no Kaggle account: the CLI's endpoint table (kagglesdk.kaggle_env) is pointed at a small HTTP server
on 127.0.0.1 that records what the CLI sends and answers SaveKernel, GetKernelSessionStatus and
ListKernelSessionOutput the way Kaggle does.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest

from tools import kaggle as kg

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = "k3y-" + "9f8e7d6c5b4a39281706f5e4d3c2b1a0"  # a fake legacy key: must never leave the process
USER = "tester"
DATA_ERROR = ("no dataset attached under /kaggle/input: add xhlulu/140k-real-and-fake-faces to the notebook's inputs "
              "(kernel-metadata.json dataset_sources)")


def make_notebook(path: Path, with_parameters: bool = True) -> Path:
    """A tiny notebook with a `parameters` cell (alpha, output_dir) and a cell that imports utils."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell("alpha = 0.2\noutput_dir = 'results/run'")
    if with_parameters:
        params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import utils.runtime\nprint('alpha', alpha)")]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real Kaggle config is read or touched: temp HOME and config folder, no KAGGLE_* variables, no proxy."""
    for key in list(os.environ):
        if key.startswith("KAGGLE_") or key.lower() in ("http_proxy", "https_proxy", "all_proxy") or key == "VERBOSE":
            monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return tmp_path


@pytest.fixture
def creds(isolated, monkeypatch):
    """Legacy KAGGLE_USERNAME/KAGGLE_KEY credentials (they skip the CLI's token check)."""
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    return isolated


def cells_tagged(nb: dict, tag: str) -> list[str]:
    """Sources of a notebook's cells carrying a tag."""
    return ["".join(c["source"]) for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]


def payload_files(cell_source: str) -> dict[str, str]:
    """The files embedded in a generated utils cell."""
    encoded = re.search(r'b64decode\("""(.*?)"""\)', cell_source, re.S).group(1)
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(encoded))) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


# ---------------------------------------------------------------------------------------------- build


def test_rules_match_the_installed_cli(isolated):
    """Our copy of the CLI's push rules is the one kaggle 2.2.5 applies."""
    from kaggle.api import kaggle_api_extended as cli

    assert kg.VALID_LANGUAGES == tuple(cli.KaggleApi.valid_push_language_types)
    assert kg.VALID_KERNEL_TYPES == tuple(cli.KaggleApi.valid_push_kernel_types)
    assert kg.VALID_PINNING_TYPES == tuple(cli.KaggleApi.valid_push_pinning_types)
    assert set(kg.RETIRED_MACHINE_SHAPES) == set(cli._RETIRED_ACCELERATORS)


def test_variant_title_gives_the_slug():
    """Slug = notebook stem (+ params file) + parameters, and the title resolves to it."""
    title = kg.variant_title(Path("notebooks/train.ipynb"), None, [("alpha", "0.1")])
    assert kg.slugify(title) == "train-alpha-0-1"
    title = kg.variant_title(Path("train.ipynb"), "params/kaggle-t4.yaml", [("alpha", "0.01"), ("epochs", "3")])
    assert kg.slugify(title) == "train-kaggle-t4-alpha-0-01-epochs-3"


def test_build_folder(creds, tmp_path):
    """Metadata derived from the root file; parameters injected; utils carried and importable; no secret."""
    notebook = make_notebook(tmp_path / "src" / "train.ipynb")
    folder = kg.build_kernel(notebook, {"alpha": 0.1}, USER, "train alpha 0.1", build_root=tmp_path / "build")
    assert folder == tmp_path / "build" / "train-alpha-0-1"
    assert sorted(p.name for p in folder.iterdir()) == ["kernel-metadata.json", "train.ipynb"]

    meta = json.loads((folder / "kernel-metadata.json").read_text())
    root = json.loads((REPO_ROOT / "kernel-metadata.json").read_text())
    assert meta["id"] == "tester/train-alpha-0-1" and meta["title"] == "train alpha 0.1"
    assert meta["code_file"] == "train.ipynb" and meta["kernel_type"] == "notebook" and meta["language"] == "python"
    assert meta["machine_shape"] == "NvidiaTeslaT4" and meta["enable_gpu"] is True
    assert meta["enable_internet"] is False and meta["is_private"] is True
    assert meta["dataset_sources"] == root["dataset_sources"] == ["xhlulu/140k-real-and-fake-faces"]
    kg.validate_metadata(meta, folder)

    nb = json.loads((folder / "train.ipynb").read_text())
    assert nb["cells"][0]["metadata"]["tags"] == [kg.UTILS_CELL_TAG]
    injected = cells_tagged(nb, "injected-parameters")
    assert len(injected) == 1 and "alpha = 0.1" in injected[0]
    assert "alpha = 0.2" in cells_tagged(nb, "parameters")[0]  # defaults stay; the injected cell overrides them
    utils_cell = cells_tagged(nb, kg.UTILS_CELL_TAG)[0]
    code = re.sub(r'b64decode\("""(.*?)"""\)', "", utils_cell, flags=re.S)
    assert "pip install" not in code and not re.search(r"^\s*[!%]", code, re.M)  # Kaggle's TF/Keras as they are
    files = payload_files(utils_cell)
    assert {"utils/__init__.py", "utils/runtime.py", "utils/model.py"} <= set(files)
    assert not any(name.startswith("tools/") for name in files)  # the laptop commands stay on the laptop
    assert files["utils/runtime.py"] == (REPO_ROOT / "utils" / "runtime.py").read_text()

    # Run the generated cell in a fresh interpreter away from the repository: `utils` must come from the payload.
    script = utils_cell + "\nimport utils.runtime\nprint(json.dumps({'file': utils.runtime.__file__, " \
                          "'build': KAGGLE_BUILD, 'commit': os.environ['UTILS_GIT_COMMIT']}))\n"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KAGGLE_KERNEL_RUN_TYPE")}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["file"].startswith(str(REPO_ROOT)) and "kaggle-utils-" in result["file"]
    assert result["build"]["params"] == {"alpha": 0.1} and result["build"]["slug"] == "train-alpha-0-1"
    assert result["commit"] == result["build"]["commit"]

    # The key appears nowhere in the build, not even inside the embedded zip.
    for path in folder.rglob("*"):
        assert SECRET not in path.read_text()
    assert all(SECRET not in text for text in files.values())


def test_build_refuses_a_secret_in_utils(creds, tmp_path, monkeypatch):
    """A credential pasted into utils/ would be pushed inside the payload: the build stops instead."""
    leaky = tmp_path / "utils"
    leaky.mkdir()
    (leaky / "__init__.py").write_text("")
    (leaky / "oops.py").write_text(f"KEY = {SECRET!r}\n")
    monkeypatch.setattr(kg, "UTILS_DIR", leaky)
    monkeypatch.setattr(kg, "REPO_ROOT", tmp_path)
    notebook = make_notebook(tmp_path / "train.ipynb")
    with pytest.raises(kg.KaggleError, match="contains a Kaggle credential"):
        kg.build_kernel(notebook, {}, USER, "train leaky", build_root=tmp_path / "build")


def test_build_rejects_unknown_or_uninjectable_parameters(isolated, tmp_path):
    """A typo'd parameter would silently run the default on a GPU: refused before pushing."""
    notebook = make_notebook(tmp_path / "train.ipynb")
    with pytest.raises(kg.KaggleError, match=r"declares no parameter \['alfa'\]"):
        kg.build_kernel(notebook, {"alfa": 0.1}, USER, "train alfa 0.1", build_root=tmp_path / "build")
    bare = make_notebook(tmp_path / "bare.ipynb", with_parameters=False)
    with pytest.raises(kg.KaggleError, match="no cell tagged 'parameters'"):
        kg.build_kernel(bare, {"alpha": 0.1}, USER, "bare alpha 0.1", build_root=tmp_path / "build")


@pytest.mark.parametrize("change, message", [
    ({"id": "<username>/train-alpha-0-1"}, "not a Kaggle user name"),
    ({"id": "tester/train-alpha-0-1/3"}, "'owner/slug'"),
    ({"title": "tiny", "id": "tester/tiny"}, "5 to 50 characters"),
    ({"title": "a!!!b", "id": "tester/a-b"}, "id slug 'a-b' must be 5 to 50"),
    ({"kernel_sources": ["tester/tiny"]}, "at least 5 characters"),
    ({"title": "x" * 51, "id": "tester/" + "x" * 51}, "5 to 50 characters"),
    ({"title": "another title"}, "resolves to slug 'another-title'"),
    ({"language": "julia"}, "language must be one of"),
    ({"kernel_type": "app"}, "kernel_type must be one of"),
    ({"code_file": "missing.ipynb"}, "does not exist"),
    ({"dataset_sources": ["140k-real-and-fake-faces"]}, "owner/slug"),
    ({"enable_internet": None}, "enable_internet must be set explicitly"),
    ({"is_private": "yes"}, "is_private must be true or false"),
    ({"machine_shape": "NvidiaTeslaP100"}, "retired"),
    ({"docker_image_pinning_type": "newest"}, "docker_image_pinning_type"),
])
def test_validate_metadata_rejects(tmp_path, change, message):
    """Each rule of the CLI's kernels_push (and ours) gives one clear message naming the metadata file."""
    make_notebook(tmp_path / "train.ipynb")
    meta = kg.kernel_metadata(kg.load_root_metadata(), USER, "train alpha 0.1", "train.ipynb")
    kg.validate_metadata(meta, tmp_path)
    meta.update(change)
    if change.get("enable_internet", 0) is None:
        del meta["enable_internet"]
    with pytest.raises(kg.KaggleError, match=re.escape(message)) as info:
        kg.validate_metadata(meta, tmp_path)
    assert str(tmp_path / "kernel-metadata.json") in str(info.value)


def test_real_train_notebook_builds_if_present(creds, tmp_path):
    """notebooks/train.ipynb (written elsewhere) builds with alpha injected, when it exists and declares alpha."""
    notebook = REPO_ROOT / "notebooks" / "train.ipynb"
    if not notebook.is_file():
        pytest.skip("notebooks/train.ipynb not written yet")
    if "alpha" not in (kg.notebook_parameters(notebook) or {}):
        pytest.skip("notebooks/train.ipynb declares no alpha parameter")
    folder = kg.build_kernel(notebook, {"alpha": 0.1}, USER, "train alpha 0.1", build_root=tmp_path / "build")
    nb = json.loads((folder / "train.ipynb").read_text())
    assert "alpha = 0.1" in cells_tagged(nb, "injected-parameters")[0]


# ---------------------------------------------------------------------------------------------- stand-in Kaggle


class StandIn:
    """A tiny Kaggle on 127.0.0.1: records the CLI's calls and answers them from per-kernel scripts."""

    def __init__(self):
        self.calls: list[dict] = []
        self.statuses: dict[str, list[tuple[str, str | None]]] = {}
        self.push_answer: dict | None = None
        self.push_http: tuple[int, dict] | None = None
        self.logs: dict[str, str] = {}
        self.files: dict[str, bytes] = {}
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                method = self.path.rsplit("/", 1)[-1]
                stand_in.calls.append({"path": self.path, "method": method, "body": body,
                                       "auth": self.headers.get("Authorization", "")})
                code, answer = stand_in.answer(method, body)
                self._send(code, json.dumps(answer).encode())

            def do_GET(self):
                name = self.path.split("/files/", 1)[-1]
                if name not in stand_in.files:
                    self._send(404, b"not found", "text/plain")
                else:
                    self._send(200, stand_in.files[name], "application/octet-stream")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, method: str, body: dict) -> tuple[int, dict]:
        """Kaggle's answer to one call."""
        if method == "SaveKernel":
            if self.push_http:
                return self.push_http
            if self.push_answer:
                return 200, self.push_answer
            return 200, {"ref": f"/code/{body['slug']}", "url": f"{self.url}/code/{body['slug']}",
                         "versionNumber": 1}
        slug = f"{body.get('userName')}/{body.get('kernelSlug')}"
        if method == "GetKernelSessionStatus":
            script = self.statuses.setdefault(slug, [("COMPLETE", None)])
            state, message = script.pop(0) if len(script) > 1 else script[0]
            return 200, {"status": state, **({"failureMessage": message} if message else {})}
        if method == "ListKernelSessionOutput":
            files = [{"fileName": name, "url": f"{self.url}/files/{name}"} for name in self.files]
            return 200, {"files": files, "log": self.logs.get(slug, "")}
        return 404, {"code": 404, "message": f"no such method {method}"}

    def method_calls(self, method: str) -> list[dict]:
        """The recorded calls of one API method."""
        return [c for c in self.calls if c["method"] == method]


@pytest.fixture
def stand_in(creds, monkeypatch):
    """The stand-in, with the real CLI pointed at it (KAGGLE_API_ENVIRONMENT=LOCALHOST, endpoint table patched)."""
    from kagglesdk import kaggle_env

    server = StandIn()
    server.thread.start()
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setitem(kaggle_env._env_to_endpoint, kaggle_env.KaggleEnv.LOCAL, server.url)
    yield server
    server.server.shutdown()
    server.server.server_close()


def executed_copy(notebook_text: str, marker: str) -> bytes:
    """What Kaggle returns as __notebook__.ipynb: the pushed notebook with an output in its last cell."""
    nb = nbformat.reads(notebook_text, as_version=4)
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=marker + "\n")]
    return nbformat.writes(nb).encode()


def test_push_wait_pull_against_stand_in(stand_in, tmp_path, capsys):
    """`push notebooks/train.ipynb -p alpha 0.1 --wait --pull`: build, push, status, pull, HTML via the real CLI."""
    notebook = make_notebook(tmp_path / "notebooks" / "train.ipynb")
    build, results = tmp_path / "build" / "kaggle", tmp_path / "results"
    stand_in.statuses["tester/train-alpha-0-1"] = [("QUEUED", None), ("RUNNING", None), ("COMPLETE", None)]
    stand_in.files["results/run/metrics.json"] = b'{"val_auc": 0.97}'

    def serve_executed(method, body, original=stand_in.answer):
        # Kaggle's executed notebook is the pushed one with outputs: build it from what the CLI sent.
        if method == "SaveKernel":
            stand_in.files[kg.EXECUTED_NOTEBOOK] = executed_copy(body["text"], "val_auc 0.97 from the stand-in")
        return original(method, body)

    stand_in.answer = serve_executed
    code = kg.main(["push", str(notebook), "-p", "alpha", "0.1", "--wait", "--pull", "--poll", "0.01",
                    "--build-dir", str(build), "--results-dir", str(results)])
    out, err = capsys.readouterr()
    assert code == 0, err

    # What the CLI sent to SaveKernel.
    (push,) = stand_in.method_calls("SaveKernel")
    assert push["path"] == "/api/v1/kernels.KernelsApiService/SaveKernel"
    sent = push["body"]
    assert sent["slug"] == "tester/train-alpha-0-1" and sent["newTitle"] == "train alpha 0.1"
    assert sent["machineShape"] == "NvidiaTeslaT4" and sent["enableGpu"] is True
    assert sent["datasetDataSources"] == ["xhlulu/140k-real-and-fake-faces"]
    assert sent["isPrivate"] is True and sent["enableInternet"] is False
    assert sent["language"] == "python" and sent["kernelType"] == "notebook"
    pushed = json.loads(sent["text"])
    assert "alpha = 0.1" in cells_tagged(pushed, "injected-parameters")[0]
    assert "utils/data.py" in payload_files(cells_tagged(pushed, kg.UTILS_CELL_TAG)[0])
    assert base64.b64decode(push["auth"].split()[1]).decode() == f"{USER}:{SECRET}"  # legacy key, in the header only

    # Status polled until COMPLETE, then the outputs listed and downloaded.
    polls = stand_in.method_calls("GetKernelSessionStatus")
    assert len(polls) == 3 and polls[0]["body"] == {"userName": "tester", "kernelSlug": "train-alpha-0-1"}
    assert stand_in.method_calls("ListKernelSessionOutput")
    dest = results / "train-alpha-0-1"
    assert json.loads((dest / "results" / "run" / "metrics.json").read_text()) == {"val_auc": 0.97}
    assert (dest / kg.EXECUTED_NOTEBOOK).is_file()
    html = (dest / "train-alpha-0-1.html").read_text()
    assert "val_auc 0.97 from the stand-in" in html
    assert "QUEUED" in out and "RUNNING" in out and "COMPLETE" in out

    # The key was never printed, written into the build or pushed as content.
    assert SECRET not in out + err + sent["text"] + json.dumps({k: v for k, v in sent.items() if k != "text"})
    for path in build.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text()


def test_status_error_surfaces_the_notebook_exception(stand_in, capsys):
    """On ERROR, status prints Kaggle's failure message and the DataError from the run log; exit code 3."""
    ref = "tester/train-alpha-0-3"
    stand_in.statuses[ref] = [("RUNNING", None), ("ERROR", "Your notebook tried to run a cell that raised.")]
    records = [
        {"stream_name": "stdout", "time": 1.5, "data": "utils from commit abc123\n"},
        {"stream_name": "stderr", "time": 9.1, "data": "papermill.exceptions.PapermillExecutionError: \n"},
        {"stream_name": "stderr", "time": 9.2, "data": f"\x1b[0;31mDataError\x1b[0m: {DATA_ERROR}\n"},
    ]
    stand_in.logs[ref] = json.dumps(records)
    code = kg.main(["status", "train-alpha-0-3", "--wait", "--poll", "0.01"])
    out, err = capsys.readouterr()
    assert code == kg.EXIT_RUN_FAILED
    assert "Your notebook tried to run a cell that raised." in err
    assert f"DataError: {DATA_ERROR}" in err
    assert "Traceback" not in out + err


def test_status_cancelled_and_running(stand_in, capsys):
    """CANCEL_* exits non-zero; a running kernel without --wait just reports its state."""
    stand_in.statuses["tester/gone-run"] = [("CANCEL_ACKNOWLEDGED", None)]
    stand_in.statuses["tester/busy-run"] = [("RUNNING", None)]
    assert kg.main(["status", "gone-run"]) == kg.EXIT_CANCELLED
    assert kg.main(["status", "tester/busy-run"]) == 0
    out, err = capsys.readouterr()
    assert "cancelled" in err and "tester/busy-run: RUNNING" in out


@pytest.mark.parametrize("answer, shown", [
    ((200, {"error": "Maximum weekly GPU quota of 30 hours reached"}), "Maximum weekly GPU quota of 30 hours reached"),
    ((403, {"code": 403, "message": "Permission 'kernels.create' was denied"}), "HTTP 403: Permission"),
])
def test_push_refused_shows_what_the_server_said(stand_in, tmp_path, capsys, answer, shown):
    """A refused push stops with exit code 1 and the server's words, no traceback."""
    stand_in.push_http = answer
    notebook = make_notebook(tmp_path / "train.ipynb")
    code = kg.main(["push", str(notebook), "-p", "alpha", "0.1", "--build-dir", str(tmp_path / "build")])
    out, err = capsys.readouterr()
    assert code == kg.EXIT_ERROR
    assert shown in err and "tester/train-alpha-0-1" in err and "Traceback" not in out + err


def test_sweep_pushes_one_kernel_per_alpha(stand_in, tmp_path, capsys):
    """sweep --alphas: one slug and one injected alpha per value."""
    notebook = make_notebook(tmp_path / "train.ipynb")
    code = kg.main(["sweep", str(notebook), "--alphas", "0", "0.01", "0.1", "--build-dir", str(tmp_path / "b")])
    assert code == 0, capsys.readouterr().err
    pushes = [c["body"] for c in stand_in.method_calls("SaveKernel")]
    assert [p["slug"] for p in pushes] == ["tester/train-alpha-0", "tester/train-alpha-0-01", "tester/train-alpha-0-1"]
    injected = [cells_tagged(json.loads(p["text"]), "injected-parameters")[0] for p in pushes]
    assert ["alpha = 0.0" in injected[0], "alpha = 0.01" in injected[1], "alpha = 0.1" in injected[2]] == [True] * 3


# ---------------------------------------------------------------------------------------------- set-up errors


def test_push_without_credentials_explains_the_token(isolated, tmp_path):
    """No token anywhere: `python -m tools.kaggle push` stops with the set-up message, builds and sends nothing."""
    notebook = make_notebook(tmp_path / "train.ipynb")
    build = tmp_path / "build"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env["KAGGLE_CONFIG_DIR"] = os.environ["KAGGLE_CONFIG_DIR"]  # empty temp folder
    done = subprocess.run([sys.executable, "-m", "tools.kaggle", "push", str(notebook), "-p", "alpha", "0.1",
                           "--build-dir", str(build)], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == kg.EXIT_ERROR
    assert "no Kaggle credentials found" in done.stderr and "Create New Token" in done.stderr
    assert "kaggle.json" in done.stderr and "chmod 600" in done.stderr and "KAGGLE_API_TOKEN" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not build.exists()


def test_missing_cli_is_one_message(creds, tmp_path, monkeypatch, capsys):
    """Without the kaggle package: exit code 1 and how to install it."""
    monkeypatch.setitem(sys.modules, "kaggle", None)  # makes `import kaggle` fail
    notebook = make_notebook(tmp_path / "train.ipynb")
    assert kg.main(["push", str(notebook), "--build-dir", str(tmp_path / "build")]) == kg.EXIT_ERROR
    err = capsys.readouterr().err
    assert "Kaggle CLI" in err and "pip install" in err and "Traceback" not in err


def test_run_error_reads_plain_logs():
    """The notebook's exception is found in a plain-text log too, skipping papermill's wrapper."""
    log = ("Traceback (most recent call last):\n  File x\npapermill.exceptions.PapermillExecutionError: \n"
           f"utils.data.DataError: {DATA_ERROR}\n")
    assert kg.run_error(log) == f"DataError: {DATA_ERROR}"
    assert kg.run_error("all good\n") is None


def test_wait_backs_off_exponentially(monkeypatch):
    """Status polls double their interval up to --poll-max and stop at the first final state."""
    states = iter(["QUEUED", "RUNNING", "RUNNING", "RUNNING", "RUNNING", "COMPLETE"])
    monkeypatch.setattr(kg, "kernel_status", lambda api, ref: (next(states), None))
    delays: list[float] = []
    assert kg.wait_for(None, "tester/train-alpha-0-1", poll=1, poll_max=4, sleep=delays.append) == ("COMPLETE", None)
    assert delays == [1, 2, 4, 4, 4]
