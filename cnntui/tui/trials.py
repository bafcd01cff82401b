"""A `[[search]]` as the TUI shows it: one row per trial (its sampled values, its metric, its
run), the best so far marked, and the counts that say how far the search is.

The trials are runs named `<search>.t<N>` that the store's scheduler queues; they are read
from the store (at most once a second per search), because a pruned trial's run is written
`pruned` by the scheduler only after it stopped, which no follower's event says. No textual.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

from ..core.config import Experiment
from ..core.search_space import Search
from ..runs.records import ENDED, RunStatus
from ..runs.store import RunRecord, RunStore
from .state import RunState

READ_SECONDS = 1.0  # how often a search's trial runs are read from the store again
TRIAL = re.compile(r"\.t(\d+)")  # after the search's name: `lrs.t12` is trial 12


@dataclass(frozen=True)
class TrialRow:
    """One trial of a search as the list and the search's table show it."""

    name: str  # its run's name, `<search>.t<N>`
    number: int  # N
    values: dict[str, Any]  # the sampled settings, by key, in the search's order
    metric: float  # its best epoch's metric so far (see searches.final_metric); NaN before one
    run: RunState | RunRecord  # this session's live run when it trains, else the stored one
    best: bool = False  # the best finished trial so far

    @property
    def status(self) -> RunStatus:
        """How its run stands now."""
        return RunStatus(self.run.status)


@dataclass(frozen=True)
class Counts:
    """How far a search is: its trials done (ended, neither pruned nor cancelled), pruned,
    running, to go, and cancelled (stopped by their user)."""

    done: int
    pruned: int
    running: int
    to_go: int  # not yet ended: running ones and those not yet asked
    cancelled: int = 0

    @classmethod
    def of(cls, search: Search[Experiment], rows: list[TrialRow]) -> Counts:
        """The counts of `rows`, the search's trials so far."""
        pruned = sum(r.status is RunStatus.PRUNED for r in rows)
        cancelled = sum(r.status is RunStatus.CANCELLED for r in rows)
        ended = sum(r.status in ENDED for r in rows)
        to_go = max(0, search.trials - ended)
        return cls(ended - pruned - cancelled, pruned, len(rows) - ended, to_go, cancelled)


def number(search: str, run_name: str) -> int | None:
    """The trial number of run `run_name` in search `search`; None when it is no trial of it."""
    if not run_name.startswith(search):
        return None
    found = TRIAL.fullmatch(run_name, len(search))
    return int(found.group(1)) if found else None


def mark_best(search: Search[Experiment], rows: list[TrialRow]) -> list[TrialRow]:
    """`rows` with the best finished trial (highest val_acc, lowest val_loss) marked."""
    scored = [r for r in rows if r.status is RunStatus.FINISHED and math.isfinite(r.metric)]
    if not scored:
        return rows
    pick = max if search.maximise else min
    best = pick(scored, key=lambda r: r.metric).name
    return [TrialRow(**{**vars(r), "best": r.name == best}) for r in rows]


def by_metric(search: Search[Experiment], rows: list[TrialRow]) -> list[TrialRow]:
    """`rows` best first by the search's metric; trials without one last, by number."""
    sign = -1.0 if search.maximise else 1.0

    def key(r: TrialRow) -> tuple[bool, float, int]:
        missing = not math.isfinite(r.metric)
        return missing, 0.0 if missing else sign * r.metric, r.number

    return sorted(rows, key=key)


def metric_text(metric: str, value: float) -> str:
    """`81.0%` for val_acc, `0.4321` for val_loss, `-` before any epoch scored one."""
    if not math.isfinite(value):
        return "-"
    return f"{100 * value:.1f}%" if metric == "val_acc" else f"{value:.4g}"


class TrialRuns:
    """The latest run of each trial of each search, read from the store at most every
    READ_SECONDS (a search's trials are the run directories `<search>.t<N>`)."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._read: dict[str, tuple[float, list[RunRecord]]] = {}

    def of(self, search: str, now: float | None = None) -> list[RunRecord]:
        """Search `search`'s trial runs, by trial number."""
        now = time.monotonic() if now is None else now
        cached = self._read.get(search)
        if cached is not None and now - cached[0] < READ_SECONDS:
            return cached[1]
        records = []
        try:
            dirs = [d.name for d in self.store.root.glob(f"{search}.t*") if d.is_dir()]
        except OSError:
            dirs = []
        for name in sorted((n for n in dirs if number(search, n) is not None), key=len):
            runs = self.store.runs(name)
            if runs:
                records.append(runs[-1])
        records.sort(key=lambda r: number(search, r.name) or 0)
        self._read[search] = (now, records)
        return records
