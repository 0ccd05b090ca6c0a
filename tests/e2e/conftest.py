"""Shared helpers for the end-to-end tests: the `lookout` CLI as a subprocess, as a user runs it.

Every test runs the installed console script (the one next to the interpreter running pytest)
in its own temporary directory, with a clean environment: no inherited `LOOKOUT_…` variables,
so a developer's shell cannot change what the tests see. Inputs come from `lookout simulate`
(small, seeded) and are generated once per session.

Malformed records are made by mutating real simulated lines in place, the kinds seen in
production: truncated JSON, a latency sent as a string, a negative token count, `NaN` in an
embedding as Python's `json.dumps` writes it, an embedding value that overflows to infinity,
a record of a shape Lookout does not know. So the good records of a corrupted stream are exactly
the untouched lines.
"""

from __future__ import annotations

import codecs
import json
import os
import pty
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from worker.sources.file_source import MESSAGE_BYTES, next_message_lines

#: how long a short command (help, config check, decode of a few lines) may take on a busy machine
SHORT_TIMEOUT = 60.0
#: how long a replay of a session stream may take on a busy machine
REPLAY_TIMEOUT = 180.0

#: the stream with an incident: three models (the simulator's defaults) at 600 calls/min each
#: for 11 minutes, every model's safety-block rate ×3 from minute 3 to minute 7. TARGETS.md asks
#: for an incident to be caught within 2 windows at ≥ 500 calls per window; 600/min keeps every
#: minute above that through the simulator's ±15% diurnal swing, and the safety detector has
#: its 1,000-call baseline after two windows.
INCIDENT_ARGS = (
    "--hours",
    "0.18",
    "--rate",
    "600",
    "--incident",
    "safety_spike@3m:4m",
    "--seed",
    "11",
)
INCIDENT_OFFSET_MINUTES = 3
SIMULATED_MODELS = ("gemini-1.5-flash", "text-bison", "gpt-4o-mini")

TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/')


def lookout_executable() -> str:
    """The `lookout` console script installed next to this interpreter (the project's venv)."""
    here = Path(sys.executable).parent / "lookout"
    if here.exists():
        return str(here)
    found = shutil.which("lookout")
    if found is None:
        pytest.fail("the `lookout` command is not installed (run `make test`)", pytrace=False)
    return found


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without LOOKOUT_… variables, plus `extra`.

    COLUMNS keeps typer's help from wrapping the first line of a docstring; NO_COLOR keeps ANSI
    codes out of what we compare.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKOUT_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"$ lookout {' '.join(self.args)}\nexit {self.returncode}\n"
            f"--- stdout (tail) ---\n{self.stdout[-3000:]}\n--- stderr (tail) ---\n"
            f"{self.stderr[-3000:]}"
        )


