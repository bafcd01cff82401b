"""What the tests share: a tiny experiment and study, cnntui as a subprocess, and the
store's scheduler. Fixtures stay in conftest.py; test modules import these from here."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

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


def train(exp, cancel=None, run=None, resume=None, *rest, **options):
    """engine.train, with the run's lock let go when its events end, as its caller does in
    the product (executors.run_one): the engine writes through the run, never releases it."""
    from cnntui.core import engine

    try:
        yield from engine.train(exp, cancel, run, resume, *rest, **options)
    finally:
        if run is not None:
            run.release()


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


def warm_pid(store) -> int | None:
    """The pid of the store's warm process (cnntui.runs.warm), or None when none listens."""
    from cnntui.runs import store as st
    from cnntui.runs import warm

    conn = warm.connect(store.root)
    if conn is None:
        return None
    conn.close()
    try:
        return int((store.root / st.WARM_LOCK).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def scheduler_pid(store) -> int | None:
    """The pid of the store's running scheduler, or None."""
    from cnntui.runs import processes
    from cnntui.runs import store as st

    if not processes.held(store):
        return None
    try:
        return int((store.root / st.SCHEDULER_LOCK).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cnntui(
    *args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnntui", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """cnntui in the background, its output merged; should a wait for a line of it give up,
    its threads' stacks go in the failure message (tests/waiting.py)."""
    return subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "cnntui", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def batch4_run(epochs: int) -> list[str]:
    """2,000 synthetic images at batch 4: 500 batches an epoch, a few seconds each."""
    sets = ["train_size=2000", "test_size=200", "batch_size=4", f"epochs={epochs}"]
    return [arg for item in sets for arg in ("--set", item)]


LONG = batch4_run(200)


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """A process that holds `run_dir`'s lock as a worker training it does, until killed (it
    dies of SIGTERM); returned once the lock is held."""
    from cnntui.runs import store as st
    from tests.waiting import poll

    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir / st.LOCK_FILE)])
    poll(lambda: st.lock_holder(run_dir) is not None, what=f"pid {proc.pid} to lock {run_dir}")
    return proc
