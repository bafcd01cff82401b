"""Data safety: atomic writes, paths that stay inside the store, interrupted runs, and
failures reported as one line."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cnntui.core import engine
from cnntui.core.config import ConfigError
from cnntui.core.events import Failed
from cnntui.runs.store import RunStore, atomic_write, atomic_write_bytes
from tests.helpers import tiny_experiment, train


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "history.npz"
    atomic_write_bytes(path, b"complete old contents")

    def crash_midway(f):
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, crash_midway)
    assert path.read_bytes() == b"complete old contents"
    assert os.listdir(tmp_path) == ["history.npz"]  # no temp file left behind


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "..", "/abs"])
def test_the_store_refuses_names_that_leave_it(tmp_path: Path, name: str) -> None:
    store = RunStore(tmp_path / "runs")
    with pytest.raises(ConfigError):
        store.create(dataclasses.replace(tiny_experiment(), name=name))
    assert not (tmp_path / "escape").exists()


def test_a_run_whose_process_died_reads_as_interrupted(tmp_path: Path) -> None:
    """The run's lock says whether its process lives (a process that dies lets go of its
    flock), not the pid summary.json names: that is text anyone can edit."""
    store = RunStore(tmp_path / "runs")
    run = store.create(tiny_experiment())
    assert store.latest("tiny").status == "running"  # this process holds its lock: alive
    summary = json.loads((run.path / "summary.json").read_text())
    summary["pid"] = 2**22 + 12345  # no such process, but the lock is held: still running
    (run.path / "summary.json").write_text(json.dumps(summary))
    assert store.latest("tiny").status == "running"
    run.release()  # as the OS does for a process that died
    assert store.latest("tiny").status == "interrupted"
    assert store.latest("tiny", unfinished=True) is not None


def test_unreadable_run_directories_are_skipped(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run = store.create(tiny_experiment())
    broken = run.path.parent / "20990101-000000-broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{ not json")
    assert [r.path for r in store.runs()] == [run.path]


def test_out_of_memory_is_a_failed_run_with_advice(tmp_path: Path, monkeypatch) -> None:
    class Exploding(torch.nn.Module):
        def __init__(self, *args) -> None:
            super().__init__()
            self.w = torch.nn.Linear(1, 1)

        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine, "build", lambda *a: Exploding())
    store = RunStore(tmp_path / "runs")
    exp = tiny_experiment(batch_size=64)
    events = list(train(exp, None, store.create(exp)))
    assert isinstance(events[-1], Failed)
    assert events[-1].reason == "out of memory at batch_size 64: lower batch_size or test_size"
    record = store.latest("tiny")
    assert record.status == "failed" and "OutOfMemoryError" in record.summary.reason


def test_a_model_that_does_not_fit_the_data_fails_cleanly(tmp_path: Path) -> None:
    exp = tiny_experiment(dataset="synthetic")
    # LeNet needs at least 16x16 images: feed it a dataset of 8x8 ones.
    from cnntui.core import data

    small = data.make_synthetic(64, 32, shape=(3, 8, 8))
    mp = pytest.MonkeyPatch()
    mp.setattr(data, "load", lambda *a, **k: small)
    try:
        events = list(engine.train(exp))
    finally:
        mp.undo()
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert "at least 16x16" in events[0].reason


def test_history_npz_always_loads_after_each_epoch(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    exp = tiny_experiment(epochs=3)
    run = store.create(exp)
    for event in train(exp, None, run):
        if type(event).__name__ == "EpochEnd":
            with np.load(run.path / "history.npz") as npz:
                assert len(npz["test_acc"]) == event.epoch + 1
