"""Resume, locks, hangups and the results table, as a user meets them: a real `cnntui`
subprocess, its exit code and one-line messages, and the run store it leaves."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cnntui.core import engine
from cnntui.core.config import apply_overrides, load
from cnntui.core.events import BatchLosses
from cnntui.runs import store as store_mod
from cnntui.runs.store import RunStore
from tests.helpers import LONG, batch4_run, cnntui, start
from tests.waiting import line, poll, rest


def cancelled_run(tiny_toml: Path):
    """alpha stopped 3 batches into its second of 3 epochs, as Ctrl-C would leave it."""
    exp = apply_overrides([load(tiny_toml).get("alpha")], {"epochs": 3})[0]
    store = RunStore(tiny_toml.parent / "runs")
    cancel = threading.Event()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "FLUSH_SECONDS", 0.0)
        for event in engine.train(exp, cancel, store.create(exp)):
            if isinstance(event, BatchLosses) and event.first_index >= 10:
                cancel.set()
    record = store.latest("alpha")
    assert record.status == "cancelled" and record.summary.batches_done > 8
    return store, record


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    err = result.stderr.strip()
    assert "\n" not in err and err.startswith("cnntui: "), err
    return err


@pytest.mark.process
def test_resume_that_would_change_the_model_is_refused_before_anything_is_written(tiny_toml):
    cwd = tiny_toml.parent
    _, record = cancelled_run(tiny_toml)
    before = snapshot(cwd / "runs")
    result = cnntui("--run", "alpha", "--resume", "--set", "model=resnet", cwd=cwd)
    err = one_line_error(result)
    assert f"cannot resume alpha run {record.run_id}: model cannot change on resume" in err
    assert snapshot(cwd / "runs") == before


@pytest.mark.process
def test_a_corrupt_checkpoint_fails_the_resume_and_keeps_the_run_resumable(tiny_toml):
    cwd = tiny_toml.parent
    store, record = cancelled_run(tiny_toml)
    history = record.history()
    good = record.checkpoint.read_bytes()
    record.checkpoint.write_bytes(good[: len(good) // 2])  # truncated
    result = cnntui("--run", "alpha", "--resume", cwd=cwd)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "checkpoint.pt: unreadable checkpoint" in result.stdout
    after = store.latest("alpha", unfinished=True)
    assert after.path == record.path and after.status == "cancelled"
    assert after.history() == history
    assert "resume failed" in after.summary.reason

    record.checkpoint.write_bytes(good)  # with the checkpoint back, it resumes and finishes
    result = cnntui("--run", "alpha", "--resume", cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    finished = store.latest("alpha")
    assert finished.path == record.path and finished.status == "finished"
    assert finished.history().batch_losses[:8] == history.batch_losses[:8]
    assert len(finished.history().batch_losses) == 24


@pytest.mark.process
def test_resume_without_a_checkpoint_refuses_instead_of_starting_over(tiny_toml):
    cwd = tiny_toml.parent
    _, record = cancelled_run(tiny_toml)
    record.checkpoint.unlink()
    before = snapshot(cwd / "runs")
    err = one_line_error(cnntui("--run", "alpha", "--resume", cwd=cwd))
    assert "has no checkpoint.pt to continue from; start a new run instead" in err
    assert snapshot(cwd / "runs") == before


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "config.toml").unlink(), "config.toml: missing"),
        (lambda p: (p / "config.toml").write_text("epochs = ["), "config.toml: not valid TOML"),
        (lambda p: (p / "config.toml").write_bytes(b"\xff\xfe"), "config.toml: unreadable"),
        (lambda p: (p / "history.npz").write_bytes(b"PK\x03\x04"), "history.npz: unreadable"),
        (lambda p: (p / "summary.json").write_text("{"), "summary.json is unreadable"),
    ],
)
@pytest.mark.process
def test_resume_with_a_damaged_run_is_one_line_and_writes_nothing(tiny_toml, damage, message):
    cwd = tiny_toml.parent
    _, record = cancelled_run(tiny_toml)
    damage(record.path)
    before = snapshot(cwd / "runs")
    err = one_line_error(cnntui("--run", "alpha", "--resume", cwd=cwd))
    assert f"runs/alpha/{record.run_id}/{message}" in err
    assert snapshot(cwd / "runs") == before


@pytest.mark.process
def test_resume_with_a_summary_of_the_wrong_types_still_resumes(tiny_toml):
    cwd = tiny_toml.parent
    store, record = cancelled_run(tiny_toml)
    summary = json.loads((record.path / "summary.json").read_text())
    summary.update(started=5, epochs_done="one", title=["x"])
    (record.path / "summary.json").write_text(json.dumps(summary))
    result = cnntui("--run", "alpha", "--resume", cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming at epoch 2" in result.stdout
    assert store.latest("alpha").summary.epochs_done == 3


@pytest.mark.process
def test_resume_refuses_a_run_directory_that_is_a_symlink_out_of_the_store(tiny_toml):
    cwd = tiny_toml.parent
    _, record = cancelled_run(tiny_toml)
    outside = cwd / "elsewhere" / record.run_id
    outside.parent.mkdir()
    record.path.rename(outside)
    record.path.symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    err = one_line_error(cnntui("--run", "alpha", "--resume", cwd=cwd))
    assert "is a symbolic link or leads outside runs" in err
    assert snapshot(outside) == before


@pytest.mark.process
def test_a_run_being_trained_is_locked_and_each_table_shows_its_own_run(tiny_toml):
    """Two `cnntui --run alpha` at once: the second cannot resume the first's run, and each
    process's results table shows the run it trained, not the newest in the store."""
    cwd = tiny_toml.parent
    first = start("--run", "alpha", *LONG, cwd=cwd)
    try:
        line(first, "epoch 1/200")
        err = one_line_error(cnntui("--run", "alpha", "--resume", cwd=cwd))
        assert f"is still training in pid {first.pid}" in err
        second = cnntui("--run", "alpha", *batch4_run(1), cwd=cwd)
        assert second.returncode == 0, second.stdout + second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        out = rest(first)
    assert first.returncode == 130, out
    table = out[out.index("name ") :].splitlines()
    assert len(table) == 3 and table[2].split()[0] == "alpha"
    assert table[2].endswith("cancelled"), table  # its own run, not the newer finished one
    runs = RunStore(cwd / "runs").runs("alpha")
    assert sorted(r.status for r in runs) == ["cancelled", "finished"]


