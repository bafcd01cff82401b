"""A `[[search]]` run through `cnntui --run SEARCH`: the store's scheduler owns its study,
queues its trials as runs, prunes through the normal cancel, survives `kill -9`, and a rerun of
a finished search trains nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from optuna.trial import TrialState

from cnntui.runs import lifecycle, processes, searches
from cnntui.runs.records import RunStatus
from cnntui.runs.search import read_study
from cnntui.runs.store import RunStore
from tests.helpers import cnntui, scheduler_pid, start
from tests.waiting import poll

DEADLINE = 240.0

# lr 1e-6 cannot learn in 6 epochs: the median pruner stops such a trial once a trial with
# lr 0.1 has ended (one trial ends before it prunes anything in a 4-trial search).
SEARCH_TOML = """\
[defaults]
dataset = "synthetic"
train_size = 1024
test_size = 64
val_size = 128
batch_size = 16
epochs = 6
device = "cpu"
threads = 1

[[search]]
name = "S"
group = "search"
trials = 4
parallel = 1
sampler = "random"
pruner = "median"
lr = { choice = [0.1, 1e-6] }
"""


@pytest.fixture
def study(tmp_path: Path) -> Path:
    (tmp_path / "experiments.toml").write_text(SEARCH_TOML)
    return tmp_path


def trial_statuses(store: RunStore) -> dict[str, RunStatus]:
    return {r.name: r.status for r in searches.trial_runs(store, "S")}


def journal_trials(store: RunStore, trials: int = 4) -> list:
    search = searches.load(store, "S")
    assert search is not None
    study = read_study(store, search[0])
    assert study is not None
    return study.get_trials(deepcopy=False)


@pytest.mark.process
@pytest.mark.slow
def test_a_search_trains_its_trials_as_runs_prunes_the_hopeless_and_a_rerun_trains_nothing(
    study: Path,
) -> None:
    done = cnntui("--run", "S", cwd=study, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    store = RunStore(study / "runs")
    statuses = trial_statuses(store)
    assert sorted(statuses) == ["S.t0", "S.t1", "S.t2", "S.t3"]
    assert RunStatus.PRUNED in statuses.values(), done.stdout
    pruned = [r for r in searches.trial_runs(store, "S") if r.status is RunStatus.PRUNED]
    assert all(r.experiment().lr == 1e-6 for r in pruned)
    assert all(r.summary.reason.startswith("pruned at epoch ") for r in pruned)
    assert "pruned at epoch" in done.stdout  # the attached --run said so as it happened
    assert len(journal_trials(store)) == 4
    assert all(t.state.is_finished() for t in journal_trials(store))
    status = cnntui("--status", cwd=study)
    assert "search S (done, 4 trials)" in status.stdout and "0 to go" in status.stdout
    again = cnntui("--run", "S", cwd=study)
    assert again.returncode == 0
    assert again.stdout.count("\n") == 1 and "nothing to train" in again.stdout
    assert len(store.runs()) == 4  # it trained nothing


@pytest.mark.process
@pytest.mark.slow
def test_set_trials_continues_the_study_and_other_changes_are_refused(study: Path) -> None:
    text = SEARCH_TOML.replace("trials = 4", "trials = 1")
    (study / "experiments.toml").write_text(text)
    assert cnntui("--run", "S", cwd=study, timeout=DEADLINE).returncode == 0
    more = cnntui("--run", "S", "--set", "trials=2", cwd=study, timeout=DEADLINE)
    assert more.returncode == 0, more.stderr
    store = RunStore(study / "runs")
    assert sorted(trial_statuses(store)) == ["S.t0", "S.t1"]  # the same study, one more
    assert len(journal_trials(store)) == 2
    changed = cnntui("--run", "S", "--set", "trials=3", "--set", "epochs=2", cwd=study)
    assert changed.returncode == 2
    assert changed.stderr.count("\n") == 1 and "epochs: 6 -> 2" in changed.stderr


@pytest.mark.process
@pytest.mark.slow
def test_a_search_survives_its_scheduler_killed_with_no_trial_lost_or_counted_twice(
    study: Path,
) -> None:
    detached = cnntui("--run", "S", "--detach", cwd=study)
    assert detached.returncode == 0, detached.stderr
    store = RunStore(study / "runs")
    pid = poll(lambda: scheduler_pid(store), DEADLINE, "the scheduler to start")
    poll(lambda: "S.t1" in trial_statuses(store), DEADLINE, "the second trial to be queued")
    os.kill(pid, signal.SIGKILL)
    poll(lambda: not processes.held(store), DEADLINE, "the killed scheduler's lock to go")
    assert cnntui("--status", cwd=study).returncode == 0  # takes the scheduler over

    def ended() -> bool:
        found = searches.load(store, "S")
        return found is not None and found[1] == "done"

    poll(ended, DEADLINE, "the search to end")
    assert sorted(trial_statuses(store)) == ["S.t0", "S.t1", "S.t2", "S.t3"]
    trials = journal_trials(store)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    runs = [t.user_attrs["cnntui_run_id"] for t in trials]
    assert sorted(runs) == sorted(r.run_id for r in searches.trial_runs(store, "S"))


@pytest.mark.process
@pytest.mark.slow
def test_ctrl_c_cancels_the_search_and_its_trials(study: Path) -> None:
    proc = start("--run", "S", cwd=study)
    store = RunStore(study / "runs")
    poll(lambda: RunStatus.RUNNING in trial_statuses(store).values(), DEADLINE, "a trial to run")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(DEADLINE) == 130
    found = searches.load(store, "S")
    assert found is not None and found[1] == "cancelled"
    poll(
        lambda: all(s is not RunStatus.RUNNING for s in trial_statuses(store).values()),
        DEADLINE,
        "the trials to stop",
    )


@pytest.mark.process
@pytest.mark.slow
def test_a_trial_cancelled_by_hand_counts_as_cancelled_not_failed_and_is_not_asked_again(
    study: Path,
) -> None:
    """`cnntui --cancel S.t0`: the study tells Optuna's FAIL (as Optuna does for a trial its
    user interrupts; TPE learns nothing from it) marked cancelled, the trial still counts
    towards `trials`, and --status says `1 cancelled`, not `1 done`."""
    text = SEARCH_TOML.replace("trials = 4", "trials = 2").replace("epochs = 6", "epochs = 200")
    (study / "experiments.toml").write_text(text.replace('"median"', '"none"'))
    assert cnntui("--run", "S", "--detach", cwd=study).returncode == 0
    store = RunStore(study / "runs")
    poll(lambda: trial_statuses(store).get("S.t0") is RunStatus.RUNNING, DEADLINE, "t0 to run")
    assert cnntui("--cancel", "S.t0", cwd=study).returncode == 0

    def told() -> bool:
        trials = journal_trials(store)
        return len(trials) == 2 and trials[0].state.is_finished()

    try:
        poll(told, DEADLINE, "t0 told and t1 asked")
        trial = journal_trials(store)[0]
        assert trial.state is TrialState.FAIL
        assert trial.user_attrs["cnntui_ended"] == "cancelled"
        status = cnntui("--status", cwd=study).stdout
        assert "search S (active, 2 trials): 0 done, 1 cancelled, 0 pruned, 1 running" in status
        assert "0 to go" in status  # t0 is not asked again
    finally:
        lifecycle.cancel_search(store, "S")
    assert len(journal_trials(store)) == 2
