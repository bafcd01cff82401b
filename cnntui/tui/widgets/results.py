"""The results table: every run, past and present, compared column by column.

Rows are run summaries (records.RunSummary), as the run store reads them or as a run in this
process knows itself so far. `s` sorts by the column
under the cursor (again: the other way round); the best value of each column is bold.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from ...core import text
from ...report import stats
from ...runs.records import RunStatus, RunSummary
from .experiments import VI_KEYS

Seeds = tuple[float, float, int]  # an experiment's final test accuracy: mean, std, n


def _finite(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


@dataclass(frozen=True)
class Column:
    """One column of the results table: the summary field it shows, and how."""

    key: str  # a RunSummary field, or SEEDS_KEY
    label: str
    show: Callable[[Any], str]
    best: str | None = None  # "max", "min", or None when no value is better than another

    def score(self, v: object) -> float | None:
        """The number the column's best is chosen by (a gap's size either way); None: none."""
        f = _finite(v)
        return abs(f) if f is not None and self.key == "gap" else f


def _params(v: int) -> str:
    return text.count(v) if v else "-"


def _over_seeds(v: Seeds) -> str:
    """The experiment's final test accuracy over its seeds: `52.10±1.23 n=3`."""
    mean, std, n = v
    if not n:
        return "-"
    return f"{mean * 100:.2f}±{std * 100:.2f} n={n}" if n > 1 else f"{mean * 100:.2f}% n=1"


SEEDS_KEY = "acc_over_seeds"  # a row's (mean, std, n) over its experiment's seeds, its settings


# Text columns show a summary's values with control characters escaped (text.safe): a
# summary.json may have been edited by hand, and the terminal must not get them raw.
COLUMNS = (
    Column("name", "name", text.safe),
    Column("title", "title", text.safe),
    Column("model", "model", text.safe),
    Column("params", "params", _params),
    Column("final_test_acc", "final acc", text.pct, "max"),
    Column("seed", "seed", str),
    # Mean ± std of the experiment's final test accuracy over its seeds (stats.seed_runs).
    Column(SEEDS_KEY, "acc over seeds", _over_seeds),
    Column("best_test_acc", "best acc", text.pct, "max"),
    Column("epoch1_test_acc", "ep1 acc", text.pct, "max"),
    Column("final_train_loss", "train loss", text.num, "min"),
    Column("gap", "gap", text.pct, "min"),
    Column("epochs_to_target", "ep→target", str, "min"),
    Column("total_seconds", "time", text.seconds, "min"),
    Column("seconds_per_epoch", "s/epoch", text.seconds, "min"),
    Column("status", "status", text.safe),
)
SEEDS_COLUMN = next(c for c in COLUMNS if c.key == SEEDS_KEY)
STATUS_CELLS = max(len(s) for s in RunStatus)  # `interrupted`, the longest status
BEST_STYLE = "bold reverse green"


def cell_value(column: str, summary: RunSummary, over_seeds: Seeds | None = None) -> object:
    """What the row of `summary` holds in `column` (None: nothing). A run without a
    validation split has no best epoch (the test set does not choose one), only its final:
    its `best acc` is empty, also where an older summary.json recorded the test set's best."""
    if column == SEEDS_KEY:
        return over_seeds
    if column == "best_test_acc" and _finite(summary.best_val_acc) is None:
        return None
    return summary.field_value(column)


def environment_text(summary: RunSummary) -> str:
    """What a run recorded about where it ran, for the detail line: `cnntui 0.1.0, Python
    3.11.7, torch 2.14.1, ..., host vm` ("" where it recorded none)."""
    return ", ".join(f"{label} {text.safe(v)}" for label, v in summary.environment().items())


def sort_key(
    column: str, summary: RunSummary, over_seeds: Seeds | None = None
) -> tuple[int, float, str]:
    """Missing values last whichever way; numbers as numbers, text case-insensitively."""
    v = cell_value(column, summary, over_seeds)
    if isinstance(v, tuple):  # over seeds: by the mean
        v = v[0] if v[2] else None
    f = _finite(v)
    if f is not None:
        return (0, f, "")
    if isinstance(v, str) and v:
        return (0, 0.0, v.lower())
    return (1, 0.0, "")


def _group(summary: RunSummary) -> tuple[str | None, str | None]:
    """The rows one mean over seeds is taken over: one experiment, one set of settings."""
    return summary.name, summary.settings_key


