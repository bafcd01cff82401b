"""`cnntui serve`: the TUI in a browser. The server as a user starts and stops it, its one-line
errors, and the page in a real browser (Debian's chromium, headless, driven by Playwright):
the experiments table with its Chinese titles, keys reaching the app, and a run started in one
tab going on after the tab closes and showing live in another. Screenshots are saved under
tests/artifacts/serve/ (ignored by git). Every wait polls a condition with a deadline."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnntui.runs import store as st
from cnntui.runs.store import RunStore
from cnntui.serve import command as serve
from tests.waiting import poll

DEADLINE = 120.0  # a tab is a fresh Python process importing Textual: slow on a busy CI box
ARTIFACTS = Path(__file__).parents[1] / "artifacts" / "serve"
STUDY = """\
[defaults]
dataset = "synthetic"
train_size = 64
test_size = 32
batch_size = 32
epochs = 1000
lr = 0.01
device = "cpu"

[[experiment]]
name = "baseline"
title = "基准配置"
group = "g"

[[experiment]]
name = "high_lr"
title = "高学习率"
group = "g"
lr = 0.05
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tab_pids(config: Path) -> list[int]:
    """The processes of open tabs: a `cnntui` (not `cnntui serve`) given this --config."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if b"cnntui" in args and str(config).encode() in args and b"serve" not in args:
                pids.append(int(proc.name))
    return pids


class Served:
    """A `cnntui serve` subprocess in `folder`, its output in files (never a full pipe).
    `url` is the address it printed, with its login token (once `logged_in()`)."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.token = ""
        self.out = (folder / "serve.out").open("w+", encoding="utf-8")
        self.err = (folder / "serve.err").open("w+", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cnntui", "serve", "--port", str(self.port), *args],
            cwd=folder,
            stdout=self.out,
            stderr=self.err,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
            start_new_session=True,  # a process group of its own, as a terminal's job has
        )

    def logged_in(self) -> bool:
        """Whether the server has printed its address with the login token (kept in url)."""
        assert self.proc.poll() is None, f"the server ended: {self.stderr()}"
        found = re.search(r"open (http://\S+\?token=([A-Za-z0-9._~-]+)) ", self.stdout())
        if found:
            self.url, self.token = found.groups()
        return bool(found)

    def get(self, url: str | None = None, host: str | None = None) -> tuple[int, str]:
        """GET `url` (the printed address) as a browser would: redirects followed, cookies
        kept for that one visit."""
        request = urllib.request.Request(url or self.url, headers={"Host": host} if host else {})
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        try:
            with opener.open(request, timeout=10) as r:
                return r.status, r.read().decode("utf-8")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8")

    def ws_url(self, query: str = "") -> str:
        """The WebSocket of a tab, logged in with the token."""
        return f"ws://127.0.0.1:{self.port}/ws?token={self.token}{query}"

    def answering(self) -> bool:
        try:
            return self.logged_in() and self.get()[0] == 200
        except OSError:
            return False

    def stderr(self) -> str:
        self.err.flush()
        return (self.folder / "serve.err").read_text(encoding="utf-8")

    def stdout(self) -> str:
        self.out.flush()
        return (self.folder / "serve.out").read_text(encoding="utf-8")

    def stop(self) -> int:
        """Ctrl-C: as a terminal does, SIGINT to every process of the server's group."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=DEADLINE)


@pytest.fixture
def study(tmp_path: Path) -> Iterator[Path]:
    """A folder with a two-experiment study (Chinese titles); afterwards nothing it started
    (server, tabs, scheduler, workers) is left running."""
    (tmp_path / "experiments.toml").write_text(STUDY, encoding="utf-8")
    yield tmp_path
    for record in RunStore(tmp_path / "runs").runs():
        pid = record.summary.pid
        if record.status in ("running", "starting") and isinstance(pid, int):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError, ValueError, IndexError):
        lock = tmp_path / "runs" / st.SCHEDULER_LOCK
        os.kill(int(lock.read_text().split()[0]), signal.SIGKILL)


@pytest.fixture
def served(study: Path) -> Iterator[Served]:
    server = Served(study, "--config", str(study / "experiments.toml"))
    try:
        poll(server.answering, DEADLINE, "the server to answer HTTP")
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


# --- the server ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment", ["once the tab has drawn", "while the tab starts", "twice while the tab starts"]
)
@pytest.mark.process
async def test_the_server_answers_runs_a_tab_and_stops_cleanly_on_ctrl_c(served, moment):
    import asyncio

    import aiohttp

    config = served.folder / "experiments.toml"
    status, page = served.get()
    assert status == 200 and f"ws://127.0.0.1:{served.port}/ws" in page
    assert "cnntui serve: open http://127.0.0.1:" in served.stdout()
    # A tab: its own cnntui, with serve's --config, draws the study's Chinese titles.
    ws_url = served.ws_url("&width=100&height=30")
    async with aiohttp.ClientSession() as session:
        origin = f"http://127.0.0.1:{served.port}"
        async with session.ws_connect(ws_url, origin=origin) as ws:
            screen = bytearray()

            async def title_drawn() -> None:
                while "基准配置".encode() not in screen:
                    message = await ws.receive()
                    assert message.type == aiohttp.WSMsgType.BINARY, message
                    screen.extend(message.data)

            if moment == "once the tab has drawn":
                try:
                    await asyncio.wait_for(title_drawn(), DEADLINE)
                except TimeoutError:
                    raise AssertionError(
                        f"no title on the tab's screen: {screen[-500:]!r}"
                    ) from None
            await asyncio.to_thread(poll, lambda: tab_pids(config), DEADLINE, "a tab process")
            # Ctrl-C: the server closes the tab, waits for its process, and ends quietly.
            if moment.startswith("twice"):
                os.killpg(served.proc.pid, signal.SIGINT)
                closing = "cnntui serve: stopping: closing 1 open tab(s)"
                await asyncio.to_thread(poll, lambda: closing in served.stdout(), DEADLINE)
            assert await asyncio.to_thread(served.stop) == 0
    assert tab_pids(config) == []
    err = served.stderr()
    assert "Traceback" not in err and "Exception" not in err, err
    assert err.strip() == "cnntui serve: stopped"


@pytest.mark.process
async def test_pages_of_other_sites_cannot_drive_a_local_server(served: Served) -> None:
    import aiohttp

    # DNS rebinding: a site's name pointed at 127.0.0.1 is not a local name.
    assert served.get(host=f"attacker.example:{served.port}")[0] == 403
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(served.ws_url(), origin="http://attacker.example")
    assert refused.value.status == 403
    assert tab_pids(served.folder / "experiments.toml") == []


@pytest.mark.process
async def test_a_file_broken_since_the_server_started_is_said_on_the_page(served: Served):
    import aiohttp

    config = served.folder / "experiments.toml"
    with config.open("a", encoding="utf-8") as f:
        f.write('lr = "fast"\n')  # the last experiment's lr, a second time
    async with aiohttp.ClientSession() as session:
        origin = f"http://127.0.0.1:{served.port}"
        async with session.ws_connect(served.ws_url(), origin=origin) as ws:
            message = await ws.receive(timeout=DEADLINE)
    page = message.data.decode("utf-8")
    assert f"cnntui: {config}:" in page and "TOML syntax error" in page
    assert "Fix it, then reload this page." in page
    assert tab_pids(config) == []


@pytest.mark.process
def test_only_a_visitor_with_the_printed_token_gets_in(served: Served) -> None:
    """Any user of the machine can reach 127.0.0.1: the page, its files and its WebSocket
    need the token serve printed (or the cookie its first visit sets)."""
    assert len(served.token) >= 32
    for url in (
        served.base + "/",
        served.base + "/?token=x" + served.token,
        served.base + "/static/js/textual.js",
        served.base + "/?token=",
    ):
        status, text = served.get(url)
        assert status == 403 and "needs its login" in text and "?token=" in text, (url, text)
    # The printed address: the cookie, then the page at an address without the token.
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(served.url, timeout=10) as r:
        assert r.status == 200 and r.url == served.base + "/"
        assert "token" not in r.url and "data-session-websocket-url" in r.read().decode()
    with opener.open(served.base + "/static/js/textual.js", timeout=10) as r:
        assert r.status == 200  # the cookie alone
    assert served.get(served.base + "/static/js/textual.js?token=" + served.token)[0] == 200
    assert "Traceback" not in served.stderr()


@pytest.mark.parametrize(
    ("token", "scheme"),
    [(False, "http://"), (True, "https://"), (True, "")],
    ids=["no token", "another scheme", "no scheme"],
)
@pytest.mark.process
async def test_a_websocket_without_the_token_or_from_another_scheme_is_refused(
    served, token, scheme
):
    import aiohttp

    url = served.ws_url() if token else f"ws://127.0.0.1:{served.port}/ws"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url, origin=f"{scheme}127.0.0.1:{served.port}")
    assert refused.value.status == 403
    assert tab_pids(served.folder / "experiments.toml") == []


@pytest.mark.process
def test_static_lists_no_folder(served: Served) -> None:
    for folder in ("/static/", "/static/js/", "/static/js", "/static/fonts/"):
        status, text = served.get(f"{served.base}{folder}?token={served.token}")
        assert status in (403, 404) and "Index of" not in text and "textual.js" not in text


@pytest.mark.parametrize(
    "host", [b"Host: \r\n", b"", b"Host: 127.0.0.1:99999\r\n"], ids=["empty", "none", "bad"]
)
@pytest.mark.process
def test_a_request_without_a_valid_host_is_400_and_one_log_line(served, host) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as s:
        s.sendall(b"GET /?token=" + served.token.encode() + b" HTTP/1.1\r\n" + host)
        s.sendall(b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):  # the server closes the connection
            answer += chunk
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == b"400", answer
    err = served.stderr()
    assert "Traceback" not in err and all(
        line.startswith("cnntui serve: ") for line in err.splitlines()
    ), err


def test_the_token_comes_from_token_or_the_environment_else_a_fresh_one(
    study, monkeypatch, capsys
) -> None:
    made: list[serve.Settings] = []

    class NoServer:
        def serve(self) -> None:
            pass

    def make(settings: serve.Settings) -> NoServer:
        made.append(settings)
        return NoServer()

    monkeypatch.chdir(study)
    monkeypatch.setattr(serve, "make_server", make)
    monkeypatch.delenv(serve.TOKEN_ENV, raising=False)
    port = str(free_port())
    assert serve.main(["--port", port]) == 0 and serve.main(["--port", port]) == 0
    assert made[0].token != made[1].token and len(made[0].token) >= 32  # fresh at each start
    monkeypatch.setenv(serve.TOKEN_ENV, "from-the-environment")
    assert serve.main(["--port", port]) == 0 and made[-1].token == "from-the-environment"
    assert serve.main(["--port", port, "--token", "given.on_the~line-1"]) == 0
    assert made[-1].token == "given.on_the~line-1"
    assert "--token" not in made[-1].command and "--max-tabs" not in made[-1].command
    capsys.readouterr()
    for bad in (["--token", ""], ["--token", "a b"], ["--max-tabs", "0"]):
        assert serve.main(["--port", port, *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cnntui: {bad[0]} ") and err.count("\n") == 1, err
    monkeypatch.setenv(serve.TOKEN_ENV, "")
    assert serve.main(["--port", port]) == 2
    assert capsys.readouterr().err.startswith(f"cnntui: {serve.TOKEN_ENV} '': a token is")


def environment_of(pid: int) -> dict[str, str]:
    with contextlib.suppress(OSError):
        pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)
    return {}


@pytest.mark.process
async def test_tabs_are_bounded_and_a_full_server_says_so(study: Path) -> None:
    import asyncio

    import aiohttp

    config = study / "experiments.toml"
    server = Served(study, "--config", str(config), "--max-tabs", "1")
    try:
        await asyncio.to_thread(poll, server.answering, DEADLINE, "the server to answer")
        origin = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as session:
            # A tab asking for a screen of 100000x100000 cells gets 500x200.
            first = await session.ws_connect(
                server.ws_url("&width=100000&height=100000"), origin=origin
            )
            (pid,) = await asyncio.to_thread(poll, lambda: tab_pids(config), DEADLINE, "a tab")
            size = environment_of(pid)
            assert (size.get("COLUMNS"), size.get("ROWS")) == ("500", "200")
            status, page = server.get()
            assert status == 503, page
            assert "all 1 tabs this server runs at once are open (--max-tabs 1)" in page
            async with session.ws_connect(server.ws_url(), origin=origin) as second:
                message = await second.receive(timeout=DEADLINE)
                assert b"close one, then reload this page" in message.data
            assert tab_pids(config) == [pid]  # no second cnntui
            await first.close()
            await asyncio.to_thread(poll, lambda: not tab_pids(config), DEADLINE, "tab to end")
            await asyncio.to_thread(
                poll, lambda: server.get()[0] == 200, DEADLINE, "a free tab again"
            )
    finally:
        assert await asyncio.to_thread(server.stop) == 0
    assert tab_pids(config) == []


async def test_a_tab_gets_its_screen_size_clamped_and_odd_messages_ignored() -> None:
    from aiohttp import WSMsgType

    from cnntui.serve.app import CnnTuiServer

    class Message:
        type = WSMsgType.TEXT

        def __init__(self, text: str) -> None:
            self.text = text

        def json(self) -> object:
            import json

            return json.loads(self.text)

    class Browser:
        def __init__(self, *texts: str) -> None:
            self.messages = [Message(t) for t in texts]
            self.sent: list[object] = []

        def __aiter__(self):
            return self

        async def __anext__(self) -> Message:
            if not self.messages:
                raise StopAsyncIteration
            return self.messages.pop(0)

        async def send_json(self, data: object) -> None:
            self.sent.append(data)

    class TabProcess:
        def __init__(self) -> None:
            self.sizes: list[tuple[int, int]] = []
            self.keys = b""

        async def set_terminal_size(self, width: int, height: int) -> None:
            self.sizes.append((width, height))

        async def send_bytes(self, data: bytes) -> None:
            self.keys += data

    settings = serve.Settings("true", "127.0.0.1", 1, True, "runs", lambda: None, "t")
    browser = Browser(
        '["resize", {"width": 100000, "height": 100000}]',
        '["resize", {"width": 0, "height": -5}]',
        '["resize", {"width": "wide", "height": 30}]',
        '["resize", {"width": 1e400, "height": 30}]',
        '["resize", 7]',
        "not json",
        "42",
        '["stdin"]',
        '["stdin", "q"]',
        '["resize", {"width": 120, "height": 40}]',
        '["ping", "1"]',
    )
    tab = TabProcess()
    await CnnTuiServer(settings).relay(browser, tab)  # type: ignore[arg-type]
    assert tab.sizes == [(500, 200), (1, 1), (120, 40)]
    assert tab.keys == b"q" and browser.sent == [["pong", "1"]]


@pytest.mark.process
def test_a_port_in_use_is_one_line_and_exit_2(study: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "cnntui", "serve", "--port", str(port)],
            cwd=study,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"cnntui: port {port} on 127.0.0.1 is in use (another cnntui serve?); "
        "choose one with --port"
    ]
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--run", "all"], "serve: --run is a headless option"),
        (["--port", "70000"], "--port 70000: must be between 1 and 65535"),
        (["--host", "no-such-host.invalid"], "--host 'no-such-host.invalid': "),
        (["--set", "epochs=x"], "--set 'epochs=x': 'x' is not an integer"),
        (["--config", "missing.toml"], "missing.toml: no such file"),
    ],
)
def test_bad_serve_arguments_are_one_line_and_exit_2(study, monkeypatch, capsys, args, error):
    monkeypatch.chdir(study)
    assert serve.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnntui: " + error) and err.count("\n") == 1, err


def test_another_host_warns_that_anyone_can_start_and_cancel_runs(study, monkeypatch, capsys):
    class NoServer:
        def serve(self) -> None:
            pass

    monkeypatch.chdir(study)
    monkeypatch.setattr(serve, "make_server", lambda *args, **kwargs: NoServer())
    port = free_port()
    assert serve.main(["--host", "0.0.0.0", "--port", str(port)]) == 0
    warning = capsys.readouterr().err.splitlines()[0]
    assert warning.startswith("cnntui: warning: serving on 0.0.0.0: anyone who can reach port")
    assert "start and cancel runs" in warning and f"ssh -L {port}:127.0.0.1:{port}" in warning
    assert serve.main(["--host", "localhost", "--port", str(port)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_every_tui_option_reaches_each_tab_quoted_for_the_shell() -> None:
    argv = ["--config", "my study.toml", "--host=0.0.0.0", "--set", "title=a'b; rm -rf ~"]
    argv += ["--port", "8001", "--runs-dir", "$HOME/runs", "--jobs", "2", "--set=epochs=3"]
    words = shlex.split(serve.tab_command(argv))
    assert words[:3] == [sys.executable, "-m", "cnntui"]
    assert words[3:] == [
        "--config",
        "my study.toml",
        "--set",
        "title=a'b; rm -rf ~",
        "--runs-dir",
        "$HOME/runs",
        "--jobs",
        "2",
        "--set=epochs=3",
    ]


def test_cnntui_without_serve_is_unchanged(study: Path, monkeypatch, capsys) -> None:
    from cnntui.cli import main

    monkeypatch.chdir(study)
    assert main(["--list"]) == 0
    assert "基准配置" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--list", "serve"])  # `serve` is a word of its own, first


# --- in a real browser ---------------------------------------------------------------------

# The page draws the terminal on a canvas; the text it shows is read from xterm.js's buffer.
# textual-serve keeps its xterm.js Terminal in a `terminal` property: catch it as it is set.
CATCH_TERMINAL = """
window.cnntuiTerminals = [];
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true});
    if (value && value.buffer) window.cnntuiTerminals.push(value);
  },
});
"""
SCREEN_TEXT = """() => {
  const term = window.cnntuiTerminals && window.cnntuiTerminals[0];
  if (!term) return "";
  const buffer = term.buffer.active, lines = [];
  for (let y = 0; y < term.rows; y++) {
    const line = buffer.getLine(buffer.viewportY + y);
    lines.push(line ? line.translateToString(true) : "");
  }
  return lines.join("\\n");
}"""


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    return path


@pytest.fixture
def browser():
    chromium = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        # A system chromium, never a downloaded one; --no-sandbox as CI runs it as root.
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1100, "height": 700})
        context.add_init_script(CATCH_TERMINAL)
        try:
            yield context
        finally:
            browser.close()


def showing(page, *texts: str, timeout: float = DEADLINE) -> str:
    """The page's screen once it shows every one of `texts`."""

    def screen() -> str | None:
        text = page.evaluate(SCREEN_TEXT)
        return text if all(t in text for t in texts) else None

    return poll(screen, timeout, f"{texts} on the page", step=0.2)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


