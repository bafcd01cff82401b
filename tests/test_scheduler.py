"""The schedulers' hold on their store: each lets go of its lock when its queue is empty,
and steps aside when another scheduler takes the lock in between."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cnntui.runs import daemon as scheduler
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
        self.other = scheduler.take_lock(self.store, name=self.lock_name)
        return True


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
    assert rival.other is not None and scheduler.held(store, lock_name)
