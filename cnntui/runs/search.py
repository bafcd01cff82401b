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

import contextlib
import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
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

from ..core.config import SETTING_KEYS, SPEED_KEYS, Experiment, Settings, check_value
from ..core.history import History
from ..core.search_space import Param, Search
from . import lifecycle, searches
from . import store as st
from .records import ENDED, HELD, RunStatus
from .searches import final_metric
from .store import RunStore, StoreError

RUN_ID = "cnntui_run_id"  # the user attribute that ties a trial to its run
# The user attribute that says why a trial told FAIL ended: "cancelled" when its user stopped
# it. Optuna tells FAIL for a trial its user interrupts (Ctrl-C in `optimize`), and its
# samplers learn nothing from FAIL; PRUNED would tell TPE the point is a poor one, which a
# user's cancel does not say.
ENDED_BY = "cnntui_ended"
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
    """The keys that differ, as `lr: log [0.0001, 0.3] -> log [0.001, 0.3]`. A setting one
    side does not name reads as its default: a study begun before a new setting existed is
    the same study while that setting keeps its default."""
    default = Settings()
    out = []
    for k in sorted(was.keys() | now.keys()):
        fallback = repr(getattr(default, k)) if k in SETTING_KEYS else "unset"
        before, after = was.get(k, fallback), now.get(k, fallback)
        if before != after:
            out.append(f"{k}: {before} -> {after}")
    return out


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
        _check_unchanged(self.study, search, self.path)
        if KEY not in self.study.user_attrs:
            self.study.set_user_attr(KEY, study_key(search))

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
        return self._with_runs(TrialState.RUNNING)

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
        """How run `run_id` ended: its final metric (see `final_metric`), "pruned",
        RunStatus.CANCELLED (by its user: FAIL, marked so) or "failed". A trial already told is left
        as it is; a NaN metric is a failure. Each counts towards `trials`: none is asked
        again."""
        t = self._by_run(run_id)
        if t is None or t.state.is_finished():
            return
        if outcome == "pruned":
            self.study.tell(t.number, state=TrialState.PRUNED)
        elif outcome is RunStatus.CANCELLED:
            self.storage.set_trial_user_attr(self._trial_id(t.number), ENDED_BY, outcome.value)
            self.study.tell(t.number, state=TrialState.FAIL)
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

    def reported(self, run_id: str) -> int:
        """The last epoch run `run_id`'s trial has reported (0: none)."""
        t = self._by_run(run_id)
        return max(t.intermediate_values, default=0) if t is not None else 0

    def pruned(self) -> list[Trial]:
        """The trials the pruner stopped, each with its run."""
        return self._with_runs(TrialState.PRUNED)

    def _with_runs(self, state: TrialState) -> list[Trial]:
        return [
            self._trial(t) for t in self.trials() if t.state is state and RUN_ID in t.user_attrs
        ]

    def _by_run(self, run_id: str) -> FrozenTrial | None:
        return next((t for t in self.trials() if t.user_attrs.get(RUN_ID) == run_id), None)

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)


def read_study(store: RunStore, search: Search[Experiment]) -> optuna.Study | None:
    """The search's study as stored, for a front end that only reads it; None before it began.
    SearchChanged when the search now differs in more than trials and parallel."""
    path = store.study_path(search.name)
    if not path.exists():
        return None
    storage = _journal(str(path))
    if search.name not in [s.study_name for s in storage.get_all_studies()]:
        return None
    study = optuna.load_study(study_name=search.name, storage=storage)
    _check_unchanged(study, search, path)
    return study


def _check_unchanged(study: optuna.Study, search: Search[Experiment], path: Path) -> None:
    """SearchChanged when the study was begun for a search that differs from `search` in more
    than trials and parallel."""
    was = study.user_attrs.get(KEY)
    differ = changes(was, study_key(search)) if was is not None else []
    if differ:
        raise SearchChanged(
            f"search {search.name!r} changed since its study began ({'; '.join(differ)}); "
            "only trials and parallel may change "
            f"(start a new search under another name, or remove {path})"
        )


def finished_line(store: RunStore, search: Search[Experiment]) -> str | None:
    """One line saying the search has nothing left to train (every trial asked has ended), or
    None when it has trials to train. SearchChanged as `read_study`."""
    study = read_study(store, search)
    if study is None:
        return None
    trials = study.get_trials(deepcopy=False)
    if len(trials) < search.trials or not all(t.state.is_finished() for t in trials):
        return None
    pruned = sum(t.state is TrialState.PRUNED for t in trials)
    cancelled = sum(t.user_attrs.get(ENDED_BY) == RunStatus.CANCELLED for t in trials)
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    best = ""
    if complete:
        b = study.best_trial
        best = f"; best {search.name}.t{b.number} {search.metric} {b.value:.4g}"
    ended = f"{searches.cancelled_text(cancelled, ', ')}{pruned} pruned"
    return (
        f"search {search.name}: all {len(trials)} trials ended ({ended}){best}; "
        f"nothing to train (--set trials=N with N > {len(trials)} trains more)"
    )


