"""A run's life, without a screen: queue, launch, follow, cancel, resume.

Runs go into the run store's queue (`submit`); a scheduler process per store
(cnntui.runs.daemon, started on demand by `ensure_scheduler`) drains it into worker processes
(cnntui.runs.worker) that outlive the terminal. Anyone follows any run through the store
(`Follower`) and cancels it (`cancel`). Runs for a Ray cluster are queued the same way, and
cnntui.runs.ray_executor trains them (the executors: cnntui.runs.executors). Textual-free, and
no torch at import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core import text
from ..core.config import Experiment, expand_runs, gpu_list
from . import carry, searches
from . import store as st
from .records import HELD, QueueRecord, RunStatus

POLL_SECONDS = 0.2  # how often a search's follower looks at its runs' files
PRUNED_WAIT_SECONDS = 10.0  # how long it waits for a cancelled trial to be written pruned

if TYPE_CHECKING:
    from ..core.history import History


def queue_record(
    exp: Experiment, jobs: int = 1, resume: bool = False, was: str | None = None
) -> QueueRecord:
    """How the scheduler launches a queued run (kept in its summary.json as `queue`): on
    which device and GPUs, how many CPU slots the study has, whether it resumes."""
    record = QueueRecord(
        executor="ray" if exp.cluster else "process",
        device=exp.device,
        gpus=tuple(gpu_list(exp.gpus)),
        runs_per_gpu=exp.runs_per_gpu,
        min_free_gib=exp.min_free_gib,
        jobs=jobs,
        cpu_share=jobs,
        resume=resume,
        was=was,
        queued_at=f"{time.time():.6f}",
    )
    if exp.cluster:  # what the Ray scheduler (cnntui.runs.ray_executor) asks the cluster for
        record = dataclasses.replace(
            record,
            cluster=exp.cluster,
            gpu_share=exp.gpu_share,
            num_cpus=exp.threads or 1,
            retries=exp.retries,
        )
    return record


def submit(store: st.RunStore, experiments: list[Experiment], jobs: int = 1) -> list[st.RunRecord]:
    """Queue a new run of each experiment, one per seed of its `seeds`. Each run's GPU slot
    settings (gpus, runs_per_gpu, min_free_gib) are its experiment's; `jobs` is the number
    of CPU slots. A run for a cluster carries its model's sources and image folder's arrays
    (runs/carry.py), packed now. The queued runs, in queue order. StoreError (one line) if
    one cannot be created; those queued before it stay queued."""
    out: list[st.RunRecord] = []
    packed: dict[tuple[object, ...], dict[str, np.ndarray] | None] = {}
    for exp in expand_runs(experiments):
        key = (exp.model, exp.dataset, exp.image_size, exp.data_dir, exp.base_dir)
        if exp.cluster and key not in packed:  # seeds of one experiment carry the same
            packed[key] = carry.pack(exp)
        carried = packed.get(key) if exp.cluster else None
        run = store.create(exp, queue=queue_record(exp, jobs=jobs).to_json(), carried=carried)
        record = st.RunStore.read(run.path)
        if record is not None:
            out.append(record)
    return out


def requeue(runs: list[st.RunDir], jobs: int = 1) -> list[st.RunRecord]:
    """Put resumed runs back in the queue: each reopened (locked) by RunStore.resume, which
    checked it; a worker continues it from its checkpoint. Every lock is let go, queued or
    not; StoreError if one cannot be written (it keeps its status)."""
    out: list[st.RunRecord] = []
    try:
        for run in runs:
            q = queue_record(run.experiment, jobs=jobs, resume=True, was=run.reopened_status)
            run.write_config()  # what it trains with from now on (e.g. more epochs)
            _carry_again(run)
            st.clear_cancel(run.path)
            run.save_summary(st.RunStatus.QUEUED, queue=q.to_json())
            run.release()
            record = st.RunStore.read(run.path)
            if record is not None:
                out.append(record)
    finally:
        for run in runs:
            run.release()
    return out


def _carry_again(run: st.RunDir) -> None:
    """A resumed run for a cluster carries its files as they are now; where they are gone
    (the experiments folder moved) it keeps what it carried when it was first queued."""
    if not run.experiment.cluster:
        return
    try:
        carried = carry.pack(run.experiment)
    except carry.CarryError:
        if st.read_carried(run.path) is not None:
            return
        raise
    if carried is not None:
        run.write_carried(carried)


def ensure_scheduler(store: st.RunStore) -> bool:
    """Start the store's schedulers, detached, unless one runs or nothing is queued for it:
    cnntui.runs.daemon for runs in worker processes, cnntui.runs.ray_executor for runs on a
    Ray cluster.
    True when one was started. StoreError (one line) when a scheduler's lock or log file is a
    symbolic link, a FIFO or a directory: it is not followed, and no scheduler starts."""
    executors = {
        r.queue.executor if r.queue and not r.queue_problem else "process" for r in store.queued()
    }
    if searches.active(store):  # the worker scheduler owns every search's study
        executors.add("process")
    started = False
    if executors - {"ray"}:
        started |= _start_scheduler(
            store, "cnntui.runs.daemon", st.SCHEDULER_LOCK, st.SCHEDULER_LOG
        )
    if "ray" in executors:
        started |= _start_scheduler(
            store, "cnntui.runs.ray_executor", st.RAY_SCHEDULER_LOCK, st.RAY_SCHEDULER_LOG
        )
    return started


def _start_scheduler(store: st.RunStore, module: str, lock: str, log_name: str) -> bool:
    from . import processes as scheduler

    try:
        if scheduler.held(store, lock):
            return False
    except st.StoreError:
        raise  # its lock file a link or a FIFO: said, never followed
    except OSError:  # a store this user cannot write: its own users' schedulers drain it
        return False
    scheduler.start_detached([sys.executable, "-m", module, str(store.root)], store.root / log_name)
    return True


def cancel(store: st.RunStore, target: str) -> list[str]:
    """Cancel the queued and running runs that `target` names (a run id, or an experiment's
    name): a queued one leaves the queue at once, a running one is asked to stop and save
    (its cancel file, and SIGTERM to the worker process the system shows holding its lock).
    One line per run touched; a StoreError when none is queued or running."""
    lines: list[str] = []
    found = store.find(target)
    if not found:
        raise st.StoreError(f"--cancel {target!r}: no run or experiment of that name here")
    for record in found:
        where = f"{record.name} {record.run_id}"
        if record.status is st.RunStatus.QUEUED:
            if _dequeue(record):
                lines.append(f"{where}: removed from the queue")
                continue
            record = st.RunStore.read(record.path) or record  # it started meanwhile
        if record.status is st.RunStatus.RUNNING:
            pid = _ask_to_stop(record)
            how = f"SIGTERM to pid {pid}" if pid else "asked through its cancel file"
            lines.append(f"{where}: cancelling ({how}; it stops within a batch and saves)")
    if not lines:
        raise st.StoreError(f"--cancel {target!r}: none of its runs is queued or running")
    return lines


def _dequeue(record: st.RunRecord) -> bool:
    """Take a queued run out of the queue (cancelled, or back to how it was before a
    --resume queued it); False when it is locked or no longer queued."""
    lock = st.try_lock(record.path)
    if lock is None:
        return False
    try:
        again = st.RunStore.read(record.path)
        if again is None or again.status is not st.RunStatus.QUEUED:
            return False
        q = again.queue
        status = q.was if q is not None and q.resume and q.was else RunStatus.CANCELLED
        why = "removed from the queue"
        st.write_summary(record.path, again.summary.with_fields(status=status, reason=why))
        return True
    finally:
        lock.release()


def _ask_to_stop(record: st.RunRecord) -> int | None:
    """Ask a running run to stop and save: its cancel file, which whoever trains it watches,
    and SIGTERM to a local worker process, found as the process the system shows holding the
    run's lock (never the pid summary.json names: that is text anyone can edit). The pid
    signalled, or None when the cancel file alone asks (no such process can be told)."""
    st.request_cancel(record.path)
    beat = st.read_heartbeat(record.path)
    local = beat is None or beat[0] == st.HOST
    # SIGTERM for a worker process only: a Ray run's lock is its scheduler's (which follows
    # other runs too): it sees the cancel file and tells the task on its node. A run in a
    # thread is locked by the process it trains in: that one watches the cancel file too.
    worker = record.queue is not None and record.queue.executor == "process"
    if not (worker and local):
        return None
    return _terminate_lock_owner(record.path)


def _terminate_lock_owner(run_dir: Path) -> int | None:
    """SIGTERM to the process holding the run's lock; its pid, or None when none was sent.
    Where the system has pidfds, the process is pinned first and its hold looked at again,
    so a pid freed and reused between the look and the signal is never hit."""
    pid = st.lock_owner(run_dir)
    if pid is None or pid == os.getpid():
        return None
    try:
        if not hasattr(os, "pidfd_open"):
            os.kill(pid, signal.SIGTERM)
            return pid
        pinned = os.pidfd_open(pid)
        try:
            if st.lock_owner(run_dir) != pid:
                return None
            signal.pidfd_send_signal(pinned, signal.SIGTERM)
        finally:
            os.close(pinned)
    except OSError:
        return None
    return pid


def wait_ended(store: st.RunStore, paths: list[Path], timeout: float) -> bool:
    """Wait until none of the runs at `paths` is queued or running; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [st.RunStore.read(p) for p in paths]
        if all(r is None or r.status not in HELD for r in records):
            return True
        time.sleep(0.2)
    return False