def lookout(
    *args: str | Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    timeout: float = SHORT_TIMEOUT,
) -> Result:
    """Run `lookout ARGS…` to completion and return its exit status and output."""
    argv = tuple(str(a) for a in args)
    done = subprocess.run(
        [lookout_executable(), *argv],
        cwd=cwd,
        env=clean_env(env),
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Result(
        argv,
        done.returncode,
        done.stdout.decode("utf-8", errors="replace"),
        done.stderr.decode("utf-8", errors="replace"),
    )


def assert_no_traceback(result: Result) -> None:
    for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        for marker in TRACEBACK_MARKERS:
            assert marker not in text, f"a traceback on {stream}:\n{result.describe()}"


class RunningLookout:
    """A `lookout` process left running: its output is collected by two reader threads, so a
    test can wait for a line on stdout or stderr without ever blocking on a full pipe."""

    def __init__(
        self,
        *args: str | Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        stdin: bool = False,
        stderr_on_terminal: bool = False,
    ) -> None:
        self.args = tuple(str(a) for a in args)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._out: list[str] = []
        self._err: list[str] = []
        terminal = pty.openpty() if stderr_on_terminal else None
        self.proc = subprocess.Popen(
            [lookout_executable(), *self.args],
            cwd=cwd,
            env=clean_env(env),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if terminal is None else terminal[1],
        )
        assert self.proc.stdout is not None
        out_fd = self.proc.stdout.fileno()
        if terminal is None:
            assert self.proc.stderr is not None
            err_fd = self.proc.stderr.fileno()
        else:
            os.close(terminal[1])  # the child holds the terminal's other end now
            err_fd = terminal[0]
        self._terminal = terminal
        self._readers = [
            threading.Thread(target=self._drain, args=(out_fd, self._out), daemon=True),
            threading.Thread(target=self._drain, args=(err_fd, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _drain(self, fd: int, into: list[str]) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # a terminal's master end reports EIO once the child has gone
                chunk = b""
            with self._changed:
                into.append(decoder.decode(chunk, final=not chunk))
                self._changed.notify_all()
            if not chunk:
                return

    def _close_pipes(self) -> None:
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        if self._terminal is not None:
            os.close(self._terminal[0])
            self._terminal = None

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self._out)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._err)

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait_for(self, what: str, condition: Callable[[str, str], bool], timeout: float) -> None:
        """Until `condition(stdout, stderr)` holds; fails (with the output) after `timeout` or if
        the process ends first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                out, err = "".join(self._out), "".join(self._err)
                if condition(out, err):
                    return
                if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                    pytest.fail(
                        f"lookout {' '.join(self.args)} exited ({self.proc.returncode}) "
                        f"before {what}\n--- stdout ---\n{out[-3000:]}\n--- stderr ---\n"
                        f"{err[-3000:]}",
                        pytrace=False,
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(
                        f"no {what} within {timeout:.0f} s\n--- stdout ---\n{out[-3000:]}\n"
                        f"--- stderr ---\n{err[-3000:]}",
                        pytrace=False,
                    )
                self._changed.wait(min(left, 0.5))

    def wait(self, timeout: float) -> Result:
        """Wait for the exit (killing the process if it overstays) and join the readers."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._close_pipes()
            pytest.fail(
                f"lookout {' '.join(self.args)} still running {timeout:.1f} s later; killed\n"
                f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}",
                pytrace=False,
            )
        self.close_stdin()
        self._close_pipes()
        return Result(self.args, self.proc.returncode, self.stdout, self.stderr)

    def kill(self) -> None:
        """Clean-up for a test that failed half-way; a no-op after `wait`."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.close_stdin()
        if self._terminal is not None or not (self.proc.stdout and self.proc.stdout.closed):
            self._close_pipes()


#: the worker's log line naming the port it serves on. A worker given `metrics.port: 0` lets
#: the OS pick one: a port a test picked and closed again could be taken by another test's
#: process first, and the test then talked to that one, which later exited ("connection
#: refused" in CI)
SERVING = re.compile(r"serving /metrics, /healthz and /readyz on 127\.0\.0\.1:(\d+)")


def served_base(worker: RunningLookout) -> str:
    """The base URL of the port a worker started with `metrics.port: 0` serves on."""
    worker.wait_for(
        "the port it serves on", lambda _, err: bool(SERVING.search(err)), SHORT_TIMEOUT
    )
    served = SERVING.search(worker.stderr)
    assert served is not None
    return f"http://127.0.0.1:{served.group(1)}"


# -- DuckDB, read after the process has exited ------------------------------------------------


def query(db: Path, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def total_calls(db: Path) -> int:
    (row,) = query(db, "SELECT coalesce(sum(calls), 0)::BIGINT FROM window_metrics_merged")
    return int(row[0])


def calls_per_model(db: Path) -> dict[str, int]:
    rows = query(db, "SELECT model, sum(calls)::BIGINT FROM window_metrics_merged GROUP BY model")
    return {str(m): int(n) for m, n in rows}


def counted_request_ids(db: Path) -> Counter[str]:
    """Every request id the windows counted, with multiplicity (a duplicate would show as 2)."""
    return Counter(str(r) for (r,) in query(db, "SELECT request_id FROM window_request_ids"))


# -- the simulated streams --------------------------------------------------------------------


def line_identity(line: bytes) -> tuple[str, str]:
    """(request_id, model) of one simulated line, in whichever wire format it was written."""
    doc = orjson.loads(line)
    if "resourceSpans" in doc:
        (span,) = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
        attrs = {a["key"]: a["value"].get("stringValue") for a in span["attributes"]}
        return str(attrs["gen_ai.response.id"]), str(attrs["gen_ai.request.model"])
    payload = doc.get("jsonPayload", doc)
    return str(payload["request_id"]), str(payload["model"])


def wire_format(doc: Mapping[str, Any]) -> str:
    if "resourceSpans" in doc:
        return "otlp"
    if "jsonPayload" in doc:
        return "logentry"
    body = doc.get("response_body")
    if body is None:
        return "native"
    if "error" in body:  # Azure OpenAI's prompt filter, or a provider's error
        return "azure_prompt_filter" if body["error"].get("code") == "content_filter" else "error"
    if "candidates" in body or "promptFeedback" in body:
        return "gemini"
    if "predictions" in body:
        return "palm"
    return "openai" if "choices" in body else "unknown"


@dataclass(frozen=True)
class Stream:
    """An NDJSON file and what a correct replay of it must count."""

    path: Path
    lines: tuple[bytes, ...]
    #: 1-based line numbers of the malformed records, and the kind of each
    bad: Mapping[int, str] = field(default_factory=dict)

    @property
    def good_count(self) -> int:
        return len(self.lines) - len(self.bad)

    @cached_property
    def identities(self) -> list[tuple[str, str] | None]:
        """(request_id, model) per line, None for a malformed one."""
        return [
            None if n in self.bad else line_identity(line)
            for n, line in enumerate(self.lines, start=1)
        ]

    def good_ids(self, upto_line: int | None = None) -> Counter[str]:
        return Counter(i[0] for i in self.identities[:upto_line] if i is not None)

    def good_per_model(self) -> dict[str, int]:
        return dict(Counter(i[1] for i in self.identities if i is not None))


# -- malformed records, as producers really write them ----------------------------------------


def _truncated(doc: dict[str, Any], line: bytes) -> bytes | None:
    return line[: len(line) // 2]  # a writer killed mid-line


def _string_latency(doc: dict[str, Any], line: bytes) -> bytes | None:
    target = doc.get("jsonPayload", doc)
    if "latency_ms" not in target:
        return None  # OTLP carries latency as span start/end, not a field
    target["latency_ms"] = "812ms"
    return json.dumps(doc).encode()


def _negative_tokens(doc: dict[str, Any], line: bytes) -> bytes | None:
    fmt = wire_format(doc)
    target = doc.get("jsonPayload", doc)
    body = target.get("response_body")
    if fmt == "native" and target.get("output_tokens") is not None:
        target["output_tokens"] = -42
    elif fmt in ("gemini", "logentry") and "candidatesTokenCount" in body["usageMetadata"]:
        body["usageMetadata"]["candidatesTokenCount"] = -42
    elif fmt == "palm" and "outputTokenCount" in body["metadata"]["tokenMetadata"]:
        body["metadata"]["tokenMetadata"]["outputTokenCount"]["totalTokens"] = -42
    elif fmt == "openai" and "completion_tokens" in body["usage"]:
        body["usage"]["completion_tokens"] = -42
    elif fmt == "otlp":
        (span,) = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
        for attr in span["attributes"]:
            if attr["key"] == "gen_ai.usage.output_tokens":
                attr["value"] = {"intValue": "-42"}
                break
        else:
            return None
    else:
        return None
    return json.dumps(doc).encode()


def _nan_embedding(doc: dict[str, Any], line: bytes) -> bytes | None:
    target = doc.get("jsonPayload", doc)
    if not target.get("embedding"):
        return None
    target["embedding"][7] = float("nan")
    return json.dumps(doc).encode()  # Python writes NaN, which JSON does not have


def _infinite_embedding(doc: dict[str, Any], line: bytes) -> bytes | None:
    target = doc.get("jsonPayload", doc)
    if not target.get("embedding"):
        return None
    target["embedding"][7] = _SENTINEL
    text = json.dumps(doc)
    assert text.count(repr(_SENTINEL)) == 1
    return text.replace(repr(_SENTINEL), "1e999").encode()  # valid JSON, overflows to inf


_SENTINEL = 987654.321


def _unknown_shape(doc: dict[str, Any], line: bytes) -> bytes | None:
    # an Anthropic Messages response: valid JSON, a real API, but not a format Lookout reads
    return json.dumps(
        {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "Hello!"}],
            "model": "claude-3-5-sonnet-20241022",
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 12, "output_tokens": 6},
        }
    ).encode()


MUTATIONS: Mapping[str, Callable[[dict[str, Any], bytes], bytes | None]] = {
    "truncated_json": _truncated,
    "string_latency": _string_latency,
    "negative_tokens": _negative_tokens,
    "nan_embedding": _nan_embedding,
    "infinite_embedding": _infinite_embedding,
    "unknown_shape": _unknown_shape,
}


def corrupt(lines: Sequence[bytes], at: Sequence[int]) -> tuple[list[bytes], dict[int, str]]:
    """`lines` with the records at the 1-based line numbers `at` made malformed, kinds taken in
    turn; a line whose format cannot carry a kind (no latency field in OTLP, an error body with
    no token counts) moves on to the next kind. Returns the new lines and {line: kind}."""
    out = list(lines)
    kinds = list(MUTATIONS)
    bad: dict[int, str] = {}
    for i, number in enumerate(at):
        line = out[number - 1].rstrip(b"\n")
        for k in range(len(kinds)):
            kind = kinds[(i + k) % len(kinds)]
            mutated = MUTATIONS[kind](json.loads(line), line)
            if mutated is not None:
                assert b"\n" not in mutated
                out[number - 1] = mutated + b"\n"
                bad[number] = kind
                break
    return out, bad


# -- session fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def incident_stream(tmp_path_factory: pytest.TempPathFactory) -> Stream:
    """`lookout simulate` with a safety spike on every model (≈18k records, mixed formats)."""
    where = tmp_path_factory.mktemp("incident")
    path = where / "incident.ndjson"
    result = lookout("simulate", "--out", path, *INCIDENT_ARGS, cwd=where, timeout=REPLAY_TIMEOUT)
    assert result.returncode == 0, result.describe()
    lines = tuple(path.read_bytes().splitlines(keepends=True))
    assert f"wrote {len(lines)} records" in result.stderr, result.describe()
    return Stream(path, lines)


@pytest.fixture(scope="session")
def small_incident_stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An hour of native records at 100 calls/min with a safety spike at 40 minutes on every
    model, without text or embeddings: a few alert changes, replayed in seconds."""
    where = tmp_path_factory.mktemp("small_incident")
    made = lookout(
        "simulate", "--out", "inc.ndjson", "--hours", "1", "--rate", "100",
        "--incident", "safety_spike@40m", "--no-text", "--embedding-fraction", "0",
        "--format", "native", cwd=where, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert made.returncode == 0, made.describe()
    return where / "inc.ndjson"


def message_starts(lines: Sequence[bytes]) -> list[int]:
    """The first line (1-based) of each message the file source cuts a file into."""
    starts, i = [], 0
    while i < len(lines):
        starts.append(i + 1)
        i += next_message_lines(list(lines[i : i + 2000]), 2000, MESSAGE_BYTES)
    return starts


@pytest.fixture(scope="session")
def corrupted_stream(incident_stream: Stream, tmp_path_factory: pytest.TempPathFactory) -> Stream:
    """The incident stream with ~1% of its records malformed in place.

    The first and last lines and both sides of the file source's first message boundaries
    (2,000 lines or 2 MB, whichever comes first) are among them, so an off-by-one in line
    numbering cannot hide.
    """
    n = len(incident_stream.lines)
    rng = random.Random(2024)
    starts = message_starts(incident_stream.lines)[1:4]
    edges = {1, 2, n} | {s - 1 for s in starts} | set(starts) | {s + 1 for s in starts}
    picks = set(rng.sample(range(1, n + 1), k=max(n // 100 - len(edges), 0))) | edges
    lines, bad = corrupt(incident_stream.lines, sorted(picks))
    path = tmp_path_factory.mktemp("corrupted") / "corrupted.ndjson"
    path.write_bytes(b"".join(lines))
    assert len(bad) == len(picks)
    assert set(bad.values()) == set(MUTATIONS), "every kind of bad record is in the stream"
    return Stream(path, tuple(lines), bad)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """The directory a test runs `lookout` in (its default ./lookout.duckdb lands here)."""
    yield tmp_path
