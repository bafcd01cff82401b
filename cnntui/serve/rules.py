"""What `cnntui serve` checks and agrees on, without a web server: the loopback names, the
login token's comparison and URL, a tab's clamped screen size, and the server's settings.
Both the command (cnntui.serve.command) and the server (cnntui.serve.app) import it.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_TABS = 4  # each tab's cnntui takes about half a gigabyte of memory
MAX_COLUMNS, MAX_ROWS = 500, 200  # a tab's screen size is clamped to what a screen can be

LOOPBACK_NAMES = ("localhost", "localhost.")


def loopback_name(host: str) -> bool:
    """Whether `host` (a request's Host) names this machine's loopback interface."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


TAB_STOP_SECONDS = 40.0  # a tab's cnntui quits within 30 s (its thread runs save); then killed


def screen_size(width: object, height: object) -> tuple[int, int] | None:
    """A tab's terminal size in cells from what the browser sent, clamped to 1..MAX_COLUMNS
    by 1..MAX_ROWS (a huge size would grow the tab's cnntui to gigabytes); None when either
    is not a number."""
    try:
        columns, rows = int(width), int(height)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None
    return min(max(columns, 1), MAX_COLUMNS), min(max(rows, 1), MAX_ROWS)


def token_matches(given: str | None, token: str) -> bool:
    """Whether `given` is the token, compared in constant time."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def login_url(host: str, port: int, token: str) -> str:
    """The address serve prints: the page, with the token that logs the browser in."""
    return f"http://{url_host(host)}:{port}/?" + urllib.parse.urlencode({"token": token})


@dataclass(frozen=True)
class Settings:
    """What the server is told: the tabs' command, where it listens, the login token, how
    many tabs it runs at once, and `check()`, run before each tab starts."""

    command: str
    host: str
    port: int
    loopback: bool  # whether it listens on this machine only
    runs_dir: str
    check: Callable[[], Any]  # raises ConfigError or UsageError when the experiments are bad
    token: str
    max_tabs: int = DEFAULT_MAX_TABS


def url_host(host: str) -> str:
    """`host` as the browser's address bar takes it (a wildcard: this machine's name)."""
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host
