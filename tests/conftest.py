"""Shared fixtures: small synthetic experiments that train in well under a second."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnntui.core.config import Experiment

from .helpers import TINY_TOML, scheduler_pid, tiny_experiment, warm_pid


@pytest.fixture(autouse=True)
def _short_warm_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Warm processes the tests start (one per run store) exit 5 s after their last run,
    not the default two minutes: a suite makes hundreds of stores."""
    monkeypatch.setenv("CNNTUI_WARM_IDLE", "5")
    # Opening a TUI starts no warm process (the tests that show prewarming set it back).
    monkeypatch.setenv("CNNTUI_PREWARM", "0")


@pytest.fixture
def tiny() -> Experiment:
    return tiny_experiment()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def tiny_toml(tmp_path: Path) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(TINY_TOML, encoding="utf-8")
    return path


@pytest.fixture
def study(tiny_toml: Path):
    """The tiny study's folder; afterwards every scheduler and worker it started is gone."""
    import contextlib
    import os
    import signal

    from cnntui.runs.store import RunStore

    yield tiny_toml.parent
    store = RunStore(tiny_toml.parent / "runs")
    for pid in (scheduler_pid(store), warm_pid(store)):
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    for record in store.runs():
        if record.status == "running" and isinstance(record.summary.pid, int):
            with contextlib.suppress(OSError):
                os.kill(record.summary.pid, signal.SIGKILL)
