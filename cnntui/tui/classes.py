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

MIN_CELL = 4  # a count column: "9999" or "100%"
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


def short_names(names: tuple[str, ...] | list[str], cols: int) -> list[str] | None:
    """Each name in at most `cols` columns, the names still told apart: whole where it fits,
    else cut with '…' after as many letters as fit ("automobi…"), or, where the starts are
    alike, with the end kept after the '…' ("ankle…black", "ankle…brown"); None where no
    cut tells them apart."""
    ends = [0] * len(names)  # columns each name keeps after its '…'
    while True:
        pairs = zip(names, ends, strict=True)
        cut = [n if text.width(n) <= cols else _cut(n, cols, e) for n, e in pairs]
        alike = {c for c in cut if cut.count(c) > 1}
        if not alike:
            break
        ends = [e + (c in alike) for e, c in zip(ends, cut, strict=True)]
        if max(ends) > cols - 2:
            return None
    grown = [_whole_word_end(n, c, cols) for n, c in zip(names, cut, strict=True)]
    return grown if len(set(grown)) == len(grown) else cut


_APART = " -/_."  # what separates the words of a class name


def _cut(name: str, cols: int, end: int) -> str:
    """`name` in `cols` columns: its start, '…', and its last `end` columns."""
    tail = ""
    for ch in reversed(name):
        if text.width(ch + tail) > end:
            break
        tail = ch + tail
    start = text.pad(name, cols - text.width(tail)).rstrip()[:-1].rstrip(_APART)
    return start + "…" + tail


def _whole_word_end(name: str, cut: str, cols: int) -> str:
    """`cut` with its end grown back to the start of the word it is in ("ankle_b…k" becomes
    "ank…black"), where that leaves at least 3 columns before the '…'."""
    start, sep, tail = cut.partition("…")
    if not sep or not tail:
        return cut
    before = name[: len(name) - len(tail)]
    word = before[max(before.rfind(c) for c in _APART) + 1 :]
    if not word or text.width(start) - text.width(word) < 3:
        return cut
    return _cut(name, cols, text.width(word + tail))


def _shade(share: float) -> Style:
    """A cell's colours: the deeper blue, the larger its share of the row. The square root
    lets a 5-10% confusion stand out from the near-empty cells around it."""
    if share <= 0:
        return Style(dim=True)
    t = math.sqrt(share)
    rgb = tuple(round(a + (b - a) * t) for a, b in zip(_FAINT, _STRONG, strict=True))
    return Style(bgcolor=Color.from_rgb(*rgb), color="white" if share > 0.5 else None)


@dataclass(frozen=True)
class _Layout:
    """Where render puts things: the row labels in `name_cols` columns, each count in `cell`
    (a space before it), the predicted classes' heads on one line or, where they are wider
    than a cell, on two staggered lines, each head over its column and the one beside it."""

    rows: list[str]  # each true class's label
    heads: list[str]  # each predicted class's head
    name_cols: int
    cell: int
    n_cols: int  # the column of test images per class
    staggered: bool


