"""On a GPU: every speed switch against the plain CUDA path, losses and seconds per epoch.

The CPU tests (tests/core/test_speed_switches.py) cover what a CPU can run; this covers fp16 with
its GradScaler, cudnn.benchmark, and compile's reduce-overhead mode (CUDA graphs) at the
report's batch size of 4. Prints, per switch, the largest difference from the plain losses
and the training seconds of one epoch.

    .venv/bin/python benchmarks/gpu_switches.py
    .venv/bin/python benchmarks/gpu_switches.py --smoke    # LeNet at batch 4 only, 512 images

Without CUDA there is nothing to measure: the plain run exits 2, and `--smoke` checks what a
CPU can (every switch's setting; one tiny epoch with each switch a CPU runs) and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from cnntui.core.config import Experiment, check_value
from cnntui.core.engine import train
from cnntui.core.events import BatchLosses, Failed, Started

SWITCHES = [
    {},
    {"channels_last": True},
    {"amp": "bf16"},
    {"amp": "fp16"},
    {"augment": True},
    {"compile": "default"},
    {"compile": "reduce-overhead"},
]
CUDA_ONLY = ("amp", "fp16"), ("compile", "default"), ("compile", "reduce-overhead")
CASES = [("lenet", 4, 20_000), ("lenet", 128, 50_000), ("resnet", 128, 50_000)]
SMOKE_CASES = [("lenet", 4, 512)]


def epoch(exp: Experiment) -> tuple[list[float], float, str]:
    losses: list[float] = []
    t0 = t1 = 0.0
    for event in train(exp):
        if isinstance(event, Started):
            t0 = time.perf_counter()
        elif isinstance(event, BatchLosses):
            losses.extend(event.losses)
            t1 = time.perf_counter()
        elif isinstance(event, Failed):
            return [], 0.0, event.reason
    return losses, t1 - t0, ""


def experiment(model: str, batch: int, size: int, device: str) -> Experiment:
    return Experiment(
        name="gpu",
        model=model,
        dataset="synthetic",
        batch_size=batch,
        train_size=size,
        test_size=1000 if device == "cuda" else 100,
        epochs=1,
        lr=0.001,
        momentum=0.9,
        weight_decay=0.01,
        dropout=0.5,
        device=device,
    )


def compare(base: Experiment, switches: list[dict[str, object]]) -> list[str]:
    """One line per switch: its images/s and how far its losses are from the plain run's."""
    plain, _, error = epoch(base)
    if error:
        return [f"  {'plain':<26} failed: {error}"]
    lines = []
    for switch in switches:
        exp = dataclasses.replace(base, **switch)
        if switch.get("compile"):
            epoch(exp)  # compile once, time the second run
        losses, seconds, error = epoch(exp)
        label = ", ".join(f"{k}={v}" for k, v in switch.items()) or "plain"
        if error:
            lines.append(f"  {label:<26} failed: {error}")
            continue
        n = min(len(losses), len(plain))
        tail = min(200, n)
        diff = max(abs(a - b) for a, b in zip(losses[:n], plain[:n], strict=True))
        mean_gap = abs(sum(losses[n - tail : n]) / tail - sum(plain[n - tail : n]) / tail)
        lines.append(
            f"  {label:<26} {base.train_size / seconds:>9,.0f} img/s  max|dloss| {diff:.2e}  "
            f"last-{tail} mean gap {mean_gap:.3f}"
        )
    return lines


def cpu_smoke() -> int:
    """What a CPU can check: every switch is a valid setting of an Experiment, and the
    switches a CPU runs each train one tiny epoch through `compare`."""
    for switch in SWITCHES:
        for key, value in switch.items():
            check_value(key, value)
    runnable = [s for s in SWITCHES if not set(s.items()) & set(CUDA_ONLY)]
    lines = compare(experiment("lenet", 4, 64, "cpu"), runnable)
    failed = [line for line in lines if "failed" in line]
    if failed:
        print("\n".join(failed))
        return 1
    print(
        f"no CUDA GPU here, nothing measured; checked {len(SWITCHES)} switch settings and ran "
        f"{len(runnable)} of them one tiny epoch on the CPU"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="LeNet at batch 4 only, 512 images")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        if args.smoke:
            return cpu_smoke()
        print("no CUDA GPU here")
        return 2
    for model, batch, size in SMOKE_CASES if args.smoke else CASES:
        print(f"\n{model} batch {batch}, {size} images, one epoch")
        for line in compare(experiment(model, batch, size, "cuda"), SWITCHES):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
