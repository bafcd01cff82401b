"""What the screen hears from runs: epochs ended, runs found in the store, runs ended.

A thread run's RunState is fed by its own worker (runs.py); the follower thread here feeds
every other run of the store (this session's worker processes, and whatever another TUI,
--detach or a plain --run started) from its files, polling the runs not yet ended every
FOLLOW_SECONDS and listing the store for new ones once a second. Both post a `RunUpdated`
note when an epoch ends or the status changes (collapsing when stale). A thread run's end is
handled when its worker stops, so a crash in the worker itself is reported the same way as a
failed run and never closes the app.
"""

from __future__ import annotations

import time
from collections import Counter

from ....core import text
from ....runs.records import RunStatus
from ....runs.store import RunSummary, StoreError
from ...messages import RunsFound, RunUpdated
from ...state import RunState
from .base import ERROR_SECONDS, WARNING_SECONDS, ScreenPart, stored_row

FOLLOW_SECONDS = 0.3  # how often the follower thread reads the files of the runs it follows
SCAN_SECONDS = 1.0  # how often it lists the store for runs nobody here follows yet


class RunEventsPart(ScreenPart):
    """Keeps the tables, curves and notifications up with every run's news."""

    def _init_run_events(self) -> None:
        self._ended: list[tuple[str, str, RunSummary]] = []  # since the queue last ran dry
        self._seen: dict[int, tuple[int, int]] = {}  # run key -> (version, epochs) in results
        self._told_ended: set[int] = set()  # followed runs whose end has been handled

    def _follow_loop(self) -> None:
        """The follower thread: feed the followed runs, find new ones; never the UI thread."""
        next_scan = 0.0
        while self._looping():
            for state in self.session.poll_followed():
                self.post_message(RunUpdated(state.key))
            now = time.monotonic()
            if now >= next_scan:
                next_scan = now + SCAN_SECONDS
                found = self.session.scan_store()
                if found:
                    self.post_message(RunsFound(found))
            self.stopping.wait(FOLLOW_SECONDS)

    def on_runs_found(self, message: RunsFound) -> None:
        """Follow the runs the follower found (their experiment as they stored it)."""
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

    def on_run_updated(self, message: RunUpdated) -> None:
        """A run ended an epoch or changed status: its results row; a followed run's end."""
        state = self.session.runs.get(message.key)
        if state is None:
            return
        epochs = state.history.epochs_done
        if self._seen.get(state.key, (None, -1))[1] != epochs and state.run_dir:
            self._seen[state.key] = (state.version, epochs)
            self.results.put(state.run_dir, state.summary())
        if state.follow is not None and state.ended and state.key not in self._told_ended:
            self._told_ended.add(state.key)
            self.run_ended(state)

    def run_ended(self, state: RunState) -> None:
        """A run ended: its results row as stored, its status and curves, and (for this
        session's runs) what the user is told."""
        summary = self._final_summary(state)
        self.results.put(state.run_dir or f"session-{state.key}", summary)
        if not state.remote:  # someone else's run: its row and status say how it ended
            self._tell_ended(state, summary)
        self.table.update_statuses(self.session)
        self.redraw_curves()

    def _final_summary(self, state: RunState) -> RunSummary:
        """The ended run's summary as its store says (and remembered), else as it ran here."""
        if state.run_dir:
            record = next(
                (r for r in self.session.store.runs(state.name) if str(r.path) == state.run_dir),
                None,
            )
            if record is not None:
                self.session.remember(record)
                return stored_row(record)
        return state.summary()

    def _tell_ended(self, state: RunState, summary: RunSummary) -> None:
        """One note when the queue runs dry, not one a run: the status cells say each ending.
        A failure's reason is longer than its cell, so it is said at once."""
        self._ended.append((state.name, state.status, summary))
        name = state.name
        match state.status:
            case RunStatus.DIVERGED:
                self.notify(
                    f"{name} diverged: {state.reason}", severity="warning", timeout=WARNING_SECONDS
                )
            case RunStatus.FAILED:
                self.notify(
                    f"{name} failed: {state.reason}", severity="error", timeout=ERROR_SECONDS
                )
        if not self.busy():
            self._say_all_ended()

    def _say_all_ended(self) -> None:
        """The queue ran dry: say how the runs since it last did ended."""
        ended, self._ended = self._ended, []
        if len(ended) == 1:
            name, status, summary = ended[0]
            if status == RunStatus.FINISHED:
                acc = text.pct(summary.final_test_acc)
                took = text.seconds(summary.total_seconds)
                self.notify(f"{name} finished: test accuracy {acc} in {took}")
            return
        counts = Counter(status for _, status, _ in ended)
        told = ", ".join(f"{n} {status}" for status, n in counts.items())
        self.notify(f"all {len(ended)} runs ended: {told} (v shows the results)")
