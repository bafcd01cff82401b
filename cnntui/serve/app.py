"""The textual-serve server behind `cnntui serve`: one cnntui process per browser tab.

Imported by `serve.make_server` only when the server starts, so that `import cnntui.serve.command`
(and `cnntui --help`) stay free of textual-serve and aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import WSMsgType, web
from textual_serve.app_service import AppService
from textual_serve.server import Server

from .. import options
from ..core.config import ConfigError
from .rules import (
    TAB_STOP_SECONDS,
    Settings,
    login_url,
    loopback_name,
    screen_size,
    token_matches,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger("cnntui.serve")


class Tab(AppService):
    """One tab's cnntui process, in a session of its own so that Ctrl-C in the server's
    terminal reaches only the server; stopping it waits until the process has ended."""

    async def _open_app_process(self, width: int = 80, height: int = 24) -> Any:
        pipe = asyncio.subprocess.PIPE
        self._process = await asyncio.create_subprocess_shell(
            self.command,
            stdin=pipe,
            stdout=pipe,
            stderr=pipe,
            env=self._build_environment(width=width, height=height),
            start_new_session=True,
        )
        self._stdin = self._process.stdin
        return self._process

    async def stop(self) -> None:
        """Ask the app to quit, then wait for its process (killed after TAB_STOP_SECONDS)."""
        await super().stop()  # asks the app to quit; returns when its output ends
        process = self._process
        if process is None or process.returncode is not None:
            return
        try:
            await asyncio.wait_for(process.wait(), TAB_STOP_SECONDS)
        except TimeoutError:  # its session: the shell and the cnntui it started
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


class OneLine(logging.Formatter):
    """`cnntui serve: message`, with an exception's type and text on the same line and never
    a traceback (aiohttp logs a malformed request, such as one without a Host, with one)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line."""
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            message += f": {type(e).__name__}: " + " ".join(str(e).split())
        return "cnntui serve: " + " ".join(message.split())


class CnnTuiServer(Server):
    """textual-serve's Server with cnntui's start-up line, guards, login, bounded tabs and
    orderly shutdown: on Ctrl-C it closes every tab and waits for its process to end."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.command, host=settings.host, port=settings.port, title="cnntui")
        self.settings = settings
        self.cookie = f"cnntui-serve-{settings.port}"  # cookies are per host, not per port
        self.tabs: dict[Any, asyncio.Event] = {}  # open WebSocket -> set once it ended
        self.running: set[Any] = set()  # the WebSockets whose tab runs (or starts) a cnntui
        self.stopping = False

    def request_exit(self) -> None:
        """Ctrl-C: stop; another Ctrl-C while the tabs quit must not cut that short."""
        if self.stopping:
            return
        self.stopping = True
        if self.tabs:
            print(f"cnntui serve: stopping: closing {len(self.tabs)} open tab(s)", flush=True)
        super().request_exit()

    def initialize_logging(self) -> None:
        """Warnings only, each one line prefixed `cnntui serve:`; no request log."""
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLine())
        logging.basicConfig(level=logging.WARNING, handlers=[handler])

    async def _make_app(self) -> web.Application:
        """textual-serve's routes behind `guard`, with a /static/ that lists no folder."""

        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self.guard(request, handler)

        app = web.Application(middlewares=[guard])
        loader = jinja2.FileSystemLoader(Path(self.templates_path))
        aiohttp_jinja2.setup(app, loader=loader)
        app.add_routes(
            [
                web.get("/", self.handle_index, name="index"),
                web.get("/ws", self.handle_websocket, name="websocket"),
                web.get("/download/{key}", self.handle_download, name="download"),
                web.static("/static", Path(self.statics_path), show_index=False, name="static"),
            ]
        )
        app.on_startup.append(self.on_startup)
        app.on_shutdown.append(self.on_shutdown)
        return app

    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request: a Host (400 without), a local one and a WebSocket from this
        server's own page (403 otherwise), and the login token, in the URL or the cookie the
        page's first visit sets (403 without), since every user of this machine can reach
        127.0.0.1. The page's address with a right token sets the cookie and sends the
        browser to the address without it."""
        try:
            host = request.url.host  # None for an empty Host; ValueError for a bad port
        except ValueError:
            host = None
        if not host:
            raise web.HTTPBadRequest(text="cnntui serve: a request needs a valid Host header\n")
        websocket = request.headers.get("Upgrade", "").lower() == "websocket"
        if why := self.refused(request, websocket):
            raise web.HTTPForbidden(text=f"cnntui serve: {why}\n")
        token = self.settings.token
        if token_matches(request.query.get("token"), token):
            if request.path != "/":
                return await handler(request)
            query = {k: v for k, v in request.query.items() if k != "token"}
            address = str(request.rel_url.with_query(query))
            response = web.Response(status=303, headers={"Location": address})
            response.set_cookie(self.cookie, token, httponly=True, samesite="Strict")
            return response
        if token_matches(request.cookies.get(self.cookie), token):
            return await handler(request)
        raise web.HTTPForbidden(
            text="cnntui serve: this server needs its login: open the address that "
            "`cnntui serve` printed when it started (it ends in ?token=...)\n"
        )

    async def on_startup(self, app: Any) -> None:
        """Say where to point the browser, with the login token."""
        settings = self.settings
        url = login_url(self.host, self.port, settings.token)
        print(
            f"cnntui serve: open {url} in a browser; each tab runs its own cnntui on "
            f"{settings.runs_dir}/ (at most {settings.max_tabs} at once). Ctrl-C stops the "
            "server (runs go on).",
            flush=True,
        )

    async def on_shutdown(self, app: Any) -> None:
        """Close every tab and wait until each one's process has ended."""
        tabs = list(self.tabs.items())
        await asyncio.gather(*(ws.close() for ws, _ in tabs), return_exceptions=True)
        ended = asyncio.gather(*(ended.wait() for _, ended in tabs))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended, TAB_STOP_SECONDS + 5)

    def refused(self, request: Any, websocket: bool) -> str | None:
        """Why `request` is refused, or None: a server on this machine only answers to a local
        Host (DNS rebinding: a site whose name was pointed at 127.0.0.1), and a WebSocket's
        Origin must be the page's own, scheme and all (another site's page)."""
        if self.settings.loopback and not loopback_name(request.url.host or ""):
            return "this server answers only to localhost and 127.0.0.1"
        if websocket:
            origin = request.headers.get("Origin", "")
            if origin.lower() != f"{request.scheme}://{request.host}".lower():
                return "a page from another site may not drive this server"
        return None

    def full(self) -> str | None:
        """What the page says when every tab the server may run is taken, or None."""
        most = self.settings.max_tabs
        if len(self.running) < most:
            return None
        return (
            f"cnntui serve: all {most} tabs this server runs at once are open "
            f"(--max-tabs {most}); close one, then reload this page."
        )

    async def handle_index(self, request: Any) -> Any:
        """The page, its links built from the address the browser used (an SSH tunnel's
        local port works); a page that says so when every tab is taken."""
        if why := self.full():
            raise web.HTTPServiceUnavailable(text=why + "\n")
        # The page's script and WebSocket links are built from public_url, and no await
        # comes between this line and the template's use of it.
        self.public_url = f"{request.scheme}://{request.host}"
        return await super().handle_index(request)

    async def handle_websocket(self, request: Any) -> Any:
        """One browser tab: start its cnntui, pass keys and resizes in and the screen
        out, and end the process when the tab goes (or the server stops). With every tab
        taken, or the experiments file edited into an error since the server started, the
        tab's screen says so in one line instead."""
        websocket = web.WebSocketResponse(heartbeat=15)
        full = self.full()
        if full is None:
            self.running.add(websocket)  # before any await: tabs opened at once all count
        ended = self.tabs[websocket] = asyncio.Event()
        try:
            await websocket.prepare(request)
            if full is not None:
                await self.show(websocket, full)
                return websocket
            try:
                self.settings.check()
            except (ConfigError, options.UsageError) as e:
                await self.show(websocket, f"cnntui: {e}\r\n\r\nFix it, then reload this page.")
                return websocket
            await self.run_tab(request, websocket)
        finally:
            self.running.discard(websocket)
            del self.tabs[websocket]
            ended.set()
        return websocket

    async def show(self, websocket: Any, text: str) -> None:
        """`text` on the tab's screen, kept there until the tab goes."""
        await websocket.send_bytes(f"\x1b[2J\x1b[H{text}\r\n".encode())
        async for _message in websocket:
            pass

    async def run_tab(self, request: Any, websocket: Any) -> None:
        """Run the tab's cnntui for as long as the tab is open, then stop it."""

        async def close() -> None:  # its result (whether it closed now) is of no use here
            await websocket.close()

        tab = Tab(
            self.command,
            write_bytes=websocket.send_bytes,
            write_str=websocket.send_str,
            close=close,
            download_manager=self.download_manager,
        )
        try:
            size = screen_size(request.query.get("width"), request.query.get("height"))
            await tab.start(*(size or (80, 24)))
            await self.relay(websocket, tab)
        except Exception as e:
            log.warning("a tab ended with an error: %s", e)
        finally:
            await asyncio.shield(tab.stop())

    async def relay(self, websocket: Any, tab: Tab) -> None:
        """Pass the browser's keys, resizes (clamped), pings and focus changes to the tab;
        a message the page would not send is ignored."""
        async for message in websocket:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                kind, *data = message.json()
            except (ValueError, TypeError):
                continue
            argument = data[0] if data else None
            if kind == "stdin" and isinstance(argument, str):
                await tab.send_bytes(argument.encode("utf-8"))
            elif kind == "resize" and isinstance(argument, dict):
                if size := screen_size(argument.get("width"), argument.get("height")):
                    await tab.set_terminal_size(*size)
            elif kind == "ping" and isinstance(argument, str):
                await websocket.send_json(["pong", argument])
            elif kind == "blur":
                await tab.blur()
            elif kind == "focus":
                await tab.focus()
