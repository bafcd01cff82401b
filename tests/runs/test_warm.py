"""Warm workers: runs forked from the store's warm process train as cold ones do, and the warm
process is fork-safe (one thread, no CUDA, no descriptor leaks into the run) and goes away
when idle."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cnntui.runs import daemon as scheduler
from cnntui.runs import lifecycle, warm
from cnntui.runs import store as st
from cnntui.runs.records import RunStatus
from cnntui.runs.store import RunStore
from tests.helpers import tiny_experiment, warm_pid
from tests.waiting import DEADLINE, poll, until


class _NoCold:
    """A fallback launcher that fails the test: every run must start warm."""

    def start(self, run_dir: Path, env: dict[str, str], log: int) -> warm.Handle:
        raise AssertionError(f"{run_dir} started cold")


def _drain(store: RunStore, launcher: warm.Launcher) -> scheduler.Scheduler:
    sched = scheduler.Scheduler(store, inventory=lambda: [], launcher=launcher)
    assert scheduler.run(store, sched) == 0
    return sched


@pytest.fixture
def store(tmp_path: Path):
    """A run store; afterwards its warm process is gone."""
    store = RunStore(tmp_path / "runs")
    store.root.mkdir()
    yield store
    pid = warm_pid(store)
    if pid:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.process
@pytest.mark.slow
def test_a_run_started_warm_trains_and_its_first_loss_reaches_disk(store: RunStore) -> None:
    launcher = warm.WarmLauncher(store.root, idle=60, fallback=_NoCold())
    assert launcher.ensure()
    lifecycle.submit(store, [tiny_experiment(epochs=1)])
    _drain(store, launcher)
    record = store.latest("tiny")
    assert record.status == RunStatus.FINISHED, record.summary.reason
    assert record.summary.pid != warm_pid(store)  # a child trained it
    assert len(st.LiveReader(record.path).read()) == 256 // 32
    assert record.summary.batches_done == 256 // 32


@pytest.mark.process
@pytest.mark.slow
def test_a_killed_warm_process_is_replaced_and_the_next_run_trains(store: RunStore) -> None:
    launcher = warm.WarmLauncher(store.root, idle=60, fallback=_NoCold())
    assert launcher.ensure()
    first = warm_pid(store)
    os.kill(first, signal.SIGKILL)
    poll(lambda: launcher.process and launcher.process.poll() is not None, what="it to die")
    lifecycle.submit(store, [tiny_experiment(epochs=1)])
    _drain(store, launcher)
    assert store.latest("tiny").status == RunStatus.FINISHED
    assert warm_pid(store) != first


@pytest.mark.process
@pytest.mark.slow
def test_the_worker_holds_no_descriptor_it_inherited(store: RunStore) -> None:
    # The warm process is started holding the scheduler's lock open (as a process forked from
    # the scheduler would); the run it forks must close it, and the warm lock and socket.
    lock = os.open(store.root / st.SCHEDULER_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnntui.runs.warm", str(store.root), "60"],
        pass_fds=[lock],
        start_new_session=True,
    )
    poll(lambda: warm.connect(store.root), what="the warm process to listen")
    lifecycle.submit(store, [tiny_experiment(train_size=3000, batch_size=4, epochs=1)])
    path = store.latest("tiny").path
    log = st.open_file(path / st.WORKER_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    handle = warm.WarmLauncher(store.root, 60).start(path, dict(os.environ), log)
    os.close(log)
    assert os.path.exists(f"/proc/{proc.pid}/fd/{lock}")  # the warm process has it
    poll(lambda: store.latest("tiny").status == RunStatus.RUNNING, what="the run to start")
    fds = os.listdir(f"/proc/{handle.pid}/fd")
    targets = {os.readlink(f"/proc/{handle.pid}/fd/{fd}") for fd in fds}
    handle.terminate()
    poll(lambda: handle.poll() is not None, what="the worker to stop")
    os.close(lock)
    names = {Path(t).name for t in targets}
    assert not names & {st.SCHEDULER_LOCK, st.WARM_LOCK, st.WARM_SOCKET}, targets
    assert not any(t.startswith("socket:") for t in targets), targets
    assert os.getsid(proc.pid) != os.getsid(0)
    proc.kill()
    proc.wait()


@pytest.mark.process
@pytest.mark.slow
def test_the_warm_process_runs_one_thread_and_refuses_to_fork_with_more(
    store: RunStore,
) -> None:
    assert warm.WarmLauncher(store.root, idle=60).ensure()
    assert len(os.listdir(f"/proc/{warm_pid(store)}/task")) == 1
    stop = threading.Event()
    extra = threading.Thread(target=stop.wait)
    extra.start()
    try:
        with pytest.raises(warm.WarmError, match="threads; it forks with one only"):
            warm.check_one_thread()
    finally:
        stop.set()
        extra.join()


@pytest.mark.process
@pytest.mark.slow
def test_the_warm_process_exits_when_idle(store: RunStore) -> None:
    launcher = warm.WarmLauncher(store.root, idle=0.5)
    assert launcher.ensure()
    assert launcher.process is not None
    assert launcher.process.wait(DEADLINE) == 0
    assert warm.connect(store.root) is None
    assert not (store.root / st.WARM_SOCKET).exists()


NO_CUDA = """
import torch

