"""One run in its own process: `python -m cnntui.runs.worker RUN_DIR`.

The scheduler starts one per queued run, in a new session (a closed terminal or a dropped SSH
connection does not reach it), with stdin and stdout on /dev/null and stderr in the run's
worker.log. It takes the run's lock (and exits quietly when another process holds it, or the
run is no longer queued: two schedulers never train a run twice), trains the run as its queue
record says (resuming from checkpoint.pt when asked), and writes its live files meanwhile.
SIGTERM, SIGINT and SIGHUP cancel the run: it stops within a batch and saves.

Its environment may pin it to one GPU (CUDA_VISIBLE_DEVICES, set by the scheduler before
torch is imported here); CNNTUI_GPU names that GPU's index on the machine, for the summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.events import Event, Failed
from ..core.text import one_line
from . import store as st
from .executors import Job, run_one
from .records import RunStatus

if TYPE_CHECKING:
    from .live import EitherEvent

GPU_ENV = "CNNTUI_GPU"
NICE = 5  # how much lower than its starter a worker runs


def main(argv: list[str] | None = None) -> int:
    """`python -m cnntui.runs.worker RUN_DIR`: train that queued run; the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cnntui.runs.worker RUN_DIR", file=sys.stderr)
        return 2
    path = Path(args[0])
    try:
        lock = st.acquire_lock(path)  # rides over a status probe holding it for an instant
    except st.RunLocked:
        return 0  # another process trains it (or is cancelling it from the queue)
    except st.StoreError as e:
        print(f"cnntui worker: {e}", file=sys.stderr)
        return 1
    record = st.RunStore.read(path)
    if record is None or record.status != RunStatus.QUEUED:
        return 0  # cancelled meanwhile, or already trained by an earlier worker
    # Training yields the CPU to interactive work (a TUI, a shell), as the threads of an
    # in-app run always did; on a busy 2-core machine this kept TUI key latency down.
    with contextlib.suppress(OSError, AttributeError):
        os.nice(NICE)
    cancel = _cancel_on_signals()
    try:
        run, checkpoint = _open_run(path, record, lock)
    except Exception as e:  # the run cannot even be set up: say so, never leave it queued
        _failed(path, record, e)
        return 1
    print(
        f"cnntui worker: training {record.name} {record.run_id} in pid {os.getpid()}",
        file=sys.stderr,
        flush=True,
    )
    from ..core.engine import train

    share = record.queue.cpu_share if record.queue is not None else None
    trainer = functools.partial(train, cpu_share=share)
    job = Job(run.experiment, run, checkpoint)
    run_one(job, st.RunStore(path.parent.parent), cancel, _say_failures, trainer)
    return 0


def _say_failures(event: Event) -> None:
    """A worker's events go to the run's files; a failure is said in worker.log too."""
    if isinstance(event, Failed):
        print(f"cnntui worker: {event.reason}", file=sys.stderr, flush=True)


def _failed(path: Path, record: st.RunRecord, e: Exception) -> None:
    """Say why the run could not be set up, and mark it failed (never left queued)."""
    reason = str(e) if isinstance(e, st.StoreError) else one_line(e)
    print(f"cnntui worker: {reason}", file=sys.stderr)
    st.write_summary(path, record.summary.with_fields(status=st.RunStatus.FAILED, reason=reason))


def _cancel_on_signals() -> EitherEvent:
    """A cancel flag that SIGTERM, SIGINT and SIGHUP set."""
    from .live import EitherEvent

    cancel = EitherEvent(None)

    def on_signal(signum: int, frame: object) -> None:
        cancel.set()

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    return cancel


def _open_run(path: Path, record: st.RunRecord, lock: st.RunLock) -> tuple[st.RunDir, Path | None]:
    """The queued run at `path`, marked running with this pid, and the checkpoint to resume
    from (None: from the start)."""
    gpu = os.environ.get(GPU_ENV)
    run, checkpoint = st.RunStore(path.parent.parent).open_queued(record, lock)
    if gpu is not None and run.experiment.device.startswith("cuda"):
        # Pinned: the one GPU this process sees is cuda:0, whatever index it has here.
        run.experiment = dataclasses.replace(run.experiment, device="cuda")
    # Running from now on, with this pid: should this process die before training, the
    # run reads interrupted, not queued forever.
    run.save_summary(RunStatus.RUNNING, gpu=None if gpu is None else int(gpu))
    return run, checkpoint


if __name__ == "__main__":
    sys.exit(main())
