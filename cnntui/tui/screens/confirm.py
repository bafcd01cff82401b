"""A yes/no question in a box; `y` or `enter` says yes, `n` says no, `escape` says no unless
the question gives it an answer of its own (None: do nothing at all)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class ConfirmScreen(ModalScreen[bool | None]):
    """Asks `question`; dismisses with True for yes, False for no, `escape` for escape.
    `answers` (markup) says what each key does when plain yes and no would not."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "escape", "Cancel"),
    ]

    def __init__(
        self,
        question: str,
        answers: str = "[b]y[/b] yes   [b]n[/b] no",
        escape: bool | None = False,
    ) -> None:
        super().__init__()
        self.question = question
        self.answers = answers
        self.escape = escape

    def compose(self) -> ComposeResult:
        """The question and the keys that answer it."""
        with Vertical(id="dialog"):
            yield Static(self.question, id="question", markup=False)
            yield Static(self.answers, id="answers")

    def action_answer(self, yes: bool) -> None:
        """Close with the answer pressed (y: True, n: False)."""
        self.dismiss(yes)

    def action_escape(self) -> None:
        """Close with the answer that escape stands for."""
        self.dismiss(self.escape)


class ChoiceScreen(ModalScreen[str | None]):
    """Asks `question`; each of `choices` (key, value, label) dismisses with its value,
    `enter` with `default`, `escape` with None (do nothing)."""

    def __init__(self, question: str, choices: list[tuple[str, str, str]], default: str) -> None:
        super().__init__()
        self.question = question
        self.choices = choices
        self.default = default
        for key, value, label in choices:
            self._bindings.bind(key, f"choose({value!r})", label)
        self._bindings.bind("enter", f"choose({default!r})", "Default")
        self._bindings.bind("escape", "choose(None)", "Stay")

    def compose(self) -> ComposeResult:
        """The question and one key per choice, plus escape to stay."""
        answers = "   ".join(f"[b]{k}[/b] {label}" for k, _v, label in self.choices)
        with Vertical(id="dialog"):
            yield Static(self.question, id="question", markup=False)
            yield Static(answers + "   [b]escape[/b] stay", id="answers")

    def action_choose(self, value: str | None) -> None:
        """Close with the chosen value (None: do nothing)."""
        self.dismiss(value)
