"""The chart widget: plotext's output painted cell for cell as Rich would, rebuilt only when
its data changes, and data seen a moment ago shown again without a rebuild."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual_plotext.plot import Plot

from cnntui.tui.state import Curve
from cnntui.tui.widgets.curves import Chart, ansi_strips, batch_draw, epoch_draw


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
    for draw, log in ((batch_draw(curves, True), True), (batch_draw(curves[:1], False), False)):
        plt = Plot()
        assert draw(plt, 70)
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
    async with app.run_test(size=(60, 16)) as pilot:
        chart = app.query_one(Chart)
        await pilot.pause()
        empty = chart.builds  # the empty chart, painted at start
        a, b = curve("a", 300, 0), curve("b", 300, 1)
        series = (("epoch_loss", "train"), ("test_loss", "test"))

        def show(c: Curve) -> None:
            chart.draw(("loss",), epoch_draw([c], series, 1.0, False), (c.source, 3))

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
        assert chart.builds - empty == 2  # a once, b once
        assert chart.painted == 3  # and what is on screen is the latest draw
        await pilot.resize_terminal(70, 16)  # a new size needs a new build
        await pilot.pause()
        assert chart.builds - empty == 3


# -- every chart in every mode, in the app at both sizes -------------------------------------

NAN, INF = math.nan, math.inf


def data_curve(label: str, batch: list[float], epochs: dict[str, list[float]], seed: int) -> Curve:
    y = np.asarray(batch, dtype=np.float64)
    x = np.arange(len(y))
    return Curve(label, x, y, x, y, source=("run", seed), **epochs)


def per_epoch(loss: list[float], acc: list[float]) -> dict[str, list[float]]:
    return {
        "epoch_loss": loss,
        "test_loss": [v + 0.1 for v in loss],
        "train_acc": acc,
        "test_acc": [v - 0.02 for v in acc],
    }


def falling(n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return (2.0 * np.exp(-np.arange(n) / 150) + rng.uniform(0, 0.3, n)).tolist()


CASES: dict[str, list[Curve]] = {
    "no run": [],
    "nothing trained yet": [data_curve("baseline", [], per_epoch([], []), 0)],
    "one point": [data_curve("baseline", [2.3], per_epoch([2.3], [0.1]), 0)],
    "single epoch": [data_curve("baseline", falling(200, 0), per_epoch([1.9], [0.3]), 0)],
    "nan and inf": [
        data_curve(
            "baseline",
            [2.3, NAN, INF, -INF, 2.1, 0.0, -1.0, 1.9],
            per_epoch([2.2, NAN, INF, 1.8], [NAN, 0.3, INF, 0.4]),
            0,
        )
    ],
    "nothing positive": [data_curve("baseline", [0.0, -1.0, 0.0], per_epoch([0.0], [0.0]), 0)],
    "all nan": [data_curve("baseline", [NAN, NAN], per_epoch([NAN], [NAN]), 0)],
    "marked overlay": [
        data_curve(name, falling(600, i % 2), per_epoch([2.0, 1.5, 1.2], [0.3, 0.4, 0.5]), i)
        for i, name in enumerate(["baseline", "high-lr", "高学习率", "no-reg"])
    ],
}
MARKS = set("⠁⠂⠄⡀⠈⠐⠠⢀•") | {chr(c) for c in range(0x2801, 0x2900)}


def painted(chart: Chart) -> list[str]:
    return [line.text for line in chart.render_lines(chart.region.reset_offset)]


def drawn(lines: list[str]) -> bool:
    """Curves on the chart: braille dots or the test curve's dots below the title."""
    return any(ch in MARKS for line in lines[1:] for ch in line)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_every_chart_draws_in_every_mode(tiny_toml, tmp_path, size):
    from cnntui.tui.app import make_app
    from cnntui.tui.widgets.curves import CurvesPanel

    app = make_app(tiny_toml, {}, tmp_path / "runs", tmp_path / "x", device_label="cpu")
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        app.main.redraw_curves = lambda force=False: None  # the cases below are what it shows
        panel = app.main.query_one(CurvesPanel)
        charts = {c.id: c for c in panel.query(Chart)}
        assert panel.side_by_side == (size == (80, 24))  # fewer rows: charts side by side
        for case, curves in CASES.items():
            for log in (False, True):
                panel.show(curves, log, absent=["beta"] if not curves else [])
                await pilot.pause()
                where = f"{case}, log={log}, {size}"
                text = {name: painted(chart) for name, chart in charts.items()}
                for name, chart in charts.items():
                    assert chart.error == "", (where, name, chart.error)
                    lines = text[name]
                    assert len(lines) == chart.size.height >= 10, (where, name)
                    assert lines[0].strip(), (where, name, "no title")
                    assert not any("cannot draw" in line for line in lines), (where, name)
                    # Drawn, or saying why not: never an empty box.
                    assert (
                        drawn(lines)
                        or any(line.strip() for line in lines[1:])
                        or (not curves and name != "chart-batch")
                    ), (where, name, lines)
                batch, epoch, acc = (text[f"chart-{k}"] for k in ("batch", "epoch", "acc"))
                loss_title = "(log)" in batch[0] and "(log)" in epoch[0]
                assert loss_title == log, (where, batch[0], epoch[0])
                assert "(log)" not in acc[0]  # accuracy keeps its linear scale
                joined = " ".join(" ".join(line.split()) for line in batch)  # wrapped: rejoined
                match case:
                    case "no run":
                        assert "no run yet" in joined and not drawn(batch)
                    case "nothing trained yet":
                        assert "no batch trained yet" in joined
                        assert "no epoch ended yet" in "\n".join(epoch)
                    case "nothing positive" if log:
                        assert "log scale" in joined and not drawn(batch)
                    case "all nan":
                        assert ("log scale" if log else "no finite value") in joined
                    case _:
                        assert drawn(batch) and drawn(epoch) and drawn(acc), where
                key = str(panel.query_one("#curves-key").render())
                for c in curves:
                    assert c.label in key
            assert app.is_running


