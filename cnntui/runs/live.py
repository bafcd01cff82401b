"""What the process training a run does besides training: it writes the run's live files.

`drive(run_dir, events, cancel)` wraps a run's event stream (engine.train): every batch loss
goes to the live file as it comes, a heartbeat is touched about once a second, and a cancel
request (the run's `cancel` file, which any process may create) sets the run's cancel flag,
checked about every 0.2 s. Worker processes and worker threads use it alike, so any process
can follow and cancel any run through the run store. No torch here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..core.events import BatchLosses, Event, Started
from . import store

POLL_SECONDS = 0.2  # how often the cancel file is looked for


class EitherEvent:
    """Set when either of two events is: a study-wide cancel or this run's own."""

    def __init__(self, shared: threading.Event | None) -> None:
        self.shared = shared
        self.own = threading.Event()

    def set(self) -> None:
        """Cancel this run (the study-wide event is left alone)."""
        self.own.set()

    def is_set(self) -> bool:
        """True once this run or the whole study was cancelled."""
        return self.own.is_set() or (self.shared is not None and self.shared.is_set())


def watch(run_dir: Path, cancel: EitherEvent, stop: threading.Event) -> None:
    """Until `stop`: touch the heartbeat every HEARTBEAT_SECONDS, turn a cancel file into
    `cancel`."""
    next_beat = 0.0
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_beat:
            store.touch_heartbeat(run_dir)
            next_beat = now + store.HEARTBEAT_SECONDS
        if store.cancel_requested(run_dir):
            cancel.set()
        stop.wait(POLL_SECONDS)


def drive(
    run_dir: Path, events: Iterator[Event], cancel: EitherEvent | None = None
) -> Iterator[Event]:
    """`events`, passed through, with the run's live files kept up to date meanwhile."""
    live = store.LiveWriter(run_dir)
    stop = threading.Event()
    watcher = None
    if isinstance(cancel, EitherEvent):
        watcher = threading.Thread(
            target=watch, args=(run_dir, cancel, stop), name="cnntui-live", daemon=True
        )
        watcher.start()
    try:
        for event in events:
            if isinstance(event, Started):
                live.truncate(event.start_epoch * event.batches_per_epoch)
            elif isinstance(event, BatchLosses):
                live.write(event.first_index, event.losses)
            yield event
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
        live.close()
        store.clear_heartbeat(run_dir)
        store.clear_cancel(run_dir)
