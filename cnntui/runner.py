"""Run several experiments at once in worker threads and merge their events into one stream.

Used by the headless CLI. Each run gets a fresh directory in the run store (or reopens the
one it resumes). Cancelling sets one shared event; every run stops within a batch and saves.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import Experiment
from .engine import train
from .events import Event, Failed
from .store import RunDir, RunStore
from .text import one_line


@dataclass(frozen=True)
class Job:
    """One experiment to run; when resuming, the reopened run and the checkpoint to load."""

    experiment: Experiment
    resume_dir: RunDir | None = None
    checkpoint: Path | None = None


def run_jobs(
    jobs: list[Job], store: RunStore, cancel: threading.Event, workers: int = 1
) -> Iterator[Event]:
    """Train `jobs` with up to `workers` at once, yielding every run's events as they come."""
    events: queue.Queue[Event | None] = queue.Queue()
    todo: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        todo.put(job)

    def worker() -> None:
        while not cancel.is_set():
            try:
                job = todo.get_nowait()
            except queue.Empty:
                break
            exp = job.experiment
            try:
                run = job.resume_dir or store.create(exp)
                for event in train(exp, cancel, run, job.checkpoint):
                    events.put(event)
            except Exception as e:
                events.put(Failed(exp.name, one_line(e)))
        events.put(None)

    threads = [
        threading.Thread(target=worker, name=f"cnntui-run-{i}", daemon=True)
        for i in range(max(1, min(workers, len(jobs))))
    ]
    for t in threads:
        t.start()
    done = 0
    while done < len(threads):
        event = events.get()
        if event is None:
            done += 1
        else:
            yield event
