"""Live training curves drawn with plotext: batch loss with its moving average, epoch losses,
and accuracies, for one run or several overlaid, one colour each."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Horizontal, Vertical
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from ..state import MA_WINDOW, Curve

COLORS = ("cyan+", "orange+", "green+", "magenta+", "red+", "blue+", "yellow", "white")
POINTS_PER_COLUMN = 2  # braille draws two dots a column: a min/max pair per column


class Chart(PlotextPlot):
    """A PlotextPlot that rebuilds its text only when its data, size or theme change.

    A plotext build costs milliseconds per hundred points; Textual may render a widget
    more often than its data changes (a resize, a screen on top), so the text is cached.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._draw: Callable[[Plot], None] = lambda plt: None
        self._data: Hashable = None
        self._version = 0
        self._cache_key: tuple | None = None
        self._cache: RenderResult = Text("")
        self.build_seconds = 0.0  # what the last plotext build cost

    def draw(self, fn: Callable[[Plot], None], data: Hashable) -> None:
        """Replace the plot with what `fn(plt)` draws, unless `data` (a cheap summary of what
        `fn` plots) is unchanged; the plot is built at the next render."""
        if data == self._data:
            return
        self._draw, self._data = fn, data
        self._version += 1
        self.refresh()

    def render(self) -> RenderResult:
        key = (self.size, self.app.theme, self._version)
        if key != self._cache_key:
            t0 = time.perf_counter()
            self.plt.clear_figure()
            self._draw(self.plt)
            self._cache = super().render()
            self._cache_key = key
            self.build_seconds = time.perf_counter() - t0
        return self._cache


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
            (c.label, len(c.batch_y), c.batch_x[-1] if len(c.batch_x) else -1) for c in curves
        )
        epochs = tuple((c.label, len(c.epoch_loss)) for c in curves)
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
