"""What the TUI knows about one run, and how a run's history becomes something to plot.

`RunState` is fed engine events by the run's worker thread and read by the UI thread, under
a lock. `Trace` holds a history as growable numpy arrays with a running sum, so a run with a
million batch losses appends in O(chunk) and gives a 100-batch moving average at any point
in O(1). `decimate` cuts a curve to a few points per screen column, keeping its min/max
envelope, because a plotext redraw grows with the number of points. No textual here.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Experiment, learned_key
from ..events import BatchLosses, Cancelled, Diverged, EpochEnd, Event, Failed, Finished, Started
from ..history import MA_WINDOW, STUDY_KEYS, History, metrics
from ..records import RunStatus, RunSummary
from ..store import RunFileError, read_history_arrays

# The per-epoch series drawn with a ± std band over seeds (the ones a study compares).
BAND_SERIES = ("test_loss", "test_acc", "val_loss", "val_acc")
ACTIVE = ("starting", "running")
ENDED = ("finished", "failed", "diverged", "cancelled", "interrupted")


def decimate(x: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about `points` points of (x, y): each bucket keeps its minimum and its maximum,
    in x order, so spikes survive and the curve's envelope looks the same."""
    n = len(y)
    if n <= points or points < 4:
        return x, y
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
    return x[idx], y[idx]


class SeedBand:
    """Mean and standard deviation per epoch of an experiment's counted seed runs (the runs
    its aggregates count), for the per-epoch charts: `series` maps a History attribute
    (`test_acc`, `test_loss`, ...) to (mean, std) per epoch, epochs that at least two seeds
    reached."""

    def __init__(self, histories: list[Any], attrs: tuple[str, ...] = BAND_SERIES) -> None:
        self.n = len(histories)
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        for attr in attrs:
            rows = [list(getattr(h, attr)) for h in histories]
            epochs = sorted((len(r) for r in rows), reverse=True)
            reach = epochs[1] if len(epochs) > 1 else 0  # at least two seeds got this far
            mean, std = [], []
            for e in range(reach):
                values = [r[e] for r in rows if e < len(r) and math.isfinite(r[e])]
                ok = len(values) > 1
                mean.append(float(np.mean(values)) if ok else math.nan)
                std.append(float(np.std(values, ddof=1)) if ok else math.nan)
            self.series[attr] = (mean, std)
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

    @property
    def empty(self) -> bool:
        return len(self.batch_y) == 0 and not self.epoch_loss


