"""What the per-class view shows: the highlighted experiment's run, its last epoch's test-set
confusion matrix and each class's accuracy, laid out as terminal text that fits 80 columns.

`class_view` picks the run the curves show (this session's, else the latest stored one) and
says in one line why there is no matrix when there is none; `render` draws the matrix with
class names, counts (or each row's percentages) shaded by the share of the true class, and
a per-class accuracy column. No textual here: the screen around it is in screens/classes.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.color import Color
from rich.style import Style
from rich.text import Text

from ..core import text
from ..core.config import Experiment, class_names
from ..runs.records import RunStatus
from ..runs.store import RunFileError, read_history_arrays
from .state import RunState

NAME_COLS = 11  # the true-class column; longer names are cut with '…'
MIN_CELL = 4  # a count column: "9999", "100%", or a four-letter class abbreviation
CORNER = "true\\pred"  # above the class names, left of the predicted ones
_NUMBERED = re.compile(r"^class (\d+)$")
# Shading of a cell by the share of its true class: from a faint to a strong blue.
_FAINT, _STRONG = (32, 36, 44), (40, 116, 220)


@dataclass(frozen=True)
class ClassView:
    """One run's per-class results, or (`message`) why it has none to show."""

    name: str  # the experiment
    run: str  # which run: "run <id> · <status>", or "this session's run · queued"
    names: tuple[str, ...] = ()
    confusion: list[list[int]] = field(default_factory=list)
    epoch: int = 0  # the epoch whose evaluation the matrix counts (1-based)
    epochs: int = 0  # epochs the run was set to train
    message: str = ""  # one line, when there is no matrix

    def accuracy(self) -> list[float]:
        """Per true class, the share of its test images predicted right (NaN: none)."""
        return [row[i] / sum(row) if sum(row) else math.nan for i, row in enumerate(self.confusion)]

    @property
    def total(self) -> int:
        """How many test images the matrix counts."""
        return sum(map(sum, self.confusion))

    @property
    def overall(self) -> float:
        """The share of test images classified right (NaN when the matrix is empty)."""
        right = sum(self.confusion[i][i] for i in range(len(self.confusion)))
        return right / self.total if self.total else math.nan


def class_view(session: Any, name: str) -> ClassView | None:
    """The view of experiment `name`'s run in `session` (a tui Session); None: no run yet.

    The run is the one the curves show: this session's newest once it has started, else
    the latest stored one."""
    state = session.latest(name)
    if state is not None and state.status not in (RunStatus.QUEUED, RunStatus.STARTING):
        return _of_state(session, state)
    record = session.stored_latest(name)
    if record is not None:
        return _of_record(session, record)
    if state is not None:
        return ClassView(name, f"this session's run · {state.status}", message=_NO_EPOCH)
    return None


_NO_EPOCH = "no epoch has ended yet: the matrix appears when the first one does"
_NOT_KEPT = (
    "this run kept no confusion matrix (it trained before per-class results were recorded);"
    " run it again"
)


def _of_state(session: Any, state: RunState) -> ClassView:
    with state.lock:
        confusion = [list(row) for row in state.history.confusion]
        epoch = state.history.epochs_done
        status, run_id, epochs = state.status, state.run_id, state.epochs
        run_dir = state.run_dir
    if epoch and not confusion and run_dir:
        confusion = _confusion_on_disk(Path(run_dir) / "history.npz")
    run = f"run {run_id} · {status}" if run_id else f"this session's run · {status}"
    return _view(state.name, run, confusion, epoch, epochs, state.experiment)


_on_disk: dict[str, tuple[tuple[int, int], list[list[int]]]] = {}  # npz -> (stamp, matrix)


def _confusion_on_disk(npz: Path) -> list[list[int]]:
    """The matrix a run's history.npz holds ([] for none): a run followed through the run
    store gets its epochs without one. Read again only when the file changes."""
    try:
        info = npz.stat()
        stamp = (info.st_mtime_ns, info.st_size)
    except OSError:
        return []
    cached = _on_disk.get(str(npz))
    if cached is None or cached[0] != stamp:
        try:
            found = read_history_arrays(npz).get("confusion")
        except RunFileError:
            found = None
        matrix = [[int(v) for v in row] for row in found] if found is not None else []
        cached = _on_disk[str(npz)] = (stamp, matrix)
    return cached[1]


def _of_record(session: Any, record: Any) -> ClassView:
    history = session.stored_history(record)
    used = session.run_config(record)
    done = record.summary.epochs_done
    run = f"run {text.safe(record.run_id)} · {text.safe(record.status)}"
    if not history.epochs_done and record.status != RunStatus.RUNNING:
        unread = done is not None and done > 0
        return ClassView(
            record.name,
            run,
            message="its history.npz cannot be read" if unread else "it recorded no epoch",
        )
    epochs = used.epochs if used is not None else history.epochs_done
    recorded = record.summary.class_names
    return _view(record.name, run, history.confusion, history.epochs_done, epochs, used, recorded)


