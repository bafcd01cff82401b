"""`cnntui serve`: the terminal UI in a browser, served by textual-serve.

Each browser tab that connects starts its own `cnntui` process (with the TUI options given
to `serve`: --config, --runs-dir, --set, ...) on the same run store. Runs started from a tab
train in worker processes of their own, so they go on when the tab closes, and every tab
follows the whole store, so a run started in one is seen live in the others.

This module imports only the standard library and the CLI at start-up; textual-serve (and
aiohttp) load when the server starts.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import ipaddress
import os
import re
import secrets
import shlex
import socket
import sys
from typing import Any

from .. import options
from ..core.config import ConfigError
from .rules import (
    DEFAULT_MAX_TABS,
    Settings,
)

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
# Options of `cnntui` that choose a headless command rather than configure the TUI.
HEADLESS = ("run", "list", "export", "format", "resume", "detach", "status", "cancel")
TOKEN_ENV = "CNNTUI_SERVE_TOKEN"
TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~-]+")  # what a URL and a cookie carry as is
OWN_OPTIONS = ("--host", "--port", "--max-tabs", "--token")  # not given to the tabs' cnntui


def build_parser() -> argparse.ArgumentParser:
    """`cnntui`'s own options that configure the TUI, plus --host and --port."""
    p = options.build_parser(hidden=HEADLESS)
    p.prog = "cnntui serve"
    p.description = (
        "Serve the terminal UI to a web browser: each tab opens its own cnntui on the same\n"
        "run store, with the options below. Runs started from a tab go on when it closes."
    )
    p.epilog = (
        "examples:\n"
        "  cnntui serve                        prints http://127.0.0.1:8000/?token=...\n"
        "  ssh -L 8000:127.0.0.1:8000 SERVER   then open that address here\n"
        "  cnntui serve --port 8001 --config study.toml --set epochs=5\n"
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}: this machine only)",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument(
        "--max-tabs",
        type=int,
        default=DEFAULT_MAX_TABS,
        metavar="N",
        help=f"browser tabs open at once, each its own cnntui (default {DEFAULT_MAX_TABS})",
    )
    p.add_argument(
        "--token",
        help=f"the login token in the URL serve prints (default: ${TOKEN_ENV}, else a fresh "
        "random one at each start); other users can read a command line, not the variable",
    )
    return p


def tab_arguments(argv: list[str]) -> list[str]:
    """`argv` without serve's own options (--host, --port, --max-tabs, --token): what each
    tab's `cnntui` is given."""
    own = argparse.ArgumentParser(add_help=False)
    for option in OWN_OPTIONS:
        own.add_argument(option)
    _, rest = own.parse_known_args(argv)
    return rest


def tab_command(argv: list[str]) -> str:
    """The shell command textual-serve runs for each browser tab, every word quoted."""
    return shlex.join([sys.executable, "-m", "cnntui", *tab_arguments(argv)])


def addresses(host: str, port: int) -> list[tuple[Any, ...]]:
    """The socket addresses `host` stands for, as the server will bind them."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise options.UsageError(f"--host {host!r}: {reason}") from None


def is_loopback(infos: list[tuple[Any, ...]]) -> bool:
    """True when every address is this machine's own (127.0.0.1, ::1)."""
    try:
        return all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)
    except ValueError:
        return False


def check_port(host: str, port: int, infos: list[tuple[Any, ...]]) -> None:
    """Bind each address as the server will (address reuse on, IPv6 sockets IPv6 only) and
    let go at once: a port already taken is a one-line error here, not a traceback later."""
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as s:
            if hasattr(socket, "SO_REUSEADDR") and sys.platform != "win32":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPV6_V6ONLY"):
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(address)
            except OSError as e:
                raise options.UsageError(bind_error(host, port, e)) from None


def bind_error(host: str, port: int, e: OSError) -> str:
    """Why the server cannot listen on `host`:`port`, in one line that says what to do."""
    if e.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use (another cnntui serve?); choose one with --port"
    if e.errno == errno.EACCES:
        return f"port {port}: permission denied (ports below 1024 need root); use --port"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"--host {host!r}: not an address of this machine"
    return f"cannot listen on {host} port {port}: {e.strerror or e}"


def choose_token(given: str | None) -> str:
    """The login token: --token, else $CNNTUI_SERVE_TOKEN, else a fresh random one; a
    UsageError for one that is empty or has characters a URL would have to escape."""
    where, token = "--token", given
    if token is None:
        where, token = TOKEN_ENV, os.environ.get(TOKEN_ENV)
    if token is None:
        return secrets.token_urlsafe(32)
    if not TOKEN_CHARACTERS.fullmatch(token):
        raise options.UsageError(
            f"{where} {token!r}: a token is one or more letters, digits and . _ ~ - only"
        )
    return token


def make_server(settings: Settings) -> Any:
    """A textual-serve Server that runs `settings.command` for each browser tab, with
    cnntui's login, guards, bounded tabs and orderly shutdown (cnntui.serve.app)."""
    from .app import CnnTuiServer  # textual-serve and aiohttp load only here

    return CnnTuiServer(settings)


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A UsageError for a headless option given to serve, or a port out of range."""
    for dest in HEADLESS:
        if getattr(args, dest) != parser.get_default(dest):
            option = "--" + dest.replace("_", "-")
            raise options.UsageError(
                f"serve: {option} is a headless option; serve takes the TUI's "
                "options (cnntui serve --help)"
            )
    if not 1 <= args.port <= 65535:
        raise options.UsageError(f"--port {args.port}: must be between 1 and 65535")
    if args.max_tabs < 1:
        raise options.UsageError(f"--max-tabs {args.max_tabs}: must be at least 1")


def warn_open(host: str, port: int) -> None:
    """Warn, on stderr, that a server not on loopback lets anyone who reaches it run things."""
    print(
        f"cnntui: warning: serving on {host}: anyone who can reach port {port} "
        f"can start and cancel runs (safer: the default --host 127.0.0.1 and "
        f"`ssh -L {port}:127.0.0.1:{port} SERVER` on your machine)",
        file=sys.stderr,
    )


def main(argv: list[str]) -> int:
    """`cnntui serve ARGS`: check the options and the experiments, then serve until Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_options(parser, args)
        token = choose_token(args.token)
        options.load_experiments(args)  # a bad file or --set: one line now, not in every tab
        infos = addresses(args.host, args.port)
        check_port(args.host, args.port, infos)
        loopback = is_loopback(infos)
        try:
            settings = Settings(
                command=tab_command(argv),
                host=args.host,
                port=args.port,
                loopback=loopback,
                runs_dir=str(args.runs_dir),
                check=functools.partial(options.load_experiments, args),
                token=token,
                max_tabs=args.max_tabs,
            )
            server = make_server(settings)
        except ImportError as e:
            raise options.UsageError(
                f"serve needs textual-serve ({e}): pip install textual-serve"
            ) from None
    except (ConfigError, options.UsageError) as e:
        print(f"cnntui: {e}", file=sys.stderr)
        return options.EXIT_USAGE
    if not loopback:
        warn_open(args.host, args.port)
    try:
        server.serve()
    except OSError as e:  # the port was taken between the check and now
        print(f"cnntui: {bind_error(args.host, args.port, e)}", file=sys.stderr)
        return options.EXIT_USAGE
    except KeyboardInterrupt:
        pass
    with contextlib.suppress(OSError):
        sys.stdout.flush()
    print("cnntui serve: stopped", file=sys.stderr)
    return options.EXIT_OK
