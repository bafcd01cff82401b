"""Live training curves drawn with plotext: batch loss with its moving average, epoch losses,
and accuracies, for one run or several overlaid, one colour each."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Horizontal, Vertical
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from ..state import MA_WINDOW, Curve

COLORS = ("cyan+", "orange+", "green+", "magenta+", "red+", "blue+", "yellow", "white")
POINTS_PER_COLUMN = 3  # braille draws two dots a column; min/max pairs need a little more


class Chart(PlotextPlot):
    """A PlotextPlot that rebuilds its text only when its data, size or theme change.

    A plotext build costs milliseconds per hundred points; Textual may render a widget
    more often than its data changes (a resize, a screen on top), so the text is cached.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._draw: Callable[[Plot], None] = lambda plt: None
        self._version = 0
        self._cache_key: tuple | None = None
        self._cache: RenderResult = Text("")

    def draw(self, fn: Callable[[Plot], None]) -> None:
        """Replace the plot with what `fn(plt)` draws; it is built at the next render."""
        self._draw = fn
        self._version += 1
        self.refresh()

    def render(self) -> RenderResult:
        key = (self.size, self.app.theme, self._version)
        if key != self._cache_key:
            self.plt.clear_figure()
            self._draw(self.plt)
            self._cache = super().render()
            self._cache_key = key
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
                plt.plot(c.batch_x.tolist(), c.batch_y.tolist(), color="gray", marker="braille")
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
                label = kind if len(curves) == 1 else f"{c.label} {kind}"
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

    def show(self, curves: list[Curve], log: bool = False) -> None:
        self.query_one("#chart-batch", Chart).draw(_batch(curves, log))
        self.query_one("#chart-epoch", Chart).draw(
            _per_epoch(
                curves,
                "loss per epoch · train / test",
                (("epoch_loss", "train"), ("test_loss", "test")),
                1.0,
                log,
            )
        )
        self.query_one("#chart-acc", Chart).draw(
            _per_epoch(
                curves,
                "accuracy % · train / test",
                (("train_acc", "train"), ("test_acc", "test")),
                100.0,
                False,
            )
        )
