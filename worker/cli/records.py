"""Tables that stay readable in a narrow terminal: when a table cannot fit, one record per block.

Rich fits a table that is too wide by shrinking every column, down to `sta…` and `gemini-1.5-fl…`
at 80 columns: the values a reader came for are cut. `fits` says whether a table can be shown
without that, and `print_records` prints the rows the way psql's expanded mode (`\\x`) does: a
`column: value` line per cell and a blank line between records, every value whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported where a table is printed: a replay never needs it
    from rich.console import Console
    from rich.table import Table

#: narrowest a column may be squeezed to before a table reads worse than one record per block
MIN_COLUMN_WIDTH = 10


def fits(console: Console, table: Table) -> bool:
    """Whether `table` prints at `console`'s width with no column squeezed below its widest cell
    (a table with no_wrap columns would otherwise cut them to "…")."""
    from rich.measure import Measurement

    unbounded = console.options.update_width(1_000_000)  # Measurement.get clamps to the width
    return Measurement.get(console, unbounded, table).maximum <= console.width


def columns_fit(
    console: Console,
    names: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    min_width: int = MIN_COLUMN_WIDTH,
) -> bool:
    """Whether a boxed table of these cells fits `console` with each column at least `min_width`
    wide (or its widest cell, when narrower): folding a long value over lines reads well, a
    column three characters wide does not."""
    from rich.text import Text

    if not names:
        return True
    widest = [Text(name).cell_len for name in names]
    for row in rows:
        for i, cell in enumerate(row):
            widest[i] = max(widest[i], max((Text(p).cell_len for p in cell.split("\n")), default=0))
    needed = sum(min(w, min_width) for w in widest)
    borders = 3 * len(names) + 1  # "│ " before each column, " │" after the last
    return needed + borders <= console.width


def print_records(
    console: Console,
    names: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
) -> None:
    """One block per row, `name: value` a line, names aligned, a blank line between blocks;
    values are printed as text (never as markup) and fold rather than being cut."""
    from rich.text import Text

    if title:
        console.print(Text(title))
    label = max((Text(name).cell_len for name in names), default=0) + 2
    room = max(console.width - label, MIN_COLUMN_WIDTH)
    for n, row in enumerate(rows):
        if n or title:
            console.print()
        for name, value in zip(names, row, strict=True):
            # a long value folds under itself, not under the names
            lines = Text(value).wrap(console, room, overflow="fold") or [Text()]
            for i, line in enumerate(lines):
                line.rstrip()  # the space a line was wrapped at
                head = f"{name}:".ljust(label) if i == 0 else " " * label
                console.print(Text(head) + line, overflow="fold", crop=False)
