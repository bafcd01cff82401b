"""Events a training run yields, in order: Started, BatchLosses/EpochEnd..., then one ending.

The engine produces them; the CLI, the TUI and the run store consume them. They are plain
dataclasses with no torch inside, so any front end can import them cheaply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Started:
    """The run is set up and about to train its first batch."""

    name: str
    run_id: str
    run_dir: str | None  # None when the run is not being stored
    device: str  # e.g. "cpu (2 threads)" or "cuda:0 (NVIDIA H200)"
    params: int
    epochs: int
    batches_per_epoch: int
    start_epoch: int = 0  # > 0 when resuming


@dataclass(frozen=True)
class BatchLosses:
    """The losses of the batches trained since the previous chunk."""

    name: str
    epoch: int  # 0-based
    first_index: int  # global batch index of losses[0]
    losses: tuple[float, ...]


@dataclass(frozen=True)
class EpochEnd:
    """One epoch done and evaluated."""

    name: str
    epoch: int  # 0-based
    train_loss: float  # mean of this epoch's batch losses
    train_acc: float  # fraction, measured on the training batches as they trained
    test_loss: float
    test_acc: float  # fraction of the test set
    seconds: float  # wall time of the epoch, evaluation included
    val_loss: float = math.nan  # on the validation split; NaN without one
    val_acc: float = math.nan
    lr: float = math.nan  # the learning rate this epoch trained with
    confusion: tuple[tuple[int, ...], ...] | None = None  # test set: [true][predicted] counts


@dataclass(frozen=True)
class Finished:
    """Every epoch trained."""

    name: str
    total_seconds: float
    stopped_early: int | None = None  # the 1-based epoch early stopping ended the run at


@dataclass(frozen=True)
class Failed:
    """The run raised; `reason` is one line."""

    name: str
    reason: str
    run_dir: str | None = None  # the run's directory, when it has one (failing at setup, too)


@dataclass(frozen=True)
class Diverged:
    """A non-finite loss stopped the run; the history up to the batch before it is kept."""

    name: str
    batch_index: int
    reason: str


@dataclass(frozen=True)
class Cancelled:
    """The cancel event was set; the run stopped within one batch."""

    name: str


Event = Started | BatchLosses | EpochEnd | Finished | Failed | Diverged | Cancelled
ENDINGS = (Finished, Failed, Diverged, Cancelled)


class CancelFlag(Protocol):
    """What a run asks before every batch to learn whether to stop: a threading.Event, or
    one that also watches the run's cancel file (driver.EitherEvent)."""

    def is_set(self) -> bool:
        """True once the run should stop."""
        ...
