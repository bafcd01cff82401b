"""The TUI at 80x24 and what its lists say: keys that move as vi users expect, every shipped
experiment in view, nothing cut mid-word, and results that say which settings they come from."""

from __future__ import annotations

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
