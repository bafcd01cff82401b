"""How runs execute: one run lifecycle, and one interface with its implementations.

`run_one` is the only copy of a run's lifecycle, whatever executes it: open the run (a new
directory, or the one the job brings: reopened to resume, or taken from the queue), train it
while its live files are written (`live.drive`), record how it ended when the engine could
not, release it. Threads of this process, worker processes and the Ray scheduler's
followers all call it.

An `Executor` trains a list of jobs and yields their events until every run has ended:
`Threads` in this process; `Queued` through the run store's queue, where the store's
scheduler starts a worker process per run (`daemon`, `worker`) or sends it to a Ray cluster
(`ray_executor`), and this process follows the runs through their files. `executor_for`
picks one from the experiments' settings; the attached `--run`, `--detach` and the TUI go
through it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..core.config import Experiment
from ..core.events import Event, Failed
from ..core.text import one_line
from .live import EitherEvent, drive
from .records import RunStatus
from .store import RunDir, RunRecord, RunStore, StoreError

Trainer = Callable[..., Iterator[Event]]  # engine.train(exp, cancel, run, checkpoint)
Emit = Callable[[Event], None]
# How a run's events ended, for the Ray scheduler (its task may die without a last event).
OnEnd = Callable[[RunDir, Event | None, Exception | None], None]
EXECUTORS = ("thread", "process")  # what `executor` names; "auto" and a cluster pick one
POLL_SECONDS = 0.2  # how often a follower looks at queued runs' files


@dataclass(frozen=True)
class Job:
    """One run to train: its experiment, and the run directory when it is not a new one (an
    earlier run reopened to resume, with the checkpoint to load; or a queued run taken)."""

    experiment: Experiment
    run: RunDir | None = None
    checkpoint: Path | None = None


def run_one(
    job: Job,
    store: RunStore,
    cancel: threading.Event | EitherEvent | None,
    emit: Emit,
    trainer: Trainer | None = None,
    on_open: Callable[[RunDir], None] | None = None,
    on_end: OnEnd | None = None,
) -> None:
    """Train one run to its end, passing each event to `emit`; never raises for the run.

    `trainer` replaces engine.train (tests, the TUI's, a Ray task's stream); `on_open` hears
    the run's directory before training; `on_end` replaces recording a failure around the
    engine (the last event, and the exception that ended the events if any)."""
    exp = job.experiment
    try:
        run = job.run or store.create(exp)
    except Exception as e:
        emit(Failed(exp.label, _reason(e)))
        return
    try:
        if on_open is not None:
            on_open(run)
        own = cancel if isinstance(cancel, EitherEvent) else EitherEvent(cancel)
        last, error = None, None
        try:
            events = (trainer or _engine_train())(exp, own, run, job.checkpoint)
            for event in drive(run.path, events, own):
                last = event
                emit(event)
        except Exception as e:
            error = e
        if on_end is not None:
            on_end(run, last, error)
        elif error is not None:
            _record_failure(run, _reason(error))
            emit(Failed(exp.label, _reason(error), str(run.path)))
    finally:
        run.release()


def _engine_train() -> Trainer:
    """engine.train, imported (with torch) when the first run starts."""
    from ..core.engine import train

    return train


def _reason(e: Exception) -> str:
    return str(e) if isinstance(e, StoreError) else one_line(e)


def _record_failure(run: RunDir, reason: str) -> None:
    """Say in the run's summary why it ended around the engine (its live file refused, say):
    a reopened run stays resumable as it was, a new one ends failed."""
    with contextlib.suppress(OSError):  # the disk refuses even that: the Failed event says it
        if run.reopened:
            run.resume_failed(reason)
        else:
            run.save_summary(RunStatus.FAILED, reason=reason)


# --- executors ------------------------------------------------------------------------------


class Executor(Protocol):
    """Where runs execute. `start` trains the jobs, up to `workers` at once, and yields every
    run's events until each has ended; setting `cancel` stops them (each saves)."""

    name: str
    outlives_caller: bool  # whether its runs go on when the caller's terminal is gone

    def start(
        self, jobs: list[Job], store: RunStore, cancel: threading.Event, workers: int
    ) -> Iterator[Event]:
        """Train `jobs`, yielding their events as they come."""
        ...


