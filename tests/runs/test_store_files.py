"""The run store's files as someone could leave them: a symbolic link (to a file outside the
store, dangling), a FIFO, a directory where a file should be, a read-only store. cnntui never
writes outside the store through them, never hangs on them, and refuses what it cannot use
with one line naming the file, exit status 2."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from cnntui import cli
from cnntui.core.config import apply_overrides, load
from cnntui.runs import daemon as scheduler
from cnntui.runs import lifecycle
from cnntui.runs import store as st
from cnntui.runs.store import RunStore
from tests.frontends.test_cli_resume import cancelled_run, one_line_error, snapshot
from tests.helpers import cnntui
from tests.waiting import DEADLINE

TINY = ["--set", "train_size=64", "--set", "test_size=32", "--set", "epochs=1"]
LONG_AGO = 946684800  # 2000-01-01: a victim's mtime, so that a touch would show


def victim(tmp: Path) -> Path:
    """A file outside the run store that nothing may change, not even its mtime."""
    path = tmp / "outside" / "victim.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"precious\n")
    os.utime(path, (LONG_AGO, LONG_AGO))
    return path


def kept(path: Path) -> bool:
    return path.read_bytes() == b"precious\n" and path.stat().st_mtime == LONG_AGO


def queue_alpha(cwd: Path) -> st.RunRecord:
    """alpha queued in the store, with no scheduler started to take it."""
    exp = apply_overrides([load(cwd / "experiments.toml").get("alpha")], {"epochs": 1})
    (record,) = lifecycle.submit(RunStore(cwd / "runs"), exp)
    return record


# --- item 1: links are never followed -------------------------------------------------------


@pytest.mark.process
def test_a_scheduler_lock_that_is_a_link_is_refused_and_its_target_kept(study: Path) -> None:
    runs = study / "runs"
    runs.mkdir()
    target = victim(study)
    (runs / st.SCHEDULER_LOCK).symlink_to(target)
    err = one_line_error(cnntui("--run", "alpha", "--detach", *TINY, cwd=study))
    assert f"{Path('runs') / st.SCHEDULER_LOCK} is a symbolic link" in err
    err = one_line_error(cnntui("--status", cwd=study))  # alpha waits: it would start one
    assert st.SCHEDULER_LOCK in err
    assert kept(target)
    (runs / st.SCHEDULER_LOCK).unlink()  # for the fixture, which looks for a scheduler


@pytest.mark.process
def test_a_scheduler_log_that_is_a_dangling_link_creates_nothing_outside(study: Path) -> None:
    runs = study / "runs"
    runs.mkdir()
    target = study / "outside" / "made-by-cnntui.log"
    (runs / st.SCHEDULER_LOG).symlink_to(target)
    err = one_line_error(cnntui("--run", "alpha", "--detach", *TINY, cwd=study))
    assert f"{st.SCHEDULER_LOG} is a symbolic link" in err
    assert not target.exists() and not target.parent.exists()


@pytest.mark.process
@pytest.mark.parametrize("dangling", [False, True], ids=["to a file", "dangling"])
def test_cancel_never_writes_through_a_run_lock_that_is_a_link(tiny_toml, dangling) -> None:
    cwd = tiny_toml.parent
    record = queue_alpha(cwd)
    target = cwd / "outside" / "made.txt" if dangling else victim(cwd)
    (record.path / st.LOCK_FILE).unlink()
    (record.path / st.LOCK_FILE).symlink_to(target)
    err = one_line_error(cnntui("--cancel", "alpha", cwd=cwd))
    assert f"{record.path.relative_to(cwd) / st.LOCK_FILE} is a symbolic link" in err
    assert not target.exists() if dangling else kept(target)
    assert RunStore.read(record.path).status == "queued"  # nothing else was changed


@pytest.mark.process
@pytest.mark.parametrize("kind", ["link", "dangling link", "FIFO", "directory"])
def test_resume_refuses_a_live_file_it_cannot_write_before_writing_anything(tiny_toml, kind):
    """With live.f64 a link a resume wrote batch losses into the file it led to; with a FIFO
    it waited in open() for ever, deaf to Ctrl-C."""
    cwd = tiny_toml.parent
    _, record = cancelled_run(tiny_toml)
    live = record.path / st.LIVE_FILE
    live.unlink(missing_ok=True)
    target = victim(cwd) if kind == "link" else cwd / "outside" / "made.f64"
    if kind == "FIFO":
        os.mkfifo(live)
    elif kind == "directory":
        live.mkdir()
    else:
        live.symlink_to(target)
    before = snapshot(cwd / "runs")
    err = one_line_error(cnntui("--run", "alpha", "--resume", cwd=cwd, timeout=DEADLINE))
    assert f"{live.relative_to(cwd)} is a" in err and "not a regular file" in err
    assert snapshot(cwd / "runs") == before
    assert kept(target) if kind == "link" else not target.exists()


def test_a_worker_log_that_is_a_link_fails_the_run_and_writes_nothing_outside(tiny_toml):
    cwd = tiny_toml.parent
    record = queue_alpha(cwd)
    target = victim(cwd)
    (record.path / st.WORKER_LOG).symlink_to(target)
    # A "python" that only complains on stderr: what it writes goes to worker.log.
    sched = scheduler.Scheduler(RunStore(cwd / "runs"), lambda: [], python=shutil.which("sh"))
    sched.launch(record, None)
    for proc, _gpu in sched.workers.values():
        proc.wait(timeout=DEADLINE)
    assert kept(target)
    again = RunStore.read(record.path)
    assert again.status == "failed"
    assert f"{st.WORKER_LOG} is a symbolic link" in again.summary.reason
    assert sched.queued() == []  # not started again and again


@pytest.mark.process
@pytest.mark.parametrize("how", ["--run alpha", "--run alpha --detach"])
def test_a_new_run_is_never_written_through_an_experiment_directory_link(study: Path, how):
    """One rule with --resume, which refused such a run already."""
    elsewhere = study / "elsewhere"
    elsewhere.mkdir()
    (study / "runs").mkdir()
    (study / "runs" / "alpha").symlink_to(elsewhere, target_is_directory=True)
    err = one_line_error(cnntui(*how.split(), *TINY, cwd=study))
    assert "runs/alpha is a symbolic link or leads outside runs" in err
    assert list(elsewhere.iterdir()) == []


def test_the_heartbeat_is_never_touched_through_a_link(tiny_toml) -> None:
    _, record = cancelled_run(tiny_toml)
    target = victim(tiny_toml.parent)
    (record.path / st.HEARTBEAT_FILE).symlink_to(target)
    st.touch_heartbeat(record.path)
    assert kept(target)
    assert st.read_heartbeat(record.path)[1] == os.getpid()  # a file of its own now


# --- item 3: a FIFO never hangs cnntui ------------------------------------------------------


@pytest.mark.process
@pytest.mark.parametrize("fifo", [st.HEARTBEAT_FILE, st.LOCK_FILE])
def test_a_fifo_in_a_running_run_hangs_no_command(study: Path, fifo: str) -> None:
    """alpha reads running (this process's pid; it holds the lock when that is a file), and
    nothing ever opens the FIFO's other end."""
    _, record = cancelled_run(study / "experiments.toml")
    summary = json.loads((record.path / "summary.json").read_text())
    summary.update(status="running", pid=os.getpid())
    (record.path / "summary.json").write_text(json.dumps(summary))
    (record.path / fifo).unlink(missing_ok=True)
    os.mkfifo(record.path / fifo)
    lock = st.try_lock(record.path) if fifo != st.LOCK_FILE else None
    try:
        for how in ("--status", "--list", "--export", "--cancel alpha", "--run beta --detach"):
            result = cnntui(*how.split(), *(TINY if "beta" in how else []), cwd=study)
            out = result.stdout + result.stderr
            assert result.returncode in (0, 2) and "Traceback" not in out, (how, out)
            if result.returncode == 2:
                assert result.stderr.strip().count("\n") == 0, (how, out)
    finally:
        if lock is not None:
            lock.release()
        summary.update(status="cancelled")  # no cleanup ever takes this pid for a trainer's
        (record.path / "summary.json").write_text(json.dumps(summary))
    assert (record.path / fifo).is_fifo()


# --- item 9: a read-only store --------------------------------------------------------------


def test_cancel_on_a_read_only_store_says_so_in_one_line(tiny_toml, monkeypatch, capsys):
    cwd = tiny_toml.parent
    record = queue_alpha(cwd)
    runs, real_open = str(cwd / "runs"), os.open
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def read_only(path, flags, mode=0o777, *, dir_fd=None):
        if os.path.abspath(path).startswith(runs) and flags & writes:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(os, "open", read_only)
    code = cli.main(["--cancel", "alpha"])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("cnntui: ") and err.count("\n") == 1, err
    assert f"cannot lock run {record.path.relative_to(cwd)}: Read-only file system" in err
    assert RunStore.read(record.path).status == "queued"