@pytest.mark.browser
@pytest.mark.process
def test_the_browser_shows_the_study_and_keys_reach_the_app(served: Served, browser) -> None:
    page = browser.new_page()
    page.goto(served.url)
    screen = showing(page, "基准配置", "高学习率", "baseline", "high_lr")
    assert "cnntui keys" not in screen
    screenshot(page, "table.png")
    page.locator("#terminal").click()
    page.keyboard.press("?")
    showing(page, "cnntui keys", "run the highlighted experiment")
    assert screenshot(page, "help.png").stat().st_size > 0
    page.keyboard.press("Escape")
    poll(lambda: "cnntui keys" not in page.evaluate(SCREEN_TEXT), DEADLINE, "help to close")


@pytest.mark.browser
@pytest.mark.process
def test_a_run_started_in_a_tab_goes_on_after_it_closes_and_shows_live_in_another(
    served: Served, browser
) -> None:
    config = served.folder / "experiments.toml"
    store = RunStore(served.folder / "runs")
    first = browser.new_page()
    first.goto(served.url)
    showing(first, "基准配置")
    first.locator("#terminal").click()
    first.keyboard.press("r")  # run the highlighted experiment: baseline
    poll(lambda: any(r.status == "running" for r in store.runs()), DEADLINE, "baseline to run")
    first.close()
    poll(lambda: not tab_pids(config), DEADLINE, "the closed tab's cnntui to end")
    (record,) = store.runs()
    assert record.status == "running"
    epochs = record.summary.epochs_done or 0

    def trained_on() -> bool:
        (now,) = store.runs()
        return now.status == "running" and (now.summary.epochs_done or 0) > epochs

    poll(trained_on, DEADLINE, "the run to train on with its tab closed")
    second = browser.new_page()
    second.goto(served.url)
    showing(second, "基准配置", "running elsewhere")  # another process trains it
    screenshot(second, "second-tab.png")
    # The second tab's keys reach the run the first one started: c cancels it.
    second.locator("#terminal").click()
    second.keyboard.press("c")
    poll(lambda: store.runs()[0].status == "cancelled", DEADLINE, "the run to be cancelled")
    showing(second, "cancelled")
