"""The main screen: experiments, live curves, results, and every key that acts on them.

Runs train in worker processes of their own (executor "process", the default: queued in the
run store, started by its scheduler, they outlive the TUI) or in Textual thread workers
(executor "thread"). Either way a RunState is fed the engine's events: a thread worker feeds
its own; the follower thread feeds every other run of the store (this session's worker
processes, and whatever another TUI, --detach or a plain --run started) from its files,
polling the runs not yet ended every FOLLOW_SECONDS and listing the store for new ones once a
second. Both post a `RunUpdated` note when an epoch ends or the status changes (collapsing
when stale); the screen redraws batch curves and progress from a 4 Hz timer, and only what
changed. A thread run's end is handled when its worker stops, so a crash in the worker itself
is reported the same way as a failed run and never closes the app.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import ContentSwitcher, DataTable, Footer, Header, Static
from textual.worker import Worker, WorkerState, get_current_worker

from ... import text, tomledit
from ...config import ConfigError
from ...driver import EitherEvent, drive
from ...events import BatchLosses, Event
from ...store import RunRecord, StoreError
from ...text import one_line
from ...tomledit import show_value
from ..classes import class_view
from ..messages import GpusRead, RunsFound, RunUpdated
from ..session import Session
from ..state import Curve, RunState
from ..widgets.curves import CurvesPanel
from ..widgets.experiments import ExperimentsTable
from ..widgets.results import ResultsTable
from .classes import ClassesScreen
from .confirm import ChoiceScreen, ConfirmScreen
from .edit import ExperimentForm
from .help import HelpScreen

Trainer = Callable[..., Iterator[Event]]  # engine.train's signature
WARNING_SECONDS = 6  # notifications: information goes in 4 s (the app's default), these later
ERROR_SECONDS = 10
REDRAW_SECONDS = 0.25  # curves and statuses are redrawn at most 4 times a second
# Live curves may take at most this share of a CPU core: a plotext build is pure Python
# and holds the GIL the training threads need, so a costly chart is redrawn less often.
CURVES_SHARE = 0.05
FOLLOW_SECONDS = 0.3  # how often the follower thread reads the files of the runs it follows
GPU_SECONDS = 2.0  # how often the GPUs are read (NVML, in a thread)


TRAIN_NICE = 5  # training threads run this much "nicer" than the UI thread (Linux)
_BASE_NICE = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else 0


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
    from ...engine import reserve_cores, train  # torch loads on the first run, not at start-up

    reserve_cores(1)  # the screen keeps a core: keys stay quick while runs train
    return train(*args)


def stored_row(record: RunRecord) -> dict[str, Any]:
    """A stored run's results row, with its status as the store reads it now: a summary that
    says running, written by a process that has gone, reads interrupted."""
    return {**record.summary, "status": record.status}


def previous_settings(changed: dict[str, tuple[Any, Any]]) -> str:
    """`previous settings: lr=0.01 now 0.05`, for a run whose experiment has changed since."""
    return "previous settings: " + ", ".join(
        f"{k}={show_value(old)} now {show_value(new)}" for k, (old, new) in changed.items()
    )


class MainScreen(Screen):
    """Everything the user works with; modal screens open on top of it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "run", "Run", tooltip="run the highlighted experiment"),
        Binding(
            "a", "run_all", "Run all", tooltip="queue every experiment (asks before re-running)"
        ),
        Binding("c", "cancel", "Cancel", tooltip="cancel the highlighted experiment's run"),
        Binding(
            "space", "mark", "Mark", tooltip="mark / unmark the experiment: overlay its curves"
        ),
        # One key, named after where it goes (check_action shows the one that applies).
        Binding("v", "view('results')", "Results", tooltip="show the results table"),
        Binding("v", "view('curves')", "Curves", tooltip="back to the curves"),
        Binding("e", "export", "Export", tooltip="export figures, tables and histories"),
        Binding("question_mark", "help", "Keys", tooltip="this list of keys"),
        Binding(
            "R",
            "resume",
            "Resume",
            show=False,
            tooltip="resume the latest unfinished run from its checkpoint",
        ),
        Binding("l", "log", "Log y", show=False, tooltip="log scale for the loss curves"),
        Binding(
            "k",
            "classes",
            "Classes",
            show=False,
            tooltip="confusion matrix and per-class accuracy of the run",
        ),
        Binding("n", "new", "New", show=False, tooltip="new experiment (a form)"),
        Binding("d", "duplicate", "Duplicate", show=False, tooltip="duplicate the experiment"),
        Binding("E", "edit", "Edit", show=False, tooltip="edit the experiment (also enter)"),
        Binding(
            "ctrl+r", "reload", "Reload", show=False, tooltip="reload experiments.toml from disk"
        ),
        Binding("plus", "jobs(1)", "Jobs+", show=False, tooltip="one more run at a time"),
        Binding("minus", "jobs(-1)", "Jobs-", show=False, tooltip="one run fewer at a time"),
        Binding("s", "noop", "Sort", show=False, tooltip="sort the results by the cursor column"),
        Binding("q", "app.quit", "Quit", tooltip="quit (asks first when runs are active)"),
    ]

    def __init__(
        self,
        session: Session,
        exports_dir: Path,
        trainer: Trainer | None = None,
        device_label: str | None = None,
        inventory: Callable[[], list] | None = None,
    ) -> None:
        super().__init__()
        self.session = session
        self.inventory = inventory  # cnntui.gpus.inventory, or a test's; None: not read
        self.exports_dir = Path(exports_dir)
        self.trainer = trainer or _engine_train
        self.device_label = device_label or "probing device…"
        self._probe = device_label is None
        self.marks: set[str] = set()
        self.log_scale = False
        self._workers: dict[Worker, int] = {}
        self._ended: list[tuple[str, str, dict[str, Any]]] = []  # since the queue last ran dry
        self._seen: dict[int, tuple[int, int]] = {}  # run key -> (version, epochs) in results
        self._curves_key: tuple | None = None
        self._curves_due = 0.0  # monotonic time before which the timer leaves the curves be
        self._cuda = False
        self._memory, self._memory_at = "", -math.inf
        self._gpus: list = []
        self._told_ended: set[int] = set()  # followed runs whose end has been handled
        self.stopping = threading.Event()  # set when the app ends: the loops below stop

    # -- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="▦")
        yield Static("", id="file-error")
        yield ExperimentsTable(id="experiments")
        with ContentSwitcher(initial="curves", id="views"):
            yield CurvesPanel(id="curves")
            yield ResultsTable(id="results")
        # Compact, without the palette's key: at 80 columns every key shown still fits.
        yield Footer(compact=True, show_command_palette=False)

    @property
    def table(self) -> ExperimentsTable:
        return self.query_one("#experiments", ExperimentsTable)

    @property
    def results(self) -> ResultsTable:
        return self.query_one("#results", ResultsTable)

    def on_mount(self) -> None:
        self.app.title = "cnntui"
        if not self.session.reload() and not self.session.experiments:
            self.show_file_error()
        self.table.show(self.session, self.marks)
        for record in self.session.load_past():
            self.results.put(str(record.path), stored_row(record), redraw=False)
        self.results.update_rows()
        self.update_header()
        self.set_interval(REDRAW_SECONDS, self.tick)
        if self._probe:
            self.run_worker(self._probe_device, thread=True, exit_on_error=False, name="device")
        self.run_worker(self._follow_loop, thread=True, exit_on_error=False, name="follow")
        if self.inventory is not None:
            self.run_worker(self._gpu_loop, thread=True, exit_on_error=False, name="gpus")
        self.table.focus()

    def on_unmount(self) -> None:
        self.stopping.set()

    def _looping(self) -> bool:
        """For the loops of thread workers: go on until the app ends or cancels them."""
        return not self.stopping.is_set() and not get_current_worker().is_cancelled

    def _follow_loop(self) -> None:
        """The follower thread: feed the followed runs, find new ones; never the UI thread."""
        next_scan = 0.0
        while self._looping():
            for state in self.session.poll_followed():
                self.post_message(RunUpdated(state.key))
            now = time.monotonic()
            if now >= next_scan:
                next_scan = now + 1.0
                found = self.session.scan_store()
                if found:
                    self.post_message(RunsFound(found))
            self.stopping.wait(FOLLOW_SECONDS)

    def _gpu_loop(self) -> None:
        while self._looping():
            try:
                gpus = list(self.inventory())
            except Exception:  # a driver hiccup must not end the loop
                gpus = []
            self.post_message(GpusRead(gpus))
            self.stopping.wait(GPU_SECONDS)

    def on_gpus_read(self, message: GpusRead) -> None:
        self._gpus = message.gpus
        self.update_header()

    def on_runs_found(self, message: RunsFound) -> None:
        known = {s.run_dir for s in self.session.runs.values() if not s.ended}
        for record in message.records:
            if str(record.path) in known:
                continue
            exp = self.session.experiment(record.name)
            try:
                exp = record.experiment()
            except StoreError:
                if exp is None:
                    continue
            self.session.follow(record, exp, remote=True)
        self.table.update_statuses(self.session)
        self.update_header()

    def _probe_device(self) -> str:
        from ...engine import describe_device, resolve_device

        spec = self.session.overrides.get("device", "auto")
        dev = resolve_device(spec)
        self._cuda = dev.type == "cuda"
        return describe_device(dev)

    def _cuda_memory(self) -> str:
        """GPU memory in use on the device (all processes), re-read every 2 s."""
        now = time.monotonic()
        if now - self._memory_at >= 2.0:
            self._memory_at = now
            try:
                import torch

                free, total = torch.cuda.mem_get_info()
                self._memory = f"{(total - free) / 2**30:.1f}/{total / 2**30:.0f} GiB in use"
            except Exception as e:  # a driver hiccup must not stop the timer
                self._memory = f"memory: {one_line(e)}"
        return self._memory

    def gpu_parts(self) -> list[str]:
        """`0 H200 12.3/141G 45% 2 ours` for every GPU (short: the header is one line)."""
        ours: dict[int, int] = {}
        for state in self.session.active():
            if state.gpu is not None:
                ours[state.gpu] = ours.get(state.gpu, 0) + 1
        parts = []
        for gpu in self._gpus:
            name = gpu.name.replace("NVIDIA ", "").replace("GeForce ", "")
            util = f" {gpu.utilization}%" if gpu.utilization >= 0 else ""
            mine = ours.get(gpu.index, 0)
            parts.append(
                f"{gpu.index} {name} {gpu.memory_used / 2**30:.1f}/{gpu.memory_total / 2**30:.0f}G"
                f"{util}" + (f" {mine} ours" if mine else "")
            )
        return parts

    def update_header(self) -> None:
        active, queued = len(self.session.active()), len(self.session.queued())
        parts = [self.device_label] if not self._gpus else self.gpu_parts()
        if self._cuda and not self._gpus:
            parts.append(self._cuda_memory())
        parts.append(f"{active} running" + (f", {queued} queued" if queued else ""))
        parts.append(f"jobs {self.session.jobs}")
        self.app.sub_title = " · ".join(parts)

    def show_file_error(self) -> None:
        line = self.query_one("#file-error", Static)
        line.update(Text(self.session.error, style="bold"))
        line.display = bool(self.session.error)

    # -- the redraw timer -----------------------------------------------------------------

    def tick(self) -> None:
        for record in self.session.refresh_stored():
            self.results.put(str(record.path), stored_row(record))
        self.table.update_statuses(self.session)
        self.update_header()
        now = time.monotonic()
        if (
            self.query_one("#views", ContentSwitcher).current == "curves"
            and now >= self._curves_due
        ):
            self.redraw_curves()
            cost = self.query_one("#curves", CurvesPanel).build_seconds()
            self._curves_due = now + max(REDRAW_SECONDS, cost / CURVES_SHARE) - 0.01

    def shown(self) -> list[str]:
        """Experiments whose curves are drawn: the marked ones, else the highlighted one."""
        marked = [e.name for e in self.session.experiments if e.name in self.marks]
        if marked:
            return marked
        name = self.table.highlighted
        return [name] if name else []

    def redraw_curves(self, force: bool = False) -> None:
        panel = self.query_one("#curves", CurvesPanel)
        points = panel.points()
        sources: list[tuple[str, RunState | RunRecord | None]] = []
        key: list[Any] = [points, self.log_scale]
        bands = {name: self.session.seed_band(name) for name in self.shown()}
        key.append(tuple(band.key for band in bands.values() if band is not None))
        for name in self.shown():
            state = self.session.latest(name)
            now = self.session.experiment(name)  # settings changed: the key line says so
            if state is not None and state.status not in ("queued", "starting"):
                sources.append((name, state))
                key.append((name, state.key, state.version, now))
            else:
                record = self.session.stored_latest(name)
                sources.append((name, record))
                key.append((name, str(record.path) if record else None, now))
        if not force and tuple(key) == self._curves_key:
            return
        self._curves_key = tuple(key)
        curves: list[Curve] = []
        notes: dict[Any, str] = {}
        absent: list[str] = []
        for name, source in sources:
            if isinstance(source, RunState):
                curve = source.curve(points)
            elif source is not None:
                trace = self.session.stored_trace(source)
                curve = trace.curve(name, points, ("stored", str(source.path)))
            else:
                absent.append(name)
                continue
            band = bands[name]
            if band is not None:
                curve = dataclasses.replace(curve, band=band)
            curves.append(curve)  # even with nothing drawn yet: the key names its colour
            changed = self.session.changed_settings(source)
            if changed:
                notes[curve.source] = previous_settings(changed)
        panel.show(curves, self.log_scale, notes, absent)

    # -- runs -----------------------------------------------------------------------------

    def start_queued(self) -> None:
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
        Its live files are written as a worker process writes them (cnntui.driver), so other
        processes follow and cancel it too."""
        yield_cpu_to_ui()
        store = self.session.store
        with self.session.training():
            run = state.resume_run or store.create(state.experiment)
            state.run_dir = str(run.path)
            try:
                cancel = EitherEvent(state.cancel)
                events = self.trainer(state.experiment, cancel, run, state.checkpoint)
                for event in drive(run.path, events, cancel):
                    state.feed(event)
                    if not isinstance(event, BatchLosses):  # the redraw timer picks those up
                        self.post_message(RunUpdated(state.key))
            finally:
                run.release()

    def on_run_updated(self, message: RunUpdated) -> None:
        state = self.session.runs.get(message.key)
        if state is None:
            return
        epochs = len(state.trace.test_acc)
        if self._seen.get(state.key, (None, -1))[1] != epochs and state.run_dir:
            self._seen[state.key] = (state.version, epochs)
            self.results.put(state.run_dir, state.summary())
        if state.follow is not None and state.ended and state.key not in self._told_ended:
            self._told_ended.add(state.key)
            self.run_ended(state)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.name == "device":
            if event.state == WorkerState.SUCCESS:
                self.device_label = worker.result
            elif event.state == WorkerState.ERROR:
                self.device_label = f"device: {one_line(worker.error)}"
            self.update_header()
            return
        if worker.name == "export":
            self._export_done(worker, event.state)
            return
        key = self._workers.get(worker)
        if key is None or event.state not in (
            WorkerState.SUCCESS,
            WorkerState.ERROR,
            WorkerState.CANCELLED,
        ):
            return
        del self._workers[worker]
        state = self.session.runs[key]
        if event.state == WorkerState.ERROR:
            state.fail(one_line(worker.error))
        elif not state.ended:
            state.fail("the run stopped without a result")
        self.run_ended(state)
        self.start_queued()

    def run_ended(self, state: RunState) -> None:
        summary, row = state.summary(), state.run_dir or f"session-{state.key}"
        if state.run_dir:
            record = next(
                (r for r in self.session.store.runs(state.name) if str(r.path) == state.run_dir),
                None,
            )
            if record is not None:
                self.session.remember(record)
                summary = {**record.summary, "status": record.status}
        self.results.put(row, summary)
        if state.remote:  # someone else's run: its row and status say how it ended
            self.table.update_statuses(self.session)
            self.redraw_curves()
            return
        # One note when the queue runs dry, not one a run: the status cells say each ending.
        # A failure's reason is longer than its cell, so it is said at once.
        self._ended.append((state.name, state.status, summary))
        name = state.name
        match state.status:
            case "diverged":
                self.notify(
                    f"{name} diverged: {state.reason}", severity="warning", timeout=WARNING_SECONDS
                )
            case "failed":
                self.notify(
                    f"{name} failed: {state.reason}", severity="error", timeout=ERROR_SECONDS
                )
        if not self.busy():
            self._say_all_ended()
        self.table.update_statuses(self.session)
        self.redraw_curves()

    def _say_all_ended(self) -> None:
        ended, self._ended = self._ended, []
        if len(ended) == 1:
            name, status, summary = ended[0]
            if status == "finished":
                acc = text.pct(summary.get("final_test_acc"))
                took = text.seconds(summary.get("total_seconds"))
                self.notify(f"{name} finished: test accuracy {acc} in {took}")
            return
        counts: dict[str, int] = {}
        for _, status, _ in ended:
            counts[status] = counts.get(status, 0) + 1
        told = ", ".join(f"{n} {status}" for status, n in counts.items())
        self.notify(f"all {len(ended)} runs ended: {told} (v shows the results)")

    # -- actions --------------------------------------------------------------------------

    def acted(self) -> None:
        """A key asked for something new: what earlier notifications said is old news, and
        they would pile up over the charts."""
        self.app.clear_notifications()

    def _highlighted(self) -> str | None:
        self.acted()
        name = self.table.highlighted
        if name is None:
            self.notify("no experiment to act on", severity="warning")
        return name

    def action_run(self) -> None:
        name = self._highlighted()
        exp = self.session.experiment(name) if name else None
        if exp is None:
            return
        queued = self._enqueue(exp)
        if isinstance(queued, str):
            self.notify(queued, severity="warning")
            return
        self.start_queued()
        self.table.update_statuses(self.session)

    def _enqueue(self, exp: Any) -> RunState | str:
        """Queue a run: in the store for a worker process, or here for a thread."""
        if self.session.executor_of(exp) == "process":
            return self.session.submit(exp)
        return self.session.enqueue(exp)

    def action_run_all(self) -> None:
        """Queue every experiment not queued or running; ask first about those whose latest
        run already finished with the settings they have now."""
        self.acted()
        if not self.session.experiments:
            self.notify("no experiments to run", severity="warning")
            return
        todo = [e for e in self.session.experiments if not self.session.busy(e.name)]
        if not todo:
            self.notify("every experiment is already queued or running", severity="warning")
            return
        done = [e.name for e in todo if self.session.finished_as_now(e.name)]
        if not done:
            self._queue(todo)
            return
        rest = [e for e in todo if e.name not in done]
        names = ", ".join(done[:4]) + (f" and {len(done) - 4} more" if len(done) > 4 else "")
        if rest:
            question = (
                f"Run {len(todo)}: {len(done)} of them already finished with these settings "
                f"({names}).\nRun those again too?"
            )
            answers = (
                f"[b]y[/b] run all {len(todo)}   [b]n[/b] only the {len(rest)} unfinished"
                "   [b]escape[/b] run nothing"
            )
        else:
            question = (
                f"All {len(done)} already finished with these settings ({names}).\nRun them again?"
            )
            answers = "[b]y[/b] run them again   [b]n[/b] run nothing"

        def answered(yes: bool | None) -> None:
            chosen = todo if yes else rest if yes is not None else []
            if chosen:
                self._queue(chosen)
            else:
                self.notify("nothing queued")

        self.app.push_screen(ConfirmScreen(question, answers, escape=None), answered)

    def _queue(self, experiments: list) -> None:
        added = [e for e in experiments if isinstance(self._enqueue(e), RunState)]
        self.start_queued()
        self.table.update_statuses(self.session)
        runs = sum(len(e.runs()) for e in added)  # one per seed
        self.notify(f"queued {runs} run(s); {self.session.jobs} at a time")

    def action_cancel(self) -> None:
        name = self._highlighted()
        if name:
            self.notify(self.session.cancel(name))
            self.table.update_statuses(self.session)

    def action_resume(self) -> None:
        name = self._highlighted()
        if name is None:
            return
        record = self.session.resumable(name)
        if record is None:
            self.notify(f"{name} has no unfinished run to resume", severity="warning")
            return
        exp = self.session.experiment(name)
        if exp is not None and self.session.executor_of(exp) == "process":
            queued = self.session.submit_resume(record)
            if isinstance(queued, str):
                self.notify(queued, severity="error", timeout=15)
                return
            done = record.summary.get("epochs_done", 0)
            self.notify(f"resuming {name} run {record.run_id} after epoch {done}")
            self.table.update_statuses(self.session)
            return
        try:
            run, checkpoint = self.session.store.resume(record, self.session.overrides)
        except StoreError as e:
            self.notify(str(e), severity="error", timeout=15)
            return
        queued = self.session.enqueue(run.experiment, run, checkpoint)
        if isinstance(queued, str):
            run.release()
            self.notify(queued, severity="warning")
            return
        done = record.summary.get("epochs_done", 0)
        self.notify(f"resuming {name} run {record.run_id} after epoch {done}")
        self.start_queued()

    def action_mark(self) -> None:
        name = self._highlighted()
        if name is None:
            return
        if name in self.marks:
            self.marks.discard(name)
        else:
            self.marks.add(name)
        self.table.set_mark(name, name in self.marks)
        self.redraw_curves()

    def action_log(self) -> None:
        self.acted()
        self.log_scale = not self.log_scale
        self.redraw_curves()

    def action_classes(self) -> None:
        name = self._highlighted()
        if name is None:
            return
        load = partial(class_view, self.session, name)
        if load() is None:
            self.notify(f"{name} has no run yet: r runs it", severity="warning")
            return
        self.app.push_screen(ClassesScreen(load))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "view" and parameters:
            try:
                return parameters[0] != self.query_one("#views", ContentSwitcher).current
            except NoMatches:  # asked before the views exist
                return parameters[0] == "results"
        return True

    def action_view(self, where: str = "") -> None:
        self.acted()
        switcher = self.query_one("#views", ContentSwitcher)
        switcher.current = where or ("results" if switcher.current == "curves" else "curves")
        self.refresh_bindings()
        if switcher.current == "results":
            self.results.focus()
        else:
            self.table.focus()
            self.redraw_curves(force=True)

    def action_noop(self) -> None:
        """`s` sorts when the results table has the focus; elsewhere, say how to get there."""
        self.acted()
        self.notify("press v to show the results, then s sorts by the cursor's column")

    def action_jobs(self, delta: int) -> None:
        self.acted()
        self.session.jobs = max(1, self.session.jobs + delta)
        self.notify(f"{self.session.jobs} run(s) at a time")
        self.start_queued()

    def action_help(self) -> None:
        self.acted()
        self.app.push_screen(HelpScreen(self.BINDINGS))

    def action_export(self) -> None:
        self.acted()
        if not self.session.experiments:
            self.notify("no experiments to export", severity="warning")
            return
        self.notify(f"exporting to {self.exports_dir}/ …", timeout=3)
        self.run_worker(
            partial(self._export, list(self.session.experiments)),
            thread=True,
            exit_on_error=False,
            name="export",
            exclusive=True,
            group="export",
        )

    def _export(self, experiments: list) -> Any:
        from ...export import export_all

        return export_all(self.session.store, experiments, self.exports_dir)

    def _export_done(self, worker: Worker, state: WorkerState) -> None:
        if state == WorkerState.SUCCESS:
            result = worker.result
            msg = f"exported {len(result.files)} file(s) to {result.folder}/"
            if result.missing:
                msg += f"\nnothing recorded yet for: {', '.join(result.missing)}"
            for warning in result.warnings:  # e.g. which font package shows the CJK titles
                msg += f"\n{warning}"
            for name, why in result.skipped.items():
                msg += f"\nskipped {name}: {why}"
            severity = "warning" if result.warnings or result.skipped else "information"
            self.notify(msg, title="export", severity=severity, timeout=ERROR_SECONDS)
        elif state == WorkerState.ERROR:
            self.notify(
                f"export failed: {one_line(worker.error)}", severity="error", timeout=ERROR_SECONDS
            )

    # -- the experiments file -------------------------------------------------------------

    def action_reload(self, quiet: bool = False) -> bool:
        if not quiet:
            self.acted()
        ok = self.session.reload()
        self.show_file_error()
        if not ok:
            self.notify(
                f"{self.session.error}\n(keeping the last good list)",
                severity="error",
                timeout=ERROR_SECONDS,
            )
            return False
        names = {e.name for e in self.session.experiments}
        self.marks &= names
        self.table.show(self.session, self.marks)
        self.redraw_curves(force=True)
        if not quiet:
            self.notify(f"reloaded {len(names)} experiment(s) from {self.session.config}")
        return True

    @on(DataTable.RowHighlighted, "#experiments")
    def _show_highlighted(self) -> None:
        if not self.marks:  # marked runs stay on screen whatever the cursor is on
            self.redraw_curves()

    @on(DataTable.RowSelected, "#experiments")
    def _edit_on_enter(self) -> None:
        self.action_edit()

    def _form(self, heading: str, values: dict[str, Any], index: int | None) -> None:
        file = self.session.file
        if self.session.error or file is None:
            self.notify(f"fix the file first: {self.session.error}", severity="error")
            return
        defaults = dataclasses.asdict(file.defaults)
        path = self.session.config

        def save(new: dict[str, Any]) -> str | None:
            try:
                tomledit.save_experiment(path, new, index)
            except (ConfigError, OSError) as e:
                return str(e)
            self.action_reload(quiet=True)
            if new["name"] in {e.name for e in self.session.experiments}:
                self.table.move_cursor(row=self.table.get_row_index(new["name"]))
            self.notify(f"saved {new['name']} to {path}")
            return None

        form = ExperimentForm(heading, values, defaults, save, self.session.overrides)
        self.app.push_screen(form)

    def _own(self, name: str) -> tuple[int, dict[str, Any]] | None:
        """The file position and own keys of experiment `name`, as written."""
        try:
            tables = tomledit.own_values(self.session.config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            self.notify(f"cannot read {self.session.config}: {e}", severity="error")
            return None
        for i, table in enumerate(tables):
            if table.get("name") == name:
                return i, table
        exp = self.session.experiment(name)
        if exp is not None and exp.sweep:
            self.notify(
                f"{name} comes from [[sweep]] {exp.sweep!r}: edit the sweep in "
                f"{self.session.config}",
                severity="warning",
            )
            return None
        self.notify(f"{name} is not in {self.session.config} any more; reload", severity="error")
        return None

    def action_new(self) -> None:
        self.acted()
        name = self.table.highlighted
        exp = self.session.experiment(name) if name else None
        values = {"group": exp.group} if exp and exp.group else {}
        self._form("new experiment", values, None)

    def action_duplicate(self) -> None:
        name = self._highlighted()
        own = self._own(name) if name else None
        if own is None:
            return
        names = {e.name for e in self.session.experiments}
        copy, n = f"{name}-copy", 2
        while copy in names:
            copy, n = f"{name}-copy{n}", n + 1
        self._form(f"duplicate of {name}", {**own[1], "name": copy}, None)

    def action_edit(self) -> None:
        name = self._highlighted()
        own = self._own(name) if name else None
        if own is not None:
            self._form(f"edit {name}", own[1], own[0])

    # -- quitting -------------------------------------------------------------------------

    def busy(self) -> int:
        """This session's runs queued or active (others' runs are theirs to stop)."""
        return len(self.session.own())

    def confirm_quit(self, then: Callable[[str | None], Any]) -> None:
        """Ask what becomes of this session's runs: "keep" (worker processes go on in the
        background; threads of this process cannot), "cancel", or None (stay)."""
        own = self.session.own()
        threads = [s for s in own if s.follow is None]
        active = len([s for s in own if s.status != "queued"])
        queued = len(own) - active
        what = f"{active} run(s) active" + (f" and {queued} queued" if queued else "")
        if len(threads) == len(own):
            question = (
                f"{what}, training in this process (executor 'thread'): they cannot outlive "
                "it.\nCancel them and quit? Their histories so far are kept."
            )

            def yes_no(yes: bool | None) -> None:
                then("cancel" if yes else None)

            self.app.push_screen(ConfirmScreen(question), yes_no)
            return
        question = (
            f"{what}.\nKeep them training in the background (cnntui --status, or open cnntui "
            "again to follow them), or cancel them? Their histories are kept either way."
        )
        if threads:
            question += f"\n{len(threads)} of them train in this process and are cancelled."
        choices = [("k", "keep", "keep (default)"), ("c", "cancel", "cancel them")]
        self.app.push_screen(ChoiceScreen(question, choices, "keep"), then)

    def run_workers(self) -> list[Worker]:
        return list(self._workers)
