"""The queue's drain: `python -m cnntui.runs.daemon RUNS_DIR`, at most one per run store.

It holds an flock on RUNS_DIR/.scheduler.lock while it lives. Every LOOP_SECONDS it reaps its
finished workers, gives each queued run (first in, first out) a free slot and starts its
worker (cnntui.runs.worker) there, and it exits when nothing is queued and none of its workers
runs. Runs already training (started by an earlier scheduler that was killed, or in another
cnntui's threads) count against the slots, so a scheduler that takes over places no run
twice, and `kill -9` of a scheduler loses no queued run: the next `lifecycle.ensure_scheduler`
(every cnntui that queues or follows calls it) starts another.

Slots: a run whose device is auto or cuda on a machine with GPUs gets a GPU slot (the queue
record's `gpus`, `runs_per_gpu`, `min_free_gib`; see gpus.pick_gpu) and its worker sees that
GPU alone; any other run gets one of `jobs` CPU slots and its share of the cores. No torch.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from . import gpus as gpu_mod
from . import searches, warm
from . import store as st
from .processes import open_log, take_lock
from .records import RunStatus
from .worker import GPU_ENV

if TYPE_CHECKING:
    from .search import SearchDriver

LOOP_SECONDS = 0.5
MAX_LAUNCHES = 3  # a run whose worker ended this often without taking it is marked failed


def wants_gpu(device: str) -> bool:
    """Whether a run on `device` takes a GPU slot on a machine with GPUs: auto or cuda."""
    return device == "auto" or device.startswith("cuda")


@dataclass
class Busy:
    """The slots taken now: our runs on each GPU index, and runs on the CPU."""

    gpu: dict[int, int] = field(default_factory=dict)
    cpu: int = 0

    def take(self, gpu: int | None) -> None:
        """Count one more run on GPU `gpu`, or on the CPU for None."""
        if gpu is None:
            self.cpu += 1
        else:
            self.gpu[gpu] = self.gpu.get(gpu, 0) + 1


def place(
    queued: list[st.RunRecord], busy: Busy, inventory: list[gpu_mod.Gpu]
) -> list[tuple[st.RunRecord, int | None]]:
    """The queued runs that get a slot now, each with its GPU index (None: a CPU slot), in
    queue order. Pure: `busy` is updated with the slots handed out."""
    out: list[tuple[st.RunRecord, int | None]] = []
    for record in queued:
        q = record.queue or st.QueueRecord()
        if inventory and wants_gpu(q.device):
            allowed = list(q.gpus or ())
            if q.device.startswith("cuda:"):
                allowed = [int(q.device.split(":")[1])]
            index = gpu_mod.pick_gpu(
                inventory, busy.gpu, allowed or None, max(1, q.runs_per_gpu), q.min_free_gib
            )
            if index is not None:
                busy.take(index)
                out.append((record, index))
        elif busy.cpu < max(1, q.jobs):
            busy.take(None)
            out.append((record, None))
    return out


class Scheduler:
    """Drains one store's queue; `inventory` is injectable (tests have no GPU)."""

    def __init__(
        self,
        store: st.RunStore,
        inventory: Callable[[], list[gpu_mod.Gpu]] = gpu_mod.inventory,
        python: str = sys.executable,
        launcher: warm.Launcher | None = None,
    ) -> None:
        self.store = store
        self.inventory = inventory
        self.python = python
        # Warm workers, forked from the store's warm process; cold ones when
        # CNNTUI_WARM_IDLE=0 or that cannot start them.
        self.launcher = launcher or warm.launcher(store.root, python)
        self.workers: dict[Path, tuple[warm.Handle, int | None]] = {}
        self.launches: dict[Path, int] = {}  # workers started for each run
        self.refused: set[Path] = set()  # runs it could not even mark failed: left alone
        self.driver: SearchDriver | None = None  # its searches' studies, once one is active

    def busy(self) -> Busy:
        """Slots held by runs training now: ours, and any other live run of the store."""
        busy = Busy()
        for _proc, gpu in self.workers.values():
            busy.take(gpu)
        for record in self.store.runs():
            if record.path in self.workers or record.status != RunStatus.RUNNING:
                continue
            busy.take(record.summary.gpu)
        return busy

    def reap(self) -> None:
        """Forget workers that ended; a run whose worker ended MAX_LAUNCHES times without
        taking it is marked failed, pointing at its worker.log."""
        for path, (proc, _gpu) in list(self.workers.items()):
            if proc.poll() is None:
                continue
            del self.workers[path]
            record = st.RunStore.read(path)
            if record is None or record.status != RunStatus.QUEUED:
                continue
            # Its worker ended without taking the run (it could not start): try again, but
            # not forever.
            if self.launches.get(path, 0) >= MAX_LAUNCHES:
                reason = f"its worker process could not start (see {path / st.WORKER_LOG})"
                self.fail(record, reason)

    def fail(self, record: st.RunRecord, reason: str) -> None:
        """Mark a queued run that no worker can train failed, saying why. A run that cannot be
        locked at all (its lock file a link or a FIFO: no worker can take it either) is
        marked without its lock; one that cannot be written is left alone from now on."""
        try:
            lock = st.try_lock(record.path)
        except st.StoreError as e:
            lock, reason = None, str(e)
        else:
            if lock is None:
                return  # someone took it meanwhile
        try:
            failed = record.summary.with_fields(status=st.RunStatus.FAILED, reason=reason)
            st.write_summary(record.path, failed)
        except st.StoreError:
            self.refused.add(record.path)
        finally:
            if lock is not None:
                lock.release()

    def launch(self, record: st.RunRecord, gpu: int | None) -> None:
        """Start the run's worker process (warm or cold: see cnntui.runs.warm) in a session of
        its own, seeing GPU `gpu` alone (None: a CPU run), its stderr appended to the run's
        worker.log."""
        env = dict(os.environ)
        env.pop(GPU_ENV, None)
        if gpu is not None:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
            env[GPU_ENV] = str(gpu)
        try:
            st.check_run_dir(record.path)
            log = open_log(record.path / st.WORKER_LOG)
        except st.StoreError as e:  # a link, a FIFO: never followed, never waited on
            self.fail(record, str(e))
            return
        try:
            proc = self.launcher.start(record.path, env, log)
        finally:
            os.close(log)
        self.workers[record.path] = (proc, gpu)
        self.launches[record.path] = self.launches.get(record.path, 0) + 1

    def queued(self) -> list[st.RunRecord]:
        """The queue's runs for worker processes; runs queued for another executor (a
        cluster) are that executor's to launch."""
        return [
            r
            for r in self.store.queued()
            if (r.queue_problem or r.queue is None or r.queue.executor == "process")
            and r.path not in self.refused
        ]

    def searching(self) -> bool:
        """Drive the store's active searches (they queue their trials as runs; see
        runs/search.py); whether any is active. Optuna loads with the first one."""
        if self.driver is None:
            if not searches.active(self.store):
                return False
            from .search import SearchDriver

            self.driver = SearchDriver(self.store)
        return self.driver.step()

    def waiting(self) -> bool:
        """Whether anything waits for this scheduler: a queued run, or an active search."""
        return bool(self.queued()) or bool(searches.active(self.store))

    def step(self) -> bool:
        """One round; False when there is nothing left to do."""
        searching = self.searching()
        self.reap()
        queued = [r for r in self.queued() if r.path not in self.workers]
        for record in [r for r in queued if r.queue_problem]:  # hand-damaged: say so, never wait
            self.fail(record, f"cannot be launched: {record.queue_problem}")
        queued = [r for r in queued if not r.queue_problem]
        if queued and st.disk_full(self.store.root):
            return True  # nothing can start: wait for space (--status says why)
        if queued:
            needs = any(wants_gpu(r.queue.device if r.queue else "auto") for r in queued)
            inventory = self.inventory() if needs else []
            for record, gpu in place(queued, self.busy(), inventory):
                self.launch(record, gpu)
        return bool(queued or self.workers or searching)

    def wait_launched(self) -> None:
        """Wait until each worker started has taken its run (or ended), so that the queue read
        next does not still list it as queued."""
        deadline = time.monotonic() + 60
        for path, (proc, _gpu) in list(self.workers.items()):
            while time.monotonic() < deadline and proc.poll() is None:
                record = st.RunStore.read(path)
                if record is None or record.status != RunStatus.QUEUED:
                    break
                time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """`python -m cnntui.runs.daemon RUNS_DIR`: drain that store's queue; the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cnntui.runs.daemon RUNS_DIR", file=sys.stderr)
        return 2
    store = st.RunStore(args[0])
    try:
        return run(store)
    except st.StoreError as e:  # its lock file a link or a FIFO: one line in its log
        print(f"cnntui scheduler: {e}", file=sys.stderr)
        return 2


def run(store: st.RunStore, scheduler: Scheduler | None = None) -> int:
    """Drain the queue into worker processes; 0 at once if another scheduler does."""
    return drain(store, scheduler or Scheduler(store), st.SCHEDULER_LOCK)


class Drains(Protocol):
    """A scheduler of the store's queue: worker processes (Scheduler), or a Ray cluster."""

    def queued(self) -> list[st.RunRecord]:
        """The queued runs that are this scheduler's to start."""
        ...

    def waiting(self) -> bool:
        """Whether anything waits for this scheduler (a queued run, an active search)."""
        ...

    def step(self) -> bool:
        """Start what can start now; False when nothing is queued or running."""
        ...

    def wait_launched(self) -> None:
        """Wait until the runs just started have left the queue."""
        ...


def drain(
    store: st.RunStore,
    sched: Drains,
    lock_name: str,
    stop: threading.Event | None = None,
    ready: Callable[[], int | None] | None = None,
) -> int:
    """The one daemon loop: hold the store's lock `lock_name` and step `sched` until nothing
    is queued or running (or `stop` is set); 0 at once if another process holds the lock.
    `ready`, asked once the lock is held, may end it at once with an exit status."""
    lock = take_lock(store, st.LOCK_WAIT_SECONDS, lock_name)
    if lock is None:
        return 0
    stop = stop or threading.Event()
    try:
        status = ready() if ready is not None else None
        if status is not None:
            return status
        while not stop.is_set():
            if not sched.step():
                # Let go, then look once more: a run queued just now, by a process that saw
                # the lock held, is ours or the next scheduler's, never no one's.
                lock.release()
                if not sched.waiting():
                    return 0
                lock = take_lock(store, st.LOCK_WAIT_SECONDS, lock_name)
                if lock is None:
                    return 0
                continue
            sched.wait_launched()
            stop.wait(LOOP_SECONDS)
        return 0
    finally:
        if lock is not None:  # None: another scheduler took the lock over meanwhile
            lock.release()


if __name__ == "__main__":
    sys.exit(main())
