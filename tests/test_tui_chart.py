"""The chart widget: plotext's output painted cell for cell as Rich would, rebuilt only when
its data changes, and data seen a moment ago shown again without a rebuild."""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual_plotext.plot import Plot

from cnntui.tui.state import Curve
from cnntui.tui.widgets.curves import Chart, _batch, _per_epoch, ansi_strips


def cells(segments) -> list[tuple[str, object]]:
    """One (character, style) pair a cell."""
    return [(ch, seg.style or Style.null()) for seg in segments for ch in seg.text]


def curve(label: str, n: int, seed: int) -> Curve:
    rng = np.random.default_rng(seed)
    y = 2.0 * np.exp(-np.arange(n) / 200) + rng.uniform(0, 0.4, n)
    x = np.arange(n)
    return Curve(
        label,
        x,
        y,
        x,
        y,
        epoch_loss=[2.0, 1.4, 1.1],
        test_loss=[1.9, 1.5, 1.3],
        train_acc=[0.3, 0.5, 0.6],
        test_acc=[0.28, 0.45, 0.52],
        source=("run", seed),
    )


def test_strips_paint_the_same_cells_as_richs_decoder():
    curves = [curve("baseline", 400, 0), curve("高学习率", 400, 1)]
    console = Console(width=200, color_system="truecolor")
    for draw, log in ((_batch(curves, True), True), (_batch(curves[:1], False), False)):
        plt = Plot()
        draw(plt)
        plt.plotsize(70, 18)
        plt.theme("textual-design-dark" if log else "pro")
        ansi = plt.build()
        strips = ansi_strips(ansi, 70)
        lines = Text.from_ansi(ansi).split("\n")
        assert len(strips) == len(lines) == 18
        for strip, line in zip(strips, lines, strict=True):
            # plotext counts a CJK character as one cell; on screen it takes two, so a line
            # with a CJK legend is cut to the chart's width
            expected = cells(Segment.adjust_line_length(list(line.render(console)), 70))
            assert strip.cell_length == 70
            assert cells(strip) == expected
        styles = {seg.style for strip in strips for seg in strip}
        assert len(styles) >= 2  # the axes and the curves: not one flat style


class ChartApp(App):
    def compose(self) -> ComposeResult:
        yield Chart(id="chart")


async def test_a_chart_rebuilds_only_for_new_data_and_keeps_recent_ones():
    app = ChartApp()
    builds: list[object] = []
    async with app.run_test(size=(60, 16)) as pilot:
        chart = app.query_one(Chart)
        real_build = chart._build

        def counted():
            builds.append(chart._data)
            return real_build()

        chart._build = counted
        a, b = curve("a", 300, 0), curve("b", 300, 1)
        series = (("epoch_loss", "train"), ("test_loss", "test"))

        def show(c: Curve) -> None:
            chart.draw(_per_epoch([c], "loss", series, 1.0, False), (c.source, 3))

        show(a)
        await pilot.pause()
        painted = [line.text for line in chart.render_lines(chart.region.reset_offset)]
        assert any("⠤" in line or "⠉" in line or "⠒" in line for line in painted)
        show(a)  # same data: nothing to do
        await pilot.pause()
        show(b)
        await pilot.pause()
        show(a)  # back to a: its strips are kept
        await pilot.pause()
        assert builds == [(("run", 0), 3), (("run", 1), 3)]
        assert chart.painted == 3  # and what is on screen is the latest draw
        await pilot.resize_terminal(70, 16)  # a new size needs a new build
        await pilot.pause()
        assert len(builds) == 3
