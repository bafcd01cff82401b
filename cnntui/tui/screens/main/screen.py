"""The main screen: its keys, its layout, what starts when it mounts, and which part does what.

`MainScreen` is put together from one mixin per concern (base.py says why mixins): header.py
(device, GPUs, counts), views.py (curves or results, redrawn by a timer), runs.py (the keys
that start and stop runs, the training thread, quitting), run_events.py (what the screen
hears from runs), editing.py (the experiments file and its form) and exporting.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, Footer, Header, Static
from textual.worker import Worker

from ....runs import warm
from ....runs.gpus import Gpu
from ...session import Session
from ...widgets.curves import CurvesPanel
from ...widgets.experiments import ExperimentsTable
from ...widgets.results import ResultsTable
from .base import stored_row
from .editing import EditingPart
from .exporting import ExportingPart
from .header import HeaderPart
from .run_events import RunEventsPart
from .runs import RunsPart, Trainer
from .views import REDRAW_SECONDS, ViewsPart


class MainScreen(
    HeaderPart, ViewsPart, RunsPart, RunEventsPart, EditingPart, ExportingPart, Screen[None]
):
    """Everything the user works with; modal screens open on top of it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "run", "Run", tooltip="run the highlighted experiment"),
        Binding(
            "a", "run_all", "Run all", tooltip="queue every experiment (asks before re-running)"
        ),
        Binding("c", "cancel", "Cancel", tooltip="cancel the highlighted experiment's run"),
        Binding(
            "space", "mark", "Mark", tooltip="mark / unmark the experiment: overlay its curves"
        ),
        # One key, named after where it goes (check_action shows the one that applies).
        Binding("v", "view('results')", "Results", tooltip="show the results table"),
        Binding("v", "view('curves')", "Curves", tooltip="back to the curves"),
        Binding("e", "export", "Export", tooltip="export figures, tables and histories"),
        Binding("question_mark", "help", "Keys", tooltip="this list of keys"),
        Binding(
            "R",
            "resume",
            "Resume",
            show=False,
            tooltip="resume the latest unfinished run from its checkpoint",
        ),
        Binding("l", "log", "Log y", show=False, tooltip="log scale for the loss curves"),
        # Shift+c: j and k move in the lists (vi habits), and C collides with no common key.
        Binding(
            "C",
            "classes",
            "Classes",
            show=False,
            tooltip="confusion matrix and per-class accuracy of the run",
        ),
        Binding(
            "S",
            "search_table",
            "Search",
            show=False,
            tooltip="the search's trials: values, metric, status, best first",
        ),
        Binding("n", "new", "New", show=False, tooltip="new experiment (a form)"),
        Binding("d", "duplicate", "Duplicate", show=False, tooltip="duplicate the experiment"),
        Binding("E", "edit", "Edit", show=False, tooltip="edit the experiment (also enter)"),
        Binding(
            "ctrl+r", "reload", "Reload", show=False, tooltip="reload experiments.toml from disk"
        ),
        Binding("plus", "jobs(1)", "Jobs+", show=False, tooltip="one more run at a time"),
        Binding("minus", "jobs(-1)", "Jobs-", show=False, tooltip="one run fewer at a time"),
        Binding("s", "noop", "Sort", show=False, tooltip="sort the results by the cursor column"),
        Binding("q", "app.quit", "Quit", tooltip="quit (asks first when runs are active)"),
    ]

    def __init__(
        self,
        session: Session,
        exports_dir: Path,
        trainer: Trainer | None = None,
        device_label: str | None = None,
        inventory: Callable[[], list[Gpu]] | None = None,
    ) -> None:
        super().__init__()
        self.session = session
        self.exports_dir = Path(exports_dir)
        self.marks: set[str] = set()
        self.stopping = threading.Event()  # set when the app ends: the thread loops stop
        self._init_header(device_label, inventory)
        self._init_views()
        self._init_runs(trainer)
        self._init_run_events()

    def compose(self) -> ComposeResult:
        """Header, file error line, experiments, then the curves or the results, keys."""
        yield Header(show_clock=False, icon="▦")
        yield Static("", id="file-error")
        yield ExperimentsTable(id="experiments")
        yield Static("", id="detail")
        with ContentSwitcher(initial="curves", id="views"):
            yield CurvesPanel(id="curves")
            yield ResultsTable(id="results")
        # Compact, without the palette's key: at 80 columns every key shown still fits.
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        """Load the file and the stored runs, then start the timer and the thread workers."""
        self.app.title = "cnntui"
        if not self.session.reload() and not self.session.experiments:
            self.show_file_error()
        self.table.show(self.session, self.marks)
        for record in self.session.load_past():
            self.results.put(str(record.path), stored_row(record), redraw=False)
        self.results.update_rows()
        self.update_header()
        self.set_interval(REDRAW_SECONDS, self.tick)
        if self._probe:
            self._start_thread(self._probe_device, "device")
        self._start_thread(self._follow_loop, "follow")
        if self.session.executor == "process":  # the first run starts warm: torch loaded
            self._start_thread(partial(warm.prewarm, self.session.store.root), "warm")
        if self.inventory is not None:
            self._start_thread(self._gpu_loop, "gpus")
        self.table.focus()

    def _start_thread(self, work: Callable[[], object], name: str) -> None:
        self.run_worker(work, thread=True, exit_on_error=False, name=name)

    def on_unmount(self) -> None:
        """The app ends: the thread loops stop."""
        self.stopping.set()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Hand a worker's new state to the part that started it."""
        if event.worker.name == "device":
            self.device_probed(event.worker, event.state)
        elif event.worker.name == "export":
            self.export_done(event.worker, event.state)
        else:
            self.run_worker_changed(event.worker, event.state)

    # `@on` handlers stay here: Textual collects them only from classes it builds (its
    # message pump's metaclass), which the parts, plain mixins, are not.

    @on(DataTable.RowHighlighted, "#experiments")
    def _show_highlighted(self) -> None:
        self.update_detail()
        if not self.marks:  # marked runs stay on screen whatever the cursor is on
            self.redraw_curves()

    @on(DataTable.CellHighlighted, "#results")
    def _show_run_detail(self) -> None:
        self.update_detail()

    @on(DataTable.RowSelected, "#experiments")
    def _edit_on_enter(self) -> None:
        self.action_edit()