@pytest.mark.process
def test_run_store_files_follow_the_umask(tiny_toml):
    cwd = tiny_toml.parent
    result = subprocess.run(
        # val_size: a best epoch, so best.pt too (without a split no epoch is chosen)
        [
            sys.executable,
            "-m",
            "cnntui",
            "--run",
            "alpha",
            "--set",
            "epochs=1",
            "--set",
            "val_size=32",
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        umask=0o027,
    )
    assert result.returncode == 0, result.stderr
    (run,) = RunStore(cwd / "runs").runs("alpha")
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.path.iterdir()}
    assert modes == dict.fromkeys(
        [
            "config.toml",
            "summary.json",
            "history.npz",
            "checkpoint.pt",
            "weights.pt",
            "best.pt",
            "lock",
            "live.f64",
        ],
        0o640,
    )


# -- hangups ----------------------------------------------------------------------------------


def read_ready(fd: int) -> bytes:
    """What the pty has to read now, without waiting; fail if the child's side has closed."""
    chunks = []
    while select.select([fd], [], [], 0)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            raise AssertionError(f"the terminal closed: {b''.join(chunks)[-2000:]!r}")
        chunks.append(chunk)
    return b"".join(chunks)


def read_until(fd: int, needle: bytes) -> bytes:
    """Read the pty until `needle` shows (or fail), draining it so the child never blocks."""
    seen = bytearray()

    def shown() -> bool:
        seen.extend(read_ready(fd))
        return needle in seen

    poll(shown, what=f"{needle!r} on the terminal")
    return bytes(seen)


def wait_exit(pid: int) -> int:
    """The exit code of `pid`, which must end by the deadline (killed if not)."""
    try:
        _, status = poll(
            lambda: (ended := os.waitpid(pid, os.WNOHANG))[0] and ended,
            what="the process to end after its terminal closed",
        )
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return os.waitstatus_to_exitcode(status)


def spawn_on_pty(cwd: Path, args: list[str]) -> tuple[int, int]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: cnntui on the pseudo-terminal, as over SSH
        os.chdir(cwd)
        os.environ["TERM"] = "xterm-256color"
        os.execv(sys.executable, [sys.executable, "-m", "cnntui", *args])
    return pid, fd


