"""The report page as data: sections holding notes, tables and plots, which the jinja2 template
(``templates/report.html.j2``, autoescape on) turns into HTML. Nothing here writes HTML except the plot divs,
which plotly writes (its JSON is escaped for a script tag)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import plotly.graph_objects as go
from markupsafe import Markup


@dataclass
class Note:
    """A paragraph of plain text; ``lead`` is set in bold before it, ``code`` words after it in monospace."""

    part: ClassVar[str] = "note"
    text: str
    lead: str = ""
    cls: str = ""
    code: str = ""
    tail: str = ""


@dataclass
class Cell:
    text: str = ""
    title: str = ""
    num: bool = False
    strong: bool = False
    indent: bool = False


@dataclass
class Row:
    cells: list[Cell]
    head: Cell | None = None  # the row's name, a <th>
    cls: str = ""


@dataclass
class Table:
    part: ClassVar[str] = "table"
    id: str
    columns: list[Cell]
    rows: list[Row]
    cls: str = ""
    scroll: bool = False


@dataclass
class Plot:
    part: ClassVar[str] = "plot"
    div_id: str
    html: Markup


@dataclass
class Facts:
    """A two-column list of (name, value) pairs, values possibly several lines."""

    part: ClassVar[str] = "facts"
    items: list[tuple[str, list[str]]]
    id: str = ""


@dataclass
class Section:
    id: str
    title: str
    parts: list[Any] = field(default_factory=list)
    level: int = 2

    def note(self, text: str, **kw: Any) -> None:
        self.parts.append(Note(text, **kw))


class PlotCounter:
    """Numbers the plots of one page (div ids ``bm-plot-N``) and counts them for the self-check."""

    def __init__(self) -> None:
        self.n = 0

    def plot(self, fig: go.Figure) -> Plot:
        self.n += 1
        div_id = f"bm-plot-{self.n}"
        height = fig.layout.height or 450
        html = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, default_height=f"{height}px",
                           config={"displaylogo": False, "responsive": True})
        return Plot(div_id, Markup(html))

    def add(self, section: Section, fig: go.Figure | None) -> bool:
        """Add ``fig`` to ``section`` when there is one; whether it was added."""
        if fig is None:
            return False
        section.parts.append(self.plot(fig))
        return True
