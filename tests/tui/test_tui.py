"""The TUI driven by real key presses (Textual Pilot), on the synthetic dataset.

Runs that must really train use the engine; runs whose timing the test must control use the
deterministic fake trainer. Every test asserts what a user would see or find on disk.
"""

from __future__ import annotations

import json
import re
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from textual.widgets import Input, Static

from cnntui.core.config import load
from cnntui.runs.records import RunStatus, RunSummary
from cnntui.tui.app import make_app
from cnntui.tui.messages import RunUpdated
from cnntui.tui.screens.confirm import ConfirmScreen
from cnntui.tui.screens.edit import ExperimentForm
from cnntui.tui.screens.help import HelpScreen
from cnntui.tui.widgets.results import COLUMNS
from tests.tui.tui_fake import fake_train
from tests.waiting import until

SIZE = (80, 24)


def notes(app) -> list[str]:
    """The notifications on screen now, as the user reads them (title, then message)."""
    return [toast.render().plain for toast in app.screen.query("Toast")]


def status_cell(app, name: str) -> str:
    table = app.main.table
    return str(table.get_cell(name, "status"))


def settings_cell(app, name: str) -> str:
    return str(app.main.table.get_cell(name, "settings"))


def summaries(runs_dir: Path, name: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((runs_dir / name).glob("*/summary.json"))]


def slow_trainer(delay: float = 0.02):
    return partial(fake_train, delay=delay)


# -- running, cancelling, failing ------------------------------------------------------------


@pytest.mark.process
async def test_run_finishes_with_a_results_row(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "exports")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("finished"))
        rows = app.main.results.rows_by_key
        (row,) = rows.values()
        assert row.name == "alpha" and row.status == "finished"
        assert 0.0 <= row.final_test_acc <= 1.0
        assert row.params == 62006
        # the row on screen shows the accuracy the store recorded
        await pilot.press("v")
        shown = [str(c) for c in app.main.results.get_row(next(iter(rows)))]
        assert f"{100 * row.final_test_acc:.2f}%" in shown
        await until(pilot, lambda: "0 running" in app.sub_title)  # the header's next tick
    (summary,) = summaries(runs_dir, "alpha")
    assert summary["status"] == "finished" and summary["epochs_done"] == 2


@pytest.mark.process
async def test_cancel_stops_the_run_and_keeps_its_history(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {"epochs": 500}, runs_dir, tmp_path / "exports")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("running"))
        state = app.main.session.latest("alpha")
        await until(pilot, lambda: state.done > 0)
        await pilot.press("c")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("cancelled"))
        assert status_cell(app, "alpha") == "cancelled · R resumes"
        assert app.main.results.rows_by_key[state.run_dir].status == "cancelled"
    (summary,) = summaries(runs_dir, "alpha")
    assert summary["status"] == "cancelled" and summary["batches_done"] > 0
    with np.load(Path(state.run_dir) / "history.npz") as h:
        assert len(h["batch_losses"]) == summary["batches_done"]


async def test_a_failing_run_shows_its_reason_and_the_app_stays(tmp_path, runs_dir):
    cfg = tmp_path / "experiments.toml"
    cfg.write_text('[[experiment]]\nname = "will-fail"\n[[experiment]]\nname = "ok"\n')

    def exploding(*args):
        raise RuntimeError("worker blew up")
        yield  # pragma: no cover

    app = make_app(cfg, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="cpu")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: status_cell(app, "will-fail").startswith("failed"))
        assert "out of memory" in status_cell(app, "will-fail")
        app.main.trainer = exploding  # a bug in the worker itself, not a failed run
        await pilot.press("down", "r")
        await until(pilot, lambda: status_cell(app, "ok").startswith("failed"))
        assert status_cell(app, "ok").startswith("failed: RuntimeError")
        # the whole reason is in a notification, the status cell is cut to fit
        await until(pilot, lambda: "ok failed: RuntimeError: worker blew up" in notes(app))
        assert app.is_running


@pytest.mark.slow
async def test_run_all_queues_beyond_the_jobs_limit(tiny_toml, runs_dir, tmp_path):
    app = make_app(
        tiny_toml,
        {"epochs": 100},
        runs_dir,
        tmp_path / "x",
        trainer=slow_trainer(),
        device_label="c",
    )
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("running"))
        assert status_cell(app, "beta") == "queued"
        assert "1 running, 1 queued" in app.sub_title
        await pilot.press("plus")  # a second slot starts the queued run at once
        await until(pilot, lambda: status_cell(app, "beta").startswith("running"))
        assert status_cell(app, "alpha").startswith("running")  # it did not wait for alpha
        await pilot.press("c", "down", "c")
        await until(pilot, lambda: not app.main.session.active())


