"""A run's summary.json as a typed record, and the statuses a run can have.

The run store writes a `RunSummary` and reads one back; the tables, exports and front ends
read its attributes. Reading is tolerant: a field of the wrong type reads as absent, with a
note saying so (`RunSummary.from_json`), and a field this version does not know is kept as
written (`extra`), so rewriting a summary never loses it. Torch-free and numpy-free.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """Where a run stands; its value is the string summary.json holds."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    DIVERGED = "diverged"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    PRUNED = "pruned"  # a search's trial its pruner stopped: ended, never a failure
    UNKNOWN = "unknown"  # read only: a summary.json status this program never writes
    STARTING = "starting"  # never written: a front end's run that is setting up in-process

    @classmethod
    def parse(cls, value: object) -> RunStatus:
        """The status a summary value names, UNKNOWN for anything this program never writes."""
        if isinstance(value, RunStatus):
            return value
        return cls(value) if isinstance(value, str) and value in STATUSES else cls.UNKNOWN


# The statuses summary.json may hold.
STATUSES = tuple(s for s in RunStatus if s not in (RunStatus.UNKNOWN, RunStatus.STARTING))
# The groups the front ends and the scheduler ask about, each defined here only.
# A run that stopped before its last epoch and can be resumed (or is still running).
UNFINISHED = (RunStatus.RUNNING, RunStatus.CANCELLED, RunStatus.INTERRUPTED)
# A run that stopped before its last epoch and nothing trains: `--resume` continues it.
RESUMABLE = (RunStatus.INTERRUPTED, RunStatus.CANCELLED)
# A run the scheduler or a trainer holds: queued, or training.
HELD = (RunStatus.QUEUED, RunStatus.RUNNING)
# A run training now, in this process (STARTING: still setting up) or another.
TRAINING = (RunStatus.STARTING, RunStatus.RUNNING)
# A run that trains no more, however it ended.
ENDED = tuple(s for s in STATUSES if s not in HELD)


