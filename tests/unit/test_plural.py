"""The CLI's summaries put a noun in the number its count takes."""

from __future__ import annotations

from schemas.plural import counted


def test_one_is_singular_and_every_other_count_plural() -> None:
    assert counted(1, "window") + " evaluated" == "1 window evaluated"
    assert counted(0, "alert change") == "0 alert changes"
    assert counted(3, "window") == "3 windows"
    assert counted(2, "query", "queries") == "2 queries"
    assert counted(1_234, "window", grouped=True) == "1,234 windows"
