"""Live training curves drawn with plotext: batch loss with its moving average, epoch losses,
and accuracies, for one run or several overlaid, one colour each.

No chart can take the app down: values a scale cannot show (NaN, infinities, and on a log
scale zero or less) are left out, a chart with nothing to show says so in its place, and any
error while drawing is shown as one line where the chart would be.
"""

from __future__ import annotations

import math
import re
import textwrap
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import numpy as np
from rich.ansi import AnsiDecoder
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.strip import Strip
from textual.widgets import Static
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from ...core import text
from ...core.history import MA_WINDOW
from ...core.text import one_line
from ..state import Curve

# One colour a run, as 256-colour codes: plotext draws with them, the key below the charts
# names the runs in the same ones.
COLORS = (14, 11, 10, 13, 9, 12, 208, 15)
BATCH_COLOR = 8  # the single run's raw batch losses, behind its average
POINTS_PER_COLUMN = 2  # braille draws two dots a column: a min/max pair per column
FRAME_ROWS = 16  # charts at least this tall get a frame; shorter ones give it to the curves
MIN_SIZE = (12, 4)  # smaller than this, a chart says so instead of drawing
# Below this many rows for the charts, the three stand side by side, each as tall as the
# panel, instead of the two per-epoch charts sharing a column beside the batch chart.
STACK_ROWS = 20
# How the per-epoch charts draw each kind of curve, one colour a run.
MARKERS = {"train": "braille", "test": "dot", "val": "x"}
# What each per-epoch chart draws: (History attribute, kind of curve).
LOSS_SERIES = (("epoch_loss", "train"), ("test_loss", "test"), ("val_loss", "val"))
ACC_SERIES = (("train_acc", "train"), ("test_acc", "test"), ("val_acc", "val"))


_RUN = re.compile(r"((?:\x1b\[[0-9;]*m)*)([^\x1b]*)")  # escape codes, then the text they style
_RESET = re.compile(r"\x1b\[0?m")
_styles: dict[str, Style] = {}


def _style(codes: str) -> Style:
    """The Rich style of a run of SGR codes, decoded by Rich once per distinct run."""
    style = _styles.get(codes)
    if style is None:
        spans = AnsiDecoder().decode_line(codes + " ").spans
        found = spans[0].style if spans else Style.null()
        style = Style.parse(found) if isinstance(found, str) else found
        _styles[codes] = style
    return style


def ansi_strips(ansi: str, width: int) -> list[Strip]:
    """plotext's ANSI text as one Strip a line, `width` cells each.

    plotext styles every run of cells afresh after a reset, so a chart has a handful of
    distinct code runs; looking their styles up beats Rich's general decoder (`Text.from_ansi`
    then Textual's own conversion to strips) several times over, on every live redraw.
    """
    strips = []
    for line in ansi.removesuffix("\n").split("\n"):
        segments = []
        active = ""
        for codes, chunk in _RUN.findall(line):
            if codes:
                resets = list(_RESET.finditer(codes))
                active = codes[resets[-1].end() :] if resets else active + codes
            if chunk:
                segments.append(Segment(chunk, _style(active)))
        strips.append(Strip(segments).adjust_cell_length(width))
    return strips


