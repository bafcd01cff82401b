"""Time from submitting a run to its first batch loss on disk (its live file), LeNet on
synthetic data, for each way a run starts, measured in one go on the same machine:

- thread: in this process (torch and the engine imported, as in a TUI that trained before),
- cold worker: queued; the scheduler starts `python -m cnntui.runs.worker` (CNNTUI_WARM_IDLE=0),
- warm worker: queued; the scheduler forks it from the store's warm process, already up,
- and a bare `python -c "import torch"` beside them.

The ways alternate within each repeat; medians of --repeats. Each measurement trains on a
training set of its own size, so no way finds its synthetic data already made (a process
keeps the data it made).

    .venv/bin/python benchmarks/bench_first_loss.py [--repeats 5]
    .venv/bin/python benchmarks/bench_first_loss.py --smoke    # one repeat, small data
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnntui.core.config import Experiment
from cnntui.runs import lifecycle, warm
from cnntui.runs import store as st
from cnntui.runs.executors import Job, run_jobs
from cnntui.runs.store import RunStore

DEADLINE = 120.0  # seconds: only bounds a hung measurement


def experiment(train_size: int) -> Experiment:
    return Experiment(
        name="lenet",
        dataset="synthetic",
        model="lenet",
        train_size=train_size,
        test_size=256,
        batch_size=64,
        epochs=1,
        device="cpu",
    )


def first_loss(live: Path, t0: float) -> float:
    """Seconds from `t0` until the live file holds a batch loss."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            if live.stat().st_size >= 8:
                return time.perf_counter() - t0
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise TimeoutError(f"no batch loss in {live} after {DEADLINE:g} s")


def thread(root: Path, exp: Experiment) -> float:
    store = RunStore(root)
    cancel = threading.Event()
    t0 = time.perf_counter()
    events = run_jobs([Job(exp)], store, cancel, 1, "thread")
    runner = threading.Thread(target=lambda: [None for _ in events])
    runner.start()
    live = None
    while live is None and runner.is_alive():
        records = store.runs()
        live = records[0].live if records else None
        time.sleep(0.005)
    took = first_loss(live, t0) if live is not None else float("nan")
    cancel.set()
    runner.join()
    return took


def queued(root: Path, exp: Experiment, idle: str) -> float:
    """Submit the run and start the scheduler as `--detach` does, with CNNTUI_WARM_IDLE=idle."""
    os.environ[warm.IDLE_ENV] = idle
    store = RunStore(root)
    store.root.mkdir(parents=True, exist_ok=True)
    if idle != "0":
        assert warm.WarmLauncher(store.root, float(idle)).ensure(), "the warm process is not up"
    t0 = time.perf_counter()
    (record,) = lifecycle.submit(store, [exp])
    lifecycle.ensure_scheduler(store)
    took = first_loss(record.live, t0)
    lifecycle.cancel(store, exp.name)
    lifecycle.wait_ended(store, [record.path], DEADLINE)
    stop_warm(store)
    return took


def stop_warm(store: RunStore) -> None:
    """End the store's warm process, if one is up."""
    conn = warm.connect(store.root)
    if conn is None:
        return
    conn.close()
    pid = int((store.root / st.WARM_LOCK).read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DEADLINE
    while warm.connect(store.root) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


def bare_import() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - t0


WAYS = {
    "thread": lambda root, exp: thread(root, exp),
    "cold worker": lambda root, exp: queued(root, exp, "0"),
    "warm worker": lambda root, exp: queued(root, exp, "30"),
    "import torch": lambda root, exp: bare_import(),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (1 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="one repeat, 1,024 images")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.smoke else 5)
    size = 1024 if args.smoke else 4096
    with tempfile.TemporaryDirectory() as tmp:
        thread(Path(tmp) / "first", experiment(256))  # torch and the engine imported
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    for i in range(repeats):
        for j, (way, measure) in enumerate(WAYS.items()):
            exp = experiment(size + 8 * (i * len(WAYS) + j))
            with tempfile.TemporaryDirectory() as tmp:
                times[way].append(measure(Path(tmp) / f"runs{i}", exp))
    load = os.getloadavg()[0]
    print(f"submit -> first batch loss on disk, {repeats} repeats, load average {load:.2f}")
    for way, found in times.items():
        shown = ", ".join(f"{t:.2f}" for t in found)
        label = "bare python -c 'import torch'" if way == "import torch" else way
        print(f"{label:30s} median {statistics.median(found):.2f} s ({shown})", flush=True)


if __name__ == "__main__":
    main()
