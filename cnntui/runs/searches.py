"""A `[[search]]` queued in the run store, without Optuna: its record, its trials' runs, and
how far it is.

`cnntui --run SEARCH` (attached or `--detach`) and the TUI write the search's record,
`<runs>/<search>/search.json`: the search as parsed (its space and every fixed setting) and its
state, `active` until the store's scheduler (runs/search.py's `SearchDriver`, inside
runs/daemon.py) has ended every trial and queued the confirmation runs, then `done`;
`cancelled` when its follower was interrupted. The scheduler reads the records, never the
experiments file, so a search goes on with no terminal and no file to read. Trials are runs
named `<search>.t<N>`, the confirmation runs `<search>.best`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from ..core.config import Experiment, check_value
from ..core.history import History
from ..core.search_space import Param, Search
from . import store as st
from .records import ENDED, HELD, RunStatus

STATES = ("active", "done", "cancelled")


@dataclass(frozen=True)
class Pruned:
    """A search's trial its pruner stopped (a follower's event, after the run's own)."""

    name: str
    reason: str  # `pruned at epoch N`


SPEC_KEYS = ("name", "group", "title", "trials", "parallel", "metric", "sampler", "pruner")


def to_json(search: Search[Experiment]) -> dict[str, Any]:
    """The search as its record holds it: its own keys, its space, its fixed settings."""
    out: dict[str, Any] = {k: getattr(search, k) for k in SPEC_KEYS}
    out["confirm_seeds"] = list(search.confirm_seeds)
    out["space"] = [dataclasses.asdict(p) | {"choices": list(p.choices)} for p in search.space]
    base = dataclasses.asdict(search.base)
    out["base"] = {k: list(v) if isinstance(v, tuple) else v for k, v in base.items()}
    return out


def from_json(data: dict[str, Any]) -> Search[Experiment]:
    """The search a record holds; ValueError (or KeyError, TypeError) when it is damaged.
    Every fixed setting goes through config's checks again."""
    base = {k: check_value(k, v) for k, v in data["base"].items() if v not in (None, [])}
    space = tuple(Param(**{**p, "choices": tuple(p.get("choices", ()))}) for p in data["space"])
    own = {k: data[k] for k in SPEC_KEYS}
    return Search(
        **own,
        confirm_seeds=tuple(int(s) for s in data["confirm_seeds"]),
        space=space,
        base=Experiment(**base),
    )


def final_metric(history: History, metric: str) -> float:
    """What a finished trial is told: its best epoch's metric (the highest val_acc or the
    lowest val_loss, the epoch selected on validation); NaN when no epoch scored one."""
    values = [float(v) for v in getattr(history, metric) if math.isfinite(v)]
    if not values:
        return math.nan
    return max(values) if metric == "val_acc" else min(values)


def save(store: st.RunStore, search: Search[Experiment], state: str) -> None:
    """Write the search's record in state `state` (one of STATES); StoreError (one line)."""
    data = {"state": state, "search": to_json(search)}
    encoded = json.dumps(data, indent=1).encode()
    st.write_file(store.search_file(search.name), lambda f: f.write(encoded))


def load(store: st.RunStore, name: str) -> tuple[Search[Experiment], str] | None:
    """Search `name`'s record: the search and its state; None when there is none (or it
    cannot be read: a damaged record is no search)."""
    try:
        path = store.search_file(name)
        data = json.loads(st.read_file(path, 1 << 20))
        state = data["state"]
        if state not in STATES:
            return None
        return from_json(data["search"]), state
    except (OSError, ValueError, KeyError, TypeError):
        return None


def queued(store: st.RunStore) -> list[tuple[Search[Experiment], str]]:
    """Every search recorded in the store, with its state, by name."""
    out = []
    for path in store.search_files():
        found = load(store, path.parent.name)
        if found is not None:
            out.append(found)
    return out


def active(store: st.RunStore) -> list[Search[Experiment]]:
    """The searches the store's scheduler drives now."""
    return [s for s, state in queued(store) if state == "active"]


def trial_runs(store: st.RunStore, name: str) -> list[st.RunRecord]:
    """The runs of search `name`'s trials (`<name>.t<N>`) and confirmation (`<name>.best`)."""
    return trial_runs_of(name, store.runs())


def trial_runs_of(name: str, records: list[st.RunRecord]) -> list[st.RunRecord]:
    """Those of `records` that are search `name`'s runs (see `trial_runs`)."""
    pattern = re.compile(rf"{re.escape(name)}\.(t\d+|best)")
    return [r for r in records if pattern.fullmatch(r.name)]


def progress(search: Search[Experiment], records: list[st.RunRecord]) -> str:
    """How far a search is, from its runs: `2 done, 1 cancelled, 1 pruned, 1 running, 0 to go;
    best so far lrs.t2 val_acc 81.0%` (the best by validation accuracy; `N cancelled`, the
    trials their user stopped, only when there are some)."""
    trials = [r for r in records if r.name != f"{search.name}.best"]
    pruned = sum(r.status is RunStatus.PRUNED for r in trials)
    cancelled = sum(r.status is RunStatus.CANCELLED for r in trials)
    done = sum(r.status in ENDED for r in trials) - pruned - cancelled
    running = sum(r.status in HELD for r in trials)
    line = (
        f"{done} done, {cancelled_text(cancelled, ', ')}{pruned} pruned, {running} running, "
        f"{max(0, search.trials - len(trials))} to go"
    )
    scored = [r for r in trials if r.status is RunStatus.FINISHED and r.summary.best_val_acc]
    best = max(scored, key=lambda r: r.summary.best_val_acc or 0.0, default=None)
    if best is not None:
        line += f"; best so far {best.name} val_acc {best.summary.best_val_acc or 0.0:.1%}"
    return line


def cancelled_text(cancelled: int, then: str) -> str:
    """`1 cancelled` and `then` (the separator before the next count), empty for none: a
    search's progress names its trials their user stopped only when there are some."""
    return f"{cancelled} cancelled{then}" if cancelled else ""


def status_lines(store: st.RunStore) -> list[str]:
    """`cnntui --status`: one line per search recorded in the store."""
    records = store.runs()
    return [
        f"search {s.name} ({state}, {s.trials} trials): "
        f"{progress(s, trial_runs_of(s.name, records))}"
        for s, state in queued(store)
    ]
