"""The headless training engine: `train(experiment, cancel)` yields events, knows no screen.

The whole dataset sits on the training device as uint8 and is batched by indexing. Batch
losses stay on the device and are copied to the host in chunks (about ten a second), so a
step costs no host sync, yet every batch's loss is recorded. The cancel event is checked
every batch. When given a `RunSink`, the engine saves the history and a resumable checkpoint
at every epoch end and the final weights at the end.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from . import data as datasets
from . import devices
from .config import Experiment
from .environment import environment
from .events import (
    BatchLosses,
    CancelFlag,
    Cancelled,
    Diverged,
    EpochEnd,
    Event,
    Failed,
    Finished,
    Started,
)
from .history import History, best_epoch, early_stop
from .lr_schedules import epoch_lr, scheduled
from .models import build, count_parameters, use_generator
from .registry import OPTIMIZERS
from .sink import RunSink, SinkError
from .text import one_line

FLUSH_SECONDS = 0.1  # at most ~10 BatchLosses events a second per run
Clock = Callable[[], float]  # seconds, from any fixed start: what flushes are timed with
Params = Iterable[torch.nn.Parameter]  # the weights an optimizer updates
EVAL_BATCH = 1000


# Seeding and building a model touch torch's global RNG; runs in sibling threads take turns.
_init_lock = threading.Lock()


OPTIMIZERS.register("sgd")(torch.optim.SGD)
OPTIMIZERS.register("adam")(torch.optim.Adam)
OPTIMIZERS.register("adamw")(torch.optim.AdamW)


def make_optimizer(exp: Experiment, params: Params) -> torch.optim.Optimizer:
    """The optimizer `exp` names, over `params`, with its lr and weight decay (and SGD's
    momentum); ValueError for a name none is registered as."""
    optimizer: Callable[..., torch.optim.Optimizer] = OPTIMIZERS.get(exp.optimizer)
    momentum = {"momentum": exp.momentum} if exp.optimizer == "sgd" else {}
    return optimizer(params, lr=exp.lr, weight_decay=exp.weight_decay, **momentum)


def augment_batch(
    x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None, flip: bool = True
) -> torch.Tensor:
    """Random crop after zero padding and (with `flip`) random horizontal flip, per image, as
    one batch op; the draws come from `generator` (on x's device) or torch's global RNG."""
    n, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=generator)
    rows = dy + torch.arange(h, device=dev)
    cols = dx + torch.arange(w, device=dev)
    if flip:
        mirrored = torch.rand(n, 1, device=dev, generator=generator) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


class _Prepared:
    """The dataset on the device plus the per-channel affine that normalises a uint8 batch."""

    def __init__(
        self,
        ds: datasets.TensorDataset,
        dev: torch.device,
        channels_last: bool,
        val_size: int = 0,
        seed: int = 0,
        normalize: str = "dataset",
    ):
        self.classes = ds.classes
        self.normalize = normalize
        self.mean, self.std = datasets.normalisation(ds, normalize)  # what the run records
        self.val_x: torch.Tensor | None = None  # the validation split, when there is one
        self.val_y: torch.Tensor | None = None
        if val_size:  # held out of the training images, stratified by class
            try:
                keep, held = datasets.validation_split(ds.train_y, val_size, seed)
            except ValueError as e:
                raise datasets.DataError(f"{e}: lower val_size or raise train_size") from None
            self.val_x = ds.train_x[held].to(dev)
            self.val_y = ds.train_y[held].to(dev)
            self.train_x = ds.train_x[keep].to(dev)
            self.train_y = ds.train_y[keep].to(dev)
        else:
            self.train_x = ds.train_x.to(dev)
            self.train_y = ds.train_y.to(dev)
        self.test_x = ds.test_x.to(dev)
        self.test_y = ds.test_y.to(dev)
        mean = torch.tensor(self.mean, device=dev).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=dev).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = mean / std
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def inputs(self, raw: torch.Tensor) -> torch.Tensor:
        """A uint8 batch as the normalised float input the model takes."""
        x = raw.float().mul_(self.scale).sub_(self.shift)
        if self.memory_format is torch.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _autocast(exp: Experiment, dev: torch.device) -> contextlib.AbstractContextManager[None]:
    if exp.amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if exp.amp == "bf16" else torch.float16
    return torch.autocast(dev.type, dtype=dtype)


def evaluate(
    model: torch.nn.Module, prep: _Prepared, exp: Experiment, dev: torch.device
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) over the whole test set."""
    loss, acc, _ = score(model, prep, prep.test_x, prep.test_y, exp, dev)
    return loss, acc


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """counts[true][predicted] of one batch of labels and predictions (int64)."""
    flat = labels.long() * classes + predicted.long()
    return torch.bincount(flat, minlength=classes * classes).view(classes, classes)


def score(
    model: torch.nn.Module,
    prep: _Prepared,
    images: torch.Tensor,
    labels: torch.Tensor,
    exp: Experiment,
    dev: torch.device,
) -> tuple[float, float, list[list[int]]]:
    """Mean cross-entropy, accuracy (fraction) and confusion matrix over `images`."""
    model.eval()
    total_loss = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    counts = torch.zeros(prep.classes, prep.classes, device=dev, dtype=torch.long)
    with torch.inference_mode(), _autocast(exp, dev):
        for start in range(0, len(labels), EVAL_BATCH):
            x = prep.inputs(images[start : start + EVAL_BATCH])
            y = labels[start : start + EVAL_BATCH]
            out = model(x)
            total_loss += F.cross_entropy(out.float(), y, reduction="sum")
            predicted = out.argmax(1)
            correct += (predicted == y).sum()
            counts += confusion_matrix(y, predicted, prep.classes)
    model.train()
    n = max(len(labels), 1)
    return total_loss.item() / n, correct.item() / n, counts.tolist()


class _LossBuffer:
    """One epoch's batch losses, kept on the device and handed to the host in chunks."""

    def __init__(self, name: str, epoch: int, batches: int, dev: torch.device) -> None:
        self.name = name
        self.epoch = epoch
        self.base = epoch * batches  # global index of this epoch's first batch
        self.values = torch.empty(batches, device=dev)
        self.flushed = 0

    def take(self, upto: int) -> tuple[BatchLosses | None, Diverged | None]:
        """The losses of batches [flushed, upto) as an event, cut before any NaN or inf."""
        if upto <= self.flushed:
            return None, None
        values = self.values[self.flushed : upto].tolist()  # the one host sync per chunk
        first = self.base + self.flushed
        self.flushed = upto
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        good = values if bad is None else values[:bad]
        chunk = BatchLosses(self.name, self.epoch, first, tuple(good)) if good else None
        if bad is None:
            return chunk, None
        where = first + bad
        return chunk, Diverged(self.name, where, f"loss became {values[bad]} at batch {where}")


def _rng_state(
    shuffle: torch.Generator, noise: torch.Generator, dev: torch.device
) -> dict[str, torch.Tensor]:
    state = {
        "shuffle": shuffle.get_state(),
        "noise": noise.get_state(),
        "cpu": torch.get_rng_state(),  # compiled models draw their dropout masks from it
    }
    if dev.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(dev)
    return state


def _set_rng_state(
    state: dict[str, Any],
    shuffle: torch.Generator,
    noise: torch.Generator,
    dev: torch.device,
    global_rng: bool,
) -> None:
    """Restore a checkpoint's generators; torch's global RNG only when the run draws from it
    (compiled), since setting it disturbs any run training beside this one."""
    shuffle.set_state(state["shuffle"])
    if "noise" in state:
        noise.set_state(state["noise"])
    if global_rng or "noise" not in state:  # older checkpoints drew everything from it
        torch.set_rng_state(state["cpu"])
        if dev.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], dev)


