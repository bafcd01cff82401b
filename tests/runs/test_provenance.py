"""What a run records about where it ran, so that its result can be trusted later: the
versions, the device's model, the host, and the experiments file's git commit."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from cnntui import __version__
from cnntui.core.config import load
from cnntui.runs.store import RunStore
from tests.helpers import TINY_TOML, tiny_experiment, train

HAS_GIT = shutil.which("git") is not None


def _summary_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text("utf-8"))


@pytest.mark.slow
def test_a_runs_summary_holds_the_versions_the_device_model_and_the_host(tmp_path) -> None:
    store = RunStore(tmp_path / "runs")
    exp = tiny_experiment(epochs=1, train_size=64, test_size=32)
    run = store.create(exp)
    list(train(exp, None, run))
    raw = _summary_json(run.path)
    assert raw["cnntui_version"] == __version__
    assert raw["python_version"] == platform.python_version()
    assert raw["torch_version"] == str(torch.__version__)
    assert raw["torchvision_version"] == importlib.metadata.version("torchvision")
    assert raw["host"] == socket.gethostname()
    # The CPU's model, named (not the device string "cpu (1 thread)" the summary also keeps).
    assert raw["device_name"].endswith(" (CPU)") and len(raw["device_name"]) > len(" (CPU)")
    assert "cuda_version" not in raw  # a CPU run: no CUDA or cuDNN it could have used
    (record,) = store.runs()
    assert record.summary.torch_version == str(torch.__version__)
    assert record.summary.host == socket.gethostname()


def _git(folder: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(folder)]
    done = subprocess.run([*command, *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.process
@pytest.mark.skipif(not HAS_GIT, reason="git is not installed")
def test_a_run_records_the_experiments_files_commit_and_uncommitted_changes(tmp_path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    (study / "experiments.toml").write_text(TINY_TOML, "utf-8")
    _git(study, "init", "-q")
    _git(study, "add", "experiments.toml")
    _git(study, "commit", "-q", "-m", "study")
    head = _git(study, "rev-parse", "HEAD")
    exp = load(study / "experiments.toml").get("alpha")
    store = RunStore(tmp_path / "runs")
    clean = store.create(exp)
    clean.release()
    (study / "notes.txt").write_text("changed after the commit", "utf-8")
    dirty = store.create(exp)
    dirty.release()
    assert (clean.summary.git_commit, clean.summary.git_dirty) == (head, False)
    assert (dirty.summary.git_commit, dirty.summary.git_dirty) == (head, True)
    assert _summary_json(dirty.path)["git_commit"] == head  # on disk, for a queued run too


def test_outside_a_git_repository_no_commit_is_recorded_and_nothing_fails(tmp_path) -> None:
    (tmp_path / "experiments.toml").write_text(TINY_TOML, "utf-8")
    exp = load(tmp_path / "experiments.toml").get("alpha")
    run = RunStore(tmp_path / "runs").create(exp)
    run.release()
    assert run.summary.git_commit is None and run.summary.git_dirty is None
    assert "git_commit" not in _summary_json(run.path)


def test_without_git_installed_a_run_is_created_all_the_same(tmp_path, monkeypatch) -> None:
    (tmp_path / "experiments.toml").write_text(TINY_TOML, "utf-8")
    exp = load(tmp_path / "experiments.toml").get("alpha")
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    run = RunStore(tmp_path / "runs").create(exp)
    run.release()
    assert run.summary.git_commit is None
