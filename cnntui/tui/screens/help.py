"""Every key of the main screen with what it does."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ...core import text


def key_label(key: str) -> str:
    """A binding's keys as the user types them (`question_mark` reads `?`), comma-separated."""
    return ", ".join(
        {"space": "space", "question_mark": "?", "plus": "+", "minus": "-"}.get(k, k)
        for k in key.split(",")
    )


class HelpScreen(ModalScreen[None]):
    """Lists `bindings` (the main screen's); any of escape, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__()
        self.bindings = bindings

    def compose(self) -> ComposeResult:
        """One line a key with what it does, short enough to fit 80x24 without scrolling."""
        # One line a key (a key bound twice, like v, says both), so that at 80x24 every key
        # shows without scrolling.
        said: dict[str, list[str]] = {}
        for b in self.bindings:
            said.setdefault(key_label(b.key), []).append(b.tooltip or b.description)
        lines = ["[b]cnntui keys[/b]", ""]
        for keys, what in said.items():
            lines.append(f"  [b]{text.pad(keys, 12)}[/b] {' / '.join(what)}")
        lines.append(
            "  [b]tab[/b] switches table · [b]j[/b]/[b]k[/b] down/up"
            " · [b]home[/b]/[b]end[/b] first/last · [b]escape[/b] close"
        )
        with VerticalScroll(id="dialog"):
            yield Static("\n".join(lines))

    def action_close(self) -> None:
        """Close the list of keys."""
        self.dismiss(None)
