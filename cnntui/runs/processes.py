"""The processes cnntui leaves behind it, and the locks that keep them one per store.

`start_detached` is the one way a process that outlives its starter is started (a store's
scheduler, a run's worker); `take_lock` and `held` are the store-wide lock a scheduler holds
while it drains the queue, so that one scheduler per store and executor runs at a time.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from . import store as st


def open_log(log: Path) -> int:
    """`log` opened for appending (created if missing), as a file descriptor; StoreError (one
    line) for a log that is a link or a FIFO (never followed) or cannot be written."""
    try:
        return st.open_file(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    except st.StoreError:
        raise
    except OSError as e:
        raise st.StoreError(f"cannot write {log}: {e.strerror or e}") from None


def spawn(argv: list[str], log: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """The one way cnntui starts a process that outlives its starter: in a session of its own
    (a closed terminal or a dropped SSH connection does not reach it), stdin and stdout on
    /dev/null, stderr on the open file `log`."""
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
        start_new_session=True,
        close_fds=True,
    )


def start_detached(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`spawn` with stderr appended to the file `log` (see open_log)."""
    fd = open_log(log)
    try:
        return spawn(argv, fd, env)
    finally:
        os.close(fd)


def take_lock(
    store: st.RunStore, wait: float = 0.0, name: str = st.SCHEDULER_LOCK
) -> st.RunLock | None:
    """The store's scheduler lock (`name`: the Ray scheduler has its own), or None when a
    scheduler holds it. `wait` rides over a probe (`held`, from another cnntui) that holds it
    for an instant. UnsafeFile when the lock file is a link, a FIFO or a directory: it is
    never followed (it would cut down whatever file it leads to)."""
    return st.lock_file(store.root / name, wait)


def held(store: st.RunStore, name: str = st.SCHEDULER_LOCK) -> bool:
    """Whether a scheduler holds the store's lock `name` now (UnsafeFile: the lock file is a
    link or a FIFO; another OSError: a store this user cannot write)."""
    if not store.root.is_dir():
        return False
    lock = take_lock(store, name=name)
    if lock is None:
        return True
    lock.release()
    return False
