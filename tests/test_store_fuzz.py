"""Fuzzing the run store's files: a recorded run with one of summary.json, history.npz,
checkpoint.pt or config.toml truncated, overwritten, bit-flipped, deleted, or rewritten with
values of the wrong type or arrays of the wrong shape. Listing, the TUI's start, exporting and
--resume must never raise a traceback, and never lose a recorded epoch."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnntui import cli, engine
from cnntui.events import BatchLosses, Cancelled, Diverged, Failed, Finished
from cnntui.export import export_all
from cnntui.history import EPOCH_KEYS
from cnntui.runner import run_jobs
from cnntui.store import STATUSES, RunFileError, RunStatus, RunStore
from cnntui.tui.session import Session
from cnntui.tui.state import Curve
from cnntui.tui.widgets.results import COLUMNS, cell_value, sort_key
from tests.conftest import tiny_experiment

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


@settings(FUZZ, max_examples=20)
@given(data=st.data())
def test_exporting_a_damaged_run_never_raises(template: Path, data) -> None:
    with damaged_store(data, template) as (store, _, tmp):
        export_all(store, [EXP], tmp / "exports", ("png",), dpi=20)


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
