"""What the TUI knows about one run, and how a run's history becomes something to plot.

`RunState` is fed engine events by the run's worker thread and read by the UI thread, under
a lock; it keeps the run's record as the engine's own `History`, filled by the same events
(a stored run's is read from its history.npz). `Curve.of` turns a History into what the charts
draw, and `envelope` cuts a curve to a few points per screen column, keeping its min/max
envelope, because a plotext redraw grows with the number of points. No textual here.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import Experiment, learned_key
from ..core.events import (
    BatchLosses,
    Cancelled,
    Diverged,
    EpochEnd,
    Event,
    Failed,
    Finished,
    Started,
)
from ..core.history import History, Thinning, metrics, moving_average_at
from ..report import stats
from ..runs.records import ENDED, TRAINING, RunStatus, RunSummary
from ..runs.store import RunFileError, read_history_arrays

# The per-epoch series drawn with a ± std band over seeds (the ones a study compares).
BAND_SERIES = ("test_loss", "test_acc", "val_loss", "val_acc")


def envelope(y: np.ndarray, points: int) -> np.ndarray:
    """The indices of at most about `points` points of `y`: each bucket's minimum and maximum,
    in order, and the last point, so spikes survive and the curve looks the same; every index
    when `y` has no more than `points` points."""
    n = len(y)
    if n <= points or points < 4:
        return np.arange(n)
    buckets = points // 2
    size = n // buckets
    used = size * buckets
    yb = y[:used].reshape(buckets, size)
    lo = yb.argmin(axis=1)
    hi = yb.argmax(axis=1)
    first = np.minimum(lo, hi) + np.arange(buckets) * size
    second = np.maximum(lo, hi) + np.arange(buckets) * size
    idx = np.empty(2 * buckets, dtype=np.int64)
    idx[0::2] = first
    idx[1::2] = second
    if used < n:
        idx = np.append(idx, n - 1)
    return idx


class SeedBand:
    """Mean and standard deviation per epoch of an experiment's counted seed runs (the runs
    its aggregates count), for the per-epoch charts: `series` maps a History attribute
    (`test_acc`, `test_loss`, ...) to (mean, std) per epoch, epochs that at least two seeds
    reached."""

    def __init__(self, histories: list[History], attrs: tuple[str, ...] = BAND_SERIES) -> None:
        self.n = len(histories)
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        for attr in attrs:
            self.series[attr] = stats.seed_band([getattr(h, attr) for h in histories])
        # What tells one band from another (NaN included) when deciding to redraw.
        self.key = repr((self.n, sorted(self.series.items())))


@dataclass(frozen=True)
class Curve:
    """One run's curves, already decimated for the screen."""

    label: str
    batch_x: np.ndarray
    batch_y: np.ndarray
    ma_x: np.ndarray
    ma_y: np.ndarray
    epoch_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    source: Hashable = None  # which run these are, so a chart can tell two runs apart
    val_loss: list[float] = field(default_factory=list)  # NaN without a validation split
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # each epoch's learning rate
    band: SeedBand | None = None  # mean ± std per epoch over the experiment's seeds

    @classmethod
    def of(cls, history: History, label: str, points: int, source: Hashable = None) -> Curve:
        """A history's curves for the screen: batch losses and their moving average cut to about
        `points` points, the per-epoch series whole."""
        y = np.asarray(history.batch_losses, dtype=np.float64)
        keep = envelope(y, points)
        # The moving average at evenly spaced points (a line needs no min/max envelope).
        at = np.unique(np.linspace(0, len(y) - 1, min(len(y), points)).astype(np.int64))
        index = history.batch_indices  # read at the kept points only: a long run has many
        return cls(
            label,
            np.array([index[i] for i in keep], dtype=np.int64),
            y[keep],
            np.array([index[i] for i in at], dtype=np.int64),
            moving_average_at(y, at),
            list(history.epoch_losses),
            list(history.test_loss),
            list(history.train_acc),
            list(history.test_acc),
            source,
            list(history.val_loss),
            list(history.val_acc),
            list(history.lr),
        )


def read_history(npz: Path) -> History:
    """A stored run's history; empty when there is none or it cannot be read (the run's row
    still shows what its summary says)."""
    try:
        return History.from_arrays(read_history_arrays(npz))
    except RunFileError:
        return History()


