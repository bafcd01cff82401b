"""The results table keeps up with runs in place: new rows in order, changed cells rewritten,
the best value of each column marked, the cursor staying on its run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from textual.app import App, ComposeResult

from cnntui.runs.records import RunStatus, RunSummary
from cnntui.tui.widgets.results import BEST_STYLE, ResultsTable


def row(name: str, acc: float, loss: float, status: str = "finished") -> RunSummary:
    return RunSummary(
        name=name,
        title=name.upper(),
        model="lenet",
        params=62006,
        final_test_acc=acc,
        best_test_acc=acc,
        final_train_loss=loss,
        status=RunStatus(status),
    )


class ResultsApp(App):
    def compose(self) -> ComposeResult:
        yield ResultsTable(id="results")


def names(table: ResultsTable) -> list[str]:
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def is_best(table: ResultsTable, key: str, column: str) -> bool:
    cell = table.get_cell(key, column)
    return any(str(span.style) == BEST_STYLE for span in cell.spans)


async def test_rows_update_in_place_in_order_with_the_best_marked():
    app = ResultsApp()
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(ResultsTable)
        for i in range(50):
            table.put(f"old-{i}", row(f"old-{i}", 0.30 + i / 1000, 1.5), redraw=False)
        table.update_rows()
        await pilot.pause()
        assert names(table)[:2] == ["old-49", "old-48"]  # newest first
        table.move_cursor(row=3)
        on = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        assert is_best(table, "old-49", "final_test_acc")

        table.put("new", row("new", 0.10, 2.0, "running"))  # a run starts
        await pilot.pause()
        assert names(table)[:2] == ["new", "old-49"] and table.row_count == 51
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == on

        table.put("new", row("new", 0.60, 0.9, "running"))  # its next epoch: best now
        await pilot.pause()
        assert "60.00%" in str(table.get_cell("new", "final_test_acc"))
        assert is_best(table, "new", "final_test_acc")
        assert not is_best(table, "old-49", "final_test_acc")
        assert is_best(table, "new", "final_train_loss")

        table.move_cursor(row=0, column=4)  # sort by final accuracy, best first
        table.action_sort()
        await pilot.pause()
        assert names(table)[:3] == ["new", "old-49", "old-48"]
        table.put("new", row("new", 0.3445, 1.9, "finished"))  # it falls down the ranking
        await pilot.pause()
        order = names(table)
        assert order[:6] == ["old-49", "old-48", "old-47", "old-46", "old-45", "new"]
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == "new"
        assert is_best(table, "old-49", "final_test_acc")


async def test_hidden_rows_wait_until_the_table_is_shown():
    app = ResultsApp()
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(ResultsTable)
        table.display = False
        table.put("a", row("a", 0.5, 1.0))
        await pilot.pause()
        assert table.row_count == 0  # nothing laid out while hidden
        table.display = True
        await pilot.pause()
        assert names(table) == ["a"]


async def test_an_experiment_of_several_seeds_shows_mean_and_std_on_each_of_its_rows():
    app = ResultsApp()
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.query_one(ResultsTable)
        accs = [0.50, 0.54, 0.55]
        for seed, acc in enumerate(accs):
            table.put(f"r{seed}", replace(row("base", acc, 1.0), seed=seed, settings_key="k"))
        table.put("other", row("other", 0.3, 1.0))
        await pilot.pause()
        expected = f"{np.mean(accs) * 100:.2f}±{np.std(accs, ddof=1) * 100:.2f} n=3"
        for key in ("r0", "r1", "r2"):
            assert str(table.get_cell(key, "acc_over_seeds")) == expected
        assert str(table.get_cell("other", "acc_over_seeds")) == "30.00% n=1"
        # seed 0 again: its newer run replaces the old one in the mean, on every row
        table.put("r3", replace(row("base", 0.56, 1.0), seed=0, settings_key="k"))
        await pilot.pause()
        again = [0.56, 0.54, 0.55]
        expected = f"{np.mean(again) * 100:.2f}±{np.std(again, ddof=1) * 100:.2f} n=3"
        assert str(table.get_cell("r1", "acc_over_seeds")) == expected
        assert str(table.get_cell("r0", "seed")) == "0"


async def test_a_rows_mean_over_seeds_counts_only_runs_with_that_rows_settings():
    app = ResultsApp()
    async with app.run_test(size=(160, 30)) as pilot:
        table = app.query_one(ResultsTable)
        # an old 2-epoch run, then two seeds of a newer 8-epoch one of the same experiment
        table.put("old", replace(row("high-lr", 0.473, 1.0), seed=0, settings_key="ep2"))
        table.put("new0", replace(row("high-lr", 0.09, 2.3), seed=0, settings_key="ep8"))
        table.put("new1", replace(row("high-lr", 0.11, 2.3), seed=1, settings_key="ep8"))
        await pilot.pause()
        assert str(table.get_cell("old", "acc_over_seeds")) == "47.30% n=1"
        assert str(table.get_cell("new0", "acc_over_seeds")) == "10.00±1.41 n=2"
        assert str(table.get_cell("new1", "acc_over_seeds")) == "10.00±1.41 n=2"
        # a later run with the old settings counts with the old row only
        table.put("old1", replace(row("high-lr", 0.493, 1.0), seed=1, settings_key="ep2"))
        await pilot.pause()
        assert str(table.get_cell("old", "acc_over_seeds")) == "48.30±1.41 n=2"
        assert str(table.get_cell("new1", "acc_over_seeds")) == "10.00±1.41 n=2"
        table.redraw()  # laid out afresh, the same
        await pilot.pause()
        assert str(table.get_cell("old", "acc_over_seeds")) == "48.30±1.41 n=2"


async def test_a_run_without_a_validation_split_shows_no_best_accuracy_only_its_final():
    app = ResultsApp()
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.query_one(ResultsTable)
        # an older summary.json recorded the test set's best epoch for a run without a split
        table.put("plain", replace(row("plain", 0.40, 1.5), best_test_acc=0.55))
        table.put("split", replace(row("split", 0.41, 1.5), best_test_acc=0.45, best_val_acc=0.5))
        await pilot.pause()
        assert str(table.get_cell("plain", "final_test_acc")).strip() == "40.00%"
        assert str(table.get_cell("plain", "best_test_acc")).strip() == "-"
        assert str(table.get_cell("split", "best_test_acc")).strip() == "45.00%"
        assert is_best(table, "split", "best_test_acc")
