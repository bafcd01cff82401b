"""A run's recorded history (the report's `loss_history`, plus per-epoch metrics) and the
figures derived from it: moving average, best accuracy, epochs to target, smoothness.

Pure numpy, no torch: the store, the exports and the TUI all read histories through here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .events import BatchLosses, EpochEnd

EPOCH_KEYS = ("epoch_losses", "train_acc", "test_loss", "test_acc", "epoch_seconds")
# Per-epoch keys a history written before validation splits and schedules lacks: read as NaN.
# `val_loss` / `val_acc` are NaN in a run without a validation split; `lr` is each epoch's.
STUDY_KEYS = ("val_loss", "val_acc", "lr")
MA_WINDOW = 100  # batches in the moving average over batch losses (as in the report)
# Batch losses a screen keeps of a run for its chart (2 MiB of floats and indices): a CIFAR run
# at batch size 4 has 125,000, so runs of common lengths are kept whole; a longer one thinned.
SERIES_POINTS = 1 << 17


@dataclass
class History:
    """Per batch: `batch_losses` at `batch_indices`; per epoch: the EPOCH_KEYS lists."""

    batch_losses: list[float] = field(default_factory=list)
    batch_indices: list[int] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    # The last evaluation's confusion matrix on the test set: confusion[true][predicted].
    confusion: list[list[int]] = field(default_factory=list)

    def add(self, event: BatchLosses | EpochEnd) -> None:
        """Record a chunk of batch losses, or an epoch's figures, as the engine reports them."""
        if isinstance(event, BatchLosses):
            self.batch_losses.extend(event.losses)
            self.batch_indices.extend(
                range(event.first_index, event.first_index + len(event.losses))
            )
        else:
            self.epoch_losses.append(event.train_loss)
            self.train_acc.append(event.train_acc)
            self.test_loss.append(event.test_loss)
            self.test_acc.append(event.test_acc)
            self.epoch_seconds.append(event.seconds)
            self.val_loss.append(event.val_loss)
            self.val_acc.append(event.val_acc)
            self.lr.append(event.lr)
            if event.confusion is not None:
                self.confusion = [list(row) for row in event.confusion]

    def __eq__(self, other: object) -> bool:
        """Same recorded values, a NaN (no validation, no rate recorded) equal to a NaN."""
        if not isinstance(other, History):
            return NotImplemented
        mine, theirs = self.arrays(), other.arrays()
        return all(
            mine[k].shape == theirs[k].shape
            and np.array_equal(mine[k], theirs[k], equal_nan=mine[k].dtype.kind == "f")
            for k in mine
        )

    @property
    def epochs_done(self) -> int:
        """How many epochs were trained and evaluated."""
        return len(self.test_acc)

    def truncate(self, batches: int, epochs: int) -> None:
        """Keep the first `batches` batch losses and `epochs` epochs (where a resume picks up)."""
        del self.batch_losses[batches:]
        del self.batch_indices[batches:]
        for key in (*EPOCH_KEYS, *STUDY_KEYS):
            del getattr(self, key)[epochs:]

    def arrays(self) -> dict[str, np.ndarray]:
        """The npz payload: float64 losses/metrics, int64 indices."""
        out = {
            "batch_losses": np.asarray(self.batch_losses, dtype=np.float64),
            "batch_indices": np.asarray(self.batch_indices, dtype=np.int64),
        }
        for key in EPOCH_KEYS:
            out[key] = np.asarray(getattr(self, key), dtype=np.float64)
        n = self.epochs_done
        for key in STUDY_KEYS:  # padded, so a history built without them still has n epochs
            values = getattr(self, key)[:n]
            out[key] = np.asarray(values + [math.nan] * (n - len(values)), dtype=np.float64)
        k = len(self.confusion)
        out["confusion"] = np.asarray(self.confusion, dtype=np.int64).reshape(k, k)
        return out

    @property
    def has_validation(self) -> bool:
        """Whether the run scored a validation split (its val_loss is a number)."""
        return any(math.isfinite(v) for v in self.val_loss)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> History:
        """The history in an npz payload; ValueError, saying what is wrong, unless the arrays
        are those `arrays` writes: every key, 1-D numbers, lengths that agree."""
        check_arrays(arrays)
        h = cls(batch_indices=[int(v) for v in arrays["batch_indices"]])
        missing = [math.nan] * len(arrays["test_acc"])  # a study key a history predates
        for key in ("batch_losses", *EPOCH_KEYS, *STUDY_KEYS):
            setattr(h, key, [float(v) for v in arrays.get(key, missing)])
        if "confusion" in arrays:
            h.confusion = [[int(v) for v in row] for row in arrays["confusion"]]
        return h


