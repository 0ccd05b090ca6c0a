"""Reports how many inputs the decoder fuzzing ran, whatever pytest's output options are."""

from __future__ import annotations

import pytest

from tests.fuzz.stats import FUZZ_STATS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FUZZ_STATS:
        return
    terminalreporter.section("decoder fuzzing")
    for name, (inputs, lines) in sorted(FUZZ_STATS.items()):
        terminalreporter.write_line(
            f"{name}: {inputs:,} generated inputs ({lines:,} lines), invariant held"
        )
