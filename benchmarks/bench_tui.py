"""How the TUI holds up: key latency and training throughput with runs active, start time with
a large run store, and the redraw cost of a very long run.

  1. throughput  N = 1, 2, 4 runs of the real engine (LeNet, synthetic CIFAR-shaped data) in
                 the app (curves on screen, redrawn at 4 Hz) against the same runs headless,
                 both ways of executing: threads of the process (headless: `executors.run_jobs`)
                 and worker processes (headless: queued in the store as `--detach` does; the
                 TUI's default). Images per second of wall time, setup included; modes
                 alternate, medians of the repeats.
  2. latency     with N runs active, `down`/`up` pressed every 0.1-0.3 s, moving between
                 experiments (each move redraws the curves); time from the key entering
                 the app until the screen update showing the new curves is handed to the
                 display; median and p95.
  3. quit        with 2 runs active: `q`, `y`, until the app has exited and both training
                 threads have stopped.
  4. start       the app opening on a store of 1,000 past runs, until the main screen is up
                 and until `v` shows the results table filled; then the time for that
                 table to show a changed row and a new row.
  5. redraw      one run of 1,000,000 batch losses: appending them in engine-sized chunks,
                 cutting to the widget's width, and a full plotext build of the batch chart,
                 against plotting 100,000 points undecimated.

    .venv/bin/python benchmarks/bench_tui.py            # 5-10 minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_tui.py --quick    # about 2 minutes
    .venv/bin/python benchmarks/bench_tui.py --smoke    # every section at its smallest

Targets (issue 3): p95 key latency < 100 ms with 2 runs active; app throughput >= 90% of
headless; open < 2 s with 1,000 runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from cnntui.core.config import Experiment
from cnntui.runs.executors import Job, run_jobs
from cnntui.runs.store import RunStore

SIZE = (100, 30)


def bench_toml(n: int, train_size: int, epochs: int) -> str:
    head = (
        '[defaults]\ndataset = "synthetic"\nmodel = "lenet"\nbatch_size = 32\n'
        f"train_size = {train_size}\ntest_size = 512\nepochs = {epochs}\nlr = 0.01\n"
        'device = "cpu"\n'
    )
    return head + "".join(f'\n[[experiment]]\nname = "bench-{i}"\n' for i in range(n))


def experiments(path: Path) -> list[Experiment]:
    from cnntui.core.config import load

    return load(path).experiments


def headless(cfg: Path, runs: Path, n: int, mode: str) -> float:
    """Images a second for the N runs through the CLI's runner."""
    exps = experiments(cfg)
    t0 = time.perf_counter()
    for _ in run_jobs([Job(e) for e in exps], RunStore(runs), threading.Event(), n, executor=mode):
        pass
    wall = time.perf_counter() - t0
    return sum(e.train_size * e.epochs for e in exps) / wall


def detached(cfg: Path, runs: Path, n: int) -> float:
    """Images a second for the N runs queued in the store and trained by worker processes
    (what `--detach` does, and the TUI since runs outlive it), polled until all have ended."""
    from cnntui.runs import lifecycle

    exps = experiments(cfg)
    store = RunStore(runs)
    t0 = time.perf_counter()
    ids = {r.run_id for r in lifecycle.submit(store, exps, n)}
    lifecycle.ensure_scheduler(store)
    while True:
        records = [r for r in store.runs() if r.run_id in ids]
        if records and all(r.status not in ("queued", "running") for r in records):
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    bad = [r.summary.reason for r in records if r.status != "finished"]
    assert not bad, bad
    return sum(e.train_size * e.epochs for e in exps) / wall


async def in_app(cfg: Path, runs: Path, n: int, executor: str) -> float:
    from cnntui.tui.app import make_app

    exps = experiments(cfg)
    app = make_app(cfg, {}, runs, runs.parent / "exports", n, device_label="cpu", executor=executor)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("space", "down", "space")  # two runs overlaid on the curves
        t0 = time.perf_counter()
        await pilot.press("a")
        while not (app.main.session.runs and all(s.ended for s in app.main.session.runs.values())):
            await asyncio.sleep(0.02)
        wall = time.perf_counter() - t0
        bad = [s.reason for s in app.main.session.runs.values() if s.status != "finished"]
        assert not bad, bad
    return sum(e.train_size * e.epochs for e in exps) / wall


