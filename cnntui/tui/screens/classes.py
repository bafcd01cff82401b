"""The per-class results of the highlighted experiment's run in a box over the main screen:
its test-set confusion matrix and each class's accuracy (what is drawn: ..classes).

It follows the run: while the run trains, each epoch's new matrix replaces the last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..classes import ClassView, render

REFRESH_SECONDS = 1.0  # how often a run that is still training is looked at again
CHROME = 4  # columns the dialog's border and padding take (app.tcss)


class ClassesScreen(ModalScreen[None]):
    """Shows what `load()` returns, looked at again every second, as wide as the terminal
    lets it (the class names whole where they fit); `p` switches counts and row
    percentages; escape or q closes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,C", "close", "Close"),
        Binding("p", "percent", "Counts / %"),
    ]

    def __init__(self, load: Callable[[], ClassView | None]) -> None:
        super().__init__()
        self.load = load
        self.view: ClassView | None = load()
        self.percent = False

    def compose(self) -> ComposeResult:
        """The matrix and per-class accuracies in a scrollable dialog."""
        with VerticalScroll(id="dialog"):
            yield Static(self._text(), id="classes")

    def on_mount(self) -> None:
        """Title the dialog and re-read the run's view every REFRESH_SECONDS."""
        self.query_one("#dialog").border_title = "per-class results"
        self.set_interval(REFRESH_SECONDS, self.follow)

    def _text(self) -> Text | str:
        if self.view is None:
            return "no run any more"
        return render(self.view, self.percent, self.app.size.width - CHROME)

    def on_resize(self, event: events.Resize) -> None:
        """Lay the matrix out again for the terminal's new width."""
        self.query_one("#classes", Static).update(self._text())

    def follow(self) -> None:
        """Redraw when the run's view has changed (a training run ended another epoch)."""
        view = self.load()
        if view != self.view:
            self.view = view
            self.query_one("#classes", Static).update(self._text())

    def action_percent(self) -> None:
        """Switch the matrix between counts and row percentages."""
        self.percent = not self.percent
        self.query_one("#classes", Static).update(self._text())

    def action_close(self) -> None:
        """Close the dialog."""
        self.dismiss(None)
