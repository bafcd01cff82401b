"""Warm workers: how the scheduler starts a run's worker, warm (forked from a process that has
torch and the engine imported) or cold (a fresh `python -m cnntui.runs.worker`).

A cold worker imports torch (about 2 s) and, at its first optimizer step, `torch._dynamo`
(about 2 s more) before its first batch loss reaches disk. The warm process,
`python -m cnntui.runs.warm RUNS_DIR IDLE`, one per run store, pays that once: it imports
torch, cnntui's engine and the worker, takes one tiny optimizer step on the CPU, then listens
on RUNS_DIR/.warm.sock and forks one child per run the scheduler hands it. It exits IDLE
seconds after its last child ended and nothing was asked of it; a scheduler that finds it gone
starts another. The setting is the environment variable CNNTUI_WARM_IDLE (seconds, default
120; 0 starts every worker cold).

Fork safety: the warm process imports no user code (models of the user's own load in the
child, with the run) and never touches CUDA (no `torch.cuda.is_available()`, which
initialises it), so a child can still pick its GPU with CUDA_VISIBLE_DEVICES. It warms up
with one thread (GNU OpenMP and OpenBLAS pools are not fork-safe) and refuses to fork while a
second thread exists. Each child starts a session of its own, closes every file descriptor it
inherited but the run's worker.log (its stderr) and /dev/null, takes the environment the
scheduler gives it, and runs the worker's main for its run.

The scheduler sees only `launcher()` and the handles it returns (`poll`, `terminate`): the
same for a warm and a cold worker. No torch is imported here outside the warm process.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

from . import store as st
from .processes import spawn, start_detached

IDLE_ENV = "CNNTUI_WARM_IDLE"
DEFAULT_IDLE = 120.0  # seconds the warm process waits for another run after its last one
READY_SECONDS = 60.0  # how long a launch waits for a new warm process to warm up
LOOP_SECONDS = 0.2  # how often the warm process reaps its children
MAX_REQUEST = 1 << 16  # bytes of one request (a run's path and its environment)
# Thread pools that would otherwise start with numpy or torch, and are not fork-safe.
ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class Handle(Protocol):
    """A started worker: `poll` is its exit status once it ended (None while it runs)."""

    pid: int

    def poll(self) -> int | None:
        """The worker's exit status, or None while it runs."""
        ...

    def terminate(self) -> None:
        """Ask the worker to stop (SIGTERM: it cancels its run within a batch and saves)."""
        ...


class Launcher(Protocol):
    """Starts a run's worker process: `start(run_dir, env, log_fd)` → a Handle."""

    def start(self, run_dir: Path, env: dict[str, str], log: int) -> Handle:
        """Start the worker of the queued run `run_dir` in a session of its own, with
        environment `env`, stdin and stdout on /dev/null and stderr on the descriptor `log`
        (the caller closes it)."""
        ...


class WarmError(OSError):
    """The warm process could not start a run (the caller starts it cold)."""


def idle_seconds(environ: dict[str, str] | None = None) -> float:
    """CNNTUI_WARM_IDLE as seconds (0: cold workers); a value that is not a number >= 0 is
    said in one line on stderr, and the default holds."""
    text = (os.environ if environ is None else environ).get(IDLE_ENV, "").strip()
    if not text:
        return DEFAULT_IDLE
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also nan
        print(
            f"cnntui: {IDLE_ENV}={text!r} must be a number of seconds >= 0 (0: cold workers);"
            f" using {DEFAULT_IDLE:g}",
            file=sys.stderr,
        )
        return DEFAULT_IDLE
    return value


PREWARM_ENV = "CNNTUI_PREWARM"  # 0: opening the TUI does not start the warm process


def prewarm(root: Path, python: str = sys.executable) -> bool:
    """Start the store's warm process now, without waiting for it, so that the next run
    starts warm (the TUI does this when it opens); True when one is up or starting. Nothing
    when warm workers are off (CNNTUI_WARM_IDLE=0) or CNNTUI_PREWARM=0."""
    idle = idle_seconds()
    if idle == 0 or os.environ.get(PREWARM_ENV, "").strip() == "0":
        return False
    conn = connect(root)
    if conn is not None:
        conn.close()
        return True
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        _start(Path(root), idle, python)
    except OSError:  # a store this user cannot write: its runs start cold, as before
        return False
    return True


def _start(root: Path, idle: float, python: str) -> subprocess.Popen[bytes]:
    """The store's warm process, started detached; it warms up on its own."""
    # numpy (which the store imports) and torch start their thread pools on import
    env = {**os.environ, **dict.fromkeys(ONE_THREAD, "1")}
    argv = [python, "-m", "cnntui.runs.warm", str(root), f"{idle:g}"]
    return start_detached(argv, root / st.WARM_LOG, env)


