"""Waiting in tests: poll a condition until a deadline, never sleep a fixed time.

Every wait in tests/ goes through here: `poll` from plain code and threads, `until` from a
Textual pilot (it lets the app run between looks), `line` for a subprocess's output. Each one
fails naming what it waited for, and the deadline is generous: it only bounds a hung test,
it never decides whether a correct but slow run passes.
"""

from __future__ import annotations

import contextlib
import inspect
import queue
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

DEADLINE = 120.0  # seconds; a busy 2-core CI machine is slow, never this slow
STEP = 0.05  # the pacing of a poll loop, not a wait for anything


def poll(
    cond: Callable[[], object], timeout: float = DEADLINE, what: str = "", step: float = STEP
) -> Any:
    """Return `cond()`'s first truthy value; fail naming `what` after `timeout` seconds."""
    look = _Looks(cond, timeout, what)
    while not (value := look()):
        time.sleep(step)
    return value


async def until(
    pilot: Any, cond: Callable[[], object], timeout: float = DEADLINE, what: str = ""
) -> Any:
    """`poll` for a Textual pilot: the app handles its messages between looks."""
    look = _Looks(cond, timeout, what)
    while not (value := look()):
        await pilot.pause(STEP)
    return value


class _Looks:
    """One wait: each call looks at `cond` once and returns its value, or fails naming what
    it waited for once the deadline has passed."""

    def __init__(self, cond: Callable[[], object], timeout: float, what: str) -> None:
        self.cond, self.timeout, self.what = cond, timeout, what
        self.end = time.monotonic() + timeout

    def __call__(self) -> object:
        value = self.cond()
        if not value and time.monotonic() > self.end:
            named = _named(self.cond, self.what)
            raise AssertionError(f"timed out after {self.timeout:.0f}s waiting for {named}")
        return value


def _named(cond: Callable[[], object], what: str) -> str:
    """`what`, or else the line of source that defines `cond` (a lambda names itself so)."""
    if what:
        return what
    try:
        return inspect.getsource(cond).strip()
    except (OSError, TypeError):
        return repr(cond)


# proc -> the lines its reader thread read. Weakly keyed by the process object itself: keyed
# by id(proc), a later test's process could get a collected one's id, and with it the old
# process's spent queue, and then wait for a line that never comes.
_readers: weakref.WeakKeyDictionary[subprocess.Popen, queue.Queue[str]] = (
    weakref.WeakKeyDictionary()
)


def _lines(proc: subprocess.Popen) -> queue.Queue[str]:
    """The lines `proc` writes to its stdout, read by one thread as they come ("" at the end)."""
    if proc not in _readers:
        out: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for text in proc.stdout:
                out.put(text)
            out.put("")

        threading.Thread(target=read, daemon=True).start()
        _readers[proc] = out
    return _readers[proc]


def line(proc: subprocess.Popen, needle: str, timeout: float = DEADLINE) -> list[str]:
    """`proc`'s output lines since the last call up to the first containing `needle`; fail
    naming `needle` and that output after `timeout` seconds or when the output ends first."""
    lines, seen = _lines(proc), []
    end = time.monotonic() + timeout
    while True:
        try:  # a blocking read, paced so that the deadline is kept
            text = lines.get(timeout=STEP * 10)
        except queue.Empty:
            text = None
        if text == "":
            lines.put("")  # the end stays the end for the next call
            raise AssertionError(f"the output ended before {needle!r}: {''.join(seen)[-3000:]}")
        if text is not None:
            seen.append(text)
            if needle in text:
                return seen
        if time.monotonic() > end:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {needle!r}: {''.join(seen)[-3000:]}"
                + _stacks(proc)
            )


def _stacks(proc: subprocess.Popen) -> str:
    """What a hung child was doing: SIGABRT makes a Python started with `-X faulthandler`
    print every thread's stack as it dies; its output up to its end, for a failure message."""
    if proc.poll() is not None:  # it ended, yet something it started holds its output open
        return f"\n--- it exited with {proc.returncode}, its output still open ---"
    proc.send_signal(signal.SIGABRT)
    lines, dump = _lines(proc), []
    with contextlib.suppress(queue.Empty):
        while (text := lines.get(timeout=10)) != "":
            dump.append(text)
        lines.put("")  # the end stays the end for the next call
    return "\n--- its threads when the wait gave up ---\n" + "".join(dump)[-12000:]


def rest(proc: subprocess.Popen, timeout: float = DEADLINE) -> str:
    """`proc`'s output not yet returned by `line`, up to its end; it has exited by then."""
    seen: list[str] = []
    try:
        while (text := _lines(proc).get(timeout=timeout)) != "":
            seen.append(text)
    except queue.Empty:
        raise AssertionError(
            f"no end of output after {timeout:.0f}s: {''.join(seen)[-3000:]}"
        ) from None
    proc.wait(timeout=timeout)
    return "".join(seen)
