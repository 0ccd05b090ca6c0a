"""Start and stop the real Cloud Pub/Sub emulator for tests and benchmarks.

Why a helper of our own instead of `gcloud beta emulators pubsub start`:
- the emulator 0.8.20 jar throws `NoSuchMethodError` on `io.grpc.InternalStatus` when a
  streaming-pull stream closes, after which that subscription swallows every later message.
  We compile a one-class fix (`emulator_patch/InternalStatus.java`) with `javac --release 8`
  against the jar and put it first on the classpath; the build is cached under `build/`, keyed
  by the jar's and the patch's hashes, so only the first run pays for javac;
- we run `java` ourselves (not the wrapper script) so the JVM is our direct child: it gets its
  own process group, is killed when this process dies (PR_SET_PDEATHSIG) or exits (atexit),
  and its output goes to a log file, never to an unread pipe that would freeze it when full.

Not patched (tests avoid it instead): on a subscription with a retry policy the emulator stops
redelivering expired messages once some have expired twice (its bytecode suggests why: the
redelivery timer can schedule one ack id twice, and the second nack then fails and ends the
timer). Tests that kill workers create subscriptions with `lookout pubsub init
--immediate-redelivery` (no retry policy, Pub/Sub's own default).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PATCH_SOURCE = Path(__file__).resolve().parent / "emulator_patch" / "InternalStatus.java"
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "pubsub-emulator-patch"
MAIN_CLASS = "com.google.cloud.pubsub.testing.v1.Main"
#: the JVM's heap: enough for the suite; a benchmark of a long steady workload asks for more
#: (the emulator keeps every message it holds on the heap: 5,000 100-record messages ran it out)
HEAP = "384m"
READY_TIMEOUT_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


class EmulatorUnavailable(RuntimeError):
    """java, javac, gcloud or the emulator jar is missing: the only reason a test may skip."""


class EmulatorFailed(RuntimeError):
    """The tools are there but the emulator did not come up: always a test failure."""


@dataclass(frozen=True)
class EmulatorTools:
    """Where the pieces needed to run the patched emulator live on this machine."""

    java: str
    javac: str
    jar: Path


def find_tools() -> EmulatorTools:
    """Locate java, javac and the emulator jar below the Cloud SDK root."""
    missing = [tool for tool in ("java", "javac", "gcloud") if shutil.which(tool) is None]
    if missing:
        raise EmulatorUnavailable(
            f"missing {', '.join(missing)} on PATH: install Java 17 and the Google Cloud CLI "
            "with the Pub/Sub emulator (see scripts/install-test-tools)"
        )
    try:
        sdk_root = subprocess.run(
            ["gcloud", "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        raise EmulatorUnavailable(f"`gcloud info` failed, cannot find the SDK root: {e}") from e
    jars = sorted((Path(sdk_root) / "platform" / "pubsub-emulator" / "lib").glob("*-all.jar"))
    if not jars:
        raise EmulatorUnavailable(
            f"no Pub/Sub emulator jar under {sdk_root}/platform/pubsub-emulator/lib: "
            "run `gcloud components install pubsub-emulator` (or the Debian package)"
        )
    return EmulatorTools(
        java=str(shutil.which("java")), javac=str(shutil.which("javac")), jar=jars[-1]
    )


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_patch(tools: EmulatorTools, build_dir: Path = DEFAULT_BUILD_DIR) -> Path:
    """Compile the InternalStatus fix once per (jar, patch) pair; return its classes dir."""
    key = hashlib.sha256(
        (_file_digest(tools.jar) + _file_digest(PATCH_SOURCE)).encode()
    ).hexdigest()[:16]
    classes = build_dir / key / "classes"
    if (classes / "io" / "grpc" / "InternalStatus.class").is_file():
        return classes
    build_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="patch-", dir=build_dir))
    result = subprocess.run(
        [
            tools.javac,
            "--release",
            "8",
            "-nowarn",
            "-d",
            str(staging),
            "-cp",
            str(tools.jar),
            str(PATCH_SOURCE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise EmulatorFailed(f"javac could not build the emulator patch:\n{result.stderr}")
    classes.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(classes)  # atomic: a concurrent session either wins or finds it built
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return classes


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL the JVM when the test process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class PubSubEmulator:
    """One running emulator process on 127.0.0.1:`port`, logging to `log_path`."""

    def __init__(
        self, tools: EmulatorTools, classes: Path, log_path: Path, heap: str = HEAP
    ) -> None:
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("ab")
        self._process = subprocess.Popen(
            [
                tools.java,
                f"-Xmx{heap}",
                "-cp",
                f"{classes}{os.pathsep}{tools.jar}",
                MAIN_CLASS,
                "--host=127.0.0.1",
                f"--port={self.port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # the JVM must not outlive us
        )
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return self._process.pid

    def env(self) -> dict[str, str]:
        """The environment a subprocess (the `lookout` CLI) needs to talk to this emulator."""
        return {**os.environ, "PUBSUB_EMULATOR_HOST": self.host}

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout_seconds: float = READY_TIMEOUT_SECONDS) -> None:
        """Block until `GET /` answers `Ok`; raise with the log tail if it exits or times out."""
        deadline = time.monotonic() + timeout_seconds
        url = f"http://{self.host}/"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmulatorFailed(
                    f"emulator exited with {self._process.returncode} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=1) as response,
            ):
                if response.read().strip() == b"Ok":
                    return
            time.sleep(0.05)
        self.stop()
        raise EmulatorFailed(
            f"emulator on {self.host} not ready after {timeout_seconds:.0f} s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def uses_patch(self) -> bool:
        """True when the log shows no `NoSuchMethodError` (the bug the patch cures)."""
        return "NoSuchMethodError" not in self.log_tail(lines=100_000)

    def stop(self) -> None:
        """Kill the whole process group and wait for it; idempotent."""
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=10)
        self._log.close()
        atexit.unregister(self.stop)


def start_emulator(
    log_dir: Path, *, build_dir: Path = DEFAULT_BUILD_DIR, attempts: int = 3, heap: str = HEAP
) -> PubSubEmulator:
    """Build the patch if needed, start an emulator on a free port and wait until it answers.

    Retries on a fresh port because another process may grab the free port between our probe
    and the JVM's bind.
    """
    tools = find_tools()
    classes = build_patch(tools, build_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    error: EmulatorFailed | None = None
    for attempt in range(attempts):
        log = log_dir / f"pubsub-emulator-{attempt}.log"
        emulator = PubSubEmulator(tools, classes, log, heap)
        try:
            emulator.wait_ready()
        except EmulatorFailed as e:
            emulator.stop()
            error = e
            continue
        return emulator
    assert error is not None
    raise error


@contextlib.contextmanager
def running_emulator(log_dir: Path, heap: str = HEAP) -> Iterator[PubSubEmulator]:
    """`with running_emulator(dir) as emu:` for scripts (the benchmark)."""
    emulator = start_emulator(log_dir, heap=heap)
    try:
        yield emulator
    finally:
        emulator.stop()
