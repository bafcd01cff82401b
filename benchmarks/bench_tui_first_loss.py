"""Time from `r` in the TUI to the run's first batch loss drawn on screen, LeNet on synthetic
data, per executor: "process" (queued in the run store; the scheduler has the store's warm
process, which the TUI started as it opened, fork a worker; the TUI follows its live file),
"warm" (the same, the warm process already up, as when the TUI has been open a few
seconds) and "thread" (in the TUI's own process; torch imported once, by the first run).
Medians of --repeats fresh apps, each on a fresh store.

    .venv/bin/python benchmarks/bench_tui_first_loss.py [--repeats 3]
    .venv/bin/python benchmarks/bench_tui_first_loss.py --smoke    # one app each, small data
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnntui.runs import lifecycle, warm
from cnntui.runs.store import RunStore
from cnntui.tui.app import make_app

DEADLINE = 180.0  # seconds: only bounds a measurement that hangs

TOML = """\
[defaults]
dataset = "synthetic"
model = "lenet"
train_size = {train_size}
test_size = 256
batch_size = 64
epochs = 1
device = "cpu"

[[experiment]]
name = "lenet"
"""


def chart_text(app) -> str:
    chart = app.main.query_one("#chart-batch")
    return "\n".join(line.text for line in chart.render_lines(chart.region.reset_offset))


async def once(executor: str, folder: Path, train_size: int) -> float:
    (folder / "experiments.toml").write_text(TOML.format(train_size=train_size))
    store = RunStore(folder / "runs")
    if executor == "warm":  # the TUI opened a while ago: its warm process is up
        store.root.mkdir(parents=True)
        launcher = warm.WarmLauncher(store.root, warm.idle_seconds() or warm.DEFAULT_IDLE)
        if not await asyncio.to_thread(launcher.ensure):
            raise SystemExit("the warm process did not come up: see runs/.warm.log")
    app = make_app(
        folder / "experiments.toml",
        {},
        store.root,
        folder / "x",
        device_label="c",
        executor="process" if executor == "warm" else executor,
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.5)
        empty = chart_text(app)
        t0 = time.perf_counter()
        await pilot.press("r")
        while chart_text(app) == empty or app.main.session.latest("lenet").done == 0:
            if time.perf_counter() - t0 > DEADLINE:
                raise SystemExit(f"{executor}: no batch loss on screen after {DEADLINE:g} s")
            await asyncio.sleep(0.01)
        took = time.perf_counter() - t0
        app.main.session.cancel("lenet")
        paths = [r.path for r in store.runs()]
        await asyncio.to_thread(lifecycle.wait_ended, store, paths, 60)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="one app each, 2,048 images")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.smoke else 3)
    train_size = 2048 if args.smoke else 20_000
    for executor in ("process", "warm", "thread"):
        times = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                times.append(asyncio.run(once(executor, Path(tmp), train_size)))
        shown = ", ".join(f"{t:.2f}" for t in times)
        print(
            f"{executor:8s} r -> first batch loss on screen: median "
            f"{statistics.median(times):.2f} s ({shown})",
            flush=True,
        )


if __name__ == "__main__":
    main()
