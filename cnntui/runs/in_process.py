"""Run several experiments at once and merge their events into one stream.

Used by the headless CLI. Each run gets a fresh directory in the run store (or reopens the
one it resumes). Cancelling sets one shared event; every run stops within a batch and saves.

Runs go to worker threads or to worker processes (`mode`). Threads share one interpreter,
so at small batch sizes, where each step is mostly Python, they queue on the GIL; processes
each have their own and send their events back over a queue (events are plain, picklable
dataclasses). Measured on a 2-core CPU (benchmarks/bench_jobs.py), see DEFAULT_MODE.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import Experiment
from ..core.events import Event, Failed
from ..core.text import one_line
from .store import RunDir, RunStore, StoreError

MODES = ("auto", "thread", "process")
# What `auto` picks when more than one run goes at once; a single run always stays in this
# process. From benchmarks/bench_jobs.py on a 2-core CPU (4 LeNet runs, 2 at once, steady
# images/s, two sessions): batch 4 threads 421/913 vs processes 448/875; batch 128 threads
# 2444/4755 vs processes 2906/3957. No steady winner, and processes add 5-15 s of start-up
# (each imports torch), so threads. Revisit on a many-core machine, where batch-4 runs in
# threads queue on the GIL.
DEFAULT_MODE = "thread"
POLL_SECONDS = 0.1  # how often the parent checks the cancel event and its worker processes


@dataclass(frozen=True)
class Job:
    """One experiment to run; when resuming, the reopened run and the checkpoint to load."""

    experiment: Experiment
    resume_dir: RunDir | None = None
    checkpoint: Path | None = None


def run_jobs(
    jobs: list[Job],
    store: RunStore,
    cancel: threading.Event,
    workers: int = 1,
    mode: str = "auto",
) -> Iterator[Event]:
    """Train `jobs` with up to `workers` at once, yielding every run's events as they come.

    `mode` is "thread", "process", or "auto" (DEFAULT_MODE when several run at once).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r} (allowed: {', '.join(MODES)})")
    # One run per seed of an experiment's `seeds` (a resumed run is one run already).
    jobs = [
        Job(run) if job.resume_dir is None else job
        for job in jobs
        for run in (job.experiment.runs() if job.resume_dir is None else [job.experiment])
    ]
    workers = max(1, min(workers, len(jobs)))
    if mode == "auto":
        mode = DEFAULT_MODE if workers > 1 else "thread"
    if not jobs:
        return
    if mode == "process":
        yield from _in_processes(jobs, store, cancel, workers)
    else:
        yield from _in_threads(jobs, store, cancel, workers)


def _run_one(
    job: Job, store: RunStore, cancel: threading.Event, put: Callable[[Event], None]
) -> None:
    from ..core.engine import train
    from .live import EitherEvent, drive

    exp = job.experiment
    run = job.resume_dir
    try:
        run = run or store.create(exp)
        # The run's live files (batch losses, heartbeat, cancel requests) let any other
        # process follow and cancel it, as it would a run in a worker process.
        own = EitherEvent(cancel)
        for event in drive(run.path, train(exp, own, run, job.checkpoint), own):
            put(event)
    except Exception as e:
        reason = str(e) if isinstance(e, StoreError) else one_line(e)
        put(Failed(exp.label, reason, str(run.path) if run else None))
    finally:
        if run is not None:
            run.release()