class RowText(Text):
    """A cell that knows its row's key."""

    run_key: str

    @classmethod
    def keyed(cls, cell: Text, key: str) -> RowText:
        """A copy of `cell` that remembers the key of the row it is in."""
        out = cls(cell.plain, style=cell.style, justify=cell.justify, spans=cell.spans)
        out.run_key = key
        return out


class ResultsTable(DataTable[Text]):
    """One row per run; rows are added or updated with `put` and kept sorted."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "sort", "Sort", tooltip="sort by the cursor's column; again reverses it"),
        *VI_KEYS,
    ]

    def __init__(self, **kwargs: Any) -> None:
        # The name column stays in place when the table scrolls sideways.
        super().__init__(cursor_type="cell", zebra_stripes=True, fixed_columns=1, **kwargs)
        self.rows_by_key: dict[str, RunSummary] = {}
        self.seeds_by_key: dict[str, Seeds] = {}  # each row's experiment over its seeds
        self._order: list[str] = []  # insertion order: oldest first
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._stale = False  # rows changed while hidden
        self._best: dict[str, float] = {}  # the best values the cells show

    def on_mount(self) -> None:
        """Lay out the columns."""
        for col in COLUMNS:
            # The last column has a set width, which grows where the table must scroll a
            # little further to start its last page with a whole column (snap_to_columns).
            width = STATUS_CELLS if col.key == "status" else None
            self.add_column(col.label, key=col.key, width=width)

    def on_data_table_cell_highlighted(self) -> None:
        """The cursor moved: once the table has scrolled it into view, snap to whole columns."""
        self.call_after_refresh(self.snap_to_columns)

    def snap_to_columns(self, tries: int = 3) -> None:
        """Scroll sideways to where a column begins, keeping the cursor's column in view, so
        that the first column after the fixed name column shows whole (`model`, not `odel`).
        Where the last page needs more room to scroll into, the status column widens."""
        widths = [c.get_render_width(self) for c in self.ordered_columns]
        fixed = sum(widths[: self.fixed_columns])
        view = self.scrollable_content_region.width - fixed
        column = self.cursor_coordinate.column
        if column < self.fixed_columns or view <= 0:
            return
        starts = list(itertools.accumulate(widths[self.fixed_columns : -1], initial=0))
        begin = starts[column - self.fixed_columns]
        want = max(round(self.scroll_x), begin + widths[column] - view)
        x = min(begin, next((at for at in starts if at >= want), begin))
        short = x - round(self.max_scroll_x)
        if short > 0 and tries and self.row_count:
            status = self.columns[ColumnKey("status")]
            status.width += short
            row = self.coordinate_to_cell_key(Coordinate(0, 0)).row_key
            # Rewriting a cell lays the widths out again: the table can scroll that far now.
            self.update_cell(row, "status", self.get_cell(row, "status"), update_width=True)
            self.call_after_refresh(self.snap_to_columns, tries - 1)
            return
        self.scroll_to(x=x, animate=False)

    def put(self, key: str, summary: RunSummary, redraw: bool = True) -> None:
        """Add or replace the row of run `key`.

        A store may hold thousands of runs, and laying out a row costs about a millisecond,
        so rows are never rebuilt for one change: on screen, a new run's row is appended and
        the rows re-ordered, a changed run's cells are rewritten where they changed (and the
        cells that gained or lost the column's best value); hidden behind the curves, rows
        are only collected until the table is shown.
        """
        old = self.rows_by_key.get(key)
        old_seeds = self.seeds_by_key.get(key)
        if old is None:
            self._order.append(key)
        self.rows_by_key[key] = summary
        siblings = self._over_seeds(summary)
        if old is not None and _group(old) != _group(summary):  # its settings' group changed
            siblings += self._over_seeds(old)
        if not redraw:
            return
        for other in siblings:  # the same experiment's other rows: their cell changed too
            if other != key and self.display and not self._stale and self.row_count:
                cell = self._cell(SEEDS_COLUMN, other, self._best)
                self.update_cell(other, SEEDS_KEY, cell, update_width=True)
        if not self.display or self._stale or not self.row_count:
            self.update_rows()
            return
        keep = self._cursor_key()
        best = self.best()
        if old is None:
            self.add_row(*self._cells(key, best), key=key)
        else:
            self._update_cells(key, old, old_seeds, best)
        self._restyle_best(best)
        self._reorder(keep)

    def value(self, key: str, column: str) -> object:
        """What row `key` holds in `column` (None: nothing)."""
        return cell_value(column, self.rows_by_key[key], self.seeds_by_key.get(key))

    def _over_seeds(self, summary: RunSummary) -> list[str]:
        """Recompute the mean ± std over seeds of `summary`'s experiment with `summary`'s
        settings into each row of theirs; the keys of the rows whose value changed. A run
        with other settings (an older number of epochs, other data) is not one of its seeds."""
        group = _group(summary)
        keys = [k for k in self._order if _group(self.rows_by_key[k]) == group]
        rows = {k: self.rows_by_key[k] for k in keys}
        counted = {id(r) for r in stats.seed_runs(list(rows.values()), lambda r: r.settings_key)}
        agg = stats.aggregate(r.final_test_acc for r in rows.values() if id(r) in counted)
        value = (agg.mean, agg.std, agg.n)
        changed = [k for k in keys if self.seeds_by_key.get(k) != value]
        for k in changed:
            self.seeds_by_key[k] = value
        return changed

    def update_rows(self) -> None:
        """Redraw now when on screen, else when next shown."""
        if self.display:
            self.redraw()
        else:
            self._stale = True

    def on_show(self) -> None:
        """Lay out the rows that changed while the table was hidden."""
        if self._stale:
            self.redraw()

    def _cursor_key(self) -> str | None:
        if not self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def _cells(self, key: str, best: dict[str, float]) -> list[Text]:
        cells = [self._cell(c, key, best) for c in COLUMNS]
        cells[0] = RowText.keyed(cells[0], key)  # the name cell knows its row, for sorting
        return cells

    def _update_cells(
        self, key: str, old: RunSummary, old_seeds: Seeds | None, best: dict[str, float]
    ) -> None:
        for col in COLUMNS[1:]:
            if cell_value(col.key, old, old_seeds) != self.value(key, col.key):
                self.update_cell(key, col.key, self._cell(col, key, best), update_width=True)

    def _restyle_best(self, best: dict[str, float]) -> None:
        """Rewrite the cells of the columns whose best value changed: the old best and the new."""
        for col in COLUMNS:
            was, now = self._best.get(col.key), best.get(col.key)
            if was == now:
                continue
            for key in self.rows_by_key:
                f = col.score(self.value(key, col.key))
                if f is not None and f in (was, now):
                    self.update_cell(key, col.key, self._cell(col, key, best), update_width=True)
        self._best = best

    def _reorder(self, keep: str | None) -> None:
        """Put the rows in display order (DataTable.sort moves rows without laying them out
        again) and the cursor back on the run it was on."""
        position = {key: i for i, key in enumerate(self.ordered())}
        self.sort("name", key=lambda cell: position[cell.run_key])
        if keep is not None:
            self.move_cursor(row=self.get_row_index(keep))

    def best(self) -> dict[str, float]:
        """The best value of each column that has one (the highest accuracy, lowest loss)."""
        out: dict[str, float] = {}
        for col in COLUMNS:
            if col.best is None:
                continue
            found = [col.score(self.value(k, col.key)) for k in self.rows_by_key]
            values = [v for v in found if v is not None]
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
            key=lambda k: sort_key(column, self.rows_by_key[k], self.seeds_by_key.get(k)),
            reverse=self.sort_reverse,
        )

    def _cell(self, col: Column, key: str, best: dict[str, float]) -> Text:
        v = self.value(key, col.key)
        cell = Text(col.show(v) if v is not None else "-")
        if col.show is not text.safe:
            cell.justify = "right"
        f = col.score(v)
        if f is not None and f == best.get(col.key):
            cell.stylize(BEST_STYLE)
        if col.key == "status" and v in (RunStatus.FAILED, RunStatus.DIVERGED):
            cell.stylize("red")
        return cell

    def redraw(self) -> None:
        """Rebuild the rows in order, keeping the cursor on the same run."""
        self._stale = False
        row, col = 0, self.cursor_coordinate.column
        keep = self._cursor_key()
        best = self.best()
        self._best = best
        self.clear()
        for key in self.ordered():
            self.add_row(*self._cells(key, best), key=key)
        if keep in self.rows_by_key:
            row = self.get_row_index(keep)
        if self.row_count:
            self.move_cursor(row=row, column=col)

    def action_sort(self) -> None:
        """Sort by the cursor's column, best first; again, the other way round."""
        column = COLUMNS[self.cursor_coordinate.column].key
        if self.sort_column == column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column = column
            # Best first: highest accuracy, lowest loss and time.
            best = next(c.best for c in COLUMNS if c.key == column)
            self.sort_reverse = best == "max"
        self._reorder(self._cursor_key())
        way = "descending" if self.sort_reverse else "ascending"
        self.notify(f"results sorted by {column.replace('_', ' ')}, {way}", timeout=2)
