"""The TUI at 80x24 and what its lists say: keys that move as vi users expect, every shipped
experiment in view, nothing cut mid-word, and results that say which settings they come from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rich.cells import cell_len
from textual.widgets import Static

from cnntui.tui.app import make_app
from cnntui.tui.screens.classes import ClassesScreen
from tests.core.test_user_model import study
from tests.tui.tui_fake import fake_train
from tests.waiting import until

SIZE = (80, 24)


@pytest.mark.slow
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


SHIPPED = Path(__file__).resolve().parents[2] / "experiments.toml"


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


async def test_a_user_models_arguments_read_in_the_detail_line_as_the_file_writes_them(
    tmp_path,
):
    path = study(tmp_path, extra="model_args = { width = 4 }")
    app = make_app(path, {}, tmp_path / "runs", tmp_path / "exports", trainer=fake_train)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        shown = str(app.main.query_one("#detail", Static).render())
        assert shown.startswith("mine: model=mynet.py:TinyNet model_args={width = 4}"), shown


# What a user of the shipped file tries first: synthetic data, one epoch, a bigger test set.
QUICK = {"dataset": "synthetic", "train_size": 200, "test_size": 1000, "epochs": 1}


def stored_run(runs: Path, name: str, run_id: str, acc: float, **settings) -> None:
    """A finished run of shipped experiment `name`, trained with `settings` on top of it."""
    import dataclasses
    import math

    from cnntui.core.config import load
    from cnntui.core.events import BatchLosses, EpochEnd
    from cnntui.core.history import History
    from cnntui.runs import store

    # No folder to ask git about: what a snapshot shows must not depend on the checkout's
    # commit or its uncommitted changes.
    exp = dataclasses.replace(load(SHIPPED).get(name), base_dir="", **settings)
    epochs = exp.epochs
    run = store.RunStore(runs).create(exp)
    history = History()
    for epoch in range(epochs):
        first = epoch * 50
        losses = tuple(2.3 - 0.004 * i + 0.05 * math.sin(i) for i in range(first, first + 50))
        history.add(BatchLosses(name, epoch, first, losses))
        loss = sum(losses) / len(losses)
        history.add(EpochEnd(name, epoch, loss, acc - 0.02, loss + 0.01, acc, 1.5))
    run.save(history, "finished", total_seconds=1.5 * epochs, params=62006)
    run.release()
    target = run.path.parent / run_id  # a fixed id: the same pictures every time
    run.path.rename(target)


@pytest.mark.slow
async def test_the_key_line_wraps_whole_and_keeps_the_per_epoch_key_in_view(tmp_path):
    old = {**QUICK, "epochs": 2, "test_size": 100}
    stored_run(tmp_path / "runs", "high-lr", "20260101-000000-aaaaaa", 0.473, **old)
    app = shipped_app(tmp_path, QUICK)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("j")
        key = app.main.query_one("#curves-key", Static)
        await until(pilot, lambda: "previous settings" in str(key.render()), what="the note")
        await pilot.pause()
        lines = str(key.render()).splitlines()
        assert len(lines) == key.content_region.height <= 3, lines
        assert all(cell_len(line) <= key.content_region.width for line in lines), lines
        assert any("per epoch: ⠤ train • test" in line for line in lines), lines
        said = " ".join(lines)
        assert "(previous settings: epochs=2 now 1, test_size=100 now 1000)" in said
        # a notification leaves the key line (and the footer) readable
        app.notify("exported 44 file(s) to exports/")
        await until(pilot, lambda: app.screen.query("Toast"), what="a toast")
        await pilot.pause()
        for toast in app.screen.query("Toast"):
            assert not toast.region.overlaps(key.region), (toast.region, key.region)


def column_starts(table) -> list[int]:
    """Where each scrolling column begins, in the table's scroll coordinates."""
    widths = [c.get_render_width(table) for c in table.ordered_columns]
    starts, at = [], 0
    for w in widths[table.fixed_columns :]:
        starts.append(at)
        at += w
    return starts


@pytest.mark.slow
async def test_results_scroll_sideways_by_whole_columns(tmp_path):
    for i, name in enumerate(("high-lr", "strong-reg", "arch-resnet")):
        stored_run(tmp_path / "runs", name, f"20260101-00000{i}-aaaaaa", 0.2 + i / 10, **QUICK)
    app = shipped_app(tmp_path, QUICK)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("v")
        results = app.main.results
        await until(pilot, lambda: results.row_count == 3, what="three rows")
        fixed = results.ordered_columns[0].get_render_width(results)
        view = results.scrollable_content_region.width - fixed
        seen = set()
        for _ in range(len(results.ordered_columns) - 1):
            await pilot.press("right")
            await pilot.pause()
            await pilot.pause()
            starts = column_starts(results)
            x = round(results.scroll_x)
            assert x in starts, (x, starts)  # the first column in view is whole: no `odel`
            column = results.cursor_coordinate.column
            begin = starts[column - 1]
            width = results.ordered_columns[column].get_render_width(results)
            assert x <= begin and begin + width <= x + view  # the cursor's column too
            seen.add(x)
        assert len(seen) > 1  # it did scroll


