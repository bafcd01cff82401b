"""The TUI's plain-data parts: decimation, curves, the session's queue rules, TOML editing.

None of these need a screen; they run in milliseconds.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tomllib

import numpy as np
import pytest

from cnntui.core.config import ConfigError, load
from cnntui.core.events import BatchLosses, Cancelled, EpochEnd, Finished, Started
from cnntui.core.history import History, moving_average
from cnntui.runs.store import RunStore
from cnntui.tui.session import Session
from cnntui.tui.state import Curve, RunState, envelope, read_history
from cnntui.tui.tomledit import (
    append_experiment,
    own_values,
    read_value,
    save_experiment,
    show_value,
    update_experiment,
)
from tests.helpers import tiny_experiment


@pytest.mark.parametrize(
    "module",
    ["cnntui.tui.state", "cnntui.tui.session", "cnntui.tui.classes", "cnntui.tui.tomledit"],
)
@pytest.mark.process
def test_plain_modules_do_not_import_textual_or_torch(module):
    out = subprocess.run(
        [sys.executable, "-c", f"import {module}, sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "textual" not in out and "torch" not in out


# -- decimation and curves ------------------------------------------------------------------


def test_decimate_keeps_the_envelope_in_order():
    rng = np.random.default_rng(0)
    y = rng.normal(size=100_003)
    y[54_321] = 50.0  # a spike must survive
    x = np.arange(len(y))
    kept = envelope(y, 400)
    dx, dy = x[kept], y[kept]
    assert len(dx) <= 401
    assert np.all(np.diff(dx) > 0)
    assert dy.max() == 50.0 and dy.min() == y[: len(y) // 200 * 200].min()
    assert dx[-1] == len(y) - 1


def test_decimate_leaves_short_curves_alone():
    y = np.arange(10.0)
    assert envelope(y, 400).tolist() == list(range(10))


def test_curve_moving_average_matches_history():
    rng = np.random.default_rng(1)
    losses = rng.uniform(0, 3, size=5000)
    h = History()
    for first in range(0, 5000, 37):  # ragged chunks, as a run's events bring them
        h.add(BatchLosses("x", 0, first, tuple(losses[first : first + 37])))
    assert len(h.batch_losses) == 5000
    c = Curve.of(h, "x", 10_000)  # no decimation
    np.testing.assert_allclose(c.ma_y, moving_average(losses, 100))
    np.testing.assert_array_equal(c.batch_y, losses)
    small = Curve.of(h, "x", 200)
    assert len(small.batch_y) <= 201 and len(small.ma_y) <= 200
    # cut to the screen, the average is still the same at the points drawn
    np.testing.assert_allclose(small.ma_y, moving_average(losses, 100)[small.ma_x])


def test_stored_history_read_and_truncated(tmp_path):
    arrays = {
        "batch_losses": np.arange(30, dtype=float),
        "batch_indices": np.arange(30),
        "epoch_losses": np.array([3.0, 2.0, 1.0]),
        "train_acc": np.array([0.1, 0.2, 0.3]),
        "test_loss": np.array([3.1, 2.1, 1.1]),
        "test_acc": np.array([0.1, 0.2, 0.25]),
        "epoch_seconds": np.ones(3),
    }
    np.savez(tmp_path / "h.npz", **arrays)
    h = read_history(tmp_path / "h.npz")
    h.truncate(20, 2)
    assert len(h.batch_losses) == 20 and h.test_acc == [0.1, 0.2]
    h.add(BatchLosses("x", 0, 20, (5.0,)))
    assert Curve.of(h, "x", 100).batch_y[-1] == 5.0


def test_curves_keep_validation_rates_and_the_last_confusion_matrix(tmp_path):
    exp = tiny_experiment(epochs=2)
    t = RunState(1, exp)
    t.feed(EpochEnd("x", 0, 2.0, 0.3, 1.9, 0.3, 1.0, 2.1, 0.2, 0.01, ((3, 1), (2, 2))))
    t.feed(EpochEnd("x", 1, 1.0, 0.6, 1.1, 0.5, 1.0, 1.2, 0.6, 0.005, ((4, 0), (1, 3))))
    curve = t.curve(64)
    assert curve.val_loss == [2.1, 1.2] and curve.val_acc == [0.2, 0.6]
    assert curve.lr == [0.01, 0.005] and t.history.confusion == [[4, 0], [1, 3]]
    # the results row picks the best epoch on validation, as the store does
    state = RunState(1, exp)
    state.feed(EpochEnd("x", 0, 2.0, 0.3, 1.9, 0.7, 1.0, 2.1, 0.2))
    state.feed(EpochEnd("x", 1, 1.0, 0.6, 1.1, 0.5, 1.0, 1.2, 0.6))
    assert state.summary().best_test_acc == 0.5
    # a stored history reads back the same; one from before these keys reads NaN and none
    h = History()
    for event in (
        EpochEnd("x", 0, 2.0, 0.3, 1.9, 0.3, 1.0, 2.1, 0.2, 0.01, ((3, 1), (2, 2))),
        EpochEnd("x", 1, 1.0, 0.6, 1.1, 0.5, 1.0, 1.2, 0.6, 0.005, ((4, 0), (1, 3))),
    ):
        h.add(event)
    np.savez(tmp_path / "h.npz", **h.arrays())
    back = read_history(tmp_path / "h.npz")
    assert back.lr == [0.01, 0.005] and back.val_acc == [0.2, 0.6]
    assert back.confusion == [[4, 0], [1, 3]]
    old = {
        k: v for k, v in h.arrays().items() if k not in ("val_loss", "val_acc", "lr", "confusion")
    }
    np.savez(tmp_path / "old.npz", **old)
    before = read_history(tmp_path / "old.npz")
    assert np.isnan(before.lr).all() and len(before.val_loss) == 2 and before.confusion == []
    back.truncate(0, 1)
    assert back.lr == [0.01] and back.val_loss == [2.1]


def test_a_run_followed_without_matrices_shows_the_one_its_history_holds(tiny_toml, runs_dir):
    """Events replayed from the run store carry no confusion matrix: the view reads it from
    the run's history.npz, again when the file changes."""
    from cnntui.tui.classes import class_view

    session = Session(tiny_toml, {}, RunStore(runs_dir))
    session.reload()
    run = session.store.create(session.experiment("alpha"))
    state = session.enqueue(session.experiment("alpha"))
    state.feed(Started("alpha", run.run_id, str(run.path), "cpu", 100, 2, 4))
    assert class_view(session, "alpha").message.startswith("no epoch has ended yet")
    history = History()
    for i, matrix in enumerate((((1, 1), (0, 2)), ((2, 0), (1, 1)))):
        history.add(EpochEnd("alpha", i, 1.0, 0.5, 1.0, 0.5, 1.0, confusion=matrix))
        run.save(history)
        state.feed(EpochEnd("alpha", i, 1.0, 0.5, 1.0, 0.5, 1.0))  # as followed: no matrix
        view = class_view(session, "alpha")
        assert view.confusion == [list(r) for r in matrix] and view.epoch == i + 1
    run.release()