class Threads:
    """Runs in threads of this process: they end with it."""

    name = "thread"
    outlives_caller = False

    def start(
        self, jobs: list[Job], store: RunStore, cancel: threading.Event, workers: int
    ) -> Iterator[Event]:
        """Train `jobs` in up to `workers` threads, merging their events into one stream."""
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
                run_one(job, store, cancel, events.put)
            events.put(None)

        n = max(1, min(workers, len(jobs)))
        for i in range(n):
            threading.Thread(target=worker, name=f"cnntui-run-{i}", daemon=True).start()
        done = 0
        while done < n:
            event = events.get()
            if event is None:
                done += 1
            else:
                yield event


class Queued:
    """Runs queued in the run store: its scheduler trains each in a worker process of its own
    (or on the Ray cluster the experiment names), and this process follows them through their
    files. They go on when the caller is gone."""

    outlives_caller = True

    def __init__(self, name: str = "process") -> None:
        self.name = name
        self.records: list[RunRecord] = []  # the runs queued by the last start

    def queue(self, jobs: list[Job], store: RunStore, workers: int) -> list[RunRecord]:
        """Queue the jobs (a reopened run queued to resume) and make sure the store's
        scheduler runs; the queued runs' records."""
        from . import lifecycle

        reopened = [j.run for j in jobs if j.run is not None]
        new = [j.experiment for j in jobs if j.run is None]
        records = lifecycle.requeue(reopened, workers) if reopened else []
        records += lifecycle.submit(store, new, workers) if new else []
        lifecycle.ensure_scheduler(store)
        return records

    def start(
        self, jobs: list[Job], store: RunStore, cancel: threading.Event, workers: int
    ) -> Iterator[Event]:
        """Queue `jobs` and follow them to their ends (see `follow`)."""
        return self.follow(self.queue(jobs, store, workers), store, cancel)

    def follow(
        self,
        records: list[RunRecord],
        store: RunStore,
        cancel: threading.Event,
        leave: threading.Event | None = None,
    ) -> Iterator[Event]:
        """The queued runs' events until each has ended, or `leave` is set (the runs go on);
        `cancel` cancels them through the store, and a scheduler killed meanwhile is taken
        over."""
        from . import lifecycle

        self.records = records
        followed = [lifecycle.RunEvents(r.path) for r in records]
        asked = False
        next_check = time.monotonic() + 2.0
        while not all(f.ended for f in followed) and not (leave and leave.is_set()):
            if cancel.is_set() and not asked:
                asked = True
                for record in records:
                    with contextlib.suppress(StoreError):  # it ended meanwhile
                        lifecycle.cancel(store, record.run_id)
            if time.monotonic() >= next_check:  # its scheduler killed: take over
                next_check = time.monotonic() + 2.0
                with contextlib.suppress(OSError):
                    lifecycle.ensure_scheduler(store)
            for f in followed:
                yield from f.poll()
            if asked:
                time.sleep(POLL_SECONDS)
            else:
                cancel.wait(POLL_SECONDS)  # wakes at once on a Ctrl-C


def executor_for(experiments: list[Experiment]) -> Threads | Queued:
    """The executor the experiments' settings pick for runs the caller follows: a cluster,
    or `process`, queue them in the store; `thread` and `auto` train in this process."""
    if any(e.cluster or e.executor == "process" for e in experiments):
        return detached_for(experiments)
    return Threads()


def detached_for(experiments: list[Experiment]) -> Queued:
    """The executor of runs that outlive their starter: queued in the store."""
    return Queued("ray" if any(e.cluster for e in experiments) else "process")


def run_jobs(
    jobs: list[Job],
    store: RunStore,
    cancel: threading.Event,
    workers: int = 1,
    executor: str = "thread",
) -> Iterator[Event]:
    """Train `jobs` with the executor named (`thread` or `process`), one run per seed of an
    experiment's `seeds`, yielding every run's events as they come."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r} (allowed: {', '.join(EXECUTORS)})")
    jobs = [
        Job(run) if job.run is None else job
        for job in jobs
        for run in (job.experiment.runs() if job.run is None else [job.experiment])
    ]
    if not jobs:
        return iter(())
    chosen: Executor = Threads() if executor == "thread" else Queued()
    return chosen.start(jobs, store, cancel, workers)
