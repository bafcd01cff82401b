"""Runs of the run store on a Ray cluster: `python -m cnntui.runs.ray_executor RUNS_DIR`,
one per store.

The third way to execute a run, beside worker processes (cnntui.runs.daemon) and threads. A run
whose experiment names a `cluster` is queued in the run store like any other, with executor
"ray" in its queue record; `lifecycle.ensure_scheduler` starts this process for the store
(an flock on RUNS_DIR/.ray-scheduler.lock: at most one, and it outlives the terminal). It
connects to the cluster (`ray.init`), and for each queued run:

- checks that some live node has the CPUs and GPUs the run asks for (`gpu_share`, `threads`),
  and refuses the run with the reason otherwise, rather than leave it pending forever;
- takes the run's lock and launches one Ray task, a streaming generator (`node_train`), with
  `num_cpus` and `num_gpus`; Ray picks the node and the GPU;
- follows what the task yields: the engine's events, and the bytes of every run file the
  engine wrote meanwhile (history, summary, checkpoint each epoch), which it writes into the
  run store here (RunDir.receive), while `driver.drive` keeps the live files (batch losses,
  heartbeat) exactly as for a local run. No shared file system is needed, and `--status`,
  the TUI, `--export` and `--resume` see a Ray run as they see any other.

Why a streaming generator task and not an actor per run: Ray reuses a task's worker process
for the next task, so torch is imported once per worker rather than once per run, and a task
that dies (its node or worker gone) fails its generator at once, which is the signal to retry.
Cancelling needs a way in while the task trains: one small `Control` actor per connection
(no CPU) holds the cancelled run ids, and each task asks it every CANCEL_POLL seconds; the
engine then stops within a batch and saves, and its last files come back. A task that does
not end within CANCEL_GRACE seconds of the request (or has not started) is ended by force
(`ray.cancel`), keeping what was recorded.

A task that fails because its worker or node died is retried from the run's last epoch
checkpoint (the queue record's `retries`, from the setting); the live file is cut back to that
epoch when the retry starts, so the history has no gap and no batch twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import __version__
from ..core.events import BatchLosses, Cancelled, Diverged, Event, Failed, Finished
from ..core.text import one_line
from . import carry
from . import store as st
from .executors import Job, run_one
from .live import EitherEvent
from .records import RunStatus

RAY_MISSING = 'Ray is not installed in this Python; install it with: pip install "cnntui[ray]"'
LOOP_SECONDS = 0.2
CANCEL_POLL = 0.25  # how often a task on a node asks whether its run was cancelled
CANCEL_GRACE = 1.0  # seconds a cancelled task has to stop and send its files before it is ended
CONNECT_TIMEOUT = 10.0  # seconds to reach a cluster's address before giving up on it
ENDINGS = (Finished, Cancelled, Failed, Diverged)
# The nodes run this cnntui's code, whatever version they have installed (they need its
# dependencies: torch, numpy, tomli-w): Ray ships the package to them for the connection.
RUNTIME_ENV = {"py_modules": [str(Path(__file__).resolve().parents[1])]}  # the cnntui package
# What a run's task yields to the store's host: who trains it, then each event of the engine
# with the bytes of the run files written since the previous one, by name.
Hello = tuple[Literal["hello"], str, int, str]  # host name, pid, cnntui version
Sent = tuple[Literal["event"], Event, dict[str, bytes]]


class ClusterError(Exception):
    """The cluster cannot be used: one line naming it and why."""


def ray_missing() -> str | None:
    """Why Ray cannot be used from this Python (RAY_MISSING), or None when it can."""
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else RAY_MISSING


# --- what runs on a node --------------------------------------------------------------------


def node_train(
    state: dict[str, Any],
    checkpoint: bytes | None,
    control: Any,
    device: str,
    cpus: int,
    crash_in_epoch: int | None = None,
    carried: dict[str, Any] | None = None,
) -> Iterator[Hello | Sent]:
    """The Ray task of one run (a streaming generator): trains it with the engine on this
    node and yields ("hello", host, pid, version) first, then ("event", event, files) for
    each event, `files` being the run files the engine wrote since the previous one.
    `carried`: the model's sources and the image folder's arrays the run was queued with
    (runs/carry.py), written and installed here first.

    `crash_in_epoch` (tests): the worker kills itself, as a dying node would, after the first
    batch losses of that 0-based epoch were sent."""
    from ..core.devices import cpu_cores
    from ..core.engine import train

    host = socket.gethostname()
    yield ("hello", host, os.getpid(), __version__)
    run = st.RunOutbox(state)
    exp = dataclasses.replace(run.experiment, device=device)
    done = threading.Event()
    cancel = _watch_cancel(control, run.run_id, done)
    share = max(1, cpu_cores() // max(1, cpus))
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="cnntui-") as tmp:
            if carried:
                exp, aliases = carry.unpack(carried, exp, Path(tmp))
                run.aliases.update(aliases)
            resume = None
            if checkpoint is not None:
                resume = Path(tmp) / "checkpoint.pt"
                resume.write_bytes(checkpoint)
                run.aliases[str(resume)] = str(Path(state["path"]) / "checkpoint.pt")
            sent = False
            for event in train(exp, cancel, run, resume, share):
                if sent:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield ("event", _driver_paths(event, run.aliases), run.take())
                sent = isinstance(event, BatchLosses) and event.epoch == crash_in_epoch
    finally:
        done.set()


def _watch_cancel(control: Any, run_id: str, done: threading.Event) -> threading.Event:
    """A flag set once the control actor says run `run_id` is cancelled; a thread asks
    it every CANCEL_POLL seconds until `done` is set."""
    import ray

    cancel = threading.Event()

    def poll() -> None:
        while not done.wait(CANCEL_POLL):
            try:
                if ray.get(control.cancelled.remote(run_id), timeout=10):
                    cancel.set()
                    return
            except Exception:  # the control actor is busy or gone: ask again
                continue

    threading.Thread(target=poll, name="cnntui-cancel", daemon=True).start()
    return cancel


def _driver_paths(event: Event, aliases: dict[str, str]) -> Event:
    """`event`, a Failed one's reason naming the driver's paths instead of this node's."""
    if not isinstance(event, Failed):
        return event
    reason = event.reason
    for here, there in aliases.items():
        reason = reason.replace(here, there)
    return dataclasses.replace(event, reason=reason)