# --- following a run from any process -------------------------------------------------------


@dataclass
class Update:
    """What changed in a followed run since the last poll."""

    record: st.RunRecord | None  # None: the run's summary is gone or unreadable
    losses: np.ndarray  # batch losses appended since the last poll
    first_index: int  # global batch index of losses[0]
    reset: bool = False  # the live file was rewritten (a resume): drop what you had
    history: Any = None  # the History, when history.npz changed since the last poll


class Follower:
    """Follows one run of the store through its files: summary, live losses, history."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader = st.LiveReader(path)
        self.history_mtime = -1.0

    def poll(self) -> Update:
        """What the run's files say now: its summary, new batch losses (a bounded chunk, none
        past the batches the run plans: `behind` says more wait) and history."""
        record = st.RunStore.read(self.path)
        first = self.reader.offset // 8
        losses = self.reader.read(end=planned_batches(record))
        if self.reader.reset:
            first = 0
        history = None
        try:
            mtime = (self.path / "history.npz").stat().st_mtime
        except OSError:
            mtime = -1.0
        if mtime != self.history_mtime and record is not None:
            with contextlib.suppress(st.RunFileError):
                history = record.history()
                self.history_mtime = mtime
        return Update(record, losses, first, self.reader.reset, history)

    @property
    def behind(self) -> bool:
        """Whether the last poll left batch losses for the next one."""
        return self.reader.behind


def planned_batches(record: st.RunRecord | None) -> int | None:
    """How many batches the run plans in all (None while it has not said): no more can have
    been trained, whatever its live file holds."""
    s = record.summary if record is not None else None
    if s is None or not s.epochs or not s.batches_per_epoch:
        return None
    return max(0, s.epochs) * max(0, s.batches_per_epoch)


# --- the store at a glance ------------------------------------------------------------------


def short_device(summary: st.RunSummary) -> str:
    """Where a run trains, in a few characters: `gpu 1`, `cpu`, `node-a:cuda:0`."""
    if summary.gpu is not None:
        device = f"gpu {summary.gpu}"
    elif summary.device:
        device = summary.device.split(" (")[0]
    else:
        device = QueueRecord.parse(summary.queue)[0].device if summary.queue is not None else "-"
    return f"{summary.node[:12]}:{device}" if summary.node else device  # Ray: the node too


def progress(record: st.RunRecord) -> str:
    """How far a run is: `done/planned` epochs, and for a running one the share of batches."""
    s = record.summary
    epochs = s.epochs
    if record.status is st.RunStatus.QUEUED or epochs is None or epochs <= 0:
        return "-"
    done = min(max(0, s.epochs_done or 0), epochs)  # a summary may say more: edited by hand
    per_epoch = s.batches_per_epoch if s.batches_per_epoch and s.batches_per_epoch > 0 else None
    if record.status is st.RunStatus.RUNNING and per_epoch:
        live = min(_live_batches(record), per_epoch * epochs)
        return f"{min(done + 1, epochs)}/{epochs} {100 * live / (per_epoch * epochs):.0f}%"
    return f"{done}/{epochs}"


def _live_batches(record: st.RunRecord) -> int:
    """How many batch losses the run's live file holds (0 when it cannot be looked at)."""
    try:
        info = os.lstat(record.live)
    except OSError:
        return 0
    return info.st_size // 8 if stat.S_ISREG(info.st_mode) else 0