async def test_updates_are_throttled_at_the_source(tiny_toml, runs_dir, tmp_path):
    """The worker posts the screen a note per status change and epoch end, never per chunk
    of batch losses: those reach the screen through its redraw timer."""
    from tests.tui import tui_fake

    # 6 epochs of 10 chunks: posting per chunk would make 60 notes more.
    app = make_app(
        tiny_toml, {"epochs": 6}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c"
    )
    posted: list[RunUpdated] = []
    async with app.run_test(size=SIZE) as pilot:
        post = app.main.post_message

        def counted(message):  # counted as posted, before any stale note collapses
            if isinstance(message, RunUpdated):
                posted.append(message)
            return post(message)

        app.main.post_message = counted
        await pilot.press("r")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("finished"))
        state = app.main.session.latest("alpha")
    assert len(posted) == 1 + 6 + 1  # started, each epoch's end, finished
    assert len(state.history.batch_losses) == 6 * tui_fake.BATCHES  # and not one batch loss lost


@pytest.mark.slow
async def test_export_names_the_folder_and_a_bad_folder_is_an_error(tiny_toml, runs_dir, tmp_path):
    exports = tmp_path / "exports"
    app = make_app(tiny_toml, {}, runs_dir, exports, trainer=fake_train, device_label="cpu")

    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("finished"))
        await pilot.press("e")
        await until(pilot, lambda: any(n.startswith("export\nexported") for n in notes(app)))
        (note,) = [n for n in notes(app) if n.startswith("export\nexported")]
        assert f"to {exports}/" in note and "nothing recorded yet for: beta" in note
        assert (exports / "alpha" / "loss_history.npz").exists()
        app.main.exports_dir = tiny_toml  # a file, not a folder
        await pilot.press("e")
        await until(pilot, lambda: any(n.startswith("export failed") for n in notes(app)))
        assert app.is_running


@pytest.mark.slow
async def test_export_without_a_cjk_font_says_which_package_to_install(
    tiny_toml, runs_dir, tmp_path, monkeypatch
):
    from cnntui.report import figures

    monkeypatch.setattr(figures, "find_cjk_font", lambda: None)
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "exports", trainer=fake_train)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("finished"))
        await pilot.press("e")

        def exported() -> list:
            return [t for t in app.screen.query("Toast") if t.render().plain.startswith("export\n")]

        (toast,) = await until(pilot, exported, what="the export's note")
        message = toast.render().plain.removeprefix("export\n")
        assert message.startswith("exported") and "fonts-noto-cjk" in message
        assert toast.has_class("-warning")


# -- marks, views, sorting, help ----------------------------------------------------------


@pytest.mark.slow
async def test_marked_runs_are_overlaid_and_results_sort(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", 2, trainer=fake_train)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")
        await until(pilot, lambda: all(s.ended for s in app.main.session.runs.values()))
        assert app.main.shown() == ["alpha"]
        await pilot.press("space", "down", "space")
        assert app.main.shown() == ["alpha", "beta"]
        assert str(app.main.table.get_cell("alpha", "mark")) == "●"
        await pilot.press("v")
        results = app.main.results
        assert results.has_focus
        await pilot.press("right", "right", "right", "right", "s")  # final accuracy
        accs = [results.rows_by_key[k].final_test_acc for k in results.ordered()]
        assert accs == sorted(accs, reverse=True)
        first = str(results.get_row_at(0)[0])
        await pilot.press("s")
        assert str(results.get_row_at(0)[0]) != first
        await pilot.press("v", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = str(app.screen.query_one(Static).render())
        for key in ("run the highlighted experiment", "ctrl+r", "resume", "log scale"):
            assert key in help_text
        await pilot.press("escape")
        assert app.screen is app.main


@pytest.mark.process
async def test_resume_continues_the_latest_unfinished_run(tiny_toml, runs_dir, tmp_path):
    from cnntui.core.events import EpochEnd
    from cnntui.runs.store import RunStore
    from tests.helpers import train

    exp = load(tiny_toml).get("alpha")
    store = RunStore(runs_dir)
    run = store.create(exp)
    cancel = threading.Event()
    for event in train(exp, cancel, run):
        if isinstance(event, EpochEnd):
            cancel.set()  # stop in epoch 2, after the first checkpoint
    assert store.latest("alpha").status == "cancelled"

    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x")
    async with app.run_test(size=SIZE) as pilot:
        assert app.main.results.rows_by_key[str(run.path)].status == "cancelled"
        await pilot.press("R")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("finished"))
        state = app.main.session.latest("alpha")
        assert state.run_dir == str(run.path)
        assert state.history.epochs_done == 2  # epoch 1 from disk, epoch 2 trained now
        assert app.main.results.rows_by_key[str(run.path)].status == "finished"
        await pilot.press("R")  # nothing left to resume: says so, starts nothing
        assert len(app.main.session.runs) == 1
    (summary,) = summaries(runs_dir, "alpha")
    assert summary["status"] == "finished" and summary["epochs_done"] == 2