async def latency(cfg: Path, runs: Path, n: int, presses: int) -> tuple[list[float], float]:
    """Key latencies (s) with n runs active, and seconds from the quit answer to the exit.

    A key goes in through the driver, as a terminal's would; it counts as answered when the
    screen update that shows the curves of the newly highlighted experiment is handed to the
    display. (Pilot.press can't time this: it waits for the process to go idle, which it
    never does while training.)
    """
    from textual import events

    from cnntui.tui.app import make_app

    app = make_app(cfg, {"epochs": 1000}, runs, runs.parent / "exports", n, device_label="cpu")
    out: list[float] = []
    async with app.run_test(size=SIZE) as pilot:
        chart = app.main.query_one("#chart-batch")
        shown: list[tuple[float, int]] = []  # (time, batch chart version) of each display
        redrawn: list[tuple[float, int]] = []  # (time, version to show) of each highlight
        display, redraw = app._display, app.main.redraw_curves

        def timed_display(screen, renderable):
            display(screen, renderable)
            shown.append((time.perf_counter(), chart.painted))

        def timed_redraw(*args, **kwargs):
            redraw(*args, **kwargs)
            redrawn.append((time.perf_counter(), chart._version))

        app._display = timed_display
        app.main.redraw_curves = timed_redraw
        if n:
            await pilot.press("a")
            while len([s for s in app.main.session.active() if s.done > 0]) < n:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        for i in range(presses):
            row = app.main.table.cursor_row
            t0 = time.perf_counter()
            app._driver.send_message(events.Key("down" if i % 2 == 0 else "up", None))
            while True:
                if time.perf_counter() - t0 > 10:
                    raise RuntimeError("no screen update within 10 s of a key")
                await asyncio.sleep(0.001)
                if app.main.table.cursor_row == row:
                    continue
                handled = next(((t, v) for t, v in redrawn if t >= t0), None)
                if handled is None:
                    continue
                done = next((t for t, v in shown if t >= handled[0] and v >= handled[1]), None)
                if done is not None:
                    break
            out.append(done - t0)
            await asyncio.sleep(0.1 + 0.1 * (i % 3))  # a person's typing, not a flood
        workers = app.main.run_workers()
        quit_s = float("nan")
        if n:
            await pilot.press("q")
            t0 = time.perf_counter()
            await pilot.press("c")  # cancel them (each saves), not keep them in the background
            while app.is_running or not all(w.is_finished for w in workers):
                await asyncio.sleep(0.01)
            quit_s = time.perf_counter() - t0
    return out, quit_s


def quit_process(tmp: Path) -> tuple[float, str]:
    """`cnntui` in a pseudo-terminal: r, wait until training, q, y; seconds until it exits."""
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    cfg = tmp / "proc.toml"
    cfg.write_text(bench_toml(1, 6144, 1000))
    runs = tmp / "proc-runs"
    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    cmd = [sys.executable, "-m", "cnntui", "--config", str(cfg), "--runs-dir", str(runs)]
    proc = subprocess.Popen(cmd, stdin=child_fd, stdout=child_fd, stderr=child_fd, env=env)
    os.close(child_fd)

    def drain() -> None:
        while True:
            try:
                if not os.read(main_fd, 65536):
                    return
            except OSError:
                return

    threading.Thread(target=drain, daemon=True).start()
    summary = runs / "bench-0"
    deadline = time.monotonic() + 120
    time.sleep(3)  # the app starts and draws
    os.write(main_fd, b"r")
    while time.monotonic() < deadline:
        files = list(summary.glob("*/summary.json"))
        if files and json.loads(files[0].read_text()).get("params"):
            break  # set up and training
        time.sleep(0.1)
    time.sleep(2)
    os.write(main_fd, b"q")
    time.sleep(0.5)
    t0 = time.perf_counter()
    os.write(main_fd, b"c")  # cancel the run (the worker process saves it), then quit
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return float("inf"), "killed after 30 s"
    gone = time.perf_counter() - t0
    status = json.loads(next(summary.glob("*/summary.json")).read_text())
    return gone, f"{status['status']}, {status.get('batches_done', 0)} batch losses kept"


