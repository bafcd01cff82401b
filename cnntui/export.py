"""Exports for a written report, built from the run store.

Per experiment, `exports/<name>/loss_history.npz`: the report's `loss_history`
(`batch_losses`, `epoch_losses`, `batch_indices`) plus `train_acc`, `test_loss`, `test_acc`
and `epoch_seconds`, from the latest run of that experiment (finished or partial).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Experiment
from .store import RunRecord, RunStore, atomic_write


class ExportError(OSError):
    """The exports directory cannot be written; the message names it."""


@dataclass
class ExportResult:
    folder: Path
    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # experiments with no run to export


def latest_runs(store: RunStore, experiments: list[Experiment]) -> dict[str, RunRecord]:
    """The newest stored run of each experiment that has one."""
    out = {}
    for exp in experiments:
        record = store.latest(exp.name)
        if record is not None:
            out[exp.name] = record
    return out


def _prepare(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"exports dir {str(folder)!r} is a file, not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"exports dir {str(folder)!r} cannot be created: {e.strerror}") from None


def export_history(record: RunRecord, folder: Path) -> Path:
    arrays = record.history().arrays()
    path = folder / "loss_history.npz"
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def export_all(
    store: RunStore,
    experiments: list[Experiment],
    exports_dir: Path,
    formats: tuple[str, ...] = ("png",),
) -> ExportResult:
    """Write every export for `experiments` into `exports_dir`; figures in each of `formats`."""
    exports_dir = Path(exports_dir)
    _prepare(exports_dir)
    result = ExportResult(exports_dir)
    records = latest_runs(store, experiments)
    for exp in experiments:
        record = records.get(exp.name)
        if record is None:
            result.missing.append(exp.name)
            continue
        folder = exports_dir / exp.name
        _prepare(folder)
        result.files.append(export_history(record, folder))
    return result