def test_run_state_follows_the_events():
    exp = tiny_experiment(epochs=2, target_acc=0.2)
    now = [100.0]  # the clock the run's pace is measured with, moved by the test
    s = RunState(1, exp, clock=lambda: now[0])
    s.feed(Started("tiny", "id", None, "cpu", 100, 2, 4))
    assert s.status == "running" and s.progress() == 0
    assert math.isnan(s.eta())  # no pace before a batch has trained
    now[0] = 112.0
    s.feed(BatchLosses("tiny", 0, 0, (2.0, 1.9, 1.8, 1.7)))
    # 4 batches of 8 in 12 s: the other 4 take 12 s more; the estimate moves with the clock
    assert s.progress() == 0.5 and s.eta() == 12.0
    now[0] = 116.0
    assert s.eta() == 16.0
    s.feed(EpochEnd("tiny", 0, 1.85, 0.3, 1.9, 0.25, 2.0))
    s.feed(Finished("tiny", 2.5))
    summary = s.summary()
    assert summary.status == "finished" and summary.epochs_to_target == 1
    assert summary.final_test_acc == 0.25 and summary.total_seconds == 2.5
    assert summary.gap == pytest.approx(0.05)


# -- the session --------------------------------------------------------------------------


def test_session_queue_respects_jobs_and_one_run_per_experiment(tiny_toml, runs_dir):
    session = Session(tiny_toml, {}, RunStore(runs_dir), jobs=1)
    assert session.reload()
    alpha, beta = session.experiments
    a = session.enqueue(alpha)
    assert isinstance(session.enqueue(alpha), str)  # already queued
    b = session.enqueue(beta)
    assert session.to_start() == [a] and a.status == "starting"
    assert session.to_start() == []  # one at a time
    assert "removed from the queue" in session.cancel("beta") and b.status == "cancelled"
    assert session.cancel("alpha").startswith("cancelling") and a.cancel.is_set()
    a.feed(Cancelled("alpha"))
    assert isinstance(session.enqueue(alpha), RunState)  # ended: may run again


def test_session_reload_keeps_the_last_good_list(tiny_toml, runs_dir):
    session = Session(tiny_toml, {"epochs": 7}, RunStore(runs_dir))
    assert session.reload()
    assert [e.epochs for e in session.experiments] == [7, 7]  # --set applies
    assert session.apart_from_defaults(session.experiments[1]) == {"lr": 0.02}
    tiny_toml.write_text("[[experiment]]\nname = 'x'\nbogus = 1\n")
    assert not session.reload()
    assert session.error.startswith(f"{tiny_toml}:3:1: unknown key 'bogus'")
    assert [e.name for e in session.experiments] == ["alpha", "beta"]


