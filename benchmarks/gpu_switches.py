"""On a GPU: every speed switch against the plain CUDA path, losses and seconds per epoch.

The CPU tests (tests/test_speed_switches.py) cover what a CPU can run; this covers fp16 with
its GradScaler, cudnn.benchmark, and compile's reduce-overhead mode (CUDA graphs) at the
report's batch size of 4. Prints, per switch, the largest difference from the plain losses
and the training seconds of one epoch.

    .venv/bin/python benchmarks/gpu_switches.py
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from cnntui.config import Experiment
from cnntui.engine import train
from cnntui.events import BatchLosses, Failed, Started

SWITCHES = [
    {},
    {"channels_last": True},
    {"amp": "bf16"},
    {"amp": "fp16"},
    {"augment": True},
    {"compile": "default"},
    {"compile": "reduce-overhead"},
]


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


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU here")
        return 2
    for model, batch, size in [
        ("lenet", 4, 20_000),
        ("lenet", 128, 50_000),
        ("resnet", 128, 50_000),
    ]:
        base = Experiment(
            name="gpu",
            model=model,
            dataset="synthetic",
            batch_size=batch,
            train_size=size,
            test_size=1000,
            epochs=1,
            lr=0.001,
            momentum=0.9,
            weight_decay=0.01,
            dropout=0.5,
            device="cuda",
        )
        plain, _, _ = epoch(base)
        print(f"\n{model} batch {batch}, {size} images, one epoch")
        for switch in SWITCHES:
            exp = dataclasses.replace(base, **switch)
            if switch.get("compile"):
                epoch(exp)  # compile once, time the second run
            losses, seconds, error = epoch(exp)
            label = ", ".join(f"{k}={v}" for k, v in switch.items()) or "plain"
            if error:
                print(f"  {label:<26} failed: {error}")
                continue
            n = min(len(losses), len(plain))
            diff = max(abs(a - b) for a, b in zip(losses[:n], plain[:n], strict=True))
            mean_gap = abs(sum(losses[-200:]) / 200 - sum(plain[-200:]) / 200)
            print(
                f"  {label:<26} {size / seconds:>9,.0f} img/s  max|dloss| {diff:.2e}  "
                f"last-200 mean gap {mean_gap:.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
