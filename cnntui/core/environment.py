"""What a run records about the process that trains it: cnntui's, Python's, torch's and
torchvision's versions, CUDA's and cuDNN's for a CUDA run, the device's model and the host.

Asked where the run trains (for a Ray run, on its node), so the record says where the numbers
came from, not where they were collected.
"""

from __future__ import annotations

import importlib.metadata
import platform
import socket
from typing import Any

import torch

from .. import __version__
from .devices import device_name


def environment(dev: torch.device) -> dict[str, str]:
    """The run summary's environment fields for a run training on `dev` in this process
    (records.RunSummary: cnntui_version ... host); a version that cannot be found is left out."""
    out = {
        "cnntui_version": __version__,
        "python_version": platform.python_version(),
        "torch_version": str(torch.__version__),
        "torchvision_version": _installed("torchvision"),
        "device_name": device_name(dev),
        "host": socket.gethostname(),
    }
    if dev.type == "cuda":
        out["cuda_version"] = torch.version.cuda or ""
        out["cudnn_version"] = _cudnn()
    return {k: v for k, v in out.items() if v}


def _installed(package: str) -> str:
    """The installed version of `package` (its metadata: nothing is imported), or ""."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _cudnn() -> str:
    """cuDNN's version as `9.1.0` (torch gives 90100; before cuDNN 9 it gave 8907), or ""."""
    cudnn: Any = torch.backends.cudnn  # its functions carry no annotations
    v = cudnn.version() if cudnn.is_available() else None
    if not v:
        return ""
    major, rest = divmod(v, 10000) if v >= 90000 else divmod(v, 1000)
    return f"{major}.{rest // 100}.{rest % 100}"