# -- editing experiments.toml -------------------------------------------------------------

COMMENTED = """\
# top comment
[defaults]
lr = 0.01   # my lr

[[experiment]]
name = "a"
dropout = 0.5  # keep this note
epochs = 3

# --- a section comment before b
[[experiment]]
name = "b"
"""


def test_update_keeps_comments_and_puts_new_keys_in_the_table():
    out = update_experiment(
        COMMENTED, 0, {"name": "a", "dropout": 0.25, "momentum": 0.5, "epochs": None}
    )
    assert "dropout = 0.25  # keep this note" in out
    assert "# top comment" in out and "lr = 0.01   # my lr" in out
    assert "epochs" not in out
    # the new key sits with a's keys, above the comment that introduces b
    assert out.index("momentum = 0.5") < out.index("# --- a section comment")
    doc = tomllib.loads(out)
    assert doc["experiment"][0] == {"name": "a", "dropout": 0.25, "momentum": 0.5}
    assert doc["experiment"][1] == {"name": "b"}


def test_append_adds_a_table_after_a_blank_line():
    out = append_experiment(COMMENTED, {"name": "c", "title": "丙", "lr": 0.1, "seed": None})
    assert out.startswith(COMMENTED)
    assert out.endswith('\n\n[[experiment]]\nname = "c"\ntitle = "丙"\nlr = 0.1\n')


def test_save_refuses_what_the_loader_refuses(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_text(COMMENTED)
    with pytest.raises(ConfigError, match="duplicate experiment name 'a'"):
        save_experiment(path, {"name": "a"})
    assert path.read_text() == COMMENTED  # nothing written
    file = save_experiment(path, {"name": "b", "lr": 0.2}, index=1)
    assert file.get("b").lr == 0.2 and load(path).get("b").lr == 0.2
    assert own_values(path.read_text())[1] == {"name": "b", "lr": 0.2}


def test_save_keeps_a_byte_order_mark_and_the_file_loads(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_bytes(("\ufeff" + COMMENTED).encode())
    assert [t["name"] for t in own_values(path.read_text(encoding="utf-8"))] == ["a", "b"]
    save_experiment(path, {"name": "a", "lr": 0.5}, index=0)
    save_experiment(path, {"name": "c"})
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf# top comment") and raw.count(b"\xef\xbb\xbf") == 1
    assert "# top comment" in raw.decode() and load(path).get("a").lr == 0.5
    assert load(path).names() == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("key", "raw", "value"),
    [
        ("lr", "0.01", 0.01),
        ("lr", "1e-3", 0.001),
        ("epochs", " 7 ", 7),
        ("augment", "true", True),
        ("device", "cuda:0", "cuda:0"),
        ("device", '"cpu"', "cpu"),
        ("title", "2024", "2024"),
        ("title", "基准配置", "基准配置"),
        ("train_size", "", None),
    ],
)
def test_read_value(key, raw, value):
    assert read_value(key, raw) == value


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("lr", "fast", "'lr'"),
        ("lr", "0", "out of range"),
        ("epochs", "1.5", "integer"),
        ("model", "vgg", "unknown model"),
        ("name", "a b", "out of range"),
    ],
)
def test_read_value_rejects(key, raw, message):
    with pytest.raises(ConfigError, match=message):
        read_value(key, raw)


def test_show_value_round_trips():
    for key, value in (("lr", 0.001), ("augment", False), ("epochs", 5), ("title", "标题")):
        assert read_value(key, show_value(value)) == value


def test_a_file_edited_to_disagree_with_the_overrides_keeps_the_last_good_list(tiny_toml, runs_dir):
    """--set train_size=100 was fine until alpha got val_size = 100: the app keeps the list it
    had and shows why, as for any other mistake in the file."""
    session = Session(tiny_toml, {"train_size": 100}, RunStore(runs_dir))
    assert session.reload() and session.error == ""
    tiny_toml.write_text(
        tiny_toml.read_text().replace('title = "甲"', 'title = "甲"\nval_size = 100')
    )
    assert not session.reload()
    assert session.error.startswith("--set 'train_size=100': 'train_size' = 100 leaves experiment")
    assert [e.val_size for e in session.experiments] == [0, 0]


def test_a_previous_setting_now_unset_reads_unset_not_blank() -> None:
    from cnntui.tui.screens.main.views import previous_settings

    said = previous_settings({"train_size": (200, None), "lr": (None, 0.05)})
    assert said == "previous settings: train_size=200 now unset, lr=unset now 0.05"
