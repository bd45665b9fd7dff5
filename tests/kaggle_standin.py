"""A stand-in Kaggle on 127.0.0.1 that runs what is pushed to it, modelled on what the real service does.

The Kaggle CLI (kaggle 2.2.5 / kagglesdk) is pointed at it through its endpoint table and speaks to it over HTTP as
it would to api.kaggle.com: POST /api/v1/kernels.KernelsApiService/<Method> with camelCase JSON bodies. Modelled:

* SaveKernel names a new kernel after its title, numbers versions (`versionNumber`, `ref` '/code/owner/slug'),
  refuses a push while 2 batch GPU sessions run ("Maximum batch GPU session count of 2 reached.") or when the
  weekly quota is spent ("Maximum weekly GPU quota of 30.00 hours reached."), both in the answer's `error` field.
* Each version runs for real: papermill executes the pushed notebook in a simulated /kaggle of its own, mounted as
  Kaggle does since 2026 (the dataset in the 140k layout at input/datasets/<owner>/<slug>/, kernel sources' outputs
  read-only at input/notebooks/<owner>/<slug>/; `layout = "legacy"`: both at input/<slug>/ as before), cwd working/,
  KAGGLE_KERNEL_RUN_TYPE set, no repository on the path, no credentials, writing /kaggle/working/__notebook__.ipynb
  while it runs; that file is deleted when the run ends, as on Kaggle.
* A version pushed with enableGpu gets "GPU T4 x2" (two logical CPU replicas, as the rehearsal stands for them)
  unless `gpu_granted` is False, as for an account that is not phone-verified: then it runs on the CPU. One pushed
  with machineShape "TpuV5E8" gets a TPU v5e-8 session: the rehearsal's TPU environment (8 JAX host devices standing
  for its chips) unless `tpu_granted` is False.
* Kernel sources past `max_kernel_sources` (None: no cap; Kaggle publishes none) come back in the push answer's
  `invalidKernelSources` and are not mounted, as Kaggle answers sources it cannot attach.
* GetAcceleratorQuotaStatistics answers `gpu_hours_used` of `gpu_hours_allowed` (30) this week and, a pool apart,
  `tpu_hours_used` of `tpu_hours_allowed` (20 here: a stand-in's number, not Kaggle's), as `kaggle quota` reads them.
* GetKernelSessionStatus answers per version (`versionLabel` 'v<N>'; none: the latest), 404 for an unknown kernel.
* ListKernelSessionOutput lists only what working/ holds (relative names, subfolders), `pageSize` at a time with a
  `nextPageToken`, plus the run log as Kaggle gives it: a JSON list of {stream_name, time, data} records.
* `unauthorized_calls` answers chosen calls with HTTP 401, as an expired `kaggle auth login` token gets.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tools.kaggle.rehearsal import input_mount, kernel_command, kernel_env, make_read_only
from utils.accelerator import MACHINE_SHAPES
from utils.runtime import EXECUTED_NOTEBOOK

SESSION_LIMIT_ERROR = "Maximum batch GPU session count of 2 reached."
QUOTA_ERROR = "Maximum weekly GPU quota of 30.00 hours reached."
DEFAULT_DATASET = "xhlulu/140k-real-and-fake-faces"
ACTIVE = ("QUEUED", "RUNNING")


class KaggleStandIn:
    """The service: kernels with numbered versions, each executed in its own simulated /kaggle."""

    def __init__(self, root: Path, dataset: Path | None = None, session_limit: int = 2):
        self.root, self.dataset, self.session_limit = Path(root), dataset, session_limit
        self.kernels: dict[str, list[dict]] = {}  # "owner/slug" -> versions, oldest first
        self.calls: list[dict] = []
        self.foreign_sessions = 0  # sessions the user runs elsewhere (e.g. in the browser)
        self.foreign_end_after_refusals: int | None = None  # those end once they caused this many refusals
        self.quota_pushes: int | None = None  # pushes left before the weekly quota is spent; None: unlimited
        self.unauthorized_calls: set[int] = set()  # indexes (in self.calls) answered with HTTP 401
        self.overrides: dict[str, tuple[int, dict]] = {}  # method -> (HTTP code, answer) given instead
        self.layout = "2026"  # how inputs are mounted: "2026" (datasets/, notebooks/) or "legacy" (<slug>/)
        self.gpu_granted = True  # False: the account may not use GPUs (not phone-verified); GPU kernels get a CPU
        self.tpu_granted = True  # False: TPU kernels get a CPU
        self.max_kernel_sources: int | None = None
        self.gpu_hours_used, self.gpu_hours_allowed = 0.0, 30.0
        self.tpu_hours_used, self.tpu_hours_allowed = 0.0, 20.0
        self.max_active = 0  # the most sessions seen running at once (ours and foreign)
        self.refusals: list[str] = []
        self.lock = threading.Lock()
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
                with stand_in.lock:
                    index = len(stand_in.calls)
                    stand_in.calls.append({"path": self.path, "method": method, "body": body,
                                           "auth": self.headers.get("Authorization", "")})
                if index in stand_in.unauthorized_calls:
                    code, answer = 401, {"code": 401, "message": "Unauthenticated: the access token expired"}
                else:
                    code, answer = stand_in.answer(method, body)
                stand_in.calls[index]["code"] = code
                self._send(code, json.dumps(answer).encode())

            def do_GET(self):
                path = stand_in.file_path(self.path.split("/files/", 1)[-1])
                if path is None:
                    self._send(404, b"not found", "text/plain")
                else:
                    self._send(200, path.read_bytes(), "application/octet-stream")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ------------------------------------------------------------------------------------------ the API

    def answer(self, method: str, body: dict) -> tuple[int, dict]:
        """Kaggle's answer to one call (or the test's override for that method)."""
        if method in self.overrides:
            return self.overrides[method]
        if method == "SaveKernel":
            return self.save_kernel(body)
        if method == "GetAcceleratorQuotaStatistics":
            return 200, {"quotaRefreshTime": "2026-12-05T00:00:00Z",
                         "gpuQuota": {"timeUsed": f"{self.gpu_hours_used * 3600:.3f}s",
                                      "totalTimeAllowed": f"{self.gpu_hours_allowed * 3600:.3f}s"},
                         "tpuQuota": {"timeUsed": f"{self.tpu_hours_used * 3600:.3f}s",
                                      "totalTimeAllowed": f"{self.tpu_hours_allowed * 3600:.3f}s"}}
        ref = f"{body.get('userName')}/{body.get('kernelSlug')}"
        version = self.version(ref, body.get("versionLabel"))
        if version is None:
            return 404, {"code": 404, "message": f"Kernel {ref} {body.get('versionLabel') or ''} not found"}
        if method == "GetKernelSessionStatus":
            failure = {"failureMessage": version["failure"]} if version["failure"] else {}
            return 200, {"status": version["state"], **failure}
        if method == "ListKernelSessionOutput":
            return 200, self.list_output(ref, version, body)
        return 404, {"code": 404, "message": f"no such method {method}"}

    def active_sessions(self) -> int:
        """Sessions running now: our kernels' queued or running versions and the foreign ones."""
        return self.foreign_sessions + sum(v["state"] in ACTIVE for vs in self.kernels.values() for v in vs)

    def save_kernel(self, body: dict) -> tuple[int, dict]:
        """Push: refuse at the session limit or quota, else a new version that starts running."""
        from slugify import slugify

        with self.lock:
            if self.active_sessions() >= self.session_limit:
                self.refusals.append(SESSION_LIMIT_ERROR)
                if self.foreign_end_after_refusals is not None and self.foreign_sessions:
                    self.foreign_end_after_refusals -= 1
                    if self.foreign_end_after_refusals <= 0:
                        self.foreign_sessions = 0
                return 200, {"error": SESSION_LIMIT_ERROR}
            if self.quota_pushes is not None and self.quota_pushes <= 0:
                self.refusals.append(QUOTA_ERROR)
                return 200, {"error": QUOTA_ERROR}
            if self.quota_pushes is not None:
                self.quota_pushes -= 1
            owner, asked = body["slug"].split("/")
            ref = f"{owner}/{asked}" if f"{owner}/{asked}" in self.kernels else f"{owner}/{slugify(body['newTitle'])}"
            versions = self.kernels.setdefault(ref, [])
            version = {"number": len(versions) + 1, "state": "QUEUED", "failure": None, "log": "", "body": body,
                       "sim": self.root / ref.replace("/", "--") / f"v{len(versions) + 1}"}
            versions.append(version)
            self.max_active = max(self.max_active, self.active_sessions())
        sources = body.get("kernelDataSources") or []
        refused = sources[self.max_kernel_sources:] if self.max_kernel_sources is not None else []
        version["sources"] = [source for source in sources if source not in refused]
        threading.Thread(target=self.run, args=(ref, version), daemon=True).start()
        return 200, {"ref": f"/code/{ref}", "url": f"{self.url}/code/{ref}", "versionNumber": version["number"],
                     **({"invalidKernelSources": refused} if refused else {})}

    def version(self, ref: str, label: str | None) -> dict | None:
        """A kernel's version by label ('v2'), the latest without one, None when unknown."""
        versions = self.kernels.get(ref, [])
        if not label:
            return versions[-1] if versions else None
        number = int(label.lstrip("v"))
        return versions[number - 1] if 0 < number <= len(versions) else None

    def list_output(self, ref: str, version: dict, body: dict) -> dict:
        """One page of a finished version's /kaggle/working files, and its log."""
        working = version["sim"] / "working"
        names = []
        if version["state"] not in ACTIVE and working.is_dir():
            names = sorted(str(p.relative_to(working)) for p in working.rglob("*") if p.is_file())
        start = int(body.get("pageToken") or 0)
        end = start + int(body.get("pageSize") or 20)
        files = [{"fileName": name, "url": f"{self.url}/files/{ref}/{version['number']}/{name}"}
                 for name in names[start:end]]
        return {"files": files, "log": version["log"], **({"nextPageToken": str(end)} if end < len(names) else {})}

    def file_path(self, name: str) -> Path | None:
        """The file a download URL names: owner/slug/version/relative path."""
        owner, slug, number, relative = name.split("/", 3)
        versions = self.kernels.get(f"{owner}/{slug}", [])
        if not number.isdigit() or not 0 < int(number) <= len(versions):
            return None
        path = versions[int(number) - 1]["sim"] / "working" / relative
        return path if path.is_file() else None

    # ------------------------------------------------------------------------------------------ a session

    def attach_sources(self, version: dict, input_dir: Path) -> None:
        """Dataset and kernel sources as Kaggle mounts them: read-only under input/ (the test's dataset stands for
        the first dataset source)."""
        if self.dataset is not None:
            source = (version["body"].get("datasetDataSources") or [DEFAULT_DATASET])[0]
            mount = input_dir / input_mount("dataset", source, self.layout)
            mount.parent.mkdir(parents=True, exist_ok=True)
            mount.symlink_to(Path(self.dataset).resolve(), target_is_directory=True)
        for source in version["sources"]:
            owner, slug, *number = source.split("/")
            done = [v for v in self.kernels.get(f"{owner}/{slug}", [])
                    if v["state"] == "COMPLETE" and (not number or v["number"] == int(number[0]))]
            if done:
                target = input_dir / input_mount("kernel", source, self.layout)
                shutil.copytree(done[-1]["sim"] / "working", target)
                make_read_only(target)

    def run(self, ref: str, version: dict) -> None:
        """Execute the pushed notebook with papermill in the version's own simulated /kaggle."""
        sim = version["sim"]
        input_dir, working = sim / "input", sim / "working"
        notebook = sim / "pushed.ipynb"
        input_dir.mkdir(parents=True)
        working.mkdir()
        notebook.write_text(version["body"]["text"])
        self.attach_sources(version, input_dir)
        # The kernel's folders and environment as Kaggle sets them up: the machine_shape decides (T4 x2 as two CPU
        # replicas, a TPU v5e-8 as 8 JAX host devices) when that accelerator is granted, else the CPU; internet as
        # pushed.
        version["accelerator"] = self.session_accelerator(version["body"])
        env = kernel_env(input_dir, working, version["accelerator"], internet=bool(version["body"].get("enableInternet")))
        version["state"] = "RUNNING"
        started, records = time.monotonic(), []
        with subprocess.Popen(kernel_command(notebook, working), cwd=working, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as process:
            out, err = process.communicate()
        for stream, text in (("stdout", out), ("stderr", err)):
            records += [{"stream_name": stream, "time": round(time.monotonic() - started, 3), "data": line}
                        for line in text.splitlines(keepends=True)]
        (working / EXECUTED_NOTEBOOK).unlink(missing_ok=True)  # exists only while the run goes
        version["log"] = json.dumps(records)
        if process.returncode:
            version["failure"] = "Your notebook tried to run a cell that raised an exception."
        version["state"] = "COMPLETE" if process.returncode == 0 else "ERROR"

    def session_accelerator(self, body: dict) -> str:
        """The accelerator a pushed version's session gets: its machineShape's (enableGpu alone: the T4s), if granted."""
        shape = body.get("machineShape") or (MACHINE_SHAPES["gpu"] if body.get("enableGpu") else None)
        asked = next((name for name, known in MACHINE_SHAPES.items() if known == shape), "cpu")
        granted = {"gpu": self.gpu_granted, "tpu": self.tpu_granted, "cpu": True}[asked]
        return asked if granted else "cpu"

    def add_version(self, ref: str, state: str, files: dict[str, str] | None = None, log: str = "") -> dict:
        """A version that ran before the test (e.g. an older one, or one cancelled in the browser)."""
        versions = self.kernels.setdefault(ref, [])
        version = {"number": len(versions) + 1, "state": state, "failure": None, "log": log, "body": {}, "sources": [],
                   "sim": self.root / ref.replace("/", "--") / f"v{len(versions) + 1}"}
        for name, text in (files or {}).items():
            (version["sim"] / "working" / name).parent.mkdir(parents=True, exist_ok=True)
            (version["sim"] / "working" / name).write_text(text)
        versions.append(version)
        return version

    def wait_idle(self, timeout: float = 300) -> None:
        """Block until no pushed version is queued or running (a test's clean-up)."""
        deadline = time.monotonic() + timeout
        while any(v["state"] in ACTIVE and v["body"] for vs in self.kernels.values() for v in vs) \
                and time.monotonic() < deadline:
            time.sleep(0.1)

    def method_calls(self, method: str) -> list[dict]:
        """The recorded calls of one API method."""
        return [c for c in self.calls if c["method"] == method]


def tiny_140k(root: Path, per_class: int = 6, image_size: int = 32) -> Path:
    """A few generated images per class in the Kaggle 140k layout (real_vs_fake/real-vs-fake/{train,valid,test})."""
    from utils import synthetic

    counts = {"train": per_class, "valid": max(2, per_class // 2), "test": max(2, per_class // 2)}
    return synthetic.generate_dataset(Path(root), counts, image_size=image_size)
