"""A study on Ray against the same study in local worker processes, side by side.

The same small LeNet study (synthetic CIFAR-shaped data) is queued in a fresh run store three
ways, the way a user's cnntui does it (lifecycle.submit, then ensure_scheduler starts the
store's scheduler process):

- `process`: worker processes on this machine (cnntui.runs.daemon), `jobs` CPU slots;
- `ray addr`: runs on a Ray that is already running (started here with ray.init, as
  `ray start --head` would be), through cnntui.runs.ray_executor connecting to its address;
- `ray local`: `cluster = "ray"`, a local Ray started by cnntui.runs.ray_executor for the study.

For each it prints: time from submitting to the first batch loss in live.f64, the whole
study's wall time, the engine's images/s (training only, as the summary records it), and the
study's images/s over its wall time. Then the cancel latency: from `cnntui --cancel` (the
cancel file) to the run's summary reading `cancelled`, for a running LeNet, each way. It also
checks that a run's loss history through Ray equals the local one's exactly (same seed, CPU).

    .venv/bin/python benchmarks/bench_ray.py            # about 4 minutes on 2 CPU cores
    .venv/bin/python benchmarks/bench_ray.py --quick
    .venv/bin/python benchmarks/bench_ray.py --smoke    # tiny runs, one cancel each; ~1 minute
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from cnntui.core.config import Experiment
from cnntui.runs import lifecycle
from cnntui.runs.records import RunSummary
from cnntui.runs.store import RunStore


def study(count: int, train_size: int, epochs: int) -> list[Experiment]:
    return [
        Experiment(
            name=f"lenet{i}",
            dataset="synthetic",
            train_size=train_size,
            test_size=200,
            batch_size=32,
            epochs=epochs,
            lr=0.01,
            seed=i,
            device="cpu",
        )
        for i in range(count)
    ]


def wait(cond, timeout: float = 600.0, step: float = 0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("benchmark step timed out")


def trained(summary: RunSummary) -> int:
    """Training images a finished run went through: its epochs of its training set."""
    assert summary.train_images is not None and summary.epochs is not None, summary
    return summary.train_images * summary.epochs


def seconds(summary: RunSummary) -> float:
    """A finished run's training seconds, as its summary records them."""
    assert summary.total_seconds is not None, summary
    return summary.total_seconds


def run_study(exps: list[Experiment], jobs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        t0 = time.perf_counter()
        records = lifecycle.submit(store, exps, jobs=jobs)
        lifecycle.ensure_scheduler(store)
        first = wait(
            lambda: (
                any(r.live.exists() and r.live.stat().st_size > 0 for r in records)
                and time.perf_counter()
            )
        )

        def ended():
            now = [RunStore.read(r.path) for r in records]
            return all(r is not None and r.status not in ("queued", "running") for r in now) and now

        done = wait(ended)
        wall = time.perf_counter() - t0
        bad = [r.status for r in done if r.status != "finished"]
        if bad:
            raise RuntimeError(f"runs ended {bad}: {[r.summary.reason for r in done]}")
        images = sum(trained(r.summary) for r in done)
        engine = statistics.median(trained(r.summary) / seconds(r.summary) for r in done)
        histories = {r.name: np.array(r.history().batch_losses) for r in done}
        wait(lambda: not any(p.exists() for p in Path(tmp).glob("*/*/heartbeat")))
    return {
        "first": first - t0,
        "wall": wall,
        "engine": engine,
        "study": images / wall,
        "histories": histories,
    }


def cancel_latency(exp: Experiment, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            store = RunStore(tmp)
            [record] = lifecycle.submit(store, [exp])
            lifecycle.ensure_scheduler(store)
            wait(lambda record=record: record.live.exists() and record.live.stat().st_size > 800)
            t0 = time.perf_counter()
            lifecycle.cancel(store, record.run_id)
            wait(
                lambda record=record: (
                    (r := RunStore.read(record.path)) is not None and r.status == "cancelled"
                ),
                step=0.005,
            )
            out.append(time.perf_counter() - t0)
            wait(lambda record=record: not (record.path / "heartbeat").exists())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller runs, 2 cancels each")
    parser.add_argument("--smoke", action="store_true", help="tiny runs, 1 cancel each")
    args = parser.parse_args()
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    count, size, epochs = (
        (2, 128, 1) if args.smoke else (2, 1000, 1) if args.quick else (4, 4000, 2)
    )
    exps = study(count, size, epochs)
    ways = {
        "process": [dataclasses.replace(e, executor="process") for e in exps],
        "ray addr": [dataclasses.replace(e, cluster=address) for e in exps],
        "ray local": [dataclasses.replace(e, cluster="ray") for e in exps],
    }
    print(
        f"study: {count} LeNet runs, synthetic {size} images x {epochs} epoch(s), batch 32, "
        f"cpu, 2 at a time (2 CPU slots / a 2-CPU Ray)\n"
    )
    print(f"{'way':<10} {'1st batch':>9} {'wall':>7} {'engine img/s':>12} {'study img/s':>11}")
    results = {}
    for way, runs in ways.items():
        r = results[way] = run_study(runs, jobs=2)
        print(
            f"{way:<10} {r['first']:>8.1f}s {r['wall']:>6.1f}s {r['engine']:>12.0f} "
            f"{r['study']:>11.0f}"
        )
    for way in ("ray addr", "ray local"):
        for name, losses in results["process"]["histories"].items():
            if not np.array_equal(losses, results[way]["histories"][name]):
                raise SystemExit(f"{way}: {name}'s loss history differs from the local run's")
    print("\nloss histories through Ray equal the local runs' exactly (same seeds)")

    long = dataclasses.replace(exps[0], name="long", epochs=200, train_size=2000)
    repeats = 1 if args.smoke else 2 if args.quick else 4
    print(f"\ncancel latency (cancel file -> summary 'cancelled'), {repeats} runs each:")
    for way, exp in (
        ("process", dataclasses.replace(long, executor="process")),
        ("ray addr", dataclasses.replace(long, cluster=address)),
    ):
        lat = cancel_latency(exp, repeats)
        print(f"  {way:<9} median {statistics.median(lat):.2f}s  max {max(lat):.2f}s")
    ray.shutdown()


if __name__ == "__main__":
    main()
