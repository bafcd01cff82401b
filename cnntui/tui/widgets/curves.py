"""Live training curves drawn with plotext: batch loss with its moving average, epoch losses,
and accuracies, for one run or several overlaid, one colour each."""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from rich.ansi import AnsiDecoder
from rich.segment import Segment
from rich.style import Style
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.strip import Strip
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from ..state import MA_WINDOW, Curve

COLORS = ("cyan+", "orange+", "green+", "magenta+", "red+", "blue+", "yellow", "white")
POINTS_PER_COLUMN = 2  # braille draws two dots a column: a min/max pair per column


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
        self._draw: Callable[[Plot], None] = lambda plt: None
        self._data: Hashable = None
        self._version = 0
        self._cache_key: tuple | None = None
        self._strips: list[Strip] = []
        self._kept: OrderedDict[tuple, list[Strip]] = OrderedDict()
        self.build_seconds = 0.0  # what the last plotext build cost
        self.painted = 0  # the draw() call whose plot was last painted

    def draw(self, fn: Callable[[Plot], None], data: Hashable) -> None:
        """Replace the plot with what `fn(plt)` draws, unless `data` (a cheap summary of what
        `fn` plots, naming the runs it comes from) is unchanged; the plot is built at the
        next repaint."""
        if data == self._data:
            return
        self._draw, self._data = fn, data
        self._version += 1
        self.refresh()

    def _build(self) -> list[Strip]:
        width, height = self.size
        plt = self.plt
        plt.clear_figure()
        self._draw(plt)
        plt.plotsize(width, height)
        plt._set_size(width, height)  # as PlotextPlot.render does: plotsize alone may not stick
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        return ansi_strips(plt.build(), width)

    def render_line(self, y: int) -> Strip:
        key = (self.size, self.app.theme, self._data)
        if key != self._cache_key:
            t0 = time.perf_counter()
            strips = self._kept.pop(key, None)
            if strips is None:
                strips = self._build()
                self.build_seconds = time.perf_counter() - t0
            self._kept[key] = strips
            while len(self._kept) > self.KEEP:
                self._kept.popitem(last=False)
            self._strips, self._cache_key = strips, key
        self.painted = self._version
        if 0 <= y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.size.width)


def _batch(curves: list[Curve], log: bool) -> Callable[[Plot], None]:
    def fn(plt: Plot) -> None:
        plt.title(f"batch loss · {MA_WINDOW}-batch average")
        if log:
            plt.yscale("log")
        single = len(curves) == 1
        for i, c in enumerate(curves):
            color = COLORS[i % len(COLORS)]
            if single and len(c.batch_y):
                # Points, not a line: the min/max pairs are dense enough to read as a band,
                # and a scatter builds in less than half the time of an interpolated line.
                plt.scatter(c.batch_x.tolist(), c.batch_y.tolist(), color="gray", marker="braille")
            if len(c.ma_y):
                label = f"{c.label} avg" if single else c.label
                plt.plot(
                    c.ma_x.tolist(), c.ma_y.tolist(), color=color, marker="braille", label=label
                )

    return fn


def _per_epoch(
    curves: list[Curve], title: str, series: tuple[tuple[str, str], ...], scale: float, log: bool
) -> Callable[[Plot], None]:
    def fn(plt: Plot) -> None:
        plt.title(title)
        if log:
            plt.yscale("log")
        for i, c in enumerate(curves):
            color = COLORS[i % len(COLORS)]
            for attr, kind in series:
                ys = [scale * v for v in getattr(c, attr)]
                if not ys:
                    continue
                # Overlaid runs: one legend line per run; its test curve is the dotted one.
                label = kind if len(curves) == 1 else c.label if kind == "train" else None
                marker = "braille" if kind == "train" else "dot"
                xs = list(range(1, len(ys) + 1))
                plt.plot(xs, ys, color=color, marker=marker, label=label)

    return fn


class CurvesPanel(Horizontal):
    """The batch-loss chart beside the per-epoch loss and accuracy charts."""

    DEFAULT_CSS = """
    CurvesPanel { height: 1fr; }
    CurvesPanel #chart-batch { width: 55%; }
    CurvesPanel Vertical { width: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Chart(id="chart-batch")
        with Vertical():
            yield Chart(id="chart-epoch")
            yield Chart(id="chart-acc")

    def points(self) -> int:
        """How many points a curve needs to look right at the batch chart's width."""
        return max(64, POINTS_PER_COLUMN * self.query_one("#chart-batch").size.width)

    def build_seconds(self) -> float:
        """What drawing every chart cost last time: the redraw timer paces itself by it."""
        return sum(chart.build_seconds for chart in self.query(Chart))

    def show(self, curves: list[Curve], log: bool = False) -> None:
        """Draw `curves`; a chart whose data did not change is not rebuilt."""
        batches = tuple(
            (c.label, c.source, len(c.batch_y), c.batch_x[-1] if len(c.batch_x) else -1)
            for c in curves
        )
        epochs = tuple((c.label, c.source, len(c.epoch_loss)) for c in curves)
        self.query_one("#chart-batch", Chart).draw(_batch(curves, log), (batches, log))
        self.query_one("#chart-epoch", Chart).draw(
            _per_epoch(
                curves,
                "epoch loss · train ⠤ test •",
                (("epoch_loss", "train"), ("test_loss", "test")),
                1.0,
                log,
            ),
            (epochs, log),
        )
        self.query_one("#chart-acc", Chart).draw(
            _per_epoch(
                curves,
                "accuracy % · train ⠤ test •",
                (("train_acc", "train"), ("test_acc", "test")),
                100.0,
                False,
            ),
            epochs,
        )
