"""Fuzzing the run store's files: a recorded run with one of summary.json, history.npz,
checkpoint.pt or config.toml truncated, overwritten, bit-flipped, deleted, or rewritten with
values of the wrong type or arrays of the wrong shape. Listing, the TUI's start, exporting and
--resume must never raise a traceback, and never lose a recorded epoch. Then each file of a
run (and the scheduler's lock) as a symbolic link, a FIFO, a directory or a huge sparse file:
listing, --status, --cancel, exporting and --resume never write outside the store, never
hang, and refuse in one line."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnntui import cli
from cnntui.core import engine
from cnntui.core.events import BatchLosses, Cancelled, Diverged, Failed, Finished
from cnntui.core.history import EPOCH_KEYS
from cnntui.report.export import export_all
from cnntui.runs import lifecycle, processes
from cnntui.runs.executors import run_jobs
from cnntui.runs.store import STATUSES, RunFileError, RunStatus, RunStore, StoreError
from cnntui.tui.session import Session
from cnntui.tui.state import Curve
from cnntui.tui.widgets.results import COLUMNS, cell_value, sort_key
from tests.helpers import tiny_experiment
from tests.waiting import poll

FILES = ("summary.json", "history.npz", "checkpoint.pt", "config.toml")
ARRAY_KEYS = ("batch_losses", "batch_indices", *EPOCH_KEYS)
EXP = tiny_experiment(epochs=3)
FUZZ = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A run store holding one run of EXP cancelled 3 batches into epoch 2."""
    runs = tmp_path_factory.mktemp("template") / "runs"
    store = RunStore(runs)
    cancel = threading.Event()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "FLUSH_SECONDS", 0.0)
        for event in engine.train(EXP, cancel, store.create(EXP)):
            if isinstance(event, BatchLosses) and event.first_index >= 10:
                cancel.set()
    assert store.latest(EXP.name).status == "cancelled"
    return runs


# -- damage ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
toml_values = st.recursive(
    st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
arrays = st.builds(
    lambda shape, dtype: np.ones(shape, dtype=dtype),
    st.lists(st.integers(0, 30), max_size=2).map(tuple),
    st.sampled_from(["f8", "f4", "i8", "u1", "?", "U3", "c16"]),
)


def byte_damage(original: bytes) -> st.SearchStrategy[bytes | None]:
    n = len(original)
    flips = st.lists(st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, 255)), max_size=8)

    def flip(changes: list[tuple[int, int]]) -> bytes:
        data = bytearray(original)
        for at, value in changes:
            if data:
                data[at] = value
        return bytes(data)

    return st.one_of(
        st.none(),  # deleted
        st.integers(0, n).map(lambda k: original[:k]),  # truncated
        st.binary(max_size=200),  # something else entirely
        flips.map(flip),
    )


def typed_damage(name: str, original: bytes) -> st.SearchStrategy[bytes]:
    if name == "summary.json":
        summary = json.loads(original)
        changes = st.dictionaries(
            st.sampled_from(sorted(summary)) | st.text(max_size=6), json_values
        )
        return st.one_of(
            changes.map(lambda c: json.dumps({**summary, **c}).encode()),
            json_values.map(lambda v: json.dumps(v).encode()),
        )
    if name == "config.toml":
        import tomllib

        config = tomllib.loads(original.decode())
        changes = st.dictionaries(
            st.sampled_from(sorted(config)) | st.text(max_size=6), toml_values
        )
        return changes.map(lambda c: tomli_w.dumps({**config, **c}).encode())
    if name == "history.npz":
        with np.load(io.BytesIO(original)) as npz:
            history = dict(npz)
        changes = st.dictionaries(st.sampled_from(ARRAY_KEYS) | st.text(max_size=6), arrays)

        def npz(c: dict) -> bytes:
            buf = io.BytesIO()
            np.savez(buf, **{k: v for k, v in {**history, **c}.items() if k})
            return buf.getvalue()

        return changes.map(npz)
    ckpt = torch.load(io.BytesIO(original), weights_only=True)
    tensors = arrays.filter(lambda a: a.dtype.kind in "fiub").map(torch.from_numpy)
    values = st.one_of(st.integers(-3, 5), st.text(max_size=4), tensors)
    parts = st.sampled_from(["epoch", "model", "optimizer", "scaler", "rng", "history", "x"])

    def save(c: dict, drop: list[str], history: dict) -> bytes:
        new = {k: v for k, v in {**ckpt, **c}.items() if k not in drop}
        if history and isinstance(new.get("history"), dict):
            new["history"] = {**new["history"], **history}
        buf = io.BytesIO()
        torch.save(new, buf)
        return buf.getvalue()

    history_changes = st.dictionaries(st.sampled_from(ARRAY_KEYS), tensors, max_size=2)
    return st.builds(
        save,
        st.dictionaries(parts, values, max_size=2),
        st.lists(parts, max_size=2),
        history_changes,
    )


