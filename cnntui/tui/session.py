"""The TUI's model of a session: the experiments file, this session's runs and their queue.

The screen asks it what to start, what to show and what a key did; it answers in plain
data, so its rules (one active run per experiment, a settable number of runs at once, a
broken file keeps the last good list) are tested without a screen. No textual, no torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.config import (
    SETTING_KEYS,
    SPEED_KEYS,
    ConfigError,
    Experiment,
    ExperimentFile,
    apply_overrides,
    load,
)
from ..core.history import History
from ..core.search_space import Search
from ..report import stats
from ..runs import lifecycle, searches
from ..runs.executors import Job, detached_for
from ..runs.records import HELD, RunStatus
from ..runs.store import UNFINISHED, RunRecord, RunStore, StoreError
from .state import RunState, SeedBand, read_history
from .trials import TrialRow, TrialRuns, mark_best, number

SPEED_ONLY = SPEED_KEYS  # settings that change how fast a run trains, not what it learns
STORED_REFRESH_SECONDS = 1.0  # how often a stored run another process trains is re-read
BAND_REFRESH_SECONDS = 2.0  # how often the seed runs behind a ± std band are looked for
SCAN_SECONDS = 1.0  # how often the store is listed for runs someone else queued or started


class Session:
    """Experiments, runs and queue of one TUI session."""

    def __init__(
        self,
        config: Path,
        overrides: dict[str, Any],
        store: RunStore,
        jobs: int = 1,
        executor: str = "process",
    ) -> None:
        self.config = Path(config)
        # How runs whose experiment says executor "auto" train: "process" (worker processes
        # that outlive the TUI, followed through the store) or "thread" (in this process).
        self.executor = executor
        self.overrides = dict(overrides)
        self.store = store
        self.jobs = max(1, jobs)
        self.file: ExperimentFile | None = None
        self.experiments: list[Experiment] = []
        self.searches: list[Search[Experiment]] = []  # the file's [[search]]es
        self.trial_runs = TrialRuns(store)
        self.error = ""  # the file's one-line error while it is broken
        self.runs: dict[int, RunState] = {}
        self._keys = itertools.count(1)  # each RunState's key
        self._histories: dict[tuple[str, float], History] = {}
        self.past: list[RunRecord] = []  # runs in the store when the session began
        self._stored_latest: dict[str, RunRecord] = {}
        self._configs: dict[str, Experiment | None] = {}  # run dir -> what it trained with
        self._refreshed = 0.0  # monotonic time stored runs marked running were last re-read
        self._told: dict[str, str] = {}  # run dir -> the status last handed to the screen
        self._training = 0  # worker threads inside `training()`
        self._idle = threading.Condition()
        self._stamps: dict[Path, float] = {}  # run dir -> its summary.json's mtime, last scan
        self._bands: dict[str, tuple[float, SeedBand | None]] = {}  # name -> (read at, band)

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
        """Take `record` as its experiment's latest stored run (a run that just ended)."""
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
            if record.summary.status != RunStatus.RUNNING or path in mine:
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
        same_seed = {"seeds"} | ({"seed"} if used.seed in now.seeds else set())
        return {
            k: (getattr(used, k), getattr(now, k))
            for k in SETTING_KEYS
            if k not in SPEED_ONLY | same_seed and getattr(used, k) != getattr(now, k)
        }

    def finished_as_now(self, name: str) -> bool:
        """Whether `name`'s latest run finished, with the settings the experiment has now."""
        run = self.shown_run(name)
        return (
            run is not None and run.status == RunStatus.FINISHED and not self.changed_settings(run)
        )

    # -- the experiments file ------------------------------------------------------------

    def reload(self) -> bool:
        """Read the file again; on a ConfigError keep the last good list and remember why."""
        try:
            file = load(self.config)
            experiments = apply_overrides(file.experiments, self.overrides)  # may not agree
            # --set reaches a search's trials as `cnntui --run SEARCH --set` sends it: through
            # the settings every trial starts from.
            found = [
                dataclasses.replace(s, base=apply_overrides([s.base], self.overrides)[0])
                for s in file.searches
            ]
        except ConfigError as e:
            self.error = str(e)
            return False
        self.file, self.error = file, ""
        self.experiments = experiments
        self.searches = found
        return True

    def experiment(self, name: str) -> Experiment | None:
        """The loaded experiment called `name`, or None when the file has none by that name."""
        return next((e for e in self.experiments if e.name == name), None)

    def apart_from_defaults(self, exp: Experiment) -> dict[str, Any]:
        """The settings this experiment sets differently from [defaults] (overrides applied)."""
        if self.file is None:
            return {}
        base = dataclasses.asdict(apply_overrides([self.file.defaults], self.overrides)[0])
        return {k: v for k, v in exp.settings().items() if k in base and base[k] != v}

    # -- searches ------------------------------------------------------------------------

    def search(self, name: str) -> Search[Experiment] | None:
        """The loaded [[search]] called `name`, or None."""
        return next((s for s in self.searches if s.name == name), None)

    def search_of(self, name: str) -> Search[Experiment] | None:
        """The search whose trial run `name` is (`<search>.t<N>`), or None."""
        return next((s for s in self.searches if number(s.name, name) is not None), None)

    def trial_rows(self, name: str, now: float | None = None) -> list[TrialRow]:
        """Search `name`'s trials so far, by number, the best marked: each one's sampled
        values, metric and run (this session's live run while it trains, else the store's)."""
        search = self.search(name)
        if search is None:
            return []
        live = {s.run_dir: s for s in list(self.runs.values()) if s.run_dir and not s.ended}
        rows = []
        for record in self.trial_runs.of(name, now):
            run = live.get(str(record.path), record)
            history = run.history if isinstance(run, RunState) else self.stored_history(record)
            used = self.run_config(record)
            values = {p.key: getattr(used, p.key) for p in search.space} if used else {}
            metric = searches.final_metric(history, search.metric)
            rows.append(TrialRow(record.name, number(name, record.name) or 0, values, metric, run))
        return mark_best(search, rows)

    def submit_search(self, name: str) -> tuple[bool, str]:
        """Queue search `name` for the store's scheduler, which owns its study (the same
        call as `cnntui --run NAME --detach`): whether it was queued, and what happened."""
        from ..runs.search import queue  # Optuna loads with the first search run, not before

        search = self.search(name)
        if search is None:
            return False, f"no search {name!r}"
        found = searches.load(self.store, name)
        if found is not None and found[1] == "active":
            return False, f"search {name} is already running (its trials show under it)"
        try:
            done = queue(self.store, search)
        except StoreError as e:  # SearchChanged: what changed, in one line
            return False, str(e)
        if done is not None:
            return False, done
        return True, f"queued search {name}: {search.trials} trials, {search.parallel} at once"

    # -- runs ----------------------------------------------------------------------------

    def latest(self, name: str) -> RunState | None:
        """This session's newest run of `name`."""
        for state in reversed(self.runs.values()):
            if state.name == name:
                return state
        return None

    def busy(self, name: str) -> bool:
        """Whether `name` has a run (of any of its seeds) queued, starting or running in this
        session."""
        return any(
            s.name == name and (s.active or s.status == RunStatus.QUEUED)
            for s in self.runs.values()
        )

    def active(self) -> list[RunState]:
        """This session's runs that are starting or training now."""
        return [s for s in self.runs.values() if s.active]

    def queued(self) -> list[RunState]:
        """This session's runs waiting for a free slot."""
        return [s for s in self.runs.values() if s.status == RunStatus.QUEUED]

    def enqueue(
        self, exp: Experiment, resume_run: Any = None, checkpoint: Path | None = None
    ) -> RunState | str:
        """Queue a run of `exp` (one per seed of its `seeds`; the last is returned), or say
        why not (it is already queued or running)."""
        latest = self.latest(exp.name)
        if latest is not None and self.busy(exp.name):
            return f"{exp.name} is already {latest.status}"
        for run in exp.runs() if resume_run is None else [exp]:
            state = RunState(next(self._keys), run, resume_run, checkpoint)
            self.runs[state.key] = state
        return state

    def to_start(self) -> list[RunState]:
        """Queued thread-executor runs that may start now; they are marked 'starting'."""
        free = self.jobs - len([s for s in self.active() if s.follow is None])
        chosen = [s for s in self.queued() if s.follow is None][: max(0, free)]
        for state in chosen:
            state.status = RunStatus.STARTING
            state.version += 1
        return chosen

    def cancel(self, name: str) -> str:
        """Cancel every queued or running run of `name`, whoever started it (the store's
        cancel, which any process sees); a search: it asks no more trials, and its trials
        stop. Returns what happened, as a sentence."""
        if self.search(name) is not None:
            found = searches.load(self.store, name)
            if found is None or found[1] != "active":
                return f"search {name} is not running"
            stopped = lifecycle.cancel_search(self.store, name, found)
            return f"search {name} cancelled: no more trials, {stopped} stopping (kept so far)"
        told = []
        for state in self.runs.values():
            if state.name != name or state.ended:
                continue
            if state.follow is None and state.status == RunStatus.QUEUED:
                self._unqueue(state)  # not in the store yet: this session's own queue
                told.append(f"{name} removed from the queue")
            elif state.follow is None:
                state.cancel.set()  # a thread of this process: quicker than the cancel file
        try:
            lines = lifecycle.cancel(self.store, name)
        except StoreError:
            lines = []
        if any("cancelling" in line for line in lines) or any(
            s.name == name and s.follow is None and s.active for s in self.runs.values()
        ):
            return f"cancelling {name} (its history so far is kept)"
        if lines or told:
            return f"{name} removed from the queue"
        return f"{name} is not running"

    def cancel_all(self) -> list[RunState]:
        """Cancel every queued and active run of this process's threads (they end with it);
        returns the active ones still to stop. Runs in worker processes go on."""
        for state in self.queued():
            if state.follow is None:
                self._unqueue(state)
        active = [s for s in self.active() if s.follow is None]
        for state in active:
            state.cancel.set()
        return active

    def own(self) -> list[RunState]:
        """This session's queued and active runs (threads and worker processes)."""
        return [s for s in self.runs.values() if not s.remote and not s.ended]

    def cancel_processes(self) -> list[Path]:
        """Cancel this session's runs in worker processes; the run directories to wait for."""
        paths = []
        for state in self.own():
            if state.follow is None or not state.run_dir:
                continue
            with contextlib.suppress(StoreError):
                lifecycle.cancel(self.store, Path(state.run_dir).name)
            paths.append(Path(state.run_dir))
        return paths

    # -- runs in worker processes, followed through the store ----------------------------

    def executor_of(self, exp: Experiment) -> str:
        """Where `exp`'s runs train: its own executor, or the session's when it says auto."""
        return exp.executor if exp.executor in ("thread", "process") else self.executor

    def follow(self, record: RunRecord, experiment: Experiment, remote: bool = False) -> RunState:
        """A RunState fed from `record`'s files from now on (see `poll_followed`)."""
        state = RunState(next(self._keys), experiment)
        state.run_dir, state.run_id, state.remote = str(record.path), record.run_id, remote
        state.follow = lifecycle.RunEvents(record.path)
        if record.status == RunStatus.RUNNING:
            state.status = RunStatus.STARTING  # its progress comes with the first poll
        self._stamps.pop(record.path, None)
        self.runs[state.key] = state
        return state

    def submit(self, exp: Experiment) -> RunState | str:
        """Queue a run of `exp` (one per seed of its `seeds`) in the store for worker
        processes; the last run's state, or why not."""
        latest = self.latest(exp.name)
        if latest is not None and self.busy(exp.name):
            return f"{exp.name} is already {latest.status}"
        try:
            records = detached_for([exp]).queue([Job(exp)], self.store, self.jobs)
        except (StoreError, ValueError) as e:
            return str(e)
        if not records:
            return f"{exp.name}: no run could be queued"
        runs: dict[int | None, Experiment] = {r.seed: r for r in exp.runs()}
        states = [self.follow(rec, runs.get(rec.summary.seed, exp)) for rec in records]
        return states[-1]

    def submit_resume(self, record: RunRecord) -> RunState | str:
        """Queue `record` (unfinished) to resume in a worker process; or say why not."""
        try:
            run, checkpoint = self.store.resume(record, self.overrides)  # checked, locked
            job = Job(run.experiment, run, checkpoint)
            (queued,) = detached_for([run.experiment]).queue([job], self.store, self.jobs)
            exp = queued.experiment()
        except (StoreError, ValueError) as e:
            return str(e)
        return self.follow(queued, exp)

    def poll_followed(self) -> list[RunState]:
        """Feed each followed run not yet ended what its files say now (called from the
        follower thread); the runs whose status or epochs changed."""
        from ..core.events import BatchLosses

        changed = []
        for state in list(self.runs.values()):
            if state.follow is None or state.ended:
                continue
            events = state.follow.poll()
            record = getattr(state.follow, "record", None)
            if record is not None:
                state.gpu = record.summary.gpu
            for event in events:
                state.feed(event)
            if (
                state.status == RunStatus.QUEUED
                and record is not None
                and record.status == RunStatus.RUNNING
            ):
                state.starting()  # its worker is up, its first batch not yet trained
                changed.append(state)
            if state.follow.ended and record is not None and record.status == RunStatus.INTERRUPTED:
                state.interrupted()
            if any(not isinstance(e, BatchLosses) for e in events):
                changed.append(state)
        return changed

    def scan_store(self) -> list[RunRecord]:
        """Runs queued or running in the store that nobody here follows yet (another TUI,
        --detach, a plain --run elsewhere): directories are listed, and a summary is read
        only when it is new or changed (a resume reuses its directory). From a thread."""
        known = {s.run_dir for s in list(self.runs.values()) if s.run_dir and not s.ended}
        found = []
        for run_dir in self.store.root.glob("*/*/"):  # <experiment>/<run>/
            try:
                stamp = (run_dir / "summary.json").stat().st_mtime
            except OSError:
                continue
            if self._stamps.get(run_dir) == stamp or str(run_dir) in known:
                continue
            self._stamps[run_dir] = stamp
            record = RunStore.read(run_dir)
            if record is None or record.status not in HELD:
                continue
            if record.summary.pid == os.getpid():
                continue  # one of this process's own threads
            found.append(record)
        return found

    @staticmethod
    def _unqueue(state: RunState) -> None:
        state.status, state.reason = RunStatus.CANCELLED, "removed from the queue"
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
        mine = {s.run_dir for s in self.runs.values() if not s.ended and s.run_dir}
        for record in reversed(self.store.runs(name)):
            if str(record.path) in mine:
                continue
            if record.status in UNFINISHED:
                return record
        return None

    # -- what to plot --------------------------------------------------------------------

    def seed_band(self, name: str, now: float | None = None) -> SeedBand | None:
        """Mean ± std per epoch over the seed runs `name`'s aggregates count (stats.seed_runs:
        the latest finished run of each seed, with the newest finished run's settings); None
        with fewer than two. The store is read again at most every BAND_REFRESH_SECONDS."""
        now = time.monotonic() if now is None else now
        cached = self._bands.get(name)
        if cached is not None and now - cached[0] < BAND_REFRESH_SECONDS:
            return cached[1]
        try:
            counted = stats.seed_runs(self.store.runs(name), lambda r: r.settings_key)
        except (OSError, StoreError):
            counted = []
        band = None
        if len(counted) > 1:
            band = SeedBand([self.stored_history(r) for r in counted])
        self._bands[name] = (now, band)
        return band

    def stored_history(self, record: RunRecord) -> History:
        """A stored run's history, cached until its file changes."""
        npz = record.path / "history.npz"
        try:
            stamp = npz.stat().st_mtime
        except OSError:
            return History()
        key = (str(npz), stamp)
        history = self._histories.get(key)
        if history is None:
            history = read_history(npz)  # truncated or corrupt: empty, and the app goes on
            self._histories = {k: v for k, v in self._histories.items() if k[0] != str(npz)}
            self._histories[key] = history
        return history