@pytest.mark.process
def test_a_closed_terminal_leaves_a_headless_run_training_until_cancelled(tiny_toml):
    """The SSH connection drops: SIGHUP, and every later write to the terminal fails. The run
    trains on (as with --detach) until it is cancelled from another shell, and then saves."""
    cwd = tiny_toml.parent
    store = RunStore(cwd / "runs")
    pid, fd = spawn_on_pty(cwd, ["--run", "alpha", *LONG])
    try:
        read_until(fd, b"ep 2/200")  # the live bar: epoch 1 saved, epoch 2 training
    finally:
        os.close(fd)  # hang up

    def trained_on() -> bool:  # epochs 2 and 3 end
        assert os.waitpid(pid, os.WNOHANG)[0] == 0, "the hang-up ended the process"
        return (store.latest("alpha").summary.epochs_done or 0) >= 3

    try:
        poll(trained_on, what="epochs 2 and 3 to end after the hang-up")
    finally:
        cancel = cnntui("--cancel", "alpha", cwd=cwd)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    wait_exit(pid)
    record = store.latest("alpha")
    assert record.status == "cancelled"
    history = record.history()
    assert history.epochs_done >= 3 and len(history.batch_losses) > 1500


@pytest.mark.slow
def test_a_closed_terminal_stops_the_tuis_runs_and_saves_them(tiny_toml):
    # Runs in the TUI's threads end with it (worker-process runs go on: test_tui_follow).
    cwd = tiny_toml.parent
    pid, fd = spawn_on_pty(cwd, [*LONG, "--set", "executor=thread"])
    store = RunStore(cwd / "runs")
    try:
        read_until(fd, b"alpha")
        os.write(fd, b"r")  # run the highlighted experiment (alpha)
        # keep reading the screen updates, or the app blocks writing
        poll(
            lambda: (
                read_ready(fd) is not None
                and any(r.summary.epochs_done for r in store.runs("alpha"))
            ),
            what="the run's first epoch",
        )
    finally:
        os.close(fd)  # hang up
    wait_exit(pid)
    record = store.latest("alpha")
    assert record.status == "cancelled", record.summary
    assert record.history().epochs_done >= 1


@pytest.mark.process
def test_the_table_shows_a_run_that_got_no_directory_not_an_older_run(tiny_toml, monkeypatch):
    import io

    from cnntui import cli

    cwd = tiny_toml.parent
    monkeypatch.chdir(cwd)
    assert cnntui("--run", "alpha", "--set", "epochs=1", cwd=cwd).returncode == 0  # an older run

    def full_disk(self, experiment):
        raise store_mod.StoreError(
            f"cannot create a run directory in runs/{experiment.name}: No space left on device"
        )

    monkeypatch.setattr(RunStore, "create", full_disk)
    out = io.StringIO()
    code = cli.run_headless(cli.build_parser().parse_args(["--run", "alpha"]), out)
    assert code == 1
    text = out.getvalue()
    assert "[alpha] FAILED: cannot create a run directory in runs/alpha: No space" in text
    row = text[text.index("name ") :].splitlines()[2]
    assert row.split()[0] == "alpha" and row.endswith("failed"), row  # not the finished one


@pytest.mark.process
def test_resume_reads_the_data_its_run_was_trained_on_not_the_files_current_setting(tiny_toml):
    """The file now says CIFAR-10 (absent here); the run trained on synthetic data and
    resumes on it, instead of being held back as 'not started: dataset missing'."""
    cwd = tiny_toml.parent
    cancelled_run(tiny_toml)
    text = tiny_toml.read_text().replace('dataset = "synthetic"', 'dataset = "cifar10"')
    tiny_toml.write_text(text.replace('device = "cpu"', 'device = "cpu"\ndata_dir = "none"'))
    (cwd / "none").mkdir()
    (cwd / "none" / "cifar-10-python.tar.gz").write_bytes(b"not CIFAR-10")  # fails at once
    result = cnntui("--run", "alpha", "--resume", cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "resuming at epoch 2" in result.stdout and "not started" not in result.stderr
    assert RunStore(cwd / "runs").latest("alpha").status == "finished"
