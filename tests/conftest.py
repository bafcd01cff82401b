"""Shared fixtures: small synthetic experiments that train in well under a second."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cnntui.core.config import Experiment


def tiny_experiment(**overrides) -> Experiment:
    """A LeNet on 256 synthetic images, batch 32: two epochs take a fraction of a second."""
    base = Experiment(
        name="tiny",
        title="小实验",
        group="tests",
        dataset="synthetic",
        train_size=256,
        test_size=128,
        batch_size=32,
        epochs=2,
        lr=0.01,
        weight_decay=0.0,
        dropout=0.0,
        device="cpu",
        seed=0,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def tiny() -> Experiment:
    return tiny_experiment()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


TINY_TOML = """\
# a comment the user wrote
[defaults]
dataset = "synthetic"
train_size = 256
test_size = 128
batch_size = 32
epochs = 2
lr = 0.01
device = "cpu"

[[experiment]]
name = "alpha"
title = "甲"
group = "g"

[[experiment]]
name = "beta"
title = "乙"
group = "g"
lr = 0.02
"""


@pytest.fixture
def tiny_toml(tmp_path: Path) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(TINY_TOML, encoding="utf-8")
    return path


def scheduler_pid(store) -> int | None:
    """The pid of the store's running scheduler, or None."""
    from cnntui.runs import daemon as scheduler
    from cnntui.runs import store as st

    if not scheduler.held(store):
        return None
    try:
        return int((store.root / st.SCHEDULER_LOCK).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@pytest.fixture
def study(tiny_toml: Path):
    """The tiny study's folder; afterwards every scheduler and worker it started is gone."""
    import contextlib
    import os
    import signal

    from cnntui.runs.store import RunStore

    yield tiny_toml.parent
    store = RunStore(tiny_toml.parent / "runs")
    pid = scheduler_pid(store)
    if pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for record in store.runs():
        if record.status == "running" and isinstance(record.summary.pid, int):
            with contextlib.suppress(OSError):
                os.kill(record.summary.pid, signal.SIGKILL)