def status_rows(store: st.RunStore, recent: int = 10) -> list[list[str]]:
    """`cnntui --status`: the `recent` latest ended runs, every running run, then the queue
    in the order it runs (`queued #1` starts first): the epoch each is in (and how far the
    whole run is), its latest test accuracy."""
    records = store.runs()
    running = [r for r in records if r.status is st.RunStatus.RUNNING]
    others = [r for r in records if r.status not in HELD][-recent:]
    queue = store.queued()  # first in, first out: the order the scheduler starts them
    place = {r.path: i for i, r in enumerate(queue, start=1)}
    rows = []
    for r in others + running + queue:
        name = text.pad(text.safe(r.name), NAME_COLUMN).rstrip()
        acc = r.summary.final_test_acc  # the latest epoch's
        status = f"queued #{place[r.path]}" if r.path in place else str(r.status)
        device = text.safe(short_device(r.summary))
        acc_text = text.pct(acc) if acc is not None else "-"
        rows.append([name, r.run_id, device, progress(r), acc_text, status])
    return rows


# Fits 80 columns: names longer than NAME_COLUMN are cut (the run id tells them apart).
NAME_COLUMN = 15
STATUS_HEADERS = ["experiment", "run id", "device", "epoch", "acc", "status"]


def status_table(store: st.RunStore) -> str:
    """`cnntui --status` as text: the queue, running runs and recent others."""
    rows = status_rows(store)
    damaged = store.damaged()
    for path, _why in damaged:  # never dropped: shown failed, with why below
        name = text.pad(text.safe(path.parent.name), NAME_COLUMN).rstrip()
        rows.append([name, text.safe(path.name)[:22], "-", "-", "-", RunStatus.FAILED])
    if not rows:
        return f"no runs in {store.root}"
    table = text.table(STATUS_HEADERS, rows, right={4})
    for path, why in damaged:
        table += (
            f"\n{text.safe(path.parent.name)} {text.safe(path.name)}: failed: its summary.json "
            f"cannot be read ({text.safe(why)[:60]}); restore it or remove {path}"
        )
    if any(row[-1].startswith("queued #") for row in rows):
        table += "\nqueued runs start in order as slots free up: #1 starts first"
        if st.disk_full(store.root):
            free = st.disk_free(store.root) or 0
            table += (
                f"\nthe disk holding {store.root} is full ({free:,} bytes free): queued runs"
                " wait until space is freed"
            )
    return table


