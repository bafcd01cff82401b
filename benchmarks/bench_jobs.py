"""Aggregate throughput of `--jobs N`: worker threads against worker processes.

Runs the same set of short LeNet experiments (synthetic CIFAR-shaped data, one epoch each)
through `cnntui.runs.executors.run_jobs` one at a time, N at a time in threads and N at a time in
processes, and prints the total training images per second two ways: "steady", from the
first run's Started event to the last run's Finished (what a long suite sees), and "wall",
from the call to the end (process start-up included: each worker process imports torch).
The modes alternate and the table shows medians of the repeats.

    .venv/bin/python benchmarks/bench_jobs.py             # about 8 minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_jobs.py --quick
    .venv/bin/python benchmarks/bench_jobs.py --smoke     # 2 tiny runs a mode, seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnntui.core.config import Experiment
from cnntui.core.events import Failed, Finished, Started
from cnntui.runs.executors import Job, run_jobs
from cnntui.runs.store import RunStore


def jobs_for(batch_size: int, train_size: int, count: int, device: str) -> list[Job]:
    return [
        Job(
            Experiment(
                name=f"job{i}",
                dataset="synthetic",
                train_size=train_size,
                test_size=200,
                batch_size=batch_size,
                epochs=1,
                lr=0.001,
                momentum=0.9,
                weight_decay=0.01,
                dropout=0.5,
                seed=i,
                device=device,
            )
        )
        for i in range(count)
    ]


def throughput(jobs: list[Job], workers: int, mode: str) -> tuple[float, float]:
    """(steady, wall) training images per second over all `jobs`."""
    first = last = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for event in run_jobs(jobs, RunStore(tmp), threading.Event(), workers, mode):
            if isinstance(event, Failed):
                raise RuntimeError(event.reason)
            if isinstance(event, Started) and not first:
                first = time.perf_counter()
            if isinstance(event, Finished):
                last = time.perf_counter()
        t1 = time.perf_counter()
    images = sum(j.experiment.train_size or 0 for j in jobs)
    return images / (last - first), images / (t1 - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller runs, one repeat")
    p.add_argument("--smoke", action="store_true", help="2 runs of 256 images, one repeat")
    p.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    p.add_argument("--workers", type=int, default=2, help="runs at once (default 2)")
    p.add_argument("--jobs", type=int, default=None, help="experiments per measurement (4)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    repeats = args.repeats or (1 if args.quick or args.smoke else 3)
    args.jobs = args.jobs or (2 if args.smoke else 4)
    scale = 0.5 if args.quick else 1.0
    cases = [(4, int(1200 * scale)), (128, int(7680 * scale))]
    if args.smoke:
        cases = [(32, 256)]
    modes = [("sequential", 1, "thread"), ("threads", args.workers, "thread")]
    modes.append(("processes", args.workers, "process"))
    print(
        f"{args.jobs} LeNet runs of one epoch on {args.device}, {os.cpu_count()} CPUs; "
        f"{args.workers} at once; images/s of wall time, median of {repeats}"
    )
    print(f"{'batch':>5} {'imgs/run':>8} {'':>6} " + " ".join(f"{m[0]:>11}" for m in modes))
    for batch, size in cases:
        jobs = jobs_for(batch, size, args.jobs, args.device)
        results: dict[str, list[tuple[float, float]]] = {m[0]: [] for m in modes}
        for _ in range(repeats):
            for label, workers, mode in modes:
                results[label].append(throughput(jobs, workers, mode))
        for k, kind in enumerate(("steady", "wall")):
            row = " ".join(
                f"{statistics.median(r[k] for r in results[m[0]]):>11,.0f}" for m in modes
            )
            print(f"{batch:>5} {size:>8} {kind:>6} {row}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
