"""`[[search]]` tables: a hyperparameter search's own keys and the space it samples.

A search names how many trials to train, how many at once, the metric it selects on, its
sampler and pruner, and for each searched setting a space: `{ log = [lo, hi] }`,
`{ range = [lo, hi] }` (whole numbers for an integer setting) or `{ choice = [..] }`. Every
other key fixes a setting, as in an `[[experiment]]`; config.py resolves those and hands the
result here as the search's `base`. This module knows no setting's rules itself: config.py
passes its checker in (`check`), so every bound and choice is held to the same rules as a
value written out, and the two modules import in one direction only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

SEARCH_KEYS = (
    "name",
    "group",
    "title",
    "trials",
    "parallel",
    "metric",
    "sampler",
    "pruner",
    "confirm_seeds",
)
METRICS = ("val_acc", "val_loss")  # val_acc is maximised, val_loss minimised
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
TRIALS_MAX = 1_000  # trials one search may train, as many runs as one [[sweep]] may make

Kind = Literal["log", "range", "choice"]
SPACE_KINDS: tuple[Kind, ...] = ("log", "range", "choice")
B = TypeVar("B")  # the fixed settings: config.py's Experiment
At = Callable[[str | None], str]  # a key -> "file:line:col" of it in the search's table
Check = Callable[[str, Any], Any]  # config's checker: the value as its setting holds it


class SearchError(ValueError):
    """A problem with a `[[search]]` table, as one line without its position."""


@dataclass(frozen=True)
class Param:
    """One searched setting and the values it may take."""

    key: str
    kind: Kind
    low: float | int | None = None  # log and range: the bounds, both included
    high: float | int | None = None
    choices: tuple[Any, ...] = ()  # choice: the values, in the file's order
    integer: bool = False  # an integer setting: whole numbers only

    def describe(self) -> str:
        """How the space reads in --list and in a refusal: `log [0.0001, 0.3]`."""
        if self.kind == "choice":
            return f"choice {list(self.choices)}"
        return f"{self.kind} [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Search(Generic[B]):
    """A validated `[[search]]`: its own keys, its space, and the settings it fixes."""

    name: str
    group: str
    title: str
    trials: int  # trials in all, pruned and failed ones included
    parallel: int  # trials training at once
    metric: str  # one of METRICS
    sampler: str  # one of SAMPLERS
    pruner: str  # one of PRUNERS
    confirm_seeds: tuple[int, ...]  # seeds the best trial's settings are retrained on
    space: tuple[Param, ...]
    base: B  # every setting the trials share (named after the search)

    @property
    def maximise(self) -> bool:
        """Whether a larger metric is better (val_acc) or a smaller one (val_loss)."""
        return self.metric == "val_acc"

    def describe(self) -> str:
        """One line for --list: trials, metric and the space."""
        space = ", ".join(f"{p.key} {p.describe()}" for p in self.space)
        return (
            f"search of {self.trials} trials ({self.parallel} at once) on {self.metric}, "
            f"{self.sampler} sampler, {self.pruner} pruner: {space}"
        )


def split_table(
    table: Mapping[str, Any], setting_keys: tuple[str, ...], at: At
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A `[[search]]` table as (its own keys, its searched settings, its fixed settings). A
    table value searches its setting; a key that is neither a search key nor a setting is
    refused at its position."""
    own: dict[str, Any] = {}
    space: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for key, value in table.items():
        if key in SEARCH_KEYS:
            own[key] = value
        elif key not in setting_keys:
            raise SearchError(
                f"{at(key)}: unknown key {key!r} in [[search]]{_hint(key, setting_keys)}"
            )
        elif isinstance(value, dict):
            space[key] = value
        else:
            fixed[key] = value
    if "name" not in own:
        raise SearchError(f"{at(None)}: [[search]] has no 'name'")
    if not space:
        raise SearchError(
            f"{at(None)}: [[search]] {own['name']!r} searches no setting "
            "(e.g. lr = { log = [1e-4, 0.3] })"
        )
    return own, space, fixed