# -- editing experiments.toml ---------------------------------------------------------------


async def type_into(pilot, app, key: str, value: str) -> None:
    field = app.screen.query_one(f"#field-{key}", Input)
    field.focus()
    field.value = ""
    await pilot.press(*value)


@pytest.mark.slow
async def test_edit_saves_and_keeps_the_comment(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", device_label="cpu")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("E")
        assert isinstance(app.screen, ExperimentForm)
        await type_into(pilot, app, "lr", "-1")
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, ExperimentForm)  # refused, form still open
        assert "out of range" in str(app.screen.query_one("#form-error", Static).render())
        await type_into(pilot, app, "lr", "0.05")
        await pilot.press("ctrl+s")
        assert app.screen is app.main
        assert "lr=0.05" in settings_cell(app, "alpha")
    text = tiny_toml.read_text()
    assert text.startswith("# a comment the user wrote\n")
    assert load(tiny_toml).get("alpha").lr == 0.05
    assert load(tiny_toml).get("beta").lr == 0.02


@pytest.mark.slow
async def test_new_and_duplicate_append_experiments(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", device_label="cpu")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await type_into(pilot, app, "name", "gamma")
        await type_into(pilot, app, "title", "丙")
        await type_into(pilot, app, "epochs", "3")
        await pilot.press("ctrl+s")
        assert app.screen is app.main
        assert app.main.table.highlighted == "gamma"
        await pilot.press("d")
        assert app.screen.query_one("#field-name", Input).value == "gamma-copy"
        await type_into(pilot, app, "name", "alpha")  # taken: the loader's rule says so
        await pilot.press("ctrl+s")
        assert "duplicate experiment name" in str(
            app.screen.query_one("#form-error", Static).render()
        )
        await type_into(pilot, app, "name", "delta")
        await pilot.press("ctrl+s")
        assert app.main.table.row_count == 4
    file = load(tiny_toml)
    assert file.names() == ["alpha", "beta", "gamma", "delta"]
    assert file.get("delta").epochs == 3 and file.get("delta").title == "丙"
    assert tiny_toml.read_text().startswith("# a comment the user wrote\n")


async def test_broken_file_shows_its_error_and_keeps_the_list(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", device_label="cpu")
    async with app.run_test(size=SIZE) as pilot:
        good = tiny_toml.read_text()
        tiny_toml.write_text(good.replace("lr = 0.02", 'lr = "fast"'))
        await pilot.press("ctrl+r")
        line = app.main.query_one("#file-error", Static)
        assert line.display
        message = str(line.render())
        assert message.startswith(f"{tiny_toml}:20:1:") and "'lr'" in message
        assert app.main.table.row_count == 2  # the last good list
        await pilot.press("E")  # editing a broken file is refused, not crashed
        assert app.screen is app.main
        tiny_toml.write_text(good)
        await pilot.press("ctrl+r")
        assert not line.display


async def test_app_opens_on_a_broken_file(tmp_path, runs_dir):
    cfg = tmp_path / "experiments.toml"
    cfg.write_text("[defaults]\nbatch_size = 0\n")
    app = make_app(cfg, {}, runs_dir, tmp_path / "x", device_label="cpu")
    async with app.run_test(size=SIZE) as pilot:
        message = str(app.main.query_one("#file-error", Static).render())
        assert message.startswith(f"{cfg}:2:1:") and "batch_size" in message
        await pilot.press("r", "a", "space", "c")
        assert app.is_running and not app.main.session.runs


# -- quitting -----------------------------------------------------------------------------


@pytest.mark.slow
async def test_quit_with_a_run_active_asks_cancels_and_keeps_history(tiny_toml, runs_dir, tmp_path):
    # Runs in threads of the app's process: they cannot outlive it, so quitting cancels them.
    app = make_app(tiny_toml, {"epochs": 500}, runs_dir, tmp_path / "x", executor="thread")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        state = app.main.session.latest("alpha")
        await until(pilot, lambda: state.done > 0)
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # changed my mind: still running
        assert app.screen is app.main and state.status == "running"
        workers = app.main.run_workers()
        await pilot.press("q")
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running)
    assert workers and all(w.is_finished for w in workers)  # the training loop has stopped
    assert state.status == "cancelled"
    (summary,) = summaries(runs_dir, "alpha")
    assert summary["status"] == "cancelled" and summary["batches_done"] > 0


async def test_quit_with_nothing_running_quits_at_once(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", device_label="cpu")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running)  # it never asks


@pytest.mark.slow
@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_everything_fits(tiny_toml, runs_dir, tmp_path, size):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c")
    async with app.run_test(size=size) as pilot:
        await pilot.press("a")
        await until(pilot, lambda: all(s.ended for s in app.main.session.runs.values()))
        # At 80x24 the three charts stand side by side, each as tall as the panel; taller,
        # the per-epoch ones share the column beside the batch chart.
        for widget_id in ("#chart-batch", "#chart-epoch", "#chart-acc"):
            region = app.main.query_one(widget_id).region
            assert region.width >= 20 and region.height >= 10, (widget_id, region)
        epoch, acc = (app.main.query_one(w).region for w in ("#chart-epoch", "#chart-acc"))
        assert (epoch.y == acc.y) == (size == (80, 24))
        assert app.main.table.region.height == 3  # header and both rows
        assert app.screen.query_one("Footer").region.bottom == size[1]


async def test_header_shows_gpu_memory_on_cuda(tiny_toml, runs_dir, tmp_path, monkeypatch):
    import torch

    from cnntui.core import devices

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (100 * 2**30, 141 * 2**30))
    # the device probe finds a CUDA device (this machine need not have one)
    monkeypatch.setattr(devices, "resolve_device", lambda spec: torch.device("cuda", 0))
    monkeypatch.setattr(devices, "describe_device", lambda dev: "cuda:0 (NVIDIA H200)")
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x")
    async with app.run_test(size=SIZE) as pilot:
        # the header is redrawn by a timer: wait for its next tick, however busy the machine
        await until(pilot, lambda: "GiB" in app.sub_title)
        assert app.sub_title.startswith("cuda:0 (NVIDIA H200) · 41.0/141 GiB in use · 0 running")


@pytest.mark.parametrize("width", [80, 120])
async def test_the_shipped_experiments_fit_the_terminal_without_sideways_scrolling(
    width, runs_dir, tmp_path
):
    shipped = Path(__file__).resolve().parents[2] / "experiments.toml"
    app = make_app(shipped, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c")
    async with app.run_test(size=(width, 24)) as pilot:
        await pilot.pause()
        table = app.main.table
        assert table.virtual_size.width + table.scrollbar_size_vertical <= width
        columns = [c.label.plain for c in table.ordered_columns]
        # at 80 columns the group gives way to the settings; wider, both show
        assert ("group" in columns) == (width > 80)
        settings = str(table.get_cell("low-lr", "settings"))
        assert settings == "lr=0.0001"
        assert str(table.get_cell("strong-reg", "settings")).startswith(
            "wd=0.1" if width == 80 else "weight_decay=0.1 dropout=0.7"
        )


async def test_the_tui_keeps_a_core_for_the_screen(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {"batch_size": 128}, runs_dir, tmp_path / "x", executor="thread")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("finished"))
        state = app.main.session.latest("alpha")
    from cnntui.core.devices import cpu_cores

    n = max(1, cpu_cores() - 1)
    assert state.device == f"cpu ({n} thread{'s' if n > 1 else ''})"


# -- issue 17: as a new user meets it at 80x24 ------------------------------------------------


def chart_errors(app) -> dict[str, str]:
    from cnntui.tui.widgets.curves import Chart

    return {c.id: c.error for c in app.main.query(Chart) if c.error}


def chart_text(app, chart_id: str) -> str:
    chart = app.main.query_one(f"#{chart_id}")
    return "\n".join(line.text for line in chart.render_lines(chart.region.reset_offset))


@pytest.mark.slow
@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_log_scale_before_any_data_then_run_keeps_the_app(
    tiny_toml, runs_dir, tmp_path, size
):
    app = make_app(
        tiny_toml,
        {"epochs": 50},
        runs_dir,
        tmp_path / "x",
        trainer=slow_trainer(),
        device_label="c",
    )
    async with app.run_test(size=size) as pilot:
        await pilot.press("l", "r")  # log scale while no run has any data yet, then run
        await until(pilot, lambda: status_cell(app, "alpha").startswith("running"))
        state = app.main.session.latest("alpha")
        await until(pilot, lambda: state.history.batch_losses and state.history.epochs_done >= 1)
        # alpha's losses drawn on the log scale
        await until(
            pilot, lambda: any("\u2800" <= ch <= "\u28ff" for ch in chart_text(app, "chart-batch"))
        )
        await pilot.press("down", "a")  # and the other one, with the log scale still on
        await until(pilot, lambda: status_cell(app, "beta") == "queued")
        await pilot.press("up")
        await until(
            pilot,
            lambda: all(
                "(log)" in chart_text(app, chart).splitlines()[0]
                for chart in ("chart-batch", "chart-epoch")
            ),
        )
        assert app.is_running and not chart_errors(app)
        await pilot.press("c", "down", "c")


def dead_pid() -> int:
    """The pid of a process that has exited."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def interrupted_run(tiny_toml: Path, runs_dir: Path) -> Path:
    """alpha's run as a killed process leaves it: summary says running, one epoch saved."""
    from cnntui.core.events import EpochEnd
    from cnntui.core.history import History
    from cnntui.runs.store import RunStore

    run = RunStore(runs_dir).create(load(tiny_toml).get("alpha"))
    history = History()
    history.add(EpochEnd("alpha", 0, 2.0, 0.2, 2.1, 0.18, 1.0))
    run.save(history, "running")
    (run.path / "checkpoint.pt").write_bytes(b"as the epoch end left it")  # fake_train skips it
    run.release()  # the lock dies with the killed process
    summary = json.loads((run.path / "summary.json").read_text())
    summary["pid"] = dead_pid()
    (run.path / "summary.json").write_text(json.dumps(summary))
    return run.path


@pytest.mark.process
async def test_a_run_whose_process_died_shows_interrupted_and_how_to_resume(
    tiny_toml, runs_dir, tmp_path
):
    path = interrupted_run(tiny_toml, runs_dir)
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert status_cell(app, "alpha") == "interrupted ep 1/2 · R resumes"
        assert status_cell(app, "beta") == "idle"
        await pilot.press("v")
        assert app.main.results.rows_by_key[str(path)].status == "interrupted"
        assert str(app.main.results.get_cell(str(path), "status")) == "interrupted"
        await pilot.press("v", "R")  # and R does resume it
        await until(pilot, lambda: status_cell(app, "alpha").startswith("finished"))
        assert app.main.session.latest("alpha").run_dir == str(path)


@pytest.mark.process
async def test_a_run_another_process_trains_turns_interrupted_when_it_dies(
    tiny_toml, runs_dir, tmp_path
):
    import subprocess
    import sys

    path = interrupted_run(tiny_toml, runs_dir)
    hold = (  # as a trainer does: the run's lock, held until the process dies
        "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
        "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", hold, str(path / "lock")], stdout=subprocess.PIPE, text=True
    )
    assert other.stdout.readline() == "locked\n"
    try:
        summary = json.loads((path / "summary.json").read_text())
        summary["pid"] = other.pid  # as if that process were training it
        (path / "summary.json").write_text(json.dumps(summary))
        app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", device_label="c")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert status_cell(app, "alpha").startswith("running elsewhere")
            assert app.main.results.rows_by_key[str(path)].status == "running"
            other.kill()
            other.wait()
            await until(pilot, lambda: status_cell(app, "alpha").startswith("interrupted"))
            await until(
                pilot, lambda: app.main.results.rows_by_key[str(path)].status == "interrupted"
            )
    finally:
        other.kill()
        other.wait()


