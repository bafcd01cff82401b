"""Where a training run's records go: the small interface the engine writes through.

The engine knows no disk layout. It saves a run's history and summary, its checkpoints and
weights, and reads the checkpoint it resumes from, all through a `RunSink`. The run store's
run directory is one (`runs.store.RunDir`); a Ray node's outbox, which ships the files to
the store's host, is another.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Protocol

from .history import History


class SinkError(OSError):
    """A sink cannot write or read as asked; the message is one line naming where and why,
    and is what a failed run records as its reason."""


class RunSink(Protocol):
    """One run's records, as the engine writes and reads them."""

    path: Path  # where followers find the run (shown in events and messages)
    run_id: str

    @property
    def reopened(self) -> bool:
        """Whether this is an earlier run, reopened to resume."""
        ...

    def save(self, history: History, status: str | None = None, **fields: Any) -> None:
        """Write the history and the summary (with `status` and `fields`)."""
        ...

    def save_summary(self, status: str | None = None, **fields: Any) -> None:
        """Write the summary alone (with `status` and `fields`)."""
        ...

    def save_torch(self, filename: str, obj: Any) -> None:
        """Write a torch object (a checkpoint, weights) under `filename`."""
        ...

    def open_checkpoint(self, path: Path) -> IO[bytes]:
        """The checkpoint at `path`, opened for reading (never through a link or a FIFO)."""
        ...

    def write_config(self) -> None:
        """Record the settings the run trains with from now on (a resume may change some)."""
        ...

    def resume_failed(self, reason: str) -> None:
        """A reopened run could not resume: it stays as it was, saying why."""
        ...

    def discard(self) -> bool:
        """Remove a new run that recorded nothing; True when it was removed."""
        ...
