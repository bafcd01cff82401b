"""A lost Ray node, or a Ray scheduler that ends unexpectedly, is treated like a lost task: the
run is retried from its checkpoint with the reason kept, never left `running` for ever nor
`interrupted` without a word. The exception types are those Ray 2.60 raises when a node is
killed (`kill -9` of its raylet and workers): NodeDiedError from the task's generator,
RayActorError (ActorUnavailableError, then ActorDiedError) from an actor that lived there;
ray.nodes() lists the node with Alive False; a driver whose own raylet dies is terminated by
Ray without a Python exception ("The connection to the plasma store is failed. Terminate the
process.")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cnntui.runs import lifecycle
from cnntui.runs import ray_executor as rayexec
from cnntui.runs import store as st
from cnntui.runs.store import RunStore
from tests.helpers import tiny_experiment

pytestmark = pytest.mark.ray
ray_exceptions = pytest.importorskip("ray.exceptions", reason="Ray is not installed")

NODE_DIED = (
    "Task failed because the node it was running on is dead or unavailable. Node IP: "
    "10.0.0.7, node ID: d917f0e7. This can happen if the node was preempted."
)


def taken_run(store: RunStore, **settings) -> rayexec.Remote:
    """A run queued for Ray and taken by the scheduler (locked, marked running), as it is
    while its task trains on a node that said hello."""
    exp = tiny_experiment(name="lost", cluster="127.0.0.1:6379", **settings)
    [record] = lifecycle.submit(store, [exp])
    lock = st.try_lock(record.path)
    assert lock is not None
    again = RunStore.read(record.path)
    run, _checkpoint = store.open_queued(again, lock)
    run.save_summary(st.RunStatus.RUNNING, epochs_done=2)
    remote = rayexec.Remote(run, again.queue, None, rayexec.RemoteCancel(lambda: None))
    remote.node = "gpu-7"
    return remote


def test_a_dead_node_is_retried_from_its_checkpoint_saying_so(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    remote = taken_run(store)
    sched = rayexec.RayScheduler(store)
    sched.finish(remote, ray_exceptions.NodeDiedError(NODE_DIED))
    remote.run.release()
    done = RunStore.read(remote.run.path)
    assert done.status == "queued"
    assert done.summary.reason == (
        "Ray node gpu-7 died (NodeDiedError: Task failed because the node it was running on "
        "is dead or unavailable); retry 1 of 1, from epoch 2"
    )
    assert done.summary.queue["resume"] is True
    assert done.summary.queue["retry_reason"].startswith("Ray node gpu-7 died (NodeDiedError")


def test_a_dead_node_without_retries_left_is_interrupted_saying_so(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    remote = taken_run(store, retries=0)
    rayexec.RayScheduler(store).finish(remote, ray_exceptions.NodeDiedError(NODE_DIED))
    remote.run.release()
    done = RunStore.read(remote.run.path)
    assert done.status == "interrupted"
    assert done.summary.reason.startswith("Ray node gpu-7 died (NodeDiedError: Task failed")
    assert done.summary.reason.endswith("--resume or R continues it from epoch 2")


def test_a_follower_that_fails_retries_its_run_and_logs_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unexpected exception while following a run (here in `finish`) is one line in the
    scheduler's log, and the run is retried saying why, not left `running` for ever."""
    store = RunStore(tmp_path / "runs")
    remote = taken_run(store)
    sched = rayexec.RayScheduler(store)

    def broken(_remote: rayexec.Remote, _error: BaseException | None) -> None:
        raise KeyError("node_pid")

    sched.finish = broken  # type: ignore[method-assign]
    sched.stream = lambda _remote: iter(())  # type: ignore[method-assign]
    sched.follow(remote)
    done = RunStore.read(remote.run.path)
    assert done.status == "queued", done.summary
    assert "the Ray scheduler failed while following it (KeyError: 'node_pid')" in (
        done.summary.reason
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "KeyError: 'node_pid'" in err[0]


def test_a_failing_scheduler_loop_is_one_line_and_ends_with_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RunStore(tmp_path / "runs")
    lifecycle.submit(store, [tiny_experiment(name="q", cluster="127.0.0.1:6379")])
    sched = rayexec.RayScheduler(store)

    def broken() -> bool:
        raise RuntimeError("GCS went away")

    sched.step = broken  # type: ignore[method-assign]
    assert rayexec.run(store, sched) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cnntui ray: the Ray scheduler failed: RuntimeError: GCS went away"]


def test_runs_of_a_scheduler_that_died_are_retried_with_the_reason(tmp_path: Path) -> None:
    """A run marked running whose scheduler is gone (Ray terminated it when its own node's
    raylet died, or it was killed) is queued again from its checkpoint, saying so."""
    store = RunStore(tmp_path / "runs")
    remote = taken_run(store)
    remote.run.release()  # its scheduler is gone: nobody holds the run
    assert RunStore.read(remote.run.path).status == "interrupted"  # today: and no reason
    assert rayexec.recover(store, "the Ray scheduler (pid 9) ended (exit status 1)") == 1
    done = RunStore.read(remote.run.path)
    assert done.status == "queued"
    assert done.summary.reason == (
        "the Ray scheduler (pid 9) ended (exit status 1); retry 1 of 1, from epoch 2"
    )
    assert rayexec.recover(store) == 0  # queued now: nothing more to recover


@pytest.mark.process
def test_a_scheduler_process_that_dies_is_said_and_its_runs_queued_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Ray scheduler keeps its Ray connection in a child process (Ray may terminate a
    driver without a Python exception): when that child ends unexpectedly (here it kills
    itself while holding the run, once), the scheduler says so in one line of its log, queues
    its runs again with the reason, and starts another child."""
    store = RunStore(tmp_path / "runs")
    remote = taken_run(store)
    remote.run.release()
    marker = tmp_path / "died-once"
    child = (
        "import os, signal, sys; from pathlib import Path\n"
        f"m = Path({str(marker)!r})\n"
        "if not m.exists():\n"
        "    m.touch(); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert rayexec.supervise(store, [sys.executable, "-c", child]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnntui ray: the Ray scheduler (pid "), err
    assert err[0].endswith(") ended (killed by SIGKILL)")
    done = RunStore.read(remote.run.path)
    assert done.status == "queued"
    assert "ended (killed by SIGKILL); retry 1 of 1, from epoch 2" in done.summary.reason
