"""Suite-wide hooks: the order tests start in, and the fuzzing summary across test workers.

`make test` runs the suite on two worker processes (pytest-xdist, `--dist worksteal`). The
long tests (real emulators, `lookout` subprocesses, kill -9 rounds) start first, so the run
ends on short tests that the idle worker can take over, not on one 100-second test while the
other worker waits. Fuzzing counts are gathered in the workers and printed by the controller.
"""

from __future__ import annotations

import pytest

from tests.fuzz.stats import FUZZ_STATS

#: modules holding the longest tests (30-120 s each on two busy cores): started first of all
LONGEST_FIRST = (
    "tests/integration/test_split_roles_pubsub_bigquery.py",
    "tests/integration/test_bigquery_sink.py",
    "tests/integration/test_pubsub_e2e.py",
    "tests/integration/test_bigquery_analyst_queries.py",
    "tests/e2e/test_fresh_clone.py",
)
#: test directories whose tests start real emulators or `lookout` processes: run them next
LONG_NEXT = ("tests/integration/", "tests/e2e/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first, in their collected order (a stable sort keeps each module together)."""

    def rank(item: pytest.Item) -> int:
        path = item.nodeid
        if path.startswith(LONGEST_FIRST):
            return 0
        return 1 if path.startswith(LONG_NEXT) else 2

    items.sort(key=rank)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a test worker, hand the fuzzing counts to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fuzz_stats"] = {name: list(v) for name, v in FUZZ_STATS.items()}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """On the controller, add up what each worker fuzzed."""
    received = getattr(node, "workeroutput", {}).get("fuzz_stats", {})
    for name, (inputs, lines) in received.items():
        had_inputs, had_lines = FUZZ_STATS.get(name, (0, 0))
        FUZZ_STATS[name] = (had_inputs + inputs, had_lines + lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many inputs the decoder fuzzing ran, whatever pytest's output options are."""
    if not FUZZ_STATS:
        return
    terminalreporter.section("decoder fuzzing")
    for name, (inputs, lines) in sorted(FUZZ_STATS.items()):
        terminalreporter.write_line(
            f"{name}: {inputs:,} generated inputs ({lines:,} lines), invariant held"
        )
