"""Cancelling and following a run through its files, against files a user (or an attacker)
wrote: `--cancel` signals only the process the system shows holding the run's lock,
followers stay bounded on a huge live file, and a follower says "resuming" only for a
resume. Each run here is written by the test, as a worker would leave it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from cnntui.core import history as hist
from cnntui.core.events import BatchLosses, EpochEnd, Started
from cnntui.core.history import History
from cnntui.runs import lifecycle
from cnntui.runs import store as st
from cnntui.runs.store import RunStatus, RunStore, RunSummary
from cnntui.tui.state import RunState
from tests.helpers import hold_lock, tiny_experiment
from tests.waiting import poll

RUN_ID = "20260101-000000-abcdef"
HUGE = 400 * 2**20  # bytes of live.f64: 52 million batch losses, as the red team's file
POLLS = 4  # looks at it: 2 million losses read, 16 times what a screen keeps


def write_run(runs: Path, **fields) -> Path:
    """alpha's run with the summary `fields` say (a worker's queue record by default)."""
    path = runs / "alpha" / RUN_ID
    path.mkdir(parents=True, exist_ok=True)
    fields.setdefault("queue", {"executor": "process", "resume": False})
    st.write_summary(path, RunSummary(name="alpha", run_id=RUN_ID, **fields))
    return path


def write_history(path: Path, epochs: int, per_epoch: int) -> None:
    history = History()
    for epoch in range(epochs):
        first = epoch * per_epoch
        history.add(BatchLosses("alpha", epoch, first, (2.0,) * per_epoch))
        history.add(EpochEnd("alpha", epoch, 2.0 - epoch, 0.2, 2.1, 0.18 + epoch / 10, 1.0))
    np.savez(path / "history.npz", **history.arrays())


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


# --- --cancel signals only the process holding the run's lock --------------------------------


@pytest.mark.process
def test_cancel_signals_the_lock_holder_never_the_pid_summary_json_names(tmp_path: Path) -> None:
    """summary.json is text anyone can edit: its pid names an unrelated process, which
    survives; the worker, the process holding the run's lock, is stopped."""
    path = write_run(tmp_path, status=RunStatus.RUNNING, epochs=2, batches_per_epoch=4)
    worker, bystander = hold_lock(path), sleeper()
    try:
        st.write_summary(path, st.RunStore.read(path).summary.with_fields(pid=bystander.pid))
        (line,) = lifecycle.cancel(RunStore(tmp_path), "alpha")
        assert f"SIGTERM to pid {worker.pid}" in line, line
        poll(lambda: worker.poll() is not None, 30, "the lock holder to get SIGTERM")
        assert bystander.poll() is None  # alive
        assert (path / st.CANCEL_FILE).exists()
    finally:
        stop(worker, bystander)


@pytest.mark.process
def test_a_running_run_whose_lock_nobody_holds_reads_interrupted_and_is_not_signalled(
    tmp_path: Path,
) -> None:
    """A copied run: marked running, its lock gone, its pid a live process of someone else."""
    bystander = sleeper()
    try:
        path = write_run(tmp_path, status=RunStatus.RUNNING, pid=bystander.pid, epochs=2)
        assert RunStore.read(path).status is RunStatus.INTERRUPTED
        with pytest.raises(st.StoreError, match="none of its runs is queued or running"):
            lifecycle.cancel(RunStore(tmp_path), "alpha")
        assert bystander.poll() is None
    finally:
        stop(bystander)


