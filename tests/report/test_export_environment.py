"""results.md says what the runs it reports ran with, and when they disagree on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnntui.report.export import export_all
from cnntui.runs.store import RunStore
from tests.helpers import tiny_experiment, train

ENVIRONMENT_KEYS = (
    "cnntui_version",
    "python_version",
    "torch_version",
    "torchvision_version",
    "device_name",
    "host",
)


def _edit_summary(run_dir: Path, **changes: object) -> None:
    path = run_dir / "summary.json"
    raw = json.loads(path.read_text("utf-8"))
    raw.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del raw[key]
    path.write_text(json.dumps(raw), "utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two experiments of one group, one short run each."""
    root = tmp_path_factory.mktemp("env")
    store = RunStore(root / "runs")
    exps = [
        tiny_experiment(name=n, group="g", epochs=1, train_size=64, test_size=32)
        for n in ("a", "b")
    ]
    dirs = []
    for exp in exps:
        run = store.create(exp)
        list(train(exp, None, run))
        dirs.append(run.path)
    return store, exps, dirs


def _results_md(store, exps, out: Path) -> str:
    export_all(store, exps, out, dpi=20)
    return (out / "g" / "results.md").read_text("utf-8")


@pytest.mark.slow
def test_results_md_names_the_environment_the_runs_agree_on(trained, tmp_path) -> None:
    store, exps, _ = trained
    md = _results_md(store, exps, tmp_path / "out")
    assert f"torch {torch.__version__}" in md
    assert "Runs differ" not in md


@pytest.mark.slow
def test_results_md_says_when_its_runs_differ_in_torch(trained, tmp_path) -> None:
    store, exps, dirs = trained
    _edit_summary(dirs[1], torch_version="2.13.0")
    try:
        md = _results_md(store, exps, tmp_path / "out")
    finally:
        _edit_summary(dirs[1], torch_version=str(torch.__version__))
    # The most common value first; a tie in the order of the values.
    assert f"Runs differ in torch (2.13.0 on 1 run, {torch.__version__} on 1)" in md
    # What they agree on is still said once; torch is not among it.
    (line,) = [x for x in md.splitlines() if x.startswith("- **Environment**")]
    assert "Python" in line and "torch " not in line


@pytest.mark.slow
def test_runs_that_recorded_no_environment_export_as_before(trained, tmp_path) -> None:
    store, exps, dirs = trained
    keep = [json.loads((d / "summary.json").read_text("utf-8")) for d in dirs]
    for d in dirs:
        _edit_summary(d, **dict.fromkeys(ENVIRONMENT_KEYS))
    try:
        md = _results_md(store, exps, tmp_path / "out")
    finally:
        for d, raw in zip(dirs, keep, strict=True):
            (d / "summary.json").write_text(json.dumps(raw), "utf-8")
    assert "Environment" not in md and "Runs differ" not in md


def test_a_user_model_beside_a_built_in_one_is_no_disagreement() -> None:
    """A group comparing LeNet with a model of the user's: the model file is each
    experiment's own setting, not where the runs ran, so no "Runs differ in model file"."""
    from cnntui.report.tables import environment_notes

    lenet = {"torch": "2.14.1", "host": "vm"}
    mine = {**lenet, "model file /tmp/ex/models.py": "58758b130ee2"}
    notes = environment_notes([("a", lenet), ("b", mine)])
    assert notes == ["environment (all 2 runs): torch 2.14.1, host vm."]
