"""Run control: the keys that queue, resume and cancel runs, the training thread, quitting.

A run trains in a worker process (executor "process": queued in the run store, started by its
scheduler, it outlives the TUI) or in a Textual thread worker here (executor "thread"), whose
loop is `_train`. What the screen hears back from runs is in run_events.py.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from textual.worker import Worker, WorkerState

from ....core.config import Experiment
from ....core.events import BatchLosses, Event
from ....core.text import one_line
from ....runs.executors import Job, run_one
from ....runs.records import RunStatus
from ....runs.store import RunDir, RunRecord, StoreError
from ...messages import RunUpdated
from ...state import RunState
from ..confirm import ChoiceScreen, ConfirmScreen
from .base import ScreenPart

Trainer = Callable[..., Iterator[Event]]  # engine.train's signature
TRAIN_NICE = 5  # training threads run this much "nicer" than the UI thread (Linux)
_BASE_NICE = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else 0
RESUME_ERROR_SECONDS = 15  # a failed resume's reason stays this long
STOPPED = (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED)


def yield_cpu_to_ui() -> None:
    """Let the UI thread win the CPU from this (training) thread when both want it.

    On a machine whose cores are all training, keys otherwise wait for a time slice: with
    2 runs on 2 cores a key took ~160 ms to show, most of it waiting. Linux gives each
    thread its own nice value (and torch's intra-op threads inherit it when created here);
    elsewhere this does nothing. Pool threads are reused, so the value is set, not added.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        target = min(19, _BASE_NICE + TRAIN_NICE)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), target)


def _engine_train(*args: Any) -> Iterator[Event]:
    from ....core.devices import reserve_cores  # torch loads on the first run, not at start-up
    from ....core.engine import train

    reserve_cores(1)  # the screen keeps a core: keys stay quick while runs train
    return train(*args)


def run_again_question(todo: int, done: list[str], rest: int) -> tuple[str, str]:
    """What `a` asks when `done` of the `todo` experiments already finished as they are now,
    and the answers it takes; `rest` are the others."""
    names = ", ".join(done[:4]) + (f" and {len(done) - 4} more" if len(done) > 4 else "")
    if not rest:
        question = (
            f"All {len(done)} already finished with these settings ({names}).\nRun them again?"
        )
        return question, "[b]y[/b] run them again   [b]n[/b] run nothing"
    question = (
        f"Run {todo}: {len(done)} of them already finished with these settings "
        f"({names}).\nRun those again too?"
    )
    answers = (
        f"[b]y[/b] run all {todo}   [b]n[/b] only the {rest} unfinished   [b]escape[/b] run nothing"
    )
    return question, answers