@pytest.mark.process
def test_without_proc_locks_cancel_asks_through_the_cancel_file_and_signals_nobody(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(st, "PROC_LOCKS", tmp_path / "no-such-file")
    path = write_run(tmp_path / "runs", status=RunStatus.RUNNING, epochs=2, batches_per_epoch=4)
    worker = hold_lock(path)
    try:
        st.write_summary(path, st.RunStore.read(path).summary.with_fields(pid=worker.pid))
        (line,) = lifecycle.cancel(RunStore(tmp_path / "runs"), "alpha")
        assert "asked through its cancel file" in line, line
        assert (path / st.CANCEL_FILE).exists()
        assert worker.poll() is None  # no signal: nothing the system said named it
    finally:
        stop(worker)


@pytest.mark.process
def test_the_lock_holder_is_read_from_proc_locks(tmp_path: Path) -> None:
    if not st.PROC_LOCKS.exists():
        pytest.skip("no /proc/locks here")
    path = write_run(tmp_path, status=RunStatus.RUNNING)
    assert st.lock_owner(path) is None  # no lock file: nobody
    worker = hold_lock(path)
    try:
        assert st.lock_owner(path) == worker.pid
        (path / st.LOCK_FILE).write_text("1\n")  # the pid in the file is text: not believed
        assert st.lock_owner(path) == worker.pid
    finally:
        stop(worker)
    assert st.lock_owner(path) is None


# --- followers stay bounded on a huge live file ----------------------------------------------


def huge_running_run(runs: Path, epochs: int, per_epoch: int) -> tuple[Path, st.RunLock]:
    """alpha running (this process holds its lock), its live file a 400 MB sparse file."""
    path = write_run(
        runs,
        status=RunStatus.RUNNING,
        pid=os.getpid(),
        epochs=epochs,
        batches_per_epoch=per_epoch,
        epochs_done=2,
    )
    with open(path / st.LIVE_FILE, "wb"):
        pass
    os.truncate(path / st.LIVE_FILE, HUGE)
    lock = st.try_lock(path)
    assert lock is not None
    return path, lock


def test_the_live_reader_reads_a_huge_file_in_bounded_chunks(tmp_path: Path) -> None:
    with open(tmp_path / st.LIVE_FILE, "wb"):
        pass
    os.truncate(tmp_path / st.LIVE_FILE, HUGE)
    reader = st.LiveReader(tmp_path)
    first = reader.read()
    assert 0 < len(first) <= st.LIVE_CHUNK
    assert len(reader.read()) == st.LIVE_CHUNK and reader.offset == 2 * 8 * st.LIVE_CHUNK
    assert reader.behind  # the rest waits for the next looks
    assert len(reader.read(end=10)) == 0 and not reader.behind  # nothing past batch 10


@pytest.mark.slow
def test_following_a_huge_live_file_keeps_the_tui_within_a_memory_bound(tmp_path: Path) -> None:
    """A long run's 400 MB of batch losses: each poll reads a bounded chunk, and the chart's
    series stays thinned to SERIES_POINTS, however much the run has done."""
    path, lock = huge_running_run(tmp_path, epochs=100, per_epoch=2**20)
    try:
        state = RunState(1, tiny_experiment())
        state.follow = lifecycle.RunEvents(path)
        tracemalloc.start()
        try:
            for _ in range(POLLS):
                t0 = time.monotonic()
                for event in state.follow.poll():
                    state.feed(event)
                assert time.monotonic() - t0 < 5.0
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        lock.release()
    assert state.done == POLLS * st.LIVE_CHUNK  # it read on, chunk by chunk
    assert len(state.history.batch_losses) <= hist.SERIES_POINTS
    assert len(state.history.batch_indices) == len(state.history.batch_losses)
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_status_and_followers_never_show_more_than_a_run_can_have_done(tmp_path: Path) -> None:
    """4 epochs of 8 batches, a 400 MB live file: 100% at most, and no batch past the 32nd."""
    path, lock = huge_running_run(tmp_path, epochs=4, per_epoch=8)
    try:
        (row,) = lifecycle.status_rows(RunStore(tmp_path))
        follow = lifecycle.RunEvents(path)
        events = follow.poll() + follow.poll()
    finally:
        lock.release()
    assert row[3] == "3/4 100%", row
    losses = [e for e in events if isinstance(e, BatchLosses)]
    assert sum(len(e.losses) for e in losses) == 32
    assert max(e.first_index + len(e.losses) for e in losses) == 32


# --- a follower says "resuming" only for a resume ---------------------------------------------


def test_a_fresh_run_first_seen_after_its_first_epoch_is_not_reported_as_resumed(
    tmp_path: Path,
) -> None:
    """`--run a,b,c`: b is queued when its follower starts; by the first poll it has trained
    an epoch. It started at epoch 1, and that epoch's line is shown."""
    path = write_run(tmp_path, status=RunStatus.QUEUED, epochs=3)
    follow = lifecycle.RunEvents(path)
    write_run(
        tmp_path,
        status=RunStatus.RUNNING,
        epochs=3,
        batches_per_epoch=4,
        epochs_done=1,
        pid=os.getpid(),
    )
    write_history(path, epochs=1, per_epoch=4)
    st.LiveWriter(path).write(0, [2.0] * 6)
    lock = st.try_lock(path)
    try:
        events = follow.poll()
    finally:
        lock.release() if lock else None
    started = [e for e in events if isinstance(e, Started)]
    assert [e.start_epoch for e in started] == [0]
    assert [e.epoch for e in events if isinstance(e, EpochEnd)] == [0]
    assert sum(len(e.losses) for e in events if isinstance(e, BatchLosses)) == 6


def test_a_real_resume_is_still_reported_as_resuming(tmp_path: Path) -> None:
    """`--resume`: the history of 2 epochs was there before the follower began."""
    path = write_run(
        tmp_path,
        status=RunStatus.QUEUED,
        epochs=4,
        batches_per_epoch=4,
        epochs_done=2,
        pid=os.getpid(),
        queue={"executor": "process", "resume": True, "was": "interrupted"},
    )
    write_history(path, epochs=2, per_epoch=4)
    follow = lifecycle.RunEvents(path)
    summary = RunStore.read(path).summary.with_fields(status=RunStatus.RUNNING)
    st.write_summary(path, summary)
    lock = st.try_lock(path)
    try:
        first = follow.poll()
        write_history(path, epochs=3, per_epoch=4)
        os.utime(path / "history.npz", (time.time() + 5, time.time() + 5))
        second = follow.poll()
    finally:
        lock.release() if lock else None
    assert [e.start_epoch for e in first if isinstance(e, Started)] == [2]
    assert not [e for e in first if isinstance(e, EpochEnd)]
    assert [e.epoch for e in second if isinstance(e, EpochEnd)] == [2]
