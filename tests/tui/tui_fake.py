"""A deterministic stand-in for `engine.train`, for snapshot tests and the benchmark's
fixed-rate runs: the same events every time, written to the run store like the engine does."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cnntui.core.config import Experiment
from cnntui.core.events import BatchLosses, Cancelled, EpochEnd, Event, Failed, Finished, Started
from cnntui.core.history import History
from cnntui.core.lr_schedules import epoch_lr
from cnntui.runs.store import RunDir

BATCHES = 200  # per epoch
CHUNK = 20  # batches per BatchLosses event


def loss_at(exp: Experiment, i: int) -> float:
    """A falling, wiggling loss whose speed depends on the learning rate."""
    return 0.4 + 1.9 * math.exp(-i * exp.lr * 2) + 0.15 * math.sin(i / 3) * math.cos(i / 17)


def fake_confusion(acc: float, classes: int = 10, per_class: int = 20) -> tuple:
    """A test-set confusion matrix with accuracy about `acc`: each class's misses go to the
    next class, one more miss for each class further down."""
    rows = []
    for i in range(classes):
        right = min(per_class, max(0, round(per_class * acc) - i % 3))
        row = [0] * classes
        row[i] = right
        row[(i + 1) % classes] = per_class - right
        rows.append(tuple(row))
    return tuple(rows)


def fake_train(
    exp: Experiment,
    cancel: threading.Event | None = None,
    run: RunDir | None = None,
    resume: Path | None = None,
    delay: float = 0.0,
) -> Iterator[Event]:
    """Epochs of BATCHES batches in chunks of CHUNK; `fail` in the name fails at once.

    `delay` seconds pass between chunks, so a test can watch a run that is running."""
    cancel = cancel or threading.Event()
    history = History()
    if "fail" in exp.name:
        if run is not None:
            run.save(history, "failed", reason="CUDA out of memory (fake)")
        yield Failed(exp.name, "CUDA out of memory (fake)")
        return
    yield Started(
        exp.name,
        run.run_id if run else "",
        str(run.path) if run else None,
        "cpu (fake)",
        62006,
        exp.epochs,
        BATCHES,
    )
    for epoch in range(exp.epochs):
        for first in range(epoch * BATCHES, (epoch + 1) * BATCHES, CHUNK):
            if cancel.is_set():
                if run is not None:
                    run.save(history, "cancelled", total_seconds=1.0 * epoch, params=62006)
                yield Cancelled(exp.name)
                return
            if delay:
                time.sleep(delay)
            chunk = BatchLosses(
                exp.name, epoch, first, tuple(loss_at(exp, i) for i in range(first, first + CHUNK))
            )
            history.add(chunk)
            yield chunk
        losses = history.batch_losses[-BATCHES:]
        train_loss = sum(losses) / BATCHES
        acc = min(0.95, 0.1 + 0.8 * (1 - math.exp(-(epoch + 1) * exp.lr * 30)))
        val = exp.val_size > 0
        end = EpochEnd(
            exp.name,
            epoch,
            train_loss,
            acc + 0.03,
            train_loss + 0.05,
            acc,
            1.0,
            val_loss=train_loss + 0.02 if val else math.nan,
            val_acc=acc - 0.01 if val else math.nan,
            lr=epoch_lr(exp, epoch),
            confusion=fake_confusion(acc),
        )
        history.add(end)
        if run is not None:
            run.save(history, total_seconds=1.0 * (epoch + 1), params=62006)
        yield end
    if run is not None:
        run.save(history, "finished", total_seconds=1.0 * exp.epochs, params=62006)
    yield Finished(exp.name, 1.0 * exp.epochs)
