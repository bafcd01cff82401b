"""The experiments table: one row per experiment, with its status kept up to date."""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from ...core import text
from ...core.config import Experiment
from ...core.search_space import Search
from ...runs import searches
from ...runs.records import RunStatus
from ...runs.store import RunRecord
from ..session import Session
from ..state import RunState
from ..tomledit import show_value
from ..trials import Counts, TrialRow, metric_text

# j and k move down and up, as in vi and in other Textual apps' lists (posting, harlequin).
VI_KEYS = (
    Binding("j", "cursor_down", "Down", show=False),
    Binding("k", "cursor_up", "Up", show=False),
)
RESUME_HINT = "R resumes"  # after a status whose run `R` continues from its checkpoint
STATUS_STYLE = {
    RunStatus.QUEUED: "yellow",
    RunStatus.STARTING: "yellow",
    RunStatus.RUNNING: "bold yellow",
    RunStatus.FINISHED: "green",
    RunStatus.FAILED: "bold red",
    RunStatus.DIVERGED: "bold red",
    RunStatus.CANCELLED: "magenta",
    RunStatus.INTERRUPTED: "bold magenta",
    RunStatus.PRUNED: "dim",  # a search's pruner stopped it: ended, not failed
}


def _value(v: Any) -> str:
    if isinstance(v, dict):  # model_args, as the file and the edit form write it
        return show_value(v)
    return f"{v:g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)


STATUS_WIDTH = 30  # a failure's full reason goes to a notification
# Short names for the settings column when the full ones do not fit.
SHORT = {
    "batch_size": "bs",
    "weight_decay": "wd",
    "momentum": "mom",
    "dropout": "drop",
    "optimizer": "opt",
    "train_size": "ntrain",
    "test_size": "ntest",
    "channels_last": "nhwc",
}
MIN_SETTINGS = 12  # columns the settings keep before the group column gives way
PROGRESS_SECONDS = 1.0  # a running experiment's progress and ETA are rewritten this often


def settings_text(apart: dict[str, Any], room: int) -> str:
    """The settings cell: `key=value` items, with the usual short names when the full ones do
    not fit in `room` columns, then as many whole items as fit and `…` (the detail line under
    the table has them all); never an item cut in two."""
    full = " ".join(f"{k}={_value(v)}" for k, v in apart.items()) or "-"
    if text.width(full) <= room:
        return full
    items = [f"{SHORT.get(k, k)}={_value(v)}" for k, v in apart.items()]
    if text.width(" ".join(items)) <= room:
        return " ".join(items)
    shown = ""
    for item in items:
        more = f"{shown} {item}".strip()
        if text.width(more) + 2 > room:  # room for " …" after it
            break
        shown = more
    return f"{shown} …".strip()


def detail_text(name: str, apart: dict[str, Any], status: str) -> str:
    """The line under the table: the highlighted experiment's settings apart from [defaults],
    by their full names, and its status when the cell had to cut it."""
    settings = " ".join(f"{k}={_value(v)}" for k, v in apart.items()) or "[defaults] only"
    out = f"{name}: {settings}"
    if text.width(status) > STATUS_WIDTH:
        out += f" · {status}"
    return out


def status_text(run: RunState | RunRecord | None, now: float | None = None) -> Text:
    """`idle`, `queued`, `running 45% ep 2/5 eta 0:32`, `finished 52.10%`, `failed: why`,
    `interrupted ep 2/5 · R resumes`... for this session's run or, before one, the stored one."""
    if run is None:
        return Text("idle", style="dim")
    if isinstance(run, RunRecord):
        return _stored_status(run)
    state = run
    style = STATUS_STYLE.get(state.status, "")
    match state.status:
        case RunStatus.RUNNING:
            eta = state.eta(now)
            left = f" eta {text.seconds(eta)}" if math.isfinite(eta) else ""
            epoch = min(state.epoch + 1, state.epochs)
            body = f"running {100 * state.progress():3.0f}% ep {epoch}/{state.epochs}{left}"
        case RunStatus.FINISHED:
            acc = state.history.test_acc[-1] if state.history.test_acc else None
            body = f"finished {text.pct(acc)}"
        case RunStatus.FAILED | RunStatus.DIVERGED:
            body = f"{state.status}: {state.reason}"
        case RunStatus.CANCELLED | RunStatus.INTERRUPTED if state.run_dir:
            body = f"{state.status} · {RESUME_HINT}"
        case RunStatus.STARTING if state.remote:
            body = "running elsewhere"  # another process's run, its progress not yet read
        case _:
            body = state.status
    return Text(text.pad(body, STATUS_WIDTH).rstrip(), style=style)


