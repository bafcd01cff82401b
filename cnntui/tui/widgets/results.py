"""The results table: every run, past and present, compared column by column.

Rows are summaries in the run store's summary.json vocabulary. `s` sorts by the column
under the cursor (again: the other way round); the best value of each column is bold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from ... import text


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    show: Callable[[Any], str]
    best: str | None = None  # "max", "min", or None when no value is better than another


def _params(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) and v else "-"


def _int(v: Any) -> str:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else "-"


COLUMNS = (
    Column("name", "name", str),
    Column("title", "title", str),
    Column("model", "model", str),
    Column("params", "params", _params),
    Column("final_test_acc", "final acc", text.pct, "max"),
    Column("best_test_acc", "best acc", text.pct, "max"),
    Column("epoch1_test_acc", "ep1 acc", text.pct, "max"),
    Column("final_train_loss", "train loss", text.num, "min"),
    Column("gap", "gap", text.pct, "min"),
    Column("epochs_to_target", "ep→target", _int, "min"),
    Column("total_seconds", "time", text.seconds, "min"),
    Column("seconds_per_epoch", "s/epoch", text.seconds, "min"),
    Column("status", "status", str),
)
BEST_STYLE = "bold reverse green"


def sort_key(column: str, summary: dict[str, Any]) -> tuple:
    """Missing values last whichever way; numbers as numbers, text case-insensitively."""
    v = summary.get(column)
    if _finite(v) is not None:
        return (0, float(v), "")
    if isinstance(v, str) and v:
        return (0, 0.0, v.lower())
    return (1, 0.0, "")


class ResultsTable(DataTable):
    """One row per run; rows are added or updated with `put` and kept sorted."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("s", "sort", "Sort by column")]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="cell", zebra_stripes=True, **kwargs)
        self.rows_by_key: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []  # insertion order: oldest first
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._stale = False  # rows changed while hidden

    def on_mount(self) -> None:
        for col in COLUMNS:
            self.add_column(col.label, key=col.key)

    def put(self, key: str, summary: dict[str, Any], redraw: bool = True) -> None:
        """Add or replace the row of run `key`. While the table is hidden behind the curves,
        rows are only collected: a redraw rebuilds every row (a store may hold thousands),
        so it waits until the table is shown."""
        if key not in self.rows_by_key:
            self._order.append(key)
        self.rows_by_key[key] = summary
        if redraw:
            self.update_rows()

    def update_rows(self) -> None:
        """Redraw now when on screen, else when next shown."""
        if self.display:
            self.redraw()
        else:
            self._stale = True

    def on_show(self) -> None:
        if self._stale:
            self.redraw()

    def rekey(self, old: str, new: str) -> None:
        """A session run got its run directory: key its row by that from now on."""
        if old in self.rows_by_key and old != new:
            self.rows_by_key[new] = self.rows_by_key.pop(old)
            self._order[self._order.index(old)] = new

    def best(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for col in COLUMNS:
            if col.best is None:
                continue
            values = [_finite(s.get(col.key)) for s in self.rows_by_key.values()]
            values = [v for v in values if v is not None]
            if col.key == "gap":
                values = [abs(v) for v in values]
            if values:
                out[col.key] = max(values) if col.best == "max" else min(values)
        return out

    def ordered(self) -> list[str]:
        """Row keys in display order: newest first unless sorted by a column."""
        if self.sort_column is None:
            return list(reversed(self._order))
        column = self.sort_column
        return sorted(
            self._order,
            key=lambda k: sort_key(column, self.rows_by_key[k]),
            reverse=self.sort_reverse,
        )

    def _cell(self, col: Column, summary: dict[str, Any], best: dict[str, float]) -> Text:
        v = summary.get(col.key)
        cell = Text(col.show(v) if v is not None else "-")
        if col.show is not str:
            cell.justify = "right"
        f = _finite(v)
        if f is not None and (abs(f) if col.key == "gap" else f) == best.get(col.key):
            cell.stylize(BEST_STYLE)
        if col.key == "status" and v in ("failed", "diverged"):
            cell.stylize("red")
        return cell

    def redraw(self) -> None:
        """Rebuild the rows in order, keeping the cursor on the same run."""
        self._stale = False
        row = col = 0
        keep = None
        if self.row_count:
            keep = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
            col = self.cursor_coordinate.column
        best = self.best()
        self.clear()
        for key in self.ordered():
            s = self.rows_by_key[key]
            self.add_row(*(self._cell(c, s, best) for c in COLUMNS), key=key)
        if keep in self.rows_by_key:
            row = self.get_row_index(keep)
        if self.row_count:
            self.move_cursor(row=row, column=col)

    def action_sort(self) -> None:
        column = COLUMNS[self.cursor_coordinate.column].key
        if self.sort_column == column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column = column
            # Best first: highest accuracy, lowest loss and time.
            best = next(c.best for c in COLUMNS if c.key == column)
            self.sort_reverse = best == "max"
        self.redraw()
        way = "descending" if self.sort_reverse else "ascending"
        self.notify(f"results sorted by {column.replace('_', ' ')}, {way}", timeout=2)