def message_strips(
    title: str, message: str, width: int, height: int, style: str = "dim"
) -> list[Strip]:
    """A chart's place with its title on top and `message` in the middle, wrapped to fit."""
    lines = [""] * max(height, 0)
    if not lines or width <= 0:
        return [Strip.blank(max(width, 0)) for _ in lines]
    body = textwrap.wrap(message, max(8, width - 2)) or [""]
    top = max(1, (height - len(body)) // 2)
    for i, line in enumerate(body[: max(0, height - top)]):
        lines[top + i] = line
    strips = []
    for i, line in enumerate(lines):
        if i == 0:
            cell = Segment(text.pad(title, width).rstrip().center(width)[:width] if title else "")
        elif line:
            fitted = text.pad(line, width).rstrip()
            left = max(0, (width - text.width(fitted)) // 2)
            cell = Segment(" " * left + fitted, Style.parse(style))
        else:
            cell = Segment("")
        strips.append(Strip([cell]).adjust_cell_length(width))
    return strips


def clean(
    x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float], log: bool
) -> tuple[list[float], list[float]]:
    """The points a scale can show: finite ones, and on a log scale only positive ones."""
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    n = min(len(xs), len(ys))
    xs, ys = xs[:n], ys[:n]
    keep = np.isfinite(xs) & np.isfinite(ys)
    if log:
        keep &= ys > 0
    return xs[keep].tolist(), ys[keep].tolist()


_STEPS = sorted({m * 10**k for k in range(16) for m in (1, 2, 5)} | {25 * 10**k for k in range(15)})


def int_ticks(lo: float, hi: float, room: int) -> list[int]:
    """Whole-number ticks from about `lo` to `hi`, a round step apart, at most `room` of them
    (a batch or an epoch index is never 374.8)."""
    first, last = math.ceil(lo), math.floor(hi)
    if last <= first:
        return [first] if first == last else [round(lo)]
    raw = (last - first) / (max(2, room) - 1)
    step = next(s for s in _STEPS if s >= raw)
    start = math.ceil(first / step) * step
    ticks = list(range(start, last + 1, step))
    return ticks or [first]


def _set_int_xticks(plt: Plot, xs: list[float], width: int) -> None:
    if not xs:
        return
    lo, hi = min(xs), max(xs)
    label = max(len(str(int(lo))), len(str(int(hi))))
    ticks = int_ticks(lo, hi, (width - 8) // (label + 2))
    at: list[float] = [*ticks]  # plotext's stub asks for floats; whole numbers are floats too
    plt.xticks(at, [str(t) for t in ticks])


Draw = Callable[[Plot, int], bool]  # draws at a chart width; False when there is nothing to draw
CacheKey = tuple[Size, str, Hashable]  # a chart's size, theme and data: what its strips show


class Chart(PlotextPlot):
    """A PlotextPlot drawn through Textual's line API from strips built once per change.

    A plotext build costs milliseconds per hundred points, and turning its ANSI text into
    something Textual can paint as much again; Textual repaints a widget more often than its
    data changes (a resize, a screen on top, a neighbour's update). So the strips are kept,
    together with those of the last few data sets: moving the cursor back to an experiment
    whose per-epoch curves have not changed shows them without a rebuild.
    """

    KEEP = 8  # data sets whose strips are kept

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._draw: Draw = lambda plt, width: False
        self._titles: tuple[str, ...] = ("",)
        self._empty = ""
        self._data: Hashable = None
        self._version = 0
        self._cache_key: CacheKey | None = None
        self._strips: list[Strip] = []
        self._kept: OrderedDict[CacheKey, list[Strip]] = OrderedDict()
        self.build_seconds = 0.0  # what the last plotext build cost
        self.painted = 0  # the draw() call whose plot was last painted
        self.builds = 0  # plotext builds so far: a repaint of kept strips is not one
        self.error = ""  # why the last build failed, if it did

    def draw(
        self, titles: tuple[str, ...], fn: Draw, data: Hashable, empty: str = "no data yet"
    ) -> None:
        """Replace the plot with what `fn(plt, width)` draws under the first of `titles` that
        fits (longest first: plotext leaves out a title wider than the chart), unless `data`
        (a cheap summary of what `fn` plots, naming the runs it comes from) is unchanged; the
        plot is built at the next repaint. `empty` is said in its place when `fn` finds
        nothing to draw."""
        data = (titles, empty, data)
        if data == self._data:
            return
        self._draw, self._titles, self._empty, self._data = fn, titles, empty, data
        self._version += 1
        self.refresh()

    def title(self, width: int) -> str:
        """The longest of the titles that fits `width` (beside the y axis labels)."""
        fits = [t for t in self._titles if text.width(t) <= width - 6]
        return fits[0] if fits else self._titles[-1][: max(0, width - 6)]

    def _build(self) -> list[Strip]:
        width, height = self.size
        self.error = ""
        title = ""
        try:
            title = self.title(width)
            if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
                return message_strips(title, "too small to draw", width, height)
            plt = self.plt
            plt.clear_figure()
            if not self._draw(plt, width):
                return message_strips(title, self._empty, width, height)
            plt.title(title)
            if height < FRAME_ROWS:
                plt.frame(False)  # two more rows for the curves
            plt.plotsize(width, height)
            plt.theme(self._get_plotext_theme_name(self.app.theme))
            return ansi_strips(plt.build(), width)
        except Exception as e:  # a chart must never take the app down
            self.error = one_line(e)
            return message_strips(title, f"cannot draw: {self.error}", width, height, "red")

    def render_line(self, y: int) -> Strip:
        """Row `y` of the chart, from strips built once per size, theme and data set."""
        key = (self.size, self.app.theme, self._data)
        if key != self._cache_key:
            t0 = time.perf_counter()
            strips = self._kept.pop(key, None)
            if strips is None:
                strips = self._build()
                self.builds += 1
                self.build_seconds = time.perf_counter() - t0
            self._kept[key] = strips
            while len(self._kept) > self.KEEP:
                self._kept.popitem(last=False)
            self._strips, self._cache_key = strips, key
        self.painted = self._version
        if 0 <= y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.size.width)


def batch_draw(curves: list[Curve], log: bool) -> Draw:
    """What the batch-loss chart draws: each run's moving average (and a lone run's batches)."""

    def fn(plt: Plot, width: int) -> bool:
        single = len(curves) == 1
        series = []
        for i, c in enumerate(curves):
            if single:
                # Points, not a line: the min/max pairs are dense enough to read as a band,
                # and a scatter builds in less than half the time of an interpolated line.
                series.append((True, *clean(c.batch_x, c.batch_y, log), BATCH_COLOR))
            series.append((False, *clean(c.ma_x, c.ma_y, log), COLORS[i % len(COLORS)]))
        series = [s for s in series if s[1]]
        if not series:
            return False
        if log:
            plt.yscale("log")
        for scatter, xs, ys, color in series:
            if scatter:
                plt.scatter(xs, ys, color=color, marker="braille")
            else:
                plt.plot(xs, ys, color=color, marker="braille")
        _set_int_xticks(plt, [x for s in series for x in (s[1][0], s[1][-1])], width)
        return True

    return fn


def epoch_draw(
    curves: list[Curve], series: tuple[tuple[str, str], ...], scale: float, log: bool
) -> Draw:
    """What a per-epoch chart draws: each `series` (attribute, kind) of each run, scaled, with
    a bar for a seed band's mean ± std."""

    def fn(plt: Plot, width: int) -> bool:
        lines = []
        bars = []
        for i, c in enumerate(curves):
            color = COLORS[i % len(COLORS)]
            for attr, kind in series:
                values = getattr(c, attr)
                xs, ys = clean(range(1, len(values) + 1), [scale * v for v in values], log)
                if ys:
                    # The train curve is a line, test dots, validation crosses (the key says so).
                    lines.append((xs, ys, color, MARKERS[kind]))
                if c.band is not None and attr in c.band.series:
                    bar = band_bars(*c.band.series[attr], scale, log)
                    if bar[0]:
                        bars.append((*bar, color))
        if not lines and not bars:
            return False
        if log:
            plt.yscale("log")
        for xs, ys, color, marker in lines:
            plt.plot(xs, ys, color=color, marker=marker)
        for epochs, means, err, color in bars:  # mean ± std over seeds: a bar at each epoch
            plt.error(epochs, means, yerr=err, color=color)
        ends = [x for xs, *_ in lines for x in (xs[0], xs[-1])]
        ends += [x for xs, *_ in bars for x in (xs[0], xs[-1])]
        _set_int_xticks(plt, ends, width)
        return True

    return fn


def band_bars(
    mean: list[float], std: list[float], scale: float, log: bool
) -> tuple[list[int], list[float], list[float]]:
    """Epochs, means and stds (scaled) of a seed band that a chart can draw: finite, and on a
    log scale with the whole bar above 0."""
    out: tuple[list[int], list[float], list[float]] = ([], [], [])
    for epoch, (m, sd) in enumerate(zip(mean, std, strict=True), start=1):
        if math.isfinite(m) and math.isfinite(sd) and not (log and m - sd <= 0):
            out[0].append(epoch)
            out[1].append(scale * m)
            out[2].append(scale * sd)
    return out


def short_number(v: float) -> str:
    """A learning rate in few characters, two significant digits: 0.01, 0.001, 2.4e-4."""
    plain = f"{v:.2g}"
    if "e" not in plain and (v == 0 or abs(v) >= 1e-3):
        return plain
    mantissa, _, exponent = f"{v:.1e}".partition("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def lr_span(lr: list[float]) -> str:
    """How a run's learning rate moved over its epochs so far, `lr 0.01→1e-4` (with the peak
    between when it rose first, as warm-up and onecycle do); "" while it stayed the same."""
    rates = [v for v in lr if math.isfinite(v)]
    if not rates or max(rates) - min(rates) <= 1e-9 * max(abs(v) for v in rates):
        return ""
    first, last, peak = rates[0], rates[-1], max(rates)
    path = [first, peak, last] if peak > max(first, last) * (1 + 1e-9) else [first, last]
    return "lr " + "→".join(short_number(v) for v in path)


def key_pieces(
    curves: list[Curve], notes: dict[Hashable, str], absent: list[str], short: bool = False
) -> list[Text]:
    """The parts of the line under the charts, each kept whole where the width allows: each
    run's colour and name (the legend, kept out of the plots), how its learning rate moved
    when a schedule changed it, a note where the run needs one (it ran with previous
    settings; `short`: only what kind of note, as `previous settings`), the experiments with
    no run, and how the per-epoch charts tell train from test (and validation)."""
    pieces: list[Text] = []
    for i, c in enumerate(curves):
        piece = Text()
        piece.append("━━ ", Style(color=Color.from_ansi(COLORS[i % len(COLORS)]), bold=True))
        piece.append(c.label)
        span = lr_span(c.lr)
        if span:
            piece.append(f" {span}", "dim")
        if c.band is not None:
            piece.append(f" ┼ ±std of {c.band.n} seeds", "dim")
        note = notes.get(c.source)
        if note:
            piece.append(f" ({note.partition(': ')[0] if short else note})", "bold yellow")
        pieces.append(piece)
    if absent:
        pieces.append(Text(f"no run yet: {', '.join(absent)}", "dim"))
    if curves:
        val = any(math.isfinite(v) for c in curves for v in c.val_loss)
        pieces.append(Text("per epoch: ⠤ train • test" + (" x val" if val else ""), "dim"))
    return pieces


def pack(pieces: list[Text], width: int) -> list[Text]:
    """`pieces` on lines of at most `width` cells, two spaces apart: a piece goes whole onto
    a line where it fits, and one wider than a line breaks between its words, never in one."""
    lines: list[Text] = []
    for piece in pieces:
        parts = [piece] if piece.cell_len <= width else list(piece.split(" "))
        for n, part in enumerate(parts):
            gap = "  " if n == 0 else " "
            if lines and lines[-1].cell_len + len(gap) + part.cell_len <= width:
                lines[-1].append(gap)
                lines[-1].append_text(part)
            else:
                lines.append(part.copy())
    return lines


KEY_LINES = 3  # the key's most rows; beyond, notes shrink to their kind (`previous settings`)


class KeyLine(Static):
    """The key under the charts, wrapped to the panel's width between its parts (never inside
    a word), on at most KEY_LINES rows."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._pieces: tuple[list[Text], list[Text]] = ([], [])

    def show(self, curves: list[Curve], notes: dict[Hashable, str], absent: list[str]) -> None:
        """Say what the charts draw now."""
        self._pieces = (key_pieces(curves, notes, absent), key_pieces(curves, notes, absent, True))
        self.update(self._text(self.content_size.width))

    def _lines(self, width: int) -> list[Text]:
        if width <= 0:
            return [Text("  ").join(self._pieces[0])]
        lines = pack(self._pieces[0], width)
        return lines if len(lines) <= KEY_LINES else pack(self._pieces[1], width)

    def _text(self, width: int) -> Text:
        return Text("\n").join(self._lines(width)[:KEY_LINES])

    def on_resize(self) -> None:
        """Wrap again for the new width."""
        self.update(self._text(self.content_size.width))

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        """As many rows as the key takes at `width`, at most KEY_LINES."""
        return max(1, min(KEY_LINES, len(self._lines(width))))


class CurvesPanel(Vertical):
    """The batch-loss chart beside the per-epoch loss and accuracy charts, and a key line.

    Tall enough, the two per-epoch charts share a column beside the batch chart; shorter
    (80x24), all three stand side by side so that each keeps every row of the panel.
    """

    DEFAULT_CSS = """
    CurvesPanel { height: 1fr; }
    CurvesPanel #charts { height: 1fr; }
    CurvesPanel #chart-batch { width: 55%; }
    CurvesPanel #epoch-charts { width: 1fr; }
    CurvesPanel.-row #chart-batch { width: 40%; margin-right: 1; }
    CurvesPanel.-row #epoch-charts { layout: horizontal; }
    CurvesPanel.-row #chart-epoch { margin-right: 1; }
    CurvesPanel #curves-key { height: auto; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        """The batch chart, the two per-epoch charts and the key line below them."""
        with Horizontal(id="charts"):
            yield Chart(id="chart-batch")
            with Vertical(id="epoch-charts"):
                yield Chart(id="chart-epoch")
                yield Chart(id="chart-acc")
        yield KeyLine(id="curves-key")

    def on_resize(self) -> None:
        """Set the charts side by side when the panel is too short to stack two of them."""
        self.set_class(self.size.height - 1 < STACK_ROWS, "-row")

    @property
    def side_by_side(self) -> bool:
        """Whether the three charts stand in one row (a short panel, as at 80x24)."""
        return self.has_class("-row")

    def points(self) -> int:
        """How many points a curve needs to look right at the batch chart's width."""
        return max(64, POINTS_PER_COLUMN * self.query_one("#chart-batch").size.width)

    def build_seconds(self) -> float:
        """What drawing every chart cost last time: the redraw timer paces itself by it."""
        return sum(chart.build_seconds for chart in self.query(Chart))

    def show(
        self,
        curves: list[Curve],
        log: bool = False,
        notes: dict[Hashable, str] | None = None,
        absent: list[str] | None = None,
    ) -> None:
        """Draw `curves`; a chart whose data did not change is not rebuilt. `notes` go after
        a run's name in the key; `absent` names shown experiments that have no run yet."""
        self._show_batches(curves, log)
        self._show_epochs(curves, log)
        self.query_one("#curves-key", KeyLine).show(curves, notes or {}, absent or [])

    def _show_batches(self, curves: list[Curve], log: bool) -> None:
        """Draw the batch-loss chart, or say why it has nothing to draw."""
        batches = tuple(
            (c.label, c.source, len(c.batch_y), c.batch_x[-1] if len(c.batch_x) else -1)
            for c in curves
        )
        log_ = " (log)" if log else ""
        if not curves:
            empty = "no run yet: r runs the highlighted one"
        elif not any(len(c.batch_y) or len(c.ma_y) for c in curves):
            empty = "no batch trained yet"
        else:
            empty = _unshown(log)
        self.query_one("#chart-batch", Chart).draw(
            (
                f"batch loss{log_} · {MA_WINDOW}-batch average",
                f"batch loss{log_} · {MA_WINDOW}-avg",
                f"batch loss{log_}",
            ),
            batch_draw(curves, log),
            (batches, log),
            empty,
        )

    def _show_epochs(self, curves: list[Curve], log: bool) -> None:
        """Draw the epoch-loss and accuracy charts, or say why they have nothing to draw."""
        epochs = tuple(
            (c.label, c.source, len(c.epoch_loss), len(c.val_loss), c.band and c.band.key)
            for c in curves
        )
        epochs_done = any(c.epoch_loss or c.test_acc for c in curves)
        log_ = " (log)" if log else ""
        empty = "" if not curves else "no epoch ended yet" if not epochs_done else _unshown(log)
        self.query_one("#chart-epoch", Chart).draw(
            (f"epoch loss{log_}", f"loss{log_}"),
            epoch_draw(curves, LOSS_SERIES, 1.0, log),
            (epochs, log),
            empty,
        )
        self.query_one("#chart-acc", Chart).draw(
            ("accuracy %", "acc %"),
            epoch_draw(curves, ACC_SERIES, 100.0, False),
            epochs,
            "" if not curves else "no epoch ended yet" if not epochs_done else "no finite value",
        )


def _unshown(log: bool) -> str:
    """What a chart says when its values are ones its scale cannot show."""
    return "no loss above 0 to show on a log scale" if log else "no finite value to show"