def train(
    exp: Experiment,
    cancel: CancelFlag | None = None,
    run: RunSink | None = None,
    resume: Path | None = None,
    cpu_share: int | None = None,
    clock: Clock = time.monotonic,
) -> Iterator[Event]:
    """Train one experiment, yielding events; never raises for a failing run.

    `cpu_share`: how many runs (this one included) share the machine's cores, as the caller
    knows it (a scheduler's CPU slots); None: the runs training in this process.

    `resume` is a checkpoint written by an earlier run of the same experiment: training
    continues after its last complete epoch with the same model, optimizer and RNG states.
    The calling thread's CPU thread count is set for the run and restored afterwards. `run`
    (a RunSink: the run store's directory, a Ray node's outbox) receives the history,
    summary and checkpoints; its caller opens and releases it.

    `clock` times the flushes of batch losses (one BatchLosses event once FLUSH_SECONDS have
    passed on it since the epoch began or the previous flush); tests pass a fake one.
    """
    r = _Run(exp, cancel or threading.Event(), run, cpu_share, clock)
    with devices.training():
        try:
            _setup(r, resume)
        except Exception as e:
            yield _setup_failed(r, e)
            return
        yield r.started()
        try:
            ending, stopped = yield from _epochs(r)
            if ending is None:
                _finish(r, stopped)
        except Exception as e:
            if run is not None:
                _record_failure(run, r.history, r.total_seconds, *_ended_by(e, r.checkpointed))
            yield Failed(r.name, _runtime_reason(e, exp), r.run_dir)
            return
        yield ending or Finished(r.name, r.total_seconds, stopped)