def _hint(key: str, setting_keys: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(key, SEARCH_KEYS + setting_keys, n=1)
    return (
        f" (did you mean {close[0]!r}?)" if close else f" (search keys: {', '.join(SEARCH_KEYS)})"
    )


def parse_param(key: str, spec: Mapping[str, Any], number: str, check: Check) -> Param:
    """One searched setting's space; SearchError (without position) when it is unusable.
    `number`: "int" or "float" for a numeric setting, "" for any other (choice only)."""
    if len(spec) != 1 or next(iter(spec)) not in SPACE_KINDS:
        raise SearchError(
            f"{key!r} = {dict(spec)!r}: give one of {', '.join(SPACE_KINDS)}, e.g. "
            f"{key} = {{ log = [1e-4, 0.3] }}"
        )
    kind: Kind = next(k for k in SPACE_KINDS if k in spec)
    values = spec[kind]
    if not isinstance(values, list):
        raise SearchError(f"{key!r}: {kind} takes a list, got {values!r}")
    if kind == "choice":
        return Param(key, kind, choices=_choices(key, values, check))
    if len(values) != 2:
        raise SearchError(f"{key!r}: {kind} takes [low, high], got {values!r}")
    if not number:
        raise SearchError(f"{key!r} is not a number: search it with {{ choice = [..] }}")
    low, high = (_bound(key, kind, v, check) for v in values)
    if low >= high:
        what = "empty" if low == high else "reversed"
        raise SearchError(
            f"{key!r}: {kind} [{low}, {high}] is {what}; give [low, high], low < high"
        )
    if kind == "log" and low <= 0:
        raise SearchError(f"{key!r}: log [{low}, {high}] touches 0; a log range needs low > 0")
    return Param(key, kind, low, high, integer=number == "int")


def _bound(key: str, kind: str, value: Any, check: Check) -> Any:
    try:
        return check(key, value)
    except ValueError as e:
        raise SearchError(f"{kind} bound of {e}") from None


def _choices(key: str, values: list[Any], check: Check) -> tuple[Any, ...]:
    if not values:
        raise SearchError(f"{key!r}: choice [] holds nothing; give at least two values")
    out = []
    for j, value in enumerate(values):
        try:
            out.append(check(key, value))
        except ValueError as e:
            raise SearchError(f"choice {j + 1} of {key!r}: {e}") from None
    if len(set(map(repr, out))) != len(out):
        raise SearchError(f"{key!r}: choice {values!r} lists a value twice")
    return tuple(out)


def own_keys(own: Mapping[str, Any], val_size: int, at: At) -> dict[str, Any]:
    """The search's own keys, checked (trials, parallel, metric, sampler, pruner,
    confirm_seeds), defaults filled in; `val_size` is the trials': a search needs one."""
    out = dict(parallel=1, metric="val_acc", sampler="tpe", pruner="median", confirm_seeds=())
    out |= {k: v for k, v in own.items() if k not in ("name", "group", "title")}
    for key in ("trials", "parallel"):
        value = out.get(key)
        if key not in out:
            raise SearchError(f"{at(None)}: [[search]] {own['name']!r} has no 'trials'")
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= TRIALS_MAX:
            raise SearchError(
                f"{at(key)}: {key!r} = {value!r} must be an integer in [1, {TRIALS_MAX}]"
            )
    for key, allowed in (("metric", METRICS), ("sampler", SAMPLERS), ("pruner", PRUNERS)):
        if out[key] not in allowed:
            raise SearchError(f"{at(key)}: {key!r} = {out[key]!r}; allowed: {', '.join(allowed)}")
    seeds = out["confirm_seeds"]
    if not isinstance(seeds, list | tuple) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds
    ):
        raise SearchError(f"{at('confirm_seeds')}: 'confirm_seeds' must be a list of seeds >= 0")
    out["confirm_seeds"] = tuple(seeds)
    if val_size <= 0:
        raise SearchError(
            f"{at('metric' if 'metric' in own else None)}: [[search]] {own['name']!r} selects on "
            f"{out['metric']}, which needs a validation split: set val_size > 0"
        )
    return out
