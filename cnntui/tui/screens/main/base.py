"""What every part of the main screen shares: its state, its two tables, how a key begins.

Each part (header, views, runs, run_events, editing, exporting) is a mixin over `ScreenPart`;
`MainScreen` (screen.py) puts them together over Textual's `Screen`. Mixins rather than
helper objects: Textual looks up `action_*` methods and `on_<message>` handlers through the
class's MRO, so each key's action and each message's handler sits with its concern without a
forwarding method, and the state lives on the one screen that the app and the tests hold
(`app.main.session`, `.table`, `.busy()`...); each part sets its own in an `_init_<part>`
method that `MainScreen.__init__` calls.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

from textual.worker import get_current_worker

from ....runs.store import RunRecord, RunSummary
from ...session import Session
from ...state import RunState
from ...widgets.experiments import ExperimentsTable
from ...widgets.results import ResultsTable

if TYPE_CHECKING:  # the parts are mixins: a type checker sees them as the screen they become
    from textual.screen import Screen

    _Base = Screen[None]
else:
    _Base = object

WARNING_SECONDS = 6  # notifications: information goes in 4 s (the app's default), these later
ERROR_SECONDS = 10


def stored_row(record: RunRecord) -> RunSummary:
    """A stored run's results row, with its status as the store reads it now: a summary that
    says running, written by a process that has gone, reads interrupted."""
    return dataclasses.replace(record.summary, status=record.status)


class ScreenPart(_Base):
    """A part of the main screen: the state and the steps that every part may use."""

    session: Session  # the experiments file, the run store and every run's state
    marks: set[str]  # experiments whose curves are overlaid
    stopping: threading.Event  # set when the app ends: the parts' thread loops stop

    if TYPE_CHECKING:  # one part's steps that the others call; defined where named

        def redraw_curves(self, force: bool = False) -> None: ...  # views.py

        def update_header(self) -> None: ...  # header.py

        def start_queued(self) -> None: ...  # runs.py

        def busy(self) -> int: ...  # runs.py

        def run_ended(self, state: RunState) -> None: ...  # run_events.py

        def show_file_error(self) -> None: ...  # editing.py

    @property
    def table(self) -> ExperimentsTable:
        """The experiments table (top)."""
        return self.query_one("#experiments", ExperimentsTable)

    @property
    def results(self) -> ResultsTable:
        """The results table (one of the two views below the experiments)."""
        return self.query_one("#results", ResultsTable)

    def acted(self) -> None:
        """A key asked for something new: what earlier notifications said is old news, and
        they would pile up over the charts."""
        self.app.clear_notifications()

    def _highlighted(self) -> str | None:
        """The experiment a key acts on (under the cursor); None, said, if there is none."""
        self.acted()
        name = self.table.highlighted
        if name is None:
            self.notify("no experiment to act on", severity="warning")
        return name

    def _looping(self) -> bool:
        """For the loops of thread workers: go on until the app ends or cancels them."""
        return not self.stopping.is_set() and not get_current_worker().is_cancelled
