"""Snapshots of the main screen, fed by the deterministic fake trainer (live losses vary).

Update after an intended change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cnntui.tui.app import CnnTui, make_app
from tests.tui.tui_fake import fake_train
from tests.waiting import until

SNAP_TOML = """\
# snapshot experiments
[defaults]
dataset = "synthetic"
epochs = 3
lr = 0.001
device = "cpu"

[[experiment]]
name = "baseline"
title = "基准配置"
group = "hp"

[[experiment]]
name = "high-lr"
title = "高学习率"
group = "hp"
lr = 0.01

[[experiment]]
name = "no-momentum"
title = "无动量"
group = "hp"
momentum = 0.0
epochs = 4

[[experiment]]
name = "oom-fail"
title = "fails"
model = "resnet"
"""


def snap_app(tmp_path: Path, overrides: dict | None = None) -> CnnTui:
    cfg = tmp_path / "experiments.toml"
    cfg.write_text(SNAP_TOML, encoding="utf-8")
    return make_app(
        cfg,
        overrides or {},
        tmp_path / "runs",
        tmp_path / "exports",
        1,
        trainer=fake_train,
        device_label="cpu (fake)",
    )


async def run_all(pilot, *keys: str) -> None:
    app = pilot.app
    await pilot.press("a")
    runs = app.main.session.runs

    def done() -> bool:  # every run ended and its worker gone: the screen has been told
        workers = [w for w in app.workers if w.group == "runs" and not w.is_finished]
        return bool(runs) and all(s.ended for s in runs.values()) and not workers

    await until(pilot, done, what="every run to end")
    await pilot.pause()  # the screen handles the ends it was told of
    await pilot.press(*keys)
    app.main.tick()  # what the redraw timer does next, now: no wait for it
    app.main.redraw_curves()
    app.clear_notifications()
    await pilot.pause()


def test_main_screen_after_run_all(snap_compare, tmp_path):
    assert snap_compare(snap_app(tmp_path), run_before=run_all, terminal_size=(80, 24))


@pytest.mark.slow
def test_marked_runs_overlaid(snap_compare, tmp_path):
    async def mark_two(pilot):
        await run_all(pilot, "space", "down", "space", "down", "space")

    assert snap_compare(snap_app(tmp_path), run_before=mark_two, terminal_size=(80, 24))


@pytest.mark.slow
def test_results_view(snap_compare, tmp_path):
    async def results(pilot):
        await run_all(pilot, "v")

    assert snap_compare(snap_app(tmp_path), run_before=results, terminal_size=(80, 24))


@pytest.mark.slow
def test_wide_terminal_log_scale(snap_compare, tmp_path):
    async def log(pilot):
        await run_all(pilot, "down", "l")

    assert snap_compare(snap_app(tmp_path), run_before=log, terminal_size=(120, 40))


def test_help(snap_compare, tmp_path):
    assert snap_compare(snap_app(tmp_path), press=["question_mark"], terminal_size=(80, 24))


@pytest.mark.slow
def test_edit_form_with_set_overrides(snap_compare, tmp_path):
    app = snap_app(tmp_path, {"dropout": 0.2, "epochs": 1})
    assert snap_compare(app, press=["down", "E"], terminal_size=(80, 24))


@pytest.mark.slow
def test_run_all_asks_about_finished_ones(snap_compare, tmp_path):
    async def again(pilot):
        await run_all(pilot, "a")

    assert snap_compare(snap_app(tmp_path), run_before=again, terminal_size=(80, 24))


CIFAR_TOML = """\
[defaults]
dataset = "cifar10"
epochs = 10
device = "cpu"

[[experiment]]
name = "arch-resnet"
title = "轻量级 ResNet"
model = "resnet"
"""


def cifar_confusion() -> list[list[int]]:
    """1000 test images a class, as a fair CIFAR-10 model confuses them: cats with dogs,
    cars with trucks, and a little of everything."""
    rows = []
    for i in range(10):
        row = [(3 * i + 7 * j) % 11 for j in range(10)]
        row[{3: 5, 5: 3, 1: 9, 9: 1}.get(i, (i + 2) % 10)] += 60 + 15 * (i % 4)
        row[i] = 0
        row[i] = 1000 - sum(row)
        rows.append(row)
    return rows


def test_per_class_results(snap_compare, tmp_path, monkeypatch):
    from cnntui.core.config import load
    from cnntui.core.events import EpochEnd
    from cnntui.core.history import History
    from cnntui.runs import store

    cfg = tmp_path / "experiments.toml"
    cfg.write_text(CIFAR_TOML, encoding="utf-8")
    monkeypatch.setattr(store, "new_run_id", lambda: "20261129-210000-c1fa10")
    run = store.RunStore(tmp_path / "runs").create(load(cfg).get("arch-resnet"))
    history = History()
    for epoch in range(10):
        end = EpochEnd("arch-resnet", epoch, 1.0, 0.8, 0.9, 0.7, 30.0, confusion=cifar_confusion())
        history.add(end)
    run.save(history, "finished", total_seconds=300.0, params=308650)
    run.release()
    app = make_app(cfg, {}, tmp_path / "runs", tmp_path / "exports", 1, device_label="cpu")
    assert snap_compare(app, press=["C"], terminal_size=(80, 24))


def test_shipped_experiments_at_80x24(snap_compare, tmp_path):
    """All nine in view, settings in whole items, the highlighted one's in full below."""
    from .test_tui_80x24 import shipped_app

    app = shipped_app(tmp_path)
    assert snap_compare(app, press=["j"] * 5, terminal_size=(80, 24))


def test_key_line_with_previous_settings(snap_compare, tmp_path):
    """The note wraps between words and the per-epoch key stays on screen."""
    from .test_tui_80x24 import QUICK, shipped_app, stored_run

    old = {**QUICK, "epochs": 2, "test_size": 100}
    stored_run(tmp_path / "runs", "high-lr", "20260101-000000-aaaaaa", 0.473, **old)
    assert snap_compare(shipped_app(tmp_path, QUICK), press=["j"], terminal_size=(80, 24))


@pytest.mark.slow
def test_results_scrolled_sideways(snap_compare, tmp_path):
    """Whole columns after the name column, and the run's own data and settings below."""
    from .test_tui_80x24 import QUICK, shipped_app, stored_run

    for i, name in enumerate(("high-lr", "strong-reg", "arch-resnet")):
        stored_run(tmp_path / "runs", name, f"20260101-00000{i}-aaaaaa", 0.2 + i / 10, **QUICK)
    old = {**QUICK, "epochs": 2, "test_size": 100}
    stored_run(tmp_path / "runs", "high-lr", "20260101-000009-aaaaaa", 0.473, **old)

    async def sideways(pilot):
        await pilot.press("v", *["right"] * 8)
        await pilot.pause()
        await pilot.pause()

    app = shipped_app(tmp_path, QUICK)
    assert snap_compare(app, run_before=sideways, terminal_size=(80, 24))
