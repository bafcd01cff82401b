"""Runs that outlive the terminal: what the live files and worker processes cost.

(1) start   time from `cnntui --run NAME --detach` to the run's first batch loss in its
            live file (the scheduler's and the worker's start, torch import included),
            for a LeNet run on synthetic data;
(2) live    images/s of one epoch of `engine.train` alone against the same epoch wrapped
            in `driver.drive` (live loss file, heartbeat, cancel polling), alternated and
            repeated, medians shown.

  .venv/bin/python benchmarks/bench_live.py [--device cpu] [--repeats 3]
  .venv/bin/python benchmarks/bench_live.py --smoke     # tiny epochs, one repeat
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnntui.core.config import Experiment
from cnntui.core.engine import train
from cnntui.core.events import BatchLosses, Started
from cnntui.runs.live import EitherEvent, drive
from cnntui.runs.store import LIVE_FILE, RunStore

TOML = """[defaults]
dataset = "synthetic"
train_size = {train_size}
test_size = 200
batch_size = {batch}
epochs = 1
device = "{device}"

[[experiment]]
name = "lenet"
"""


def time_to_first_loss(device: str, batch: int, train_size: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "experiments.toml").write_text(
            TOML.format(batch=batch, device=device, train_size=train_size)
        )
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "cnntui", "--run", "lenet", "--detach"],
            cwd=cwd,
            check=True,
            capture_output=True,
        )
        detached = time.perf_counter() - t0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            files = list((cwd / "runs" / "lenet").glob(f"*/{LIVE_FILE}"))
            if files and files[0].stat().st_size >= 8:
                first = time.perf_counter() - t0
                break
            time.sleep(0.01)
        else:
            raise SystemExit("no batch loss within 300 s")
        store = RunStore(cwd / "runs")
        while any(r.status in ("queued", "running") for r in store.runs()):
            time.sleep(0.2)
        print(f"  --detach returned in {detached:.2f}s; first batch loss at {first:.2f}s")
        return first


def images_per_second(exp: Experiment, live: bool, root: Path) -> float:
    store = RunStore(root)
    run = store.create(exp)
    if live:
        cancel = EitherEvent(None)
        events = drive(run.path, train(exp, cancel, run), cancel)
    else:
        events = train(exp, threading.Event(), run)
    t0, images = None, 0
    for event in events:
        if isinstance(event, Started):
            t0 = time.perf_counter()
        elif isinstance(event, BatchLosses):
            images += len(event.losses) * exp.batch_size
    run.release()
    return images / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --smoke)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per run (0: auto)")
    ap.add_argument("--skip-start", action="store_true", help="only measure (2)")
    ap.add_argument("--smoke", action="store_true", help="tiny epochs, one repeat")
    args = ap.parse_args()
    args.repeats = args.repeats or (1 if args.smoke else 3)
    start_size = 256 if args.smoke else 4000
    cases = ((4, 64), (128, 256)) if args.smoke else ((4, 2000), (128, 12_800))
    if not args.skip_start:
        print("(1) --detach to the first batch loss in the live file (LeNet, batch 4)")
        starts = [time_to_first_loss(args.device, 4, start_size) for _ in range(args.repeats)]
        print(f"  median {statistics.median(starts):.2f}s")
    print(
        f"(2) images/s, engine alone vs with live files (median of {args.repeats} "
        f"alternating epochs, {args.threads or 'auto'} thread(s))"
    )
    for batch, size in cases:
        exp = Experiment(
            name="lenet",
            dataset="synthetic",
            train_size=size,
            test_size=200,
            batch_size=batch,
            epochs=1,
            device=args.device,
            threads=args.threads,
        )
        rates: dict[bool, list[float]] = {False: [], True: []}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                for live in (False, True):
                    rates[live].append(images_per_second(exp, live, Path(tmp)))
        alone, with_live = statistics.median(rates[False]), statistics.median(rates[True])
        print(
            f"  lenet batch {batch:>3}: engine {alone:8.0f}  with live files {with_live:8.0f}"
            f"  ratio {with_live / alone:.3f}"
        )


if __name__ == "__main__":
    main()