def _layout(view: ClassView, width: int) -> _Layout:
    """Names first: the row labels take what the counts leave, up to the longest name; then
    the counts widen with what the labels leave, as far as the widest head needs on one
    line, or staggered on two (a head then spans its cell and the one beside it)."""
    k = len(view.confusion)
    counts = max(MIN_CELL, len(str(max((max(r) for r in view.confusion), default=0))))
    n_cols = max(1, len(str(max((sum(r) for r in view.confusion), default=0))))
    after = 3 + n_cols + 1 + 6  # " │ " n " " acc
    numbered = [_NUMBERED.match(n) for n in view.names]
    heads = [m.group(1) for m in numbered if m] if all(numbered) else list(view.names)
    longest = max(len(CORNER), *(text.width(n) for n in view.names))
    name_cols = max(6, min(longest, width - after - k * (counts + 1)))
    room = (width - after - name_cols) // k - 1
    widest = max(map(text.width, heads))  # on one line; staggered, half of it will do
    cell = max(counts, widest if widest <= room else min(room, widest // 2))
    staggered = any(text.width(h) > cell for h in heads)
    rows = short_names(view.names, name_cols)
    heads_cut = short_names(heads, min(2 * cell + 1, name_cols + cell)) if staggered else heads
    if rows is None or heads_cut is None:  # told apart by number, in the rows too
        labels = [f"{i} {n}" for i, n in enumerate(view.names)]
        rows = [text.pad(label, name_cols).rstrip() for label in labels]
        heads_cut, staggered = [str(i) for i in range(k)], False
    return _Layout(rows, heads_cut, name_cols, cell, n_cols, staggered)


def _placed(items: list[tuple[int, str, str]]) -> Text:
    """One line of `(column, words, style)` items, in order, spaces between them."""
    line, at = Text(), 0
    for col, words, style in items:
        line.append(" " * max(0, col - at))
        line.append(words, style)
        at = max(at, col) + text.width(words)
    return line


def _head_lines(layout: _Layout) -> list[Text]:
    """The corner, the predicted classes' heads (right-aligned over their columns) and the
    heads of the last two columns; the odd heads on the upper of two staggered lines."""
    edge = layout.name_cols + len(layout.heads) * (layout.cell + 1)
    tail = " │ " + text.pad("n", layout.n_cols, right=True) + "    acc"
    corner = text.pad(CORNER, layout.name_cols).rstrip()
    lines: list[list[tuple[int, str, str]]] = [[(0, corner, "dim")]]
    if layout.staggered:
        lines.append([])
    for j, head in enumerate(layout.heads):
        right = layout.name_cols + (j + 1) * (layout.cell + 1)
        line = lines[-1] if layout.staggered and j % 2 == 0 else lines[0]
        line.append((right - text.width(head), head, "bold"))
    if layout.staggered:
        lines[0].append((edge, " │", ""))
    lines[-1].append((edge, tail, "bold"))
    return [_placed(items) for items in lines]


def render(view: ClassView, percent: bool = False, width: int = 76) -> Text:
    """The matrix as lines of text, at most `width` columns when the classes allow it: one
    row per true class (its name, its counts across the predicted classes, how many test
    images it has, its accuracy), shaded by the share of the row; `percent` shows each
    cell as its share of the row instead of a count. Class names are whole where they fit
    and cut so that they stay apart where they do not (short_names)."""
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append(text.pad(f"{view.name} · {view.run}", width).rstrip() + "\n", "bold")
    if view.message:
        out.append(view.message)
        return out
    layout = _layout(view, width)
    epoch = f"epoch {view.epoch}" + (f" of {view.epochs}" if view.epochs > view.epoch else "")
    shown = "% of the row" if percent else "counts"
    line = f"test set, {epoch} · rows: true class · columns: predicted · {shown}"
    out.append(text.pad(line, width).rstrip() + "\n", "dim")
    for head_line in _head_lines(layout):
        out.append_text(head_line)
        out.append("\n")
    for i, row in enumerate(view.confusion):
        out.append_text(_row(layout, i, row, percent))
    out.append(
        f"overall {text.pct(view.overall)} of {view.total:,} test images"
        f" · p: {'counts' if percent else 'percentages'} · escape closes",
        "dim",
    )
    return out


def _row(layout: _Layout, i: int, row: list[int], percent: bool) -> Text:
    """True class `i`'s line: its label, its shaded counts (or shares), n and accuracy."""
    out = Text()
    out.append(text.pad(layout.rows[i], layout.name_cols), "bold")
    total = sum(row)
    for j, count in enumerate(row):
        share = count / total if total else 0.0
        style = _shade(share)
        if i == j:
            style += Style(bold=True)
        out.append(" ")
        shown = f"{100 * share:.0f}%" if percent else str(count)
        out.append(text.pad(shown, layout.cell, right=True), style)
    acc_text = f"{100 * row[i] / total:.1f}%" if total else "-"
    out.append(" │ " + text.pad(str(total), layout.n_cols, right=True))
    out.append(" " + text.pad(acc_text, 6, right=True) + "\n", "bold")
    return out