class Control:
    """The cancelled runs of one connection, asked by the tasks on the nodes."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def cancel(self, run_id: str) -> None:
        """Mark `run_id` cancelled (the store's host calls this)."""
        self.ids.add(run_id)

    def cancelled(self, run_id: str) -> bool:
        """Whether `run_id` was cancelled (its task on a node asks this)."""
        return run_id in self.ids


def _new_control() -> Any:
    """A Control actor on this process's node when it can (it then dies with this process
    alone, not with a worker node), else anywhere."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(Control).options(num_cpus=0, scheduling_strategy=here).remote()


# --- the resources a run asks for -----------------------------------------------------------


def _resources(node: dict[str, Any]) -> dict[str, float]:
    res = node.get("Resources")
    return res if isinstance(res, dict) else {}


def describe_nodes(nodes: list[dict[str, Any]]) -> str:
    """The cluster's live nodes and their CPUs and GPUs, for an error message."""
    alive = [_resources(n) for n in nodes if n.get("Alive")]
    parts = [f"{res.get('CPU', 0):g} CPU {res.get('GPU', 0):g} GPU" for res in alive]
    if not parts:
        return "no live node"
    return f"{len(parts)} node{'s' if len(parts) != 1 else ''}: " + ", ".join(parts)


def request(queue: st.QueueRecord, nodes: list[dict[str, Any]]) -> tuple[dict[str, float], str]:
    """The Ray resources a queued run asks for ({"num_cpus", "num_gpus"}) and the device it
    trains on there, from its queue record and the cluster's nodes (ray.nodes()). ClusterError
    when no live node could ever hold it: a GPU the cluster does not have is refused, not left
    pending."""
    device = queue.device
    cpus = max(1, queue.num_cpus)
    share = queue.gpu_share if queue.gpu_share > 0 else 1.0
    alive = [n for n in nodes if n.get("Alive")]
    most_gpus = max((_resources(n).get("GPU", 0.0) for n in alive), default=0.0)
    wants_gpu = device.startswith("cuda") or (device == "auto" and most_gpus > 0)
    gpus = share if wants_gpu else 0.0
    for n in alive:
        res = _resources(n)
        if res.get("CPU", 0.0) >= cpus and res.get("GPU", 0.0) >= gpus:
            on = "cuda" if gpus else ("cpu" if device == "auto" else device)
            return {"num_cpus": cpus, "num_gpus": gpus}, on
    have = describe_nodes(nodes)
    if gpus and most_gpus == 0:
        why = (
            f"device {device!r} asks for {gpus:g} GPU but the Ray cluster has none ({have}); "
            'set device = "cpu" or "auto", or add a GPU node'
        )
    elif gpus:
        why = (
            f"gpu_share = {gpus:g} asks for {gpus:g} GPUs on one node, and no node has that "
            f"with {cpus} CPU(s) ({have}); lower gpu_share"
        )
    else:
        why = f"no node of the Ray cluster has {cpus} CPU(s) ({have}); lower threads"
    raise ClusterError(why)


# --- the store's side -----------------------------------------------------------------------


def _probe(address: str) -> None:
    """Fail fast on an address nothing listens at (ray.init would wait for minutes)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():
        port = "10001" if address.startswith("ray://") else "6379"
        host = hostport
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as e:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address}: {e.strerror or e} (is `ray start "
            "--head` running there?)"
        ) from None


def use_token_if_any() -> None:
    """Send Ray's authentication token when there is one here (Ray 2.5x clusters started by
    `ray start` require it, and a driver that does not say RAY_AUTH_MODE=token connects without
    it, failing after 20 s). A cluster without authentication accepts it too."""
    if "RAY_AUTH_MODE" in os.environ:
        return  # the user said
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def _error_text(e: BaseException) -> str:
    """The first line of a Ray error, without Ray's advice."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, type(e)):
        return one_line(cause)
    return one_line(e).split(". ")[0]


