"""The TUI's model of a session: the experiments file, this session's runs and their queue.

The screen asks it what to start, what to show and what a key did; it answers in plain
data, so its rules (one active run per experiment, a settable number of runs at once, a
broken file keeps the last good list) are tested without a screen. No textual, no torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import SETTING_KEYS, ConfigError, Experiment, ExperimentFile, apply_overrides, load
from ..store import UNFINISHED, RunRecord, RunStore
from .state import RunState, Trace

# Settings that change how fast a run trains or where it reads from, not what it learns: a
# run that differs from today's settings only in these still counts as one of them.
SPEED_ONLY = frozenset(
    {"device", "data_dir", "threads", "compile", "channels_last", "target_acc"}
    | {"executor", "gpus", "runs_per_gpu", "min_free_gib"}  # where it runs, not what it learns
)
STORED_REFRESH_SECONDS = 1.0  # how often a stored run another process trains is re-read


class Session:
    """Experiments, runs and queue of one TUI session."""

    def __init__(
        self, config: Path, overrides: dict[str, Any], store: RunStore, jobs: int = 1
    ) -> None:
        self.config = Path(config)
        self.overrides = dict(overrides)
        self.store = store
        self.jobs = max(1, jobs)
        self.file: ExperimentFile | None = None
        self.experiments: list[Experiment] = []
        self.error = ""  # the file's one-line error while it is broken
        self.runs: dict[int, RunState] = {}
        self._next_key = 1
        self._traces: dict[tuple[str, float], Trace] = {}
        self.past: list[RunRecord] = []  # runs in the store when the session began
        self._stored_latest: dict[str, RunRecord] = {}
        self._configs: dict[str, Experiment | None] = {}  # run dir -> what it trained with
        self._refreshed = 0.0  # monotonic time stored runs marked running were last re-read
        self._told: dict[str, str] = {}  # run dir -> the status last handed to the screen
        self._training = 0  # worker threads inside `training()`
        self._idle = threading.Condition()

    def load_past(self) -> list[RunRecord]:
        """Read every stored run's summary (not its history): the results table's first rows."""
        self.past = self.store.runs()
        self._stored_latest = {r.name: r for r in self.past}
        self._told = {str(r.path): r.status for r in self.past}
        self._refreshed = time.monotonic()
        return self.past

    def stored_latest(self, name: str) -> RunRecord | None:
        """The newest run of `name` on disk when the session began, or that this session ended."""
        return self._stored_latest.get(name)

    def remember(self, record: RunRecord) -> None:
        self._stored_latest[record.name] = record

    def refresh_stored(self, now: float | None = None) -> list[RunRecord]:
        """Re-read, at most once a second, the stored latest runs whose summary says running:
        another process may be training them (their status then changes on disk), or may
        have died (`RunRecord.status` then says interrupted). Returns the records that
        changed, for the results table."""
        now = time.monotonic() if now is None else now
        if now - self._refreshed < STORED_REFRESH_SECONDS:
            return []
        self._refreshed = now
        mine = {s.run_dir for s in self.runs.values() if s.run_dir}
        changed = []
        for name, record in list(self._stored_latest.items()):
            path = str(record.path)
            if record.summary.get("status") != "running" or path in mine:
                continue
            try:
                fresh = next((r for r in self.store.runs(name) if r.path == record.path), record)
            except (OSError, ValueError):
                fresh = record
            # A dead process changes no file: its run's status changes all the same.
            status = fresh.status
            if fresh.summary != record.summary or status != self._told.get(path):
                self._stored_latest[name] = fresh
                self._told[path] = status
                changed.append(fresh)
        return changed

    def shown_run(self, name: str) -> RunState | RunRecord | None:
        """The run the screen shows for `name`: this session's newest, else the stored one."""
        return self.latest(name) or self.stored_latest(name)

    def run_config(self, run: RunState | RunRecord) -> Experiment | None:
        """The settings `run` trained with (a stored run's config.toml, read once)."""
        if isinstance(run, RunState):
            return run.experiment
        key = str(run.path)
        if key not in self._configs:
            try:
                self._configs[key] = run.experiment()
            except (OSError, ValueError, TypeError):
                self._configs[key] = None
        return self._configs[key]

    def changed_settings(self, run: RunState | RunRecord) -> dict[str, tuple[Any, Any]]:
        """Settings that decide what a run learns and in which `run` differs from its
        experiment as it is now (file and --set): {key: (the run's value, today's value)}."""
        used = self.run_config(run)
        now = self.experiment(run.name)
        if used is None or now is None:
            return {}
        return {
            k: (getattr(used, k), getattr(now, k))
            for k in SETTING_KEYS
            if k not in SPEED_ONLY and getattr(used, k) != getattr(now, k)
        }

    def finished_as_now(self, name: str) -> bool:
        """Whether `name`'s latest run finished, with the settings the experiment has now."""
        run = self.shown_run(name)
        return run is not None and run.status == "finished" and not self.changed_settings(run)

    # -- the experiments file ------------------------------------------------------------

    def reload(self) -> bool:
        """Read the file again; on a ConfigError keep the last good list and remember why."""
        try:
            file = load(self.config)
        except ConfigError as e:
            self.error = str(e)
            return False
        self.file, self.error = file, ""
        self.experiments = apply_overrides(file.experiments, self.overrides)
        return True

    def experiment(self, name: str) -> Experiment | None:
        return next((e for e in self.experiments if e.name == name), None)

    def apart_from_defaults(self, exp: Experiment) -> dict[str, Any]:
        """The settings this experiment sets differently from [defaults] (overrides applied)."""
        if self.file is None:
            return {}
        base = dataclasses.asdict(apply_overrides([self.file.defaults], self.overrides)[0])
        return {k: v for k, v in exp.settings().items() if k in base and base[k] != v}

    # -- runs ----------------------------------------------------------------------------

    def latest(self, name: str) -> RunState | None:
        """This session's newest run of `name`."""
        for state in reversed(self.runs.values()):
            if state.name == name:
                return state
        return None

    def busy(self, name: str) -> bool:
        """Whether `name` has a run queued, starting or running in this session."""
        current = self.latest(name)
        return current is not None and (current.active or current.status == "queued")

    def active(self) -> list[RunState]:
        return [s for s in self.runs.values() if s.active]

    def queued(self) -> list[RunState]:
        return [s for s in self.runs.values() if s.status == "queued"]

    def enqueue(
        self, exp: Experiment, resume_run: Any = None, checkpoint: Path | None = None
    ) -> RunState | str:
        """Queue a run of `exp`, or say why not (it is already queued or running)."""
        if self.busy(exp.name):
            return f"{exp.name} is already {self.latest(exp.name).status}"
        state = RunState(self._next_key, exp, resume_run, checkpoint)
        self._next_key += 1
        self.runs[state.key] = state
        return state

    def to_start(self) -> list[RunState]:
        """Queued runs that may start now; they are marked 'starting'."""
        free = self.jobs - len(self.active())
        chosen = self.queued()[: max(0, free)]
        for state in chosen:
            state.status = "starting"
            state.version += 1
        return chosen

    def cancel(self, name: str) -> str:
        """Cancel the queued or active run of `name`; returns what happened, as a sentence."""
        state = self.latest(name)
        if state is None or state.ended:
            return f"{name} is not running"
        if state.status == "queued":
            self._unqueue(state)
            return f"{name} removed from the queue"
        state.cancel.set()
        return f"cancelling {name} (its history so far is kept)"

    def cancel_all(self) -> list[RunState]:
        """Cancel every queued and active run; returns the active ones still to stop."""
        for state in self.queued():
            self._unqueue(state)
        active = self.active()
        for state in active:
            state.cancel.set()
        return active

    @staticmethod
    def _unqueue(state: RunState) -> None:
        state.status, state.reason = "cancelled", "removed from the queue"
        state.version += 1
        if state.resume_run is not None:
            state.resume_run.release()  # the run it would have resumed is free again

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """Around a worker thread's training: `wait_stopped` waits for every such block."""
        with self._idle:
            self._training += 1
        try:
            yield
        finally:
            with self._idle:
                self._training -= 1
                self._idle.notify_all()

    def wait_stopped(self, timeout: float) -> bool:
        """Wait until no worker trains (each has saved its run); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._training == 0, timeout)

    def resumable(self, name: str) -> RunRecord | None:
        """The latest stored unfinished run of `name` that is not running in this session."""
        mine = {s.run_dir for s in self.runs.values() if s.active and s.run_dir}
        for record in reversed(self.store.runs(name)):
            if str(record.path) in mine:
                continue
            if record.status in UNFINISHED:
                return record
        return None

    # -- what to plot --------------------------------------------------------------------

    def stored_trace(self, record: RunRecord) -> Trace:
        """A stored run's history, cached until its file changes."""
        npz = record.path / "history.npz"
        try:
            stamp = npz.stat().st_mtime
        except OSError:
            return Trace()
        key = (str(npz), stamp)
        trace = self._traces.get(key)
        if trace is None:
            trace = Trace.load(npz)  # truncated or corrupt: empty, and the app goes on
            self._traces = {k: v for k, v in self._traces.items() if k[0] != str(npz)}
            self._traces[key] = trace
        return trace
