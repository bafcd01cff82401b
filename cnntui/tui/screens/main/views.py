"""What shows below the experiments: their curves or the results table, and the screens on top.

A timer (`tick`, REDRAW_SECONDS) refreshes the stored runs' rows, the statuses and the header,
and redraws the curves when what they show has changed, no more often than their cost allows.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Hashable
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.widgets import ContentSwitcher, Static

from ....report.tables import describe_data, images_used
from ....runs import searches
from ....runs.records import RunStatus
from ....runs.store import RunRecord, RunStore
from ...classes import class_view
from ...state import Curve, RunState
from ...tomledit import show_value
from ...trials import Counts
from ...widgets.curves import CurvesPanel
from ...widgets.experiments import detail_text, status_text
from ...widgets.results import environment_text
from ..classes import ClassesScreen
from ..help import HelpScreen
from ..search import SearchScreen
from .base import ScreenPart, stored_row

REDRAW_SECONDS = 0.25  # curves and statuses are redrawn at most 4 times a second
# Live curves may take at most this share of a CPU core: a plotext build is pure Python
# and holds the GIL the training threads need, so a costly chart is redrawn less often.
CURVES_SHARE = 0.05

DATA = ("dataset", "train_size", "test_size", "val_size")  # the run's data says these
Source = RunState | RunRecord | None  # where an experiment's curve comes from, if anywhere


def previous_settings(changed: dict[str, tuple[Any, Any]]) -> str:
    """`previous settings: lr=0.01 now 0.05`, for a run whose experiment has changed since
    (`train_size=200 now unset` for a setting left to its default of none)."""

    def shown(value: Any) -> str:
        return "unset" if value is None else show_value(value)

    return "previous settings: " + ", ".join(
        f"{k}={shown(old)} now {shown(new)}" for k, (old, new) in changed.items()
    )


class ViewsPart(ScreenPart):
    """The curves panel and the results table (one at a time), redrawn by a timer."""

    def _init_views(self) -> None:
        self.log_scale = False
        self._curves_key: tuple[Hashable, ...] | None = None
        self._curves_due = 0.0  # monotonic time before which the timer leaves the curves be

    def tick(self) -> None:
        """The redraw timer: stored runs' rows, statuses, header, and the curves when due."""
        for record in self.session.refresh_stored():
            self.results.put(str(record.path), stored_row(record))
        self.table.update_statuses(self.session)
        self.update_detail()
        self.update_header()
        now = time.monotonic()
        if (
            self.query_one("#views", ContentSwitcher).current == "curves"
            and now >= self._curves_due
        ):
            self.redraw_curves()
            cost = self.query_one("#curves", CurvesPanel).build_seconds()
            self._curves_due = now + max(REDRAW_SECONDS, cost / CURVES_SHARE) - 0.01

    def update_detail(self) -> None:
        """The line under the experiments: the highlighted one's settings in full (and its
        status, where the cell cut it); with the results shown, the highlighted run's own
        data and settings."""
        if self.query_one("#views", ContentSwitcher).current == "results":
            line = self._run_detail()
        else:
            line = self._experiment_detail()
        detail = self.query_one("#detail", Static)
        if detail.content != line:
            detail.update(Text(line))

    def _run_detail(self) -> str:
        """What the highlighted results row's run trained on and with (and what its experiment
        says now, where that differs)."""
        results = self.results
        if not results.row_count:
            return ""
        key = results.coordinate_to_cell_key(results.cursor_coordinate).row_key.value
        if key is None:
            return ""
        state = next((s for s in self.session.runs.values() if s.run_dir == key), None)
        run: RunState | RunRecord | None = state or RunStore.read(Path(key))
        used = self.session.run_config(run) if run is not None else None
        if run is None or used is None:
            return ""
        train, test = images_used(used.dataset, used.train_size, used.test_size, used.base_dir)
        data = describe_data(used.dataset, max(0, train - used.val_size), test, used.val_size)
        apart = self.session.apart_from_defaults(used)
        settings = " ".join(f"{k}={show_value(v)}" for k, v in apart.items() if k not in DATA)
        line = f"{run.name} ran on {data}" + (f" · {settings}" if settings else "")
        changed = self.session.changed_settings(run)
        if changed:
            now = " ".join(f"{k}={show_value(new)}" for k, (_, new) in changed.items())
            line += f" · the experiment now: {now}"
        summary = results.rows_by_key.get(key)
        ran_with = environment_text(summary) if summary is not None else ""
        return line + (f" · ran with {ran_with}" if ran_with else "")

    def _search_detail(self, name: str) -> str | None:
        """A search's row: its space and progress; a trial's: its values and its status."""
        search = self.session.search(name)
        if search is not None:
            rows = self.session.trial_rows(name)
            c = Counts.of(search, rows)
            cancelled = searches.cancelled_text(c.cancelled, ", ")
            counts = (
                f"{c.done} done, {cancelled}{c.pruned} pruned, {c.running} running, {c.to_go} to go"
            )
            return f"{name}: {counts} · {search.describe()} · S shows its table"
        search = self.session.search_of(name)
        if search is None:
            return None
        row = next((r for r in self.session.trial_rows(search.name) if r.name == name), None)
        if row is None:
            return None
        values = " ".join(f"{k}={show_value(v)}" for k, v in row.values.items())
        best = " · the best so far" if row.best else ""
        return f"{name}: {values} · {status_text(row.run).plain}{best}"

    def _experiment_detail(self) -> str:
        name = self.table.highlighted
        said = self._search_detail(name) if name else None
        if said is not None:
            return said
        exp = self.session.experiment(name) if name else None
        if exp is None:
            return ""
        run = self.session.shown_run(exp.name)
        status = status_text(run).plain
        reason = run.reason if isinstance(run, RunState) else run.summary.reason if run else ""
        if status.startswith(("failed", "diverged")) and reason:
            status = f"{run.status if run else ''}: {reason}"
        return detail_text(exp.name, self.session.apart_from_defaults(exp), status)

    def shown(self) -> list[str]:
        """Experiments whose curves are drawn: the marked ones, else the highlighted one."""
        listed = [e.name for e in self.session.experiments]
        for search in self.session.searches:
            listed += [search.name, *(r.name for r in self.session.trial_rows(search.name))]
        wanted = [name for name in listed if name in self.marks]
        if not wanted and self.table.highlighted:
            wanted = [self.table.highlighted]
        shown: list[str] = []
        for name in wanted:  # a search: its trials, overlaid
            if self.session.search(name) is None:
                shown.append(name)
            else:
                shown += [r.name for r in self.session.trial_rows(name) if r.name not in shown]
        return shown

    def redraw_curves(self, force: bool = False) -> None:
        """Draw the shown experiments' curves, unless nothing they show has changed."""
        panel = self.query_one("#curves", CurvesPanel)
        points = panel.points()
        names = self.shown()
        bands = {name: self.session.seed_band(name) for name in names}
        sources = [(name, *self._source(name)) for name in names]
        key = (
            points,
            self.log_scale,
            tuple(band.key for band in bands.values() if band is not None),
            *(changes for _, _, changes in sources),
        )
        if not force and key == self._curves_key:
            return
        self._curves_key = key
        curves, notes, absent = self._curves([(n, s) for n, s, _ in sources], points, bands)
        panel.show(curves, self.log_scale, notes, absent)

    def _source(self, name: str) -> tuple[Source, tuple[Hashable, ...]]:
        """Where `name`'s curve comes from (its live run once started, else its latest stored
        run, else nowhere) and what changes when that curve does."""
        state = self.session.latest(name)
        now = self.session.experiment(name)  # settings changed: the key line says so
        if state is not None and state.status not in (RunStatus.QUEUED, RunStatus.STARTING):
            return state, (name, state.key, state.version, now)
        record = self.session.stored_latest(name) or self._trial_record(name)
        return record, (name, str(record.path) if record else None, now)

    def _trial_record(self, name: str) -> RunRecord | None:
        """A search's trial run as the store has it (one that ended while no follower saw it)."""
        search = self.session.search_of(name)
        rows = self.session.trial_rows(search.name) if search is not None else []
        return next((r.run for r in rows if r.name == name and isinstance(r.run, RunRecord)), None)

    def _curves(
        self, sources: list[tuple[str, Source]], points: int, bands: dict[str, Any]
    ) -> tuple[list[Curve], dict[Any, str], list[str]]:
        """The curves to draw, a note for each drawn with other settings, and the names with
        nothing to draw."""
        curves: list[Curve] = []
        notes: dict[Any, str] = {}
        absent: list[str] = []
        for name, source in sources:
            if source is None:
                absent.append(name)
                continue
            curve = self._curve(name, source, points)
            if bands[name] is not None:
                curve = dataclasses.replace(curve, band=bands[name])
            curves.append(curve)  # even with nothing drawn yet: the key names its colour
            changed = self.session.changed_settings(source)
            if changed:
                notes[curve.source] = previous_settings(changed)
        return curves, notes, absent

    def _curve(self, name: str, source: RunState | RunRecord, points: int) -> Curve:
        """The curve of a live run, or of a stored one read from its files."""
        if isinstance(source, RunState):
            return source.curve(points)
        history = self.session.stored_history(source)
        return Curve.of(history, name, points, ("stored", str(source.path)))

    def action_mark(self) -> None:
        """Mark or unmark the highlighted experiment: marked ones' curves are overlaid."""
        name = self._highlighted()
        if name is None:
            return
        self.marks ^= {name}  # in, or out again
        self.table.set_mark(name, name in self.marks)
        self.redraw_curves()

    def action_log(self) -> None:
        """Switch the loss curves between a linear and a log scale."""
        self.acted()
        self.log_scale = not self.log_scale
        self.redraw_curves()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Show the `v` key that applies: to the results from the curves, and back."""
        if action == "view" and parameters:
            try:
                return parameters[0] != self.query_one("#views", ContentSwitcher).current
            except NoMatches:  # asked before the views exist
                return parameters[0] == "results"
        return True

    def action_view(self, where: str = "") -> None:
        """Show the curves or the results (`where`; the other one when not given)."""
        self.acted()
        switcher = self.query_one("#views", ContentSwitcher)
        switcher.current = where or ("results" if switcher.current == "curves" else "curves")
        self.refresh_bindings()
        self.update_detail()
        if switcher.current == "results":
            self.results.focus()
        else:
            self.table.focus()
            self.redraw_curves(force=True)

    def action_noop(self) -> None:
        """`s` sorts when the results table has the focus; elsewhere, say how to get there."""
        self.acted()
        self.notify("press v to show the results, then s sorts by the cursor's column")

    def action_classes(self) -> None:
        """Open the confusion matrix and per-class accuracy of the experiment's run."""
        name = self._highlighted()
        if name is None:
            return
        load = partial(class_view, self.session, name)
        if load() is None:
            self.notify(f"{name} has no run yet: r runs it", severity="warning")
            return
        self.app.push_screen(ClassesScreen(load))

    def action_search_table(self) -> None:
        """Open the table of the highlighted search's trials (or of the trial's search)."""
        name = self._highlighted()
        if name is None:
            return
        search = self.session.search(name) or self.session.search_of(name)
        if search is None:
            self.notify(f"{name} is no search: S shows a search's trials", severity="warning")
            return
        self.app.push_screen(SearchScreen(search, partial(self.session.trial_rows, search.name)))

    def action_help(self) -> None:
        """Open the list of keys."""
        self.acted()
        # Every key of the main screen is a Binding (Textual's type also admits tuples).
        self.app.push_screen(HelpScreen([b for b in self.BINDINGS if isinstance(b, Binding)]))
