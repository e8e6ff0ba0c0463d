"""The audit report's HTML parsed with html.parser: its sections, tables and text."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Table:
    section: str
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)

    def column(self, header: str) -> list[str]:
        i = self.headers.index(header)
        return [row[i] for row in self.rows]

    def as_dict(self) -> dict[str, str]:
        """A two-column table (facts, settings) as key -> value."""
        return {row[0]: row[1] for row in self.rows}


@dataclass
class Page:
    text: str = ""  # the text a reader sees (no style, no SVG)
    svg_text: list[str] = field(default_factory=list)  # <text> elements of the charts
    sections: dict[str, str] = field(default_factory=dict)  # id -> first heading
    tables: list[Table] = field(default_factory=list)
    attributes: set[str] = field(default_factory=set)  # every attribute name used
    tags: dict[str, int] = field(default_factory=dict)  # tag -> count
    classes: dict[str, int] = field(default_factory=dict)  # class -> count
    style: str = ""
    csp: str = ""

    def table(self, section: str, first_header: str | None = None) -> Table:
        found = [
            t
            for t in self.tables
            if t.section == section and (first_header is None or t.headers[:1] == [first_header])
        ]
        assert found, (section, first_header, [(t.section, t.headers) for t in self.tables])
        return found[0]


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self.section = ""
        self.cell: list[str] | None = None
        self.row: list[str] | None = None
        self.row_tags: list[str] = []
        self.cell_svg: list[str] = []
        self.in_style = self.in_svg = self.in_svg_text = False
        self.heading: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        p, a = self.page, dict(attrs)
        p.tags[tag] = p.tags.get(tag, 0) + 1
        p.attributes.update(a)
        for cls in (a.get("class") or "").split():
            p.classes[cls] = p.classes.get(cls, 0) + 1
        if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
            p.csp = a.get("content") or ""
        if tag == "section":
            self.section = a.get("id") or ""
        elif tag == "style":
            self.in_style = True
        elif tag == "svg":
            self.in_svg = True
        elif tag == "text" and self.in_svg:
            self.in_svg_text, self.cell_svg = True, []
        elif tag == "table":
            p.tables.append(Table(self.section))
        elif tag == "tr":
            self.row, self.row_tags = [], []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
            self.row_tags.append(tag)
        elif tag in ("h1", "h2") and self.section not in p.sections:
            self.heading = []
        elif tag in ("br", "li", "p", "div", "tr", "h3"):
            self.text.append("\n")

    def handle_endtag(self, tag: str) -> None:
        p = self.page
        if tag == "style":
            self.in_style = False
        elif tag == "svg":
            self.in_svg = False
        elif tag == "text" and self.in_svg_text:
            p.svg_text.append("".join(self.cell_svg))
            self.in_svg_text = False
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(" ".join("".join(self.cell).split()))
            self.cell = None
            self.text.append(" ")
        elif tag == "tr" and self.row is not None:
            table = p.tables[-1]
            if set(self.row_tags) == {"th"} and not table.headers and not table.rows:
                table.headers = self.row
            else:
                table.rows.append(self.row)
            self.row = None
        elif tag in ("h1", "h2") and self.heading is not None:
            p.sections[self.section] = "".join(self.heading).strip()
            self.heading = None

    def handle_data(self, data: str) -> None:
        if self.in_style:
            self.page.style += data
            return
        if self.in_svg_text:
            self.cell_svg.append(data)
            return
        if self.in_svg:
            return
        if self.cell is not None:
            self.cell.append(data)
        if self.heading is not None:
            self.heading.append(data)
        self.text.append(data)


def parse(html: str) -> Page:
    parser = _Parser()
    parser.feed(html)
    parser.close()
    parser.page.text = "".join(parser.text)
    return parser.page
