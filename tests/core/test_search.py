"""`[[search]]`: its parsing and refusals, and its Optuna study driven the way the scheduler
will drive it (ask, queue a run, report each epoch, prune through cancel, tell)."""

from __future__ import annotations

import threading

import pytest

from cnntui.core import config, engine
from cnntui.core.events import Cancelled, EpochEnd
from cnntui.core.history import History
from cnntui.runs.records import ENDED, RunStatus
from cnntui.runs.search import (
    SearchChanged,
    SearchStudy,
    epoch_metric,
    final_metric,
    sampler_options,
)
from cnntui.runs.store import RunStore

SEARCH_TOML = """\
[defaults]
dataset = "synthetic"
train_size = 512
test_size = 64
val_size = 64
batch_size = 16
epochs = 3
device = "cpu"

[[search]]
name = "lrs"
group = "search"
trials = 6
parallel = 1
sampler = "random"
pruner = "median"
lr = { choice = [1e-7, 0.1] }
momentum = { range = [0.5, 0.9] }
"""


def search_of(text: str = SEARCH_TOML, **changes: str) -> config.search_space.Search:
    """The file's one search, with `key = value` lines replaced or added to its table."""
    for key, line in changes.items():
        lines = [x for x in text.splitlines() if not x.startswith(f"{key} =")]
        text = "\n".join(lines) + f"\n{key} = {line}\n"
    return config.parse(text, "e.toml").searches[0]


def refusal(text: str) -> str:
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "e.toml")
    return str(e.value)


# --- the TOML ---------------------------------------------------------------------------


def test_a_search_reads_its_keys_space_and_fixed_settings() -> None:
    s = search_of(lr="{ log = [1e-4, 0.3] }", batch_size="{ choice = [32, 64] }")
    assert (s.name, s.group, s.trials, s.metric, s.sampler) == (
        "lrs",
        "search",
        6,
        "val_acc",
        "random",
    )
    space = {p.key: p for p in s.space}
    assert space["lr"].describe() == "log [0.0001, 0.3]"
    assert space["batch_size"].choices == (32, 64)
    assert space["momentum"].kind == "range" and not space["momentum"].integer
    assert s.base.epochs == 3 and s.base.val_size == 64  # [defaults] fixes the rest
    assert config.parse(SEARCH_TOML, "e.toml").experiments == []  # no run up front


def test_an_integer_setting_searches_whole_numbers() -> None:
    s = search_of(epochs="{ range = [1, 4] }")
    assert next(p for p in s.space if p.key == "epochs").integer


@pytest.mark.parametrize(
    ("key", "line", "says"),
    [
        ("weight_decay", "{ log = [0.0, 0.1] }", "touches 0"),
        ("lr", "{ range = [0.3, 0.1] }", "reversed"),
        ("lr", "{ range = [0.1, 0.1] }", "empty"),
        ("lr", "{ lig = [0.1, 0.3] }", "log, range, choice"),
        ("batch_size", '{ choice = [32, "x"] }', "choice 2 of 'batch_size'"),
        ("batch_size", "{ range = [1.5, 8] }", "must be an integer"),
        ("model", "{ range = [1, 2] }", "not a number"),
        ("trials", "0", "'trials' = 0 must be an integer in [1, 1000]"),
        ("metric", '"test_acc"', "allowed: val_acc, val_loss"),
        ("pruner", '"asha"', "allowed: median, hyperband, none"),
        ("learning_rate", "0.1", "unknown key 'learning_rate'"),
        ("seeds", "[0, 1]", "confirm_seeds"),
    ],
)
def test_a_bad_search_is_one_line_at_its_key(key: str, line: str, says: str) -> None:
    lines = [x for x in SEARCH_TOML.splitlines() if not x.startswith(f"{key} =")]
    message = refusal("\n".join(lines) + f"\n{key} = {line}\n")
    where = f"e.toml:{len(lines) + 1}:1"
    assert message.startswith(where + ":") and says in message and "\n" not in message


def test_a_search_without_a_validation_split_is_refused() -> None:
    message = refusal(SEARCH_TOML.replace("val_size = 64", "val_size = 0"))
    assert message.startswith("e.toml:10:1:") and "val_size > 0" in message


def test_a_search_may_not_take_an_experiments_name() -> None:
    message = refusal(SEARCH_TOML + '\n[[experiment]]\nname = "lrs"\n')
    assert "e.toml:" in message and "a search needs a name of its own" in message


def test_cli_refuses_a_bad_search_with_exit_2(tmp_path, capsys) -> None:
    from cnntui import cli

    path = tmp_path / "e.toml"
    path.write_text(SEARCH_TOML.replace("0.5, 0.9", "0.9, 0.5"))
    assert cli.main(["--config", str(path), "--list"]) == 2
    assert "reversed" in capsys.readouterr().err


