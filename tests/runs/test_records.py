"""A run's summary as a typed record: summary.json reads into a RunSummary and writes back
the same JSON; damaged fields read as absent with a note, unknown ones survive a rewrite."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cnntui.core.history import Metrics
from cnntui.runs.records import STATUSES, RunStatus, RunSummary
from cnntui.runs.store import RunStore, write_summary
from tests.helpers import tiny_experiment

# Every field a summary.json of this version holds, as a finished Ray run writes them.
FULL = {
    "name": "baseline",
    "title": "Baseline 小",
    "group": "g",
    "model": "lenet",
    "dataset": "fashion-mnist",
    "run_id": "20260101-120000-abcdef",
    "status": "finished",
    "reason": "",
    "pid": 4242,
    "started": "2026-01-01T12:00:00",
    "epochs": 3,
    "seed": 1,
    "settings_key": "k123",
    "seeds": [0, 1, 2],
    "final_test_acc": 0.9,
    "best_test_acc": 0.91,
    "epoch1_test_acc": 0.8,
    "final_train_loss": 0.25,
    "final_train_acc": 0.92,
    "final_test_loss": 0.3,
    "gap": 0.02,
    "epochs_to_target": 2,
    "smoothness": 0.01,
    "total_seconds": 12.5,
    "seconds_per_epoch": 4.1,
    "best_epoch": 2,
    "best_val_acc": None,
    "test_acc_at_best": 0.91,
    "epochs_done": 3,
    "batches_done": 1407,
    "updated": "2026-01-01T12:01:00",
    "params": 62006,
    "device": "cuda:0 (NVIDIA H200)",
    "train_images": 60000,
    "val_images": 0,
    "test_images": 10000,
    "batches_per_epoch": 469,
    "stopped_early": 3,
    "queue": {"executor": "ray", "attempt": 1, "retry_reason": "node died"},
    "gpu": None,
    "node": "node-a",
    "node_pid": 77,
    "node_version": "0.9",
}


def test_every_field_of_a_full_summary_reads_typed_and_writes_back_the_same_json() -> None:
    summary, dropped = RunSummary.from_json(FULL)
    assert dropped == []
    assert summary.extra == {}  # every field known: nothing left untyped
    assert summary.status is RunStatus.FINISHED and summary.seeds == (0, 1, 2)
    assert summary.final_test_acc == 0.9 and summary.best_val_acc is None
    assert summary.queue is not None and summary.queue["attempt"] == 1
    assert summary.to_json() == FULL
    assert list(summary.to_json()) == list(FULL)  # in the order a run writes them
    assert RunSummary.from_json(summary.to_json()) == (summary, [])
    # what a user sees in the file: the same text
    text = json.dumps(summary.to_json(), indent=2, ensure_ascii=False)
    assert text == json.dumps(FULL, indent=2, ensure_ascii=False)


def test_every_metric_the_engine_computes_is_a_typed_field() -> None:
    names = {f.name for f in dataclasses.fields(RunSummary)}
    assert {f.name for f in dataclasses.fields(Metrics)} <= names


def test_a_field_of_the_wrong_type_reads_as_absent_with_a_note() -> None:
    raw = {
        "params": "abc",
        "title": 5,
        "final_test_acc": "x",
        "total_seconds": 10**400,
        "epochs_done": True,
        "status": "exploded",
        "reason": None,
        "gap": 1,  # a whole number is a number
    }
    summary, dropped = RunSummary.from_json(raw)
    assert dropped == [
        "'params' is 'abc', not a whole number",
        "'title' is 5, not a string",
        "'final_test_acc' is 'x', not a number",
        "'total_seconds' is too large",
        "'epochs_done' is True, not a whole number",
        "'status' is 'exploded', not a status",
        "'reason' is None, not a string",
    ]
    assert summary.params is None and summary.title is None and summary.status is None
    assert summary.gap == 1.0 and isinstance(summary.gap, float)
    assert summary.to_json() == {"gap": 1.0}


def test_unknown_fields_and_unchecked_odd_values_survive_a_rewrite(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run = store.create(tiny_experiment())
    run.release()
    file = run.path / "summary.json"
    raw = json.loads(file.read_text())
    raw.update(future={"nested": [1, 2]}, gpu="two", seeds="all", comment="by hand")
    file.write_text(json.dumps(raw))

    record = store.latest("tiny")
    assert record is not None and record.dropped == ()
    assert record.summary.gpu is None and record.summary.seeds is None  # unusable: not read
    write_summary(record.path, record.summary.with_fields(reason="edited"))
    again = json.loads(file.read_text())
    for key in ("future", "gpu", "seeds", "comment"):
        assert again[key] == raw[key], key
    assert again["reason"] == "edited"

    # a resume reopens and rewrites it: the fields are still there
    record = store.latest("tiny")
    assert record is not None
    writer = store.reopen(record)
    writer.save_summary("cancelled")
    writer.release()
    again = json.loads(file.read_text())
    assert again["future"] == {"nested": [1, 2]} and again["comment"] == "by hand"
    assert again["status"] == "cancelled"


def test_nulls_stay_nulls_and_absent_fields_stay_absent() -> None:
    summary, _ = RunSummary.from_json({"status": "queued", "pid": None})
    assert summary.to_json() == {"status": "queued", "pid": None}
    running = summary.with_fields(pid=12, gpu=None)
    assert running.to_json() == {"status": "queued", "pid": 12, "gpu": None}
    assert running.with_fields(gpu=1).to_json()["gpu"] == 1


def test_an_old_summary_without_the_newer_fields_reads(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run = store.create(tiny_experiment())
    run.release()
    old = {  # as the first versions wrote it: no seed, settings key, images, batches
        "name": "tiny",
        "model": "lenet",
        "status": "finished",
        "params": 62006,
        "final_test_acc": 0.5,
        "epochs_done": 1,
        "pid": 1,
    }
    (run.path / "summary.json").write_text(json.dumps(old))
    record = store.latest("tiny")
    assert record is not None and record.dropped == ()
    assert record.status is RunStatus.FINISHED
    assert record.summary.final_test_acc == 0.5 and record.summary.train_images is None
    assert record.seed == tiny_experiment().seed  # from its config.toml, as before
    assert record.label == "tiny" and record.settings_key is not None


def test_a_summary_without_a_status_reads_interrupted_and_a_foreign_one_unknown(
    tmp_path: Path,
) -> None:
    store = RunStore(tmp_path / "runs")
    run = store.create(tiny_experiment())
    run.release()
    file = run.path / "summary.json"
    file.write_text(json.dumps({"epochs_done": 0}))
    record = store.latest("tiny")
    assert record is not None and record.status is RunStatus.INTERRUPTED
    file.write_text(json.dumps({"status": "paused"}))
    record = store.latest("tiny")
    assert record is not None and record.status is RunStatus.UNKNOWN
    assert "unknown" not in STATUSES and f"{record.status}" == "unknown"