@pytest.mark.process
def test_list_shows_the_latest_runs_status_and_fits_80_columns(tiny_toml, runs_dir):
    import os
    import subprocess
    import sys

    from cnntui.core.text import width

    interrupted_run(tiny_toml, runs_dir)
    shipped = Path(__file__).resolve().parents[2] / "experiments.toml"
    env = {**os.environ, "COLUMNS": "80"}
    outputs = []
    for config in (tiny_toml, shipped):
        args = ["--list", "--config", config.name, "--runs-dir", str(runs_dir)]
        out = subprocess.run(
            [sys.executable, "-m", "cnntui", *args],
            cwd=config.parent,
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        lines = out.splitlines()
        assert max(width(line) for line in lines) <= 80, out
        assert "latest run" in lines[1]
        outputs.append(lines)
    tiny, study = outputs
    (alpha,) = [line for line in tiny if line.startswith("alpha")]
    assert "interrupted ep 1/2" in alpha
    assert "R in the TUI or `cnntui --run NAME --resume` continues" in " ".join(tiny)
    # the shipped study: a long settings cell wraps in its column instead of widening it
    (at,) = [i for i, line in enumerate(study) if line.startswith("strong-reg")]
    assert "weight_decay=0.1" in study[at] and study[at + 1].split() == ["dropout=0.7"]
    assert "R in the TUI" not in " ".join(study)  # nothing of the study's to resume


@pytest.mark.slow
async def test_run_all_asks_before_running_finished_experiments_again(
    tiny_toml, runs_dir, tmp_path
):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("finished"))
        await pilot.press("a")
        assert isinstance(app.screen, ConfirmScreen)
        question = str(app.screen.query_one("#question", Static).render())
        assert "Run 2: 1 of them already finished with these settings (alpha)" in question
        answers = str(app.screen.query_one("#answers", Static).render())
        assert "n only the 1 unfinished" in answers
        await pilot.press("n")  # only beta
        await until(pilot, lambda: status_cell(app, "beta").startswith("finished"))
        assert [s.name for s in app.main.session.runs.values()] == ["alpha", "beta"]
        await pilot.press("a")  # both finished now
        assert "All 2 already finished" in str(app.screen.query_one("#question").render())
        await pilot.press("escape")
        assert app.screen is app.main and len(app.main.session.runs) == 2
        await pilot.press("a", "y")  # yes: both again
        await until(pilot, lambda: len(app.main.session.runs) == 4)
        await until(pilot, lambda: not app.main.busy())
    # a new session knows from the store which ones finished
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        assert status_cell(app, "alpha").startswith("finished")
        await pilot.press("a")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert not app.main.session.runs


