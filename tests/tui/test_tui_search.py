"""A `[[search]]` in the TUI: listed as a group (its counts and best so far, its trials with
their sampled values and status), its trials' curves overlaid, `S` for its table sorted by the
metric, and `r` queueing it for the store's scheduler as `cnntui --run S --detach` does."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from textual.widgets import DataTable

from cnntui.core.config import load
from cnntui.runs import lifecycle, searches
from cnntui.runs.records import RunStatus
from cnntui.runs.store import RunStore, write_summary
from cnntui.tui.app import make_app
from cnntui.tui.screens.search import SearchScreen
from tests.tui.tui_fake import fake_train
from tests.waiting import until

SIZE = (80, 24)

SEARCH_TOML = """\
[defaults]
dataset = "synthetic"
train_size = 256
test_size = 64
val_size = 64
batch_size = 32
epochs = 2
device = "cpu"
threads = 1

[[experiment]]
name = "base"

[[search]]
name = "S"
group = "search"
trials = 4
parallel = 1
sampler = "random"
pruner = "median"
lr = { choice = [0.1, 0.01, 1e-6] }
"""


@pytest.fixture
def study(tmp_path: Path) -> Path:
    (tmp_path / "experiments.toml").write_text(SEARCH_TOML)
    return tmp_path


def store_trials(
    study: Path, lrs: list[float], pruned: int | None = None, cancelled: int | None = None
) -> RunStore:
    """Trial runs `S.t<N>` in the store, trained by the fake trainer with each lr; trial
    `pruned` written pruned at epoch 1, as the scheduler writes it; trial `cancelled` written
    cancelled at epoch 1, as `cnntui --cancel S.t<N>` leaves it."""
    store = RunStore(study / "runs")
    search = load(study / "experiments.toml").searches[0]
    for n, lr in enumerate(lrs):
        exp = dataclasses.replace(search.base, name=f"S.t{n}", lr=lr)
        run = store.create(exp)
        for _ in fake_train(exp, None, run):
            pass
        run.release()
        if n == pruned:
            record = store.runs(exp.name)[-1]
            summary = record.summary.with_fields(
                status=RunStatus.PRUNED, reason="pruned at epoch 1", epochs_done=1
            )
            write_summary(record.path, summary)
        if n == cancelled:
            record = store.runs(exp.name)[-1]
            summary = record.summary.with_fields(status=RunStatus.CANCELLED, epochs_done=1)
            write_summary(record.path, summary)
    return store


def notes(app) -> list[str]:
    return [toast.render().plain for toast in app.screen.query("Toast")]


def cell(app, key: str, column: str) -> str:
    return str(app.main.table.get_cell(key, column))


async def test_a_search_is_listed_with_its_trials_their_values_status_and_the_best_marked(study):
    store_trials(study, [0.01, 1e-6, 0.1], pruned=1)
    app = make_app(study / "experiments.toml", {}, study / "runs", study / "x", device_label="c")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.pause()
        assert cell(app, "S", "status").startswith("search 2 done 1 pruned 1 to go")
        assert "best ★ t2 val_acc" in cell(app, "S", "settings")
        assert cell(app, "S.t2", "name") == " └ t2 ★"  # lr 0.1 learns fastest
        assert cell(app, "S.t0", "name") == " └ t0"
        assert cell(app, "S.t1", "status") == "pruned at epoch 1"
        assert "lr=1e-06" in cell(app, "S.t1", "settings")
        assert cell(app, "S.t0", "settings").startswith("lr=0.01")


async def test_a_trial_its_user_cancelled_counts_as_cancelled_not_done(study):
    store_trials(study, [0.01, 1e-6, 0.1], pruned=1, cancelled=2)
    app = make_app(study / "experiments.toml", {}, study / "runs", study / "x", device_label="c")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        table = app.main.table
        table.move_cursor(row=table.get_row_index("S"))
        await pilot.pause()
        assert cell(app, "S", "status").startswith("search 1 done 1 pruned 1 to go")
        assert cell(app, "S", "settings").endswith(" · 1 cancelled")
        assert cell(app, "S.t2", "status").startswith("cancelled")
        detail = str(app.main.query_one("#detail").render())
        assert detail.startswith("S: 1 done, 1 cancelled, 1 pruned, 0 running, 1 to go")


async def test_the_search_row_overlays_its_trials_curves_and_says_its_progress(study):
    store_trials(study, [0.01, 0.1])
    app = make_app(study / "experiments.toml", {}, study / "runs", study / "x", device_label="c")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        table = app.main.table
        table.move_cursor(row=table.get_row_index("S"))
        await pilot.pause()
        assert app.main.shown() == ["S.t0", "S.t1"]
        key = str(app.main.query_one("#curves-key").render())
        assert "S.t0" in key and "S.t1" in key
        detail = str(app.main.query_one("#detail").render())
        assert detail.startswith("S: 2 done, 0 pruned, 0 running, 2 to go")


async def test_S_shows_the_search_table_sorted_by_the_metric_and_escape_closes_it(study):
    store_trials(study, [0.01, 1e-6, 0.1], pruned=1)
    app = make_app(study / "experiments.toml", {}, study / "runs", study / "x", device_label="c")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        table = app.main.table
        table.move_cursor(row=table.get_row_index("S.t0"))  # a trial's row: its search
        await pilot.press("S")
        await pilot.pause()
        assert isinstance(app.screen, SearchScreen)
        rows = app.screen.query_one(DataTable)
        got = [[str(c) for c in rows.get_row_at(i)] for i in range(rows.row_count)]
        assert [r[1] for r in got] == ["t2", "t0", "t1"]  # best val_acc first
        assert got[0][0] == "★" and got[1][0] == " "
        assert got[0][2] == "0.1"
        assert got[2][4] == "pruned at epoch 1"
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, SearchScreen)


async def test_S_on_an_experiment_says_it_is_no_search(study):
    app = make_app(study / "experiments.toml", {}, study / "runs", study / "x", device_label="c")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("S")
        await pilot.pause()
        assert not isinstance(app.screen, SearchScreen)
        await until(pilot, lambda: any("base is no search" in n for n in notes(app)))


@pytest.mark.process
@pytest.mark.slow
async def test_r_on_a_search_queues_it_for_the_scheduler_and_its_trials_appear(study):
    app = make_app(study / "experiments.toml", {}, study / "runs", study / "x", device_label="c")
    store = RunStore(study / "runs")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        table = app.main.table
        table.move_cursor(row=table.get_row_index("S"))
        await pilot.press("r")
        found = searches.load(store, "S")
        assert found is not None and found[1] == "active"  # as --run S --detach writes it
        await until(pilot, lambda: "S.t0" in app.main.table.rows, 120, "trial S.t0's row")
        await until(pilot, lambda: cell(app, "S", "status").endswith(" 0 to go"), 240, "the end")
        assert len(searches.trial_runs(store, "S")) >= 4
        assert app.main.shown() == [f"S.t{n}" for n in range(4)]  # the trials' curves

        def done() -> bool:  # the scheduler writes it once it has told the last trial's end
            found = searches.load(store, "S")
            return found is not None and found[1] == "done"

        await until(pilot, done, 120, "the search record to read done")
        await pilot.press("r")  # every trial has ended: nothing to train, said
        await until(pilot, lambda: any("nothing to train" in n for n in notes(app)))


@pytest.mark.process
@pytest.mark.slow
async def test_r_on_a_search_applies_the_command_lines_set_to_its_trials(study):
    """`cnntui --set epochs=1` then `r` on a search: its trials train as `cnntui --run S
    --set epochs=1` trains them, with the override."""
    app = make_app(study / "experiments.toml", {"epochs": 1}, study / "runs", study / "x")
    store = RunStore(study / "runs")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        table = app.main.table
        table.move_cursor(row=table.get_row_index("S"))
        await pilot.press("r")
        try:
            found = searches.load(store, "S")
            assert found is not None and found[0].base.epochs == 1
            await until(pilot, lambda: searches.trial_runs(store, "S"), 120, "a trial")
            assert searches.trial_runs(store, "S")[0].experiment().epochs == 1
        finally:
            lifecycle.cancel_search(store, "S")


@pytest.mark.process
@pytest.mark.slow
async def test_c_on_a_search_cancels_it_no_more_trials_and_its_trials_stop(study):
    """As Ctrl-C does for `cnntui --run S`: the search record reads cancelled (the scheduler
    asks no more trials) and its queued or running trials stop, their epochs kept."""
    (study / "experiments.toml").write_text(
        SEARCH_TOML.replace("epochs = 2", "epochs = 200").replace("trials = 4", "trials = 30")
    )
    app = make_app(study / "experiments.toml", {}, study / "runs", study / "x", device_label="c")
    store = RunStore(study / "runs")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        table = app.main.table
        table.move_cursor(row=table.get_row_index("S"))
        await pilot.press("r")
        await until(pilot, lambda: searches.trial_runs(store, "S"), 120, "a trial")
        await pilot.press("c")
        await until(pilot, lambda: any("search S cancelled" in n for n in notes(app)))
        found = searches.load(store, "S")
        assert found is not None and found[1] == "cancelled"

        def stopped() -> bool:
            return all(
                r.status not in (RunStatus.QUEUED, RunStatus.RUNNING)
                for r in searches.trial_runs(store, "S")
            )

        await until(pilot, stopped, 120, "the trials to stop")
        assert len(searches.trial_runs(store, "S")) < 30  # no more trials were asked
        await pilot.press("c")
        await until(pilot, lambda: any("search S is not running" in n for n in notes(app)))