class CheckpointError(RuntimeError):
    """The checkpoint to resume from cannot be loaded."""


def _load_checkpoint(path: Path, dev: torch.device, run: RunSink | None) -> dict[str, Any]:
    try:
        with run.open_checkpoint(path) if run is not None else path.open("rb") as f:
            ckpt = torch.load(f, map_location=dev, weights_only=True)
        if not isinstance(ckpt, dict):
            raise TypeError(f"holds a {type(ckpt).__name__}, not a checkpoint")
        history = History.from_arrays({k: v.numpy() for k, v in ckpt["history"].items()})
        if ckpt["epoch"] != history.epochs_done:
            raise ValueError(f"epoch {ckpt['epoch']!r} disagrees with its history")
        ckpt["history"] = history
        return ckpt
    except pickle.UnpicklingError:  # torch's text here advises weights_only=False: never
        raise CheckpointError(
            f"{path}: unreadable checkpoint (damaged, or holds more than tensors)"
        ) from None
    except Exception as e:  # any bytes at all: torch raises many kinds
        detail = one_line(e).split(". ")[0]  # torch goes on for sentences
        raise CheckpointError(f"{path}: unreadable checkpoint ({detail})") from e


def _record_failure(
    run: RunSink, history: History, total_seconds: float, reason: str, status: str = "failed"
) -> None:
    """Mark the run failed (or `status`) as fully as the disk allows: the history and
    summary, else the summary alone; and where nothing can be written and nothing was
    recorded, remove the new run's directory rather than leave one that looks like a run."""
    try:
        run.save(history, status, reason=reason, total_seconds=total_seconds)
        return
    except OSError:
        pass
    try:
        run.save_summary(status, reason=reason)
        return
    except OSError:
        run.discard()


# ---------------------------------------------------------------------------------------------
# One run: setup, then epochs (each: train, flush losses, evaluate, checkpoint), then the end.
# ---------------------------------------------------------------------------------------------


class _Run:
    """One run while it trains: what setup builds, and what its epochs add up."""

    dev: torch.device
    prep: _Prepared
    model: torch.nn.Module
    step: Any  # the model, or its compiled form: what training steps and evaluation call
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    shuffle: torch.Generator  # batch order
    noise: torch.Generator  # dropout masks and augmentation, on the device
    amp: contextlib.AbstractContextManager[None]  # reusable: entered once per step
    params: int
    batches: int  # per epoch
    flip: bool  # whether augmentation mirrors images (never digits, unless told)

    def __init__(
        self,
        exp: Experiment,
        cancel: CancelFlag,
        run: RunSink | None,
        cpu_share: int | None,
        clock: Clock,
    ) -> None:
        self.exp = exp
        self.cancel = cancel
        self.run = run
        self.cpu_share = cpu_share
        self.clock = clock
        self.name = exp.label  # `baseline seed 2` for one of several seeds: runs of one name apart
        self.run_dir = str(run.path) if run is not None else None
        self.history = History()
        self.total_seconds = 0.0
        self.start_epoch = 0
        self.checkpointed = 0  # epochs the run's checkpoint holds (what a resume starts from)

    def save(self, status: str | None = None, **fields: Any) -> None:
        """Write the history and summary (with `status` and `fields`) where there is a run dir."""
        if self.run is not None:
            self.run.save(self.history, status, total_seconds=self.total_seconds, **fields)

    def started(self) -> Started:
        """The event that opens the run's stream."""
        run_id = self.run.run_id if self.run else ""
        device = devices.describe_device(self.dev)
        return Started(
            self.name,
            run_id,
            self.run_dir,
            device,
            self.params,
            self.exp.epochs,
            self.batches,
            self.start_epoch,
        )


