"""The TUI at 80x24 and what its lists say: keys that move as vi users expect, every shipped
experiment in view, nothing cut mid-word, and results that say which settings they come from."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static

from cnntui.tui.app import make_app
from cnntui.tui.screens.classes import ClassesScreen

from .tui_fake import fake_train
from .waiting import until

SIZE = (80, 24)


async def test_j_and_k_move_in_the_lists_and_shift_c_opens_the_confusion_view(
    tiny_toml, runs_dir, tmp_path
):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        table = app.main.table
        assert table.highlighted == "alpha"
        await pilot.press("j")
        assert table.highlighted == "beta"
        await pilot.press("k")
        assert table.highlighted == "alpha" and app.screen is app.main  # k opens nothing
        await pilot.press("a")
        runs = app.main.session.runs
        await until(pilot, lambda: runs and all(s.ended for s in runs.values()), what="runs")
        await pilot.press("C")
        assert isinstance(app.screen, ClassesScreen)
        await pilot.press("C")  # the key that opened it closes it
        assert app.screen is app.main
        await pilot.press("v")  # the results table: j and k move its rows too
        results = app.main.results
        await until(pilot, lambda: results.row_count == 2, what="two results rows")
        assert results.cursor_coordinate.row == 0
        await pilot.press("j")
        assert results.cursor_coordinate.row == 1
        await pilot.press("k")
        assert results.cursor_coordinate.row == 0


SHIPPED = Path(__file__).resolve().parents[1] / "experiments.toml"


def shipped_app(tmp_path: Path, overrides: dict | None = None):
    return make_app(
        SHIPPED,
        overrides or {},
        tmp_path / "runs",
        tmp_path / "exports",
        trainer=fake_train,
        device_label="cpu (fake)",
    )


async def test_every_shipped_experiment_shows_with_whole_settings_and_a_detail_line(tmp_path):
    app = shipped_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        table = app.main.table
        await pilot.pause()
        assert table.row_count == 9
        assert table.max_scroll_y == 0 and table.max_scroll_x == 0  # all in view
        assert table.region.height == 10  # the column headers and nine rows
        for row in range(table.row_count):
            cell = str(table.get_row_at(row)[-1])
            # whole `key=value` items, and `…` where more are in the detail line
            assert all("=" in item or item in ("-", "…") for item in cell.split()), cell
        detail = app.main.query_one("#detail", Static)
        for name, whole in (
            ("strong-reg", "weight_decay=0.1 dropout=0.7"),
            ("arch-resnet", "model=resnet batch_size=128 epochs=10"),
        ):
            table.move_cursor(row=table.get_row_index(name))
            await pilot.pause()
            shown = str(detail.render())
            assert shown.startswith(f"{name}: ") and whole in shown, shown