class RunsPart(ScreenPart):
    """Starts, queues, resumes and cancels this session's runs; asks about them on quitting."""

    def _init_runs(self, trainer: Trainer | None) -> None:
        self.trainer = trainer or _engine_train
        self._workers: dict[Worker[None], int] = {}  # thread workers -> the run keys they train

    # -- keys -----------------------------------------------------------------------------

    def action_run(self) -> None:
        """Queue a run of the highlighted experiment (one per seed)."""
        name = self._highlighted()
        search = (self.session.search(name) or self.session.search_of(name)) if name else None
        if search is not None:  # a search's row or one of its trials': the search
            self._queue_search(search.name)
            return
        exp = self.session.experiment(name) if name else None
        if exp is None:
            return
        queued = self._enqueue(exp)
        if isinstance(queued, str):
            self.notify(queued, severity="warning")
            return
        self.start_queued()
        self.table.update_statuses(self.session)

    def action_run_all(self) -> None:
        """Queue every experiment not queued or running; ask first about those whose latest
        run already finished with the settings they have now."""
        self.acted()
        if not self.session.experiments and not self.session.searches:
            self.notify("no experiments to run", severity="warning")
            return
        searches = [s.name for s in self.session.searches if self.session.submit_search(s.name)[0]]
        if searches:
            self.notify(f"queued search {', '.join(searches)}; the store's scheduler runs it")
        todo = [e for e in self.session.experiments if not self.session.busy(e.name)]
        if not todo and (searches or not self.session.experiments):
            return
        if not todo:
            self.notify("every experiment is already queued or running", severity="warning")
            return
        done = [e.name for e in todo if self.session.finished_as_now(e.name)]
        if done:
            self._ask_run_again(todo, done)
        else:
            self._queue(todo)

    def _ask_run_again(self, todo: list[Experiment], done: list[str]) -> None:
        """Ask whether the `done` experiments of `todo` run again, then queue what is chosen."""
        rest = [e for e in todo if e.name not in done]
        question, answers = run_again_question(len(todo), done, len(rest))

        def answered(yes: bool | None) -> None:
            chosen = todo if yes else rest if yes is not None else []
            if chosen:
                self._queue(chosen)
            else:
                self.notify("nothing queued")

        self.app.push_screen(ConfirmScreen(question, answers, escape=None), answered)

    def action_cancel(self) -> None:
        """Cancel the highlighted experiment's queued and active runs."""
        name = self._highlighted()
        if name:
            self.notify(self.session.cancel(name))
            self.table.update_statuses(self.session)

    def action_resume(self) -> None:
        """Resume the highlighted experiment's latest unfinished run from its checkpoint."""
        name = self._highlighted()
        if name is None:
            return
        record = self.session.resumable(name)
        if record is None:
            self.notify(f"{name} has no unfinished run to resume", severity="warning")
            return
        exp = self.session.experiment(name)
        if exp is not None and self.session.executor_of(exp) == "process":
            self._resume_in_process(name, record)
        else:
            self._resume_in_thread(name, record)

    def action_jobs(self, delta: int) -> None:
        """Allow `delta` more (or fewer) runs at a time, at least one."""
        self.acted()
        self.session.jobs = max(1, self.session.jobs + delta)
        self.notify(f"{self.session.jobs} run(s) at a time")
        self.start_queued()

    # -- queueing and starting ------------------------------------------------------------

    def _enqueue(self, exp: Experiment) -> RunState | str:
        """Queue a run: in the store for a worker process, or here for a thread."""
        if self.session.executor_of(exp) == "process":
            return self.session.submit(exp)
        return self.session.enqueue(exp)

    def _queue_search(self, name: str) -> None:
        """Queue search `name` for the store's scheduler (as `cnntui --run NAME --detach`);
        its trials are followed through the store like every other run."""
        queued, said = self.session.submit_search(name)
        self.notify(said, severity="information" if queued else "warning")
        self.table.update_statuses(self.session)

    def _queue(self, experiments: list[Experiment]) -> None:
        """Queue a run of each experiment and say how many."""
        added = [e for e in experiments if isinstance(self._enqueue(e), RunState)]
        self.start_queued()
        self.table.update_statuses(self.session)
        runs = sum(len(e.runs()) for e in added)  # one per seed
        self.notify(f"queued {runs} run(s); {self.session.jobs} at a time")

    def _resume_in_process(self, name: str, record: RunRecord) -> None:
        """Queue the resumption in the store, for a worker process."""
        queued = self.session.submit_resume(record)
        if isinstance(queued, str):
            self.notify(queued, severity="error", timeout=RESUME_ERROR_SECONDS)
            return
        self._say_resuming(name, record)
        self.table.update_statuses(self.session)

    def _resume_in_thread(self, name: str, record: RunRecord) -> None:
        """Reopen the run from its checkpoint and queue it for a thread here."""
        try:
            run, checkpoint = self.session.store.resume(record, self.session.overrides)
        except StoreError as e:
            self.notify(str(e), severity="error", timeout=RESUME_ERROR_SECONDS)
            return
        queued = self.session.enqueue(run.experiment, run, checkpoint)
        if isinstance(queued, str):
            run.release()
            self.notify(queued, severity="warning")
            return
        self._say_resuming(name, record)
        self.start_queued()

    def _say_resuming(self, name: str, record: RunRecord) -> None:
        done = record.summary.epochs_done or 0
        self.notify(f"resuming {name} run {record.run_id} after epoch {done}")

    def start_queued(self) -> None:
        """Start thread workers for the queued runs that the jobs setting lets start."""
        for state in self.session.to_start():
            worker = self.run_worker(
                partial(self._train, state),
                thread=True,
                exit_on_error=False,
                group="runs",
                name=f"run {state.name}",
            )
            self._workers[worker] = state.key
        self.update_header()

    def _train(self, state: RunState) -> None:
        """The worker thread: one run, its events into the RunState, a note to the screen.
        Its live files are written as a worker process writes them (cnntui.runs.live), so other
        processes follow and cancel it too."""
        yield_cpu_to_ui()

        def emit(event: Event) -> None:
            state.feed(event)
            if not isinstance(event, BatchLosses):  # the redraw timer picks those up
                self.post_message(RunUpdated(state.key))

        def opened(run: RunDir) -> None:
            state.run_dir = str(run.path)

        job = Job(state.experiment, state.resume_run, state.checkpoint)
        with self.session.training():
            run_one(job, self.session.store, state.cancel, emit, self.trainer, opened)

    def run_worker_changed(self, worker: Worker[None], change: WorkerState) -> None:
        """A worker changed state: if it trained a run and stopped, the run ended (a crash in
        the worker fails the run) and the next queued runs start."""
        key = self._workers.get(worker)
        if key is None or change not in STOPPED:
            return
        del self._workers[worker]
        state = self.session.runs[key]
        if change == WorkerState.ERROR and worker.error is not None:
            state.fail(one_line(worker.error))
        elif not state.ended:
            state.fail("the run stopped without a result")
        self.run_ended(state)
        self.start_queued()

    # -- quitting -------------------------------------------------------------------------

    def busy(self) -> int:
        """This session's runs queued or active (others' runs are theirs to stop)."""
        return len(self.session.own())

    def run_workers(self) -> list[Worker[None]]:
        """The thread workers training runs now (quitting waits for them to save)."""
        return list(self._workers)

    def confirm_quit(self, then: Callable[[str | None], Any]) -> None:
        """Ask what becomes of this session's runs: "keep" (worker processes go on in the
        background; threads of this process cannot), "cancel", or None (stay)."""
        own = self.session.own()
        threads = len([s for s in own if s.follow is None])
        active = len([s for s in own if s.status != RunStatus.QUEUED])
        queued = len(own) - active
        what = f"{active} run(s) active" + (f" and {queued} queued" if queued else "")
        if threads == len(own):
            self._ask_cancel_threads(what, then)
        else:
            self._ask_keep_or_cancel(what, threads, then)

    def _ask_cancel_threads(self, what: str, then: Callable[[str | None], Any]) -> None:
        """Every run trains in this process: cancel them and quit, or stay."""
        question = (
            f"{what}, training in this process (executor 'thread'): they cannot outlive "
            "it.\nCancel them and quit? Their histories so far are kept."
        )

        def yes_no(yes: bool | None) -> None:
            then("cancel" if yes else None)

        self.app.push_screen(ConfirmScreen(question), yes_no)

    def _ask_keep_or_cancel(
        self, what: str, threads: int, then: Callable[[str | None], Any]
    ) -> None:
        """Some runs train in worker processes: keep them training, cancel them, or stay."""
        question = (
            f"{what}.\nKeep them training in the background (cnntui --status, or open cnntui "
            "again to follow them), or cancel them? Their histories are kept either way."
        )
        if threads:
            question += f"\n{threads} of them train in this process and are cancelled."
        choices = [("k", "keep", "keep (default)"), ("c", "cancel", "cancel them")]
        self.app.push_screen(ChoiceScreen(question, choices, "keep"), then)