@dataclass(frozen=True)
class RunSummary:
    """What summary.json says about a run; None where it does not say (or said nonsense)."""

    name: str | None = None
    title: str | None = None
    group: str | None = None
    model: str | None = None
    dataset: str | None = None
    run_id: str | None = None
    status: RunStatus | None = None
    reason: str | None = None
    pid: int | None = None  # the process that trains it (a Ray run: its scheduler)
    started: str | None = None  # local time, 2026-01-31T12:00:00
    epochs: int | None = None  # planned
    seed: int | None = None
    settings_key: str | None = None  # config.learned_key of its settings
    seeds: tuple[int, ...] | None = None  # the experiment's seeds, when it has several
    # The comparison figures (history.Metrics); accuracies are fractions.
    final_test_acc: float | None = None
    best_test_acc: float | None = None
    epoch1_test_acc: float | None = None
    final_train_loss: float | None = None
    final_train_acc: float | None = None
    final_test_loss: float | None = None
    gap: float | None = None
    epochs_to_target: int | None = None
    smoothness: float | None = None
    total_seconds: float | None = None
    seconds_per_epoch: float | None = None
    best_epoch: int | None = None
    best_val_acc: float | None = None
    test_acc_at_best: float | None = None
    epochs_done: int | None = None
    batches_done: int | None = None
    updated: str | None = None  # local time of the last write
    # Written once the run is set up (after its first summary).
    params: int | None = None
    device: str | None = None  # e.g. "cpu (2 threads)"
    train_images: int | None = None
    val_images: int | None = None
    test_images: int | None = None
    batches_per_epoch: int | None = None
    stopped_early: int | None = None  # the 1-based epoch early stopping ended it at
    queue: Mapping[str, Any] | None = None  # how a queued run is launched (lifecycle)
    gpu: int | None = None  # the GPU the scheduler gave it
    node: str | None = None  # the Ray node that trains it
    node_pid: int | None = None
    node_version: str | None = None  # cnntui's version there, when not this one
    model_file: str | None = None  # a user model's file, as the run found it
    model_hash: str | None = None  # the SHA-256 of that file's bytes when the run started
    # The dataset's class names as the run read them (an image folder's folders), so that a
    # moved or renamed folder keeps them in the exports.
    class_names: tuple[str, ...] | None = None
    # Where it ran, so that its result can be trusted later: written by the engine where the
    # run trains (a Ray run: its node), and the experiments file's git state by the store
    # when the run is created. See ENVIRONMENT for how each reads.
    cnntui_version: str | None = None
    python_version: str | None = None
    torch_version: str | None = None
    torchvision_version: str | None = None
    cuda_version: str | None = None  # a CUDA run's: the CUDA torch was built with
    cudnn_version: str | None = None
    device_name: str | None = None  # the GPU's model and memory, or the CPU's model
    host: str | None = None
    git_commit: str | None = None  # HEAD of the repository holding the experiments file
    git_dirty: bool | None = None  # whether its tree had uncommitted changes
    # Fields this version does not know (or of a type it cannot use, for the fields above
    # that were never checked), kept as written so that rewriting the summary keeps them.
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Fields written as null (JSON `null`, not absent), so that they are written so again.
    nulls: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> tuple[RunSummary, list[str]]:
        """The summary a parsed summary.json holds, and a note on each field of the wrong type
        (dropped: it reads as absent)."""
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        nulls: set[str] = set()
        dropped: list[str] = []
        for key, value in raw.items():
            check = _CHECKED.get(key)
            if check is not None:
                ok, value, note = check(key, value)
                if not ok:
                    dropped.append(note)
                    continue
            elif key in _LENIENT:
                ok, value = _LENIENT[key](value)
                if not ok:
                    extra[key] = value  # never checked before: kept as written, unused
                    continue
            else:
                extra[key] = value
                continue
            if value is None:
                nulls.add(key)
            else:
                values[key] = value
        return cls(**values, extra=extra, nulls=frozenset(nulls)), dropped

    def to_json(self) -> dict[str, Any]:
        """The summary as summary.json holds it: plain JSON data, the same keys as read."""
        out: dict[str, Any] = {}
        for name in _FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = _plain(value)
            elif name in self.nulls:
                out[name] = None
            elif name in self.extra:
                out[name] = self.extra[name]
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def with_fields(self, **fields: Any) -> RunSummary:
        """A copy with `fields` set: known ones as attributes (None writes a null), the rest
        into `extra`; a status may be given as its string."""
        known = {k: v for k, v in fields.items() if k in _FIELDS}
        if isinstance(known.get("status"), str):
            known["status"] = RunStatus.parse(known["status"])
        for key in ("seeds", "class_names"):
            if isinstance(known.get(key), list):
                known[key] = tuple(known[key])
        unknown = {k: v for k, v in fields.items() if k not in _FIELDS}
        extra = {k: v for k, v in self.extra.items() if k not in known}
        nulls = (self.nulls - known.keys()) | {k for k, v in known.items() if v is None}
        return dataclasses.replace(
            self, **known, extra={**extra, **unknown}, nulls=frozenset(nulls)
        )

    def merged(self, other: RunSummary) -> RunSummary:
        """A copy that also holds every field `other` holds, `other`'s value where both do."""
        return RunSummary.from_json({**self.to_json(), **other.to_json()})[0]

    def fill_from(self, other: RunSummary) -> RunSummary:
        """A copy that also holds the fields of `other` that this one does not hold."""
        return RunSummary.from_json({**other.to_json(), **self.to_json()})[0]

    def environment(self) -> dict[str, str]:
        """What the run recorded about where it ran, by label (ENVIRONMENT), as shown: only
        what it recorded; a user model's hash under `model file PATH`."""
        out = {}
        for label, key in ENVIRONMENT:
            value = getattr(self, key)
            if isinstance(value, bool):
                out[label] = "yes" if value else "no"
            elif value is not None:
                out[label] = value[:12] if key == "git_commit" else value
        if self.model_hash is not None:
            out[f"model file {self.model_file or self.model}"] = self.model_hash[:12]
        return out

    def field_value(self, name: str) -> object:
        """The value of field `name` (None when absent or unknown): for columns named by field."""
        return getattr(self, name) if name in _FIELDS else None


_FIELDS = tuple(f.name for f in dataclasses.fields(RunSummary) if f.name not in ("extra", "nulls"))
# The environment fields, in the order they are shown, each with its label.
ENVIRONMENT = (
    ("cnntui", "cnntui_version"),
    ("Python", "python_version"),
    ("torch", "torch_version"),
    ("torchvision", "torchvision_version"),
    ("CUDA", "cuda_version"),
    ("cuDNN", "cudnn_version"),
    ("hardware", "device_name"),
    ("host", "host"),
    ("git commit", "git_commit"),
    ("uncommitted changes", "git_dirty"),
)


# --- reading: what each field must be --------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    return repr(value).encode("unicode_escape").decode("ascii")[:40]


def _text(key: str, value: object) -> tuple[bool, object, str]:
    return isinstance(value, str), value, f"{key!r} is {_shown(value)}, not a string"


def _status(key: str, value: object) -> tuple[bool, object, str]:
    ok = value in STATUSES
    return ok, RunStatus(str(value)) if ok else value, f"{key!r} is {_shown(value)}, not a status"


def _whole(key: str, value: object) -> tuple[bool, object, str]:
    return value is None or _is_int(value), value, f"{key!r} is {_shown(value)}, not a whole number"


def _number(key: str, value: object) -> tuple[bool, object, str]:
    if _is_int(value):
        try:
            value = float(value)  # type: ignore[arg-type]
        except OverflowError:
            return False, value, f"{key!r} is too large"
    ok = value is None or isinstance(value, float)
    return ok, value, f"{key!r} is {_shown(value)}, not a number"