def _ended_by(exc: BaseException, done: int) -> tuple[str, str]:
    """The reason and status a run that raised mid-training records, `done` epochs saved in
    its checkpoint. A run whose files could not be written (a full disk) is not the run's
    fault: with an epoch checkpointed it reads interrupted, and --resume continues it once
    there is room."""
    reason = _stored_reason(exc)
    if isinstance(exc, SinkError) and done:
        return f"{reason}; --resume continues it from epoch {done} once it can be written", (
            "interrupted"
        )
    return reason, "failed"


# --- setup -----------------------------------------------------------------------------------


def _setup(r: _Run, resume: Path | None) -> None:
    """Device, data, model and optimizer of `r` (resumed from `resume` if given); the run is
    then recorded as running."""
    exp = r.exp
    r.dev = devices.resolve_device(exp.device)
    if r.dev.type == "cpu":
        devices.apply_threads(exp.batch_size, exp.threads, r.cpu_share)
    elif r.dev.type == "cuda":
        # Fixed shapes every step: let cuDNN time its algorithms once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    ds = datasets.load(
        exp.dataset,
        exp.data_dir,
        True,
        exp.train_size,
        exp.test_size,
        exp.image_size,
        exp.base_dir,
    )
    ds = ds.subset(exp.train_size, exp.test_size)
    r.prep = _Prepared(ds, r.dev, exp.channels_last, exp.val_size, exp.seed, exp.normalize)
    r.flip = datasets.flips(exp.dataset, exp.flip)
    _build(r, ds.shape, ds.classes)
    if resume is not None:
        _restore(r, resume)
    r.step = torch.compile(r.model, mode=exp.compile) if exp.compile != "off" else r.model
    r.amp = _autocast(exp, r.dev)
    n_train, n_test = len(r.prep.train_y), len(r.prep.test_y)
    r.batches = math.ceil(n_train / exp.batch_size)
    if n_train == 0 or n_test == 0:
        raise ValueError(f"dataset {exp.dataset!r} has no training or no test images")
    if r.run is not None and r.run.reopened:
        r.run.write_config()  # what it trains with from now on (e.g. more epochs)
    # The images actually used: train_size / test_size cap them, the dataset may hold fewer.
    r.save(
        "running",
        params=r.params,
        device=devices.describe_device(r.dev),
        train_images=n_train,
        val_images=exp.val_size,
        test_images=n_test,
        batches_per_epoch=r.batches,
        class_names=list(ds.class_names) or None,  # an image folder's, as read now
        normalize=exp.normalize,  # and the mean and std (0..1 scale) it divided by
        norm_mean=list(r.prep.mean),
        norm_std=list(r.prep.std),
        **environment(r.dev),  # versions, device model, host: where it trains now
    )


def _build(r: _Run, shape: tuple[int, int, int], classes: int) -> None:
    """The model, its optimizer, gradient scaler and the run's own random generators."""
    exp = r.exp
    with _init_lock:
        torch.manual_seed(exp.seed)
        model = build(exp.model, shape, classes, exp.dropout, exp.model_args, exp.base_dir)
    r.model = model.to(r.dev).to(memory_format=r.prep.memory_format)
    r.params = count_parameters(r.model)
    r.optimizer = make_optimizer(exp, r.model.parameters())
    # Every random draw of the run comes from its own generators, never torch's global
    # RNG (which sibling runs in other threads share): the batch order from `shuffle`,
    # dropout masks and augmentation from `noise`, on the device. Under torch.compile
    # dropout keeps the global RNG, which compiled graphs handle natively.
    r.shuffle = torch.Generator().manual_seed(exp.seed)
    r.noise = torch.Generator(device=r.dev).manual_seed(exp.seed)
    if exp.compile == "off":
        use_generator(r.model, r.noise)
    r.scaler = torch.amp.GradScaler(r.dev.type, enabled=exp.amp == "fp16")


def _restore(r: _Run, resume: Path) -> None:
    """Continue from checkpoint `resume`: model, optimizer, scaler, RNG, time and history."""
    ckpt = _load_checkpoint(resume, r.dev, r.run)
    try:
        r.model.load_state_dict(ckpt["model"])
        r.optimizer.load_state_dict(ckpt["optimizer"])
        r.scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"], r.shuffle, r.noise, r.dev, r.exp.compile != "off")
        r.total_seconds = float(ckpt["total_seconds"])
        r.start_epoch = r.checkpointed = int(ckpt["epoch"])
    except Exception as e:
        raise CheckpointError(f"{resume}: does not fit this run ({one_line(e)})") from e
    r.history = ckpt["history"]