class Trace:
    """A history held for plotting: batch losses in amortised-growth arrays, epochs in lists."""

    def __init__(self) -> None:
        self._x = np.empty(1024, dtype=np.int64)
        self._y = np.empty(1024, dtype=np.float64)
        self._cum = np.empty(1025, dtype=np.float64)  # _cum[i] = sum of the first i losses
        self._cum[0] = 0.0
        self.n = 0
        self.epoch_loss: list[float] = []
        self.test_loss: list[float] = []
        self.train_acc: list[float] = []
        self.test_acc: list[float] = []
        self.epoch_seconds: list[float] = []
        self.val_loss: list[float] = []
        self.val_acc: list[float] = []
        self.lr: list[float] = []
        self.confusion: list[list[int]] = []  # the last epoch's, on the test set

    def extend(self, first_index: int, losses: tuple[float, ...] | np.ndarray) -> None:
        values = np.asarray(losses, dtype=np.float64)
        k = len(values)
        if self.n + k > len(self._y):
            cap = max(2 * len(self._y), self.n + k)
            self._x = np.resize(self._x, cap)
            self._y = np.resize(self._y, cap)
            self._cum = np.resize(self._cum, cap + 1)
        self._x[self.n : self.n + k] = np.arange(first_index, first_index + k)
        self._y[self.n : self.n + k] = values
        self._cum[self.n + 1 : self.n + k + 1] = self._cum[self.n] + np.cumsum(values)
        self.n += k

    def add_epoch(self, event: EpochEnd) -> None:
        self.epoch_loss.append(event.train_loss)
        self.test_loss.append(event.test_loss)
        self.train_acc.append(event.train_acc)
        self.test_acc.append(event.test_acc)
        self.epoch_seconds.append(event.seconds)
        self.val_loss.append(event.val_loss)
        self.val_acc.append(event.val_acc)
        self.lr.append(event.lr)
        if event.confusion is not None:
            self.confusion = [list(row) for row in event.confusion]

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Trace:
        """A trace of a stored history (the npz payload of `History.arrays`)."""
        t = cls()
        y = np.asarray(arrays.get("batch_losses", []), dtype=np.float64)
        x = np.asarray(arrays.get("batch_indices", np.arange(len(y))), dtype=np.int64)
        if len(y):
            t._x, t._y = x.copy(), y.copy()
            t._cum = np.concatenate(([0.0], np.cumsum(y)))
            t.n = len(y)
        for attr, key in (
            ("epoch_loss", "epoch_losses"),
            ("test_loss", "test_loss"),
            ("train_acc", "train_acc"),
            ("test_acc", "test_acc"),
            ("epoch_seconds", "epoch_seconds"),
        ):
            setattr(t, attr, [float(v) for v in arrays.get(key, [])])
        # Histories from before validation splits and schedules lack these: NaN per epoch.
        for key in STUDY_KEYS:
            values = arrays.get(key)
            n = len(t.test_acc)
            setattr(t, key, [float(v) for v in values] if values is not None else [math.nan] * n)
        confusion = arrays.get("confusion")
        if confusion is not None:
            t.confusion = [[int(v) for v in row] for row in confusion]
        return t

    @classmethod
    def load(cls, npz: Path) -> Trace:
        """A stored run's history; empty when there is none or it cannot be read (the run's
        row still shows what its summary says)."""
        try:
            return cls.from_arrays(read_history_arrays(npz))
        except RunFileError:
            return cls()

    def truncate(self, batches: int, epochs: int) -> None:
        """Keep the first `batches` losses and `epochs` epochs (a resume restarts there)."""
        self.n = min(self.n, batches)
        for attr in ("epoch_loss", "test_loss", "train_acc", "test_acc", "epoch_seconds"):
            del getattr(self, attr)[epochs:]
        for attr in STUDY_KEYS:
            del getattr(self, attr)[epochs:]

    def curve(self, label: str, points: int, source: Hashable = None) -> Curve:
        """The curves, each cut to about `points` points."""
        n = self.n
        x, y = self._x[:n], self._y[:n]
        bx, by = decimate(x, y, points)
        if n:
            # Moving average at evenly spaced points: O(points) thanks to the running sum.
            at = np.unique(np.linspace(0, n - 1, min(n, points)).astype(np.int64))
            lo = np.maximum(at + 1 - MA_WINDOW, 0)
            ma = (self._cum[at + 1] - self._cum[lo]) / (at + 1 - lo)
            mx = x[at]
        else:
            ma, mx = np.empty(0), np.empty(0, dtype=np.int64)
        return Curve(
            label,
            bx,
            by,
            mx,
            ma,
            list(self.epoch_loss),
            list(self.test_loss),
            list(self.train_acc),
            list(self.test_acc),
            source,
            list(self.val_loss),
            list(self.val_acc),
            list(self.lr),
        )

    def history(self) -> History:
        """The per-epoch part as a History, for `history.metrics` (batch losses left out)."""
        return History(
            epoch_losses=list(self.epoch_loss),
            train_acc=list(self.train_acc),
            test_loss=list(self.test_loss),
            test_acc=list(self.test_acc),
            epoch_seconds=list(self.epoch_seconds),
            val_loss=list(self.val_loss),
            val_acc=list(self.val_acc),
            lr=list(self.lr),
        )


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
        self.trace = Trace()
        self.status = "queued"
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
        return self.experiment.name

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def feed(self, event: Event) -> None:
        """Apply one engine event (called from the run's worker thread)."""
        with self.lock:
            match event:
                case Started():
                    self.status = "running"
                    self.run_dir, self.run_id = event.run_dir, event.run_id
                    self.device, self.params = event.device, event.params
                    self.epochs, self.batches_per_epoch = event.epochs, event.batches_per_epoch
                    self.start_done = self.done = event.start_epoch * event.batches_per_epoch
                    self.epoch = event.start_epoch
                    self.t0 = self.clock()
                    if event.start_epoch and event.run_dir:
                        # The engine resumes after the checkpoint's last complete epoch; show
                        # the history before it from disk, cut where training picks up.
                        trace = Trace.load(Path(event.run_dir) / "history.npz")
                        trace.truncate(self.done, event.start_epoch)
                        self.trace = trace
                case BatchLosses():
                    # A followed resume re-reads losses its stored history already gave.
                    skip = max(0, min(self.trace.n - event.first_index, len(event.losses)))
                    if skip < len(event.losses):
                        self.trace.extend(event.first_index + skip, event.losses[skip:])
                    self.done = max(self.done, event.first_index + len(event.losses))
                    self.epoch = event.epoch
                    if self.follow is not None and not self._paced:
                        # First seen mid-run: its ETA counts from here, not from batch 0.
                        self._paced = True
                        self.start_done, self.t0 = self.done, self.clock()
                case EpochEnd():
                    self.trace.add_epoch(event)
                    self.epoch = event.epoch + 1
                case Finished():
                    self.status, self.total_seconds = "finished", event.total_seconds
                case Failed():
                    self.status, self.reason = "failed", event.reason
                case Diverged():
                    self.status, self.reason = "diverged", event.reason
                case Cancelled():
                    self.status, self.reason = "cancelled", "cancelled by the user"
            self.version += 1

    def starting(self) -> None:
        with self.lock:
            self.status = "starting"
            self.version += 1

    def interrupted(self) -> None:
        """Its worker process died without a word (the store reads it interrupted)."""
        with self.lock:
            self.status, self.reason = "interrupted", "its worker process ended without a word"
            self.version += 1

    def fail(self, reason: str) -> None:
        """The worker itself raised (the engine never does): record why."""
        with self.lock:
            self.status, self.reason = "failed", reason
            self.version += 1

    def progress(self) -> float:
        total = self.epochs * self.batches_per_epoch
        return self.done / total if total else 0.0

    def eta(self, now: float | None = None) -> float:
        """Seconds left, from this session's pace; NaN until a batch has trained."""
        trained = self.done - self.start_done
        if self.status != "running" or trained <= 0:
            return math.nan
        elapsed = (now if now is not None else self.clock()) - self.t0
        return elapsed / trained * (self.epochs * self.batches_per_epoch - self.done)

    def curve(self, points: int) -> Curve:
        with self.lock:
            return self.trace.curve(self.name, points, ("run", self.key))

    def summary(self) -> RunSummary:
        """A results row in the run store's summary.json vocabulary, from what is known now."""
        with self.lock:
            h = self.trace.history()
            seconds = self.total_seconds
        if not math.isfinite(seconds):
            seconds = sum(h.epoch_seconds)
        m = metrics(h, self.experiment.target_acc, seconds)
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
            final_test_acc=m.final_test_acc,
            best_test_acc=m.best_test_acc,
            epoch1_test_acc=m.epoch1_test_acc,
            final_train_loss=m.final_train_loss,
            gap=m.gap,
            epochs_to_target=m.epochs_to_target,
            total_seconds=m.total_seconds,
            seconds_per_epoch=m.seconds_per_epoch,
        )
