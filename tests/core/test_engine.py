"""The engine: event stream, the report's loss_history, determinism, cancel, divergence,
resume, and what the run store keeps."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cnntui.core.events import BatchLosses, Cancelled, Diverged, EpochEnd, Failed, Finished, Started
from cnntui.core.history import History
from cnntui.runs.store import RunStore
from tests.helpers import tiny_experiment, train


def run_to_end(exp, store=None, cancel=None, resume=None, run=None):
    run = run or (store.create(exp) if store else None)
    events = list(train(exp, cancel, run, resume))
    return events, run


def test_events_come_in_order_and_history_matches_the_report(runs_dir: Path) -> None:
    exp = tiny_experiment(epochs=3)
    events, run = run_to_end(exp, RunStore(runs_dir))
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    started = events[0]
    assert started.params == 62_006 and started.batches_per_epoch == 8  # 256 / 32
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.epoch for e in epochs] == [0, 1, 2]

    h = History()
    for e in events:
        if isinstance(e, BatchLosses | EpochEnd):
            h.add(e)
    assert len(h.batch_losses) == 24
    assert h.batch_indices == list(range(24))  # global: epoch * batches_per_epoch + i
    assert all(isinstance(v, float) for v in h.batch_losses)
    for k, e in enumerate(epochs):
        assert e.train_loss == pytest.approx(np.mean(h.batch_losses[8 * k : 8 * (k + 1)]))
        # fractions of the 256 training and 128 test images: whole counts of right answers
        assert 0 <= e.train_acc <= 1 and (e.train_acc * 256) == round(e.train_acc * 256)
        assert 0 <= e.test_acc <= 1 and (e.test_acc * 128) == round(e.test_acc * 128)
        assert e.test_loss > 0

    saved = np.load(run.path / "history.npz")
    assert saved["batch_losses"].tolist() == h.batch_losses
    assert saved["epoch_losses"].tolist() == h.epoch_losses
    assert saved["test_acc"].tolist() == h.test_acc


@pytest.mark.parametrize(("flush_seconds", "chunks"), [(0.0, [1] * 8), (1e9, [8])])
def test_batch_losses_come_in_chunks_at_most_once_per_flush_interval(
    monkeypatch, flush_seconds, chunks
) -> None:
    """Batch losses are held back until FLUSH_SECONDS have passed since the last chunk (and
    flushed at each epoch's end): with no interval every batch is a chunk; with an interval
    longer than the run, each epoch is one. Exact, whatever the machine's speed."""
    from cnntui.core import engine

    monkeypatch.setattr(engine, "FLUSH_SECONDS", flush_seconds)
    events = list(train(tiny_experiment(epochs=2)))  # 8 batches an epoch
    sizes = [len(e.losses) for e in events if isinstance(e, BatchLosses)]
    assert sizes == chunks * 2


class BatchClock:
    """A run's cancel flag and clock in one: the engine asks the flag before every batch, so
    the time read here is `step` seconds for each batch begun, however fast the machine."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.batches = 0

    def is_set(self) -> bool:
        self.batches += 1
        return False

    def now(self) -> float:
        return self.batches * self.step


def test_batch_losses_are_flushed_when_the_interval_has_passed_on_the_run_clock() -> None:
    """Each batch takes 0.4 flush intervals: a chunk goes out after the batch that crosses
    the interval (the 3rd), the next interval counts from that flush (3 more), and the rest
    of the epoch (2) is flushed at its end; each epoch starts counting afresh."""
    from cnntui.core.engine import FLUSH_SECONDS

    flag = BatchClock(0.4 * FLUSH_SECONDS)
    events = list(train(tiny_experiment(epochs=2), flag, clock=flag.now))  # 8 batches an epoch
    chunks = [(e.epoch, e.first_index, len(e.losses)) for e in events if isinstance(e, BatchLosses)]
    assert chunks == [(0, 0, 3), (0, 3, 3), (0, 6, 2), (1, 8, 3), (1, 11, 3), (1, 14, 2)]


@pytest.mark.slow
def test_training_learns_the_synthetic_task() -> None:
    exp = tiny_experiment(train_size=2000, test_size=500, epochs=3, batch_size=16, lr=0.02)
    events, _ = run_to_end(exp)
    ends = [e for e in events if isinstance(e, EpochEnd)]
    assert ends[-1].test_acc > 0.5  # chance is 0.1
    assert ends[-1].train_loss < ends[0].train_loss


def test_same_seed_same_history_on_cpu() -> None:
    exp = tiny_experiment(dropout=0.5)

    def losses(e):
        return [v for ev in train(e) if isinstance(ev, BatchLosses) for v in ev.losses]

    assert losses(exp) == losses(exp)
    assert losses(exp) != losses(tiny_experiment(dropout=0.5, seed=1))


def test_cancel_stops_within_one_batch_and_keeps_history(runs_dir: Path) -> None:
    exp = tiny_experiment(train_size=4000, batch_size=4, epochs=1)
    store = RunStore(runs_dir)
    run = store.create(exp)
    cancel = threading.Event()
    seen: list[float] = []
    events = []
    for event in train(exp, cancel, run):
        events.append(event)
        if isinstance(event, BatchLosses):
            seen.extend(event.losses)
            cancel.set()  # set after the first chunk
    assert isinstance(events[-1], Cancelled)
    # The engine checks the event before every batch: at most one batch ran after the
    # chunk that set it, and it too was recorded.
    first_chunk = next(e for e in events if isinstance(e, BatchLosses))
    assert len(seen) <= len(first_chunk.losses) + 1
    record = store.latest(exp.name)
    assert record.status == "cancelled"
    assert record.history().batch_losses == seen


def test_divergence_stops_and_keeps_the_finite_history(runs_dir: Path) -> None:
    exp = tiny_experiment(lr=1e6, momentum=0.9, epochs=3)
    store = RunStore(runs_dir)
    events, _ = run_to_end(exp, store)
    assert isinstance(events[-1], Diverged)
    record = store.latest(exp.name)
    assert record.status == "diverged"
    losses = record.history().batch_losses
    assert all(np.isfinite(losses))
    assert events[-1].batch_index == len(losses)  # the first non-finite batch


def test_runs_side_by_side_in_threads_train_as_they_do_alone() -> None:
    """Dropout masks and augmentation come from each run's own generator: a neighbour's
    draws never change a run's losses."""

    def losses(e):
        return [v for ev in train(e) if isinstance(ev, BatchLosses) for v in ev.losses]

    exps = [tiny_experiment(name=f"r{i}", dropout=0.5, augment=True, seed=i) for i in (0, 1)]
    alone = [losses(e) for e in exps]
    together: dict[str, list[float]] = {}
    barrier = threading.Barrier(2, timeout=60)

    def go(e) -> None:
        out = []
        for ev in train(e):
            if isinstance(ev, Started):
                barrier.wait()  # both are set up and about to draw
            if isinstance(ev, BatchLosses):
                out.extend(ev.losses)
        together[e.name] = out

    threads = [threading.Thread(target=go, args=(e,)) for e in exps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [together["r0"], together["r1"]] == alone


def test_resume_equals_an_uninterrupted_run(runs_dir: Path) -> None:
    exp = tiny_experiment(epochs=3, dropout=0.5, augment=True)
    full, _ = run_to_end(exp)
    full_losses = [v for e in full if isinstance(e, BatchLosses) for v in e.losses]
    full_acc = [e.test_acc for e in full if isinstance(e, EpochEnd)]

    store = RunStore(runs_dir)
    run = store.create(exp)
    cancel = threading.Event()
    for event in train(exp, cancel, run):
        if isinstance(event, EpochEnd) and event.epoch == 0:
            cancel.set()  # stop partway through epoch 2
    record = store.latest(exp.name, unfinished=True)
    assert record is not None and record.status == "cancelled"
    events = list(train(exp, None, store.reopen(record), record.checkpoint))
    assert isinstance(events[0], Started) and events[0].start_epoch == 1
    assert isinstance(events[-1], Finished)
    resumed = store.latest(exp.name).history()
    assert resumed.batch_losses == full_losses
    assert resumed.test_acc == full_acc
    assert store.latest(exp.name).status == "finished"


def test_run_directory_holds_config_summary_weights(runs_dir: Path) -> None:
    exp = tiny_experiment()
    store = RunStore(runs_dir)
    _, run = run_to_end(exp, store)
    files = {p.name for p in run.path.iterdir()}
    assert {"config.toml", "summary.json", "history.npz", "checkpoint.pt", "weights.pt"} <= files
    assert not [f for f in files if f.endswith(".tmp")]
    assert store.latest(exp.name).experiment() == exp
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["params"] == 62_006
    assert summary["epochs_done"] == 2 and summary["title"] == "小实验"
    weights = torch.load(run.path / "weights.pt", weights_only=True)
    assert "fc3.weight" in weights


def test_summary_records_the_images_actually_used(
    runs_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """train_size / test_size are caps: the summary says how many images the run really had
    (here a 100 / 20 image CIFAR-10 on disk, asked for all / 1000), for the exports' captions."""
    from cnntui.core import data
    from tests.core.test_data import write_cifar_batches

    write_cifar_batches(tmp_path / "c" / data.CIFAR10_DIR)
    monkeypatch.setenv(data.UNVERIFIED_ENV, "1")  # generated batches: not the official files
    exp = tiny_experiment(
        dataset="cifar10", data_dir=str(tmp_path / "c"), train_size=None, test_size=1000, epochs=1
    )
    events, run = run_to_end(exp, RunStore(runs_dir))
    assert isinstance(events[-1], Finished)
    summary = json.loads((run.path / "summary.json").read_text())
    assert (summary["dataset"], summary["train_images"], summary["test_images"]) == (
        "cifar10",
        100,
        20,
    )


def test_a_failing_setup_is_an_event_not_an_exception(runs_dir: Path, tmp_path: Path) -> None:
    exp = tiny_experiment(dataset="cifar10", data_dir=str(tmp_path / "nowhere"))
    import cnntui.core.data as data

    def offline(*a, **k):
        raise data.DataError("CIFAR-10 is not here; put cifar-10-python.tar.gz into nowhere")

    mp = pytest.MonkeyPatch()
    mp.setattr(data, "load_cifar10", offline)
    try:
        store = RunStore(runs_dir)
        events, _ = run_to_end(exp, store)
    finally:
        mp.undo()
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert "cifar-10-python.tar.gz" in events[0].reason
    assert store.latest(exp.name).status == "failed"
    # What the TUI shows (it reads summary.json) is the CLI's advice, whole: the message
    # itself, not "DataError: ...", and how to try cnntui without the data.
    stored = store.latest(exp.name).summary.reason
    assert stored == events[0].reason
    assert not stored.startswith("DataError")
    assert stored.endswith("to try cnntui without it: --set dataset=synthetic")


def test_two_runs_of_one_experiment_get_separate_directories(runs_dir: Path) -> None:
    exp = tiny_experiment(epochs=1)
    store = RunStore(runs_dir)
    results = []

    def go():
        results.append(run_to_end(exp, store)[1].path)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 2
    assert all(r.status == "finished" for r in store.runs(exp.name))
