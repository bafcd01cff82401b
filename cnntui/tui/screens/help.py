"""Every key of the main screen with what it does."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ... import text


def key_label(key: str) -> str:
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
        lines = ["[b]cnntui keys[/b]", ""]
        for b in self.bindings:
            keys = key_label(b.key)
            lines.append(f"  [b]{text.pad(keys, 12)}[/b] {b.tooltip or b.description}")
        lines += [
            "",
            "  [b]tab[/b]          move between the tables",
            "  [b]escape[/b]       close",
        ]
        with VerticalScroll(id="dialog"):
            yield Static("\n".join(lines))

    def action_close(self) -> None:
        self.dismiss(None)
