"""The production sink: window aggregates, detections and alerts in BigQuery for analysts.

Write path: streaming inserts (`tabledata.insertAll`) with an `insertId` per row. Why, and the
figures, are in the README ("For analysts"). A checkpoint is several inserts, one per table, so
unlike DuckDB it is not atomic; it is made idempotent instead:

- each partial row has a deterministic `row_id` = hash(writer, sink incarnation, checkpoint
  sequence, model, window). The engine retries a failed checkpoint with the same sequence and a
  superset of the same deltas, so the newest row of a `row_id` is the right one: readers and
  the views keep only it. A retry within a minute is also dropped by BigQuery's insertId
  de-duplication. The incarnation (random per sink object, i.e. per process) keeps a
  restarted writer that reuses its writer id and sequence numbers from replacing old rows;
- request ids travel with their partial row's `row_id`, so they dedup the same way;
- detections, alerts, quarantined records and baseline acceptances are facts, not snapshots:
  nothing newer replaces them, and analysts read their tables as they are. Their insertId is
  the row's own content (`record_insert_id`), not the checkpoint's, and the sink remembers
  which rows of a checkpoint landed until all of it has: a retry that folded in more verdicts
  sends only the new rows, so each verdict and alert transition is stored once however late
  the retry comes (BigQuery's insertId memory lasts about a minute);
- `writer_progress` (the frontier an evaluator waits for) is written last;
- a table's rows go in requests of at most `MAX_REQUEST_BYTES` of JSON and `MAX_REQUEST_ROWS`
  rows: `insertAll` refuses a request over 10 MB, and that refusal would come back at every
  retry of the checkpoint (each retry carries the same rows and more), so one large checkpoint
  (a backlog drained after a restart, many models closing windows together) would stop ingest
  for good. A request that landed is remembered like any row, so a retry sends only the rest.

Transient errors (connection refused, 5xx, rate limits) are retried with exponential backoff
for at most `write_timeout` seconds, then `write_checkpoint` raises and the engine keeps the
messages un-acked and retries later. Permanent errors name the table and the column.

`google-cloud-bigquery` is imported only when a BigQuery sink is built: `lookout --help` and
the DuckDB path never pay for it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.detection import Alert, AlertChangeKey
from worker.analyst_columns import slice_rows
from worker.errors import LookoutError, describe
from worker.sink import (
    BaselineAccept,
    Checkpoint,
    DetectorRow,
    StoredWindow,
    add_version_records,
    checkpoint_digest,
)
from worker.sinks.bigquery_schema import TABLES, Table, partition_expiration_days
from worker.sinks.state_codec import decode_states, encode_states

__all__ = ["BigQuerySink", "BigQuerySinkError", "decode_states", "encode_states"]

log = logging.getLogger(__name__)

#: below insertAll's 10 MB request limit, with room for the request's own wrapping and insertIds
MAX_REQUEST_BYTES = 8 * 1024 * 1024
#: how far back the evaluator's frequent frontier read looks (every live writer wrote since)
FRONTIER_LOOKBACK_SECONDS = 86_400.0
#: BigQuery's documented maximum is 50,000 rows a request and 500 its recommendation
MAX_REQUEST_ROWS = 5_000

_DEDUP = "QUALIFY ROW_NUMBER() OVER (PARTITION BY row_id ORDER BY written_at DESC) = 1"


class BigQuerySinkError(LookoutError):
    """A BigQuery write or read failed; the message names the table (and column, if known)."""


def partial_row_id(
    writer_id: str, incarnation: str, sequence: int, model: str, start: int, slice_: str = ""
) -> str:
    """The row's identity. The states-carrying row of a partial has no slice part, whichever
    slice it holds, so a retry that adds a slice still replaces it (never two states rows)."""
    key = f"{writer_id}\x00{incarnation}\x00{sequence}\x00{model}\x00{start}"
    if slice_:
        key += f"\x00{slice_}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def record_insert_id(table: str, row: Mapping[str, Any], written: str) -> str:
    """The insertId of a fact row: its table and content without the write time (`written`),
    which a retry changes. The same verdict or transition always gets the same id, wherever
    in whichever checkpoint it rides; another verdict for the same window is another row."""
    body = {k: v for k, v in row.items() if k != written}
    raw = orjson.dumps([table, body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:32]


def _facts(
    table: str, rows: list[dict[str, Any]], written: str
) -> tuple[str, list[dict[str, Any]], list[str]]:
    return table, rows, [record_insert_id(table, r, written) for r in rows]


def _slice_id(row: Mapping[str, Any]) -> str:
    return orjson.dumps([row["model_version"], row["tenant"]]).decode()


def _ts(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat()


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def make_client(project: str, location: str | None, emulator_host: str | None) -> Any:
    """A client with Application Default Credentials, or anonymous against an emulator."""
    from google.cloud import bigquery

    if emulator_host:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        endpoint = emulator_host if "://" in emulator_host else f"http://{emulator_host}"
        return bigquery.Client(
            project=project,
            location=location,
            client_options=ClientOptions(api_endpoint=endpoint),
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
    return bigquery.Client(project=project, location=location)


def check_schema(
    client: Any,
    project: str,
    dataset: str,
    *,
    timeout: float = 30.0,
    endpoint: str = "bigquery.googleapis.com (firewall, NetworkPolicy, Private Google Access)",
    keep: KeepWindows | None = None,
) -> None:
    """Fail at start, naming the table and column, if the dataset lacks what the sink writes,
    or (with `keep`) if a window table deletes partitions sooner than this worker needs them.

    Each table's lookup retries transient failures for at most `timeout` seconds (the write
    budget), then fails in one line: with the client's default retry an unreachable BigQuery
    (a NetworkPolicy, Private Google Access not set up) was retried silently for 10 minutes,
    and Kubernetes' startup probe killed the pod after 2 without a word of why."""
    from google.api_core import exceptions
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    retry = DEFAULT_RETRY.with_delay(initial=0.5, maximum=5.0).with_timeout(timeout)
    for table in TABLES:
        ref = f"{project}.{dataset}.{table.name}"
        try:
            found = client.get_table(ref, retry=retry, timeout=min(timeout, 30.0))
        except exceptions.NotFound as error:
            msg = f"BigQuery table {ref} does not exist: run `lookout bq init`"
            raise BigQuerySinkError(msg) from error
        except exceptions.Forbidden as error:
            msg = f"BigQuery table {ref}: permission denied ({error.message})"
            raise BigQuerySinkError(msg) from error
        except exceptions.GoogleAPICallError as error:  # an answer: 401, 400, ...
            msg = f"BigQuery refused reading table {ref}: {describe(error)}"
            raise BigQuerySinkError(msg) from error
        except (exceptions.GoogleAPIError, OSError) as error:  # gave up retrying, or no route
            last = error.cause if isinstance(error, exceptions.RetryError) else None
            msg = (
                f"BigQuery did not answer for table {ref} within {timeout:g} s "
                f"(sink.write_timeout_seconds): {describe(last or error)}; check network "
                f"access to {endpoint} and the credentials"
            )
            raise BigQuerySinkError(msg) from error
        _check_expiration(found, ref, table, keep)
        have = {f.name: f for f in found.schema}
        for column in table.columns:
            if column.name not in have:
                msg = (
                    f"BigQuery table {ref} has no column {column.name} ({column.type}): "
                    "run `lookout bq init` to add it"
                )
                raise BigQuerySinkError(msg)


