"""Time the whole shipped experiments.toml suite on synthetic CIFAR-10-shaped data.

Every experiment of the file runs as shipped (epochs, batch sizes, models) except that the
dataset is the built-in synthetic one at CIFAR-10's shape and size (50,000 training and
10,000 test images of 3x32x32), so no download is needed and the timing is the same work.
It prints each run's training time (evaluation included, as the engine reports it) and
sets the two ten-epoch Task 4 runs against the report's 49.1 s (LeNet) and 53.0 s (ResNet)
on an A10.

Meant for a GPU (one command):

    .venv/bin/python benchmarks/time_suite.py
    .venv/bin/python benchmarks/time_suite.py --set compile=reduce-overhead --set amp=bf16

`--one-epoch` trains one epoch of each and multiplies by its shipped epochs (every epoch is
the same work), for a short device session. On a CPU the full suite takes hours; it refuses
unless given --allow-cpu, and then you will want e.g. `--set train_size=2000 --one-epoch`.
`--smoke` is that at its smallest, on any device: one epoch of 256 images each, seconds on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cnntui.core.config import apply_overrides, load, parse_override
from cnntui.core.devices import resolve_device
from cnntui.core.events import Diverged, Failed, Finished, Started
from cnntui.runs.executors import Job, run_jobs
from cnntui.runs.store import RunStore

REPORT_SECONDS = {"arch-lenet": 49.1, "arch-resnet": 53.0}  # the report's A10, DataLoader


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    root = Path(__file__).resolve().parents[1]
    p.add_argument("--config", default=str(root / "experiments.toml"))
    p.add_argument("--run", default="all", help="experiments to run (as cnntui --run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default 1, as the report)")
    p.add_argument("--mode", default="thread", choices=("thread", "process"))
    p.add_argument("--one-epoch", action="store_true", help="time 1 epoch each, scale up")
    p.add_argument("--allow-cpu", action="store_true", help="run even without a GPU")
    p.add_argument("--smoke", action="store_true", help="1 epoch of 256 images each, any device")
    args = p.parse_args(argv)

    dev = resolve_device(args.device)
    if dev.type == "cpu" and not (args.allow_cpu or args.smoke):
        print("no GPU here: the full suite would take hours (use --allow-cpu and --set ...)")
        return 2
    overrides = {"dataset": "synthetic", "device": args.device}
    if args.smoke:
        args.one_epoch = True
        overrides.update(train_size=256, test_size=128)
    overrides.update(parse_override(item) for item in args.set)
    shipped = apply_overrides(load(args.config).select(args.run), overrides)
    experiments = apply_overrides(shipped, {"epochs": 1}) if args.one_epoch else shipped
    scale = {e.name: s.epochs / e.epochs for e, s in zip(experiments, shipped, strict=True)}
    described = ""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [Job(e) for e in experiments]
        for event in run_jobs(jobs, RunStore(tmp), threading.Event(), args.jobs, args.mode):
            if isinstance(event, Started):
                described = event.device
                print(f"[{event.name}] started on {event.device}", flush=True)
            elif isinstance(event, Finished):
                seconds[event.name] = event.total_seconds * scale[event.name]
                print(f"[{event.name}] {event.total_seconds:.1f} s", flush=True)
            elif isinstance(event, Failed | Diverged):
                print(f"[{event.name}] {type(event).__name__}: {event.reason}", flush=True)
    wall = time.perf_counter() - t0

    print(
        f"\nsuite on {described}; settings: {', '.join(f'{k}={v}' for k, v in overrides.items())}"
    )
    print(
        f"{'experiment':<14} {'model':<7} {'batch':>5} {'epochs':>6} {'seconds':>8} {'report':>7}"
    )
    for e in shipped:
        took = seconds.get(e.name)
        ref = REPORT_SECONDS.get(e.name)
        print(
            f"{e.name:<14} {e.model:<7} {e.batch_size:>5} {e.epochs:>6} "
            f"{f'{took:.1f}' if took is not None else 'failed':>8} "
            f"{f'{ref:.1f}' if ref else '':>7}"
        )
    total = sum(seconds.values())
    print(f"{'total':<36} {total:>8.1f}   (wall {wall:.1f} s, {len(seconds)} runs)")
    task4 = [seconds.get(k) for k in REPORT_SECONDS]
    if all(v is not None for v in task4):
        ours = sum(task4)
        ref = sum(REPORT_SECONDS.values())
        print(f"Task 4 (arch-lenet + arch-resnet): {ours:.1f} s vs the report's {ref:.1f} s")
    return 0 if len(seconds) == len(shipped) else 1


if __name__ == "__main__":
    raise SystemExit(main())
