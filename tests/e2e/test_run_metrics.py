"""`lookout run --config F`: the long-running worker's /healthz, /readyz and /metrics.

The worker reads a file source on standard input, kept open while the test scrapes, so it is
still running when we look. The exposition is checked by `promtool check metrics` (installed by
`scripts/install-test-tools` from the Debian `prometheus` package); where promtool is missing the
same rules are checked on prometheus-client's own parse of it, unless CI=true, where a missing
promtool is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import (
    SHORT_TIMEOUT,
    RunningLookout,
    Stream,
    assert_no_traceback,
    corrupt,
    served_base,
    total_calls,
)

#: the models given label values; the third simulated model must show up as "other"
LABELLED_MODELS = ("gemini-1.5-flash", "text-bison")
#: lines fed on stdin: 13 polls of 16 one-line messages (the runner asks for 16 at a time, and
#: a pipe kept open never ends a poll early), two of them malformed
FEED_LINES = 13 * 16
BAD_LINES = (3, 4)
GOOD_LINES = FEED_LINES - len(BAD_LINES)
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; (0, reason) while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()
    except OSError as error:
        return 0, str(error)


def wait_until(
    what: str, worker: RunningLookout, check: Callable[[], bool], timeout: float
) -> None:
    """Poll `check()` until it holds or `timeout` passes, failing early if the worker exits."""
    deadline = time.monotonic() + timeout
    while not check():
        if worker.proc.poll() is not None:
            pytest.fail(f"the worker exited before {what}\n{worker.stderr[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s\n{worker.stderr[-3000:]}")
        time.sleep(0.1)


@dataclass(frozen=True)
class Worker:
    proc: RunningLookout
    base: str
    db: Path
    exposition: str


@contextmanager
def started_worker(stream: Stream, where: Path) -> Iterator[Worker]:
    """`lookout run` fed 206 good and 2 bad lines on stdin (kept open), scraped once every
    line is folded. `source.lines_per_message: 1`, so the file source hands over what arrived
    instead of waiting for 2,000-line chunks."""
    db = where / "worker.duckdb"
    config = where / "lookout.yaml"
    config.write_text(
        f"""\
source: {{kind: file, path: "-", lines_per_message: 1}}
sink: {{kind: duckdb, path: {db}}}
engine: {{checkpoint_seconds: 0.5, grace_period_seconds: 5}}
metrics: {{host: 127.0.0.1, port: 0, models: [{", ".join(LABELLED_MODELS)}]}}
"""
    )
    feed, bad = corrupt(stream.lines[:FEED_LINES], BAD_LINES)
    assert sorted(bad) == list(BAD_LINES)
    proc = RunningLookout("run", "--config", config, cwd=where, stdin=True)
    try:
        proc.write(b"".join(feed))
        base = served_base(proc)
        wait_until("/healthz", proc, lambda: get(f"{base}/healthz")[0] == 200, SHORT_TIMEOUT)

        def folded() -> bool:
            status, text = get(f"{base}/metrics")
            return status == 200 and records_total(text) == GOOD_LINES

        wait_until("records in /metrics", proc, folded, SHORT_TIMEOUT)
        exposition = get(f"{base}/metrics")[1]
        yield Worker(proc, base, db, exposition)
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def worker(incident_stream: Stream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker the read-only tests share. No test may stop it: with work stealing, a test of
    this module can run after another one on the same instance in any order."""
    with started_worker(incident_stream, tmp_path_factory.mktemp("run")) as running:
        yield running


def records_total(exposition: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "lookout_records_total"
    )


def test_healthz_and_readyz_answer_200(worker: Worker) -> None:
    assert get(f"{worker.base}/healthz") == (200, "ok\n")
    status, body = get(f"{worker.base}/readyz")
    assert status == 200, body


def test_metrics_pass_promtool(worker: Worker, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is required with CI=true (scripts/install-test-tools)")
        check_naming_rules(worker.exposition)
        return
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=worker.exposition.encode(),
        capture_output=True,
        timeout=SHORT_TIMEOUT,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b""), done


def test_metrics_follow_the_naming_rules(worker: Worker) -> None:
    """The rules promtool checks, on prometheus-client's parse (runs with or without promtool)."""
    check_naming_rules(worker.exposition)


def check_naming_rules(exposition: str) -> None:
    families = list(text_string_to_metric_families(exposition))
    assert families
    for family in families:
        assert METRIC_NAME.match(family.name), family.name
        assert family.documentation.strip(), f"{family.name} has no HELP"
        if family.name.startswith("lookout_"):
            assert family.type in ("counter", "gauge", "histogram", "summary"), family
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            if family.type == "histogram":
                assert sample.name.endswith(("_bucket", "_sum", "_count", "_created")), sample
    for name in {f.name for f in families if f.name.startswith("lookout_")}:
        assert not re.search(r"_(ms|milliseconds|minutes|hours|percent)(_|$)", name), (
            f"{name}: Prometheus names use base units (seconds, ratio)"
        )


def test_records_total_is_labelled_by_bounded_model_names(worker: Worker) -> None:
    samples = {
        sample.labels["model"]: sample.value
        for family in text_string_to_metric_families(worker.exposition)
        for sample in family.samples
        if sample.name == "lookout_records_total"
    }
    assert set(samples) == {*LABELLED_MODELS, "other"}, samples
    assert all(v > 0 for v in samples.values())
    for family in text_string_to_metric_families(worker.exposition):
        for sample in family.samples:
            if "model" in sample.labels:
                assert sample.labels["model"] in {*LABELLED_MODELS, "other"}, sample


def test_invalid_records_are_counted_by_reason(worker: Worker) -> None:
    invalid = [
        sample
        for family in text_string_to_metric_families(worker.exposition)
        for sample in family.samples
        if sample.name == "lookout_records_invalid_total"
    ]
    assert sum(s.value for s in invalid) == 2, invalid
    assert all(s.labels.get("reason") for s in invalid), invalid


def test_the_worker_stops_at_the_end_of_its_input_and_everything_is_durable(
    incident_stream: Stream, tmp_path: Path
) -> None:
    """A file source ends when the file ends: closing stdin lets the worker finish and leave
    every good record it was fed in the DuckDB file. Its input had two bad records, so it exits
    1 as replay does (it exited 0, and `lookout run … && next-step` went on as if every line had
    counted). (Its own worker: stopping the shared one failed whichever test work stealing ran
    on it next.)"""
    with started_worker(incident_stream, tmp_path) as worker:
        worker.proc.close_stdin()
        result = worker.proc.wait(timeout=SHORT_TIMEOUT)
        assert result.returncode == 1, result.describe()
        assert "lookout run: 2 bad records in the input (reported above)" in result.stderr
        assert_no_traceback(result)
        assert total_calls(worker.db) == GOOD_LINES
        assert f"lookout run: {GOOD_LINES} records" in result.stderr, result.describe()
        # after a restart the counts are this process's: an SRE read them as records lost
        assert "evaluated, by this run (what runs before it stored is in the sink too)" in (
            result.stderr
        ), result.describe()