# --- a followed run as the engine's events ------------------------------------------------


def _epochs_before(path: Path) -> int:
    """The epochs a run's history holds as its follow begins: 0 for a run queued afresh (a
    worker may train its first epoch before the first poll; that epoch is no resume's)."""
    record = st.RunStore.read(path)
    if record is None:
        return 0
    if record.status is st.RunStatus.QUEUED and not (record.queue and record.queue.resume):
        return 0
    try:
        return record.history().epochs_done
    except st.RunFileError:
        return 0


class RunEvents:
    """Turns what a followed run's files say into the events its trainer yields (Started,
    BatchLosses, EpochEnd, then one ending), so front ends show a run in another process as
    they show one of their own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.follower = Follower(path)
        self.started = False
        self.ended = False
        self.record: st.RunRecord | None = None  # the summary as the last poll read it
        self.history: History | None = None  # the history as the last poll read it
        # The epochs trained before this follow began: those of a resume, or of a run first
        # followed mid-way (its history was there). A run queued afresh has none, however
        # many epochs it has trained by the first poll: each is said as it ends.
        self.start_epoch = self.epochs_seen = _epochs_before(path)

    def poll(self) -> list[Any]:
        """The events the followed run's files show since the last poll."""
        if self.ended:
            return []
        update = self.follower.poll()
        record = self.record = update.record
        if update.history is not None:
            self.history = update.history
        if record is None or record.status is st.RunStatus.QUEUED:
            return []
        out: list[Any] = []
        if not self.started and (record.summary.batches_per_epoch or 0) > 0:
            out.append(self._started(record))
        if self.started:
            out += self._progress(record, update)
        if record.status in HELD or self._ended_since(record) or self.follower.behind:
            return out  # still training, or losses it trained are still to be read
        self.ended = True
        out.append(self._ending(record))
        return out

    def _progress(self, record: st.RunRecord, update: Update) -> list[Any]:
        """The new batch losses, and an EpochEnd for each epoch ended since the last poll."""
        from ..core.events import BatchLosses

        out: list[Any] = []
        if len(update.losses):
            epoch = update.first_index // (record.summary.batches_per_epoch or 1)
            losses = tuple(update.losses.tolist())
            out.append(BatchLosses(record.label, epoch, update.first_index, losses))
        if self.history is not None:
            out += self._epoch_ends(record.label, self.history)
        return out

    def _ended_since(self, record: st.RunRecord) -> bool:
        """Whether a run read `running` whose process is gone (so it reads interrupted) has
        since written how it ended: its worker wrote its last summary and exited between the
        two looks. The next poll then reads its final files, history and all."""
        if record.status is not st.RunStatus.INTERRUPTED:
            return False
        now = st.RunStore.read(self.path)
        return now is not None and now.status is not st.RunStatus.INTERRUPTED

    def _started(self, record: st.RunRecord) -> Any:
        """The Started event, once the run has said how many batches an epoch has: it starts
        at epoch 0, or where a resume picked up."""
        from ..core.events import Started

        s = record.summary
        self.started = True
        device = s.device if s.device is not None else "?"
        sizes = (s.params or 0, s.epochs or 0, s.batches_per_epoch or 0)
        return Started(
            record.label, record.run_id, str(self.path), device, *sizes, self.start_epoch
        )

    def _epoch_ends(self, name: str, h: History) -> list[Any]:
        """An EpochEnd for each epoch the history holds that was not yet said."""
        from ..core.events import EpochEnd

        out: list[Any] = []
        for i in range(self.epochs_seen, h.epochs_done):
            # Per-epoch records a history may hold besides these (validation, rate).
            extra = {
                k: getattr(h, k)[i]
                for k in ("val_loss", "val_acc", "lr")
                if len(getattr(h, k, ())) > i
            }
            ends = (h.epoch_losses[i], h.train_acc[i], h.test_loss[i], h.test_acc[i])
            out.append(EpochEnd(name, i, *ends, h.epoch_seconds[i], **extra))
        self.epochs_seen = max(self.epochs_seen, h.epochs_done)
        return out

    def _ending(self, record: st.RunRecord) -> Any:
        """The event that ends a run no longer queued or running: how it ended."""
        from ..core.events import Cancelled, Diverged, Failed, Finished

        s, name, status = record.summary, record.label, record.status
        reason = s.reason or ""
        if status is st.RunStatus.FINISHED:
            return Finished(name, s.total_seconds or 0.0)
        if status is st.RunStatus.DIVERGED:
            return Diverged(name, s.batches_done or 0, reason)
        if status is st.RunStatus.CANCELLED:
            return Cancelled(name)
        if status is st.RunStatus.INTERRUPTED:  # a Ray run says why (its node died); a worker not
            return Failed(name, reason or "its worker process ended without a word", str(self.path))
        return Failed(name, reason or status, str(self.path))


