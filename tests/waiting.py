"""Waiting in tests: poll a condition until a deadline, never sleep a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll(cond: Callable[[], object], timeout: float = 60.0, what: str = "", step: float = 0.05):
    """Return `cond()`'s first truthy value; fail naming `what` after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or cond}")
        time.sleep(step)
