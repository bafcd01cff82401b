"""Editing the experiments file: reloading it, and the form behind new, duplicate and edit.

The form writes one experiment's table into the file (cnntui.tui.tomledit keeps the rest as it
was written), then the file is reloaded; a file that does not load keeps the last good list.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.widgets import Static

from ....core.config import ConfigError
from ... import tomledit
from ..edit import ExperimentForm
from .base import ERROR_SECONDS, ScreenPart


class EditingPart(ScreenPart):
    """Reloads the experiments file and opens the experiment form on it."""

    def show_file_error(self) -> None:
        """Show why the experiments file does not load (under the header), or nothing."""
        line = self.query_one("#file-error", Static)
        line.update(Text(self.session.error, style="bold"))
        line.display = bool(self.session.error)

    def action_reload(self, quiet: bool = False) -> bool:
        """Reload the experiments file; on an error keep the last good list and say why."""
        if not quiet:
            self.acted()
        ok = self.session.reload()
        self.show_file_error()
        if not ok:
            self.notify(
                f"{self.session.error}\n(keeping the last good list)",
                severity="error",
                timeout=ERROR_SECONDS,
            )
            return False
        names = {e.name for e in self.session.experiments}
        self.marks &= names
        self.table.show(self.session, self.marks)
        self.redraw_curves(force=True)
        if not quiet:
            self.notify(f"reloaded {len(names)} experiment(s) from {self.session.config}")
        return True

    def action_new(self) -> None:
        """Open the form on a new experiment (in the highlighted one's group)."""
        self.acted()
        name = self.table.highlighted
        exp = self.session.experiment(name) if name else None
        values = {"group": exp.group} if exp and exp.group else {}
        self._form("new experiment", values, None)

    def action_duplicate(self) -> None:
        """Open the form on a copy of the highlighted experiment, under a new name."""
        name = self._highlighted()
        own = self._own(name) if name else None
        if own is None:
            return
        names = {e.name for e in self.session.experiments}
        copy, n = f"{name}-copy", 2
        while copy in names:
            copy, n = f"{name}-copy{n}", n + 1
        self._form(f"duplicate of {name}", {**own[1], "name": copy}, None)

    def action_edit(self) -> None:
        """Open the form on the highlighted experiment, as written in the file."""
        name = self._highlighted()
        own = self._own(name) if name else None
        if own is not None:
            self._form(f"edit {name}", own[1], own[0])

    def _form(self, heading: str, values: dict[str, Any], index: int | None) -> None:
        """Open the experiment form; it saves as table `index` of the file (None: a new one)."""
        file = self.session.file
        if self.session.error or file is None:
            self.notify(f"fix the file first: {self.session.error}", severity="error")
            return
        defaults = dataclasses.asdict(file.defaults)
        save = partial(self._save, self.session.config, index)
        form = ExperimentForm(heading, values, defaults, save, self.session.overrides)
        self.app.push_screen(form)

    def _save(self, path: Path, index: int | None, new: dict[str, Any]) -> str | None:
        """The form's save: write the experiment, reload, put the cursor on it; or the error
        for the form to show."""
        try:
            tomledit.save_experiment(path, new, index)
        except (ConfigError, OSError) as e:
            return str(e)
        self.action_reload(quiet=True)
        if new["name"] in {e.name for e in self.session.experiments}:
            self.table.move_cursor(row=self.table.get_row_index(new["name"]))
        self.notify(f"saved {new['name']} to {path}")
        return None

    def _own(self, name: str) -> tuple[int, dict[str, Any]] | None:
        """The file position and own keys of experiment `name`, as written; None, said, when
        it cannot be edited there."""
        try:
            tables = tomledit.own_values(self.session.config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            self.notify(f"cannot read {self.session.config}: {e}", severity="error")
            return None
        for i, table in enumerate(tables):
            if table.get("name") == name:
                return i, table
        self._say_not_editable(name)
        return None

    def _say_not_editable(self, name: str) -> None:
        """Why `name` has no table of its own in the file: a sweep made it, or it went."""
        exp = self.session.experiment(name)
        if exp is not None and exp.sweep:
            self.notify(
                f"{name} comes from [[sweep]] {exp.sweep!r}: edit the sweep in "
                f"{self.session.config}",
                severity="warning",
            )
            return
        self.notify(f"{name} is not in {self.session.config} any more; reload", severity="error")
