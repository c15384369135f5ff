"""A JupyterLab server of the browser tests' own, and the lines of their closing summary.

The server runs on 127.0.0.1 on a free port with its own token, on a copy of ``notebooks/`` (the
committed notebooks are never touched), with its own settings, workspaces and Jupyter folders,
and a ``python3`` kernel that is this interpreter: the package's venv.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import Request, urlopen

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
# The user settings of the test's JupyterLab: no question about fetching Jupyter news; each
# cell's execution times saved in its metadata (the summary names the slowest cell).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false"},
    "@jupyterlab/notebook-extension/tracker": {"recordTiming": True},
}

REPORT: list[str] = []


def report(line: str) -> None:
    """One line for the summary at the end of the run."""
    REPORT.append(line)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab server and its REST API."""

    def __init__(self, root: Path, url: str, token: str, process: subprocess.Popen[bytes]):
        self.root, self.url, self.token, self.process = root, url, token, process

    def api(self, path: str, method: str = "GET") -> Any:
        """``method`` on ``/api/<path>``; the decoded JSON answer (None when empty)."""
        request = Request(
            f"{self.url}/api/{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urlopen(request, timeout=30) as answer:
            body = answer.read()
        return json.loads(body) if body else None

    def kernel_of(self, notebook: str) -> dict[str, Any] | None:
        """The kernel model (``execution_state``, ``last_activity``, ...) of an open notebook."""
        for session in self.api("sessions"):
            if session["path"] == notebook and session.get("kernel"):
                return self.api(f"kernels/{session['kernel']['id']}")
        return None

    def shut_down(self, notebook: str) -> None:
        """End the notebook's session and its kernel."""
        for session in self.api("sessions"):
            if session["path"] == notebook:
                self.api(f"sessions/{session['id']}", method="DELETE")


def start_lab(folder: Path) -> Lab:
    """Start JupyterLab on a copy of ``notebooks/`` in ``folder``; return when it answers."""
    root = folder / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    data = folder / "jupyter-data"
    kernel = data / "kernels" / "python3"
    kernel.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    (kernel / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    settings = folder / "settings"
    for plugin, values in LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values), encoding="utf-8")
    env = {
        **os.environ,
        "JUPYTER_DATA_DIR": str(data),
        "JUPYTER_CONFIG_DIR": str(folder / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(folder / "jupyter-runtime"),
    }
    for name in ("JUPYTER_PATH", "MNISTNN_PROGRESS"):  # other kernels; a learner sees bars
        env.pop(name, None)
    port, token = free_port(), secrets.token_hex(24)
    log = (folder / "jupyterlab.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={folder / 'workspaces'}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder,
    )  # fmt: skip
    lab = Lab(root, f"http://127.0.0.1:{port}", token, process)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab stopped at start; see {folder / 'jupyterlab.log'}")
        try:
            lab.api("status")
            return lab
        except (URLError, ConnectionError):
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"JupyterLab did not answer in 120 s; see {folder / 'jupyterlab.log'}")