def fake_store(root: Path, n: int) -> None:
    """n finished runs across 10 experiments, written the way the store lays them out."""
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"exp-{i % 10}"
        run = root / name / f"20260101-{i:06d}-abcdef"
        run.mkdir(parents=True)
        acc = float(rng.uniform(0.1, 0.6))
        summary = {
            "name": name,
            "title": f"实验 {i % 10}",
            "model": "lenet",
            "status": "finished",
            "params": 62006,
            "started": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}",
            "final_test_acc": acc,
            "best_test_acc": acc + 0.01,
            "epoch1_test_acc": acc / 2,
            "final_train_loss": float(rng.uniform(0.8, 2.0)),
            "gap": 0.02,
            "epochs_to_target": 3,
            "total_seconds": 50.0,
            "seconds_per_epoch": 10.0,
        }
        (run / "summary.json").write_text(json.dumps(summary, ensure_ascii=False))


async def start_time(cfg: Path, runs: Path) -> tuple[float, float, int, float, float]:
    """Seconds until the app is up, until `v` shows the filled results table, and for that
    table to show one run's changed row and a new run's row."""
    from cnntui.tui.app import make_app

    t0 = time.perf_counter()
    app = make_app(cfg, {}, runs, runs.parent / "exports", device_label="cpu")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        opened = time.perf_counter() - t0
        await pilot.press("v")
        await pilot.pause()
        shown = time.perf_counter() - t0
        rows = app.main.results.row_count
        # with the table on screen: an epoch's new numbers for one run, then a new run
        results = app.main.results
        key = next(iter(results.rows_by_key))
        t = time.perf_counter()
        results.put(key, dataclasses.replace(results.rows_by_key[key], final_test_acc=0.99))
        await pilot.pause()
        update = time.perf_counter() - t
        t = time.perf_counter()
        results.put("new-run", dataclasses.replace(results.rows_by_key[key], name="new-run"))
        await pilot.pause()
        added = time.perf_counter() - t
    return opened, shown, rows, update, added


