"""The run store keeps what was recorded: a failed or partial resume never shortens a history,
a run being trained is locked, a full disk leaves a failed run (or none), never a `running`
one, and reading a damaged run raises one documented error."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from cnntui.core import engine
from cnntui.core.events import BatchLosses, Cancelled, EpochEnd, Failed, Finished, Started
from cnntui.core.history import History
from cnntui.runs import store as store_mod
from cnntui.runs.executors import Job, run_jobs
from cnntui.runs.store import RunStore
from tests.helpers import tiny_experiment, train


def cancelled_in_epoch_2(store: RunStore, **overrides):
    """A run stopped partway through its second epoch: one checkpointed epoch on disk plus
    the batches trained after it."""
    exp = tiny_experiment(epochs=3, **overrides)
    cancel = threading.Event()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "FLUSH_SECONDS", 0.0)  # every batch its own event
        for event in train(exp, cancel, store.create(exp)):
            if isinstance(event, BatchLosses) and event.first_index >= 10:
                cancel.set()  # 3 batches into epoch 2 (8 batches an epoch)
    record = store.latest(exp.name)
    assert record.status == "cancelled"
    history = record.history()
    assert history.epochs_done == 1 and len(history.batch_losses) > 8  # 8 batches an epoch
    return exp, record, history


def files_of(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def test_a_resume_whose_checkpoint_is_corrupt_keeps_the_history(runs_dir: Path) -> None:
    store = RunStore(runs_dir)
    exp, record, before = cancelled_in_epoch_2(store)
    record.checkpoint.write_bytes(b"not a checkpoint")
    events = list(train(exp, None, store.reopen(record), record.checkpoint))
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert "checkpoint.pt: unreadable checkpoint" in events[0].reason
    after = store.latest(exp.name)
    assert after.history() == before  # nothing recorded is lost
    assert after.status == "cancelled"  # and it can still be resumed
    assert after.summary.reason.startswith("resume failed: ")
    assert store.latest(exp.name, unfinished=True).path == record.path


def test_a_resume_never_writes_a_history_shorter_than_the_disk(runs_dir: Path) -> None:
    store = RunStore(runs_dir)
    exp, record, before = cancelled_in_epoch_2(store)
    stop = threading.Event()
    stop.set()  # cancelled again before a batch: the checkpoint's history is shorter
    events = list(train(exp, stop, store.reopen(record), record.checkpoint))
    assert isinstance(events[0], Started) and isinstance(events[-1], Cancelled)
    after = store.latest(exp.name)
    assert after.history() == before
    assert after.summary.batches_done == len(before.batch_losses)
    assert after.status == "cancelled"


def test_a_resume_that_catches_up_finishes_with_the_full_history(runs_dir: Path) -> None:
    store = RunStore(runs_dir)
    exp, record, before = cancelled_in_epoch_2(store)
    run, checkpoint = store.resume(record, {"epochs": 3})
    events = list(train(run.experiment, None, run, checkpoint))
    assert isinstance(events[-1], Finished)
    history = store.latest(exp.name).history()
    assert history.epochs_done == 3 and len(history.batch_losses) == 24
    assert history.batch_losses[:8] == before.batch_losses[:8]


def test_resume_refuses_settings_that_change_what_the_run_trains(runs_dir: Path) -> None:
    store = RunStore(runs_dir)
    _, record, _ = cancelled_in_epoch_2(store)
    files = files_of(record.path)
    with pytest.raises(store_mod.ResumeError) as err:
        store.resume(record, {"model": "resnet", "lr": 0.5, "epochs": 9, "device": "cpu"})
    message = str(err.value)
    assert "model, lr cannot change on resume" in message and "\n" not in message
    assert files_of(record.path) == files  # nothing written, no lock file made
    run, _ = store.resume(record, {"model": "lenet", "epochs": 9})  # same model: fine
    assert run.experiment.epochs == 9
    run.release()


def test_resume_without_a_checkpoint_refuses_a_run_that_recorded_batches(runs_dir) -> None:
    store = RunStore(runs_dir)
    _, record, _ = cancelled_in_epoch_2(store)
    record.checkpoint.unlink()
    with pytest.raises(store_mod.ResumeError, match=r"has no checkpoint\.pt to continue from"):
        store.resume(record, {})


def test_resume_of_a_run_that_recorded_nothing_restarts_in_place(runs_dir: Path) -> None:
    store = RunStore(runs_dir)
    exp = tiny_experiment()
    first = store.create(exp)
    first.save(History(), "cancelled", reason="cancelled by the user")
    first.release()
    run, checkpoint = store.resume(store.latest(exp.name), {})
    assert checkpoint is None and run.path == first.path
    events = list(train(run.experiment, None, run, checkpoint))
    assert isinstance(events[-1], Finished)
    assert [r.path for r in store.runs()] == [first.path]
    assert store.latest(exp.name).history().epochs_done == 2


# -- locks ------------------------------------------------------------------------------------


def test_a_run_is_locked_while_this_process_trains_it(runs_dir: Path) -> None:
    store = RunStore(runs_dir)
    exp = tiny_experiment()
    run = store.create(exp)
    assert store_mod.lock_holder(run.path) == os.getpid()
    record = store.latest(exp.name)
    assert record.status == "running"
    with pytest.raises(store_mod.RunLocked, match=f"still training in pid {os.getpid()}"):
        store.reopen(record)
    list(train(exp, None, run))
    assert store_mod.lock_holder(run.path) is None  # released when the run ends


@pytest.mark.process
def test_a_running_summary_whose_lock_is_free_reads_as_interrupted(runs_dir: Path) -> None:
    """A pid that lives (here: a sleeping process, as after pid reuse) does not make a run
    `running` when nothing holds its lock."""
    store = RunStore(runs_dir)
    exp = tiny_experiment()
    run = store.create(exp)
    run.release()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        summary = json.loads((run.path / "summary.json").read_text())
        summary["pid"] = sleeper.pid
        (run.path / "summary.json").write_text(json.dumps(summary))
        assert store.latest(exp.name).status == "interrupted"
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.process
def test_a_lock_held_by_another_process_is_seen_and_refused(runs_dir: Path) -> None:
    store = RunStore(runs_dir)
    exp = tiny_experiment()
    run = store.create(exp)
    run.release()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from cnntui.runs import store;"
            "lock = store.try_lock(Path(sys.argv[1])); print('held', flush=True);"
            "time.sleep(60)",
            str(run.path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert store_mod.lock_holder(run.path) == holder.pid
        with pytest.raises(store_mod.RunLocked, match=f"still training in pid {holder.pid}"):
            store.resume(store.latest(exp.name), {})
    finally:
        holder.kill()
        holder.wait()
    assert store_mod.lock_holder(run.path) is None  # the OS let go when it died


@pytest.mark.process
def test_a_worker_process_trains_a_resumed_run_while_the_parent_holds_its_lock(runs_dir):
    store = RunStore(runs_dir)
    exp, record, _ = cancelled_in_epoch_2(store)
    run, checkpoint = store.resume(record, {})
    jobs = [Job(run.experiment, run, checkpoint), Job(tiny_experiment(name="other"))]
    events = list(run_jobs(jobs, store, threading.Event(), 2, "process"))
    assert [type(e).__name__ for e in events if isinstance(e, Finished | Failed)] == [
        "Finished",
        "Finished",
    ]
    assert store.latest(exp.name).history().epochs_done == 3


# -- a full disk ------------------------------------------------------------------------------


def disk_full_for(monkeypatch, when) -> None:
    """Every run-store write for which `when(path)` holds fails as on a full disk."""
    real = store_mod.atomic_write

    def atomic_write(path, write):
        if when(Path(path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, write)

    monkeypatch.setattr(store_mod, "atomic_write", atomic_write)


def test_a_full_disk_at_the_start_leaves_no_run_directory(runs_dir: Path, monkeypatch) -> None:
    disk_full_for(monkeypatch, lambda path: True)
    exp = tiny_experiment()
    events = list(run_jobs([Job(exp)], RunStore(runs_dir), threading.Event()))
    (failed,) = events
    assert isinstance(failed, Failed) and "No space left on device" in failed.reason
    assert "config.toml" in failed.reason and "\n" not in failed.reason
    assert list((runs_dir / exp.name).iterdir()) == []


def test_a_full_disk_after_setup_with_nothing_recorded_removes_the_run(runs_dir, monkeypatch):
    store = RunStore(runs_dir)
    exp = tiny_experiment()
    run = store.create(exp)
    disk_full_for(monkeypatch, lambda path: True)
    events = list(train(exp, None, run))
    assert isinstance(events[-1], Failed) and "No space left on device" in events[-1].reason
    assert store.runs() == [] and not run.path.exists()


def test_a_full_disk_mid_run_interrupts_it_and_keeps_its_epochs(runs_dir, monkeypatch):
    """The big files no longer fit, the small summary still does: the run reads interrupted
    (resumable from its last checkpoint once there is room), naming the file and the cause."""
    store = RunStore(runs_dir)
    exp = tiny_experiment(epochs=3)
    full = threading.Event()
    disk_full_for(monkeypatch, lambda p: full.is_set() and p.name != "summary.json")
    events = []
    for event in train(exp, None, store.create(exp)):
        events.append(event)
        if isinstance(event, EpochEnd):
            full.set()
    assert isinstance(events[-1], Failed) and "No space left on device" in events[-1].reason
    record = store.latest(exp.name)
    assert record.status == "interrupted"
    assert "--resume continues it from epoch 1" in record.summary.reason
    assert "cannot write" in record.summary.reason
    assert "No space left on device" in record.summary.reason
    assert record.history().epochs_done == 1


def test_a_full_disk_for_every_file_mid_run_never_leaves_it_running(runs_dir, monkeypatch):
    store = RunStore(runs_dir)
    exp = tiny_experiment(epochs=3)
    full = threading.Event()
    disk_full_for(monkeypatch, lambda p: full.is_set())
    events = []
    for event in train(exp, None, store.create(exp)):
        events.append(event)
        if isinstance(event, EpochEnd):
            full.set()
    assert isinstance(events[-1], Failed)
    record = store.latest(exp.name)
    assert record.status == "interrupted"  # not `running`; resumable from its checkpoint
    assert record.history().epochs_done == 1


class _FullDisk(io.RawIOBase):
    """A file on a disk that fills up after `room` bytes, as the OS reports it."""

    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return len(data)


def test_a_checkpoint_that_no_longer_fits_is_said_as_such_and_resumes_once_it_fits(
    runs_dir, monkeypatch
):
    """torch's own writer turns a full disk into `RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos`: the run says which file and why instead, stays
    resumable, and --resume continues it once there is room."""
    store = RunStore(runs_dir)
    exp = tiny_experiment(epochs=3)
    full = threading.Event()
    real = store_mod.atomic_write

    def atomic_write(path, write):
        if full.is_set() and Path(path).name == "checkpoint.pt":
            return write(_FullDisk(1000))
        return real(path, write)

    monkeypatch.setattr(store_mod, "atomic_write", atomic_write)
    events = []
    for event in train(exp, None, store.create(exp)):
        events.append(event)
        if isinstance(event, EpochEnd):
            full.set()
    record = store.latest(exp.name)
    assert record.status == "interrupted", record.summary.reason
    reason = record.summary.reason
    assert "checkpoint.pt: No space left on device" in reason and "enforce" not in reason
    monkeypatch.setattr(store_mod, "atomic_write", real)  # space freed
    record = store.latest(exp.name, unfinished=True)
    assert record is not None  # --resume finds it
    run, checkpoint = store.resume(record, {})
    events = list(train(run.experiment, None, run, checkpoint))
    assert isinstance(events[-1], Finished)
    assert store.latest(exp.name).history().epochs_done == 3


# -- reading damaged runs ---------------------------------------------------------------------


def test_a_damaged_history_raises_one_documented_error_naming_the_file(runs_dir) -> None:
    store = RunStore(runs_dir)
    exp = tiny_experiment()
    run = store.create(exp)
    run.release()
    npz = run.path / "history.npz"
    cases = [
        b"PK\x03\x04 truncated zip",
        b"\x93NUMPY not an archive",
        b"",
    ]
    for data in cases:
        npz.write_bytes(data)
        with pytest.raises(store_mod.RunFileError, match=r"history\.npz: ") as err:
            store.latest(exp.name).history()
        assert "\n" not in str(err.value)
    arrays = History().arrays() | {"test_acc": np.zeros((2, 2))}
    np.savez(npz, **arrays)
    with pytest.raises(store_mod.RunFileError, match="'test_acc' must be a 1-D array"):
        store.latest(exp.name).history()


def test_a_summary_with_values_of_the_wrong_type_is_listed_with_them_dropped(runs_dir) -> None:
    store = RunStore(runs_dir)
    runs = [store.create(tiny_experiment()), store.create(tiny_experiment())]
    for run in runs:
        run.release()
    bad = {"started": 5, "status": ["x"], "pid": 10**30, "epochs_done": "3", "params": True}
    (runs[0].path / "summary.json").write_text(json.dumps(bad))
    records = store.runs()  # sorting on `started` used to raise TypeError
    assert len(records) == 2
    broken = next(r for r in records if r.path == runs[0].path)
    assert broken.summary.to_json() == {"pid": 10**30, "name": "tiny", "status": "unknown"}
    assert broken.status == "unknown"  # a status this program never writes
    assert broken.name == "tiny"
    assert [d.split(" ")[0] for d in broken.dropped] == [
        "'started'",
        "'status'",
        "'epochs_done'",
        "'params'",
    ]


def test_a_missing_or_broken_config_raises_run_file_error(runs_dir: Path) -> None:
    store = RunStore(runs_dir)
    run = store.create(tiny_experiment())
    run.release()
    config = run.path / "config.toml"
    for text, message in [
        (None, "config.toml: missing"),
        ("lr = [", "config.toml: not valid TOML"),
        ('model = "vgg"', "config.toml: unknown model 'vgg'"),
        ("lr = 'fast'", "config.toml: 'lr' must be a number"),
    ]:
        if text is None:
            config.unlink()
        else:
            config.write_text(text)
        with pytest.raises(store_mod.RunFileError, match=message):
            store.latest("tiny").experiment()


@pytest.mark.process
async def test_the_tui_starts_on_damaged_runs_and_shows_dead_ones_interrupted(
    tiny_toml, runs_dir, tmp_path
) -> None:
    from cnntui.tui.app import make_app

    store = RunStore(runs_dir)
    exp = tiny_experiment(name="alpha", epochs=1)
    paths = []
    for _ in range(4):
        run = store.create(exp)
        list(train(exp, None, run))
        paths.append(run.path)
    (paths[0] / "history.npz").write_bytes(b"PK\x03\x04 truncated")
    (paths[1] / "summary.json").write_text(json.dumps({"started": 7, "final_test_acc": "x"}))
    (paths[2] / "config.toml").unlink()
    summary = json.loads((paths[3] / "summary.json").read_text())
    summary.update(status="running", pid=2**22 + 12345)  # its process is gone
    (paths[3] / "summary.json").write_text(json.dumps(summary))

    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "exports", device_label="cpu")
    async with app.run_test(size=(100, 30)) as pilot:
        rows = app.main.results.rows_by_key
        assert set(rows) == {str(p) for p in paths}
        assert rows[str(paths[3])].status == "interrupted"
        for key in ("v", "space", "v", "R"):  # results, mark, curves, resume the dead one
            await pilot.press(key)
            await pilot.pause()
        assert app.screen is app.main
