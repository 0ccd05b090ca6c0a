"""A half-written evaluator checkpoint, retried with more verdicts, against the BigQuery emulator.

A checkpoint is one insert per table, so `detections` (or `alerts`) can land and a later table
fail. The engine retries with the same sequence and everything judged since folded in. An
analyst reading `detections` and `alerts` (the README's queries) must see each verdict and each
alert transition once. BigQuery's own insertId de-duplication is best effort and lasts about a
minute, while the engine's retry may come later: the test also checks that the retry does not
send the rows that already landed, so it does not pass merely because the emulator (like
BigQuery within that minute) drops a repeated insertId.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.batch import LogBatch
from schemas.detection import Alert, Detection
from tests.integration.bigquery_emulator import BigQueryEmulator
from tests.sink_cases import S0, batch, detection, ids, partial, tracker_rows
from worker.sink import Checkpoint
from worker.sinks.bigquery_sink import BigQuerySink, BigQuerySinkError


class FlakyClient:
    """The emulator's client, except that the next insert into each table of `fail_next` is
    refused as BigQuery does when unreachable; every insert sent is recorded per table."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.fail_next: set[str] = set()
        self.sent: dict[str, list[str]] = {}

    def insert_rows_json(self, ref: str, rows: list[dict[str, Any]], **kwargs: Any) -> Any:
        from google.api_core import exceptions

        table = ref.rsplit(".", 1)[1]
        if table in self.fail_next:
            self.fail_next.discard(table)
            message = f"injected: {table} unreachable"
            raise exceptions.ServiceUnavailable(message)  # type: ignore[no-untyped-call]
        self.sent.setdefault(table, []).extend(kwargs["row_ids"])
        return self._client.insert_rows_json(ref, rows, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def alert_for(d: Detection) -> Alert:
    return Alert(
        dedup_key=f"{d.model}/{d.detector}/{d.condition}",
        status="firing",
        severity=d.severity,
        detector=d.detector,
        model=d.model,
        condition=d.condition,
        window_start=d.window_start,
        window_end=d.window_end,
        value=d.value,
        threshold=d.threshold,
        baseline=d.baseline,
        sample_size=d.sample_size,
        summary=f"{d.model}: {d.reason}",
    )


def judged(detections: list[Detection], logs: LogBatch, frontier: float) -> Checkpoint:
    """What an evaluator (single process) checkpoints: the window, its verdicts and alerts."""
    return Checkpoint(
        "w1",
        0,
        [partial(logs)],
        ids(logs),
        detections=detections,
        alerts=[alert_for(d) for d in detections],
        alert_state=tracker_rows(*detections),
        frontier=frontier,
    )


@pytest.mark.parametrize("failing", ["alerts", "alert_state", "detections", "writer_progress"])
def test_a_half_written_evaluator_checkpoint_retried_with_more_verdicts_stores_each_once(
    bigquery_emulator: BigQueryEmulator, bigquery_dataset: str, failing: str
) -> None:
    client = FlakyClient(bigquery_emulator.client())
    sink = BigQuerySink(bigquery_emulator.project, bigquery_dataset, client=client)
    first, more = batch("x", 6, blocked=3), batch("y", 4, second=30)
    a = detection("a", S0)
    b = detection("b", S0)  # judged while the first attempt was failing

    # the first attempt: every table before `failing` lands, then BigQuery is unreachable
    client.fail_next.add(failing)
    with pytest.raises(BigQuerySinkError, match=f"{failing} unreachable"):
        sink.write_checkpoint(judged([a], first, frontier=S0 + 10.0))
    assert client.sent["window_metrics"]  # half-written: the window's counts are in BigQuery
    landed = {t: len(i) for t, i in client.sent.items()}

    sink.write_checkpoint(judged([a, b], LogBatch.concat([first, more]), frontier=S0 + 40.0))

    # what an analyst sees (the README's tables and its alert timeline): each row once
    verdicts = sink.query(
        "SELECT model, detector, COUNT(*) AS n FROM detections GROUP BY model, detector "
        "ORDER BY model"
    )
    assert [(r["model"], r["detector"], r["n"]) for r in verdicts] == [
        ("a", "safety", 1),
        ("b", "safety", 1),
    ]
    timeline = sink.query(
        "SELECT window_start, status, severity, model, detector, summary "
        "FROM alerts ORDER BY window_start, dedup_key, status"
    )
    assert [(r["model"], r["status"]) for r in timeline] == [("a", "firing"), ("b", "firing")]
    [merged] = sink.query("SELECT records, partial_rows FROM window_metrics_merged")
    assert (merged["records"], merged["partial_rows"]) == (10, 1)

    # the retry sent only what had not landed: nothing rests on insertId de-duplication
    resent = {t: client.sent[t][landed.get(t, 0) :] for t in ("detections", "alerts")}
    # b's verdict, and a's only if it had not landed (detections go after the alerts)
    assert len(resent["detections"]) == (2 if failing in ("alerts", "detections") else 1)
    assert len(resent["alerts"]) == (2 if failing == "alerts" else 1)

    # what the sink reads back agrees: both windows judged, the newest alert state holds both
    assert sink.unevaluated_windows(10) == []
    assert sink.load_window("a", S0).evaluated
    incidents = [r["model"] for r in sink.load_alert_state() if r["kind"] == "incident"]
    assert sorted(incidents) == ["a", "b"]
    assert datetime.fromtimestamp(S0, tz=UTC) == timeline[0]["window_start"]
    sink.close()


@pytest.mark.parametrize("failing", ["alerts", "detections", "alert_state"])
def test_an_evaluator_killed_mid_checkpoint_leaves_its_successor_able_to_page(
    bigquery_emulator: BigQueryEmulator, bigquery_dataset: str, failing: str
) -> None:
    """kill -9 between two inserts of a checkpoint that fired an incident; the evaluator that
    replaces it reads the sink. Pages go out only after a checkpoint, so this one was never
    sent. A window with stored detections reads as judged and is not judged again, and a
    tracker restored from an alert state that holds the incident open never pages for it.
    So the alert state goes last: a crash before the detections leaves the window to be
    judged again (the transition is made and sent again); one after them leaves the state
    from before, and the successor pages at the incident's next window."""
    client = FlakyClient(bigquery_emulator.client())
    sink = BigQuerySink(bigquery_emulator.project, bigquery_dataset, client=client)
    client.fail_next.add(failing)
    with pytest.raises(BigQuerySinkError, match=f"{failing} unreachable"):
        sink.write_checkpoint(judged([detection("a", S0)], batch("x", 6, blocked=3), S0 + 10.0))
    sink.close()  # the process is gone; what it had not written is lost with it

    restarted = BigQuerySink(
        bigquery_emulator.project, bigquery_dataset, client=bigquery_emulator.client()
    )
    open_incidents = [r for r in restarted.load_alert_state() if r["kind"] == "incident"]
    assert open_incidents == [], "a successor restored from this state would never page"
    judged_again = restarted.unevaluated_windows(10) == [("a", S0)]
    assert judged_again == (failing != "alert_state")
    assert restarted.load_window("a", S0).evaluated == (not judged_again)
    restarted.close()


def test_request_ids_whose_counts_never_landed_do_not_mark_their_records_counted(
    bigquery_emulator: BigQueryEmulator, bigquery_dataset: str
) -> None:
    """An ingest replica killed between its two inserts (request ids land first, its counts
    never): another replica that gets the messages again must count them, not skip them as
    duplicates of records that are in no row."""
    client = FlakyClient(bigquery_emulator.client())
    sink = BigQuerySink(bigquery_emulator.project, bigquery_dataset, client=client)
    logs = batch("x", 6)
    client.fail_next.add("window_metrics")
    with pytest.raises(BigQuerySinkError, match="window_metrics unreachable"):
        sink.write_checkpoint(Checkpoint("ingest-a", 0, [partial(logs)], ids(logs)))
    assert client.sent["window_request_ids"]  # the ids did land
    sink.close()

    survivor = BigQuerySink(
        bigquery_emulator.project, bigquery_dataset, client=bigquery_emulator.client()
    )
    assert survivor.load_window("a", S0).request_ids == frozenset()
    survivor.write_checkpoint(Checkpoint("ingest-b", 0, [partial(logs)], ids(logs)))
    stored = survivor.load_window("a", S0)
    assert (stored.records, len(stored.request_ids)) == (6, 6)  # counted once, ids now real
    survivor.close()


class SizeLimitedClient(FlakyClient):
    """The emulator's client behind BigQuery's insertAll limit, scaled down to `limit` bytes
    of rows a request: a larger request is refused (400), as BigQuery refuses one over 10 MB.
    With `fail_request` (table, n), that table's n-th request is refused once as unreachable."""

    def __init__(self, client: Any, limit: int) -> None:
        super().__init__(client)
        self.limit = limit
        self.request_bytes: list[int] = []
        self.requests: dict[str, int] = {}
        self.fail_request: tuple[str, int] | None = None

    def insert_rows_json(self, ref: str, rows: list[dict[str, Any]], **kwargs: Any) -> Any:
        from google.api_core import exceptions

        size = sum(len(json.dumps(r)) for r in rows)  # what the client sends
        if size > self.limit:
            message = f"Request payload size exceeds the limit: {size} bytes"
            raise exceptions.BadRequest(message)  # type: ignore[no-untyped-call]
        table = ref.rsplit(".", 1)[1]
        self.requests[table] = self.requests.get(table, 0) + 1
        if self.fail_request == (table, self.requests[table]):
            self.fail_request = None
            self.fail_next.add(table)
        self.request_bytes.append(size)
        return super().insert_rows_json(ref, rows, **kwargs)


def test_a_checkpoint_larger_than_one_insert_request_lands_in_several(
    bigquery_emulator: BigQueryEmulator, bigquery_dataset: str
) -> None:
    """Many windows closing in one checkpoint (a backlog after a restart, many models) make
    more rows than one insertAll request may carry. Sent in one request the checkpoint was
    refused at every retry, and ingest stopped acking for good; cut into requests it lands,
    and a retry after a failure part-way sends only the requests that did not land."""
    client = SizeLimitedClient(bigquery_emulator.client(), limit=8_000)
    sink = BigQuerySink(
        bigquery_emulator.project, bigquery_dataset, client=client, max_request_bytes=7_500
    )
    models = [f"m{i:02d}-модель-模型" for i in range(24)]  # sent escaped: 2-3x its UTF-8 size
    logs = {m: batch(m, 5, model=m) for m in models}
    rows = [partial(logs[m], model=m) for m in models]
    request_ids = [row for m in models for row in ids(logs[m], model=m)]
    client.fail_request = ("window_metrics", 2)  # the first request of its rows lands
    with pytest.raises(BigQuerySinkError, match="unreachable"):
        sink.write_checkpoint(Checkpoint("ingest-a", 0, rows, request_ids))
    landed_first = list(client.sent["window_metrics"])
    assert 0 < len(landed_first) < len(models)
    sink.write_checkpoint(Checkpoint("ingest-a", 0, rows, request_ids))

    assert max(client.request_bytes) <= 8_000
    resent = client.sent["window_metrics"][len(landed_first) :]
    assert len(resent) == len(models) - len(landed_first)  # what landed is not sent again
    assert not set(resent) & set(landed_first)
    stored = sink.query("SELECT model, records FROM window_metrics_merged ORDER BY model")
    assert [(r["model"], r["records"]) for r in stored] == [(m, 5) for m in models]
    assert len(sink.load_window(models[7], S0).request_ids) == 5
    sink.close()


def test_a_window_with_more_request_ids_than_one_request_holds_lands_in_several_rows(
    bigquery_emulator: BigQueryEmulator, bigquery_dataset: str
) -> None:
    """Found in review: a window's ids of one checkpoint went in one row. One poll of
    100-record messages (a backlog drained) put 300,000 ids in one window, a 12 MB row that
    BigQuery refused at every retry: ingest stopped acking for good."""
    client = SizeLimitedClient(bigquery_emulator.client(), limit=8_000)
    sink = BigQuerySink(
        bigquery_emulator.project, bigquery_dataset, client=client, max_request_bytes=7_500
    )
    logs = batch("request-" + "0" * 28, 600)  # 600 ids of 40 bytes: 24 KB in one window
    sink.write_checkpoint(Checkpoint("ingest-a", 0, [partial(logs)], ids(logs)))
    assert max(client.request_bytes) <= 8_000
    assert len(client.sent["window_request_ids"]) > 3
    assert sink.load_window("a", S0).request_ids == frozenset(str(r) for r in logs.request_id)
    sink.close()
