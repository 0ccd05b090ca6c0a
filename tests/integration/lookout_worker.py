"""`lookout run` as a subprocess for the robustness tests: start, scrape, probe, stop.

Small on purpose (the issue-4 e2e tests have their own richer helper): these tests need the
log, /readyz with its body, /metrics samples by name and labels, and the time SIGTERM took.
Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

LOOKOUT = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "lookout")


def write_config(path: Path, source: Mapping[str, Any], db: Path, grace: float = 10.0) -> Path:
    """A worker config (JSON is YAML) with a free metrics port and small checkpoints."""
    config = {
        "source": {"kind": "pubsub", **source},
        "sink": {"kind": "duckdb", "path": str(db)},
        "engine": {"window_seconds": 60, "checkpoint_seconds": 1, "grace_period_seconds": grace},
        "detectors": {"enabled": ["safety", "latency"]},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
    }
    path.write_bytes(orjson.dumps(config))
    return path


@dataclass
class Worker:
    """One `lookout run`; stderr goes to a file (never an unread pipe)."""

    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    stopped_after: float = field(default=float("nan"))

    @classmethod
    def start(cls, config: Path, env: Mapping[str, str], log: Path) -> Worker:
        with log.open("wb") as err:
            process = subprocess.Popen(
                [LOOKOUT, "run", "--config", str(config)],
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        worker = cls(process, log)
        worker.wait_until("the metrics server", worker._serving, timeout=60)
        return worker

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def _serving(self) -> bool:
        for line in self.text().splitlines():
            if "serving /metrics" in line:
                self.port = int(line.rsplit(":", 1)[1])
                return True
        return False

    def wait_until(
        self, what: str, check: Callable[[], bool], timeout: float = 60.0, poll: float = 0.05
    ) -> float:
        """Seconds it took for `check` to hold; fails if the worker exits or time runs out."""
        started = time.monotonic()
        while not check():
            code = self.process.poll()
            assert code is None, f"worker exited ({code}) waiting for {what}:\n{self.text()}"
            assert time.monotonic() - started < timeout, f"no {what} in {timeout} s:\n{self.text()}"
            time.sleep(poll)
        return time.monotonic() - started

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()
        except OSError:
            return 0, ""

    def sample(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels` (0 if none)."""
        status, text = self.get("/metrics")
        assert status == 200, f"/metrics answered {status}"
        value = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    value += s.value
        return value

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM once, wait; `stopped_after` is the time the exit took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.stopped_after = time.monotonic() - started
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