async def test_a_results_row_shows_the_data_and_settings_its_run_trained_with(tmp_path):
    old = {**QUICK, "epochs": 2, "test_size": 100}
    stored_run(tmp_path / "runs", "high-lr", "20260101-000000-aaaaaa", 0.473, **old)
    app = shipped_app(tmp_path, QUICK)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("v")
        detail = app.main.query_one("#detail", Static)
        await until(pilot, lambda: "ran on" in str(detail.render()), what="the run's detail")
        said = " ".join(str(detail.render()).split())
        assert said.startswith("high-lr ran on synthetic data (not CIFAR-10), 200 train"), said
        assert "epochs=2" in said and "the experiment now: epochs=1 test_size=1000" in said
        assert detail.region.bottom <= app.main.query_one("#views").region.y  # in view


# A user's own image folder: class names longer than a count column, alike at the start.
OWN = ("airplane", "automobile", "ankle_boot_black", "ankle_boot_brown", "sandal", "sneaker")
OWN += ("sneaker_high_top", "sneaker_low_top", "tshirt_long_sleeve", "tshirt_short_sleeve")


def own_classes_run(tiny_toml: Path, runs: Path) -> None:
    """A finished run of `alpha` that recorded OWN as its classes; class i gets 10 - i of
    its 10 test images right, the rest taken for class i + 1."""
    from cnntui.core.config import load
    from cnntui.core.events import EpochEnd
    from cnntui.core.history import History
    from cnntui.runs.store import RunStore

    confusion = [[0] * 10 for _ in range(10)]
    for i, row in enumerate(confusion):
        row[i], row[(i + 1) % 10] = 10 - i, i
    run = RunStore(runs).create(load(tiny_toml).get("alpha"))
    history = History()
    history.add(EpochEnd("alpha", 0, 2.0, 0.4, 1.9, 0.35, 1.0, confusion=confusion))
    run.save(history, "finished", total_seconds=1.0, params=62006, class_names=OWN)
    run.release()


def shown_as(label: str, name: str) -> bool:
    """`label` is `name` whole, or cut with one '…' that keeps its start and its end."""
    if "…" not in label:
        return label == name
    start, end = label.split("…")
    return name.startswith(start) and name.endswith(end) and len(start) + len(end) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("size", [SIZE, (120, 30), (200, 40)])
async def test_the_class_view_tells_a_folders_long_class_names_apart(
    tiny_toml, runs_dir, tmp_path, size
):
    own_classes_run(tiny_toml, runs_dir)
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c")
    async with app.run_test(size=size) as pilot:
        await pilot.press("C")
        dialog = app.screen.query_one("#dialog")  # all of it in view, nothing to scroll
        assert dialog.region.right <= size[0] and dialog.region.bottom <= size[1]
        assert dialog.max_scroll_x == 0 and dialog.max_scroll_y == 0
        lines = str(app.screen.query_one("#classes", Static).render()).splitlines()
        rows = [line.split()[0] for line in lines[-11:-1]]  # each true class's row
        # each predicted class's head, in the order of the columns their right ends mark
        ends = [(m.end(), m.group()) for line in lines[2:-11] for m in re.finditer(r"\S+", line)]
        heads = [w for _, w in sorted(ends) if w not in ("true\\pred", "│", "n", "acc")]
        for shown in (rows, heads):
            assert len(set(shown)) == 10, shown  # told apart
            assert all(shown_as(s, name) for s, name in zip(shown, OWN, strict=True)), shown
        assert rows[:2] == ["airplane", "automobile"]  # whole where they fit
        assert {"airplane", "sandal", "sneaker"} <= set(heads), heads
        if size[0] >= 200:  # room for every name whole
            assert rows == list(OWN) and sorted(heads) == sorted(OWN)


def test_cut_class_names_keep_their_start_and_stay_apart():
    from cnntui.core.config import CLASS_NAMES
    from cnntui.tui.classes import ClassView, render, short_names

    hundred = CLASS_NAMES["cifar100"]
    for cols in (4, 6, 9, 13):
        cut = short_names(hundred, cols)
        assert cut is not None and len(set(cut)) == 100
        for c, name in zip(cut, hundred, strict=True):  # its start, '…', maybe its end
            start, _, end = c.partition("…")
            assert len(c) <= cols and name.startswith(start) and name.endswith(end), c
    assert short_names(OWN, 13)[2:4] == ["ankle_b…black", "ankle_b…brown"]  # alike starts
    assert short_names(("same", "same"), 9) is None
    # a hundred columns: the corner keeps to the narrow name column, clear of the heads
    view = ClassView("c", "run", hundred, [[1] * 100 for _ in range(100)], 1, 1)
    assert render(view, width=76).plain.splitlines()[2].startswith("true\\… aquarium…")
