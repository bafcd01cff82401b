"""The run store: one directory per run, written atomically, listed and reloaded later.

Layout: `<runs_dir>/<experiment name>/<run id>/` holding
- `config.toml`   the resolved experiment the run trained with (provenance);
- `summary.json`  status, device, parameter count, headline metrics; rewritten every epoch;
- `history.npz`   the loss history and per-epoch metrics; rewritten every epoch;
- `checkpoint.pt` model, optimizer and RNG states at the last epoch end (for --resume);
- `weights.pt`    the final model weights.

Every file is written to a temporary file in the same directory and renamed over the old one,
so a crash or `kill -9` leaves either the previous complete file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import tomli_w

from .config import Experiment, check_value
from .history import History, metrics

STATUSES = ("running", "finished", "failed", "diverged", "cancelled", "interrupted")
UNFINISHED = ("running", "cancelled", "interrupted")


class StoreError(OSError):
    """The runs directory cannot be used; the message names it and why."""


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through `write(file)` into a temp file beside `path`, fsync, then rename over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def new_run_id() -> str:
    """Sortable by start time; the random tail keeps two simultaneous runs apart."""
    return time.strftime("%Y%m%d-%H%M%S") + f"-{secrets.token_hex(3)}"


@dataclass
class RunRecord:
    """A run on disk, as read back from its summary.json."""

    path: Path
    summary: dict[str, Any]

    @property
    def name(self) -> str:
        name = self.summary.get("name")
        return name if isinstance(name, str) and name else self.path.parent.name

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        status = self.summary.get("status", "interrupted")
        if not isinstance(status, str):
            return "unknown"  # a summary edited by hand: no status this program wrote
        if status == "running":
            pid = self.summary.get("pid")
            # A run marked running whose process is gone was killed mid-run.
            if pid != os.getpid() and not (isinstance(pid, int) and _pid_alive(pid)):
                return "interrupted"
        return status

    def history(self) -> History:
        file = self.path / "history.npz"
        if not file.exists():
            return History()
        with np.load(file) as npz:
            return History.from_arrays(dict(npz))

    def experiment(self) -> Experiment:
        """The resolved experiment this run trained with."""
        import tomllib

        with (self.path / "config.toml").open("rb") as f:
            values = tomllib.load(f)
        clean = {
            k: check_value(k, v) for k, v in values.items() if k in Experiment.__dataclass_fields__
        }
        return Experiment(**clean)

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"


class RunDir:
    """The writer side of one run's directory; used by the engine while it trains."""

    def __init__(self, path: Path, experiment: Experiment, run_id: str) -> None:
        self.path = path
        self.experiment = experiment
        self.run_id = run_id
        self.summary: dict[str, Any] = {
            "name": experiment.name,
            "title": experiment.display_title,
            "group": experiment.group,
            "model": experiment.model,
            "dataset": experiment.dataset,
            "run_id": run_id,
            "status": "running",
            "reason": "",
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "epochs": experiment.epochs,
        }

    def write_config(self) -> None:
        atomic_write_bytes(
            self.path / "config.toml", tomli_w.dumps(self.experiment.settings()).encode()
        )

    def save(self, history: History, status: str | None = None, **fields: Any) -> None:
        """Rewrite history.npz and summary.json with the run's state so far."""
        arrays = history.arrays()
        atomic_write(self.path / "history.npz", lambda f: np.savez(f, **arrays))
        if status is not None:
            self.summary["status"] = status
        self.summary.update(fields)
        m = metrics(history, self.experiment.target_acc, self.summary.get("total_seconds", 0.0))
        self.summary.update({k: _json_safe(v) for k, v in asdict(m).items()})
        self.summary["epochs_done"] = history.epochs_done
        self.summary["batches_done"] = len(history.batch_losses)
        self.summary["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.summary["pid"] = os.getpid()
        data = json.dumps(self.summary, indent=2, ensure_ascii=False).encode()
        atomic_write_bytes(self.path / "summary.json", data)

    def save_torch(self, filename: str, obj: Any) -> None:
        import torch

        atomic_write(self.path / filename, lambda f: torch.save(obj, f))


class RunStore:
    """All runs under one directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def check_writable(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"runs dir {str(self.root)!r} is a file, not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe."):
                pass
        except OSError as e:
            raise StoreError(f"runs dir {str(self.root)!r} is not writable: {e.strerror}") from None

    def create(self, experiment: Experiment) -> RunDir:
        """A fresh directory for a new run of `experiment`, with its config written."""
        check_value("name", experiment.name)  # a name that could leave the runs dir is refused
        base = self.root / experiment.name
        base.mkdir(parents=True, exist_ok=True)
        while True:
            run_id = new_run_id()
            try:
                (base / run_id).mkdir()
                break
            except FileExistsError:
                continue
        run = RunDir(base / run_id, experiment, run_id)
        run.write_config()
        run.save(History())
        return run

    def reopen(self, record: RunRecord) -> RunDir:
        """A writer for an existing run (resume), keeping its summary."""
        run = RunDir(record.path, record.experiment(), record.run_id)
        run.summary.update(record.summary)
        run.summary["status"] = "running"
        run.summary["reason"] = ""
        return run

    def runs(self, name: str | None = None) -> list[RunRecord]:
        """Every readable run (of `name`, if given), oldest first; unreadable ones skipped."""
        if not self.root.is_dir():
            return []
        out: list[RunRecord] = []
        if name is not None:
            check_value("name", name)
        dirs = [self.root / name] if name else sorted(p for p in self.root.iterdir() if p.is_dir())
        for exp_dir in dirs:
            if not exp_dir.is_dir():
                continue
            for run_dir in sorted(exp_dir.iterdir()):
                record = self._read(run_dir)
                if record is not None:
                    out.append(record)
        out.sort(key=lambda r: (str(r.summary.get("started", "")), r.run_id))
        return out

    def iter_latest(self) -> Iterator[RunRecord]:
        """The newest run of each experiment name."""
        latest: dict[str, RunRecord] = {}
        for record in self.runs():
            latest[record.name] = record
        yield from latest.values()

    def latest(self, name: str, unfinished: bool = False) -> RunRecord | None:
        for record in reversed(self.runs(name)):
            if not unfinished or record.status in UNFINISHED:
                return record
        return None

    @staticmethod
    def _read(run_dir: Path) -> RunRecord | None:
        try:
            summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return RunRecord(run_dir, summary) if isinstance(summary, dict) else None
