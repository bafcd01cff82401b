"""A `[[search]]`'s Optuna study, kept in the run store, asked and told over ordinary runs.

One process (the store's scheduler) owns a search: it asks for trials while slots are free
(`SearchStudy.to_ask`, `ask`), queues each as the run of an ordinary Experiment named
`<search>.t<N>` (`attach` records the run's id on the trial), reports the metric after each
epoch (`report`: whether to prune, through the run's normal cancel), and tells how the run
ended (`tell`). When every trial has ended, `confirm` gives the best trial's settings on the
search's `confirm_seeds`.

The study lives in `<runs>/<search>/study.journal`: Optuna's journal file, locked by its
open-file lock (its symlink lock would put links in the store, which the store refuses), and
opened as it is by `optuna-dashboard <that file>`. Each trial holds its run's id as a user
attribute, so a scheduler killed at any point and started again neither loses a trial nor
counts one twice: a trial asked but never attached is attached to its run when the run exists,
else asked again; a trial already told is not told again.

A study is keyed by its space, its fixed settings, its metric, sampler and pruner: only
`trials` and `parallel` may change between two opens; anything else is `SearchChanged`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from ..core.config import SETTING_KEYS, SPEED_KEYS, Experiment, check_value
from ..core.history import History
from ..core.search_space import Param, Search
from .store import RunStore, StoreError

RUN_ID = "cnntui_run_id"  # the user attribute that ties a trial to its run
KEY = "cnntui_key"  # the study's user attribute: what it was begun with (study_key)
# The median pruner prunes nothing before this many trials have ended (Optuna's default is 5,
# which would leave a 6-trial search one chance); a fifth of the trials, at least one.
STARTUP_SHARE = 5


class SearchChanged(StoreError):
    """A search rerun with more changed than `trials` and `parallel`, as one line."""


@dataclass(frozen=True)
class Trial:
    """A trial to train, or training: its number, its run's experiment, its run (if made)."""

    number: int
    experiment: Experiment
    run_id: str | None = None
    value: float | None = None  # the metric it ended with (the best trial's)


def study_key(search: Search[Experiment]) -> dict[str, str]:
    """What a study is kept for: space, fixed settings that change what a run learns, metric,
    sampler, pruner and confirm seeds, each as it reads in a refusal."""
    searched = {p.key for p in search.space}
    key = {k: str(getattr(search, k)) for k in ("metric", "sampler", "pruner", "confirm_seeds")}
    key |= {p.key: p.describe() for p in search.space}
    for name in SETTING_KEYS:
        if name not in searched | SPEED_KEYS | {"seeds"}:
            key[name] = repr(getattr(search.base, name))
    return key


def changes(was: dict[str, str], now: dict[str, str]) -> list[str]:
    """The keys that differ, as `lr: log [0.0001, 0.3] -> log [0.001, 0.3]`."""
    return [
        f"{k}: {was.get(k, 'unset')} -> {now.get(k, 'unset')}"
        for k in sorted(was.keys() | now.keys())
        if was.get(k) != now.get(k)
    ]


def distribution(param: Param) -> BaseDistribution:
    """The Optuna distribution a searched setting samples from."""
    if param.kind == "choice":
        return CategoricalDistribution(param.choices)
    log = param.kind == "log"
    if param.integer:
        return IntDistribution(int(param.low or 0), int(param.high or 0), log=log)
    return FloatDistribution(float(param.low or 0), float(param.high or 0), log=log)


def sampler_options(search: Search[Experiment], seed: int) -> dict[str, Any]:
    """The sampler's keyword arguments: seeded, and TPE's constant liar when trials train in
    parallel (a running trial counts as a poor one, so parallel trials spread out)."""
    if search.sampler == "random":
        return {"seed": seed}
    return {"seed": seed, "constant_liar": search.parallel > 1}


def make_sampler(search: Search[Experiment], seed: int) -> optuna.samplers.BaseSampler:
    """The search's sampler, seeded with `seed`."""
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(**sampler_options(search, seed))
    return optuna.samplers.TPESampler(**sampler_options(search, seed))