def redraw(width: int, height: int, total: int) -> dict[str, float]:
    from textual_plotext.plot import Plot

    from cnntui.core.events import BatchLosses
    from cnntui.tui.state import Curve, RunState
    from cnntui.tui.widgets.curves import POINTS_PER_COLUMN, batch_draw

    exp = Experiment(name="long")
    state = RunState(1, exp)
    rng = np.random.default_rng(0)
    losses = 2 * np.exp(-np.arange(total) / (total / 5)) + rng.uniform(0, 0.5, total)
    t0 = time.perf_counter()
    for first in range(0, total, 500):  # ~500 batches a chunk: a fast GPU at 10 chunks/s
        state.feed(BatchLosses("long", 0, first, tuple(losses[first : first + 500].tolist())))
    append = time.perf_counter() - t0

    def build(curve) -> float:
        plt = Plot()
        t = time.perf_counter()
        batch_draw([curve], False)(plt, width)
        plt.plotsize(width, height)
        plt.build()
        return time.perf_counter() - t

    t0 = time.perf_counter()
    curve = state.curve(POINTS_PER_COLUMN * width)
    cut = time.perf_counter() - t0
    built = statistics.median(build(curve) for _ in range(5))
    full = Curve.of(state.history, "long", 10**7)  # no decimation
    n = min(100_000, total)
    big = Curve("long", full.batch_x[:n], full.batch_y[:n], full.ma_x[:n], full.ma_y[:n])
    undecimated = build(big)
    return {
        "append": append,
        "decimate": cut,
        "build": built,
        "points": len(curve.batch_y),
        "undecimated": undecimated,
        "undecimated points": n,
    }


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs, one repeat")
    ap.add_argument("--smoke", action="store_true", help="every section at its smallest")
    args = ap.parse_args()
    train_size = 256 if args.smoke else 2048 if args.quick else 6144
    epochs = 1 if args.quick or args.smoke else 3
    repeats = 1 if args.quick or args.smoke else 3
    presses = 4 if args.smoke else 20 if args.quick else 60
    jobs = (2,) if args.smoke else (1, 2, 4)  # 2: the quit in section 3 has 2 runs active
    past_runs = 50 if args.smoke else 1000
    losses = 10_000 if args.smoke else 1_000_000
    print(f"cnntui TUI benchmark · {os.cpu_count()} CPU(s) · python {sys.version.split()[0]}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # warm-up: torch and its lazily imported parts load once per process
        warm = tmp / "warm.toml"
        warm.write_text(bench_toml(1, 256, 1))
        headless(warm, tmp / "warm-runs", 1, "thread")

        print("\n1. throughput: images/s of wall time, setup included (median of repeats)")
        print(f"   each run: LeNet, batch 32, {train_size} synthetic images × {epochs} epochs, cpu")
        print(
            "   threads: runs in the process (headless: executors.run_jobs; app: executor=thread)"
        )
        print("   workers: runs in worker processes (headless: queued as --detach does; app:")
        print("            the TUI's default), process start and torch import included")
        print("   runs | threads: headless   app  app/hl | workers: headless   app  app/hl")
        through: dict[int, dict[str, float]] = {}
        for n in jobs:
            cfg = tmp / f"bench{n}.toml"
            cfg.write_text(bench_toml(n, train_size, epochs))
            got: dict[str, list[float]] = {k: [] for k in ("thread", "app", "worker", "app-w")}
            for r in range(repeats):  # the modes alternate, so a busy spell hits them all
                base = tmp / f"t{n}-{r}"
                got["thread"].append(headless(cfg, base / "h", n, "thread"))
                got["app"].append(asyncio.run(in_app(cfg, base / "a" / "runs", n, "thread")))
                got["worker"].append(detached(cfg, base / "w" / "runs", n))
                got["app-w"].append(asyncio.run(in_app(cfg, base / "aw" / "runs", n, "process")))
            med = {k: statistics.median(v) for k, v in got.items()}
            through[n] = med
            print(
                f"   {n:4d} | {med['thread']:16.0f} {med['app']:5.0f}"
                f" {med['app'] / med['thread']:6.0%} | {med['worker']:16.0f}"
                f" {med['app-w']:5.0f} {med['app-w'] / med['worker']:6.0%}"
            )

        print(f"\n2. key latency: {presses} presses of down/up, each redrawing the curves")
        print("   runs active | median ms | p95 ms | max ms")
        quit_s = float("nan")
        for n in (0, *jobs):
            cfg = tmp / f"lat{n}.toml"
            cfg.write_text(bench_toml(max(n, 2), train_size, 1))
            lat, q = asyncio.run(latency(cfg, tmp / f"l{n}" / "runs", n, presses))
            if n == 2:
                quit_s = q
            print(
                f"   {n:11d} | {pct(lat, 50):9.1f} | {pct(lat, 95):6.1f} | {max(lat) * 1000:6.1f}"
            )
        print(f"\n3. quit with 2 runs active: app exited, threads stopped in {quit_s:.2f} s")
        gone, what = quit_process(tmp)
        print(f"   real process (cnntui in a pty, 1 run): exited {gone:.2f} s after y; run {what}")

        runs = tmp / "store" / "runs"
        fake_store(runs, past_runs)
        cfg = tmp / "store" / "experiments.toml"
        cfg.write_text(bench_toml(10, 256, 1))
        times = [asyncio.run(start_time(cfg, runs)) for _ in range(1 if args.smoke else 3)]
        opened = statistics.median(t[0] for t in times)
        shown = statistics.median(t[1] for t in times)
        update = statistics.median(t[3] for t in times)
        added = statistics.median(t[4] for t in times)
        print(
            f"\n4. start with {past_runs:,} past runs in the store: {opened:.2f} s to the main"
            f" screen, {shown:.2f} s with `v` to the filled results table ({times[0][2]} rows);"
            f" then a changed row shows in {update * 1000:.0f} ms, a new run's row in"
            f" {added * 1000:.0f} ms"
        )

        print(f"\n5. one run of {losses:,} batch losses (batch chart)")
        for w, h in ((44, 12), (120, 30)):
            r = redraw(w, h, losses)
            print(
                f"   {w}x{h}: append in 500-loss chunks {r['append'] * 1000:.0f} ms total ·"
                f" decimate to {r['points']} points {r['decimate'] * 1000:.1f} ms ·"
                f" plotext build {r['build'] * 1000:.1f} ms · (undecimated"
                f" {r['undecimated points']:,} points: {r['undecimated'] * 1000:.0f} ms)"
            )


if __name__ == "__main__":
    main()
