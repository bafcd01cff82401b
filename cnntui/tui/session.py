"""The TUI's model of a session: the experiments file, this session's runs and their queue.

The screen asks it what to start, what to show and what a key did; it answers in plain
data, so its rules (one active run per experiment, a settable number of runs at once, a
broken file keeps the last good list) are tested without a screen. No textual, no torch.
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from pathlib import Path
from typing import Any

from ..config import ConfigError, Experiment, ExperimentFile, apply_overrides, load
from ..store import UNFINISHED, RunRecord, RunStore
from .state import RunState, Trace

# What reading a stored run's history can raise when the file is truncated or corrupt.
UNREADABLE = (
    OSError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    EOFError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
)


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

    def load_past(self) -> list[RunRecord]:
        """Read every stored run's summary (not its history): the results table's first rows."""
        self.past = self.store.runs()
        self._stored_latest = {r.name: r for r in self.past}
        return self.past

    def stored_latest(self, name: str) -> RunRecord | None:
        """The newest run of `name` on disk when the session began, or that this session ended."""
        return self._stored_latest.get(name)

    def remember(self, record: RunRecord) -> None:
        self._stored_latest[record.name] = record

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

    def active(self) -> list[RunState]:
        return [s for s in self.runs.values() if s.active]

    def queued(self) -> list[RunState]:
        return [s for s in self.runs.values() if s.status == "queued"]

    def enqueue(
        self, exp: Experiment, resume_run: Any = None, checkpoint: Path | None = None
    ) -> RunState | str:
        """Queue a run of `exp`, or say why not (it is already queued or running)."""
        current = self.latest(exp.name)
        if current is not None and (current.active or current.status == "queued"):
            return f"{exp.name} is already {current.status}"
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
            state.status, state.reason = "cancelled", "removed from the queue"
            state.version += 1
            return f"{name} removed from the queue"
        state.cancel.set()
        return f"cancelling {name} (its history so far is kept)"

    def cancel_all(self) -> list[RunState]:
        """Cancel every queued and active run; returns the active ones still to stop."""
        for state in self.queued():
            state.status, state.reason = "cancelled", "removed from the queue"
            state.version += 1
        active = self.active()
        for state in active:
            state.cancel.set()
        return active

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
            try:
                trace = Trace.load(npz)
            except UNREADABLE:  # truncated or corrupt: no curve for it, and the app goes on
                trace = Trace()
            self._traces = {k: v for k, v in self._traces.items() if k[0] != str(npz)}
            self._traces[key] = trace
        return trace