def _view(
    name: str,
    run: str,
    confusion: list[list[int]],
    epoch: int,
    epochs: int,
    used: Experiment | None,  # the settings it trained with (its dataset), when known
    recorded: tuple[str, ...] | None = None,
) -> ClassView:
    if not epoch:
        return ClassView(name, run, message=_NO_EPOCH)
    if not confusion:
        return ClassView(name, run, message=_NOT_KEPT)
    dataset, base_dir = (used.dataset, used.base_dir) if used is not None else ("", "")
    names = class_names(dataset, len(confusion), recorded, base_dir)
    return ClassView(name, run, names, [list(r) for r in confusion], epoch, epochs)


def abbreviations(names: tuple[str, ...] | list[str], cols: int) -> list[str]:
    """Column heads of at most `cols` characters that tell the classes apart: "class 3"
    is "3", "T-shirt/top" "T-sh", "automobile" "auto"; the class numbers where the cut names
    would clash."""
    numbered = [_NUMBERED.match(n) for n in names]
    if all(numbered):
        return [m.group(1)[:cols] for m in numbered if m]
    cut = [n[:cols].rstrip(" -/_.") or n[:cols] for n in names]
    if len(set(cut)) == len(cut):
        return cut
    return [str(i)[:cols] for i in range(len(names))]


def _shade(share: float) -> Style:
    """A cell's colours: the deeper blue, the larger its share of the row. The square root
    lets a 5-10% confusion stand out from the near-empty cells around it."""
    if share <= 0:
        return Style(dim=True)
    t = math.sqrt(share)
    rgb = tuple(round(a + (b - a) * t) for a, b in zip(_FAINT, _STRONG, strict=True))
    return Style(bgcolor=Color.from_rgb(*rgb), color="white" if share > 0.5 else None)


def render(view: ClassView, percent: bool = False, width: int = 76) -> Text:
    """The matrix as lines of text, at most `width` columns when the classes allow it: one
    row per true class (its name, its counts across the predicted classes, how many test
    images it has, its accuracy), shaded by the share of the row; `percent` shows each
    cell as its share of the row instead of a count."""
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(text.pad(f"{view.name} · {view.run}", width).rstrip() + "\n", "bold")
    if view.message:
        out.append(view.message)
        return out
    k = len(view.confusion)
    totals = [sum(row) for row in view.confusion]
    cell = max(MIN_CELL, len(str(max((max(r) for r in view.confusion), default=0))))
    n_cols = max(1, len(str(max(totals, default=0))))
    # name | k cells | n | acc: shrink the name column, not the numbers, to fit the width
    fixed = k * (cell + 1) + 3 + n_cols + 1 + 6
    longest = max(len(CORNER), *(text.width(n) for n in view.names))
    name_cols = max(6, min(NAME_COLS, width - fixed, longest))
    epoch = f"epoch {view.epoch}" + (f" of {view.epochs}" if view.epochs > view.epoch else "")
    shown = "% of the row" if percent else "counts"
    line = f"test set, {epoch} · rows: true class · columns: predicted · {shown}"
    out.append(text.pad(line, width).rstrip() + "\n", "dim")
    heads = abbreviations(view.names, cell)
    out.append(text.pad(CORNER, name_cols), "dim")
    for head in heads:
        out.append(" " + text.pad(head, cell, right=True), "bold")
    out.append(" │ " + text.pad("n", n_cols, right=True) + "    acc\n", "bold")
    for i, row in enumerate(view.confusion):
        out.append(text.pad(view.names[i], name_cols), "bold")
        for j, count in enumerate(row):
            share = count / totals[i] if totals[i] else 0.0
            shown_value = f"{100 * share:.0f}%" if percent else str(count)
            style = _shade(share)
            if i == j:
                style += Style(bold=True)
            out.append(" ")
            out.append(text.pad(shown_value, cell, right=True), style)
        acc = row[i] / totals[i] if totals[i] else math.nan
        acc_text = f"{100 * acc:.1f}%" if math.isfinite(acc) else "-"
        out.append(" │ " + text.pad(str(totals[i]), n_cols, right=True))
        out.append(" " + text.pad(acc_text, 6, right=True) + "\n", "bold")
    out.append(
        f"overall {text.pct(view.overall)} of {view.total:,} test images"
        f" · p: {'counts' if percent else 'percentages'} · escape closes",
        "dim",
    )
    return out