@dataclass
class Thinning:
    """Keeps a history's batch losses to at most `limit` points, for a screen that follows a
    run of any length: every batch is kept until the limit is reached, then every second
    one, then every fourth, ... (the batches whose index is a multiple of `stride`), so the
    series stays evenly spread over the whole run. The epoch records are never thinned, and
    the history the run itself saves stays whole: this is for what a screen holds."""

    limit: int = SERIES_POINTS
    stride: int = 1  # the batch index of every kept loss is a multiple of this

    def add(self, history: History, event: BatchLosses) -> None:
        """Record a chunk of batch losses in `history`, at the current stride."""
        skip = -event.first_index % self.stride
        history.batch_losses.extend(event.losses[skip :: self.stride])
        end = event.first_index + len(event.losses)
        history.batch_indices.extend(range(event.first_index + skip, end, self.stride))
        self.fit(history)

    def fit(self, history: History) -> None:
        """Halve the history's batch resolution until it holds at most `limit` points."""
        while len(history.batch_losses) > max(1, self.limit):
            self.stride *= 2
            keep = [i for i, b in enumerate(history.batch_indices) if b % self.stride == 0]
            history.batch_losses = [history.batch_losses[i] for i in keep]
            history.batch_indices = [history.batch_indices[i] for i in keep]


def check_arrays(arrays: dict[str, np.ndarray]) -> None:
    """ValueError unless `arrays` is a history's npz payload (see History.arrays)."""
    for key in ("batch_losses", "batch_indices", *EPOCH_KEYS):
        if arrays.get(key) is None:
            raise ValueError(f"not a run history (no {key!r} array)")
        _check_numbers(key, arrays[key], "iu" if key == "batch_indices" else "iuf")
    if len(arrays["batch_indices"]) != len(arrays["batch_losses"]):
        raise ValueError("'batch_indices' and 'batch_losses' differ in length")
    present = [k for k in STUDY_KEYS if k in arrays]
    for key in present:
        _check_numbers(key, arrays[key], "iuf")
    if len({len(arrays[k]) for k in (*EPOCH_KEYS, *present)}) != 1:
        raise ValueError("the per-epoch arrays differ in length")
    c = arrays.get("confusion")
    if c is not None and (
        not isinstance(c, np.ndarray)
        or c.ndim != 2
        or c.shape[0] != c.shape[1]
        or (c.size and c.dtype.kind not in "iu")
    ):
        what = f"{c.dtype} {c.shape}" if isinstance(c, np.ndarray) else type(c).__name__
        raise ValueError(f"'confusion' must be a square array of counts, got {what}")


def _check_numbers(key: str, a: object, kinds: str) -> None:
    if not isinstance(a, np.ndarray) or a.ndim != 1 or a.dtype.kind not in kinds:
        what = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise ValueError(f"{key!r} must be a 1-D array of numbers, got {what}")


def moving_average(values: np.ndarray | list[float], window: int = MA_WINDOW) -> np.ndarray:
    """Trailing mean over up to `window` values; the first points average what exists so far."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    n = np.arange(1, v.size + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def moving_average_at(values: np.ndarray, at: np.ndarray, window: int = MA_WINDOW) -> np.ndarray:
    """`moving_average(values)[at]`, reading only the up to `window` values before each index
    in `at`: a chart's few hundred points of a long run cost no pass over all of it."""
    lo = np.maximum(at + 1 - window, 0)
    idx = lo[:, None] + np.arange(window)
    inside = idx <= at[:, None]
    sums = np.where(inside, values[np.minimum(idx, at[:, None])], 0.0).sum(axis=1)
    means: np.ndarray = sums / (at + 1 - lo)
    return means