class RunState:
    """One run of this session: queued, then fed events by its worker thread."""

    def __init__(
        self,
        key: int,
        experiment: Experiment,
        resume_run: Any = None,
        checkpoint: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.clock = clock  # what the pace (eta) is measured with
        self.experiment = experiment
        self.resume_run = resume_run  # a reopened store.RunDir when resuming
        self.checkpoint = checkpoint
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.history = History()  # what the engine records, as the events tell it
        self.thinning = Thinning()  # the history's batch losses: bounded, for the chart
        self.status: RunStatus = RunStatus.QUEUED
        self.reason = ""
        self.run_dir: str | None = None
        self.run_id = ""
        self.device = ""
        self.params = 0
        self.epochs = experiment.epochs
        self.batches_per_epoch = 0
        self.start_done = 0  # batches already trained before this session (resume)
        self.done = 0  # batches trained so far, all sessions
        self.epoch = 0
        self.total_seconds = math.nan
        self.t0 = math.nan  # monotonic time of Started
        self.version = 0  # bumped on every change, so the UI redraws only what changed
        # A run trained by another process (a worker, another cnntui) is fed the events its
        # files say (lifecycle.RunEvents, polled by the screen's follower thread).
        self.follow: Any = None
        self.remote = False  # started by someone else: another TUI, --detach, a plain --run
        self.gpu: int | None = None  # the GPU index its worker is pinned to, when known
        self._paced = False  # a followed run's pace is measured from the first losses seen

    @property
    def name(self) -> str:
        """The experiment's name (each seed's run shares it)."""
        return self.experiment.name

    @property
    def active(self) -> bool:
        """Whether the run is starting or training now."""
        return self.status in TRAINING

    @property
    def ended(self) -> bool:
        """Whether the run is over, however it ended."""
        return self.status in ENDED

    def feed(self, event: Event) -> None:
        """Apply one engine event (called from the run's worker thread)."""
        with self.lock:
            match event:
                case Started():
                    self.status = RunStatus.RUNNING
                    self.run_dir, self.run_id = event.run_dir, event.run_id
                    self.device, self.params = event.device, event.params
                    self.epochs, self.batches_per_epoch = event.epochs, event.batches_per_epoch
                    self.start_done = self.done = event.start_epoch * event.batches_per_epoch
                    self.epoch = event.start_epoch
                    self.t0 = self.clock()
                    if event.start_epoch and event.run_dir:
                        # The engine resumes after the checkpoint's last complete epoch; show
                        # the history before it from disk, cut where training picks up.
                        history = read_history(Path(event.run_dir) / "history.npz")
                        history.truncate(self.done, event.start_epoch)
                        self.thinning.fit(history)
                        self.history = history
                case BatchLosses():
                    # A followed resume re-reads losses its stored history already gave.
                    indices = self.history.batch_indices
                    had = indices[-1] + 1 if indices else 0
                    skip = max(0, min(had - event.first_index, len(event.losses)))
                    if skip < len(event.losses):
                        self.thinning.add(
                            self.history,
                            replace(
                                event,
                                first_index=event.first_index + skip,
                                losses=event.losses[skip:],
                            ),
                        )
                    self.done = max(self.done, event.first_index + len(event.losses))
                    self.epoch = event.epoch
                    if self.follow is not None and not self._paced:
                        # First seen mid-run: its ETA counts from here, not from batch 0.
                        self._paced = True
                        self.start_done, self.t0 = self.done, self.clock()
                case EpochEnd():
                    self.history.add(event)
                    self.epoch = event.epoch + 1
                case Finished():
                    self.status, self.total_seconds = RunStatus.FINISHED, event.total_seconds
                case Failed():
                    self.status, self.reason = RunStatus.FAILED, event.reason
                case Diverged():
                    self.status, self.reason = RunStatus.DIVERGED, event.reason
                case Cancelled():
                    self.status, self.reason = RunStatus.CANCELLED, "cancelled by the user"
            self.version += 1

    def _set(self, status: RunStatus, reason: str | None = None) -> None:
        with self.lock:
            self.status = status
            self.reason = self.reason if reason is None else reason
            self.version += 1

    def starting(self) -> None:
        """Mark the run as handed to its worker, before the engine has started."""
        self._set(RunStatus.STARTING)

    def interrupted(self) -> None:
        """Its worker process died without a word (the store reads it interrupted)."""
        self._set(RunStatus.INTERRUPTED, "its worker process ended without a word")

    def fail(self, reason: str) -> None:
        """The worker itself raised (the engine never does): record why."""
        self._set(RunStatus.FAILED, reason)

    def progress(self) -> float:
        """The share of all its batches trained so far, 0 to 1."""
        total = self.epochs * self.batches_per_epoch
        return min(1.0, self.done / total) if total else 0.0

    def eta(self, now: float | None = None) -> float:
        """Seconds left, from this session's pace; NaN until a batch has trained."""
        trained = self.done - self.start_done
        if self.status != RunStatus.RUNNING or trained <= 0:
            return math.nan
        elapsed = (now if now is not None else self.clock()) - self.t0
        return elapsed / trained * (self.epochs * self.batches_per_epoch - self.done)

    def curve(self, points: int) -> Curve:
        """The run's curves as they stand, cut to about `points` points, for the charts."""
        with self.lock:
            return Curve.of(self.history, self.name, points, ("run", self.key))

    def summary(self) -> RunSummary:
        """A results row in the run store's summary.json vocabulary, from what is known now."""
        with self.lock:
            seconds = self.total_seconds
            if not math.isfinite(seconds):
                seconds = sum(self.history.epoch_seconds)
            m = metrics(self.history, self.experiment.target_acc, seconds)
        exp = self.experiment
        return RunSummary(
            name=exp.name,
            title=exp.display_title,
            model=exp.model,
            seed=exp.seed,
            settings_key=learned_key(exp),
            params=self.params or None,
            status=RunStatus(self.status),
            reason=self.reason,
            **asdict(m),
        )
