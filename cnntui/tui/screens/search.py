"""A search's table in a box over the main screen: one row per trial (its sampled values, its
metric, its status), best first by the search's metric, the best marked.

It follows the search: while trials train, the table is read again every second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import DataTable

from ...core.config import Experiment
from ...core.search_space import Search
from ..tomledit import show_value
from ..trials import TrialRow, by_metric, metric_text
from ..widgets.experiments import BEST, VI_KEYS, search_status, status_text

REFRESH_SECONDS = 1.0  # how often a search that is still running is read again


def table_rows(search: Search[Experiment], rows: list[TrialRow]) -> list[tuple[str | Text, ...]]:
    """The table's rows, best first: mark, trial, each sampled value, metric, status."""
    out: list[tuple[str | Text, ...]] = []
    for row in by_metric(search, rows):
        values = [show_value(row.values.get(p.key, "-")) for p in search.space]
        out.append(
            (
                BEST if row.best else " ",
                f"t{row.number}",
                *values,
                metric_text(search.metric, row.metric),
                status_text(row.run),
            )
        )
    return out


class SearchScreen(ModalScreen[None]):
    """The table of `search`'s trials from `load()`, read again every second; escape, q or S
    closes."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,S", "close", "Close"), *VI_KEYS]

    def __init__(self, search: Search[Experiment], load: Callable[[], list[TrialRow]]) -> None:
        super().__init__()
        self.search = search
        self.load = load
        self._shown: list[tuple[str, ...]] = []

    def compose(self) -> ComposeResult:
        """The trials' table in a dialog."""
        yield DataTable[str | Text](id="dialog", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        """Columns, the first rows, and a re-read every REFRESH_SECONDS."""
        table = self.query_one("#dialog", DataTable)
        table.add_column(" ", key="best", width=1)
        table.add_column("trial", key="trial")
        for p in self.search.space:
            table.add_column(p.key, key=p.key)
        table.add_column(self.search.metric, key="metric")
        table.add_column("status", key="status")
        self.follow()
        self.set_interval(REFRESH_SECONDS, self.follow)
        table.focus()

    def follow(self) -> None:
        """Show the trials as they stand now (rows again only when a cell changed)."""
        trials = self.load()
        rows = table_rows(self.search, trials)
        table = self.query_one("#dialog", DataTable)
        status = search_status(self.search, trials).plain
        table.border_title = f"search {self.search.name}: {status.removeprefix('search ')}"
        table.border_subtitle = f"best first by {self.search.metric} · escape closes"
        plain = [tuple(str(c) for c in row) for row in rows]
        if plain == self._shown:
            return
        self._shown = plain
        table.clear()
        for row in rows:
            table.add_row(*row)

    def action_close(self) -> None:
        """Close the table."""
        self.dismiss(None)
