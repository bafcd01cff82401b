"""The machine's GPUs as the scheduler sees them, and which run goes on which one.

The inventory is read through NVML (`nvidia-ml-py`, imported as `pynvml`): names, memory and
utilisation of every GPU, without importing torch or creating a CUDA context. Where NVML is
absent (no NVIDIA driver, or the package not installed) the inventory is empty and runs get
CPU slots. Indices are NVML's, which follow the PCI bus order; workers are started with
`CUDA_DEVICE_ORDER=PCI_BUS_ID` so that CUDA numbers the GPUs the same way.

Slot choice is a pure function of the inventory and the runs already placed, so it is tested
with an injected inventory on machines with no GPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class Gpu:
    """One GPU: NVML index, name, memory in bytes, utilisation in percent, compute pids."""

    index: int
    name: str
    memory_total: int
    memory_used: int
    utilization: int  # percent of the last sample period a kernel ran; -1 when unknown
    pids: tuple[int, ...] = ()

    @property
    def free_gib(self) -> float:
        """Memory not in use on this GPU, in GiB (what min_free_gib is compared with)."""
        return (self.memory_total - self.memory_used) / GIB


def visible_indices() -> list[int] | None:
    """The GPU indices CUDA_VISIBLE_DEVICES allows, or None when it is unset."""
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return None
    parts = [part.strip() for part in spec.split(",")]
    if not all(part.isdigit() for part in parts):  # UUIDs or MIG names: leave it to CUDA
        return None
    return [int(part) for part in parts]


def inventory() -> list[Gpu]:
    """Every GPU NVML sees (restricted to CUDA_VISIBLE_DEVICES when set); [] without NVML."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        gpus = []
        allowed = visible_indices()
        for i in range(pynvml.nvmlDeviceGetCount()):
            if allowed is not None and i not in allowed:
                continue
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name, mem = pynvml.nvmlDeviceGetName(h), pynvml.nvmlDeviceGetMemoryInfo(h)
            name = name.decode() if isinstance(name, bytes) else str(name)
            try:
                util = int(pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
            except pynvml.NVMLError:
                util = -1
            try:
                pids = tuple(p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h))
            except pynvml.NVMLError:
                pids = ()
            gpus.append(Gpu(i, name, int(mem.total), int(mem.used), util, pids))
        return gpus
    except pynvml.NVMLError:
        return []
    finally:
        pynvml.nvmlShutdown()


def pick_gpu(
    gpus: Iterable[Gpu],
    placed: dict[int, int],
    allowed: list[int] | None = None,
    runs_per_gpu: int = 1,
    min_free_gib: float = 0.0,
) -> int | None:
    """The GPU index for the next run, or None when every allowed GPU is full.

    `placed` counts the runs of ours on each GPU now. A GPU takes at most `runs_per_gpu` of
    them and none while its free memory is below `min_free_gib` (other people's jobs). Among
    the GPUs with room, the one with the fewest of our runs wins, then the most free memory.
    """
    best: tuple[int, float, int] | None = None
    for gpu in gpus:
        if allowed is not None and gpu.index not in allowed:
            continue
        ours = placed.get(gpu.index, 0)
        if ours >= runs_per_gpu or gpu.free_gib < min_free_gib:
            continue
        key = (ours, -gpu.free_gib, gpu.index)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]