def _lenient(kind: Any) -> Any:
    def check(value: object) -> tuple[bool, object]:
        if value is None:
            return True, None
        if kind is int:
            return _is_int(value), value
        return isinstance(value, kind), value

    return check


def _list_of(item: Callable[[object], bool]) -> Callable[[object], tuple[bool, object]]:
    def check(value: object) -> tuple[bool, object]:
        if value is None:
            return True, None
        if isinstance(value, list) and all(item(v) for v in value):
            return True, tuple(value)
        return False, value

    return check


# Fields older versions never checked: one of the wrong type is kept as written in `extra`
# (no note; nothing reads it), as those versions kept it.
_LENIENT = {
    "settings_key": _lenient(str),
    "seeds": _list_of(_is_int),
    "train_images": _lenient(int),
    "test_images": _lenient(int),
    "batches_per_epoch": _lenient(int),
    "queue": _lenient(dict),
    "gpu": _lenient(int),
    "node": _lenient(str),
    "node_pid": _lenient(int),
    "node_version": _lenient(str),
    "model_file": _lenient(str),
    "model_hash": _lenient(str),
    "class_names": _list_of(lambda v: isinstance(v, str)),
    **{key: _lenient(str) for _, key in ENVIRONMENT if key != "git_dirty"},
    "git_dirty": _lenient(bool),
}
# Every other field is checked on reading, by its declared type: one of the wrong type is
# dropped, with a note.
_CHECKS = {str | None: _text, RunStatus | None: _status, int | None: _whole, float | None: _number}
_CHECKED = {
    key: _CHECKS[kind]
    for key, kind in typing.get_type_hints(RunSummary).items()
    if key in _FIELDS and key not in _LENIENT
}


def _plain(value: object) -> object:
    """A field's value as JSON data."""
    if isinstance(value, RunStatus):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value


# --- the queue record: how a queued run is launched -------------------------------------------

QUEUE_EXECUTORS = ("process", "ray")  # who launches a queued run: the scheduler's workers, Ray


@dataclass(frozen=True)
class QueueRecord:
    """How the scheduler launches a queued run (summary.json's `queue`), read and checked
    here only: the front end that queues it writes one, the schedulers and workers read it."""

    executor: str = "process"  # one of QUEUE_EXECUTORS
    device: str = "auto"
    gpus: tuple[int, ...] | None = None  # the GPUs it may use (None: every visible one)
    runs_per_gpu: int = 1
    min_free_gib: float = 0.0
    jobs: int = 1  # CPU slots of the study that queued it
    cpu_share: int = 1  # runs sharing the cores, for its thread count
    resume: bool = False  # it continues an earlier run from its checkpoint
    was: str | None = None  # a resumed run's status before it was queued
    queued_at: str = ""  # time.time() when queued: the queue's order
    # A run for a Ray cluster: which, and what it asks the cluster for.
    cluster: str = ""
    gpu_share: float = 1.0
    num_cpus: int = 1
    retries: int = 1  # times a run whose node died starts again from its checkpoint
    attempt: int = 0  # retries taken so far
    retry_reason: str = ""  # why the last attempt ended

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> tuple[QueueRecord, str | None]:
        """The record `raw` holds, and what is wrong with it (None: nothing): a field of the
        wrong type or an unknown executor, said in one line. The fields that are right are
        kept, so a damaged record can still be shown and failed."""
        values: dict[str, Any] = {}
        problem = None
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                continue
            ok, value = _queue_value(f.name, raw[f.name])
            if ok:
                values[f.name] = value
            elif problem is None:
                problem = f"its queue record's {f.name} is {_shown(raw[f.name])}"
        record = cls(**values)
        if problem is None and record.executor not in QUEUE_EXECUTORS:
            allowed = ", ".join(QUEUE_EXECUTORS)
            problem = f"its queue record names executor {record.executor!r} (allowed: {allowed})"
        return record, problem

    def to_json(self) -> dict[str, Any]:
        """The record as summary.json keeps it (defaults of a local run left out)."""
        out = {k: _plain(v) for k, v in dataclasses.asdict(self).items()}
        if not self.cluster:
            for k in ("cluster", "gpu_share", "num_cpus", "retries", "attempt", "retry_reason"):
                out.pop(k)
        if self.was is None:
            out.pop("was")
        return out


_QUEUE_TYPES = typing.get_type_hints(QueueRecord)  # each field's type, as declared


def _queue_value(key: str, value: object) -> tuple[bool, object]:
    """Whether `value` fits the queue record's field `key`, and the value to keep."""
    if key == "gpus":
        return _list_of(_is_int)(value)
    if key == "was":
        return value is None or isinstance(value, str), value
    kind = _QUEUE_TYPES[key]
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        return _is_int(value), value
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value  # type: ignore[arg-type]
    return isinstance(value, kind), value