async def test_at_80x24_every_footer_key_shows_in_both_views(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        for view in ("curves", "results"):
            await pilot.pause()
            keys = {k.key: k for k in app.screen.query("FooterKey")}
            for key in ("r", "a", "c", "space", "v", "e", "question_mark", "q"):
                assert key in keys, (view, key)
                assert keys[key].region.right <= SIZE[0] and keys[key].region.width > 0
            if view == "results":
                assert "s" in keys and keys["s"].region.right <= SIZE[0]
            await pilot.press("v")


async def test_a_new_action_dismisses_earlier_notifications(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("s", "plus", "minus")  # three notes, one after another
        await until(pilot, lambda: notes(app) == ["1 run(s) at a time"])
        await pilot.press("a")  # queued 2, and when both end, one note rather than two
        await until(pilot, lambda: not app.main.busy() and len(app.main.session.runs) == 2)
        ended = "all 2 runs ended: 2 finished (v shows the results)"
        shown = await until(pilot, lambda: ended in notes(app) and notes(app), what=ended)
        assert shown[-1] == ended, shown
        assert not any("alpha" in note or "beta" in note for note in shown), shown


async def test_home_and_end_move_the_experiment_cursor(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("end")
        assert app.main.table.highlighted == "beta"
        await pilot.press("home")
        assert app.main.table.highlighted == "alpha"


@pytest.mark.slow
async def test_results_keep_the_name_in_view_and_widen_cells(tiny_toml, runs_dir, tmp_path):
    from textual.widgets.data_table import ColumnKey

    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        results = app.main.results
        await pilot.press("v")
        results.put("a", RunSummary(name="alpha", total_seconds=1.0, status=RunStatus.RUNNING))
        await pilot.pause()
        results.put(
            "a", RunSummary(name="alpha", total_seconds=1000.0, status=RunStatus.INTERRUPTED)
        )
        await pilot.pause()
        for column, shown in (("total_seconds", "16:40"), ("status", "interrupted")):
            assert results.columns[ColumnKey(column)].content_width >= len(shown), column
        await pilot.press(*["right"] * 12)  # to the last column
        await pilot.pause()
        assert results.scroll_x > 0 and results.fixed_columns == 1
        # the name column is painted at the left edge whatever the scroll
        first = results.render_lines(results.region.reset_offset)[1].text
        assert first.lstrip().startswith("alpha"), first


@pytest.mark.slow
async def test_the_form_shows_what_set_overrides(tiny_toml, runs_dir, tmp_path):
    overrides = {"lr": 0.5, "epochs": 1}
    app = make_app(tiny_toml, overrides, runs_dir, tmp_path / "x", device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "E")  # beta sets lr itself (0.02); epochs comes from defaults
        form = app.screen
        assert isinstance(form, ExperimentForm)
        note = str(form.query_one("#form-overrides", Static).render())
        assert "lr=0.5 (the file says 0.02)" in note
        assert "epochs=1 (the file says 2 from [defaults])" in note
        assert str(form.query_one("#override-lr").render()) == "--set 0.5"
        assert form.query_one("#field-lr", Input).value == "0.02"  # the file's value, kept
        assert not form.query("#override-batch_size")
        await pilot.press("ctrl+s")  # saving never writes a session's overrides
    assert load(tiny_toml).get("beta").lr == 0.02
    assert "epochs = 1" not in tiny_toml.read_text()


@pytest.mark.slow
async def test_curves_of_a_run_with_previous_settings_say_so(tiny_toml, runs_dir, tmp_path):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("finished"))
        key = app.main.query_one("#curves-key", Static)
        await until(pilot, lambda: "alpha" in str(key.render()))
        assert "previous" not in str(key.render())
        await pilot.press("E")
        await type_into(pilot, app, "lr", "0.05")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "previous settings" in str(key.render()))
        assert "previous settings: lr=0.01 now 0.05" in str(key.render())
        await pilot.press("a")  # alpha's finished run has old settings: nothing to ask
        assert app.screen is app.main
        await until(pilot, lambda: not app.main.busy() and len(app.main.session.runs) == 3)
        await until(pilot, lambda: "previous" not in str(key.render()))


async def test_hand_edited_summaries_neither_crash_the_start_nor_reach_the_terminal_raw(
    tiny_toml, runs_dir, tmp_path
):
    """Run files edited by hand, cut short or shared by someone hostile: summary values of the
    wrong type show as '-', control characters in text show escaped, a truncated history
    draws no curve, and the app starts."""
    hostile = "\x1b]0;PWNED\x07\x1b[2J"
    stored = {
        "alpha/20240101-000000-aaaaaa": {
            "name": "alpha",
            "title": hostile,
            "model": "lenet\x1b[31m",
            "params": "abc",
            "final_test_acc": "x",
            "best_test_acc": [0.5],
            "total_seconds": {"s": 1},
            "epochs_to_target": "3",
            "started": 5,
            "status": "finished",
        },
        "beta/20240101-000001-bbbbbb": {
            "name": ["beta"],
            "started": "2024-01-01T00:00:01",
            "status": {"not": "a status"},
            "final_train_loss": True,
        },
    }
    for where, summary in stored.items():
        (runs_dir / where).mkdir(parents=True)
        (runs_dir / where / "summary.json").write_text(json.dumps(summary))
    # and a truncated history, whose curve the start draws for the highlighted experiment
    (runs_dir / "alpha/20240101-000000-aaaaaa/history.npz").write_bytes(b"PK\x03\x04\x14")
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("v")
        await pilot.pause()
        results = app.main.results
        assert results.row_count == 2
        cells = {
            key: dict(zip([c.key for c in COLUMNS], map(str, results.get_row(key)), strict=True))
            for key in results.rows_by_key
        }
        alpha = cells[str(runs_dir / "alpha/20240101-000000-aaaaaa")]
        assert alpha["title"] == "\\x1b]0;PWNED\\x07\\x1b[2J" and alpha["model"] == "lenet\\x1b[31m"
        assert [alpha[k] for k in ("params", "final_test_acc", "best_test_acc")] == ["-"] * 3
        assert alpha["total_seconds"] == alpha["epochs_to_target"] == "-"
        beta = cells[str(runs_dir / "beta/20240101-000001-bbbbbb")]
        assert beta["name"] == "beta" and beta["final_train_loss"] == "-"  # its folder's name
        shown = "".join(v for row in cells.values() for v in row.values())
        assert "\x1b" not in shown and "\x07" not in shown
    from cnntui.runs.store import RunStore

    assert RunStore(runs_dir).latest("beta").status == "unknown"  # not a status we wrote


# -- issue 12: per-class results and the learning rate ----------------------------------------

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
FASHION += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def stairs_confusion() -> list[list[int]]:
    """10 test images a class; class i gets 10 - i right, the rest taken for class i + 1."""
    rows = []
    for i in range(10):
        row = [0] * 10
        row[i], row[(i + 1) % 10] = 10 - i, i
        rows.append(row)
    return rows


def stored_run(tiny_toml: Path, runs_dir: Path, name: str, dataset: str, confusion) -> Path:
    """A finished two-epoch run of `name` in the store, trained on `dataset`; `confusion` None
    writes a history as runs did before per-class results were recorded (no such key)."""
    import dataclasses

    from cnntui.core.events import EpochEnd
    from cnntui.core.history import History
    from cnntui.runs.store import RunStore

    exp = dataclasses.replace(load(tiny_toml).get(name), dataset=dataset)
    run = RunStore(runs_dir).create(exp)
    history = History()
    history.add(EpochEnd(name, 0, 2.0, 0.4, 1.9, 0.35, 1.0))
    history.add(EpochEnd(name, 1, 1.5, 0.6, 1.4, 0.55, 1.0, confusion=confusion))
    run.save(history, "finished", total_seconds=2.0, params=62006)
    run.release()
    if confusion is None:
        arrays = {k: v for k, v in history.arrays().items() if k != "confusion"}
        np.savez(run.path / "history.npz", **arrays)
    return run.path


def classes_text(app) -> str:
    return str(app.screen.query_one("#classes", Static).render())


@pytest.mark.slow
async def test_k_shows_the_runs_confusion_matrix_and_per_class_accuracy(
    tiny_toml, runs_dir, tmp_path
):
    from cnntui.tui.screens.classes import ClassesScreen

    with tiny_toml.open("a", encoding="utf-8") as f:
        f.write('\n[[experiment]]\nname = "gamma"\n')
    stored_run(tiny_toml, runs_dir, "alpha", "fashion-mnist", stairs_confusion())
    stored_run(tiny_toml, runs_dir, "beta", "synthetic", None)
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", trainer=fake_train, device_label="c")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.press("C")
        assert isinstance(app.screen, ClassesScreen)
        lines = classes_text(app).splitlines()
        rows = {}
        for line in lines:
            name = next((n for n in FASHION if line.startswith(n)), None)
            if name:
                counts, _, tail = line[len(name) :].partition("│")
                rows[name] = ([int(v) for v in counts.split()], tail.split())
        assert list(rows) == FASHION  # every class by name, in label order
        assert rows["Trouser"] == ([0, 9, 1, 0, 0, 0, 0, 0, 0, 0], ["10", "90.0%"])
        assert rows["Ankle boot"] == ([9, 0, 0, 0, 0, 0, 0, 0, 0, 1], ["10", "10.0%"])
        assert "epoch 2" in lines[1] and "55.00% of 100 test images" in lines[-1]
        # the predicted classes across the top, staggered on two lines, each head ending
        # over its column's counts; cut (distinct) only where the two cells cannot hold it
        heads = ["T-shirt…", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt"]
        heads += ["Sneaker", "Bag", "Ankle bo…"]
        trouser = next(x for x in lines if x.startswith("Trouser"))
        ends = [m.end() for m in re.finditer(r"\d+", trouser.split("│")[0])]
        for j, (head, end) in enumerate(zip(heads, ends, strict=True)):
            assert lines[3 - j % 2][:end].endswith(" " + head), (head, lines[2:4])
        dialog = app.screen.query_one("#dialog")  # fits 80x24 whole, nothing to scroll
        assert dialog.region.right <= SIZE[0] and dialog.region.bottom <= SIZE[1]
        assert dialog.max_scroll_x == 0 and dialog.max_scroll_y == 0
        await pilot.press("p")  # each row's shares instead of the counts
        trouser = next(x for x in classes_text(app).splitlines() if x.startswith("Trouser"))
        assert trouser.split()[1:4] == ["0%", "90%", "10%"]
        await pilot.press("escape")
        assert app.screen is app.main
        # a run from before per-class results were recorded says so in one line
        await pilot.press("down", "C")
        assert isinstance(app.screen, ClassesScreen)
        lines = classes_text(app).splitlines()
        assert len(lines) == 2 and lines[0].startswith("beta · run ")
        assert "kept no confusion matrix" in lines[1]
        await pilot.press("q")
        assert app.screen is app.main
        await pilot.press("down", "C")  # and an experiment with no run at all
        assert app.screen is app.main
        assert notes(app) == ["gamma has no run yet: r runs it"]
        key = str(app.main.query_one("#curves-key", Static).render())
        assert "lr " not in key  # no schedule, no learning rate in the key


@pytest.mark.slow
async def test_the_matrix_appears_when_the_first_epoch_ends(tiny_toml, runs_dir, tmp_path):
    from cnntui.core.events import EpochEnd

    gate = threading.Event()

    def gated(*args):
        for event in fake_train(*args):
            if isinstance(event, EpochEnd):
                gate.wait(60)
            yield event

    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", trainer=gated, device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: app.main.session.latest("alpha").done > 0)
        await pilot.press("C")
        assert "no epoch has ended yet" in classes_text(app)
        gate.set()
        await until(pilot, lambda: "test images" in classes_text(app))
        assert "class 0" in classes_text(app)  # synthetic data: classes by number
        await pilot.press("escape")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("finished"))


@pytest.mark.process
async def test_a_scheduled_run_shows_its_learning_rate_and_validation(
    tiny_toml, runs_dir, tmp_path
):
    overrides = {"lr_schedule": "cosine", "epochs": 3, "val_size": 32}
    app = make_app(tiny_toml, overrides, runs_dir, tmp_path / "x")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        await until(pilot, lambda: status_cell(app, "alpha").startswith("finished"))
        key = app.main.query_one("#curves-key", Static)
        # cosine over 3 epochs from 0.01: 0.01, 0.0075, 0.0025
        await until(pilot, lambda: "alpha lr 0.01→0.0025" in str(key.render()))
        assert "per epoch: ⠤ train • test x val" in str(key.render())
        curve = app.main.session.latest("alpha").curve(64)
        assert len(curve.val_loss) == 3 and all(np.isfinite(curve.val_acc))
        await pilot.press("C")  # the engine's matrix counts every test image
        assert "of 128 test images" in classes_text(app)


@pytest.mark.slow
async def test_the_form_explains_each_field_and_completes_its_choices(
    tiny_toml, runs_dir, tmp_path
):
    app = make_app(tiny_toml, {}, runs_dir, tmp_path / "x", device_label="c")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("E")
        form = app.screen
        assert isinstance(form, ExperimentForm)
        assert str(form.query_one("#field-lr", Input).tooltip) == (
            "learning rate, per step (must be > 0)"
        )
        assert "allowed: sgd, adam, adamw" in str(form.query_one("#field-optimizer").tooltip)
        await type_into(pilot, app, "optimizer", "ada")
        await pilot.press("right")  # takes the completion offered
        assert form.query_one("#field-optimizer", Input).value == "adam"
