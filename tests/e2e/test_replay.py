"""`lookout replay` as a user runs it: bad records, replays, SIGTERM, and the alerts file.

Inputs are small seeded `lookout simulate` streams (see conftest). Every count is checked against
the stream itself, down to the request ids: the good records are exactly the untouched lines.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    INCIDENT_OFFSET_MINUTES,
    REPLAY_TIMEOUT,
    SIMULATED_MODELS,
    Result,
    RunningLookout,
    Stream,
    assert_no_traceback,
    calls_per_model,
    counted_request_ids,
    lookout,
    query,
    total_calls,
)

#: a bad record's report: `FILE: line N: [field F: ]reason`
REPORT = re.compile(r"^(?P<file>\S+): line (?P<line>\d+): (?P<reason>.+)$")
SUMMARY = re.compile(
    r"^replayed (?P<file>\S+): (?P<records>\d+) records counted, (?P<duplicates>\d+) duplicates "
    r"skipped, (?P<invalid>\d+) invalid, (?P<quarantined>\d+) quarantined \(event time\), "
    r"(?P<late>\d+) late, (?P<windows>\d+) windows? evaluated, "
    r"(?P<alerts>\d+) alert changes?"
    r"(?: \(not printed: (?:(?P<routed>\d+) routed to receivers(?:, )?)?(?:(?P<info>\d+) "
    r"info)?; all in the alerts table[^)]*\))?"
    r"(?P<signal> \(stopped by signal\))?$"
)
#: what each kind of bad record's reason must mention (the field, or why the line is not JSON)
REASON_MENTIONS = {
    "truncated_json": ("json",),
    "string_latency": ("latency_ms",),
    "negative_tokens": ("token",),
    "nan_embedding": ("json", "embedding"),  # NaN is not JSON; either report is right
    "infinite_embedding": ("embedding",),
    "unknown_shape": ("",),
}
#: `--alerts-out` lines: the issue's keys, plus `condition` (documented on `Alert`: what was
#: tested; with model and detector it makes the dedup key)
ALERT_KEYS = {
    "dedup_key",
    "status",
    "severity",
    "detector",
    "model",
    "window_start",
    "window_end",
    "value",
    "threshold",
    "baseline",
    "sample_size",
    "summary",
    "condition",
}
WINDOW = timedelta(seconds=60)
INCIDENT_OFFSET = timedelta(minutes=INCIDENT_OFFSET_MINUTES)
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def summary_of(result: Result) -> re.Match[str]:
    matches = [m for m in map(SUMMARY.match, result.stderr.splitlines()) if m]
    assert len(matches) == 1, f"expected one summary line\n{result.describe()}"
    return matches[0]


def assert_exit_for_bad_records(result: Result, summary: re.Match[str]) -> None:
    """`lookout replay` exits 1 when it skipped bad records (after counting every good one),
    0 when there were none: a script sees bad input without parsing stderr."""
    expected = 1 if int(summary["invalid"]) else 0
    assert result.returncode == expected, result.describe()


def merged_snapshot(db: Path) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT model, window_start, records, late_records, calls, blocked, prompt_blocks, "
        "response_blocks, latency_count, input_tokens, output_tokens "
        "FROM window_metrics_merged ORDER BY model, window_start",
    )


def assert_counts_match(db: Path, stream: Stream) -> None:
    """Every good record counted once, per model and by request id; nothing else."""
    assert total_calls(db) == stream.good_count
    assert calls_per_model(db) == stream.good_per_model()
    counted = counted_request_ids(db)
    expected = stream.good_ids()
    missing = expected - counted
    extra = counted - expected
    assert not missing and not extra, (
        f"{sum(missing.values())} good records not counted (e.g. {list(missing)[:5]}), "
        f"{sum(extra.values())} counted that should not be (e.g. {list(extra)[:5]})"
    )


# -- one stream replayed twice: bad records, no double counting, no second page ---------------


@dataclass(frozen=True)
class TwoReplays:
    stream: Stream
    db: Path
    first: Result
    second: Result
    alerts_first: Path
    alerts_second: Path
    dead_letters: Path
    after_first: list[tuple[Any, ...]]
    alert_rows_after_first: list[tuple[Any, ...]]


@pytest.fixture(scope="module")
def two_replays(corrupted_stream: Stream, tmp_path_factory: pytest.TempPathFactory) -> TwoReplays:
    """The corrupted incident stream replayed twice into one DuckDB file, each run with its own
    alerts file; the tests below read what each run left behind."""
    where = tmp_path_factory.mktemp("twice")
    db = where / "lookout.duckdb"
    alerts = (where / "alerts-1.jsonl", where / "alerts-2.jsonl")
    dead = where / "dead-letters.ndjson"
    first = lookout(
        "replay", corrupted_stream.path, "--db", db, "--alerts-out", alerts[0],
        "--dead-letter", dead, cwd=where, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert first.returncode == 1, first.describe()  # the stream holds bad records
    snapshot = merged_snapshot(db)
    alert_rows = query(db, "SELECT dedup_key, status, window_start FROM alerts ORDER BY ALL")
    second = lookout(
        "replay", corrupted_stream.path, "--db", db, "--alerts-out", alerts[1],
        cwd=where, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    return TwoReplays(
        corrupted_stream, db, first, second, alerts[0], alerts[1], dead, snapshot, alert_rows
    )


def bad_record_reports(result: Result, stream: Stream) -> tuple[dict[int, list[str]], list[str]]:
    """{line: [reason, …]} of the bad-record reports on stderr, and every other stderr line
    except the summary."""
    reports: dict[int, list[str]] = {}
    others: list[str] = []
    for text in result.stderr.splitlines():
        match = REPORT.match(text)
        if match and match["file"] == str(stream.path):
            reports.setdefault(int(match["line"]), []).append(match["reason"])
        elif not SUMMARY.match(text):
            others.append(text)
    return reports, others


def test_replay_reports_each_bad_record_once_and_counts_every_good_one(
    two_replays: TwoReplays,
) -> None:
    """~1% malformed records: one stderr line per bad record naming its line and reason, every
    good record counted, nothing else lost, and exit 1 so a script notices the bad input."""
    result, stream = two_replays.first, two_replays.stream
    assert result.returncode == 1, result.describe()
    assert_no_traceback(result)
    reports, others = bad_record_reports(result, stream)
    assert sorted(reports) == sorted(stream.bad), "reported lines != malformed lines"
    assert all(len(r) == 1 for r in reports.values()), "a bad record reported more than once"
    for number, kind in stream.bad.items():
        (reason,) = reports[number]
        assert any(word in reason.lower() for word in REASON_MENTIONS[kind]), (
            f"line {number} ({kind}): reason {reason!r} names neither the field nor the problem"
        )
    assert others == [], "stderr holds more than bad-record reports and the summary"

    summary = summary_of(result)
    assert int(summary["records"]) == stream.good_count
    assert int(summary["invalid"]) == len(stream.bad)
    assert int(summary["duplicates"]) == 0
    assert not summary["signal"]
    # nothing else lost: the DuckDB file holds exactly the good records (checked after a second
    # replay below, too)
    assert sum(row[4] for row in two_replays.after_first) == stream.good_count


def test_replaying_the_same_file_twice_does_not_double_count(two_replays: TwoReplays) -> None:
    r = two_replays
    assert r.second.returncode == 1, r.second.describe()  # the same bad records again
    assert_no_traceback(r.second)
    n = r.stream.good_count
    first, second = summary_of(r.first), summary_of(r.second)
    assert (int(first["records"]), int(first["duplicates"])) == (n, 0)
    assert (int(second["records"]), int(second["duplicates"])) == (0, n)
    assert int(second["invalid"]) == len(r.stream.bad)
    # and says why nothing was counted, so a second simulated file of the same seed is no mystery
    assert f"{n} records were already counted" in r.second.stderr, r.second.stderr
    assert "already counted" not in r.first.stderr
    assert merged_snapshot(r.db) == r.after_first, "the second replay changed the windows"
    assert_counts_match(r.db, r.stream)


def test_replaying_again_pages_nobody_again(two_replays: TwoReplays) -> None:
    """One incident, one page: a replay of windows already evaluated sends no alert."""
    r = two_replays
    assert r.second.returncode == 1, r.second.describe()  # its bad records, not a page
    assert not r.alerts_second.exists() or r.alerts_second.read_text() == ""
    assert "[FIRING]" not in r.second.stdout
    rows = query(r.db, "SELECT dedup_key, status, window_start FROM alerts ORDER BY ALL")
    assert rows == r.alert_rows_after_first


def test_dead_letter_file_keeps_every_bad_record_with_its_line(two_replays: TwoReplays) -> None:
    """`--dead-letter` (README): the bad records themselves, byte for byte, with their line."""
    stream = two_replays.stream
    entries = [json.loads(line) for line in two_replays.dead_letters.read_bytes().splitlines()]
    assert sorted(e["line"] for e in entries) == sorted(stream.bad)
    for entry in entries:
        original = stream.lines[entry["line"] - 1].rstrip(b"\n")
        assert entry["raw"].encode() == original, f"line {entry['line']}: raw bytes changed"
        assert entry["error_detail"], entry


# -- the alerts file --------------------------------------------------------------------------


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_alerts_out_has_the_documented_keys_and_one_incident_per_model(
    two_replays: TwoReplays,
) -> None:
    r = two_replays
    assert r.first.returncode == 1, r.first.describe()
    lines = r.alerts_first.read_text().splitlines()
    alerts = [json.loads(line) for line in lines]
    assert alerts, f"no alerts written\n{r.first.describe()}"
    # the summary counts every change and says how many are info (not printed, only here)
    summary = summary_of(r.first)
    assert int(summary["alerts"]) == len(alerts)
    assert int(summary["info"] or 0) == sum(a["severity"] == "info" for a in alerts)
    for alert in alerts:
        assert set(alert) == ALERT_KEYS, alert
        assert alert["status"] in ("firing", "resolved")
        assert alert["severity"] in ("info", "warning", "critical")
        assert _parse_time(alert["window_start"]) < _parse_time(alert["window_end"])
        assert isinstance(alert["sample_size"], int) and alert["sample_size"] > 0
        for key in ("value", "threshold", "baseline"):
            assert alert[key] is None or isinstance(alert[key], int | float), (key, alert)
        assert alert["summary"].strip()
        assert alert["model"] in alert["dedup_key"] and alert["detector"] in alert["dedup_key"]

    (first_window,) = query(r.db, "SELECT min(window_start) FROM window_metrics_merged")[0]
    incident_start = first_window + INCIDENT_OFFSET
    for model in SIMULATED_MODELS:
        safety = [a for a in alerts if a["model"] == model and a["detector"] == "safety"]
        firing = [a for a in safety if a["status"] == "firing"]
        resolved = [a for a in safety if a["status"] == "resolved"]
        assert firing, f"{model}: the safety spike did not page"
        assert len({a["dedup_key"] for a in firing}) == 1, f"{model}: one incident, two keys"
        # a second firing is allowed only as an escalation of the same incident (documented:
        # alerting.notify_on_escalation), never a repeat at the same severity
        ranks = [SEVERITY_RANK[a["severity"]] for a in firing]
        assert ranks == sorted(set(ranks)), f"{model}: paged again without escalating: {firing}"
        page = firing[0]
        assert page["severity"] in ("warning", "critical")
        assert page["value"] > page["threshold"] >= page["baseline"]
        caught = _parse_time(page["window_start"])
        assert incident_start <= caught < incident_start + 2 * WINDOW, (
            f"{model}: safety alert for the window at {caught}, incident began {incident_start}"
        )
        assert [a["dedup_key"] for a in resolved] == [page["dedup_key"]], (
            f"{model}: the incident did not resolve exactly once"
        )
        assert alerts.index(resolved[0]) > alerts.index(firing[-1])
    pages = [a for a in alerts if a["status"] == "firing" and a["severity"] != "info"]
    assert {a["detector"] for a in pages} == {"safety"}, "a detector paged with no incident"

    # the console shows one line per page (info-severity changes go to the log receiver by
    # default: alerting.info_receiver), and the alerts table holds every change
    console = [line for line in r.first.stdout.splitlines() if "[FIRING]" in line]
    assert len(console) == len(pages)
    rows = query(r.db, "SELECT dedup_key, status FROM alerts")
    assert Counter(rows) == Counter((a["dedup_key"], a["status"]) for a in alerts)


# -- SIGTERM mid-replay -----------------------------------------------------------------------

GRACE_SECONDS = 6.0
PROGRESS = re.compile(r"([\d,]+) records")
#: `lookout replay` reads a file 16 chunks of 2,000 lines at a time and looks for a stop signal
#: between reads, so a stream longer than one read is what leaves input unread at a SIGTERM
ONE_READ = 16 * 2000
#: the replay finishes the read in hand before it stops (up to 32,000 records: seconds on a busy
#: machine, and not bounded by the grace period — reported), so the signal is sent late in the
#: first read: three of its 2,000-line chunks still to fold, the rest of the file unread
SIGNAL_AT_RECORDS = ONE_READ // 4  # reads are pipelined: leave most of the file unread


@pytest.fixture(scope="module")
def long_stream(corrupted_stream: Stream, tmp_path_factory: pytest.TempPathFactory) -> Stream:
    """The corrupted stream, then a copy of its first lines under other request ids (a second
    gateway replica's traffic for the same minutes): just longer than one read."""
    base = corrupted_stream.lines
    extra = ONE_READ + 1000 - len(base)
    assert 0 < extra <= len(base)
    copies = [line.replace(b'"sim', b'"replica2-sim') for line in base[:extra]]
    assert all(b'"replica2-sim' in line for line in copies[:50] if b'"sim' in line)
    bad = {**corrupted_stream.bad}
    bad.update({len(base) + n: kind for n, kind in corrupted_stream.bad.items() if n <= extra})
    path = tmp_path_factory.mktemp("long") / "long.ndjson"
    lines = (*base, *copies)
    path.write_bytes(b"".join(lines))
    return Stream(path, lines, bad)


def test_sigterm_mid_replay_exits_in_grace_and_a_rerun_completes_the_counts(
    long_stream: Stream, workdir: Path
) -> None:
    """SIGTERM once the progress display (stderr on a terminal) shows most of a read folded.

    The run finishes the read in hand, writes a final checkpoint and exits 143 within the grace
    period, leaving the rest of the file unread; what it wrote is consistent (every window's
    counts agree with the request ids it holds); a rerun of the same file counts exactly the
    records the first run did not, and evaluates the windows it left open.
    """
    stream = long_stream
    db = workdir / "lookout.duckdb"
    env = {
        "LOOKOUT_ENGINE__GRACE_PERIOD_SECONDS": str(GRACE_SECONDS),
        "LOOKOUT_ENGINE__CHECKPOINT_SECONDS": "0.5",
        "TERM": "xterm-256color",
    }
    replay = RunningLookout(
        "replay", stream.path, "--db", db, cwd=workdir, env=env, stderr_on_terminal=True
    )
    try:

        def late_in_the_first_read(out: str, err: str) -> bool:
            shown = [int(n.replace(",", "")) for n in PROGRESS.findall(err)]
            return bool(shown) and max(shown) >= SIGNAL_AT_RECORDS

        replay.wait_for("progress on the terminal", late_in_the_first_read, REPLAY_TIMEOUT)
        replay.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        result = replay.wait(timeout=GRACE_SECONDS + 60)
        took = time.monotonic() - sent
    finally:
        replay.kill()

    assert took <= GRACE_SECONDS, f"exited {took:.1f} s after SIGTERM (grace {GRACE_SECONDS} s)"
    assert_no_traceback(result)
    summary = summary_of_terminal(result)
    # 143, as a shell reports it: `replay F && next` went on with part of F on exit 0
    assert result.returncode == 128 + signal.SIGTERM, result.describe()
    assert summary["signal"], "the summary does not say the replay was stopped"
    counted = int(summary["records"])
    assert 0 < counted < stream.good_count, "the replay was not stopped mid-way"

    # consistent: the aggregates and the dedup ids of every window were written together
    assert total_calls(db) == counted
    ids = counted_request_ids(db)
    assert sum(ids.values()) == counted and max(ids.values()) == 1
    # … and they are a prefix of the file: the replay read in order and stopped reading
    in_order = [i[0] for i in stream.identities if i is not None]
    first_unread = next(n for n, rid in enumerate(in_order) if rid not in ids)
    assert set(ids) == set(in_order[:first_unread]), "counted records are not a prefix"
    disagree = query(
        db,
        "SELECT m.model, m.window_start, m.calls, count(i.request_id) FROM window_metrics_merged m "
        "LEFT JOIN window_request_ids i USING (model, window_start) GROUP BY ALL "
        "HAVING m.calls != count(i.request_id)",
    )
    assert disagree == [], "windows whose counts disagree with their request ids"

    rerun = lookout("replay", stream.path, "--db", db, cwd=workdir, timeout=REPLAY_TIMEOUT)
    assert_no_traceback(rerun)
    again = summary_of(rerun)
    assert_exit_for_bad_records(rerun, again)
    assert int(again["duplicates"]) == counted
    assert int(again["records"]) == stream.good_count - counted
    assert_counts_match(db, stream)
    unevaluated = query(
        db,
        "SELECT model, window_start FROM window_metrics_merged m WHERE NOT EXISTS "
        "(SELECT 1 FROM detections d WHERE d.model = m.model AND d.window_start = m.window_start)",
    )
    assert unevaluated == [], "windows the rerun left without a verdict"


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def summary_of_terminal(result: Result) -> re.Match[str]:
    """The summary line of a run whose stderr was a terminal (progress redraws stripped)."""
    lines = ANSI.sub("\n", result.stderr).splitlines()
    matches = [m for m in map(SUMMARY.match, (line.strip() for line in lines)) if m]
    assert len(matches) == 1, f"expected one summary line\n{result.describe()}"
    return matches[0]


GRACE = 4.0  # the rest of the read is handed back, not decoded first


def test_sigterm_early_in_a_read_exits_within_the_grace_period(
    long_stream: Stream, workdir: Path
) -> None:
    env = {"LOOKOUT_ENGINE__GRACE_PERIOD_SECONDS": str(GRACE), "TERM": "xterm-256color"}
    replay = RunningLookout(
        "replay",
        long_stream.path,
        "--db",
        workdir / "g.duckdb",
        cwd=workdir,
        env=env,
        stderr_on_terminal=True,
    )
    try:
        replay.wait_for(
            "first records folded",
            lambda out, err: any(int(n.replace(",", "")) > 0 for n in PROGRESS.findall(err)),
            REPLAY_TIMEOUT,
        )
        replay.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        result = replay.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        replay.kill()
    assert took <= GRACE, f"exited {took:.1f} s after SIGTERM; grace period {GRACE} s"
    assert_no_traceback(result)
    assert summary_of_terminal(result)["signal"], result.describe()
    assert result.returncode == 128 + signal.SIGTERM, result.describe()


# -- lines that break parsers: each costs only itself (issue 9) --------------------------------

#: the bad lines of `hostile_file` by the line number they end up at, and what each report says.
#: The file source reads 2,000 lines per chunk: lines 2,000 and 2,001 sit on both sides of a
#: chunk boundary, where one bad line used to take its 2,000 neighbours with it.
HOSTILE_LINES: dict[int, tuple[bytes, str]] = {
    2: (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested deeper than 64 levels"),
    3: (b"[" * 50_000 + b"]" * 50_000, "nested deeper than 64 levels"),
    # a producer writing Latin-1: `café` with 0xE9
    2000: (
        b'{"timestamp":"2025-01-01T00:00:00Z","model":"gemini-1.5-flash","prompt":"caf\xe9"}',
        "not UTF-8 text: byte 0xe9 at offset",
    ),
    # 3 MB on one line, three of the reader's 1 MB reads: cut past the limit, the rest skipped
    2001: (
        b'{"timestamp":"2025-01-01T00:00:00Z","model":"m","prompt":"' + b"x" * 3_000_000 + b'"}',
        "record is larger than the limit of 1,048,576 bytes (decode.max_record_bytes)",
    ),
    2500: (b"[1,2,3]", "an array on one line must hold records (JSON objects), got a number"),
}


@dataclass(frozen=True)
class HostileFiles:
    clean: Stream
    hostile: Path


def make_hostile_files(where: Path) -> HostileFiles:
    """A simulated stream of ~2,700 good lines, and the same lines with HOSTILE_LINES between."""
    clean = where / "clean.ndjson"
    made = lookout(
        "simulate", "--out", clean, "--hours", "0.05", "--rate", "300", "--seed", "5", cwd=where
    )
    assert made.returncode == 0, made.describe()
    lines = clean.read_bytes().splitlines(keepends=True)
    assert len(lines) > max(HOSTILE_LINES), len(lines)
    mixed = list(lines)
    for number in sorted(HOSTILE_LINES):
        mixed.insert(number - 1, HOSTILE_LINES[number][0] + b"\n")
    hostile = where / "hostile.ndjson"
    hostile.write_bytes(b"".join(mixed))
    return HostileFiles(Stream(clean, tuple(lines)), hostile)


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> HostileFiles:
    return make_hostile_files(tmp_path_factory.mktemp("hostile"))


def test_replay_of_lines_that_break_parsers_counts_every_good_record_once(
    hostile_files: HostileFiles, tmp_path: Path
) -> None:
    """A 50,000-deep line, invalid UTF-8, a 3 MB line and `[1,2,3]` between good lines: the
    DuckDB views hold exactly what the same file without them gives, and each bad line is one
    report naming its line. Before: 2,000 good records lost behind one "line 1" error."""
    clean_db, hostile_db = tmp_path / "clean.duckdb", tmp_path / "hostile.duckdb"
    clean = lookout(
        "replay", hostile_files.clean.path, "--db", clean_db, cwd=tmp_path, timeout=REPLAY_TIMEOUT
    )
    assert clean.returncode == 0, clean.describe()
    result = lookout(
        "replay", hostile_files.hostile, "--db", hostile_db, cwd=tmp_path, timeout=REPLAY_TIMEOUT
    )
    assert result.returncode == 1, result.describe()  # bad lines: reported, skipped, exit 1
    assert_no_traceback(result)
    summary = summary_of(result)
    assert int(summary["records"]) == hostile_files.clean.good_count == total_calls(hostile_db)
    assert int(summary["invalid"]) == len(HOSTILE_LINES)
    assert merged_snapshot(hostile_db) == merged_snapshot(clean_db)
    assert counted_request_ids(hostile_db) == counted_request_ids(clean_db)
    reports: dict[int, list[str]] = {}
    for text in result.stderr.splitlines():
        match = REPORT.match(text)
        if match:
            assert match["file"] == str(hostile_files.hostile), text
            reports.setdefault(int(match["line"]), []).append(match["reason"])
    assert sorted(reports) == sorted(HOSTILE_LINES), result.describe()
    for number, (_, reason) in HOSTILE_LINES.items():
        (got,) = reports[number]
        assert got.startswith(reason), (number, got)


def test_with_json_logs_every_line_on_stderr_is_one_json_object(
    corrupted_stream: Stream, tmp_path: Path
) -> None:
    """`--log-format json` (what a job collecting Cloud Logging lines runs): each bad record
    and the summary are JSON objects with their fields, not text among the JSON."""
    result = lookout(
        "--log-format", "json", "replay", corrupted_stream.path, "--db", tmp_path / "j.duckdb",
        cwd=tmp_path, timeout=REPLAY_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 1, result.describe()
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    bad = {e["line"]: e for e in entries if e.get("reason") and "line" in e}
    assert sorted(bad) == sorted(corrupted_stream.bad)
    assert all(e["severity"] == "WARNING" and e["file"] for e in bad.values())
    (summary,) = [e for e in entries if e["message"].startswith("replayed ")]
    assert summary["records"] == corrupted_stream.good_count
    assert summary["invalid"] == len(corrupted_stream.bad)


def test_with_json_logs_a_command_that_gives_up_says_so_in_json(tmp_path: Path) -> None:
    """A newcomer's find: with `--log-format json` (or LOOKOUT_LOG_FORMAT=json) the line that
    says why a command stopped was plain text, the one line a log pipeline then drops."""
    missing = tmp_path / "nosuch.duckdb"
    cases: list[tuple[list[str | Path], dict[str, str] | None]] = [
        (["--log-format", "json", "sql", "--db", missing, "select 1"], None),
        (["replay", tmp_path / "nosuch.ndjson"], {"LOOKOUT_LOG_FORMAT": "json"}),
    ]
    for args, env in cases:
        result = lookout(*args, cwd=tmp_path, env=env)
        assert result.returncode != 0, result.describe()
        [line] = result.stderr.splitlines()
        entry = json.loads(line)
        assert entry["severity"] == "ERROR" and entry["logger"] == "lookout", line
        assert "nosuch" in entry["message"] and not entry["message"].startswith("lookout:")
    plain = lookout("sql", "--db", missing, "select 1", cwd=tmp_path)
    assert plain.stderr.startswith("lookout: sql: no such DuckDB file"), plain.describe()


def test_an_empty_file_is_warned_about(tmp_path: Path) -> None:
    """An empty file (or the wrong one, or a pipe that never got its data) replayed with
    exit 0 and a summary of zeros that nobody reads."""
    (tmp_path / "empty.ndjson").write_bytes(b"\n\n")
    result = lookout("replay", "empty.ndjson", "--db", "e.duckdb", cwd=tmp_path)
    assert result.returncode == 0, result.describe()
    assert "empty.ndjson holds no records (empty or blank lines only)" in result.stderr
    piped = lookout("replay", "-", "--db", "p.duckdb", cwd=tmp_path, stdin=b"")
    assert "standard input holds no records" in piped.stderr, piped.describe()