def make_pruner(search: Search[Experiment]) -> optuna.pruners.BasePruner:
    """The search's pruner; epochs are its steps (1-based)."""
    if search.pruner == "median":
        startup = max(1, min(5, search.trials // STARTUP_SHARE))
        return optuna.pruners.MedianPruner(n_startup_trials=startup)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=search.base.epochs)
    return optuna.pruners.NopPruner()


def epoch_metric(history: History, metric: str, epoch: int) -> float:
    """The metric (val_acc or val_loss) at a 1-based epoch; NaN where there is none."""
    values: list[float] = getattr(history, metric)
    return values[epoch - 1] if 0 < epoch <= len(values) else math.nan


def final_metric(history: History, metric: str) -> float:
    """What a finished trial is told: its best epoch's metric (the highest val_acc or the
    lowest val_loss, the epoch selected on validation); NaN when no epoch scored one."""
    values = [float(v) for v in getattr(history, metric) if math.isfinite(v)]
    if not values:
        return math.nan
    return max(values) if metric == "val_acc" else min(values)


def _journal(path: str) -> JournalStorage:
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


class SearchStudy:
    """A search's study, opened from (or begun in) the run store."""

    def __init__(self, search: Search[Experiment], store: RunStore) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line a trial is noise here
        self.search, self.store = search, store
        self.path = store.study_path(search.name)
        self.storage = _journal(str(self.path))
        begun = [s.study_name for s in self.storage.get_all_studies()]
        asked = 0
        if search.name in begun:
            sid = self.storage.get_study_id_from_name(search.name)
            asked = len(self.storage.get_all_trials(sid, deepcopy=False))
        # Seeded anew at each open, past the trials asked, so a reopened study does not
        # draw again the points its first trials drew.
        self.study = optuna.create_study(
            storage=self.storage,
            study_name=search.name,
            direction="maximize" if search.maximise else "minimize",
            sampler=make_sampler(search, search.base.seed * 1_000_003 + asked),
            pruner=make_pruner(search),
            load_if_exists=True,
        )
        self.study_id = self.storage.get_study_id_from_name(search.name)
        self._check_key()

    def _check_key(self) -> None:
        now = study_key(self.search)
        was = self.study.user_attrs.get(KEY)
        if was is None:
            self.study.set_user_attr(KEY, now)
        elif was != now:
            raise SearchChanged(
                f"search {self.search.name!r} changed since its study began ("
                f"{'; '.join(changes(was, now))}); only trials and parallel may change "
                f"(start a new search under another name, or remove {self.path})"
            )

    def trials(self) -> list[FrozenTrial]:
        """Every trial of the study, in the order they were asked."""
        return self.study.get_trials(deepcopy=False)

    def _adopt(self) -> list[FrozenTrial]:
        """Attach each running trial without a run to the run made for it, if one was made
        (a scheduler killed between making the run and attaching it); the trials still
        without a run are returned, to be asked again."""
        orphans = []
        for t in self.trials():
            if t.state is TrialState.RUNNING and RUN_ID not in t.user_attrs:
                made = self.store.runs(self.trial_name(t.number))
                if made:
                    self.attach(t.number, made[0].run_id)
                else:
                    orphans.append(t)
        return orphans

    def to_ask(self) -> int:
        """How many trials to ask for now: the free slots of `parallel`, up to `trials` in
        all (trials asked but never queued are asked again first)."""
        orphans = len(self._adopt())
        trials = self.trials()
        running = sum(t.state is TrialState.RUNNING for t in trials)
        new = min(self.search.parallel - running, self.search.trials - len(trials))
        return orphans + max(0, new)

    def ask(self) -> Trial:
        """The next trial to queue as a run: one asked before but never queued, else a new
        one sampled now. `attach` its run's id once the run exists."""
        orphans = self._adopt()
        if orphans:
            return self._trial(orphans[0])
        space = {p.key: distribution(p) for p in self.search.space}
        return self._trial(self.study.ask(space).number)

    def attach(self, number: int, run_id: str) -> None:
        """Record that trial `number` trains as run `run_id`."""
        self.storage.set_trial_user_attr(self._trial_id(number), RUN_ID, run_id)

    def running(self) -> list[Trial]:
        """The trials training (or queued) as runs: the scheduler follows these."""
        self._adopt()
        return [
            self._trial(t)
            for t in self.trials()
            if t.state is TrialState.RUNNING and RUN_ID in t.user_attrs
        ]

    def report(self, run_id: str, epoch: int, value: float) -> bool:
        """Record run `run_id`'s metric at a 1-based epoch; whether the pruner stops it now.
        An epoch reported before (a resumed run) is not recorded again."""
        t = self._by_run(run_id)
        if t is None or t.state.is_finished():
            return False
        trial = optuna.trial.Trial(self.study, self._trial_id(t.number))
        if epoch not in t.intermediate_values:
            trial.report(value, epoch)
        return trial.should_prune()

    def tell(self, run_id: str, outcome: float | str) -> None:
        """How run `run_id` ended: its final metric (see `final_metric`), "pruned" or
        "failed". A trial already told is left as it is; a NaN metric is a failure."""
        t = self._by_run(run_id)
        if t is None or t.state.is_finished():
            return
        if outcome == "pruned":
            self.study.tell(t.number, state=TrialState.PRUNED)
        elif isinstance(outcome, str) or not math.isfinite(outcome):
            self.study.tell(t.number, state=TrialState.FAIL)
        else:
            self.study.tell(t.number, outcome)

    def done(self) -> bool:
        """Whether every trial was asked and has ended: rerunning trains nothing."""
        trials = self.trials()
        return len(trials) >= self.search.trials and all(t.state.is_finished() for t in trials)

    def best(self) -> Trial | None:
        """The trial with the best metric so far; None before one completed."""
        complete = [t for t in self.trials() if t.state is TrialState.COMPLETE]
        if not complete:
            return None
        t = self.study.best_trial
        return dataclasses.replace(self._trial(t), value=t.value)

    def confirm(self) -> list[Experiment]:
        """The best trial's settings on each of `confirm_seeds`, one experiment named
        `<search>.best` (a run per seed); empty without confirm seeds or a best trial."""
        best = self.best()
        seeds = self.search.confirm_seeds
        if best is None or not seeds:
            return []
        return dataclasses.replace(
            best.experiment, name=f"{self.search.name}.best", seed=seeds[0], seeds=seeds
        ).runs()

    def trial_name(self, number: int) -> str:
        """The name of trial `number`'s run: `<search>.t<N>`, N as Optuna numbers it."""
        return f"{self.search.name}.t{number}"

    def _trial(self, t: FrozenTrial | int) -> Trial:
        if isinstance(t, int):
            t = self.study.get_trials(deepcopy=False)[t]
        params = {p.key: check_value(p.key, t.params[p.key]) for p in self.search.space}
        shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
        exp = dataclasses.replace(
            self.search.base,
            **params,
            name=self.trial_name(t.number),
            title=f"{self.search.title} ({shown})" if self.search.title else shown,
            swept=tuple(params),
        )
        return Trial(t.number, exp, t.user_attrs.get(RUN_ID))

    def _by_run(self, run_id: str) -> FrozenTrial | None:
        for t in self.trials():
            if t.user_attrs.get(RUN_ID) == run_id:
                return t
        return None

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)


def _short(value: Any) -> str:
    """A sampled value as a title shows it: 0.0123, 64, adamw."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)