@dataclass(frozen=True)
class KeepWindows:
    """How long window partitions must last for this worker, and why (for the refusal)."""

    seconds: float
    why: str


def _check_expiration(found: Any, ref: str, table: Table, keep: KeepWindows | None) -> None:
    """A window whose partition expired is gone for good: a late record folded into it again
    is counted again, and a restarted evaluator's baseline lacks it."""
    partitioning = getattr(found, "time_partitioning", None)
    expiration_ms = partitioning.expiration_ms if partitioning is not None else None
    if keep is None or not table.expires or not expiration_ms:
        return
    needed = partition_expiration_days(keep.seconds)
    if int(expiration_ms) < needed * 86_400_000:
        msg = (
            f"BigQuery table {ref} deletes partitions after {int(expiration_ms) / 86_400_000:g} "
            f"days, and {keep.why}: run `lookout bq init --partition-expiration-days {needed}`"
        )
        raise BigQuerySinkError(msg)


class BigQuerySink:
    """`worker.sink.Sink` on BigQuery; see the module docstring."""

    def __init__(
        self,
        project: str,
        dataset: str,
        *,
        location: str | None = None,
        client: Any = None,
        emulator_host: str | None = None,
        write_timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
        check: bool = True,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_request_rows: int = MAX_REQUEST_ROWS,
        keep: KeepWindows | None = None,
    ) -> None:
        """`keep`: how long window partitions must last (checked at start)."""
        from google.cloud.bigquery.retry import DEFAULT_RETRY

        self.name = f"bigquery:{project}.{dataset}"
        #: why `writable` last said no ("" when it said yes), for /readyz
        self.unwritable_reason = ""
        self.project = project
        self.dataset = dataset
        self._client = client or make_client(project, location, emulator_host)
        self._clock = clock or (lambda: datetime.now(tz=UTC))
        self._timeout = write_timeout
        # backoff 0.5 s, 1 s, 2 s, ... for at most `write_timeout`: the engine retries after that
        self._retry = DEFAULT_RETRY.with_delay(initial=0.5, maximum=5.0).with_timeout(write_timeout)
        self.incarnation = uuid.uuid4().hex[:12]
        #: (writer, sequence) of a checkpoint not yet fully written -> (table, insertId) of its
        #: rows that landed; a retry skips them (see the module docstring)
        self._landed: dict[tuple[str, int], set[tuple[str, str]]] = {}
        self.rows_written: dict[str, int] = {}
        self.bytes_written: dict[str, int] = {}
        self._max_request_bytes = max_request_bytes
        self._max_request_rows = max_request_rows
        if check:
            where = (
                f"{emulator_host} (BIGQUERY_EMULATOR_HOST)"
                if emulator_host
                else "bigquery.googleapis.com (firewall, NetworkPolicy, Private Google Access)"
            )
            check_schema(
                self._client,
                project,
                dataset,
                timeout=write_timeout,
                endpoint=where,
                keep=keep,
            )

    def _ref(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    # -- writes --------------------------------------------------------------------------------

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Every row is built (and serialised) before the first insert, so bad data stores
        nothing; then one insert per table, `writer_progress` last. Rows that landed in an
        earlier attempt of this checkpoint are not sent again: a fact table has no row_id
        that readers could dedup on, and BigQuery forgets an insertId after about a minute."""
        key = (checkpoint.writer_id, checkpoint.sequence)
        landed = self._landed_for(key)
        for table, rows, insert_ids in self.stage(checkpoint):
            fresh = [
                (r, i) for r, i in zip(rows, insert_ids, strict=True) if (table, i) not in landed
            ]
            for request in self._requests(fresh):
                self._insert(table, [r for r, _ in request], [i for _, i in request])
                landed.update((table, i) for _, i in request)
        del self._landed[key]

    def _requests(
        self, rows: list[tuple[dict[str, Any], str]]
    ) -> list[list[tuple[dict[str, Any], str]]]:
        """`rows` cut into insertAll requests within the byte and row limits, in order. A row
        larger than the byte limit goes alone (BigQuery then names it; rows stay far smaller:
        a window's held embedding sample is about 150 KB)."""
        requests: list[list[tuple[dict[str, Any], str]]] = []
        current: list[tuple[dict[str, Any], str]] = []
        size = 0
        for row, insert_id in rows:
            # as the client sends it: json.dumps escapes non-ASCII text (2-3x its UTF-8 size)
            row_bytes = len(json.dumps(row)) + len(insert_id) + 32  # insertId and wrapping
            full = size + row_bytes > self._max_request_bytes
            if current and (full or len(current) >= self._max_request_rows):
                requests.append(current)
                current, size = [], 0
            current.append((row, insert_id))
            size += row_bytes
        if current:
            requests.append(current)
        return requests

    def _id_parts(self, ids: list[str]) -> list[list[str]]:
        """A window's request ids in rows of at most half a request each. One poll of
        100-record messages (a backlog drained) put 300,000 ids in one window: a 12 MB row,
        refused by BigQuery at every retry, and ingest stopped acking."""
        limit = self._max_request_bytes // 2
        parts: list[list[str]] = [[]]
        size = 0
        for request_id in ids:
            cost = len(json.dumps(request_id)) + 2
            if parts[-1] and size + cost > limit:
                parts.append([])
                size = 0
            parts[-1].append(request_id)
            size += cost
        return parts

    def _landed_for(self, key: tuple[str, int]) -> set[tuple[str, str]]:
        """The rows of this checkpoint already stored. A writer's older sequences are dropped:
        the engine retries one checkpoint until it lands, so they never come back."""
        writer, sequence = key
        for old in [k for k in self._landed if k[0] == writer and k[1] != sequence]:
            del self._landed[old]
        return self._landed.setdefault(key, set())

    def stage(self, checkpoint: Checkpoint) -> list[tuple[str, list[dict[str, Any]], list[str]]]:
        """(table, JSON rows, insert ids) for each table the checkpoint touches, in write order."""
        staged: list[tuple[str, list[dict[str, Any]], list[str]]] = []
        now = _iso(self._clock())
        # insert ids: BigQuery drops a row whose id it saw in the last minute (a retried write)
        digest = f"{self.incarnation}-{checkpoint_digest(checkpoint)}"
        cp = checkpoint
        row_ids = {
            (p.model, p.window_start): partial_row_id(
                cp.writer_id, self.incarnation, cp.sequence, p.model, p.window_start
            )
            for p in cp.partials
        }
        if cp.request_ids:
            grouped: dict[tuple[str, int], list[str]] = {}
            for model, start, request_id in cp.request_ids:
                grouped.setdefault((model, start), []).append(request_id)
            rows: list[dict[str, Any]] = []
            insert_ids: list[str] = []
            for (model, start), ids in grouped.items():
                row_id = row_ids.get((model, start)) or partial_row_id(
                    cp.writer_id, self.incarnation, cp.sequence, model, start
                )
                for k, id_part in enumerate(self._id_parts(ids)):
                    rows.append(
                        {
                            "row_id": row_id,
                            "model": model,
                            "window_start": _ts(start),
                            "written_at": now,
                            "request_ids": id_part,
                        }
                    )
                    insert_ids.append(f"{row_id}-{digest}" + (f"-{k}" if k else ""))
            staged.append(("window_request_ids", rows, insert_ids))
        if cp.partials:
            rows = []
            empty = base64.b64encode(encode_states({})).decode()
            for p in cp.partials:
                states = base64.b64encode(encode_states(p.states)).decode()
                base_id = row_ids[(p.model, p.window_start)]
                for k, part in enumerate(slice_rows(p)):
                    rows.append(
                        {
                            "row_id": base_id
                            if k == 0
                            else partial_row_id(
                                cp.writer_id,
                                self.incarnation,
                                cp.sequence,
                                p.model,
                                p.window_start,
                                _slice_id(part),
                            ),
                            "model": p.model,
                            "window_start": _ts(p.window_start),
                            "window_end": _ts(p.window_end),
                            "writer_id": cp.writer_id,
                            "checkpoint_seq": cp.sequence,
                            "written_at": now,
                            **part,
                            "states": states if k == 0 else empty,
                        }
                    )
            staged.append(("window_metrics", rows, [f"{r['row_id']}-{digest}" for r in rows]))
        judged: tuple[str, list[dict[str, Any]], list[str]] | None = None
        if cp.detections:
            rows = [
                {
                    "model": d.model,
                    "window_start": _iso(d.window_start),
                    "detector": d.detector,
                    "window_end": _iso(d.window_end),
                    "verdict": d.verdict,
                    "condition": d.condition,
                    "severity": d.severity,
                    "value": d.value,
                    "threshold": d.threshold,
                    "baseline": d.baseline,
                    "p_value": d.p_value,
                    "sample_size": d.sample_size,
                    "reason": d.reason,
                    "details": orjson.dumps(d.details, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                    "evaluated_at": now,
                }
                for d in cp.detections
            ]
            judged = _facts("detections", rows, written="evaluated_at")
        if cp.alerts:
            rows = [
                {
                    "dedup_key": a.dedup_key,
                    "status": a.status,
                    "severity": a.severity,
                    "detector": a.detector,
                    "model": a.model,
                    "window_start": _iso(a.window_start),
                    "condition": a.condition,
                    "window_end": _iso(a.window_end),
                    "value": a.value,
                    "threshold": a.threshold,
                    "baseline": a.baseline,
                    "sample_size": a.sample_size,
                    "summary": a.summary,
                    "emitted_at": now,
                }
                for a in cp.alerts
            ]
            staged.append(_facts("alerts", rows, written="emitted_at"))
        # a window reads as judged once its detections are stored (`load_window`,
        # `unevaluated_windows`), and the alert state carries the tracker past it. Detections
        # after the alerts: a crash between them leaves the window to be judged again, and the
        # transition is made (and sent) again. Before the alert state: a successor restored
        # from a state that has the incident open would never page for it, while one restored
        # from the state before it pages at the incident's next window.
        if judged is not None:
            staged.append(judged)
        if cp.quarantined:
            rows = [
                {
                    "model": r.model,
                    "request_id": r.request_id,
                    "event_time_unix": r.event_time,
                    "reason": r.reason,
                    "writer_id": cp.writer_id,
                    "quarantined_at": now,
                }
                for r in cp.quarantined
            ]
            staged.append(_facts("quarantined_records", rows, written="quarantined_at"))
        if cp.baseline_accepts:
            rows = [
                {
                    "model": a.model,
                    "detector": a.detector,
                    "incident_started_at": _iso(a.incident_started_at),
                    "accepted_at": _iso(a.accepted_at),
                    "accepted_by": a.accepted_by,
                }
                for a in cp.baseline_accepts
            ]
            staged.append(_facts("baseline_accepts", rows, written=""))
        if cp.alert_state is not None:
            row = {
                "written_at": now,
                "writer_id": cp.writer_id,
                "checkpoint_seq": cp.sequence,
                "state": orjson.dumps(list(cp.alert_state)).decode(),
            }
            staged.append(("alert_state", [row], [f"{digest}-s"]))
        if cp.references:
            rows = [
                {
                    "model": m,
                    "detector": d,
                    "state": orjson.dumps(state).decode(),
                    "updated_at": now,
                }
                for (m, d), state in sorted(cp.references.items())
            ]
            staged.append(
                ("detector_references", rows, [f"{digest}-r{i}" for i in range(len(rows))])
            )
        if cp.frontier is not None:
            row = {"writer_id": cp.writer_id, "frontier_unix": cp.frontier, "updated_at": now}
            staged.append(("writer_progress", [row], [f"{digest}-f"]))
        return staged

    def _insert(self, table: str, rows: list[dict[str, Any]], insert_ids: list[str]) -> None:
        from google.api_core import exceptions

        ref = self._ref(table)
        try:
            errors = self._client.insert_rows_json(
                ref, rows, row_ids=insert_ids, retry=self._retry, timeout=self._timeout
            )
        except (exceptions.BadRequest, exceptions.Forbidden, exceptions.NotFound) as error:
            msg = f"BigQuery rejected rows for {ref}: {error.message}"
            raise BigQuerySinkError(msg) from error
        except Exception as error:  # transient after retries: the engine retries the checkpoint
            msg = f"BigQuery {ref} unreachable after {self._timeout:.0f} s of retries: {error}"
            raise BigQuerySinkError(msg) from error
        if errors:
            first = errors[0]["errors"][0] if errors[0].get("errors") else {}
            column = first.get("location") or "?"
            msg = (
                f"BigQuery rejected {len(errors)} row(s) for {ref}, column {column}: "
                f"{first.get('message', errors[0])}"
            )
            raise BigQuerySinkError(msg)
        self.rows_written[table] = self.rows_written.get(table, 0) + len(rows)
        self.bytes_written[table] = self.bytes_written.get(table, 0) + sum(
            len(orjson.dumps(r)) for r in rows
        )

    # -- reads ---------------------------------------------------------------------------------

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run SQL with named @parameters; `{ds}` is replaced by `project.dataset`, and
        unqualified table names are the sink's dataset's."""
        from google.api_core import exceptions
        from google.cloud import bigquery

        def kind_of(value: Any) -> str:
            if isinstance(value, bool):
                return "BOOL"
            if isinstance(value, int):
                return "INT64"
            if isinstance(value, float):
                return "FLOAT64"
            if isinstance(value, datetime):
                return "TIMESTAMP"
            return "STRING"

        query_params: list[Any] = []
        for name, value in (params or {}).items():
            if isinstance(value, list):  # an ARRAY parameter (`IN UNNEST(@name)`)
                kind = kind_of(value[0]) if value else "STRING"
                query_params.append(bigquery.ArrayQueryParameter(name, kind, value))
            else:
                query_params.append(bigquery.ScalarQueryParameter(name, kind_of(value), value))
        # unqualified table names resolve in the sink's dataset (as in the README's examples)
        config = bigquery.QueryJobConfig(
            query_parameters=query_params, default_dataset=f"{self.project}.{self.dataset}"
        )
        text = sql.replace("{ds}", f"`{self.project}.{self.dataset}`")
        try:
            rows = self._client.query_and_wait(
                text,
                job_config=config,
                retry=self._retry,
                job_retry=self._retry,
                api_timeout=self._timeout,
                wait_timeout=self._timeout,
            )
            return [dict(r.items()) for r in rows]
        except exceptions.GoogleAPICallError as error:
            msg = f"BigQuery query on {self.dataset} failed: {error.message}"
            raise BigQuerySinkError(msg) from error
        except Exception as error:
            msg = f"BigQuery {self.dataset} unreachable: {error}"
            raise BigQuerySinkError(msg) from error

    def stored_records(self, windows: Sequence[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        """One query for every window of a checkpoint; it reads typed columns only (row_id,
        written_at, model, window_start, records), never the states."""
        if not windows:
            return {}
        rows = self.query(
            "SELECT model, UNIX_SECONDS(window_start) AS s, SUM(records) AS n FROM ("
            "SELECT row_id, written_at, model, window_start, records FROM {ds}.window_metrics "
            "WHERE window_start IN UNNEST(@starts) AND model IN UNNEST(@models) "
            f"{_DEDUP}) GROUP BY model, s",
            {
                "starts": sorted({datetime.fromtimestamp(s, tz=UTC) for _, s in windows}),
                "models": sorted({m for m, _ in windows}),
            },
        )
        wanted = set(windows)
        found = {(str(r["model"]), int(r["s"])): int(r["n"]) for r in rows}
        return {key: n for key, n in found.items() if key in wanted}

    def judged_windows(self, windows: Sequence[tuple[str, int]]) -> frozenset[tuple[str, int]]:
        """One query before each checkpoint of an ingest replica: `detections` is partitioned
        by day of `window_start`, so it reads the checkpoint's days only."""
        if not windows:
            return frozenset()
        rows = self.query(
            "SELECT DISTINCT model, UNIX_SECONDS(window_start) AS s FROM {ds}.detections "
            "WHERE window_start IN UNNEST(@starts) AND model IN UNNEST(@models)",
            {
                "starts": sorted({datetime.fromtimestamp(s, tz=UTC) for _, s in windows}),
                "models": sorted({m for m, _ in windows}),
            },
        )
        found = {(str(r["model"]), int(r["s"])) for r in rows}
        return frozenset(found.intersection(windows))

    def newest_window_start(self, model: str) -> int | None:
        rows = self.query(
            "SELECT UNIX_SECONDS(MAX(window_start)) AS s FROM {ds}.window_metrics "
            "WHERE model = @model",
            {"model": model},
        )
        value = rows[0]["s"] if rows else None
        return None if value is None else int(value)

    def load_window(self, model: str, window_start: int) -> StoredWindow:
        params = {"model": model, "start": datetime.fromtimestamp(window_start, tz=UTC)}
        partials = self.query(
            "SELECT states, records, model_version FROM {ds}.window_metrics "
            f"WHERE model = @model AND window_start = @start {_DEDUP}",
            params,
        )
        # only ids whose partial row landed: a writer killed between the two inserts (ids go
        # first) would otherwise make its records look counted when they are in no row, and a
        # redelivery to another replica would skip them as duplicates: lost
        ids = self.query(
            "SELECT request_id FROM (SELECT row_id, request_ids FROM {ds}.window_request_ids "
            "WHERE model = @model AND window_start = @start QUALIFY ROW_NUMBER() OVER "
            # a window's ids may fill several rows of one row_id: told apart by their first
            "(PARTITION BY row_id, request_ids[SAFE_OFFSET(0)] ORDER BY written_at DESC) = 1) "
            "AS r, "
            "UNNEST(r.request_ids) AS request_id WHERE r.row_id IN (SELECT row_id FROM "
            "{ds}.window_metrics WHERE model = @model AND window_start = @start)",
            params,
        )
        judged = self.query(
            "SELECT COUNT(*) AS n FROM {ds}.detections WHERE model = @model "
            "AND window_start = @start",
            params,
        )
        versions: dict[str | None, int] = {}
        for r in partials:
            add_version_records(versions, r["model_version"], r["records"])
        return StoredWindow(
            partial_states=[d for r in partials if (d := decode_states(r["states"]))],
            request_ids=frozenset(str(r["request_id"]) for r in ids),
            records=sum(int(r["records"]) for r in partials),
            evaluated=bool(judged and judged[0]["n"]),
            versions=versions,
        )

    def load_windows(
        self, windows: Sequence[tuple[str, int]]
    ) -> Mapping[tuple[str, int], StoredWindow]:
        """`load_window`'s three queries once for all of a poll's windows (a superset by
        model and start, cut to the windows asked for): one by one, a poll of redelivered
        messages spanning ten windows was thirty queries, in turn, on the main loop."""
        if not windows:
            return {}
        where = "window_start IN UNNEST(@starts) AND model IN UNNEST(@models)"
        params = {
            "starts": sorted({datetime.fromtimestamp(s, tz=UTC) for _, s in windows}),
            "models": sorted({m for m, _ in windows}),
        }
        partials = self.query(
            "SELECT model, UNIX_SECONDS(window_start) AS s, states, records, model_version "
            f"FROM {{ds}}.window_metrics WHERE {where} {_DEDUP}",
            params,
        )
        # as in `load_window`: only ids whose partial row landed
        ids = self.query(
            "SELECT r.model AS model, UNIX_SECONDS(r.window_start) AS s, request_id FROM ("
            "SELECT row_id, model, window_start, request_ids FROM {ds}.window_request_ids "
            f"WHERE {where} QUALIFY ROW_NUMBER() OVER "
            "(PARTITION BY row_id, request_ids[SAFE_OFFSET(0)] ORDER BY written_at DESC) = 1) "
            "AS r, UNNEST(r.request_ids) AS request_id WHERE r.row_id IN (SELECT row_id FROM "
            f"{{ds}}.window_metrics WHERE {where})",
            params,
        )
        judged = self.query(
            "SELECT model, UNIX_SECONDS(window_start) AS s, COUNT(*) AS n FROM {ds}.detections "
            f"WHERE {where} GROUP BY model, s",
            params,
        )

        def key(row: Mapping[str, Any]) -> tuple[str, int]:
            return str(row["model"]), int(row["s"])

        states: dict[tuple[str, int], list[Mapping[str, DetectorRow]]] = {}
        records: dict[tuple[str, int], int] = {}
        versions: dict[tuple[str, int], dict[str | None, int]] = {}
        for r in partials:
            records[key(r)] = records.get(key(r), 0) + int(r["records"])
            add_version_records(versions.setdefault(key(r), {}), r["model_version"], r["records"])
            if decoded := decode_states(r["states"]):
                states.setdefault(key(r), []).append(decoded)
        stored_ids: dict[tuple[str, int], set[str]] = {}
        for r in ids:
            stored_ids.setdefault(key(r), set()).add(str(r["request_id"]))
        evaluated = {key(r) for r in judged if r["n"]}
        return {
            k: StoredWindow(
                partial_states=states.get(k, []),
                request_ids=frozenset(stored_ids.get(k, ())),
                records=records.get(k, 0),
                evaluated=k in evaluated,
                versions=versions.get(k, {}),
            )
            for k in dict.fromkeys(windows)
        }

    def load_recent_windows(
        self, model: str, since: int, until: int
    ) -> Mapping[int, Sequence[Mapping[str, DetectorRow]]]:
        rows = self.query(
            "SELECT UNIX_SECONDS(window_start) AS s, states FROM {ds}.window_metrics "
            f"WHERE model = @model AND window_start >= @since AND window_start < @until {_DEDUP}",
            {
                "model": model,
                "since": datetime.fromtimestamp(since, tz=UTC),
                "until": datetime.fromtimestamp(until, tz=UTC),
            },
        )
        out: dict[int, list[Mapping[str, DetectorRow]]] = {}
        for r in sorted(rows, key=lambda r: int(r["s"])):
            if decoded := decode_states(r["states"]):  # slice rows past the first carry none
                out.setdefault(int(r["s"]), []).append(decoded)
        return out

    def models(self) -> Sequence[str]:
        rows = self.query("SELECT DISTINCT model FROM {ds}.window_metrics ORDER BY model")
        return [str(r["model"]) for r in rows]

    def unevaluated_windows(
        self, limit: int, *, since: int | None = None
    ) -> Sequence[tuple[str, int]]:
        # both tables are partitioned by DATE(window_start): `since` prunes what is read
        recent = "" if since is None else " WHERE window_start >= TIMESTAMP_SECONDS(@since)"
        rows = self.query(
            "SELECT DISTINCT w.model AS model, UNIX_SECONDS(w.window_start) AS s "
            f"FROM (SELECT model, window_start FROM {{ds}}.window_metrics{recent}) AS w "
            "LEFT JOIN "
            f"(SELECT DISTINCT model, window_start FROM {{ds}}.detections{recent}) AS d "
            "ON d.model = w.model AND d.window_start = w.window_start "
            "WHERE d.model IS NULL ORDER BY s, model LIMIT @limit",
            {"limit": limit} if since is None else {"limit": limit, "since": since},
        )
        return [(str(r["model"]), int(r["s"])) for r in rows]

    def load_alert_state(self) -> Sequence[Mapping[str, Any]]:
        rows = self.query(
            "SELECT state FROM {ds}.alert_state "
            "ORDER BY written_at DESC, checkpoint_seq DESC LIMIT 1"
        )
        if not rows:
            return []
        state: list[Mapping[str, Any]] = orjson.loads(rows[0]["state"])
        return state

    def load_frontier(
        self, active_within: float = 60.0, *, excluding: str | None = None
    ) -> float | None:
        """The evaluator's read every few seconds: only the last day's progress rows (the
        table gains a row per writer per checkpoint, and is partitioned by day of
        `updated_at`), which holds every writer still within `active_within` of the newest."""
        recent = self._clock() - timedelta(seconds=max(FRONTIER_LOOKBACK_SECONDS, active_within))
        rows = self.query(
            "WITH latest AS (SELECT writer_id, frontier_unix, updated_at "
            "FROM {ds}.writer_progress WHERE updated_at >= @recent QUALIFY ROW_NUMBER() OVER "
            "(PARTITION BY writer_id ORDER BY updated_at DESC) = 1) "
            "SELECT MIN(frontier_unix) AS f FROM latest WHERE updated_at >= "
            "TIMESTAMP_SUB((SELECT MAX(updated_at) FROM latest), INTERVAL @ms MILLISECOND) "
            "AND writer_id != @excluding",
            {"ms": round(active_within * 1000), "recent": recent, "excluding": excluding or ""},
        )
        value = rows[0]["f"] if rows else None
        return None if value is None else float(value)

    def any_writer_progress(self) -> bool:
        """Asked every few seconds only while the evaluator is not ready yet."""
        rows = self.query("SELECT COUNT(*) AS n FROM (SELECT 1 FROM {ds}.writer_progress LIMIT 1)")
        return bool(rows and rows[0]["n"])

    def newest_frontier(self, *, excluding: str) -> float | None:
        recent = self._clock() - timedelta(seconds=FRONTIER_LOOKBACK_SECONDS)
        rows = self.query(
            "SELECT MAX(frontier_unix) AS f FROM {ds}.writer_progress "
            "WHERE updated_at >= @recent AND writer_id != @excluding",
            {"recent": recent, "excluding": excluding},
        )
        value = rows[0]["f"] if rows else None
        return None if value is None else float(value)

    def writer_frontier(self, writer_id: str) -> float | None:
        rows = self.query(
            "SELECT frontier_unix AS f FROM {ds}.writer_progress WHERE writer_id = @w "
            "ORDER BY updated_at DESC LIMIT 1",
            {"w": writer_id},
        )
        return float(rows[0]["f"]) if rows else None

    def load_references(self) -> Mapping[tuple[str, str], DetectorRow]:
        rows = self.query(
            "SELECT model, detector, state FROM {ds}.detector_references WHERE TRUE "
            "QUALIFY ROW_NUMBER() OVER (PARTITION BY model, detector ORDER BY updated_at DESC) = 1"
        )
        return {(str(r["model"]), str(r["detector"])): orjson.loads(r["state"]) for r in rows}

    def stored_alerts(self, alerts: Sequence[Alert]) -> frozenset[AlertChangeKey]:
        keys = {a.change_key for a in alerts}
        if not keys:
            return frozenset()
        rows = self.query(
            "SELECT DISTINCT dedup_key, status, UNIX_MILLIS(window_end) AS ms FROM {ds}.alerts "
            "WHERE dedup_key IN UNNEST(@keys)",
            {"keys": sorted({k[0] for k in keys})},
        )
        stored = {(str(r["dedup_key"]), str(r["status"]), int(r["ms"])) for r in rows}
        return frozenset(stored & keys)

    def load_baseline_accepts(self) -> Sequence[BaselineAccept]:
        rows = self.query(
            "SELECT DISTINCT model, detector, incident_started_at, accepted_at, accepted_by "
            "FROM {ds}.baseline_accepts ORDER BY accepted_at"
        )
        return [
            BaselineAccept(
                str(r["model"]),
                str(r["detector"]),
                r["incident_started_at"],
                r["accepted_at"],
                str(r["accepted_by"]),
            )
            for r in rows
        ]

    def writable(self) -> bool:
        """For /readyz: the dataset answers within a few seconds (why not in
        `unwritable_reason`, for the body: `not ready: sink` alone sent the on-call to logs)."""
        try:
            self._client.get_table(self._ref("window_metrics"), timeout=5, retry=None)
        except Exception as error:
            self.unwritable_reason = f"{self.name}: {type(error).__name__}: {error}"[:300]
            return False
        self.unwritable_reason = ""
        return True

    def close(self) -> None:
        self._client.close()
