"""The Textual app and `make_app`, the one factory the CLI, the tests and the snapshots use."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from ..runs import gpus, lifecycle
from ..runs.store import RunStore
from .screens.main import MainScreen, Trainer
from .session import Session

STOP_SECONDS = 1.5  # how long quitting waits for cancelled runs to save their histories
HANGUP_SAVE_SECONDS = 10.0  # after a hang-up: the most a thread run is waited for to save
HANGUP_GRACE_SECONDS = 2.0  # then the orderly shutdown's time before the process just ends
PROCESS_STOP_SECONDS = 5.0  # the same for runs in worker processes (each saves, then exits)
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGHUP", "SIGTERM") if hasattr(signal, name)
)


class CnnTui(App[None]):
    """cnntui's terminal UI: one main screen, with forms and questions on top of it."""

    CSS_PATH = "app.tcss"
    TITLE = "cnntui"
    NOTIFICATION_TIMEOUT = 4  # seconds; warnings and errors say how long they stay
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True)
    ]

    def __init__(self, main: MainScreen) -> None:
        super().__init__()
        self.main = main

    def on_mount(self) -> None:
        """Show the main screen; let SIGHUP and SIGTERM stop the runs instead of killing them."""
        self.push_screen(self.main)
        # Textual leaves SIGHUP (a dropped SSH connection, a closed terminal window) and
        # SIGTERM at their default, which kills the process mid-epoch: stop the runs instead.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop = asyncio.get_running_loop()
            for sig in STOP_SIGNALS:
                loop.add_signal_handler(sig, self.hang_up)

    def hang_up(self) -> None:
        """Told to stop by a signal (the terminal is gone): quit without asking. Runs in
        worker processes go on in the background; runs in this process's threads are
        cancelled, save as they stop, and `cnntui` waits for them before the process ends."""
        session = self.main.session
        session.cancel_all()

        def watchdog() -> None:
            # With the terminal gone, Textual's shutdown can block for good writing its last
            # frames (seen with a pseudo-terminal closed under a burst of notifications):
            # once the threads' runs have saved, end the process whatever it is doing.
            session.wait_stopped(HANGUP_SAVE_SECONDS)
            time.sleep(HANGUP_GRACE_SECONDS)
            os._exit(130)

        threading.Thread(target=watchdog, name="cnntui-hangup", daemon=True).start()
        self.exit(return_code=130)

    async def action_quit(self) -> None:
        """Quit; with runs of this session active, ask first whether to keep them training
        in the background or cancel them (and wait for them to save)."""
        if not self.main.busy():
            self.exit()
            return

        def answered(choice: str | None) -> None:
            if choice == "cancel":
                self.run_worker(self.stop_and_exit(), name="quit", exit_on_error=False)
            elif choice == "keep":
                self.exit()  # worker processes are detached already; threads are cancelled

        self.main.confirm_quit(answered)

    async def stop_and_exit(self) -> None:
        """Cancel this session's runs, wait (bounded) for them to save, then quit."""
        workers = self.main.run_workers()
        session = self.main.session
        paths = session.cancel_processes()
        session.cancel_all()
        self.notify("stopping runs and saving their histories …", timeout=PROCESS_STOP_SECONDS)
        if workers:
            # Past the timeout the process still waits for them at exit; each stops in a batch.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.workers.wait_for_complete(workers), STOP_SECONDS)
        if paths:
            await asyncio.to_thread(
                lifecycle.wait_ended, session.store, paths, PROCESS_STOP_SECONDS
            )
        self.exit()

    def exit(self, *args: Any, **kwargs: Any) -> None:
        """End the app, first stopping every run trained in this process's threads."""
        # However the app ends, no thread may keep training: the process would wait for it.
        # Runs in worker processes are not this process's to stop unless asked.
        self.main.stopping.set()
        self.main.session.cancel_all()
        super().exit(*args, **kwargs)


def make_app(
    config: Path | str,
    overrides: dict[str, Any] | None = None,
    runs_dir: Path | str = "runs",
    exports_dir: Path | str = "exports",
    jobs: int = 1,
    *,
    trainer: Trainer | None = None,
    device_label: str | None = None,
    executor: str | None = None,
    inventory: Callable[[], list[gpus.Gpu]] | None = None,
) -> CnnTui:
    """The app on `config`. `trainer` replaces `engine.train` (tests feed fixed events; it
    runs in this process, so runs default to executor "thread" then); `device_label` skips
    probing the device and the GPUs (so snapshots do not depend on the machine). `executor`:
    how runs whose experiment says "auto" train ("process" unless a trainer is given).
    `inventory` replaces cnntui.runs.gpus.inventory (tests have no GPU)."""
    if executor is None:
        executor = "thread" if trainer is not None else "process"
    if inventory is None and device_label is None:
        inventory = gpus.inventory
    session = Session(Path(config), overrides or {}, RunStore(runs_dir), jobs, executor)
    return CnnTui(MainScreen(session, Path(exports_dir), trainer, device_label, inventory))