def launcher(root: Path, python: str = sys.executable) -> Launcher:
    """The launcher the scheduler of the store at `root` uses: warm, or cold when
    CNNTUI_WARM_IDLE is 0."""
    idle = idle_seconds()
    cold = ColdLauncher(python)
    return cold if idle == 0 else WarmLauncher(root, idle, python, cold)


class ColdLauncher:
    """A fresh `python -m cnntui.runs.worker RUN_DIR` per run."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def start(self, run_dir: Path, env: dict[str, str], log: int) -> Handle:
        """See Launcher.start."""
        return spawn([self.python, "-m", "cnntui.runs.worker", str(run_dir)], log, env)


class WarmRun:
    """A worker forked by the warm process. Its end comes as a line on the connection; should
    the warm process die first, whether the pid still lives says it."""

    def __init__(self, conn: socket.socket, pid: int) -> None:
        self.conn = conn
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """See Handle.poll."""
        if self.returncode is not None:
            return self.returncode
        if self.conn.fileno() >= 0:
            try:
                data = self.conn.recv(256, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return None
            except OSError:
                data = b""
            self.conn.close()
            if data:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self.returncode = int(json.loads(data)["exit"])
                    return self.returncode
        # The warm process is gone: its orphaned child is init's to reap.
        if _alive(self.pid):
            return None
        self.returncode = -1
        return self.returncode

    def terminate(self) -> None:
        """See Handle.terminate."""
        if self.poll() is None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGTERM)


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc: whether a signal would reach it
        return st._pid_alive(pid)
    return state != "Z"


class WarmLauncher:
    """Starts each run from the store's warm process, starting that first when it is not up;
    a run it cannot start that way starts cold (`fallback`)."""

    def __init__(
        self,
        root: Path,
        idle: float,
        python: str = sys.executable,
        fallback: Launcher | None = None,
    ) -> None:
        self.root = Path(root)
        self.idle = idle
        self.python = python
        self.fallback = fallback or ColdLauncher(python)
        self.process: subprocess.Popen[bytes] | None = None  # the warm process we started

    def start(self, run_dir: Path, env: dict[str, str], log: int) -> Handle:
        """See Launcher.start."""
        with contextlib.suppress(OSError):
            return self._ask(run_dir, env, log)
        try:
            if self.ensure():
                return self._ask(run_dir, env, log)
        except OSError as e:
            print(f"cnntui scheduler: no warm worker ({e}); starting it cold", file=sys.stderr)
        return self.fallback.start(run_dir, env, log)

    def ensure(self) -> bool:
        """Start the store's warm process unless one answers; True once one is ready, False
        when it could not warm up within READY_SECONDS (or exited)."""
        if connect(self.root) is not None:
            return True
        self.process = _start(self.root, self.idle, self.python)
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            conn = connect(self.root)
            if conn is not None:
                conn.close()
                return True
            time.sleep(0.05)
        return False

    def _ask(self, run_dir: Path, env: dict[str, str], log: int) -> Handle:
        """Hand the run to the warm process; WarmError (an OSError) when it is not up or
        refuses."""
        conn = connect(self.root)
        if conn is None:
            raise WarmError("no warm process answers")
        try:
            request = {"run": str(run_dir), "env": env, "idle": self.idle}
            socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [log])
            conn.settimeout(30)
            reply = json.loads(_read_line(conn))
            conn.settimeout(None)
            if "pid" not in reply:
                raise WarmError(str(reply.get("error", reply)))
            return WarmRun(conn, int(reply["pid"]))
        except (OSError, ValueError) as e:
            conn.close()
            raise WarmError(f"the warm process did not start the run: {e}") from None


def _read_line(conn: socket.socket) -> bytes:
    """One newline-ended reply from `conn` (ConnectionError on EOF before it)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("the warm process closed the connection")
        data += chunk
    return data


def _short(root: Path) -> tuple[str, int | None]:
    """A name for the socket short enough to bind or connect, and the descriptor it needs
    open meanwhile (None: the plain path)."""
    path = str(root / st.WARM_SOCKET)
    if len(path.encode()) < 100:
        return path, None
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{st.WARM_SOCKET}", fd