def epochs_to_target(test_acc: list[float], target: float) -> int | None:
    """1-based epoch at which test accuracy first reached `target`, or None."""
    return next((i + 1 for i, acc in enumerate(test_acc) if acc >= target), None)


def smoothness(batch_losses: list[float] | np.ndarray, window: int = MA_WINDOW) -> float:
    """How jagged the batch-loss curve is: the standard deviation of the batch losses around
    their 100-batch moving average, divided by the mean loss. Lower is smoother; 0 is a line."""
    v = np.asarray(batch_losses, dtype=np.float64)
    if v.size < 2:
        return math.nan
    resid = v - moving_average(v, window)
    mean = float(np.mean(np.abs(v)))
    return float(np.std(resid) / mean) if mean > 0 else math.nan


@dataclass(frozen=True)
class Metrics:
    """The comparison figures of one run; accuracies are fractions, NaN when not yet known."""

    final_test_acc: float
    best_test_acc: float  # at the best epoch (see best_epoch); NaN without a validation split
    epoch1_test_acc: float
    final_train_loss: float
    final_train_acc: float
    final_test_loss: float
    gap: float  # final train accuracy minus final test accuracy
    epochs_to_target: int | None
    smoothness: float
    total_seconds: float
    seconds_per_epoch: float
    best_epoch: int | None  # 1-based: highest validation accuracy; None without a split
    best_val_acc: float  # NaN without a validation split
    test_acc_at_best: float  # the test accuracy of the best epoch


def best_epoch(history: History) -> int | None:
    """0-based index of the best epoch: the highest validation accuracy, the first of
    equals. None before any epoch, and None without a validation split: the test set does
    not choose the model (such a run has only its *final* epoch)."""
    n = history.epochs_done
    if n == 0 or not history.has_validation or len(history.val_acc) < n:
        return None
    scores = [v if math.isfinite(v) else -math.inf for v in history.val_acc[:n]]
    return max(range(n), key=lambda i: (scores[i], -i))


def early_stop(losses: list[float], patience: int) -> bool:
    """Whether to stop after the last of `losses` (one per epoch): `patience` epochs in a row
    brought no loss lower than the lowest before them. Patience 0 never stops."""
    if patience <= 0 or len(losses) <= patience:
        return False
    finite = [v if math.isfinite(v) else math.inf for v in losses]
    best_before = min(finite[: len(finite) - patience])
    return min(finite[len(finite) - patience :]) >= best_before


def metrics(history: History, target_acc: float, total_seconds: float) -> Metrics:
    """The report's figures of one run: accuracies, losses, gap, pace and smoothness."""

    def last(xs: list[float]) -> float:
        return xs[-1] if xs else math.nan

    n = history.epochs_done
    best = best_epoch(history)
    # The accuracies are read at the epoch validation chose; without a split there is no best
    # epoch: choosing one by the test set itself would flatter it.
    val = at_best = math.nan
    if best is not None:
        val, at_best = history.val_acc[best], history.test_acc[best]
    return Metrics(
        final_test_acc=last(history.test_acc),
        best_test_acc=at_best,
        epoch1_test_acc=history.test_acc[0] if n else math.nan,
        final_train_loss=last(history.epoch_losses),
        final_train_acc=last(history.train_acc),
        final_test_loss=last(history.test_loss),
        gap=last(history.train_acc) - last(history.test_acc),
        epochs_to_target=epochs_to_target(history.test_acc, target_acc),
        smoothness=smoothness(history.batch_losses),
        total_seconds=total_seconds,
        seconds_per_epoch=float(np.mean(history.epoch_seconds)) if n else math.nan,
        best_epoch=None if best is None else best + 1,
        best_val_acc=val,
        test_acc_at_best=at_best,
    )
