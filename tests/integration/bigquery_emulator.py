"""Start, kill and restart the local BigQuery emulator (PyPI `local-bigquery` 0.4.0) for tests.

It runs on Python 3.13 in its own venv, `.venv-bq/` (scripts/install-bigquery-emulator builds it
with duckdb 1.5.5 and the icu/ducklake/spatial extensions imported into `.venv-bq/home`, which
is the emulator's HOME here: offline it cannot download extensions). It is our direct child in
its own process group, dies with the test process, and logs to a file, never to a pipe.
`kill()` is a SIGKILL and `restart()` starts it again on the same ports and data directory,
as a crashed BigQuery front end would come back.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = REPO_ROOT / ".venv-bq"
EXECUTABLE = VENV / "bin" / "local-bigquery"
READY_TIMEOUT_SECONDS = 60.0
PROJECT = "lookout-test"
_PR_SET_PDEATHSIG = 1


class EmulatorUnavailable(RuntimeError):
    """The emulator's venv is missing: the only reason a test may skip (never with CI=true)."""


class EmulatorFailed(RuntimeError):
    """The emulator is installed but did not come up: always a test failure."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL the emulator when the test process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class BigQueryEmulator:
    """One emulator on 127.0.0.1:`port` (REST) and `grpc_port`, its data under `data_dir`."""

    def __init__(self, work_dir: Path, project: str = PROJECT) -> None:
        if not EXECUTABLE.is_file():
            msg = f"{EXECUTABLE} is missing: run scripts/install-bigquery-emulator"
            raise EmulatorUnavailable(msg)
        self.project = project
        self.port = free_port()
        self.grpc_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.data_dir = work_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = work_dir / "emulator.log"
        self._process: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)

    def start(self) -> None:
        command = [
            str(EXECUTABLE),
            "serve",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--grpc-port={self.grpc_port}",
            f"--project={self.project}",
            f"--data-dir={self.data_dir}",
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env={**os.environ, "HOME": str(VENV / "home")},
            )
        self.wait_ready()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout_seconds: float = READY_TIMEOUT_SECONDS) -> None:
        """Block until the REST API lists the project's datasets; raise with the log tail."""
        assert self._process is not None
        deadline = time.monotonic() + timeout_seconds
        url = f"{self.endpoint}/bigquery/v2/projects/{self.project}/datasets"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                msg = (
                    f"BigQuery emulator exited with {self._process.returncode} before it was "
                    f"ready; log {self.log_path}:\n{self.log_tail()}"
                )
                raise EmulatorFailed(msg)
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(url, timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        msg = f"BigQuery emulator not ready in {timeout_seconds} s:\n{self.log_tail()}"
        raise EmulatorFailed(msg)

    def kill(self) -> None:
        """SIGKILL, as a crash would; the data directory stays."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=30)
        self._process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            self._process = None
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None

    def client(self) -> Any:
        """A google-cloud-bigquery client for this emulator (anonymous credentials)."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            client_options=ClientOptions(api_endpoint=self.endpoint),
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