@contextmanager
def damaged_store(data: st.DataObject, template: Path) -> Iterator[tuple[RunStore, Path, Path]]:
    """A copy of the template store with one of its run's files damaged."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        shutil.copytree(template, runs)
        (run_dir,) = (runs / EXP.name).iterdir()
        name = data.draw(st.sampled_from(FILES), label="file")
        original = (run_dir / name).read_bytes()
        content = data.draw(byte_damage(original) | typed_damage(name, original), label="content")
        if content is None:
            (run_dir / name).unlink()
        else:
            (run_dir / name).write_bytes(content)
        yield RunStore(runs), run_dir, Path(tmp)


def recorded(store: RunStore, run_dir: Path) -> tuple[int, int] | None:
    """(epochs, batches) in the run's history, or None when it cannot be read."""
    record = store.read(run_dir)
    if record is None:
        return None
    try:
        history = record.history()
    except RunFileError as e:
        assert "\n" not in str(e) and str(run_dir / "history.npz") in str(e)
        return None
    return history.epochs_done, len(history.batch_losses)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- properties ------------------------------------------------------------------------------


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_listing_a_damaged_run_never_raises(template: Path, data) -> None:
    with damaged_store(data, template) as (store, run_dir, _):
        records = store.runs()
        for r in records:
            # A status cnntui never writes (null, a number, a word of its own) reads unknown.
            assert r.status in (*STATUSES, RunStatus.UNKNOWN) and r.name == EXP.name
            for get in (r.history, r.experiment):
                try:
                    get()
                except RunFileError as e:
                    message = str(e)
                    assert "\n" not in message and str(run_dir) in message
        cli.results_table(records)
        if records:
            assert store.latest(EXP.name) is not None


@FUZZ
@given(data=st.data())
def test_the_tui_starts_on_a_damaged_run(template: Path, data) -> None:
    with damaged_store(data, template) as (store, _, tmp):
        session = Session(tmp / "experiments.toml", {}, store)
        for record in session.load_past():
            row = replace(record.summary, status=record.status)
            for column in COLUMNS:
                value = cell_value(column.key, row)
                if value is not None:
                    column.show(value)
                sort_key(column.key, row)
            Curve.of(session.stored_history(record), record.name, 60)
        session.resumable(EXP.name)


@pytest.mark.slow
@settings(FUZZ, max_examples=20)
@given(data=st.data())
def test_exporting_a_damaged_run_never_raises(template: Path, data) -> None:
    with damaged_store(data, template) as (store, _, tmp):
        export_all(store, [EXP], tmp / "exports", ("png",), dpi=20)


@pytest.mark.slow
@FUZZ
@given(data=st.data())
def test_resuming_a_damaged_run_never_raises_and_never_loses_an_epoch(template, data) -> None:
    with damaged_store(data, template) as (store, run_dir, tmp):
        before = recorded(store, run_dir)
        files = snapshot(tmp)
        args = argparse.Namespace(resume=True)
        try:
            jobs = cli.plan_jobs(args, store, [EXP], {})
        except cli.UsageError as e:
            assert "\n" not in str(e)
            assert snapshot(tmp) == files  # a refused resume writes nothing
            return
        events = list(run_jobs(jobs, store, threading.Event()))
        assert isinstance(events[-1], Finished | Failed | Cancelled | Diverged)
        after = recorded(store, run_dir)
        if before is not None:
            assert after is not None
            assert after[0] >= before[0] and after[1] >= before[1]
        record = store.read(run_dir)
        assert record is not None and record.status != "running"


# -- file kinds: links, FIFOs, directories, huge sparse files --------------------------------
# Each file cnntui keeps in a run's directory, replaced by something it must neither follow,
# nor wait on, nor read whole. Whatever is asked then, nothing outside the store changes, no
# call hangs (each runs under a deadline), and what is refused is refused in one line.

RUN_FILES = (*FILES, "weights.pt", "lock", "live.f64", "heartbeat", "cancel", "worker.log")
KINDS = (
    "link to a file outside",
    "link to a directory outside",
    "dangling link",
    "FIFO",
    "directory",
    "huge sparse file",
)
HUGE = 1 << 36  # 64 GiB that take no disk: a reader that reads it whole never ends well
LONG_AGO = 946684800  # 2000-01-01: the outside file's mtime, so that a touch would show