def _stored_status(record: RunRecord) -> Text:
    """A stored run's status as the store reads it now (a dead process's run: interrupted)."""
    status, s = record.status, record.summary
    done, epochs = s.epochs_done, s.epochs
    of = f" ep {done}/{epochs}" if done is not None and epochs is not None else ""
    match status:
        case RunStatus.FINISHED:
            body = f"finished {text.pct(s.final_test_acc)}"
        case RunStatus.FAILED | RunStatus.DIVERGED:
            body = f"{status}: {text.safe(s.reason or '?')}"
        case RunStatus.INTERRUPTED | RunStatus.CANCELLED:
            body = f"{status}{of} · {RESUME_HINT}"
            if text.width(body) > STATUS_WIDTH:  # the hint matters more than the epoch
                body = f"{status} · {RESUME_HINT}"
        case RunStatus.PRUNED:
            body = f"pruned at epoch {done}" if done is not None else "pruned"
        case RunStatus.RUNNING:
            body = f"running elsewhere{of}"  # another process is training it
        case _:
            body = text.safe(str(status))
    return Text(text.pad(body, STATUS_WIDTH).rstrip(), style=STATUS_STYLE.get(status, ""))


SEARCH_STYLE = "bold cyan"
BEST = "★"  # the best finished trial of a search so far


def search_status(search: Search[Experiment], rows: list[TrialRow]) -> Text:
    """A search row's status cell: `search 2 done 1 pruned 7 to go` (the trials its user
    cancelled are no more done than pruned: `search_best` counts them)."""
    c = Counts.of(search, rows)
    body = f"search {c.done} done {c.pruned} pruned {c.to_go} to go"
    return Text(text.pad(body, STATUS_WIDTH).rstrip(), style=SEARCH_STYLE)


def search_best(search: Search[Experiment], rows: list[TrialRow]) -> str:
    """A search row's settings cell: the best trial so far and its metric, then
    `· 1 cancelled` when its user cancelled some (four counts do not fit the status cell)."""
    best = next((r for r in rows if r.best), None)
    cancelled = searches.cancelled_text(Counts.of(search, rows).cancelled, "")
    note = f" · {cancelled}" if cancelled else ""
    if best is None:
        return ("no trial finished yet" + note) if rows else "r runs it"
    metric = metric_text(search.metric, best.metric)
    return f"best {BEST} t{best.number} {search.metric} {metric}{note}"


def trial_label(row: TrialRow) -> str:
    """A trial row's name cell: ` └ t3`, with a ★ for the best so far."""
    return f" └ t{row.number}" + (f" {BEST}" if row.best else "")


def trial_settings(search: Search[Experiment], row: TrialRow, room: int) -> str:
    """A trial row's settings cell: its sampled values, then its metric (S shows them all)."""
    metric = metric_text(search.metric, row.metric)
    return settings_text({**row.values, search.metric: metric}, room)