def connect(root: Path) -> socket.socket | None:
    """A connection to the store's warm process, or None when none listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name, fd = _short(root)
    try:
        sock.connect(name)
    except OSError:
        sock.close()
        return None
    finally:
        if fd is not None:
            os.close(fd)
    return sock


# The warm process itself, from here on.


def main(argv: list[str] | None = None) -> int:
    """`python -m cnntui.runs.warm RUNS_DIR IDLE`: warm up, then fork a worker for each run
    asked until IDLE seconds pass with nothing to do; the exit status."""
    args = sys.argv[1:] if argv is None else argv
    try:
        root, idle = Path(args[0]), float(args[1])
    except (IndexError, ValueError):
        print("usage: python -m cnntui.runs.warm RUNS_DIR IDLE_SECONDS", file=sys.stderr)
        return 2
    try:
        lock = st.lock_file(root / st.WARM_LOCK)  # held while this warm process lives
    except OSError as e:
        print(f"cnntui warm: {e}", file=sys.stderr)
        return 2
    if lock is None:
        return 0  # another warm process serves this store
    warm_up()
    listener = _bind(root)
    try:
        serve(listener, idle)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(root / st.WARM_SOCKET)
        listener.close()
        lock.release()
    return 0


def warm_up() -> None:
    """Import torch, the engine and the worker, and train a tiny built-in run (LeNet on 64
    synthetic images) on the CPU with one thread: its first optimizer step imports
    torch._dynamo, its first convolutions set up the kernels a run's first batch needs.
    Touches no GPU, no disk and no user code."""
    import torch

    from ..core.config import Experiment
    from ..core.engine import train
    from . import live, worker  # noqa: F401  (what the child runs)

    torch.set_num_threads(1)
    tiny = Experiment(
        name="warm-up",
        dataset="synthetic",
        model="lenet",
        train_size=64,
        test_size=32,
        batch_size=32,
        epochs=1,
        device="cpu",
        threads=1,
    )
    for _event in train(tiny):
        pass


def _bind(root: Path) -> socket.socket:
    """The store's warm socket, listening (a stale one, from a warm process that died, is
    replaced: this process holds the warm lock), reachable by this user only."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(root / st.WARM_SOCKET)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    name, fd = _short(root)
    try:
        listener.bind(name)
        os.chmod(name, 0o600)
    finally:
        if fd is not None:
            os.close(fd)
    listener.listen(16)
    return listener


def serve(listener: socket.socket, idle: float) -> None:
    """Fork a worker for each request; tell each requester its worker's exit status; return
    `idle` seconds after the last worker ended with no request meanwhile."""
    children: dict[int, socket.socket] = {}
    last = time.monotonic()
    while True:
        if _reap(children):
            last = time.monotonic()
        if not children and time.monotonic() - last >= idle:
            return
        ready, _, _ = select.select([listener], [], [], LOOP_SECONDS)
        if ready:
            conn, _ = listener.accept()
            idle = _answer(conn, children, idle)
            last = time.monotonic()


def _reap(children: dict[int, socket.socket]) -> bool:
    """Collect the workers that ended, telling each one's requester its exit status; True
    when one did."""
    ended = False
    for pid in list(children):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:
            continue
        conn = children.pop(pid)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
        conn.close()
        ended = True
    return ended


def _answer(conn: socket.socket, children: dict[int, socket.socket], idle: float) -> float:
    """Read one request from `conn` and fork its worker (or say why not); the idle time the
    request asks for from now on."""
    import struct

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    if struct.unpack("3i", creds)[1] != os.getuid():
        conn.close()  # only this user's schedulers may start runs as this user
        return idle
    fds: list[int] = []
    try:
        conn.settimeout(10)
        data, fds, _flags, _addr = socket.recv_fds(conn, MAX_REQUEST, 1)
        if not data.endswith(b"\n"):
            data += _read_line(conn)
        request = json.loads(data)
        run, env = str(request["run"]), {str(k): str(v) for k, v in request["env"].items()}
        if len(fds) != 1:
            raise ValueError("no log descriptor came with the request")
        check_one_thread()
        pid = fork_worker(run, env, fds[0])
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        conn.settimeout(None)
        children[pid] = conn
        return float(request.get("idle", idle))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps({"error": str(e)}).encode() + b"\n")
        conn.close()
        return idle
    finally:
        for fd in fds:
            os.close(fd)


def check_one_thread() -> None:
    """WarmError unless this process runs a single thread, as a fork needs (a pool thread
    holding a lock at the fork would hold it forever in the child)."""
    count = threading.active_count()
    with contextlib.suppress(OSError):
        count = max(count, len(os.listdir("/proc/self/task")))
    if count != 1:
        raise WarmError(f"the warm process runs {count} threads; it forks with one only")


def fork_worker(run: str, env: dict[str, str], log: int) -> int:
    """Fork the worker of `run`; its pid. The child never returns."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _become_worker(env, log)
        from . import worker

        code = worker.main([run])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stderr.flush()
        os._exit(code)


def _become_worker(env: dict[str, str], log: int) -> None:
    """In the child: a session of its own, stdin and stdout on /dev/null, stderr on `log`,
    every other inherited descriptor closed (the listening socket, the requests, any lock),
    default signal handlers, and the environment the scheduler gave."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGCHLD"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(env)
    import torch

    from ..core.devices import cpu_cores

    # The warm-up's one thread is no run's: a fresh interpreter would start with a thread per
    # core (or OMP_NUM_THREADS), and so does the data a run makes before it sets its own.
    fresh = env.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(int(fresh) if fresh.isdigit() and int(fresh) > 0 else cpu_cores())


if __name__ == "__main__":
    sys.exit(main())
