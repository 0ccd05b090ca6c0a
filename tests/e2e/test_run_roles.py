"""`lookout run --role ingest` then `--role evaluate` on one sink, as a user runs them: the
ingest replica folds and checkpoints without judging anything; the evaluator, which has no
source, judges the windows the ingest frontier closed, with the verdicts `lookout replay` gives.
(A DuckDB file has one writer at a time, so the two run one after the other here; with
BigQuery they run side by side.)"""

from __future__ import annotations

import signal
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import REPLAY_TIMEOUT, RunningLookout, lookout, query, served_base
from tests.e2e.test_run_metrics import get, wait_until

LATENESS = 30


def _config(path: Path, *, source: Path, db: Path, port: int | None) -> Path:
    metrics = f"{{host: 127.0.0.1, port: {port}}}" if port is not None else "{enabled: false}"
    path.write_text(
        f"source: {{kind: file, path: {source}}}\n"
        f"sink: {{kind: duckdb, path: {db}}}\n"
        f"engine: {{checkpoint_seconds: 0.5, allowed_lateness_seconds: {LATENESS}}}\n"
        f"metrics: {metrics}\n"
    )
    return path


def _detections_total(base: str) -> float:
    status, text = get(f"{base}/metrics")
    if status != 200:
        return -1.0
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "lookout_detections"
        for sample in family.samples
        if sample.name == "lookout_detections_total"
    )


def test_ingest_then_evaluate_judge_like_replay(tmp_path: Path) -> None:
    stream = tmp_path / "logs.ndjson"
    made = lookout(
        "simulate", "--out", stream, "--hours", "0.5", "--rate", "120", "--format", "native",
        "--incident", "safety_spike@15m", cwd=tmp_path, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert made.returncode == 0, made.describe()
    reference = tmp_path / "reference.duckdb"
    replayed = lookout("replay", stream, "--db", reference, cwd=tmp_path, timeout=REPLAY_TIMEOUT)
    assert replayed.returncode == 0, replayed.describe()

    split = tmp_path / "split.duckdb"
    ingest_config = _config(tmp_path / "ingest.yaml", source=stream, db=split, port=None)
    ingested = lookout(
        "run", "--config", ingest_config, "--role", "ingest", cwd=tmp_path, timeout=REPLAY_TIMEOUT
    )
    assert ingested.returncode == 0, ingested.describe()
    assert query(split, "SELECT count(*) FROM detections") == [(0,)]
    assert query(split, "SELECT count(*) FROM writer_progress") == [(1,)]

    # windows certainly closed by the ingest frontier (one window of margin for the quorum)
    (newest,) = query(reference, "SELECT max(epoch(window_start)) FROM window_metrics")[0]
    closed = f"epoch(window_end) <= {float(newest) - LATENESS - 60}"
    (expected,) = query(reference, f"SELECT count(*) FROM detections WHERE {closed}")[0]
    assert expected > 50

    eval_config = _config(tmp_path / "evaluate.yaml", source=stream, db=split, port=0)
    evaluator = RunningLookout("run", "--config", eval_config, "--role", "evaluate", cwd=tmp_path)
    try:
        base = served_base(evaluator)
        wait_until(
            f"{expected} detections", evaluator, lambda: _detections_total(base) >= expected, 60
        )
        assert get(f"{base}/readyz") == (200, "ready\n")  # the ingest replica had reported
        evaluator.proc.send_signal(signal.SIGTERM)
        result = evaluator.wait(timeout=30)
    finally:
        evaluator.kill()
    assert result.returncode == 0, result.describe()

    verdicts = "SELECT model, detector, window_start, sample_size, verdict, value FROM detections"
    got = query(split, f"{verdicts} ORDER BY ALL")
    want = query(reference, f"{verdicts} ORDER BY ALL")
    assert len(got) >= expected
    assert set(got) <= set(want)  # every window judged on the samples replay judged it on
    assert query(split, "SELECT count(*) FROM alerts WHERE status = 'firing'")[0][0] > 0


def test_an_evaluator_with_nothing_to_judge_says_what_it_waits_for(tmp_path: Path) -> None:
    """`--role evaluate` on a DuckDB file no ingest replica wrote to judged nothing for as long
    as it ran, silently, and /readyz said ready: a newcomer waited ten minutes. It now says
    that a DuckDB file takes one writer at a time and that no ingest progress is there yet,
    and /readyz says not ready, and why."""
    config = _config(
        tmp_path / "evaluate.yaml", source=tmp_path / "x", db=tmp_path / "e.duckdb", port=0
    )
    evaluator = RunningLookout("run", "--config", config, "--role", "evaluate", cwd=tmp_path)
    try:
        base = served_base(evaluator)
        evaluator.wait_for(
            "the waiting warning",
            lambda out, err: "no ingest replica has written its progress" in err,
            60,
        )
        status, body = get(f"{base}/readyz")
        assert status == 503
        assert "ingest (no ingest replica has written its progress to" in body, body
        evaluator.proc.send_signal(signal.SIGTERM)
        result = evaluator.wait(timeout=30)
    finally:
        evaluator.kill()
    assert result.returncode == 0, result.describe()
    assert "a DuckDB file takes one writer at a time" in result.stderr
    assert "0 windows evaluated" in result.stderr


def test_run_on_a_missing_file_says_so_and_creates_no_database(tmp_path: Path) -> None:
    """A configuration whose relative source.path is not where `lookout run` was started:
    one line naming the key, the file and the folder it was looked for in; no empty database
    left behind (there was a raw FileNotFoundError and an empty lookout.duckdb)."""
    config = tmp_path / "conf" / "lookout.yaml"
    config.parent.mkdir()
    config.write_text(
        "source: {kind: file, path: logs.ndjson}\nsink: {kind: duckdb, path: l.duckdb}\n"
    )
    done = lookout("run", "--config", config, cwd=tmp_path)
    assert done.returncode == 2, done.describe()
    assert done.stderr.strip() == (
        f"lookout: run: source.path in {config}: no such file: logs.ndjson "
        f"(read from the current folder, {tmp_path})"
    )
    assert not (tmp_path / "l.duckdb").exists()