# --- the study --------------------------------------------------------------------------


def train_trial(study: SearchStudy, store: RunStore, trial) -> str:
    """Play the scheduler's part for one trial: queue its run, train it reporting each
    epoch, cancel it when the pruner says so, and tell how it ended. The outcome, returned."""
    run = store.create(trial.experiment)
    study.attach(trial.number, run.run_id)
    cancel, history, pruned_at = threading.Event(), History(), 0
    for event in engine.train(trial.experiment, cancel=cancel, run=run):
        if isinstance(event, EpochEnd):
            history.add(event)
            value = epoch_metric(history, study.search.metric, event.epoch + 1)
            if study.report(run.run_id, event.epoch + 1, value):
                pruned_at = event.epoch + 1
                cancel.set()
        if isinstance(event, Cancelled) and pruned_at:
            run.save_summary(RunStatus.PRUNED, reason=f"pruned at epoch {pruned_at}")
    run.release()
    if pruned_at:
        study.tell(run.run_id, "pruned")
        return "pruned"
    study.tell(run.run_id, final_metric(history, study.search.metric))
    return "complete"


def run_search(study: SearchStudy, store: RunStore) -> list[tuple[float, str]]:
    out = []
    while study.to_ask():
        trial = study.ask()
        out.append((trial.experiment.lr, train_trial(study, store, trial)))
    return out


@pytest.mark.slow
def test_the_median_pruner_prunes_trials_that_cannot_learn(tmp_path) -> None:
    store = RunStore(tmp_path / "runs")
    # Half the choices cannot learn; the others train alike (one seed, momentum fixed).
    study = SearchStudy(search_of(momentum="0.9"), store)
    outcomes = run_search(study, store)
    assert len(outcomes) == 6 and study.done()
    pruned = [lr for lr, how in outcomes if how == "pruned"]
    assert pruned and all(lr == 1e-7 for lr in pruned), outcomes
    assert any(how == "complete" and lr == 0.1 for lr, how in outcomes)
    best = study.best()
    assert best is not None and best.experiment.lr == 0.1 and best.value > 0.3
    record = store.runs(study.trial_name(best.number))[0]
    assert record.experiment().lr == 0.1  # its sampled settings are in its config.toml
    shown = [r for r in store.runs() if r.status is RunStatus.PRUNED]
    assert shown and all(r.summary.reason.startswith("pruned at epoch ") for r in shown)
    assert RunStatus.PRUNED in ENDED


def test_sampled_values_stay_inside_their_bounds_and_are_recorded(tmp_path) -> None:
    s = search_of(lr="{ log = [1e-4, 0.3] }", batch_size="{ range = [8, 64] }")
    study = SearchStudy(s, RunStore(tmp_path / "runs"))
    for _ in range(5):
        t = study.ask()
        assert 1e-4 <= t.experiment.lr <= 0.3 and 0.5 <= t.experiment.momentum <= 0.9
        assert isinstance(t.experiment.batch_size, int) and 8 <= t.experiment.batch_size <= 64
        assert t.experiment.name == f"lrs.t{t.number}" and t.experiment.group == "search"


def test_constant_liar_only_when_trials_train_in_parallel() -> None:
    tpe = search_of(sampler='"tpe"')
    assert sampler_options(tpe, 0)["constant_liar"] is False
    assert sampler_options(search_of(sampler='"tpe"', parallel="2"), 0)["constant_liar"] is True


def test_to_ask_fills_the_free_slots_up_to_the_trials(tmp_path) -> None:
    study = SearchStudy(search_of(parallel="2", trials="3"), RunStore(tmp_path / "runs"))
    assert study.to_ask() == 2
    for n, run_id in enumerate(("a", "b")):
        study.attach(study.ask().number, run_id)
        assert study.to_ask() == 1 - n
    study.tell("a", 0.5)
    assert study.to_ask() == 1
    study.attach(study.ask().number, "c")
    study.tell("b", "failed")
    assert study.to_ask() == 0  # three asked: failed ones count


def test_a_killed_scheduler_loses_no_trial_and_tells_none_twice(tmp_path) -> None:
    store = RunStore(tmp_path / "runs")
    s = search_of(trials="3")
    first = SearchStudy(s, store)
    asked = first.ask()  # killed before it queued the run
    del first
    again = SearchStudy(s, store)
    assert again.to_ask() == 1
    assert again.ask().number == asked.number  # asked again, not a new trial
    run = store.create(again.ask().experiment)  # queued, then killed before attaching it
    reopened = SearchStudy(s, store)
    assert [t.run_id for t in reopened.running()] == [run.run_id]  # found by its name
    reopened.tell(run.run_id, 0.4)
    reopened.tell(run.run_id, 0.9)  # a second scheduler's tell for the same run
    assert [t.value for t in SearchStudy(s, store).trials()] == [0.4]