class RemoteCancel(EitherEvent):
    """A run's cancel flag, as drive() sets it from the cancel file: setting it tells the task
    on its node too (once)."""

    def __init__(self, send: Any) -> None:
        super().__init__(None)
        self.send = send
        self.at: float | None = None  # when it was set (monotonic)

    def set(self) -> None:
        """Cancel the run here and, the first time, ask its task on the node to stop."""
        if self.own.is_set():
            return
        self.at = time.monotonic()
        super().set()
        with contextlib.suppress(Exception):
            self.send()


@dataclass
class Remote:
    """One run training on the cluster, followed by a thread of the scheduler."""

    run: st.RunDir
    queue: st.QueueRecord
    gen: Any  # the task's ObjectRefGenerator
    cancel: RemoteCancel
    thread: threading.Thread | None = None
    node: str | None = None  # host name, once the task said hello
    forced: bool = False
    last: Event | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    abandoned: str = ""  # why the scheduler ended the task itself (it failed): retried saying so


class RayScheduler:
    """Drains one store's queue of runs for Ray. `crash_in_epoch` is for tests: the first
    attempt of each run kills its worker in that epoch (see node_train)."""

    def __init__(self, store: st.RunStore, crash_in_epoch: int | None = None) -> None:
        self.store = store
        self.crash_in_epoch = crash_in_epoch
        self.cluster: str | None = None  # the cluster connected to
        self.control: Any = None
        self.remote_fn: Any = None
        self.active: dict[Path, Remote] = {}
        self.lock = threading.Lock()
        self.own_init = False  # this process started the connection (and ends it)

    # -- connection

    def connect(self, cluster: str) -> None:
        """Connect to `cluster` (a queue record's); ClusterError when it cannot be reached."""
        use_token_if_any()  # before Ray reads its settings, at its import
        import ray

        if self.cluster == cluster and ray.is_initialized():
            return
        if ray.is_initialized() and self.own_init:
            ray.shutdown()
            self.own_init = False
        if ray.is_initialized():  # a caller's connection (tests): use it if it is that one
            here = ray.get_runtime_context().gcs_address
            if cluster not in (here, "auto"):
                raise ClusterError(f"this process is connected to the Ray cluster at {here}")
        else:
            try:
                if cluster == "ray":
                    ray.init(address="local", include_dashboard=False, log_to_driver=False)
                else:
                    if cluster != "auto":
                        _probe(cluster)
                    ray.init(address=cluster, log_to_driver=False, runtime_env=RUNTIME_ENV)
            except ClusterError:
                raise
            except Exception as e:
                raise ClusterError(
                    f"cannot connect to the Ray cluster {cluster!r}: {one_line(e)}"
                ) from None
            self.own_init = True
        self.cluster = cluster
        self.control = _new_control()
        self.remote_fn = ray.remote(node_train)

    def live_control(self) -> Any:
        """The Control actor, created again when it is gone (it lived on a node that died)."""
        import ray
        import ray.exceptions as rx

        try:
            ray.get(self.control.cancelled.remote(""), timeout=CONNECT_TIMEOUT)
        except (rx.RayActorError, rx.GetTimeoutError):
            self.control = _new_control()
        return self.control

    def close(self) -> None:
        """End the connection to the cluster if this scheduler opened it."""
        import ray

        if self.own_init and ray.is_initialized():
            ray.shutdown()
        self.own_init = False
        self.cluster = None

    # -- the queue

    def wait_launched(self) -> None:
        """Nothing to wait for: a run leaves the queue (marked running) as it is launched."""

    def queued(self) -> list[st.RunRecord]:
        """The store's runs queued for Ray that this scheduler does not train yet."""
        return [
            r
            for r in self.store.queued()
            if r.queue is not None
            and r.queue.executor == "ray"
            and not r.queue_problem
            and r.path not in self.active
        ]

    def waiting(self) -> bool:
        """Whether a run waits for Ray (searches are the worker scheduler's: runs/daemon.py)."""
        return bool(self.queued())

    def reap(self) -> None:
        """Forget the runs whose following ended; end by force the tasks of runs cancelled
        CANCEL_GRACE seconds ago (or before they started) that still run."""
        now = time.monotonic()
        with self.lock:
            for path, remote in list(self.active.items()):
                if remote.thread is not None and not remote.thread.is_alive():
                    del self.active[path]
                    continue
                if remote.cancel.at is None or remote.forced:
                    continue
                if remote.node is None or now - remote.cancel.at > CANCEL_GRACE:
                    remote.forced = True
                    _end_task(remote)

    def step(self) -> bool:
        """One round; False when nothing is queued for Ray and no run of ours trains."""
        self.reap()
        queued = self.queued()
        for record in queued:
            cluster = (record.queue.cluster if record.queue else "") or "ray"
            if cluster != self.cluster and self.active:
                continue  # another cluster's run: once this one's runs are done
            self.launch(record)
        return bool(queued or self.active)

    def launch(self, record: st.RunRecord) -> None:
        """Take the queued run's lock and start its task on the cluster, with a thread to
        follow it; a run no node can hold, or that Ray will not take, ends failed instead."""
        try:
            lock = st.try_lock(record.path)
        except st.StoreError as e:  # its lock a link or a FIFO: no one can take it
            refuse(record, str(e))
            return
        if lock is None:
            return  # cancelled from the queue right now, or another process has it
        again = st.RunStore.read(record.path)
        if again is None or again.status != RunStatus.QUEUED:
            lock.release()
            return
        q = again.queue or st.QueueRecord(executor="ray")
        cluster = q.cluster or "ray"
        try:
            self.connect(cluster)
        except ClusterError as e:  # every run queued for it: one try, not one per run
            lock.release()
            refuse_all(self.store, str(e), cluster)
            return
        try:
            import ray

            # ray.nodes() carries no annotations; it returns one dict per node.
            resources, device = request(q, ray.nodes())  # type: ignore[no-untyped-call]
        except ClusterError as e:
            refuse(again, str(e))
            lock.release()
            return
        opened = self._open_run(again, lock)
        if opened is not None:
            self.live_control()
            self._start_task(*opened, q, resources, device)

    def _open_run(
        self, again: st.RunRecord, lock: st.RunLock
    ) -> tuple[st.RunDir, bytes | None] | None:
        """The locked queued run marked running (waiting for a node), and the checkpoint it
        resumes from; None when that cannot be written (the run then ends failed)."""
        resume = again.queue is not None and again.queue.resume
        try:
            run, checkpoint = self.store.open_queued(again, lock)
            ckpt = st.read_file(checkpoint) if checkpoint is not None else None
            # Until its node says (a resumed run keeps the device it had: followers show it).
            waiting = {} if resume else {"device": "ray (waiting for a node)"}
            run.save_summary(RunStatus.RUNNING, **waiting)
        except (OSError, st.StoreError) as e:
            lock.release()
            refuse(again, str(e) if isinstance(e, st.StoreError) else one_line(e))
            return None
        return run, ckpt

    def _start_task(
        self,
        run: st.RunDir,
        ckpt: bytes | None,
        q: st.QueueRecord,
        resources: dict[str, float],
        device: str,
    ) -> None:
        """Submit the run's task and start the thread that follows it; a task Ray refuses
        ends the run failed, saying why."""
        crash = self.crash_in_epoch if not q.attempt else None
        cancel = RemoteCancel(lambda: self.control.cancel.remote(run.run_id))
        name = f"cnntui {run.experiment.name} {run.run_id}"
        try:  # resources: num_cpus and num_gpus
            task = self.remote_fn.options(**resources, max_retries=0, name=name)
            cpus, carried = int(resources["num_cpus"]), st.read_carried(run.path)
            gen = task.remote(run.state(), ckpt, self.control, device, cpus, crash, carried)
        except Exception as e:  # Ray refused the task: the run says why, the others go on
            with contextlib.suppress(OSError):
                run.save_summary(
                    RunStatus.FAILED, reason=f"Ray did not take the run: {one_line(e)}"
                )
            run.release()
            return
        remote = Remote(run, q, gen, cancel)
        remote.thread = threading.Thread(
            target=self.follow, args=(remote,), name=f"cnntui-ray-{run.run_id}", daemon=True
        )
        with self.lock:
            self.active[run.path] = remote
        remote.thread.start()

    # -- following one run

    def stream(self, remote: Remote) -> Iterator[Event]:
        """The events of the run's task as they come, its files written into the store."""
        import ray

        for ref in remote.gen:
            item = ray.get(ref)
            if item[0] == "hello":
                _kind, host, pid, version = item
                remote.node = str(host)
                remote.extra = {"node": remote.node, "node_pid": pid}
                if version != __version__:
                    remote.extra["node_version"] = version
                remote.run.save_summary(**remote.extra)
                continue
            _kind, event, files = item
            if files:
                remote.run.receive(files, **remote.extra)
            if isinstance(event, Failed) and remote.node:  # which node: its data, its GPU
                where = f"on Ray node {remote.node}: "
                event = dataclasses.replace(event, reason=where + event.reason)
                remote.run.save_summary(reason=where + (remote.run.summary.reason or ""))
            remote.last = event
            yield event

    def follow(self, remote: Remote) -> None:
        """Follow one run to its end (live files kept as for a local run), then record how it
        ended and let go of its lock; runs in the run's own thread."""

        def ended(run: st.RunDir, last: Event | None, error: Exception | None) -> None:
            try:
                self.finish(remote, error)
            except (OSError, st.StoreError) as e:
                print(f"cnntui ray: {run.path}: {e}", file=sys.stderr, flush=True)
            except Exception as e:  # a fault of ours: said, and the run retried, never left
                why = f"the Ray scheduler failed while following it ({one_line(e)})"
                print(f"cnntui ray: {run.path}: {why}", file=sys.stderr, flush=True)
                with contextlib.suppress(Exception):
                    _retry_or_interrupt(remote, why)

        job = Job(remote.run.experiment, remote.run)
        stream = lambda *_: self.stream(remote)  # noqa: E731  the task's events, not the engine's
        run_one(job, self.store, remote.cancel, lambda _event: None, stream, on_end=ended)

    def finish(self, remote: Remote, error: BaseException | None) -> None:
        """Say how the run ended when its task did not say it (it died, or was ended)."""
        import ray.exceptions as rx

        run = remote.run
        if error is None and isinstance(remote.last, ENDINGS):
            return  # the engine recorded its ending, and it came back
        if isinstance(error, st.StoreError):  # this machine cannot write the run
            _end_task(remote)
            with contextlib.suppress(OSError):
                run.save_summary(RunStatus.FAILED, reason=str(error))
            return
        if remote.cancel.own.is_set():
            run.save_summary(RunStatus.CANCELLED, reason=_cancelled_reason(remote))
            return
        if remote.abandoned:  # the scheduler ended the task itself, failing
            _retry_or_interrupt(remote, remote.abandoned)
            return
        where = f"Ray node {remote.node}" if remote.node else "the Ray cluster"
        what = _error_text(error) if error is not None else "its task ended without a word"
        what = what.removeprefix(f"{type(error).__name__}: ")
        if "No module named 'cnntui" in what:
            hint = f'install cnntui {__version__} on every node: pip install "cnntui[ray]"'
            run.save_summary(RunStatus.FAILED, reason=f"on {where}: {what} ({hint})")
            return
        if isinstance(error, rx.RayTaskError):  # Python raised on the node: not a dying node
            run.save_summary(RunStatus.FAILED, reason=f"on {where}: {what}")
            return
        lost = "died" if isinstance(error, rx.NodeDiedError) and remote.node else "lost the run"
        why = f"{where} {lost} ({type(error).__name__ if error else 'no ending'}: {what})"
        _retry_or_interrupt(remote, why)

    def abandon(self, why: str) -> None:
        """End every run's task by force (this scheduler failed): each run is retried, or
        interrupted, saying `why`."""
        with self.lock:
            for remote in self.active.values():
                remote.abandoned = why
                _end_task(remote)

    def cancel_all(self) -> None:
        """Ask every run this scheduler trains to stop and save."""
        with self.lock:
            for remote in self.active.values():
                remote.cancel.set()

    def wait_all(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for every run followed to end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.reap()
            if not self.active:
                return
            time.sleep(LOOP_SECONDS)


def _end_task(remote: Remote) -> None:
    """End the run's task on its node now, by force (whatever state it is in)."""
    import ray

    with contextlib.suppress(Exception):
        ray.cancel(remote.gen, force=True)


def _cancelled_reason(remote: Remote) -> str:
    """Why a run the user cancelled ended: before it started, or ended by force."""
    how = ""
    if remote.node is None:
        how = " before it started"
    elif remote.forced:
        how = " (its task did not stop in time and was ended)"
    return f"cancelled by the user{how}"


def _retry_or_interrupt(remote: Remote, why: str) -> None:
    """A run its node lost: queued again to resume while retries are left, else
    interrupted (resumable by hand); `why` says what happened."""
    remote.run.save_summary(**_lost(remote.queue, remote.run.summary.epochs_done or 0, why))


def _lost(queue: st.QueueRecord, done: int, why: str) -> dict[str, Any]:
    """The summary fields of a Ray run lost after `done` epochs (see _retry_or_interrupt)."""
    attempt, retries = queue.attempt, queue.retries
    if attempt < retries:
        again = dataclasses.replace(
            queue,
            resume=True,
            was=RunStatus.INTERRUPTED,
            attempt=attempt + 1,
            queued_at=f"{time.time():.6f}",
            retry_reason=why,  # kept in the summary once the retry runs
        )
        return {
            "status": RunStatus.QUEUED,
            "queue": again.to_json(),
            "reason": f"{why}; retry {attempt + 1} of {retries}, from epoch {done}",
        }
    tried = f"after {retries} retr{'y' if retries == 1 else 'ies'}; " if retries else ""
    return {
        "status": RunStatus.INTERRUPTED,
        "reason": f"{why}; {tried}--resume or R continues it from epoch {done}",
    }


def recover(store: st.RunStore, why: str | None = None) -> int:
    """Queue again (or mark interrupted, resumable) the Ray runs whose scheduler ended while
    they trained: marked running, nobody holding them. `why` says how it ended (default: the
    scheduler named by the run's pid ended). How many runs were recovered."""
    count = 0
    for record in store.runs():
        q = record.queue
        if record.summary.status != RunStatus.RUNNING or q is None or q.executor != "ray":
            continue
        try:
            lock = st.try_lock(record.path)
        except st.StoreError:
            continue
        if lock is None:
            continue  # held: its scheduler lives
        try:
            again = st.RunStore.read(record.path)
            if again is None or again.summary.status != RunStatus.RUNNING or again.queue is None:
                continue
            text = why or f"the Ray scheduler (pid {again.summary.pid}) ended while it trained"
            fields = _lost(again.queue, again.summary.epochs_done or 0, text)
            with contextlib.suppress(OSError):
                st.write_summary(record.path, again.summary.with_fields(**fields))
                count += 1
        finally:
            lock.release()
    return count


def refuse(record: st.RunRecord, reason: str) -> None:
    """A queued run that cannot go to the cluster ends failed, saying why (its lock held)."""
    status: str = RunStatus.FAILED
    q = record.queue
    if q is not None and q.resume:  # a resumed run keeps what it had: resumable again
        status = q.was or RunStatus.INTERRUPTED
    with contextlib.suppress(OSError):
        st.write_summary(record.path, record.summary.with_fields(status=status, reason=reason))


def refuse_all(store: st.RunStore, reason: str, cluster: str | None = None) -> None:
    """Refuse every run queued for Ray (for `cluster`, when given)."""
    for record in store.queued():
        q = record.queue
        if q is None or q.executor != "ray":
            continue
        if cluster is not None and (q.cluster or "ray") != cluster:
            continue
        try:
            lock = st.try_lock(record.path)
        except st.StoreError:
            refuse(record, reason)
            continue
        if lock is None:
            continue
        try:
            again = st.RunStore.read(record.path)
            if again is not None and again.status == RunStatus.QUEUED:
                refuse(again, reason)
        finally:
            lock.release()


def run(store: st.RunStore, scheduler: RayScheduler | None = None) -> int:
    """Drain the store's Ray queue while holding its lock; 0 at once if another holds it. An
    unexpected exception is one line in the log (stderr), and the runs held then are retried
    saying so: status 1."""
    from .daemon import drain

    def ready() -> int | None:
        if ray_missing():
            refuse_all(store, RAY_MISSING)
            return 1
        use_token_if_any()  # before Ray is imported: it reads RAY_AUTH_MODE then
        recover(store)  # runs an earlier scheduler held when it was killed
        return None

    sched = scheduler or RayScheduler(store)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    if scheduler is None:  # a process of its own: a TERM cancels its runs, each saving
        _on_signals(on_signal)
    try:
        status = drain(store, sched, st.RAY_SCHEDULER_LOCK, stop, ready)
        if stop.is_set():
            sched.cancel_all()
            sched.wait_all(30.0)
        return status
    except Exception as e:
        why = f"the Ray scheduler failed: {one_line(e)}"
        print(f"cnntui ray: {why}", file=sys.stderr, flush=True)
        sched.abandon(why)
        sched.wait_all(30.0)
        return 1
    finally:
        if scheduler is None:
            sched.close()


def _on_signals(handler: Any) -> dict[int, Any]:
    """TERM and INT call `handler`; HUP is ignored (the process outlives its terminal). The
    handlers they had, by signal number."""
    had = {}
    for name, to in (("SIGTERM", handler), ("SIGINT", handler), ("SIGHUP", signal.SIG_IGN)):
        if hasattr(signal, name):
            number = getattr(signal, name)
            had[number] = signal.signal(number, to)
    return had


MAX_RESTARTS = 3  # children ended unexpectedly in a row (each within RESTART_WINDOW) at most
RESTART_WINDOW = 60.0


def supervise(store: st.RunStore, command: list[str]) -> int:
    """Run the store's Ray scheduler as the child process `command`, and outlive it: Ray
    terminates a driver whose own node's raylet dies, with no Python exception ("The
    connection to the plasma store is failed. Terminate the process."). When the child ends
    otherwise than with status 0 or 2, one line says so, the runs it held are queued again
    (or interrupted) with that reason, and another child starts while runs are queued for
    Ray; the exit status."""
    import subprocess

    child: list[subprocess.Popen[bytes]] = []
    stopping = threading.Event()

    def forward(signum: int, frame: object) -> None:
        stopping.set()
        if child:
            with contextlib.suppress(OSError):
                child[-1].send_signal(signum)

    had = _on_signals(forward)
    try:
        return _restart(store, command, child, stopping)
    finally:
        for number, handler in had.items():
            signal.signal(number, handler)


def _restart(
    store: st.RunStore, command: list[str], child: list[Any], stopping: threading.Event
) -> int:
    """Supervise's loop: start `command`, and again after each unexpected end (see there)."""
    import subprocess

    restarts = 0
    while True:
        began = time.monotonic()
        child.append(subprocess.Popen(command))
        status: int = child[-1].wait()
        if status in (0, 2) or stopping.is_set():
            return status
        how = f"killed by {signal.Signals(-status).name}" if status < 0 else f"exit status {status}"
        why = f"the Ray scheduler (pid {child[-1].pid}) ended ({how})"
        print(f"cnntui ray: {why}", file=sys.stderr, flush=True)
        if not recover(store, why) and not any(
            r.queue and r.queue.executor == "ray" for r in store.queued()
        ):
            return status  # nothing left for another
        restarts = restarts + 1 if time.monotonic() - began < RESTART_WINDOW else 1
        if restarts > MAX_RESTARTS:
            print(f"cnntui ray: not restarted: it ended {restarts} times", file=sys.stderr)
            return 1


def main(argv: list[str] | None = None) -> int:
    """`python -m cnntui.runs.ray_executor RUNS_DIR`: drain that store's Ray queue in a child
    process (`--child`: that process), outliving it; the exit status."""
    args = sys.argv[1:] if argv is None else argv
    child = args[:1] == ["--child"]
    args = args[1:] if child else args
    if len(args) != 1:
        print("usage: python -m cnntui.runs.ray_executor RUNS_DIR", file=sys.stderr)
        return 2
    store = st.RunStore(args[0])
    if child:
        return run(store)
    return supervise(store, [sys.executable, "-m", "cnntui.runs.ray_executor", "--child", args[0]])


if __name__ == "__main__":
    sys.exit(main())
