"""The schedulers' hold on their store: each lets go of its lock when its queue is empty,
and steps aside when another scheduler takes the lock in between."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cnntui.runs import daemon as scheduler
from cnntui.runs import processes
from cnntui.runs import ray_executor as rayexec
from cnntui.runs import store as st
from cnntui.runs.store import RunStore


class _Rival:
    """A scheduler with nothing to launch whose queue gains a run just as it lets go of the
    lock, while another scheduler takes that lock (and keeps it)."""

    def __init__(self, store: RunStore, lock_name: str) -> None:
        self.store = store
        self.lock_name = lock_name
        self.other: st.RunLock | None = None

    def step(self) -> bool:
        return False

    def queued(self) -> bool:
        self.other = processes.take_lock(self.store, name=self.lock_name)
        return True

    def waiting(self) -> bool:  # what the drain asks once it has let go
        return self.queued()


@pytest.mark.parametrize(
    ("run", "lock_name"),
    [(scheduler.run, st.SCHEDULER_LOCK), (rayexec.run, st.RAY_SCHEDULER_LOCK)],
    ids=["local", "ray"],
)
def test_a_scheduler_that_loses_its_lock_to_another_steps_aside(
    tmp_path: Path, run: Callable[[RunStore, _Rival], int], lock_name: str
) -> None:
    if lock_name == st.RAY_SCHEDULER_LOCK and rayexec.ray_missing():
        pytest.skip("Ray is not installed")
    store = RunStore(tmp_path / "runs")
    store.root.mkdir()
    rival = _Rival(store, lock_name)
    assert run(store, rival) == 0  # it returns quietly: the other one drains the queue
    assert rival.other is not None and processes.held(store, lock_name)


# --- hand-damaged queue records --------------------------------------------------------------


def _queued_with(store: RunStore, **damage: object) -> Path:
    """A run queued as --detach queues it, whose summary.json's queue record a hand then
    edited."""
    import json

    from cnntui.runs import lifecycle
    from tests.helpers import tiny_experiment

    (record,) = lifecycle.submit(store, [tiny_experiment()])
    summary = json.loads((record.path / "summary.json").read_text())
    summary["queue"].update(damage)
    (record.path / "summary.json").write_text(json.dumps(summary))
    return record.path


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ({"executor": "gpu-farm"}, "executor 'gpu-farm' (allowed: process, ray)"),
        ({"jobs": "two"}, "queue record's jobs is 'two'"),
    ],
)
def test_a_hand_damaged_queue_record_fails_its_run_saying_why(
    tmp_path: Path, damage: dict[str, object], said: str
) -> None:
    from cnntui.runs import lifecycle

    store = RunStore(tmp_path / "runs")
    path = _queued_with(store, **damage)
    # the worker scheduler takes it (it is no one else's), and does not wait on it for ever
    assert "process" in {
        r.queue.executor if r.queue and not r.queue_problem else "process" for r in store.queued()
    }
    sched = scheduler.Scheduler(store, inventory=lambda: [])
    assert sched.step() is False  # nothing left to wait for
    record = RunStore.read(path)
    assert record is not None and record.status is st.RunStatus.FAILED
    assert said in (record.summary.reason or "")
    assert "queued" not in lifecycle.status_table(store)


def test_runs_queued_on_a_full_disk_wait_and_status_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnntui.runs import lifecycle
    from tests.helpers import tiny_experiment

    store = RunStore(tmp_path / "runs")
    (record,) = lifecycle.submit(store, [tiny_experiment()])
    monkeypatch.setattr(st, "disk_free", lambda root: 4096)
    sched = scheduler.Scheduler(store, inventory=lambda: [], python="/bin/true")
    assert sched.step() is True  # still something to do: the run waits
    assert sched.workers == {}  # no worker started on a full disk
    status = lifecycle.status_table(store)
    assert "queued #1" in status and "is full (4,096 bytes free)" in status
    monkeypatch.setattr(st, "disk_free", lambda root: 10 * st.MIN_FREE_BYTES)  # space freed
    sched.step()
    assert list(sched.workers) == [record.path]
    assert "is full" not in lifecycle.status_table(store)


def test_a_queued_run_whose_summary_was_cut_short_shows_failed_in_status(tmp_path: Path) -> None:
    from cnntui.runs import lifecycle
    from tests.helpers import tiny_experiment

    store = RunStore(tmp_path / "runs")
    (record,) = lifecycle.submit(store, [tiny_experiment()])
    file = record.path / "summary.json"
    file.write_bytes(file.read_bytes()[:40])  # cut short by hand, or by a full disk
    status = lifecycle.status_table(store)
    row = next(line for line in status.splitlines() if record.run_id[:20] in line)
    assert row.split()[0] == "tiny" and row.rstrip().endswith("failed")
    assert f"tiny {record.run_id}: failed: its summary.json cannot be read" in status
    assert all(len(line) <= 80 for line in status.splitlines() if "summary.json" not in line)