def _setup_failed(r: _Run, exc: Exception) -> Failed:
    """Record why `r` could not start and say so; a resumed run is left as it was."""
    reason = _setup_reason(exc)
    if isinstance(exc, datasets.DataError) and r.exp.dataset != "synthetic":
        reason = f"{reason}; {datasets.TRY_SYNTHETIC}"  # the CLI's advice, in the TUI too
    if r.run is not None and r.run.reopened:
        # Nothing of the earlier run is touched: it stays resumable, and says why not now.
        with contextlib.suppress(OSError):
            r.run.resume_failed(reason)
    elif r.run is not None:
        _record_failure(r.run, r.history, r.total_seconds, reason)
    return Failed(r.name, reason, r.run_dir)


# --- epochs ----------------------------------------------------------------------------------

Ending = Diverged | Cancelled | None


def _epochs(r: _Run) -> Generator[Event, None, tuple[Ending, int | None]]:
    """Train until the last epoch, early stopping, a cancel or a divergence; returns how it
    ended (None: trained through) and the epoch early stopping ended it at."""
    exp, history = r.exp, r.history
    # Early stopping watches the validation loss: never the test set, which must not choose
    # the model (the config refuses patience without val_size; here it is simply off).
    watched = history.val_loss
    patience = exp.early_stop_patience if r.prep.val_y is not None else 0
    stopped = _stopped_early(watched, patience)  # a resumed run that had stopped
    r.model.train()
    for epoch in range(r.start_epoch, exp.epochs if stopped is None else r.start_epoch):
        lr = _begin_epoch(r, epoch)
        t0 = time.perf_counter()
        correct, ending = yield from _train_epoch(r, epoch)
        if ending is not None:
            r.total_seconds += time.perf_counter() - t0
            _save_ending(r, ending)
            return ending, stopped
        end = _evaluate(r, epoch, lr, correct, t0)
        history.add(end)
        _checkpoint(r, epoch)
        r.save()
        yield end
        stopped = _stopped_early(watched, patience)
        if stopped is not None:
            break
    return None, stopped


def _begin_epoch(r: _Run, epoch: int) -> float:
    """Set the thread count and learning rate for `epoch`; returns the rate it trains at."""
    if r.dev.type == "cpu":
        devices.apply_threads(
            r.exp.batch_size, r.exp.threads, r.cpu_share
        )  # sibling runs may have started or finished meanwhile
    if scheduled(r.exp):  # the constant schedule never touches the optimizer
        for group in r.optimizer.param_groups:
            group["lr"] = epoch_lr(r.exp, epoch)
    return float(r.optimizer.param_groups[0]["lr"])


def _train_epoch(r: _Run, epoch: int) -> Generator[Event, None, tuple[torch.Tensor, Ending]]:
    """One pass over the training images in a fresh order, yielding its batch losses about
    ten times a second; returns the number right and why it stopped short (None: it didn't)."""
    order = torch.randperm(len(r.prep.train_y), generator=r.shuffle).to(r.dev)
    buffer = _LossBuffer(r.name, epoch, r.batches, r.dev)
    correct = torch.zeros((), device=r.dev, dtype=torch.long)
    ending: Ending = None
    next_flush = r.clock() + FLUSH_SECONDS
    done = 0  # batches trained this epoch
    for i, idx in enumerate(torch.split(order, r.exp.batch_size)):
        if r.cancel.is_set():
            ending = Cancelled(r.name)
            break
        buffer.values[i], right = _step(r, idx)
        correct += right
        done = i + 1
        if r.clock() >= next_flush:
            ending = yield from _flush(r, buffer, done)
            if ending:
                break
            next_flush = r.clock() + FLUSH_SECONDS
    diverged = yield from _flush(r, buffer, done)
    return correct, diverged or ending


