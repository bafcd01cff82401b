"""The TUI follows runs through the run store: runs it queued for worker processes, and runs
someone else started (another TUI, --detach, a plain --run). Real worker processes on the
synthetic dataset; every wait polls a condition with a deadline."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnntui.runs import lifecycle
from cnntui.runs.gpus import GIB, Gpu
from cnntui.runs.store import RunStore
from cnntui.tui.app import make_app
from cnntui.tui.screens.confirm import ChoiceScreen
from tests.helpers import hold_lock
from tests.runs.test_lifecycle import experiments
from tests.tui.test_tui import SIZE, chart_text, status_cell
from tests.waiting import poll, until

LONG = {"train_size": 6000, "batch_size": 4, "epochs": 3}  # minutes: it is cancelled first


def live(store: RunStore, name: str) -> str:
    record = store.latest(name)
    return record.status if record else "none"


@pytest.mark.process
async def test_a_run_another_process_queued_shows_live_and_c_cancels_it(study, tmp_path):
    store = RunStore(study / "runs")
    app = make_app(study / "experiments.toml", {}, store.root, tmp_path / "x", device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert status_cell(app, "alpha") == "idle"
        empty = chart_text(app, "chart-batch")
        # Another process's doing, as --detach does it: queue a run, start the scheduler.
        lifecycle.submit(store, experiments(study, **LONG)[:1])
        lifecycle.ensure_scheduler(store)
        session = app.main.session
        await until(pilot, lambda: session.latest("alpha") is not None)
        state = session.latest("alpha")
        assert state.remote
        # Progress and live batch losses, read from the worker's files, on screen.
        await until(pilot, lambda: status_cell(app, "alpha").startswith("running"))
        await until(pilot, lambda: state.curve(200).batch_y.size > 0)
        # The batch-loss chart draws them (the highlighted experiment's curves).
        # (Waited for, not asserted once: under load the chart redraws its axes first.)
        await until(
            pilot,
            lambda: (
                chart_text(app, "chart-batch") != empty
                and any("\u2800" <= ch <= "\u28ff" for ch in chart_text(app, "chart-batch"))
            ),
        )
        assert status_cell(app, "alpha").startswith("running")
        await pilot.press("c")
        await until(pilot, lambda: live(store, "alpha") == "cancelled")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("cancelled"))
        record = store.latest("alpha")
        assert record.summary.batches_done > 0
        assert record.summary.reason == "cancelled by the user"


@pytest.mark.process
async def test_quit_asks_keep_or_cancel_and_keep_leaves_the_run_training(study, tmp_path):
    store = RunStore(study / "runs")
    app = make_app(study / "experiments.toml", LONG, store.root, tmp_path / "x", device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")  # executor "auto": a worker process, queued in the store
        state = app.main.session.latest("alpha")
        assert state.follow is not None
        await until(pilot, lambda: state.done > 0)
        await pilot.press("q")
        assert isinstance(app.screen, ChoiceScreen)
        answers = str(app.screen.query_one("#answers").render())
        assert "keep" in answers and "cancel" in answers
        await pilot.press("escape")  # changed my mind
        assert app.screen is app.main and app.is_running
        await pilot.press("q", "k")
        await until(pilot, lambda: not app.is_running)
    record = store.latest("alpha")
    try:
        assert record.status == "running"  # alive: its worker process goes on
        done = record.summary.batches_done or 0
        size = record.live.stat().st_size

        def grew() -> bool:
            return record.live.stat().st_size > size

        poll(grew, what="the kept run's live losses to grow after the TUI quit")
    finally:
        lifecycle.cancel(store, "alpha")
        lifecycle.wait_ended(store, [record.path], 60)
    assert store.latest("alpha").summary.batches_done >= done


@pytest.mark.process
async def test_quit_and_cancel_stops_the_worker_and_saves(study, tmp_path):
    store = RunStore(study / "runs")
    app = make_app(study / "experiments.toml", LONG, store.root, tmp_path / "x", device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        state = app.main.session.latest("alpha")
        await until(pilot, lambda: state.done > 0)
        await pilot.press("q", "c")
        await until(pilot, lambda: not app.is_running)
    record = store.latest("alpha")
    assert record.status == "cancelled" and record.summary.batches_done > 0


def fake_remote_run(runs: Path, gpu: int, pid: int) -> Path:
    """A run another process trains on GPU `gpu` (its summary, as a worker writes it)."""
    path = runs / "beta" / "20260101-000000-abcd"
    path.mkdir(parents=True, exist_ok=True)
    summary = {
        "name": "beta",
        "status": "running",
        "pid": pid,
        "gpu": gpu,
        "epochs": 2,
        "epochs_done": 0,
        "batches_per_epoch": 8,
        "device": "cuda:0 (NVIDIA H200)",
        "started": "2026-01-01T00:00:00",
    }
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "config.toml").write_text('dataset = "synthetic"\n')
    return path


@pytest.mark.process
async def test_header_shows_every_gpu_and_our_runs_on_it(tiny_toml, runs_dir, tmp_path):
    def inventory() -> list[Gpu]:
        return [
            Gpu(0, "NVIDIA H200", 140 * GIB, 12 * GIB, 45),
            Gpu(1, "NVIDIA H200", 140 * GIB, 70 * GIB, 99),
        ]

    path = fake_remote_run(runs_dir, 1, 0)
    other = hold_lock(path)  # the process that trains it holds its lock
    try:
        fake_remote_run(runs_dir, 1, other.pid)
        app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", inventory=inventory)
        async with app.run_test(size=(160, 24)) as pilot:
            await until(pilot, lambda: "0 H200 12.0/140G 45%" in app.sub_title)
            await until(pilot, lambda: "1 H200 70.0/140G 99% 1 ours" in app.sub_title)
            assert "0 H200 12.0/140G 45% ·" in app.sub_title  # none of ours on GPU 0
    finally:
        other.kill()
        other.wait()


@pytest.mark.slow
async def test_no_gpu_keeps_the_header_as_it_was(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", inventory=list)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: not app.sub_title.startswith("probing"))
        assert " · 0 running · jobs 1" in app.sub_title
        assert "GiB" not in app.sub_title or "cuda" in app.sub_title


@pytest.mark.process
def test_runs_started_in_a_tui_survive_its_terminal_closing(study):
    """A real cnntui in a pseudo-terminal starts two runs; the terminal goes away (SIGHUP);
    the runs finish in their worker processes and --status shows them with full histories."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    from tests.helpers import cnntui

    store = RunStore(study / "runs")
    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))

    def own_terminal() -> None:  # as a login shell's child: the pty is its controlling tty
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {**os.environ, "TERM": "xterm-256color"}
    args = ["--set", "train_size=2048", "--set", "epochs=2"]
    tui = subprocess.Popen(
        [sys.executable, "-m", "cnntui", *args],
        cwd=study,
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
        env=env,
        preexec_fn=own_terminal,
    )
    os.close(child_fd)

    hung_up = threading.Event()

    def drain() -> None:  # never blocked in read: a read in progress would keep the pty open
        import select

        with contextlib.suppress(OSError):
            while not hung_up.is_set():
                if select.select([main_fd], [], [], 0.1)[0] and not os.read(main_fd, 65536):
                    return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        # The app is up once it reads keys: `a` until both runs are in the store.
        def both_queued() -> bool:
            if len(store.runs()) < 2:
                os.write(main_fd, b"a")
            return len(store.runs()) == 2

        poll(both_queued, what="the TUI to queue both runs")
        hung_up.set()
        reader.join()
        os.close(main_fd)  # the terminal is gone: the TUI gets SIGHUP
        main_fd = -1
        poll(lambda: tui.poll() is not None, what="the TUI to exit on the hang-up")
        assert len(store.runs()) == 2  # the `a`s typed after the first one queued nothing
        poll(
            lambda: all(r.status == "finished" for r in store.runs()),
            240,
            "both runs to finish with no cnntui in the foreground",
        )
    finally:
        if main_fd >= 0:
            os.close(main_fd)
        if tui.poll() is None:
            tui.kill()
        tui.wait()
    status = cnntui("--status", cwd=study)
    assert status.returncode == 0, status.stderr
    for record in store.runs():
        assert record.run_id in status.stdout
        history = record.history()
        assert history.epochs_done == 2
        assert len(history.batch_losses) == 2 * record.summary.batches_per_epoch
    rows = [line for line in status.stdout.splitlines() if "finished" in line]
    assert len(rows) == 2
