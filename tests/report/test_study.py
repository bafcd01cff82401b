"""The fuller study: validation split, learning-rate schedules, early stopping, the best
checkpoint and per-class results."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cnntui.core import engine
from cnntui.core.data import class_names, make_synthetic, validation_split
from cnntui.core.engine import confusion_matrix
from cnntui.core.events import BatchLosses, Cancelled, EpochEnd, Finished, Started
from cnntui.core.history import History, best_epoch, early_stop, metrics
from cnntui.core.lr_schedules import epoch_lr
from cnntui.runs.store import RunStore
from tests.helpers import tiny_experiment, train

# --- validation split -------------------------------------------------------------------


def test_validation_split_is_stratified_disjoint_and_fixed_by_the_seed() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)[torch.randperm(100)]
    train_idx, val_idx = validation_split(labels, 10, seed=3)
    assert len(train_idx) == 90 and len(val_idx) == 10
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(100))
    # Each class gives its share: 50 % / 30 % / 20 % of 10.
    assert torch.bincount(labels[val_idx], minlength=3).tolist() == [5, 3, 2]
    again = validation_split(labels, 10, seed=3)
    assert again[1].tolist() == val_idx.tolist()
    assert validation_split(labels, 10, seed=4)[1].tolist() != val_idx.tolist()


def test_validation_split_rounds_shares_to_the_size_asked() -> None:
    labels = torch.tensor([0] * 7 + [1] * 7 + [2] * 7)
    _, val_idx = validation_split(labels, 5, seed=0)
    counts = torch.bincount(labels[val_idx], minlength=3).tolist()
    assert sum(counts) == 5 and max(counts) - min(counts) <= 1
    with pytest.raises(ValueError, match="leaves no training images"):
        validation_split(labels, 21, seed=0)


def test_a_run_with_val_size_records_validation_and_picks_best_on_it(runs_dir: Path) -> None:
    exp = tiny_experiment(epochs=3, val_size=64, lr=0.05)
    store = RunStore(runs_dir)
    run = store.create(exp)
    events = list(train(exp, None, run))
    started = events[0]
    assert isinstance(started, Started) and started.batches_per_epoch == 6  # 192 / 32
    ends = [e for e in events if isinstance(e, EpochEnd)]
    assert all(0 <= e.val_acc <= 1 and e.val_loss > 0 for e in ends)
    record = store.latest(exp.name)
    s = record.summary
    assert (s.train_images, s.val_images, s.test_images) == (192, 64, 128)
    best = int(np.argmax([e.val_acc for e in ends]))
    assert s.best_epoch == best + 1
    assert s.best_val_acc == ends[best].val_acc
    assert s.test_acc_at_best == ends[best].test_acc
    saved = np.load(run.path / "history.npz")
    assert saved["val_acc"].tolist() == [e.val_acc for e in ends]
    assert saved["val_loss"].tolist() == [e.val_loss for e in ends]


def test_val_size_too_large_fails_with_one_line(runs_dir: Path) -> None:
    events = list(train(tiny_experiment(val_size=256)))
    assert events[-1].reason.startswith("val_size 256 leaves no training images (there are 256)")


def test_without_a_split_no_epoch_is_chosen_on_the_test_set() -> None:
    h = History()
    for i, acc in enumerate([0.2, 0.5, 0.4]):
        h.add(EpochEnd("x", i, 1.0, 0.3, 1.0, acc, 1.0, lr=0.1))
    m = metrics(h, 0.5, 3.0)
    assert best_epoch(h) is None and m.best_epoch is None
    assert math.isnan(m.best_test_acc) and math.isnan(m.test_acc_at_best)  # not 0.5
    assert m.final_test_acc == 0.4 and math.isnan(m.best_val_acc)
    arrays = h.arrays()
    assert np.isnan(arrays["val_loss"]).all() and arrays["lr"].tolist() == [0.1] * 3


def test_best_epoch_follows_validation_not_test() -> None:
    h = History()
    for i, (val, test) in enumerate([(0.3, 0.6), (0.5, 0.4), (0.4, 0.7)]):
        h.add(EpochEnd("x", i, 1.0, 0.3, 1.0, test, 1.0, val_loss=1.0, val_acc=val))
    assert best_epoch(h) == 1
    m = metrics(h, 0.5, 3.0)
    assert (m.best_epoch, m.best_val_acc, m.test_acc_at_best) == (2, 0.5, 0.4)
    assert m.best_test_acc == 0.4  # not 0.7: the test set does not choose the epoch


def test_an_older_history_without_the_study_keys_still_reads() -> None:
    h = History()
    h.add(EpochEnd("x", 0, 1.0, 0.3, 1.0, 0.5, 1.0))
    old = {k: v for k, v in h.arrays().items() if k not in ("val_loss", "val_acc", "lr")}
    old.pop("confusion")
    back = History.from_arrays(old)
    assert back.epochs_done == 1 and math.isnan(back.lr[0]) and back.confusion == []


# --- learning-rate schedules --------------------------------------------------------------


def lrs(**kw) -> list[float]:
    exp = tiny_experiment(lr=0.1, **kw)
    return [epoch_lr(exp, e) for e in range(exp.epochs)]


def test_each_schedule_follows_its_formula() -> None:
    assert lrs(epochs=4) == [0.1] * 4
    assert lrs(epochs=7, lr_schedule="step", lr_step_epochs=3, lr_gamma=0.5) == pytest.approx(
        [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]
    )
    cosine = lrs(epochs=4, lr_schedule="cosine")
    assert cosine == pytest.approx([0.1 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)])
    # onecycle over 11 epochs: up from lr/25 to lr at epoch round(0.3 * 10) = 3, then a
    # cosine down to lr/1e4 at the last epoch.
    one = lrs(epochs=11, lr_schedule="onecycle")
    assert one[0] == pytest.approx(0.1 / 25) and one[3] == pytest.approx(0.1)
    assert one[1] == pytest.approx(0.1 / 25 + (0.1 - 0.1 / 25) / 3)
    assert one[-1] == pytest.approx(1e-5)
    assert one[7] == pytest.approx(1e-5 + (0.1 - 1e-5) * (1 + math.cos(math.pi * 4 / 7)) / 2)
    assert max(one) == one[3] and one[3:] == sorted(one[3:], reverse=True)
    assert lrs(epochs=1, lr_schedule="onecycle") == [0.1]


def test_warmup_ramps_from_a_tenth_then_the_schedule_starts() -> None:
    warm = lrs(epochs=6, warmup_epochs=2, lr_schedule="step", lr_step_epochs=2, lr_gamma=0.5)
    assert warm == pytest.approx([0.01, 0.055, 0.1, 0.1, 0.05, 0.05])
    cos = lrs(epochs=5, warmup_epochs=1, lr_schedule="cosine")
    assert cos[0] == pytest.approx(0.01) and cos[1] == pytest.approx(0.1)
    assert cos[2] == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)) / 2)


def test_the_engine_trains_each_epoch_at_the_scheduled_rate() -> None:
    exp = tiny_experiment(epochs=3, lr_schedule="step", lr_step_epochs=1, lr_gamma=0.5)
    ends = [e for e in train(exp) if isinstance(e, EpochEnd)]
    assert [e.lr for e in ends] == [0.01, 0.005, 0.0025]


def test_the_constant_schedule_never_touches_the_optimizer(monkeypatch) -> None:
    """Default settings train exactly as before the schedules existed: the optimizer's rate
    is never written, so the loss history is the same bit for bit. (Measured against the
    code before this change: the same batch losses and epoch metrics for SGD and for Adam
    with dropout and augmentation.)"""

    def refuse(*_):
        raise AssertionError("the constant schedule set a learning rate")

    monkeypatch.setattr(engine, "epoch_lr", refuse)
    events = list(train(tiny_experiment(epochs=2)))
    assert isinstance(events[-1], Finished)
    assert [e.lr for e in events if isinstance(e, EpochEnd)] == [0.01, 0.01]


def test_resume_continues_the_schedule(runs_dir: Path) -> None:
    exp = tiny_experiment(epochs=3, lr_schedule="cosine", warmup_epochs=1)
    full = [e for e in train(exp) if isinstance(e, EpochEnd)]
    store = RunStore(runs_dir)
    cancel = threading.Event()
    for event in train(exp, cancel, store.create(exp)):
        if isinstance(event, EpochEnd):
            cancel.set()
    record = store.latest(exp.name, unfinished=True)
    assert record is not None and record.status == "cancelled"
    list(train(exp, None, store.reopen(record), record.checkpoint))
    resumed = store.latest(exp.name).history()
    assert resumed.lr == [e.lr for e in full] == [epoch_lr(exp, t) for t in range(3)]
    assert resumed.test_loss == [e.test_loss for e in full]


# --- early stopping ------------------------------------------------------------------------


def test_early_stop_on_a_crafted_history() -> None:
    losses = [1.0, 0.8, 0.9, 0.85, 0.7, 0.75, 0.75, 0.71]
    stops = [n for n in range(1, len(losses) + 1) if early_stop(losses[:n], 3)]
    assert stops[0] == 8  # 0.7 at epoch 5, then three epochs none lower
    assert [n for n in range(1, 5) if early_stop(losses[:n], 2)] == [4]
    assert not any(early_stop(losses[:n], 0) for n in range(1, 9))  # 0 = off
    assert early_stop([1.0, 1.0], 1)  # equal is no improvement
    assert early_stop([1.0, float("nan")], 1)


def test_an_early_stopped_run_finishes_and_a_resume_does_not_train_on(
    runs_dir: Path, monkeypatch
) -> None:
    # lr 0 trains nothing: the validation loss never falls, so patience 1 stops after epoch 2.
    exp = tiny_experiment(epochs=5, lr=1e-12, early_stop_patience=1, val_size=64)
    store = RunStore(runs_dir)
    events = list(train(exp, None, store.create(exp)))
    assert isinstance(events[-1], Finished) and events[-1].stopped_early == 2
    record = store.latest(exp.name)
    assert record.status == "finished"
    assert record.summary.reason == "early stop at epoch 2"
    assert record.summary.stopped_early == 2 and record.summary.epochs_done == 2
    assert (record.path / "weights.pt").is_file() and (record.path / "best.pt").is_file()
    again = list(train(exp, None, store.reopen(record), record.checkpoint))
    assert not any(isinstance(e, BatchLosses | EpochEnd) for e in again)
    assert isinstance(again[-1], Finished) and again[-1].stopped_early == 2
    assert store.latest(exp.name).history().epochs_done == 2
    assert not any(isinstance(e, Cancelled) for e in events)


def test_without_a_split_early_stopping_never_watches_the_test_loss(runs_dir: Path) -> None:
    # Built in code, past the config's refusal: the test loss never falls, yet it trains on.
    exp = tiny_experiment(epochs=3, lr=1e-12, early_stop_patience=1)
    store = RunStore(runs_dir)
    events = list(train(exp, None, store.create(exp)))
    assert isinstance(events[-1], Finished) and events[-1].stopped_early is None
    record = store.latest(exp.name)
    assert record.summary.epochs_done == 3 and record.summary.best_epoch is None
    assert not (record.path / "best.pt").exists()  # no epoch chosen on the test set


# --- best checkpoint -------------------------------------------------------------------------


def test_best_pt_holds_the_weights_of_the_best_epoch(runs_dir: Path) -> None:
    exp = tiny_experiment(epochs=3, val_size=64, lr=0.05)
    store = RunStore(runs_dir)
    best_states: dict[int, dict] = {}
    run = store.create(exp)
    for event in train(exp, None, run):
        if isinstance(event, EpochEnd):
            best_states[event.epoch] = torch.load(run.path / "checkpoint.pt")["model"]
    summary = json.loads((run.path / "summary.json").read_text())
    best = torch.load(run.path / "best.pt")
    want = best_states[summary["best_epoch"] - 1]
    assert all(torch.equal(best[k], want[k]) for k in want)


# --- per-class results ----------------------------------------------------------------------


def test_confusion_matrix_against_a_hand_count() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 2, 2, 0])
    assert confusion_matrix(labels, predicted, 3).tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]


def test_a_run_records_the_last_epochs_confusion_matrix(runs_dir: Path) -> None:
    exp = tiny_experiment(epochs=2)
    store = RunStore(runs_dir)
    events = list(train(exp, None, store.create(exp)))
    last = [e for e in events if isinstance(e, EpochEnd)][-1]
    saved = np.load(store.latest(exp.name).path / "history.npz")["confusion"]
    assert saved.shape == (10, 10) and saved.dtype.kind == "i" and saved.sum() == 128
    assert np.trace(saved) / 128 == pytest.approx(last.test_acc)
    assert saved.tolist() == [list(r) for r in last.confusion]


def test_class_names() -> None:
    assert class_names("cifar10")[:2] == ("airplane", "automobile")
    assert class_names("fashion-mnist")[-1] == "Ankle boot"
    assert class_names("synthetic") == tuple(f"class {i}" for i in range(10))
    assert make_synthetic(8, 8).classes == 10


def test_captions_name_the_validation_split() -> None:
    from cnntui.report.tables import describe_data

    assert describe_data("cifar10", 45_000, 10_000, 5_000) == (
        "CIFAR-10, 45,000 train / 5,000 validation / 10,000 test images"
    )
    assert describe_data("cifar10", 50_000, 10_000) == "CIFAR-10, 50,000 train / 10,000 test images"
