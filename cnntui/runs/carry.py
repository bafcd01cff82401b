"""What a run queued for a Ray cluster carries to its node, so that the node needs neither
the experiments folder nor the image folder.

A run is packed when it is queued (`pack`), since the experiments folder may be moved or
changed before the scheduler, another process, launches it: a user model's file with the
Python files of its folder (top-level modules and packages, so its sibling imports work), and
a folder dataset's decoded arrays with its class names. The store keeps them in the run's
carried.npz (store.CARRIED_FILE, read with `allow_pickle=False`); the Ray scheduler sends them
with the run's task, and the node writes the sources into a folder of its own and installs the
arrays (`unpack`) before it trains. Built-in models, importable modules and named datasets
carry nothing: a node has them as the store's host has them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core import folder, user_model
from ..core.config import Experiment
from ..core.text import one_line
from . import store as st

DATA_PREFIX = "data_"  # before each array of core.data.arrays


class CarryError(st.StoreError):
    """A run cannot be queued for a cluster with what it needs: one line saying why."""


def pack(exp: Experiment) -> dict[str, np.ndarray] | None:
    """What `exp` must carry to a Ray node, as arrays for carried.npz (None: nothing);
    CarryError when its files cannot be read or come to more than MAX_CARRIED_BYTES."""
    out: dict[str, np.ndarray] = {}
    try:
        out.update(_model_sources(exp))
        out.update(_dataset_arrays(exp))
    except (OSError, ValueError, RuntimeError) as e:  # DataError, UserModelError among them
        raise CarryError(f"cannot queue {exp.name} for the Ray cluster: {one_line(e)}") from None
    size = sum(a.nbytes for a in out.values())
    if size > st.MAX_CARRIED_BYTES:
        raise CarryError(
            f"cannot queue {exp.name} for the Ray cluster: its model's folder and dataset come "
            f"to {_mib(size)}, more than the {_mib(st.MAX_CARRIED_BYTES)} a run carries to a "
            "node; set a smaller image_size, or put the images where every node reads them"
        )
    return out or None


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


def _model_sources(exp: Experiment) -> dict[str, np.ndarray]:
    """A user model file and the Python files of its folder, as bytes by relative name."""
    spec = user_model.parse_spec(exp.model)
    if spec is None or not spec.is_file:
        return {}
    path = spec.path(exp.base_dir).resolve()
    if not path.is_file():
        raise OSError(f"model file {path} does not exist")
    names = python_files(path.parent)
    out = {
        "model_file": np.array(path.name),
        "model_dir": np.array(str(path.parent)),
        "source_names": np.array([str(n) for n in names], dtype=str),
    }
    for i, name in enumerate(names):
        out[f"source_{i}"] = np.frombuffer((path.parent / name).read_bytes(), dtype=np.uint8)
    return out


def python_files(root: Path) -> list[Path]:
    """The .py files a model in folder `root` can import, relative to it: the folder's own
    and those of its packages (folders with an __init__.py, at any depth), sorted. Hidden
    folders, __pycache__ and folders that are not packages (a virtual environment, the data)
    are not walked."""
    out: list[Path] = []
    for here, dirs, files in os.walk(root):
        at = Path(here)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and d != "__pycache__" and (at / d / "__init__.py").is_file()
        )
        out += [(at / f).relative_to(root) for f in sorted(files) if f.endswith(".py")]
    return out


def _dataset_arrays(exp: Experiment) -> dict[str, np.ndarray]:
    """A folder dataset's decoded arrays and class names (core.data.arrays), by key."""
    if not folder.is_folder(exp.dataset):
        return {}
    from ..core import data

    arrays = data.arrays(exp.dataset, exp.data_dir, exp.image_size, exp.base_dir)
    return {DATA_PREFIX + k: v for k, v in arrays.items()}


def unpack(
    carried: dict[str, Any], exp: Experiment, where: Path
) -> tuple[Experiment, dict[str, str]]:
    """On a node: the model's sources written under `where` and the dataset installed in this
    process, then the experiment to train (its model read from there) and the paths to name
    in texts instead: {this node's folder: the store host's}."""
    aliases: dict[str, str] = {}
    if "model_file" in carried:
        spec = user_model.parse_spec(exp.model)
        if spec is None:
            raise ValueError(f"the run carries a model file but its model is {exp.model!r}")
        src = where / "model"
        for i, name in enumerate(carried["source_names"].tolist()):
            target = (src / name).resolve()
            if not target.is_relative_to(src.resolve()):
                raise ValueError(f"the run carries a source outside its folder: {name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(np.asarray(carried[f"source_{i}"], dtype=np.uint8).tobytes())
        exp = dataclasses.replace(exp, model=f"{src / str(carried['model_file'])}:{spec.name}")
        aliases[str(src)] = str(carried["model_dir"])
    data = {
        k.removeprefix(DATA_PREFIX): v if v.flags.writeable else v.copy()  # Ray's: read-only
        for k, v in carried.items()
        if k.startswith(DATA_PREFIX)
    }
    if data:
        from ..core import data as datasets

        datasets.install(exp.dataset, exp.image_size, data, exp.base_dir)
    return exp, aliases