# --- following a search ---------------------------------------------------------------------


def follow_search(
    store: st.RunStore,
    name: str,
    cancel: threading.Event,
    leave: threading.Event | None = None,
) -> Iterator[Any]:
    """The events of search `name`'s runs, each trial's as it appears, until the search is no
    longer active and each run has ended, or `leave` is set (the search goes on). `cancel`
    cancels the search: its record says so (no trial is asked after) and its runs are
    cancelled. A scheduler killed meanwhile is taken over."""
    from ..core.events import Cancelled

    followed: dict[Path, RunEvents] = {}
    pending: dict[Path, tuple[Any, float]] = {}  # cancelled trials: pruned ones say so soon
    asked = False
    next_check = 0.0
    while not (leave and leave.is_set()):
        found = searches.load(store, name)  # before the runs: a `done` read sees them all
        state = found[1] if found is not None else "cancelled"
        if cancel.is_set() and not asked:
            asked = True
            cancel_search(store, name, found)
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 2.0
            with contextlib.suppress(OSError):
                ensure_scheduler(store)
        for record in searches.trial_runs(store, name):
            followed.setdefault(record.path, RunEvents(record.path))
        for path, f in followed.items():
            for event in f.poll():
                if isinstance(event, Cancelled) and not asked:  # its pruner's, maybe
                    pending[path] = (event, time.monotonic() + PRUNED_WAIT_SECONDS)
                else:
                    yield event
        yield from _pruned_or_cancelled(pending)
        if state != "active" and not pending and all(f.ended for f in followed.values()):
            return
        cancel.wait(POLL_SECONDS) if not asked else time.sleep(POLL_SECONDS)


def _pruned_or_cancelled(pending: dict[Path, tuple[Any, float]]) -> Iterator[Any]:
    """For each trial that ended cancelled: `searches.Pruned` once the scheduler has written
    it pruned, else its Cancelled event when that has not come within PRUNED_WAIT_SECONDS."""
    for path, (event, until) in list(pending.items()):
        record = st.RunStore.read(path)
        if record is not None and record.status is RunStatus.PRUNED:
            del pending[path]
            yield searches.Pruned(event.name, record.summary.reason or "pruned")
        elif time.monotonic() > until:
            del pending[path]
            yield event


def cancel_search(store: st.RunStore, name: str, found: Any = None) -> int:
    """Mark search `name` cancelled (no trial is asked after), then cancel each of its queued
    and running runs (`found`: its record as `searches.load` read it, else read here); how
    many runs were asked to stop."""
    found = found if found is not None else searches.load(store, name)
    if found is not None and found[1] == "active":
        searches.save(store, found[0], "cancelled")
    stopped = 0
    for record in searches.trial_runs(store, name):
        if record.status in HELD:
            with contextlib.suppress(st.StoreError):  # it ended meanwhile
                cancel(store, record.run_id)
                stopped += 1
    return stopped
