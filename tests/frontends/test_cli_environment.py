"""`cnntui --list` shows what the latest runs ran with: versions, device model, host."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
import torch

from cnntui.cli import print_list
from cnntui.core.config import load
from cnntui.runs.store import RunStore
from tests.helpers import TINY_TOML, train


@pytest.mark.slow
def test_list_shows_the_latest_runs_versions_device_and_host(tmp_path: Path) -> None:
    (tmp_path / "experiments.toml").write_text(TINY_TOML, "utf-8")
    file = load(tmp_path / "experiments.toml")
    store = RunStore(tmp_path / "runs")
    exp = file.get("alpha")
    list(train(exp, None, store.create(exp)))
    out = io.StringIO()
    print_list(file, out, tmp_path / "runs")
    listed = " ".join(out.getvalue().split())  # wrapped to the terminal: one line to search
    assert f"torch {torch.__version__}" in listed
    assert f"host {socket.gethostname()}" in listed
    assert "(CPU)" in listed
