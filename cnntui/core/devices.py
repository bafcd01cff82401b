"""Where a run trains and with how many CPU threads: the device and thread policy.

Process-wide state lives here and only here: how many runs train in this process now, how
many share the machine's cores, and how many cores the process keeps for other work (the
TUI keeps one for its screen). The engine asks this module for a run's device and thread
count; front ends and executors tell it what they know.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
from collections.abc import Iterator

import torch

# Auto thread counts (the `threads` setting at 0). OpenMP threads busy-wait for each other at
# every operator, so a thread that loses its core stalls the others. Measured on a 2-core CPU
# shared with other work: two threads ran LeNet 4-9x slower than one, at batch 4 and at 128,
# whenever the second core was busy, and 1.6-1.8x faster (LeNet, ResNet at batch 128) when it
# was free. So small batches get one thread, and large ones every core not reserved, shared
# among the runs. Headless, nothing is reserved; the TUI keeps one core for its UI thread.
SMALL_BATCH = 64

_active_lock = threading.Lock()
_active_runs = 0  # runs training in this process now; they share the CPU cores
_cpu_reserve = 0  # cores auto thread counts leave free for other work in this process


def reserve_cores(n: int) -> None:
    """Leave `n` cores out of automatic thread counts (the TUI keeps one for its screen)."""
    global _cpu_reserve
    _cpu_reserve = max(0, n)


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def choose_threads(batch_size: int, requested: int = 0, concurrent: int = 1) -> int:
    """CPU intra-op threads for one run: `requested`, or for 0 one below SMALL_BATCH and
    otherwise the cores not reserved, shared evenly among the `concurrent` runs."""
    if requested > 0:
        return requested
    if batch_size < SMALL_BATCH:
        return 1
    return max(1, (cpu_cores() - _cpu_reserve) // max(1, concurrent))


def apply_threads(batch_size: int, requested: int, cpu_share: int | None = None) -> None:
    """Set the calling thread's CPU thread count for a run (see choose_threads); `cpu_share`
    is how many runs share the cores as the caller knows it (None: those in this process)."""
    # With torch's OpenMP backend the count belongs to the calling thread (the OpenMP
    # nthreads ICV is per thread), so sibling runs in other threads each keep their own.
    n = choose_threads(batch_size, requested, max(_active_runs, cpu_share or 1))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@contextlib.contextmanager
def training() -> Iterator[None]:
    """Count one more run training in this process while inside; the calling thread's CPU
    thread count comes back as it was afterwards."""
    global _active_runs
    previous = torch.get_num_threads()
    with _active_lock:
        _active_runs += 1
    try:
        yield
    finally:
        with _active_lock:
            _active_runs -= 1
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


class DeviceError(RuntimeError):
    """The requested device does not exist on this machine."""


def resolve_device(spec: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; an explicit device must exist."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r}: this machine has no CUDA GPU (use auto or cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {spec!r}: MPS is not available here (use auto or cpu)")
    return dev


def describe_device(dev: torch.device) -> str:
    """How a run's device reads in its summary: `cuda:0 (NAME)`, `cpu (2 threads)`."""
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if dev.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''})"
    return str(dev)


def device_name(dev: torch.device) -> str:
    """The model of the hardware a run trains on, for its record: `NVIDIA H100 80GB HBM3
    (79 GiB)`, `AMD EPYC 7B13 (CPU)`."""
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    if dev.type == "mps":
        return f"{platform.machine()} (MPS)"
    return f"{cpu_model()} (CPU)"


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    with contextlib.suppress(OSError, UnicodeDecodeError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return " ".join(value.split())
    return platform.processor() or platform.machine() or "unknown CPU"