def _in_threads(
    jobs: list[Job], store: RunStore, cancel: threading.Event, workers: int
) -> Iterator[Event]:
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
            _run_one(job, store, cancel, events.put)
        events.put(None)

    threads = [
        threading.Thread(target=worker, name=f"cnntui-run-{i}", daemon=True) for i in range(workers)
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


# --- worker processes ------------------------------------------------------------------
# The parent hands each worker one job at a time through the worker's own inbox, so it
# always knows which run a worker holds, even one that dies without a word. A worker sends
# ("event", wid, event) while training, ("done", wid, None) after each job, and
# ("exit", wid, None) last.


def _process_worker(
    wid: int, inbox: Any, out: Any, stop: Any, store: RunStore, share: int, parent: int
) -> None:
    # Ctrl-C, and the hangup of a closed terminal, reach the whole process group; the parent
    # turns them into the cancel event and every run saves its history, so the workers
    # ignore the signals themselves.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from ..core import engine

    engine.share_cpu(share)
    cancel = threading.Event()  # checked every batch: a local flag, not a cross-process lock

    def watch() -> None:
        # `stop` is a lock-free shared flag, polled: a process that exits while it waits on
        # a multiprocessing Event leaves the parent's `set()` blocked forever. A parent that
        # was killed outright cannot set it, so its death (we get re-parented) cancels too.
        while not stop.value and os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        cancel.set()

    threading.Thread(target=watch, name="cnntui-cancel", daemon=True).start()
    try:
        while (job := inbox.get()) is not None:
            _run_one(job, store, cancel, lambda event: out.put(("event", wid, event)))
            out.put(("done", wid, None))
    finally:
        out.put(("exit", wid, None))


def _in_processes(
    jobs: list[Job], store: RunStore, cancel: threading.Event, workers: int
) -> Iterator[Event]:
    """Train `jobs` in `workers` spawned processes, handing each a run as it finishes one."""
    # spawn, not fork: forking a process whose OpenMP threads have run can hang the child.
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    stop = ctx.RawValue(ctypes.c_bool, False)
    inboxes = [ctx.Queue() for _ in range(workers)]
    procs = _worker_processes(ctx, inboxes, out, stop, store)
    pending = list(reversed(jobs))
    holding: dict[int, str | None] = dict.fromkeys(range(workers))  # the run each one trains

    def hand_out(wid: int) -> None:
        job = pending.pop() if pending and not cancel.is_set() else None
        holding[wid] = job.experiment.name if job else None
        inboxes[wid].put(job)  # None tells the worker to exit

    for wid, p in enumerate(procs):
        p.start()
        hand_out(wid)
    live = set(range(workers))
    try:
        while live:
            if cancel.is_set():
                stop.value = True
            try:
                kind, wid, payload = out.get(timeout=POLL_SECONDS)
            except queue.Empty:
                yield from _deaths(procs, live, holding, pending)
                continue
            if kind == "event":
                yield payload
            elif kind == "done":
                hand_out(wid)
            elif kind == "exit":
                live.discard(wid)
    finally:
        stop.value = True  # no-op when all have exited; stops the rest when the caller quits
        _shut_down(procs, live, [out, *inboxes])


def _worker_processes(
    ctx: Any, inboxes: list[Any], out: Any, stop: Any, store: RunStore
) -> list[Any]:
    """One (not yet started) process per inbox, each running `_process_worker`."""
    workers = len(inboxes)
    return [
        ctx.Process(
            target=_process_worker,
            args=(wid, inboxes[wid], out, stop, store, workers, os.getpid()),
            name=f"cnntui-run-{wid}",
            daemon=True,
        )
        for wid in range(workers)
    ]


def _deaths(
    procs: list[Any], live: set[int], holding: dict[int, str | None], pending: list[Job]
) -> Iterator[Event]:
    """A Failed for each run whose process died without a goodbye (it leaves `live`), and,
    once every process is gone, for each run never handed out."""
    for wid in sorted(live):
        if not procs[wid].is_alive():  # killed or crashed without a goodbye
            live.discard(wid)
            name = holding[wid]
            if name is not None:
                reason = f"worker process died (exit code {procs[wid].exitcode})"
                yield Failed(name, reason)
    if not live:  # all died: the runs never handed out cannot run
        for job in reversed(pending):
            yield Failed(job.experiment.name, "not run: every worker process died")


def _shut_down(procs: list[Any], live: set[int], queues: list[Any]) -> None:
    """Wait for each process to end (killing one that lingers) and let go of the queues."""
    for p in procs:
        p.join(timeout=5 if live else 1)  # one that said "exit" is only shutting down
        if p.is_alive():
            p.terminate()
            p.join()
    for q in queues:
        q.cancel_join_thread()
