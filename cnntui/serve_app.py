"""The textual-serve server behind `cnntui serve`: one cnntui process per browser tab.

Imported by `serve.make_server` only when the server starts, so that `import cnntui.serve`
(and `cnntui --help`) stay free of textual-serve and aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

from . import cli
from .config import ConfigError
from .serve import TAB_STOP_SECONDS, loopback_name, url_host

log = logging.getLogger("cnntui.serve")


class Tab(AppService):
    """One tab's cnntui process; stopping it waits until the process has ended."""

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


class CnnTuiServer(Server):
    """textual-serve's Server with cnntui's start-up line, guards and orderly shutdown."""

    def __init__(
        self,
        command: str,
        host: str,
        port: int,
        loopback: bool,
        runs_dir: str,
        check: Callable[[], Any],
    ) -> None:
        super().__init__(command, host=host, port=port, title="cnntui")
        self.loopback = loopback  # whether the server listens on this machine only
        self.runs_dir = runs_dir
        self.check = check  # raises ConfigError or UsageError when the experiments are bad
        self.tabs: dict[Any, asyncio.Event] = {}  # open WebSocket -> set once it ended
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
        """Warnings only, each prefixed `cnntui serve:`; no request log."""
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("cnntui serve: %(message)s"))
        logging.basicConfig(level=logging.WARNING, handlers=[handler])

    async def on_startup(self, app: Any) -> None:
        """Say where to point the browser."""
        print(
            f"cnntui serve: open http://{url_host(self.host)}:{self.port} in a browser; each "
            f"tab runs its own cnntui on {self.runs_dir}/. Ctrl-C stops the server (runs go on).",
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
        """Why `request` is refused (DNS rebinding, another site's page), or None."""
        if self.loopback and not loopback_name(request.url.host or ""):
            return "this server answers only to localhost and 127.0.0.1"
        if websocket:
            origin = request.headers.get("Origin", "")
            if origin.split("://", 1)[-1] != request.host:
                return "a page from another site may not drive this server"
        return None

    async def handle_index(self, request: Any) -> Any:
        """The page, its links built from the address the browser used."""
        if why := self.refused(request, websocket=False):
            raise web.HTTPForbidden(text=why + "\n")
        # The page's script and WebSocket links are built from public_url, and no await
        # comes between this line and the template's use of it.
        self.public_url = f"{request.scheme}://{request.host}"
        return await super().handle_index(request)

    async def handle_websocket(self, request: Any) -> Any:
        """One browser tab: start its cnntui, pass keys and resizes in and the screen
        out, and end the process when the tab goes (or the server stops)."""
        if why := self.refused(request, websocket=True):
            raise web.HTTPForbidden(text=why + "\n")
        websocket = web.WebSocketResponse(heartbeat=15)
        await websocket.prepare(request)
        ended = self.tabs[websocket] = asyncio.Event()
        try:
            self.check()
        except (ConfigError, cli.UsageError) as e:
            await self.show_error(websocket, ended, e)
            return websocket
        await self.run_tab(request, websocket, ended)
        return websocket

    async def show_error(self, websocket: Any, ended: asyncio.Event, e: Exception) -> None:
        """Say what is wrong with the experiments on the tab's screen until the tab goes."""
        text = f"\x1b[2J\x1b[Hcnntui: {e}\r\n\r\nFix it, then reload this page.\r\n"
        try:
            await websocket.send_bytes(text.encode("utf-8"))
            async for _message in websocket:  # keep it on screen until the tab goes
                pass
        finally:
            del self.tabs[websocket]
            ended.set()

    async def run_tab(self, request: Any, websocket: Any, ended: asyncio.Event) -> None:
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
            width = to_int(request.query.get("width", "80"), 80)
            height = to_int(request.query.get("height", "24"), 24)
            await tab.start(width, height)
            await self.relay(websocket, tab)
        except Exception as e:
            log.warning("a tab ended with an error: %s", e)
        finally:
            await asyncio.shield(tab.stop())
            del self.tabs[websocket]
            ended.set()

    async def relay(self, websocket: Any, tab: Tab) -> None:
        """Pass the browser's keys, resizes, pings and focus changes to the tab."""
        async for message in websocket:
            if message.type != WSMsgType.TEXT:
                continue
            kind, *data = message.json()
            if kind == "stdin":
                await tab.send_bytes(data[0].encode("utf-8"))
            elif kind == "resize":
                await tab.set_terminal_size(data[0]["width"], data[0]["height"])
            elif kind == "ping":
                await websocket.send_json(["pong", data[0]])
            elif kind == "blur":
                await tab.blur()
            elif kind == "focus":
                await tab.focus()