@pytest.fixture(scope="module")
def sleeper() -> Iterator[int]:
    """A live process of the test's own, the pid a `running` run names: should anything ever
    signal that pid, it is this `sleep` that goes."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc.pid
    proc.kill()
    proc.wait()


def make_kind(path: Path, kind: str, outside: Path) -> None:
    """Put `kind` where the file `path` was (its bytes, for a huge sparse file)."""
    original = path.read_bytes() if path.is_file() else b""
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "link to a file outside":
        path.symlink_to(outside / "victim")
    elif kind == "link to a directory outside":
        path.symlink_to(outside / "dir", target_is_directory=True)
    elif kind == "dangling link":
        path.symlink_to(outside / "made-by-cnntui")
    elif kind == "FIFO":
        os.mkfifo(path)  # nothing ever opens its other end
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(original)
        os.truncate(path, HUGE)


@contextmanager
def strange_store(
    data: st.DataObject, template: Path, pid: int
) -> Iterator[tuple[RunStore, Path, Path, Callable[[], None]]]:
    """A copy of the template store, the run's summary perhaps saying `running` in `pid`,
    with one of its files of a drawn kind; and a check that nothing outside it changed."""
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        shutil.copytree(template, runs)
        (run_dir,) = (runs / EXP.name).iterdir()
        outside = Path(tmp) / "outside"
        (outside / "dir").mkdir(parents=True)
        (outside / "victim").write_bytes(b"precious\n")
        os.utime(outside / "victim", (LONG_AGO, LONG_AGO))
        if data.draw(st.booleans(), label="running"):
            summary = json.loads((run_dir / "summary.json").read_text())
            summary.update(status="running", pid=pid)
            (run_dir / "summary.json").write_text(json.dumps(summary))
        name = data.draw(st.sampled_from(RUN_FILES), label="file")
        make_kind(run_dir / name, data.draw(st.sampled_from(KINDS), label="kind"), outside)

        def unchanged() -> None:
            victim = outside / "victim"
            assert victim.read_bytes() == b"precious\n" and victim.stat().st_mtime == LONG_AGO
            assert sorted(p.name for p in outside.rglob("*")) == ["dir", "victim"]

        yield RunStore(runs), run_dir, Path(tmp), unchanged


def in_time(action: Callable[[], object]) -> object:
    """`action()`, run where a hang cannot stop the test: it fails if the call has not
    returned by the deadline; what it raised is raised here."""
    out: dict[str, Any] = {}

    def call() -> None:
        try:
            out["value"] = action()
        except BaseException as e:
            out["error"] = e

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    poll(lambda: not thread.is_alive(), what="a call on a store with a FIFO, link or hole")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def one_line(e: Exception) -> None:
    assert str(e) and "\n" not in str(e), repr(e)


@pytest.mark.process
@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_listing_status_and_cancel_never_hang_nor_write_outside(template, sleeper, data) -> None:
    with strange_store(data, template, sleeper) as (store, _, tmp, unchanged):

        def listing() -> None:
            records = store.runs()
            cli.results_table(records)
            lifecycle.status_rows(store)
            for r in records:
                for get in (r.history, r.experiment):
                    with contextlib.suppress(RunFileError):
                        get()
            session = Session(tmp / "experiments.toml", {}, store)  # the TUI's start
            for record in session.load_past():
                Curve.of(session.stored_history(record), record.name, 60)

        in_time(listing)
        args = argparse.Namespace(runs_dir=store.root, cancel=EXP.name)
        for ask in (cli.show_status, cli.cancel_runs):  # --status, --cancel
            try:
                in_time(lambda ask=ask: ask(args, io.StringIO()))
            except cli.UsageError as e:
                one_line(e)
        unchanged()


@pytest.mark.slow
@settings(FUZZ, max_examples=20)
@given(data=st.data())
def test_exporting_never_hangs_nor_writes_outside(template, sleeper, data) -> None:
    with strange_store(data, template, sleeper) as (store, _, tmp, unchanged):
        in_time(lambda: export_all(store, [EXP], tmp / "exports", ("png",), dpi=20))
        unchanged()


@pytest.mark.slow
@settings(FUZZ, max_examples=20)
@given(data=st.data())
def test_resuming_never_hangs_nor_writes_outside_nor_loses_an_epoch(template, sleeper, data):
    with strange_store(data, template, sleeper) as (store, run_dir, _, unchanged):
        before = recorded(store, run_dir)
        args = argparse.Namespace(resume=True)
        try:
            jobs = in_time(lambda: cli.plan_jobs(args, store, [EXP], {}))
        except cli.UsageError as e:
            one_line(e)
            unchanged()
            return
        events = in_time(lambda: list(run_jobs(jobs, store, threading.Event())))
        assert isinstance(events[-1], Finished | Failed | Cancelled | Diverged)
        after = recorded(store, run_dir)
        if before is not None:
            assert after is not None
            assert after[0] >= before[0] and after[1] >= before[1]
        unchanged()


@settings(FUZZ, max_examples=12)
@given(kind=st.sampled_from(KINDS), name=st.sampled_from(["scheduler", "ray-scheduler"]))
def test_a_scheduler_lock_of_any_kind_is_never_followed(kind: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(Path(tmp) / "runs")
        store.root.mkdir()
        outside = Path(tmp) / "outside"
        (outside / "dir").mkdir(parents=True)
        (outside / "victim").write_bytes(b"precious\n")
        os.utime(outside / "victim", (LONG_AGO, LONG_AGO))
        make_kind(store.root / f".{name}.lock", kind, outside)
        try:
            held = in_time(lambda: processes.held(store, f".{name}.lock"))
            assert held is False  # a huge lock file is a lock file: no one holds it
        except StoreError as e:
            one_line(e)
            assert f".{name}.lock is a" in str(e)
        assert (outside / "victim").read_bytes() == b"precious\n"
        assert (outside / "victim").stat().st_mtime == LONG_AGO
        assert sorted(p.name for p in outside.rglob("*")) == ["dir", "victim"]
