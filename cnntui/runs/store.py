"""The run store: one directory per run, written atomically, listed and reloaded later.

Layout: `<runs_dir>/<experiment name>/<run id>/` holding
- `config.toml`   the resolved experiment the run trained with (provenance);
- `summary.json`  status, device, parameter count, headline metrics; rewritten every epoch;
- `history.npz`   the loss history and per-epoch metrics; rewritten every epoch;
- `checkpoint.pt` model, optimizer and RNG states at the last epoch end (for --resume);
- `weights.pt`    the final model weights;
- `lock`          flock-ed by the process training the run (the OS drops it when that dies);
- `live.f64`      every batch loss so far, appended as it comes (little-endian float64, the
                  k-th value is global batch k): other processes follow a run through it;
- `heartbeat`     touched about once a second by the process training the run; holds
                  `host pid` (liveness of runs trained on another host);
- `cancel`        created by anyone to ask the process training the run to stop and save;
- `worker.log`    what a detached worker process wrote to stderr;
- `carried.npz`   a run queued for a Ray cluster: its user model's Python files and its image
                  folder's decoded arrays as they were when it was queued (cnntui.runs.carry),
                  sent to its node with the task; read with `allow_pickle=False`.

A run trained on another machine (a Ray node, cnntui.runs.ray_executor) writes into a `RunOutbox`
instead: the bytes of each file come back to the store's host, where `RunDir.receive` writes
them here, so every run of the store has the same files however it was trained.

A run in the queue (status `queued`) is a directory with config.toml and a summary.json whose
`queue` record says how to launch it; the scheduler (cnntui.runs.daemon) starts it.

Every file is written to a temporary file in the same directory and renamed over the old one,
so a crash or `kill -9` leaves either the previous complete file or the new one. Files are
created with the mode the umask gives (0666 less the umask), as other tools do.

Reading a run's files never raises anything but `RunFileError`, whose one-line message names
the file; a run whose summary.json is unreadable is not listed at all. A writer that reopened
a run never writes a history shorter than the one on disk.

Nothing outside the store is written through it, and nothing in it blocks a reader: every
file of the store is opened through `open_file`, which never follows a symbolic link, never
waits on a FIFO, and refuses anything but a regular file with one line naming it
(`UnsafeFile`); files written by rename replace a link, never follow it. A run's directory or
its experiment's directory that is a symbolic link is refused, for new runs and resumes alike
(`check_run_dir`, `RunStore.check_inside`); the runs directory itself may be one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import os
import secrets
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import tomli_w

from ..core import user_model
from ..core.config import ConfigError, Experiment, check_value, learned_key
from ..core.history import History, check_arrays, metrics
from ..core.settings import RESUME_KEYS as RESUME_KEYS  # what a resume may change
from ..core.sink import SinkError
from ..core.text import one_line
from .provenance import git_state
from .records import STATUSES as STATUSES  # the store's vocabulary, re-exported
from .records import UNFINISHED as UNFINISHED
from .records import QueueRecord as QueueRecord
from .records import RunStatus as RunStatus
from .records import RunSummary as RunSummary

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]


STUDY_FILE = "study.journal"  # a search's Optuna journal, beside its trials' folders
SEARCH_FILE = "search.json"  # a queued search: its spec and state (runs/searches.py)

LOCK_FILE = "lock"
LIVE_FILE = "live.f64"
HEARTBEAT_FILE = "heartbeat"
CANCEL_FILE = "cancel"
WORKER_LOG = "worker.log"
SCHEDULER_LOCK = ".scheduler.lock"
SCHEDULER_LOG = ".scheduler.log"
WARM_SOCKET = ".warm.sock"  # the warm process listens here (cnntui.runs.warm)
WARM_LOCK = ".warm.lock"  # held by the warm process while it lives; says its pid
WARM_LOG = ".warm.log"
RAY_SCHEDULER_LOCK = ".ray-scheduler.lock"
RAY_SCHEDULER_LOG = ".ray-scheduler.log"
CARRIED_FILE = "carried.npz"  # what a run queued for a Ray cluster takes to its node
MAX_CARRIED_BYTES = 512 << 20  # a run carries at most this much to its node
HEARTBEAT_SECONDS = 1.0  # how often the process training a run touches its heartbeat
HEARTBEAT_STALE = 10.0  # a heartbeat older than this (from another host) means the run died
LOCK_WAIT_SECONDS = 0.5  # how long taking a lock rides over a status probe holding it briefly
MAX_TEXT_FILE = 1 << 20  # summary.json and config.toml larger than this are not read
# A follower reads at most this many batch losses of a live file per look (4 MiB): a 400 MB
# file is read on over many looks, each a few milliseconds, instead of all at once.
LIVE_CHUNK = 1 << 19
PROC_LOCKS = Path("/proc/locks")  # Linux: every lock the system holds, with its holder's pid
MAX_PROC_LOCKS = 16 << 20  # bytes of it read at most


class StoreError(SinkError):
    """The run store cannot be used as asked; the message is one line naming where and why."""


class UnsafeFile(StoreError):
    """A file or directory of the store is something cnntui does not read or write through
    (a symbolic link, a FIFO, a directory, a device); the message names it and what it is."""


class RunFileError(StoreError):
    """A run's file (summary.json, history.npz, config.toml) is unreadable or malformed.

    The only exception reading a run's files raises; exports and front ends catch it, skip or
    refuse that run, and show the message, which names the file."""


class RunLocked(StoreError):
    """Another live process is training the run."""


class ResumeError(StoreError):
    """The run cannot be resumed as asked; nothing was written."""


@functools.cache
def file_mode() -> int:
    """0666 less the umask, the mode any new file gets: the temporary files everything is
    written through are 0600. Read from /proc, since setting the umask to read it would race
    with other threads creating files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    kinds = (
        (stat.S_ISREG, "a file"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    )
    return next((words for test, words in kinds if test(mode)), "something else")


def _unsafe(path: Path, mode: int) -> UnsafeFile:
    return UnsafeFile(
        f"{path} is {_kind(mode)}, not a regular file; cnntui does not read or write through it"
    )


def open_file(path: Path, flags: int, mode: int = 0o666) -> int:
    """Open a file of the run store with `flags` (os.O_RDONLY, os.O_WRONLY | os.O_CREAT, ...):
    a symbolic link is never followed, a FIFO never blocks the open, and anything but a regular
    file is refused with UnsafeFile naming it. FileNotFoundError when it is absent (and not
    created); any other OSError as the system says it. The descriptor blocks as usual and is
    closed on exec."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except FileNotFoundError:
        raise
    except OSError as e:  # ELOOP (a link), EISDIR, ENXIO (a FIFO opened to write), ...
        try:
            found = os.lstat(path).st_mode
        except OSError:
            raise e from None
        if not stat.S_ISREG(found):
            raise _unsafe(path, found) from None
        raise
    try:
        found = os.fstat(fd).st_mode
        if not stat.S_ISREG(found):
            raise _unsafe(path, found)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file(path: Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file of the store (see open_file); ValueError when it holds more
    than `limit` bytes."""
    with os.fdopen(open_file(path, os.O_RDONLY), "rb") as f:
        data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def is_regular(path: Path) -> bool:
    """Whether `path` is a regular file (False when absent); UnsafeFile naming it when it is
    something else: a symbolic link, FIFO or directory is neither read nor replaced."""
    try:
        found = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(found):
        raise _unsafe(path, found)
    return True


def check_run_dir(run_dir: Path) -> None:
    """UnsafeFile when the run's directory or its experiment's directory is a symbolic link
    (or not a directory): what is written there would land outside the store."""
    for path in (run_dir.parent, run_dir):
        try:
            found = os.lstat(path).st_mode
        except OSError:
            continue  # absent: the write that needs it says so
        if not stat.S_ISDIR(found):
            raise UnsafeFile(
                f"{path} is {_kind(found)}, not a directory; cnntui does not write through it"
            )


MIN_FREE_BYTES = 1 << 20  # below this the store's disk counts as full: no run is started


def disk_free(root: Path) -> int | None:
    """Bytes free on the disk holding `root` (None when it cannot be told)."""
    try:
        return shutil.disk_usage(root).free
    except OSError:
        return None


def disk_full(root: Path) -> bool:
    """Whether the disk holding the store is too full to start a run on (its summary alone
    could not be written): queued runs then wait, and --status says so."""
    free = disk_free(root)
    return free is not None and free < MIN_FREE_BYTES


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through `write(file)` into a temp file beside `path`, fsync, then rename over it.
    The file gets the umask's mode (`file_mode`)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (see atomic_write)."""
    atomic_write(path, lambda f: f.write(data))


def write_file(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """atomic_write, failing with a StoreError whose one line names the file."""
    try:
        atomic_write(path, write)
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from None


def _savez(f: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub: names vs allow_pickle


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _pid_alive(pid: Any) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 2**31:
        return False  # not a process id (0 and negatives would signal process groups)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- run locks -----------------------------------------------------------------------------
# A process training a run holds an exclusive flock on the run's `lock` file for as long as it
# trains it; the OS releases it when the process dies, however it dies. flock locks belong to
# an open file, so a second open in the same process conflicts too: one writer per run.


class RunLock:
    """A held run lock; `release` (or losing the last reference) lets it go."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        """Let the lock go now (closing its file drops the flock); safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the file drops the flock

    def __del__(self) -> None:
        self.release()


def try_lock(run_dir: Path, wait: float = 0.0) -> RunLock | None:
    """Take the run's lock, or None when another open file still holds it after `wait`
    seconds. StoreError (one line) when it cannot be taken at all: a read-only store, a lock
    file or run directory that is a symbolic link, a FIFO or a directory (UnsafeFile)."""
    if fcntl is None:
        return RunLock(None)
    check_run_dir(run_dir)
    try:
        return lock_file(run_dir / LOCK_FILE, wait)
    except StoreError:
        raise
    except OSError as e:
        raise StoreError(f"cannot lock run {run_dir}: {e.strerror or e}") from None


def lock_file(path: Path, wait: float = 0.0) -> RunLock | None:
    """The one way cnntui takes a lock: an exclusive flock on `path` (created if missing,
    never through a link: UnsafeFile), with this pid written in it for messages; None when
    another open file still holds it after `wait` seconds (a probe holds one for an
    instant)."""
    assert fcntl is not None  # every caller checks: Windows has no flock
    fd = open_file(path, os.O_RDWR | os.O_CREAT)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.02)
        except BaseException:
            os.close(fd)
            raise
    with contextlib.suppress(OSError):  # the pid is for messages only; a full disk may refuse it
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return RunLock(fd)


def lock_holder(run_dir: Path) -> int | None:
    """None when no process holds the run's lock; else the holder's pid (0 when unknown)."""
    if fcntl is None:
        return None
    try:
        fd = open_file(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None  # no lock file: never locked (or a run from before locks); or no file
        # any process could have locked (a FIFO, a link: try_lock refuses those)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return int(os.read(fd, 32).split()[0])
            except (OSError, ValueError, IndexError):
                return 0
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def lock_owner(run_dir: Path) -> int | None:
    """The pid of the process the system shows holding the run's lock (the exclusive flock on
    its lock file, as /proc/locks lists it); None when nobody holds it or the system does not
    say (no /proc/locks). The pid written in the lock file, like the one in summary.json, is
    text anyone can edit: it is never what this returns."""
    try:
        fd = open_file(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    try:
        table = read_file(PROC_LOCKS, MAX_PROC_LOCKS).decode("ascii", "replace")
    except (OSError, ValueError):
        return None
    wanted = (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino)
    for line in table.splitlines():
        # `1: FLOCK  ADVISORY  WRITE 4242 fe:00:2212023 0 EOF`; waiters have a `->` after `1:`
        fields = line.split()
        if len(fields) < 6 or fields[1:4] != ["FLOCK", "ADVISORY", "WRITE"]:
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            found = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if found == wanted and pid > 0:  # 0: a process outside this pid namespace
            return pid
    return None


def acquire_lock(run_dir: Path, wait: float = LOCK_WAIT_SECONDS) -> RunLock:
    """Take the run's lock, or raise RunLocked naming the process that trains it."""
    lock = try_lock(run_dir, wait)  # a status probe holds it for microseconds; a trainer for good
    if lock is not None:
        return lock
    pid = lock_holder(run_dir)
    who = f"pid {pid}" if pid else "another process"
    raise RunLocked(f"run {run_dir} is still training in {who}")


# --- live files: batch losses, heartbeat, cancel requests ----------------------------------

HOST = os.uname().nodename if hasattr(os, "uname") else "localhost"


class LiveWriter:
    """Appends a run's batch losses to its live file as they come: value k at byte 8k, so a
    chunk written again (a resume) lands where it belongs. Unbuffered: a reader in another
    process sees each chunk as soon as it is written."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LIVE_FILE
        self.fd = open_file(self.path, os.O_WRONLY | os.O_CREAT, file_mode())

    def truncate(self, batches: int) -> None:
        """Keep the first `batches` values (a resume restarts after its checkpoint)."""
        os.ftruncate(self.fd, 8 * max(0, batches))

    def write(self, first_index: int, losses: Any) -> None:
        """Write the batch losses whose first is global batch `first_index`."""
        if len(losses):
            os.pwrite(self.fd, np.asarray(losses, dtype="<f8").tobytes(), 8 * first_index)

    def close(self) -> None:
        """Close the live file; later writes are a bug, closing again is not."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class LiveReader:
    """Follows a run's live file from another process: `read()` returns the batch losses
    appended since the last call, a bounded chunk at a time (`behind` says more is waiting).
    A file that shrank (a resume truncated it) is read again from the start, and `reset` says
    so."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LIVE_FILE
        self.offset = 0  # bytes consumed
        self.reset = False
        self.behind = False  # the last read left losses for the next one

    def read(self, limit: int = LIVE_CHUNK, end: int | None = None) -> np.ndarray:
        """The batch losses appended since the last call (from the start after a reset): at
        most `limit` of them, and none at or past global batch `end` (a run's planned batches:
        a longer file holds nothing the run can have done)."""
        self.reset = self.behind = False
        try:
            with os.fdopen(open_file(self.path, os.O_RDONLY), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:
                    self.offset, self.reset = 0, True
                last = size // 8 if end is None else min(size // 8, max(0, end))
                count = max(0, min(last - self.offset // 8, limit))
                f.seek(self.offset)
                data = f.read(8 * count)
        except OSError:
            return np.empty(0)
        self.offset += len(data)
        self.behind = self.offset // 8 < last
        return np.frombuffer(data, dtype="<f8").copy()


def touch_heartbeat(run_dir: Path) -> None:
    """Say that this process still trains the run (written once, then only touched). Anything
    there but a regular file (a link, a FIFO) is replaced, never followed."""
    path = run_dir / HEARTBEAT_FILE
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.utime(path, follow_symlinks=False)
            return
    except FileNotFoundError:
        pass
    except OSError:
        return
    with contextlib.suppress(OSError):
        atomic_write_bytes(path, f"{HOST} {os.getpid()}\n".encode())


def clear_heartbeat(run_dir: Path) -> None:
    """Say that no process trains the run any more (its trainer ended)."""
    with contextlib.suppress(OSError):
        (run_dir / HEARTBEAT_FILE).unlink()


def read_heartbeat(run_dir: Path) -> tuple[str, int, float] | None:
    """(host, pid, time of the last beat) of the process training the run, or None."""
    path = run_dir / HEARTBEAT_FILE
    try:
        host, pid = read_file(path, 4096).decode().split()[:2]
        return host, int(pid), os.lstat(path).st_mtime
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def request_cancel(run_dir: Path) -> None:
    """Ask whoever trains the run to stop and save (it polls for this file)."""
    check_run_dir(run_dir)
    write_file(run_dir / CANCEL_FILE, lambda f: f.write(b""))


def clear_cancel(run_dir: Path) -> None:
    """Withdraw a cancel request, so a resumed run is not stopped by an old one."""
    with contextlib.suppress(OSError):
        (run_dir / CANCEL_FILE).unlink()


def cancel_requested(run_dir: Path) -> bool:
    """Whether someone asked the process training the run to stop."""
    return (run_dir / CANCEL_FILE).exists()


def write_summary(run_dir: Path, summary: RunSummary) -> None:
    """Rewrite a run's summary.json (for a process that does not train it: the queue)."""
    summary = dataclasses.replace(summary, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
    check_run_dir(run_dir)
    data = _summary_bytes(summary)
    write_file(run_dir / "summary.json", lambda f: f.write(data))


def new_run_id() -> str:
    """Sortable by start time; the random tail keeps two simultaneous runs apart."""
    return time.strftime("%Y%m%d-%H%M%S") + f"-{secrets.token_hex(3)}"


def _summary_bytes(summary: RunSummary) -> bytes:
    """summary.json's bytes: indented JSON, text as written (not escaped to ASCII)."""
    return json.dumps(summary.to_json(), indent=2, ensure_ascii=False).encode()


def _read_small(file: Path) -> bytes:
    return read_file(file, MAX_TEXT_FILE)


def read_history_arrays(file: Path) -> dict[str, np.ndarray]:
    """The arrays of a history.npz, checked to be a consistent history (empty when there is
    no file); anything else raises RunFileError naming the file."""
    if not file.exists() and not file.is_symlink():
        return History().arrays()
    try:
        with os.fdopen(open_file(file, os.O_RDONLY), "rb") as f:
            loaded = np.load(f, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("not an npz archive")
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
    except UnsafeFile as e:
        raise RunFileError(str(e)) from None
    except Exception as e:  # any bytes at all: numpy and zipfile raise many kinds
        raise RunFileError(f"{file}: unreadable history ({one_line(e)})") from None
    try:
        check_arrays(arrays)
    except ValueError as e:
        raise RunFileError(f"{file}: {e}") from None
    return arrays


@dataclass
class RunRecord:
    """A run on disk, as read back from its summary.json (fields of the wrong type dropped)."""

    path: Path
    summary: RunSummary
    dropped: tuple[str, ...] = ()  # summary fields of the wrong type, e.g. "'params' is 'abc'"

    @property
    def name(self) -> str:
        """The experiment's name: the directory the run is filed under."""
        return self.path.parent.name

    @property
    def run_id(self) -> str:
        """The run's id: the name of its directory."""
        return self.path.name

    @property
    def seed(self) -> int | None:
        """The seed the run trained with: from its summary, or (a run from before summaries
        recorded it) its config.toml; None when neither can be read."""
        if self.summary.seed is not None:
            return self.summary.seed
        try:
            return self.experiment().seed
        except RunFileError:
            return None

    @property
    def settings_key(self) -> str | None:
        """`config.learned_key` of the run's settings (read from config.toml for a run from
        before summaries recorded it); None when unknown."""
        if self.summary.settings_key is not None:
            return self.summary.settings_key
        try:
            return learned_key(self.experiment())
        except RunFileError:
            return None

    @property
    def label(self) -> str:
        """`baseline`, or `baseline seed 2` for a run of one of several seeds."""
        return f"{self.name} seed {self.seed}" if self.summary.seeds else self.name

    @property
    def status(self) -> RunStatus:
        """The status its summary says, except that a running run whose process is gone
        reads interrupted (and a summary with none, killed before it wrote one, too)."""
        status = self.summary.status or RunStatus.INTERRUPTED
        if status is RunStatus.RUNNING and not self.alive():
            return RunStatus.INTERRUPTED  # its process was killed mid-run
        return status

    def alive(self) -> bool:
        """Whether a live process trains the run: one holds its lock. The pid its summary
        names is not asked (a recycled pid, or one a copied or edited summary.json names, is
        no trainer); a run without a lock file has none. A run trained on another host (its
        heartbeat names that host) lives while its heartbeat is fresh."""
        beat = read_heartbeat(self.path)
        if beat is not None and beat[0] != HOST:
            return time.time() - beat[2] < HEARTBEAT_STALE
        if fcntl is None:  # no locks here: the recorded pid is all there is
            return _pid_alive(self.summary.pid)
        return lock_holder(self.path) is not None

    def history(self) -> History:
        """The recorded history; RunFileError if history.npz is unreadable or malformed."""
        return History.from_arrays(read_history_arrays(self.path / "history.npz"))

    def experiment(self) -> Experiment:
        """The resolved experiment this run trained with, from its config.toml; RunFileError
        if the file is missing, unreadable or holds a setting that is not valid."""
        import tomllib

        file = self.path / "config.toml"
        try:
            values = tomllib.loads(_read_small(file).decode("utf-8"))
            clean = {
                k: check_value(k, v)
                for k, v in values.items()
                if k in Experiment.__dataclass_fields__
            }
            return Experiment(**{**clean, "name": self.name})
        except FileNotFoundError:
            raise RunFileError(f"{file}: missing (the run's settings are unknown)") from None
        except UnsafeFile as e:
            raise RunFileError(str(e)) from None
        except ConfigError as e:
            raise RunFileError(f"{file}: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise RunFileError(f"{file}: not valid TOML ({e})") from None
        except Exception as e:  # unreadable, not UTF-8, absurdly nested or large
            raise RunFileError(f"{file}: unreadable ({one_line(e)})") from None

    @property
    def checkpoint(self) -> Path:
        """Where the run's resume checkpoint is (it may not exist)."""
        return self.path / "checkpoint.pt"

    @property
    def queue(self) -> QueueRecord | None:
        """How a queued run is to be launched (see `lifecycle.queue_record`); None for a run
        that was never queued. A damaged record reads as far as it can: `queue_problem`."""
        q = self.summary.queue
        return QueueRecord.parse(q)[0] if q is not None else None

    @property
    def queue_problem(self) -> str | None:
        """What is wrong with a queued run's queue record, in one line (None: nothing)."""
        q = self.summary.queue
        if q is None:
            return "its queue record is missing" if self.status is RunStatus.QUEUED else None
        return QueueRecord.parse(q)[1]

    @property
    def live(self) -> Path:
        """Where the run's live batch losses are (it may not exist)."""
        return self.path / LIVE_FILE

    def cancel_requested(self) -> bool:
        """Whether someone asked the process training the run to stop."""
        return (self.path / CANCEL_FILE).exists()


_RUN_FILES = (
    "config.toml",
    "summary.json",
    "history.npz",
    "checkpoint.pt",
    "weights.pt",
    "best.pt",
)
# Every file cnntui keeps in a run's directory: none of them may be a link, FIFO or directory.
_ALL_RUN_FILES = (
    *_RUN_FILES,
    LOCK_FILE,
    LIVE_FILE,
    HEARTBEAT_FILE,
    CANCEL_FILE,
    WORKER_LOG,
    CARRIED_FILE,
)


def read_carried(run_dir: Path) -> dict[str, np.ndarray] | None:
    """The arrays a queued Ray run carries to its node (None: it carries nothing), read
    with `allow_pickle=False`: nothing in the file runs code. RunFileError, one line, when
    the file is not a regular file, is larger than MAX_CARRIED_BYTES or is not an npz."""
    path = run_dir / CARRIED_FILE
    try:
        if not is_regular(path):
            return None
        data = read_file(path, MAX_CARRIED_BYTES + (1 << 20))  # the npz's own headers
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except UnsafeFile as e:
        raise RunFileError(str(e)) from None
    except Exception as e:  # unreadable, too large, not an npz, object arrays
        raise RunFileError(f"{path}: unreadable ({one_line(e)})") from None


def model_source(experiment: Experiment) -> tuple[str | None, str | None]:
    """What a run records of a user model's file: its path and the SHA-256 of its bytes
    (None for a built-in model or a module; no hash for a file that cannot be read)."""
    spec = user_model.parse_spec(experiment.model)
    if spec is None or not spec.is_file:
        return None, None
    path = spec.path(experiment.base_dir)
    try:
        return str(path), user_model.file_hash(path)
    except OSError:
        return str(path), None


def _check_model_unchanged(record: RunRecord, experiment: Experiment, where: str) -> None:
    """ResumeError when the run's model file is not the one it started with."""
    recorded = record.summary.model_hash
    if recorded is None:
        return
    path, now = model_source(experiment)
    if now != recorded:
        file = record.summary.model_file or path or experiment.model
        what = "changed" if now else "is gone"
        raise ResumeError(
            f"{where}: its model file {file} {what} since the run started; resuming would "
            "train another model from its weights (--resume-changed-model resumes anyway)"
        )


class RunDir:
    """The writer side of one run's directory; used by the engine while it trains.

    It holds the run's lock while this process trains the run (`release` ends that). Opened
    again for a resume, it remembers what the disk had recorded (`floor`) and never writes a
    shorter history over it."""

    def __init__(self, path: Path, experiment: Experiment, run_id: str) -> None:
        self.path = path
        self.experiment = experiment
        self.run_id = run_id
        self.lock: RunLock | None = None
        self.floor = (0, 0)  # (batches, epochs) on disk when reopened
        self.written = (0, 0)  # (batches, epochs) of the last history this writer saved
        self.reopened_status: str | None = None  # the status before a resume reopened it
        file, digest = model_source(experiment)
        self.summary = RunSummary(
            name=experiment.name,
            title=experiment.display_title,
            group=experiment.group,
            model=experiment.model,
            dataset=experiment.dataset,
            run_id=run_id,
            status=RunStatus.RUNNING,
            reason="",
            pid=os.getpid(),
            started=time.strftime("%Y-%m-%dT%H:%M:%S"),
            epochs=experiment.epochs,
            seed=experiment.seed,
            settings_key=learned_key(experiment),
            seeds=tuple(experiment.seeds) if experiment.seeds else None,
            model_file=file,
            model_hash=digest,
        )

    def __getstate__(self) -> dict[str, Any]:
        # A worker process gets the run without the lock: the parent keeps holding it.
        return {**self.__dict__, "lock": None}

    @property
    def reopened(self) -> bool:
        """Whether this writer continues a run that was on disk (a resume)."""
        return self.reopened_status is not None

    def release(self) -> None:
        """Let go of the run's lock (the run is no longer trained by this process)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _write(self, filename: str, write: Callable[[IO[bytes]], object]) -> None:
        check_run_dir(self.path)  # the lock was taken in it; still, never write through a link
        write_file(self.path / filename, write)

    def _put(self, filename: str, data: bytes) -> None:
        self._write(filename, lambda f: f.write(data))

    def write_carried(self, arrays: dict[str, np.ndarray]) -> None:
        """Write carried.npz: what the run takes to a Ray node (see read_carried)."""
        self._write(CARRIED_FILE, functools.partial(_savez, arrays=arrays))

    def write_config(self) -> None:
        """Write config.toml: the resolved settings the run trains with."""
        self._put("config.toml", tomli_w.dumps(self.experiment.settings()).encode())

    def covers(self, history: History) -> bool:
        """Whether `history` holds at least what the disk had when the run was reopened."""
        return len(history.batch_losses) >= self.floor[0] and history.epochs_done >= self.floor[1]

    def save(self, history: History, status: str | None = None, **fields: Any) -> None:
        """Rewrite history.npz and summary.json with the run's state so far. A history
        shorter than what the disk recorded (a resume that has not caught up yet) is not
        written: only the summary's status and fields are."""
        if self.covers(history):
            arrays = history.arrays()
            self._write("history.npz", functools.partial(_savez, arrays=arrays))
            self.written = (len(history.batch_losses), history.epochs_done)
            summary = self.summary.with_fields(**fields)
            m = metrics(history, self.experiment.target_acc, summary.total_seconds or 0.0)
            self.summary = summary.with_fields(
                **{k: _json_safe(v) for k, v in asdict(m).items()},
                epochs_done=history.epochs_done,
                batches_done=len(history.batch_losses),
            )
        else:
            self.summary = self.summary.with_fields(
                **{k: v for k, v in fields.items() if k != "total_seconds"}
            )
        self.save_summary(status)

    def save_summary(self, status: str | None = None, **fields: Any) -> None:
        """Rewrite summary.json alone (small: the last thing a full disk may still take)."""
        if status is not None:
            fields["status"] = status
        self.summary = self.summary.with_fields(
            **fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S"), pid=os.getpid()
        )
        self._put("summary.json", _summary_bytes(self.summary))

    def resume_failed(self, reason: str) -> None:
        """A resume could not start: put the run back as it was, resumable, saying why."""
        status = self.reopened_status or RunStatus.INTERRUPTED
        self.save_summary(status, reason=f"resume failed: {reason}")

    def open_checkpoint(self, path: Path) -> IO[bytes]:
        """The checkpoint at `path` opened for reading: never through a link, nor a FIFO."""
        return os.fdopen(open_file(path, os.O_RDONLY), "rb")

    def save_torch(self, filename: str, obj: Any) -> None:
        """Write `obj` to `filename` in the run directory with torch.save. It is serialised
        in memory first: torch's own writer turns a full disk into a RuntimeError naming
        neither the file nor the cause, the store's write says both."""
        import torch

        buf = io.BytesIO()
        torch.save(obj, buf)
        self._put(filename, buf.getvalue())

    def discard(self) -> bool:
        """Remove a new run's directory that recorded nothing (its setup could not even be
        written); True when gone. A reopened run, or one with a batch on disk, is kept."""
        if self.reopened or self.written != (0, 0):
            return False
        self.release()
        names = [*_RUN_FILES, CARRIED_FILE, LOCK_FILE]
        with contextlib.suppress(OSError):
            names += [p.name for p in self.path.glob(".*.tmp")]
        for name in names:
            with contextlib.suppress(OSError):
                (self.path / name).unlink()
        try:
            self.path.rmdir()
        except OSError:
            return False
        return True

    def state(self) -> dict[str, Any]:
        """What a node needs to train this run without its directory (see RunOutbox): plain
        data, so that another cnntui version there can read it."""
        return {
            "path": str(self.path),
            "run_id": self.run_id,
            "settings": self.experiment.settings(),
            "summary": self.summary.to_json(),
            "floor": list(self.floor),
            "reopened_status": self.reopened_status,
        }

    def receive(self, files: dict[str, bytes], **fields: Any) -> None:
        """Write the run's files as a RunOutbox on another machine wrote them (summary.json
        last, so a reader never sees a summary ahead of its history); `fields` go into the
        summary, whose pid becomes this process's (it holds the lock and the live files)."""
        unknown = [name for name in files if name not in _RUN_FILES]
        if unknown:
            raise StoreError(f"{self.path}: a node sent an unknown run file {unknown[0]!r}")
        for name, data in files.items():
            if name != "summary.json":
                self._put(name, data)
        if "summary.json" in files:
            try:
                summary = json.loads(files["summary.json"].decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise StoreError(f"{self.path}: a node sent an unreadable summary.json") from None
            if isinstance(summary, dict):
                self.summary = RunSummary.from_json(summary)[0]
        self.save_summary(**fields)


class RunOutbox(RunDir):
    """The writer side of a run trained where its run store is not (a Ray node): the engine
    writes through it as through a RunDir, and each file's bytes wait in `take()` to be sent
    to the store's host (RunDir.receive). Nothing is written on this machine."""

    def __init__(self, state: dict[str, Any]) -> None:
        # Read as a run's config.toml is: each value checked into its setting's form
        # (model_args back to its pairs), base_dir and the identity kept.
        fields = Experiment.__dataclass_fields__
        settings = {k: check_value(k, v) for k, v in state["settings"].items() if k in fields}
        super().__init__(Path(state["path"]), Experiment(**settings), state["run_id"])
        self.summary = RunSummary.from_json({**self.summary.to_json(), **state["summary"]})[0]
        self.floor = self.written = tuple(state["floor"])
        self.reopened_status = state["reopened_status"]
        self.files: dict[str, bytes] = {}
        self.aliases: dict[str, str] = {}  # local paths in texts -> the store's

    def _write(self, filename: str, write: Callable[[IO[bytes]], object]) -> None:
        buf = io.BytesIO()
        write(buf)
        data = buf.getvalue()
        if filename == "summary.json":
            for here, there in self.aliases.items():
                data = data.replace(
                    json.dumps(here)[1:-1].encode(), json.dumps(there)[1:-1].encode()
                )
        self.files.pop(filename, None)  # rewritten: sent in the order last written
        self.files[filename] = data

    def take(self) -> dict[str, bytes]:
        """The files written since the last call, by name."""
        files, self.files = self.files, {}
        return files

    def discard(self) -> bool:
        """Drop the files not sent yet; a run on another machine has no directory here."""
        self.files.clear()
        return False


class RunStore:
    """All runs under one directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def check_writable(self) -> None:
        """Create the runs directory if need be; StoreError when it cannot be written."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"runs dir {str(self.root)!r} is a file, not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe."):
                pass
        except OSError as e:
            raise StoreError(f"runs dir {str(self.root)!r} is not writable: {e.strerror}") from None

    def check_inside(self, path: Path) -> None:
        """UnsafeFile when `path` (an experiment's or a run's directory, below the runs
        directory) is a symbolic link, or is reached through one, or leads outside the runs
        directory: the one rule for new runs and resumes alike. The runs directory itself may
        be a link."""
        if path.is_relative_to(self.root):
            here = self.root
            for part in path.relative_to(self.root).parts:
                here = here / part
                if here.is_symlink():
                    break
            else:
                if not path.exists() or path.resolve().is_relative_to(self.root.resolve()):
                    return
            path = here
        raise UnsafeFile(
            f"{path} is a symbolic link or leads outside {self.root}; refusing to write through it"
        )

    def check_new_run(self, name: str) -> None:
        """StoreError (one line) when a new run of experiment `name` cannot be filed here: its
        directory is a symbolic link or leads outside the store."""
        check_value("name", name)  # a name that could leave the runs dir is refused
        try:
            self.check_inside(self.root / name)
        except UnsafeFile as e:
            raise UnsafeFile(f"cannot create a run of {name}: {e}") from None

    def create(
        self,
        experiment: Experiment,
        queue: dict[str, Any] | None = None,
        carried: dict[str, np.ndarray] | None = None,
    ) -> RunDir:
        """A fresh, locked directory for a new run of `experiment`, with its config written.
        If that cannot be written (a full disk), no directory is left behind. With `queue`
        (see `queue_record`) the run is written `queued` and its lock let go at once;
        `carried` (a Ray run's, see read_carried) is written before it reads as queued."""
        self.check_new_run(experiment.name)
        base = self.root / experiment.name
        try:
            base.mkdir(parents=True, exist_ok=True)
            while True:
                run_id = new_run_id()
                try:
                    (base / run_id).mkdir()
                    break
                except FileExistsError:
                    continue
        except OSError as e:
            raise StoreError(f"cannot create a run directory in {base}: {e.strerror}") from None
        run = RunDir(base / run_id, experiment, run_id)
        # The experiments file's folder, where the run is created (a queued run's node may
        # not have it): its git commit, and whether the tree had uncommitted changes.
        run.summary = run.summary.with_fields(**git_state(experiment.base_dir))
        if queue is not None:
            run.summary = run.summary.with_fields(status=RunStatus.QUEUED, queue=queue, pid=None)
        try:
            run.lock = acquire_lock(run.path)
            run.write_config()
            if carried is not None:
                run.write_carried(carried)
            if queue is None:
                run.save(History())
            else:
                run._put("summary.json", _summary_bytes(run.summary))
        except BaseException:
            run.discard()
            raise
        if queue is not None:
            run.release()
        return run

    def study_path(self, search: str) -> Path:
        """The file of search `search`'s Optuna study (`<runs>/<search>/study.journal`), its
        folder made if need be; UnsafeFile where that folder is a link or leads outside. No
        run directory is named so: the store's listing passes the file by."""
        check_value("name", search)
        folder = self.root / search
        self.check_inside(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {folder}: {e.strerror}") from None
        return folder / STUDY_FILE

    def search_file(self, search: str) -> Path:
        """The record of search `search` queued in this store (`<runs>/<search>/search.json`),
        its folder made if need be (see `study_path`)."""
        return self.study_path(search).with_name(SEARCH_FILE)

    def search_files(self) -> list[Path]:
        """The records of every search queued in this store, by name."""
        try:
            folders = sorted(self.root.iterdir()) if self.root.is_dir() else []
        except OSError:
            return []
        out = []
        for folder in folders:
            with contextlib.suppress(OSError):  # UnsafeFile too: a link is never followed
                if is_regular(folder / SEARCH_FILE):
                    out.append(folder / SEARCH_FILE)
        return out

    def queued(self) -> list[RunRecord]:
        """The runs waiting in the queue, first in first out."""
        runs = [r for r in self.runs() if r.status is RunStatus.QUEUED]
        runs.sort(key=lambda r: (r.queue.queued_at if r.queue else "", r.run_id))
        return runs

    def find(self, target: str) -> list[RunRecord]:
        """The runs a user names: a run id, or an experiment name (all its runs)."""
        return [r for r in self.runs() if target in (r.run_id, r.name)]

    def open_queued(self, record: RunRecord, lock: RunLock) -> tuple[RunDir, Path | None]:
        """The queued run `record` (its lock taken by the caller) as a writer, and the
        checkpoint it resumes from (None: it starts from the beginning)."""
        if record.queue is not None and record.queue.resume:
            run = self.reopen(record, lock)
            return run, record.checkpoint if is_regular(record.checkpoint) else None
        run = RunDir(record.path, record.experiment(), record.run_id)
        run.summary = run.summary.fill_from(record.summary)
        run.lock = lock
        return run, None

    def reopen(self, record: RunRecord, lock: RunLock | None = None) -> RunDir:
        """A locked writer for an existing run (resume), keeping its summary and what its
        history recorded. RunLocked if another process trains it; RunFileError if its config
        or history cannot be read. `lock`: the run's lock, already taken by the caller."""
        experiment = record.experiment()
        history = record.history()
        status: str = record.status
        if status is RunStatus.QUEUED:  # a queued resume: the status it had before it was queued
            status = (record.queue.was if record.queue else None) or RunStatus.INTERRUPTED
        run = RunDir(record.path, experiment, record.run_id)
        run.lock = lock or acquire_lock(record.path)
        run.summary = dataclasses.replace(
            run.summary.merged(record.summary), status=RunStatus.RUNNING, reason=""
        )
        run.floor = run.written = (len(history.batch_losses), history.epochs_done)
        run.reopened_status = status
        return run

    def resume(
        self, record: RunRecord, overrides: dict[str, Any], model_changed_ok: bool = False
    ) -> tuple[RunDir, Path | None]:
        """Check that `record` can be resumed with `overrides`, then reopen it (locked): the
        writer and the checkpoint to load (None: nothing was recorded, so it restarts in
        place). A run of a user model whose file changed since is refused unless
        `model_changed_ok`. Any refusal is a ResumeError, RunLocked or RunFileError, one
        line, and nothing has been written."""
        where = f"cannot resume {record.name} run {record.run_id}"
        try:
            self.check_inside(record.path)
            for name in _ALL_RUN_FILES:
                is_regular(record.path / name)
        except UnsafeFile as e:
            raise ResumeError(f"{where}: {e}") from None
        experiment = record.experiment()
        fixed = [
            k for k, v in overrides.items() if k not in RESUME_KEYS and getattr(experiment, k) != v
        ]
        if fixed:
            raise ResumeError(
                f"{where}: {', '.join(fixed)} cannot change on resume (only "
                f"{', '.join(RESUME_KEYS)} can); start a new run to try them"
            )
        if not model_changed_ok:
            _check_model_unchanged(record, experiment, where)
        history = record.history()
        checkpoint = record.checkpoint if record.checkpoint.is_file() else None
        if checkpoint is None and (history.batch_losses or history.epochs_done):
            raise ResumeError(
                f"{where}: it recorded {history.epochs_done} epoch(s) and "
                f"{len(history.batch_losses)} batch(es) but has no checkpoint.pt to continue "
                "from; start a new run instead"
            )
        run = self.reopen(record)
        run.experiment = dataclasses.replace(experiment, **overrides)
        run.summary = dataclasses.replace(
            run.summary,
            epochs=run.experiment.epochs,
            settings_key=learned_key(run.experiment),
        )
        file, digest = model_source(run.experiment)  # the file it goes on with from now on
        if digest is not None:
            run.summary = dataclasses.replace(run.summary, model_file=file, model_hash=digest)
        return run, checkpoint

    def runs(self, name: str | None = None) -> list[RunRecord]:
        """Every readable run (of `name`, if given), oldest first; unreadable ones skipped."""
        if not self.root.is_dir():
            return []
        if name is not None:
            check_value("name", name)
        out = [r for r in map(self.read, self._run_dirs(name)) if r is not None]
        return sorted(out, key=lambda r: (r.summary.started or "", r.run_id))

    def unreadable(self, name: str) -> list[Path]:
        """Run directories of `name` that `runs` skips: no readable summary.json."""
        return [d for d in self._run_dirs(name) if self.read(d) is None]

    def latest(
        self, name: str, unfinished: bool = False, seed: int | None = None
    ) -> RunRecord | None:
        """The newest run of `name` (unfinished only, of one seed only, if asked)."""
        for record in reversed(self.runs(name)):
            if unfinished and record.status not in UNFINISHED:
                continue
            if seed is None or record.seed == seed:
                return record
        return None

    @staticmethod
    def read(run_dir: Path) -> RunRecord | None:
        """The run in `run_dir`, or None when its summary.json is missing or unreadable."""
        try:
            summary = json.loads(_read_small(run_dir / "summary.json").decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(summary, dict):
            return None
        clean, dropped = RunSummary.from_json(summary)
        # No status: killed before it wrote one. A status this program never writes: unknown.
        status = clean.status or (RunStatus.UNKNOWN if "status" in summary else None)
        # Where the store filed it is what it is.
        clean = clean.with_fields(name=run_dir.parent.name, status=status or RunStatus.INTERRUPTED)
        return RunRecord(run_dir, clean, tuple(dropped))

    def damaged(self) -> list[tuple[Path, str]]:
        """Run directories whose summary.json is there but cannot be read (cut short, edited
        by hand), each with why in a few words: `runs` skips them, `--status` shows them."""
        out = []
        for run_dir in self._run_dirs():
            file = run_dir / "summary.json"
            if not os.path.lexists(file) or self.read(run_dir) is not None:
                continue
            try:
                json.loads(_read_small(file).decode("utf-8"))
                why = "it does not hold a summary"
            except (OSError, ValueError, RecursionError) as e:
                why = one_line(e)
            out.append((run_dir, why))
        return out

    def _run_dirs(self, name: str | None = None) -> list[Path]:
        """Every run directory of the store (of experiment `name`, if given), unchecked."""
        try:
            exp_dirs = [self.root / name] if name is not None else sorted(self.root.iterdir())
        except OSError:
            return []
        out: list[Path] = []
        for exp_dir in exp_dirs:
            try:
                out += sorted(d for d in exp_dir.iterdir() if d.is_dir())
            except OSError:
                continue
        return out
