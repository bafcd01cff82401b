"""`--jobs N` in worker processes: the same runs as in threads, and cancel.

Each test here queues runs in the store, whose scheduler starts worker processes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cnntui.core.events import BatchLosses, Cancelled, EpochEnd, Finished, Started
from cnntui.runs.executors import Job, run_jobs
from cnntui.runs.store import RunStore
from tests.helpers import tiny_experiment


def by_run(events) -> dict[str, tuple[list[float], list[float], type]]:
    out: dict[str, tuple[list[float], list[float], type]] = {}
    for e in events:
        losses, accs, _ = out.setdefault(e.name, ([], [], type(None)))
        if isinstance(e, BatchLosses):
            losses.extend(e.losses)
        elif isinstance(e, EpochEnd):
            accs.append(e.test_acc)
        elif not isinstance(e, Started):
            out[e.name] = (losses, accs, type(e))
    return out


@pytest.mark.process
def test_processes_give_the_same_runs_as_threads(runs_dir: Path) -> None:
    jobs = [Job(tiny_experiment(name=f"run{i}", seed=i)) for i in range(3)]  # 3 jobs, 2 workers
    cancel = threading.Event()
    threaded = by_run(run_jobs(jobs, RunStore(runs_dir / "t"), cancel, 2, "thread"))
    store = RunStore(runs_dir / "p")
    processed = by_run(run_jobs(jobs, store, cancel, 2, "process"))
    assert set(processed) == {"run0", "run1", "run2"}
    assert processed == threaded
    for name, (losses, _, ending) in processed.items():
        assert ending is Finished and len(losses) == 2 * 8  # every batch loss arrived
        record = store.latest(name)
        assert record.status == "finished" and record.history().batch_losses == losses


@pytest.mark.process
def test_cancel_reaches_worker_processes_and_they_save(runs_dir: Path) -> None:
    jobs = [
        Job(tiny_experiment(name=f"long{i}", train_size=20_000, batch_size=4, epochs=1))
        for i in range(2)
    ]
    store = RunStore(runs_dir)
    cancel = threading.Event()
    events = []
    for event in run_jobs(jobs, store, cancel, 2, "process"):
        events.append(event)
        if isinstance(event, BatchLosses):
            cancel.set()
    runs = by_run(events)
    assert runs and all(ending is Cancelled for _, _, ending in runs.values())
    assert any(losses for losses, _, _ in runs.values())
    for name, (losses, _, _) in runs.items():
        assert len(losses) < 5000  # stopped early, not at the end of the epoch
        record = store.latest(name)
        assert record.status == "cancelled" and record.history().batch_losses == losses


def test_an_unknown_executor_is_refused(runs_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown executor 'fork'"):
        list(run_jobs([Job(tiny_experiment())], RunStore(runs_dir), threading.Event(), 1, "fork"))
