"""The HTML report as a reader sees it, for the report's tests: its headings, the tables under
them (cell text, tags stripped) and its text. Built on the standard library's parser, so a
test reads the report the way it is written, not the way the code that writes it is organised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path


@dataclass
class Section:
    """A heading (h2 or h3) and what follows it up to the next heading."""

    heading: str
    text: str = ""
    #: each table under the heading: its rows, each row its cells' text
    tables: list[list[list[str]]] = field(default_factory=list)

    @property
    def table(self) -> list[dict[str, str]]:
        """The first table's body rows, keyed by its header cells."""
        head, *body = self.tables[0]
        return [dict(zip(head, row, strict=True)) for row in body]


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: list[Section] = [Section("")]
        self._heading: list[str] | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._skip = 0  # inside <script> or <style>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("h2", "h3"):
            self._heading = []
        elif tag == "table":
            self.sections[-1].tables.append([])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1
        elif tag in ("h2", "h3") and self._heading is not None:
            self.sections.append(Section(" ".join("".join(self._heading).split())))
            self._heading = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
            self.sections[-1].text += " "
        elif tag == "tr" and self._row is not None:
            self.sections[-1].tables[-1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        for part in (self._heading, self._cell):
            if part is not None:
                part.append(data)
        if self._heading is None:
            self.sections[-1].text += data


def sections(page: str | Path) -> dict[str, Section]:
    """The report's sections by heading (a model's name heads its coverage table)."""
    reader = _Reader()
    reader.feed(page.read_text(encoding="utf-8") if isinstance(page, Path) else page)
    found: dict[str, Section] = {}
    for section in reader.sections:
        section.text = " ".join(section.text.split())
        found.setdefault(section.heading, section)
    return found


def under(page: str | Path, heading: str, model: str) -> Section:
    """The section `model` heads after the heading `heading` (model names head sections in
    more than one place)."""
    reader = _Reader()
    reader.feed(page.read_text(encoding="utf-8") if isinstance(page, Path) else page)
    after = [s.heading for s in reader.sections].index(heading)
    for section in reader.sections[after:]:
        if section.heading == model:
            section.text = " ".join(section.text.split())
            return section
    msg = f"no section {model!r} after {heading!r}"
    raise KeyError(msg)