def _step(r: _Run, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the training images at `idx`: its loss and how many it got right."""
    prep = r.prep
    x = prep.inputs(prep.train_x.index_select(0, idx))
    if r.exp.augment:
        x = augment_batch(x, generator=r.noise, flip=r.flip)
    y = prep.train_y.index_select(0, idx)
    with r.amp:
        out = r.step(x)
        loss = F.cross_entropy(out.float() if r.exp.amp != "off" else out, y)
    r.optimizer.zero_grad(set_to_none=True)
    if r.scaler.is_enabled():
        r.scaler.scale(loss).backward()
        r.scaler.step(r.optimizer)
        r.scaler.update()
    else:
        loss.backward()
        r.optimizer.step()
    return loss.detach(), (out.argmax(1) == y).sum()


def _flush(r: _Run, buffer: _LossBuffer, upto: int) -> Generator[Event, None, Diverged | None]:
    """Hand the batch losses not yet flushed, up to `upto`, to the history and the stream;
    returns the divergence among them, if any."""
    chunk, diverged = buffer.take(upto)
    if chunk:
        r.history.add(chunk)
        yield chunk
    return diverged


def _save_ending(r: _Run, ending: Diverged | Cancelled) -> None:
    """Record a run that stopped within an epoch."""
    if isinstance(ending, Diverged):
        r.save("diverged", reason=ending.reason)
    else:
        r.save("cancelled", reason="cancelled by the user")


# --- evaluation and checkpoint -----------------------------------------------------------------


def _evaluate(r: _Run, epoch: int, lr: float, correct: torch.Tensor, t0: float) -> EpochEnd:
    """The epoch's figures: training loss and accuracy, test and validation scores; the
    epoch's seconds (since `t0`, evaluation included) join the run's total."""
    prep, n_train = r.prep, len(r.prep.train_y)
    train_loss = float(sum(r.history.batch_losses[-r.batches :]) / r.batches)
    test_loss, test_acc, confusion = score(r.step, prep, prep.test_x, prep.test_y, r.exp, r.dev)
    val_loss = val_acc = math.nan
    if prep.val_x is not None and prep.val_y is not None:
        val_loss, val_acc, _ = score(r.step, prep, prep.val_x, prep.val_y, r.exp, r.dev)
    seconds = time.perf_counter() - t0
    r.total_seconds += seconds
    return EpochEnd(
        r.name,
        epoch,
        train_loss,
        correct.item() / n_train,
        test_loss,
        test_acc,
        seconds,
        val_loss=val_loss,
        val_acc=val_acc,
        lr=lr,
        confusion=tuple(tuple(row) for row in confusion),
    )


def _checkpoint(r: _Run, epoch: int) -> None:
    """Save best.pt when `epoch` is the best so far, and checkpoint.pt to resume after it."""
    if r.run is None:
        return
    if best_epoch(r.history) == epoch:
        r.run.save_torch("best.pt", r.model.state_dict())
    r.run.save_torch(
        "checkpoint.pt",
        {
            "epoch": epoch + 1,
            "model": r.model.state_dict(),
            "optimizer": r.optimizer.state_dict(),
            "scaler": r.scaler.state_dict(),
            "rng": _rng_state(r.shuffle, r.noise, r.dev),
            "history": {k: torch.from_numpy(v) for k, v in r.history.arrays().items()},
            "total_seconds": r.total_seconds,
        },
    )
    r.checkpointed = epoch + 1


def _finish(r: _Run, stopped: int | None) -> None:
    """Save the final weights and record the run finished (early, at `stopped`, or not)."""
    if r.run is not None:
        r.run.save_torch("weights.pt", r.model.state_dict())
    if stopped is None:
        r.save("finished")
    else:
        r.save("finished", reason=f"early stop at epoch {stopped}", stopped_early=stopped)


def _stopped_early(losses: list[float], patience: int) -> int | None:
    """The 1-based epoch at which early stopping ends the run after `losses`, or None."""
    return len(losses) if early_stop(losses, patience) else None


def _stored_reason(exc: BaseException) -> str:
    """The reason summary.json keeps: the exception's type and first line."""
    if isinstance(exc, CheckpointError | SinkError):
        return str(exc)
    return one_line(exc)


def _setup_reason(exc: BaseException) -> str:
    if isinstance(exc, datasets.DataError | devices.DeviceError | CheckpointError | SinkError):
        return str(exc)
    return one_line(exc)


def _runtime_reason(exc: BaseException, exp: Experiment) -> str:
    if isinstance(exc, SinkError):
        return str(exc)
    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory at batch_size {exp.batch_size}: lower batch_size or test_size"
    return one_line(exc)