def refusing(name):
    def refuse(*args, **kwargs):
        raise RuntimeError(f"torch.cuda.{name} called")
    return refuse  # one function each: torch._dynamo's rules map functions to names

for name in ("init", "is_available", "device_count", "current_device", "set_device",
             "synchronize", "mem_get_info", "get_device_name", "get_device_properties"):
    setattr(torch.cuda, name, refusing(name))
from cnntui.runs import warm
warm.warm_up()
assert not torch.cuda.is_initialized()
print("warm without CUDA")
"""


@pytest.mark.process
@pytest.mark.slow
def test_the_warm_up_never_touches_cuda() -> None:
    out = subprocess.run(
        [sys.executable, "-c", NO_CUDA], capture_output=True, text=True, timeout=DEADLINE
    )
    assert out.returncode == 0 and "warm without CUDA" in out.stdout, out.stderr


def test_cold_workers_when_the_idle_time_is_zero(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(warm.IDLE_ENV, raising=False)
    assert isinstance(warm.launcher(tmp_path, sys.executable), warm.WarmLauncher)
    monkeypatch.setenv(warm.IDLE_ENV, "0")
    assert isinstance(warm.launcher(tmp_path, sys.executable), warm.ColdLauncher)


def test_a_bad_idle_time_is_one_line_and_the_default_holds(capsys) -> None:
    assert warm.idle_seconds({warm.IDLE_ENV: "soon"}) == warm.DEFAULT_IDLE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CNNTUI_WARM_IDLE='soon' must be a number" in err


@pytest.mark.process
@pytest.mark.slow
async def test_opening_the_tui_starts_the_stores_warm_process(
    tiny_toml: Path, store: RunStore, monkeypatch
) -> None:
    """So that the first `r` starts its run warm: torch and the engine already imported."""
    from cnntui.tui.app import make_app

    monkeypatch.setenv(warm.PREWARM_ENV, "1")
    app = make_app(tiny_toml, {}, store.root, tiny_toml.parent / "x", device_label="cpu")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: warm_pid(store) is not None, DEADLINE, "the warm process")
    monkeypatch.setenv(warm.PREWARM_ENV, "0")
    assert warm.prewarm(store.root) is False  # turned off: nothing started, nothing said


def test_no_prewarm_when_warm_workers_are_off(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(warm.IDLE_ENV, "0")
    monkeypatch.setenv(warm.PREWARM_ENV, "1")
    assert warm.prewarm(tmp_path / "runs") is False
    assert not (tmp_path / "runs").exists()