async def test_a_chart_that_fails_to_draw_says_so_in_its_place():
    app = ChartApp()
    async with app.run_test(size=(60, 16)) as pilot:
        chart = app.query_one(Chart)

        def broken(plt, width):
            raise RuntimeError("boom")

        chart.draw(("epoch loss",), broken, 1)
        await pilot.pause()
        lines = painted(chart)
        assert chart.error == "RuntimeError: boom"
        assert "epoch loss" in lines[0]
        assert any("cannot draw: RuntimeError: boom" in line for line in lines)
        assert app.is_running


def test_batch_axis_ticks_are_whole_numbers():
    plt = Plot()
    c = data_curve("a", falling(1875, 0), per_epoch([], []), 0)
    assert batch_draw([c], False)(plt, 44)
    plt.plotsize(44, 14)
    labels = Text.from_ansi(plt.build()).plain.splitlines()[-1].split()
    assert labels and all(label.isdigit() for label in labels), labels
    assert int(labels[0]) == 0 and len(labels) >= 3


@pytest.mark.parametrize(
    ("rates", "said"),
    [
        ([0.01, 0.0075, 0.0025], "lr 0.01→0.0025"),  # cosine so far
        ([0.001, 0.0055, 0.01, 0.005, 1e-6], "lr 0.001→0.01→1e-6"),  # warm-up, then down
        ([0.1, 0.1, 0.01, 0.001, 0.0001], "lr 0.1→1e-4"),  # step
        ([2.4e-4, 1.2e-4], "lr 2.4e-4→1.2e-4"),
        ([0.01, 0.01, 0.01], ""),  # constant: nothing to say
        ([math.nan, math.nan], ""),  # a history from before rates were recorded
        ([], ""),
    ],
)
def test_the_key_says_how_the_learning_rate_moved(rates, said):
    from cnntui.tui.widgets.curves import key_pieces, lr_span

    assert lr_span(rates) == said
    c = data_curve("run", falling(10, 0), per_epoch([1.0] * len(rates), [0.5] * len(rates)), 0)
    c = Curve(**{**c.__dict__, "lr": rates})
    run, per_epoch_key = key_pieces([c], {}, [])
    assert run.plain == f"━━ run {said}".rstrip()
    assert per_epoch_key.plain.startswith("per epoch")