def queue(store: RunStore, search: Search[Experiment]) -> str | None:
    """Queue `search` in the store for its scheduler, which owns its study (`--run SEARCH`
    and `r` in the TUI): its record is written active and the scheduler started. Returns the
    line saying it has nothing left to train (then nothing is queued), else None.
    SearchChanged (a rerun that changed more than trials and parallel) or StoreError."""
    done = finished_line(store, search)
    if done is None:
        searches.save(store, search, "active")
        lifecycle.ensure_scheduler(store)
    return done


class SearchDriver:
    """The store's scheduler's part in its searches (one process owns every study): for each
    active search, each step it reports the trials' new epochs (read from their runs' files),
    prunes through the normal cancel, tells each ending, asks and queues new trials while
    slots are free, and queues the confirmation runs once every trial has ended."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.studies: dict[str, SearchStudy] = {}
        self.marked: set[str] = set()  # runs written `pruned` by this process

    def step(self) -> bool:
        """One round over the active searches; False when none is active."""
        active = searches.active(self.store)
        for search in active:
            try:
                self._step_one(search)
            except SearchChanged as e:  # its record rewritten by hand: not this study's
                print(f"cnntui scheduler: {e}", file=sys.stderr, flush=True)
                searches.save(self.store, search, "cancelled")
        return bool(active)

    def _study(self, search: Search[Experiment]) -> SearchStudy:
        """The search's study, opened once, and again when trials or parallel changed."""
        study = self.studies.get(search.name)
        if study is None or study.search != search:
            study = self.studies[search.name] = SearchStudy(search, self.store)
        return study

    def _step_one(self, search: Search[Experiment]) -> None:
        study = self._study(search)
        for trial in study.running():
            self._follow(study, trial)
        self._end_pruned(study)
        queued = False
        while study.to_ask() > 0:
            trial = study.ask()
            (record,) = lifecycle.submit(self.store, [trial.experiment], jobs=search.parallel)
            study.attach(trial.number, record.run_id)
            queued = True
        if study.done():
            queued |= self._confirm(study)
            searches.save(self.store, search, "done")
        if queued:
            lifecycle.ensure_scheduler(self.store)  # a trial on a Ray cluster: its scheduler

    def _run(self, study: SearchStudy, trial: Trial) -> st.RunRecord | None:
        runs = self.store.runs(study.trial_name(trial.number))
        return next((r for r in runs if r.run_id == trial.run_id), None)

    def _follow(self, study: SearchStudy, trial: Trial) -> None:
        """Report a running trial's new epochs, prune it if its pruner says so, tell its end."""
        record = self._run(study, trial)
        if record is None or trial.run_id is None:
            return
        run_id, metric = trial.run_id, study.search.metric
        done = record.summary.epochs_done or 0
        reported = study.reported(run_id)
        history = record.history() if done > reported or record.status in ENDED else None
        for epoch in range(reported + 1, done + 1) if history is not None else ():
            value = epoch_metric(history, metric, epoch)  # type: ignore[arg-type]
            pruned = math.isfinite(value) and study.report(run_id, epoch, value)
            if pruned and record.status in HELD:
                study.tell(run_id, "pruned")
                self._stop(record)
                return
        if record.status is RunStatus.FINISHED and history is not None:
            study.tell(run_id, final_metric(history, metric))
        elif record.status is RunStatus.PRUNED:
            study.tell(run_id, "pruned")
        elif record.status is RunStatus.CANCELLED:  # its user stopped it (`--cancel`, `c`)
            study.tell(run_id, RunStatus.CANCELLED)
        elif record.status in ENDED:
            study.tell(run_id, "failed")

    def _stop(self, record: st.RunRecord) -> None:
        """Cancel a pruned trial's run through the normal cancel path."""
        with contextlib.suppress(StoreError):  # it ended meanwhile
            lifecycle.cancel(self.store, record.run_id)

    def _end_pruned(self, study: SearchStudy) -> None:
        """Each pruned trial's run: asked to stop while it trains, then written `pruned at
        epoch N` once it has stopped (a scheduler killed in between does it on restart)."""
        for trial in study.pruned():
            if trial.run_id is None or trial.run_id in self.marked:
                continue
            record = self._run(study, trial)
            if record is None or record.status is RunStatus.PRUNED:
                self.marked.add(trial.run_id)
            elif record.status in HELD:
                if not record.cancel_requested():
                    self._stop(record)
            elif _mark_pruned(record, study.reported(trial.run_id)):
                self.marked.add(trial.run_id)

    def _confirm(self, study: SearchStudy) -> bool:
        """Queue the best trial's confirmation runs, once (they may exist from before a
        restart); whether any was queued."""
        runs = study.confirm()
        if not runs or self.store.runs(f"{study.search.name}.best"):
            return False
        lifecycle.submit(self.store, runs, jobs=study.search.parallel)
        return True


def _mark_pruned(record: st.RunRecord, epoch: int) -> bool:
    """Write an ended run's status `pruned`, its reason `pruned at epoch N`; False when its
    lock is held (try again next round)."""
    lock = st.try_lock(record.path)
    if lock is None:
        return False
    try:
        summary = record.summary.with_fields(
            status=RunStatus.PRUNED, reason=f"pruned at epoch {epoch}"
        )
        st.write_summary(record.path, summary)
        return True
    finally:
        lock.release()


def _short(value: Any) -> str:
    """A sampled value as a title shows it: 0.0123, 64, adamw."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)