class ExperimentsTable(DataTable[str | Text]):
    """Experiments by name; marked ones (for overlaid curves) carry a ●."""

    DEFAULT_CSS = """
    ExperimentsTable { height: auto; max-height: 50%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        # The table has one column to be in: home and end go to the first and last row.
        Binding("home", "scroll_top", "First", show=False),
        Binding("end", "scroll_bottom", "Last", show=False),
        *VI_KEYS,
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._status: dict[str, str] = {}
        self._status_at: dict[str, float] = {}  # monotonic time each status cell was written
        self._session: Session | None = None
        self._marks: set[str] = set()
        self._trials: dict[str, list[str]] = {}  # search -> its trials' rows, in order
        self._cells: dict[str, dict[str, str | Text]] = {}  # search and trial rows' cells
        self._room = MIN_SETTINGS

    def _add_columns(self, group: bool) -> None:
        self.clear(columns=True)
        self.add_column(" ", key="mark", width=1)
        self.add_column("name", key="name")
        self.add_column("title", key="title")
        if group:
            self.add_column("group", key="group")
        self.add_column("status", key="status", width=STATUS_WIDTH)
        self.add_column("settings", key="settings")

    @property
    def highlighted(self) -> str | None:
        """The name of the experiment under the cursor."""
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return key.value

    def _layout(self, session: Session) -> tuple[bool, int]:
        """Whether the group column fits, and the columns left for the settings, so that
        the table needs no sideways scrolling: in a narrow terminal (80 columns) the group
        column gives way to the settings, which say more about an experiment."""
        exps, found = session.experiments, session.searches
        used = 3 + 2 + STATUS_WIDTH + 2  # mark, status (each cell has one space either side)
        names = [e.name for e in exps] + [s.name for s in found]
        names += [f" └ t{s.trials - 1} {BEST}" for s in found]
        for values in (
            names,
            [e.display_title for e in exps] + [s.title or "search" for s in found],
        ):
            used += 2 + max([text.width(v) for v in values] + [5])
        groups = [e.group or "-" for e in exps] + [s.group for s in found]
        group = 2 + max([text.width(g) for g in groups] + [5])
        rows = len(exps) + sum(1 + len(t) for t in self._trials.values())
        scrollbar = 2 if rows + 1 > self.size.height > 0 else 0
        room = (self.size.width or self.app.size.width) - used - scrollbar
        if room - group >= MIN_SETTINGS:
            return True, room - group
        return False, max(MIN_SETTINGS // 2, room)

    def on_resize(self) -> None:
        """Lay the rows out again for the new width (the settings column fits it)."""
        if self._session is not None:
            self.show(self._session, self._marks)

    def show(self, session: Session, marks: set[str]) -> None:
        """Rebuild every row (after a load or reload), keeping the cursor on its experiment."""
        self._session, self._marks = session, marks
        keep = self.highlighted
        group, room = self._layout(session)
        self._add_columns(group)  # afresh: a column never narrows by itself
        self._status.clear()
        for exp in session.experiments:
            settings = settings_text(session.apart_from_defaults(exp), room)
            status = status_text(session.shown_run(exp.name))
            self._status[exp.name] = status.plain
            cells = ["●" if exp.name in marks else " ", exp.name, exp.display_title]
            if group:
                cells.append(exp.group or "-")
            self.add_row(*cells, status, settings, key=exp.name)
        self._room, self._cells, self._trials = room, {}, {}
        for search in session.searches:
            self._add_search(search, session.trial_rows(search.name), group)
        if keep is not None and (keep in self._status or keep in self._cells):
            self.move_cursor(row=self.get_row_index(keep))

    def _search_cells(
        self, search: Search[Experiment], rows: list[TrialRow]
    ) -> dict[str, dict[str, str | Text]]:
        """The cells of a search's row and of its trials' rows that change, by row key."""
        out: dict[str, dict[str, str | Text]] = {
            search.name: {
                "status": search_status(search, rows),
                "settings": search_best(search, rows),
            }
        }
        for row in rows:
            out[row.name] = {
                "name": trial_label(row),
                "status": status_text(row.run),
                "settings": trial_settings(search, row, self._room),
            }
        return out

    def _add_search(self, search: Search[Experiment], rows: list[TrialRow], group: bool) -> None:
        """A search's row, then one row per trial under it."""
        cells = self._search_cells(search, rows)
        self._cells.update(cells)
        self._trials[search.name] = [r.name for r in rows]
        extra = [search.group] if group else []
        mark = "●" if search.name in self._marks else " "
        name, title = Text(search.name, style=SEARCH_STYLE), search.title or "search"
        self.add_row(mark, name, title, *extra, *cells[search.name].values(), key=search.name)
        for trial in rows:
            mark = "●" if trial.name in self._marks else " "
            c = cells[trial.name]
            self.add_row(mark, c["name"], "", *extra, c["status"], c["settings"], key=trial.name)

    def _update_searches(self, session: Session, now: float) -> None:
        """Rewrite the search and trial cells that changed; every row again when a trial
        appeared (it gets a row of its own)."""
        for search in session.searches:
            rows = session.trial_rows(search.name, now)
            if [r.name for r in rows] != self._trials.get(search.name):
                self.show(session, self._marks)
                return
            for key, cells in self._search_cells(search, rows).items():
                for column, cell in cells.items():
                    if str(cell) != str(self._cells[key][column]):
                        self._cells[key][column] = cell
                        self.update_cell(key, column, cell)

    def update_statuses(self, session: Session, now: float | None = None) -> None:
        """Rewrite the status cells whose text changed: at once when the status itself did
        (running -> finished), progress and ETA at most once a second. Repainting a row costs
        the UI thread about a millisecond a cell, taken from the training threads."""
        now = time.monotonic() if now is None else now
        for name, shown in self._status.items():
            status = status_text(session.shown_run(name), now)
            if status.plain == shown:
                continue
            same_kind = status.plain.split(" ", 1)[0] == shown.split(" ", 1)[0]
            if same_kind and now - self._status_at.get(name, -math.inf) < PROGRESS_SECONDS:
                continue
            self._status[name] = status.plain
            self._status_at[name] = now
            self.update_cell(name, "status", status)
        self._update_searches(session, now)

    def set_mark(self, name: str, marked: bool) -> None:
        """Show or clear the ● of experiment `name`."""
        self.update_cell(name, "mark", "●" if marked else " ")