def test_a_finished_search_asks_nothing_and_more_trials_continue_it(tmp_path) -> None:
    store = RunStore(tmp_path / "runs")
    study = SearchStudy(search_of(trials="2", pruner='"none"'), store)
    for run_id in ("a", "b"):
        study.attach(study.ask().number, run_id)
        study.tell(run_id, 0.5)
    again = SearchStudy(search_of(trials="2", pruner='"none"'), store)
    assert again.done() and again.to_ask() == 0
    more = SearchStudy(search_of(trials="4", parallel="2", pruner='"none"'), store)
    assert more.to_ask() == 2 and len(more.trials()) == 2  # the same study, two to go
    assert more.ask().number == 2


def test_a_changed_space_is_refused_naming_the_change(tmp_path) -> None:
    store = RunStore(tmp_path / "runs")
    SearchStudy(search_of(), store)
    with pytest.raises(SearchChanged) as e:
        SearchStudy(search_of(momentum="{ range = [0.5, 0.95] }"), store)
    assert "momentum: range [0.5, 0.9] -> range [0.5, 0.95]" in str(e.value)
    with pytest.raises(SearchChanged, match=r"epochs: 3 -> 5"):
        SearchStudy(search_of(epochs="5"), store)
    assert "\n" not in str(e.value)


def test_the_study_is_a_journal_optuna_opens_as_it_is(tmp_path) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    store = RunStore(tmp_path / "runs")
    study = SearchStudy(search_of(), store)
    study.attach(study.ask().number, "a")
    study.tell("a", 0.7)
    assert study.path == tmp_path / "runs" / "lrs" / "study.journal"
    plain = optuna.load_study(
        study_name="lrs", storage=JournalStorage(JournalFileBackend(str(study.path)))
    )
    assert plain.best_value == 0.7
    assert store.runs() == []  # the study's folder holds no run


def test_confirm_retrains_the_best_trial_on_the_confirm_seeds(tmp_path) -> None:
    study = SearchStudy(search_of(confirm_seeds="[0, 1, 2]"), RunStore(tmp_path / "runs"))
    assert study.confirm() == []
    for run_id, value in (("a", 0.3), ("b", 0.8)):
        study.attach(study.ask().number, run_id)
        study.tell(run_id, value)
    runs = study.confirm()
    best = study.best()
    assert best is not None and best.value == 0.8
    assert [r.seed for r in runs] == [0, 1, 2] and {r.name for r in runs} == {"lrs.best"}
    assert all(r.lr == best.experiment.lr for r in runs)


def test_list_shows_a_search_its_trials_and_a_pruned_one(tmp_path, capsys) -> None:
    from cnntui import cli
    from tests.helpers import tiny_experiment

    path = tmp_path / "e.toml"
    path.write_text(SEARCH_TOML)
    store = RunStore(tmp_path / "runs")
    for n, status in ((0, RunStatus.FINISHED), (1, RunStatus.PRUNED)):
        run = store.create(tiny_experiment(name=f"lrs.t{n}"))
        run.save_summary(status, epochs_done=1, best_val_acc=0.5)
        run.release()
    assert cli.main(["--config", str(path), "--runs-dir", str(store.root), "--list"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "[[search]] lrs (search): search of 6 trials" in shown
    assert "lr choice [1e-07, 0.1]" in shown
    assert "1 done, 1 pruned, 0 running, 4 to go; best so far lrs.t0 val_acc 50.0%" in shown
    assert cli.latest_status(store.runs("lrs.t1")[0]) == "pruned at epoch 1"


def test_the_tui_shows_a_pruned_run_as_pruned_at_its_epoch(tmp_path) -> None:
    from cnntui.tui.widgets.experiments import _stored_status
    from tests.helpers import tiny_experiment

    store = RunStore(tmp_path / "runs")
    run = store.create(tiny_experiment(name="lrs.t3"))
    run.save_summary(RunStatus.PRUNED, epochs_done=2)
    run.release()
    assert _stored_status(store.runs()[0]).plain == "pruned at epoch 2"


def test_a_setting_added_since_a_study_began_changes_nothing_while_it_keeps_its_default() -> None:
    """A study keyed before a release added a setting (its key lacks it) is the same study
    for the new release, as long as the new setting keeps its default; a real change is
    still named."""
    from cnntui.runs.search import changes

    was = {"lr": "0.001", "momentum": "0.9"}  # written before `image_size` existed
    now = {"lr": "0.001", "momentum": "0.9", "image_size": "None", "model_args": "()"}
    assert changes(was, now) == []
    assert changes(was, {**now, "image_size": "16"}) == ["image_size: None -> 16"]
