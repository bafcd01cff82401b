"""Export (`e`): figures, tables and histories of every experiment, written in a thread worker."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from textual.notifications import SeverityLevel
from textual.worker import Worker, WorkerState

from ....core.text import one_line
from .base import ERROR_SECONDS, ScreenPart

if TYPE_CHECKING:
    from pathlib import Path

    from ....core.config import Experiment
    from ....report.export import ExportResult


def export_note(result: ExportResult) -> tuple[str, SeverityLevel]:
    """What an export wrote and what it left out, and the note's severity."""
    msg = f"exported {len(result.files)} file(s) to {result.folder}/"
    if result.missing:
        msg += f"\nnothing recorded yet for: {', '.join(result.missing)}"
    for warning in result.warnings:  # e.g. which font package shows the CJK titles
        msg += f"\n{warning}"
    for name, why in result.skipped.items():
        msg += f"\nskipped {name}: {why}"
    severity: SeverityLevel = "warning" if result.warnings or result.skipped else "information"
    return msg, severity


class ExportingPart(ScreenPart):
    """Exports every experiment into `exports_dir` without holding up the screen."""

    exports_dir: Path  # set by MainScreen

    def action_export(self) -> None:
        """Export every experiment's figures, tables and histories (in a thread)."""
        self.acted()
        if not self.session.experiments:
            self.notify("no experiments to export", severity="warning")
            return
        self.notify(f"exporting to {self.exports_dir}/ …", timeout=3)
        self.run_worker(
            partial(self._export, list(self.session.experiments)),
            thread=True,
            exit_on_error=False,
            name="export",
            exclusive=True,
            group="export",
        )

    def _export(self, experiments: list[Experiment]) -> ExportResult:
        """The export worker (a thread)."""
        from ....report.export import export_all

        return export_all(self.session.store, experiments, self.exports_dir)

    def export_done(self, worker: Worker[ExportResult], state: WorkerState) -> None:
        """The export worker changed state: say what it wrote, or why it failed."""
        if state == WorkerState.SUCCESS and worker.result is not None:
            msg, severity = export_note(worker.result)
            self.notify(msg, title="export", severity=severity, timeout=ERROR_SECONDS)
        elif state == WorkerState.ERROR and worker.error is not None:
            self.notify(
                f"export failed: {one_line(worker.error)}", severity="error", timeout=ERROR_SECONDS
            )
