"""The experiment form: new, duplicate or edit one [[experiment]] of experiments.toml.

Each field holds the experiment's own value as the file writes it; an empty field means
"as in [defaults]" (shown as the placeholder). Values are read with the loader's rules, and
`save` (given by the caller) checks the whole file again before anything is written.

The session's `--set` overrides win over the file for every run it starts, so a field they
override says so beside it, with the value the runs use, and a note line lists them. The
fields keep the file's values: saving never writes a session's overrides into the file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, Static

from ...core.config import EXPERIMENT_KEYS, ConfigError
from ...core.settings import declared
from ..tomledit import read_value, show_value

Save = Callable[[dict[str, Any]], str | None]  # returns an error to show, or None when saved


class ExperimentForm(ModalScreen[bool]):
    """Dismisses with True once `save` accepted the values, False when abandoned."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(
        self,
        heading: str,
        values: dict[str, Any],
        defaults: dict[str, Any],
        save: Save,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.heading = heading
        self.values = values
        self.defaults = defaults
        self.save = save
        self.overrides = {k: v for k, v in (overrides or {}).items() if k in EXPERIMENT_KEYS}

    def override_note(self) -> str:
        """`runs use --set: dropout=0.2 (the file says 0.5), ...`, or "" without overrides."""
        if not self.overrides:
            return ""
        parts = []
        for key, value in self.overrides.items():
            own = self.values.get(key)
            file = own if own is not None else self.defaults.get(key)
            where = "" if own is not None else " from [defaults]"
            said = f" (the file says {show_value(file)}{where})" if file is not None else ""
            if file == value:
                said = " (as the file says)"
            parts.append(f"{key}={show_value(value)}{said}")
        return "runs in this session use --set " + ", ".join(parts)

    def compose(self) -> ComposeResult:
        """The form: heading, --set note, error line, and one input per experiment key."""
        with Vertical(id="form"):
            yield Static(f"[b]{self.heading}[/b]  ctrl+s save · escape cancel", id="form-title")
            yield Static(Text(self.override_note(), style="yellow"), id="form-overrides")
            yield Static("", id="form-error")
            with VerticalScroll(id="fields"):
                for key in EXPERIMENT_KEYS:
                    default = self.defaults.get(key)
                    hint = f"{show_value(default)} (default)" if default is not None else ""
                    with Horizontal(classes="field"):
                        yield Label(key, classes="field-label")
                        yield field_input(key, show_value(self.values.get(key)), hint)
                        if key in self.overrides:
                            yield Label(
                                Text(f"--set {show_value(self.overrides[key])}", style="yellow"),
                                classes="field-override",
                                id=f"override-{key}",
                            )

    def on_mount(self) -> None:
        """Start typing in the name field."""
        self.query_one("#field-name", Input).focus()

    def read(self) -> dict[str, Any]:
        """Every field as a value; raises ConfigError naming the first bad one and focuses it."""
        out: dict[str, Any] = {}
        for key in EXPERIMENT_KEYS:
            field = self.query_one(f"#field-{key}", Input)
            try:
                out[key] = read_value(key, field.value)
            except ConfigError:
                field.focus()
                raise
        if not out.get("name"):
            self.query_one("#field-name", Input).focus()
            raise ConfigError("'name' is required")
        return out

    def error(self, message: str) -> None:
        """Show `message` in red above the fields."""
        self.query_one("#form-error", Static).update(Text(message, style="bold red"))

    def action_save(self) -> None:
        """Check every field and save to experiments.toml, or say what is wrong and stay."""
        try:
            values = self.read()
        except ConfigError as e:
            self.error(str(e))
            return
        problem = self.save(values)
        if problem:
            self.error(problem)
        else:
            self.dismiss(True)

    def action_cancel(self) -> None:
        """Close the form without saving."""
        self.dismiss(False)


def field_input(key: str, value: str, placeholder: str) -> Input:
    """The input of setting `key`: its declared help (and what it allows) as the tooltip,
    and its choices offered as completions while typing."""
    s = declared(key)
    allowed = f"allowed: {s.allows}" if s.choices else s.range.text if s.range else s.allows
    choices = SuggestFromList(s.choices, case_sensitive=True) if s.choices else None
    return Input(
        value,
        placeholder=placeholder,
        id=f"field-{key}",
        compact=True,
        suggester=choices,
        tooltip=f"{s.help} ({allowed})" if allowed else s.help,
    )
