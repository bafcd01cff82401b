"""A run as a Ray node receives it (store.RunOutbox from RunDir.state): the experiment it
trains is the one queued, a user model's arguments and the experiments file's folder kept."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cnntui.runs.store import RunOutbox, RunStore
from tests.helpers import tiny_experiment


def test_a_node_gets_the_queued_experiment_with_model_args_and_base_dir(tmp_path: Path) -> None:
    (tmp_path / "mynet.py").write_text("def Net(width=4):\n    pass\n")
    exp = dataclasses.replace(
        tiny_experiment(),
        model="mynet.py:Net",
        model_args=(("width", 8),),
        base_dir=str(tmp_path),
    )
    run = RunStore(tmp_path / "runs").create(exp)
    try:
        there = RunOutbox(run.state())
    finally:
        run.release()
    assert there.experiment == run.experiment
    assert there.experiment.model_args == (("width", 8),)
    assert there.experiment.base_dir == str(tmp_path)
    assert there.summary.model_hash == run.summary.model_hash
