"""The header line: the device (or each GPU), how many runs train and wait, the jobs setting.

The device is probed once and the GPUs read every GPU_SECONDS, in thread workers; the redraw
timer (views.py) and every change of the runs rewrite the line from what was read last.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable

from textual.worker import Worker, WorkerState

from ....core.text import one_line
from ....runs.gpus import Gpu
from ...messages import GpusRead
from .base import ScreenPart

GPU_SECONDS = 2.0  # how often the GPUs are read (NVML, in a thread)
MEMORY_SECONDS = 2.0  # how often the CUDA device's memory in use is read (without NVML)


class HeaderPart(ScreenPart):
    """Keeps the app's sub-title (the header's second half) true."""

    def _init_header(
        self, device_label: str | None, inventory: Callable[[], list[Gpu]] | None
    ) -> None:
        self.inventory = inventory  # cnntui.runs.gpus.inventory, or a test's; None: not read
        self.device_label = device_label or "probing device…"
        self._probe = device_label is None
        self._cuda = False
        self._memory, self._memory_at = "", -math.inf
        self._gpus: list[Gpu] = []

    def update_header(self) -> None:
        """Rewrite the header: device or GPUs, runs active and queued, jobs at a time."""
        active, queued = len(self.session.active()), len(self.session.queued())
        parts = [self.device_label] if not self._gpus else self.gpu_parts()
        if self._cuda and not self._gpus:
            parts.append(self._cuda_memory())
        parts.append(f"{active} running" + (f", {queued} queued" if queued else ""))
        parts.append(f"jobs {self.session.jobs}")
        self.app.sub_title = " · ".join(parts)

    def gpu_parts(self) -> list[str]:
        """`0 H200 12.3/141G 45% 2 ours` for every GPU (short: the header is one line)."""
        ours = Counter(s.gpu for s in self.session.active() if s.gpu is not None)
        return [gpu_part(gpu, ours[gpu.index]) for gpu in self._gpus]

    def _cuda_memory(self) -> str:
        """GPU memory in use on the device (all processes), re-read every MEMORY_SECONDS."""
        now = time.monotonic()
        if now - self._memory_at >= MEMORY_SECONDS:
            self._memory_at = now
            try:
                import torch

                free, total = torch.cuda.mem_get_info()
                self._memory = f"{(total - free) / 2**30:.1f}/{total / 2**30:.0f} GiB in use"
            except Exception as e:  # a driver hiccup must not stop the timer
                self._memory = f"memory: {one_line(e)}"
        return self._memory

    def _probe_device(self) -> str:
        """The device worker (a thread): resolve the device runs will use and describe it."""
        from ....core.devices import describe_device, resolve_device

        spec = self.session.overrides.get("device", "auto")
        dev = resolve_device(spec)
        self._cuda = dev.type == "cuda"
        return describe_device(dev)

    def device_probed(self, worker: Worker[str], state: WorkerState) -> None:
        """The device worker changed state: its description, or why it failed, goes up."""
        if state == WorkerState.SUCCESS and worker.result is not None:
            self.device_label = worker.result
        elif state == WorkerState.ERROR and worker.error is not None:
            self.device_label = f"device: {one_line(worker.error)}"
        self.update_header()

    def _gpu_loop(self) -> None:
        """The GPU worker (a thread): read the inventory every GPU_SECONDS, post it."""
        inventory = self.inventory
        while inventory is not None and self._looping():
            try:
                gpus = list(inventory())
            except Exception:  # a driver hiccup must not end the loop
                gpus = []
            self.post_message(GpusRead(gpus))
            self.stopping.wait(GPU_SECONDS)

    def on_gpus_read(self, message: GpusRead) -> None:
        """New GPU readings: show them."""
        self._gpus = message.gpus
        self.update_header()


def gpu_part(gpu: Gpu, ours: int) -> str:
    """One GPU in the header: index, short name, memory used/total, load, runs of ours."""
    name = gpu.name.replace("NVIDIA ", "").replace("GeForce ", "")
    util = f" {gpu.utilization}%" if gpu.utilization >= 0 else ""
    return (
        f"{gpu.index} {name} {gpu.memory_used / 2**30:.1f}/{gpu.memory_total / 2**30:.0f}G"
        f"{util}" + (f" {ours} ours" if ours else "")
    )
