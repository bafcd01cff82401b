"""experiments.toml: parse, validate and resolve experiments into frozen dataclasses.

This module owns the file format and every rule about what a setting may hold. Loading is
strict: any problem raises `ConfigError`, whose message is one line that names the file, the
line and column where they can be known, the key, and what is allowed. It imports neither
torch nor textual, so the CLI's `--help` and `--list` stay instant.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import folder, search_space, user_model
from .settings import ADDED_LATER, check_new, declared, suggest
from .settings import EXPERIMENT_KEYS as EXPERIMENT_KEYS
from .settings import IDENTITY_KEYS as IDENTITY_KEYS
from .settings import LIST_SETTINGS as LIST_SETTINGS
from .settings import SETTING_KEYS as SETTING_KEYS
from .settings import SPEED_KEYS as SPEED_KEYS
from .settings import ConfigError as ConfigError
from .settings import Experiment as Experiment
from .settings import Settings as Settings
from .settings import check_value as check_value
from .settings import gpu_list as gpu_list

# CIFAR-100's 100 fine labels, in label order (its `meta` file lists them alphabetically).
_CIFAR100_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach "
    "couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster "
    "house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree "
    "motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear "
    "pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road "
    "rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel "
    "streetcar sunflower sweet_pepper table tank telephone television tiger tractor train "
    "trout tulip turtle wardrobe whale willow_tree wolf woman worm"
)
# What each label means, in label order (the datasets' own documentation).
CLASS_NAMES = {
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
    "fashion-mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    "mnist": tuple("0123456789"),
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    "svhn": tuple("0123456789"),  # the files' label 10 is the digit 0
    "cifar100": tuple(_CIFAR100_NAMES.split()),
}


# Each named set as its files hold it: image shape (channels, height, width), classes, and
# train / test images in the whole dataset (the synthetic one is generated at the size asked,
# these by default).
_NAMED_SETS = {
    "cifar10": ((3, 32, 32), 10, 50_000, 10_000),
    "fashion-mnist": ((1, 28, 28), 10, 60_000, 10_000),
    "synthetic": ((3, 32, 32), 10, 50_000, 10_000),
    "mnist": ((1, 28, 28), 10, 60_000, 10_000),
    "kmnist": ((1, 28, 28), 10, 60_000, 10_000),
    "cifar100": ((3, 32, 32), 100, 50_000, 10_000),
    "svhn": ((3, 32, 32), 10, 73_257, 26_032),
}
SHAPES = {name: (shape, classes) for name, (shape, classes, *_) in _NAMED_SETS.items()}
# The images a run used when its summary predates recording them.
FULL_SIZES = {name: (train, test) for name, (*_, train, test) in _NAMED_SETS.items()}


def available_memory() -> int | None:
    """Bytes of memory this machine can give a new dataset now (Linux's MemAvailable, else
    the free pages); None where it cannot be told."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{math.ceil(n / 2**20)} MiB"


def check_memory(exp: Settings, base_dir: str = "") -> None:
    """ConfigError when the images `exp`'s dataset decodes on loading (uint8, train and test)
    cannot fit in the memory available now: said before anything is loaded. A named set is
    decoded whole (train_size and test_size take their share after); the synthetic one at the
    sizes asked; an image folder whole, at image_size. A Ray run loads a named set on its
    nodes, not here."""
    if getattr(exp, "cluster", "") and not folder.is_folder(exp.dataset):
        return
    if folder.is_folder(exp.dataset):
        try:
            layout = folder.scan(exp.dataset, base_dir)
            shape = folder.image_shape(layout, exp.image_size)
        except folder.FolderError:
            return  # said where the folder is checked
        images = len(layout.train) + len(layout.test)
        fix = "lower image_size (or use fewer images)"
    elif exp.dataset == "synthetic":
        shape = SHAPES[exp.dataset][0]
        images = sum(images_used(exp.dataset, exp.train_size, exp.test_size))
        fix = "lower train_size / test_size"
    elif exp.dataset in SHAPES:
        shape = SHAPES[exp.dataset][0]
        images = sum(FULL_SIZES[exp.dataset])
        fix = (
            "its files are decoded whole, train_size and test_size take their share after: "
            "free memory or use a smaller dataset"
        )
    else:
        return
    need, free = images * math.prod(shape), available_memory()
    if free is None or need <= free:
        return
    c, h, w = shape
    raise ConfigError(
        f"'dataset' = {exp.dataset!r} needs {_mib(need)} of memory decoded ({images:,} images "
        f"of {c} x {h} x {w}), and {_mib(free)} is available; {fix}"
    )


def images_used(
    dataset: str, train_size: int | None, test_size: int | None, base_dir: str = ""
) -> tuple[int, int]:
    """The train and test images a run with these settings uses: the sizes cap the dataset
    (an image folder's PATH is found from `base_dir`)."""
    full_train, full_test = FULL_SIZES.get(dataset, (0, 0))
    if folder.is_folder(dataset):  # counted in the folder as it is now
        full_train, full_test = folder.counts(dataset, base_dir)
    if dataset == "synthetic":  # generated at the size asked for
        return train_size or full_train, test_size or full_test

    def cap(size: int | None, full: int) -> int:
        return full if size is None or not full else min(size, full)

    return cap(train_size, full_train), cap(test_size, full_test)


def class_names(
    dataset: str, classes: int = 10, recorded: tuple[str, ...] | None = None, base_dir: str = ""
) -> tuple[str, ...]:
    """The names of a dataset's labels: those a run `recorded`, else the dataset's own (an
    image folder's, PATH from `base_dir`, as it is now); "class 0", ... where it has none."""
    names = recorded or (
        folder.class_names(dataset, base_dir)
        if folder.is_folder(dataset)
        else CLASS_NAMES.get(dataset)
    )
    if names and len(names) == classes:
        return names
    return tuple(f"class {i}" for i in range(classes))


MAX_FILE_BYTES = 1 << 20  # an experiments file is a few kilobytes; refuse to read past 1 MiB
SWEEP_MAX_RUNS = 1_000  # runs one [[sweep]] may make (its grid times its seeds)
FILE_MAX_RUNS = 10_000  # runs one experiments file may make, sweeps and seeds included
UNGROUPED = "ungrouped"  # the exports folder of the experiments that name no group


def learned_key(exp: Settings) -> str:
    """A short fingerprint of what a run learns (every setting but the speed ones and the
    seed): runs with equal keys are seeds of one configuration."""
    import hashlib
    import json

    default = Settings()
    learned = {
        k: getattr(exp, k)
        for k in SETTING_KEYS
        if k not in SPEED_KEYS | {"seed", "seeds"}
        # A setting added after runs were stored counts only once it leaves its default, so
        # those runs stay seeds of the configuration they were.
        and not (k in ADDED_LATER and getattr(exp, k) == getattr(default, k))
    }
    return hashlib.sha1(json.dumps(learned, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class ExperimentFile:
    """A loaded experiments.toml."""

    path: Path
    defaults: Settings
    experiments: list[Experiment] = field(default_factory=list)
    searches: list[search_space.Search[Experiment]] = field(default_factory=list)
    # Where each user model's experiment sets `model` and `model_args`, as `file:line:col`:
    # experiment name -> key -> position, for the checks that build the model.
    model_at: dict[str, dict[str, str]] = field(default_factory=dict)

    def names(self) -> list[str]:
        """The experiments' names, in file order."""
        return [e.name for e in self.experiments]

    def get(self, name: str) -> Experiment:
        """The experiment called `name`; KeyError when the file has none by that name."""
        for e in self.experiments:
            if e.name == name:
                return e
        raise KeyError(name)

    def select(self, spec: str) -> list[Experiment]:
        """`all`, a group or sweep name, or comma-separated experiment names, in file order."""
        spec = spec.strip()
        if spec == "all":
            if not self.experiments:
                raise ConfigError(f"--run all: {self.path} has no [[experiment]] to run")
            return list(self.experiments)
        wanted = [s.strip() for s in spec.split(",") if s.strip()]
        chosen: list[Experiment] = []
        for w in wanted:
            matches = (
                [e for e in self.experiments if e.name == w]
                or [e for e in self.experiments if e.group == w]
                or [e for e in self.experiments if e.sweep == w]
            )
            if not matches:
                raise ConfigError(
                    f"--run: no experiment or group named {w!r} in {self.path}"
                    f"{suggest(w, self.names())} (names: {', '.join(self.names())})"
                )
            chosen.extend(m for m in matches if m not in chosen)
        if not chosen:
            raise ConfigError("--run: name at least one experiment, a group, or 'all'")
        return chosen


# ---------------------------------------------------------------------------------------
# Locating keys in the source text (tomllib reports no positions for valid documents).


class _Locator:
    """Finds the line:column of a key inside `[defaults]` or the i-th `[[experiment]]` of the
    file `where`."""

    _header = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?")

    def __init__(self, text: str, where: str) -> None:
        self.where = where
        self.lines = text.splitlines()
        self.sections: list[tuple[str, int]] = []  # (header name, line index)
        for i, line in enumerate(self.lines):
            m = self._header.match(line)
            if m:
                self.sections.append((m.group(1).strip(), i))

    def find(self, section: str, index: int, key: str | None) -> tuple[int, int] | None:
        hits = [k for k, (n, _) in enumerate(self.sections) if n == section]
        if index >= len(hits):
            return None
        k = hits[index]
        start = self.sections[k][1]
        end = self.sections[k + 1][1] if k + 1 < len(self.sections) else len(self.lines)
        if key is None:
            return start + 1, 1
        pattern = re.compile(rf"^(\s*)(\"?{re.escape(key)}\"?)\s*=")
        for i in range(start + 1, end):
            m = pattern.match(self.lines[i])
            if m:
                return i + 1, len(m.group(1)) + 1
        return start + 1, 1

    def at(self, sect: tuple[str, int], key: str | None) -> str:
        """`file:line:col` of `key` in the table at `sect` (of the table where it has none)."""
        pos = self.find(*sect, key) or (1, 1)
        return f"{self.where}:{pos[0]}:{pos[1]}"


def parse_override(item: str, label: str | None = None) -> tuple[str, Any]:
    """Parse one `--set KEY=VALUE`; VALUE is read as TOML, or as a bare string. Errors start
    with `label` (an option such as `--device 'cuda:abc'`), else with `--set 'KEY=VALUE'`."""
    where = label or f"--set {item!r}"
    if "=" not in item:
        raise ConfigError(f"{where}: expected KEY=VALUE")
    key, raw = (s.strip() for s in item.split("=", 1))
    if key not in SETTING_KEYS:
        allowed = IDENTITY_KEYS if key in IDENTITY_KEYS else SETTING_KEYS
        hint = suggest(key, allowed)
        raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if key == "seeds" and all(p.strip().isdigit() for p in raw.split(",")):
            value = [int(p) for p in raw.split(",")]  # --set seeds=0,1,2
        elif declared(key).type != "str":
            raise ConfigError(f"{where}: {raw!r} is not {declared(key).type_name}") from None
        else:
            value = raw
    try:
        return key, check_new(key, value)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


S = TypeVar("S", bound=Settings)  # experiments, or the [defaults] they start from


def apply_overrides(experiments: list[S], overrides: dict[str, Any]) -> list[S]:
    """`--set` values over the file's (experiments, or [defaults] alone): `--set seed=N`
    replaces a `seeds` list and `--set seeds=...` a `seed` (both at once is a ConfigError)."""
    overrides = _seed_rule(dict(overrides), "--set seed and --set seeds: give one of them")
    out = [dataclasses.replace(e, **overrides) for e in experiments]
    for e in out:
        if isinstance(e, Experiment):  # [defaults] alone need not run: experiments do
            _check_agree(
                e, lambda key: (1, 0) if key in overrides else None, _set_prefix(e, overrides)
            )
            if {"model", "model_args"} & overrides.keys():
                _check_set_model(e, overrides)
            _check_set_data(e, overrides)
    return out


MEMORY_KEYS = ("dataset", "train_size", "test_size", "image_size", "cluster")  # what it needs


def _check_set_data(e: Experiment, overrides: dict[str, Any]) -> None:
    """`check_folder` and `check_memory` where --set changed what a dataset reads or decodes,
    blaming that --set."""
    given = [k for k in MEMORY_KEYS if k in overrides]
    if not given:
        return
    try:
        if given[0] == "dataset" and folder.is_folder(e.dataset):
            check_folder(e)
        check_memory(e, e.base_dir)
    except ConfigError as err:
        raise ConfigError(f"{_set_prefix(e, overrides)(given[0])}{err}") from None


def _check_set_model(e: Experiment, overrides: dict[str, Any]) -> None:
    """`check_model_source` for a model or model_args given by --set, blaming the --set."""
    try:
        check_model_source(e)
    except user_model.UserModelError as err:
        key = err.key if err.key in overrides else "model" if "model" in overrides else "model_args"
        raise ConfigError(f"{_set_prefix(e, overrides)(key)}{err}") from None


def _set_prefix(e: Settings, overrides: dict[str, Any]) -> Callable[[str], str]:
    """How an error about `e`'s `key` begins when --set gave it: `--set epochs=3: `."""

    def prefix(key: str) -> str:
        if key not in overrides:
            return ""
        value = getattr(e, key)
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        if key == "model_args":
            shown = "{" + ", ".join(f"{k}={v!r}" for k, v in value) + "}"
        item = f"{key}={shown}"
        return f"--set {item!r}: "  # as parse_override quotes it

    return prefix


# ---------------------------------------------------------------------------------------
# Settings that must agree with each other: checked on the merged settings of each
# experiment ([defaults], its own table or sweep, then --set).

# Where a key of one experiment was set, as (level, line): a higher level is more specific
# ([defaults] 0, the experiment's table 1); None for a key left at its built-in default.
Source = Callable[[str], tuple[int, int] | None]


def _check_agree(e: Experiment, source: Source, prefix: Callable[[str], str]) -> None:
    """ConfigError when two of `e`'s settings cannot run together, blaming the key set most
    specifically (the later line where both are in one table); `prefix(key)` starts it."""
    for dependent, bases, broken in _agreement_rules(e):
        if broken:
            blamed = max((dependent, *bases), key=lambda k: source(k) or (-1, 0))
            raise ConfigError(prefix(blamed) + _disagreement(e, dependent, blamed, source))


def _agreement_rules(e: Settings) -> list[tuple[str, tuple[str, ...], bool]]:
    """Each rule as (the setting it limits, the settings that set its limit, whether `e`
    breaks it)."""
    full = FULL_SIZES.get(e.dataset, (0, 0))[0]
    uses_whole = e.train_size is None or e.train_size > full
    train = images_used(e.dataset, e.train_size, None, getattr(e, "base_dir", ""))[0]
    return [
        (
            "val_size",
            ("train_size", *(["dataset"] if uses_whole else [])),
            e.val_size > 0 and train > 0 and e.val_size >= train,
        ),
        ("warmup_epochs", ("epochs",), e.warmup_epochs > e.epochs),
        # Early stopping without a validation split would watch the test set choose the model.
        ("early_stop_patience", ("val_size",), e.early_stop_patience > 0 and e.val_size == 0),
    ]


def _disagreement(e: Experiment, dependent: str, blamed: str, source: Source) -> str:
    """What is wrong, from the blamed key's side: `'val_size' = 200 leaves experiment ...`."""

    def at(key: str) -> str:
        src = source(key)
        return f" at line {src[1]}" if src and src[1] else ""

    said = f"{blamed!r} = {getattr(e, blamed)!r}"
    if dependent == "val_size":
        train = images_used(e.dataset, e.train_size, None, getattr(e, "base_dir", ""))[0]
        none_left = f"leaves experiment {e.name!r} no images to train on"
        if blamed == "val_size":
            size = (
                "train_size not set: the whole dataset"
                if e.train_size is None
                else f"train_size = {e.train_size}{at('train_size')}"
            )
            return f"{said} {none_left}: it must be less than its {train} training images ({size})"
        return (
            f"{said} {none_left}: val_size ({e.val_size}{at('val_size')}) must be less than its "
            f"{train} training images"
        )
    if dependent == "early_stop_patience":
        return _no_validation(e, blamed, said, at)
    why = "warm-up takes the first warmup_epochs of the run's epochs"
    if blamed == "warmup_epochs":
        return (
            f"{said} is more than the epochs of experiment {e.name!r} ({e.epochs}{at('epochs')})"
            f"; {why}"
        )
    return (
        f"{said} is less than the warmup_epochs of experiment {e.name!r} "
        f"({e.warmup_epochs}{at('warmup_epochs')}); {why}"
    )


def _no_validation(e: Experiment, blamed: str, said: str, at: Callable[[str], str]) -> str:
    """Early stopping without a validation split, from the blamed key's side."""
    fix = "set val_size > 0 (training images held out) or early_stop_patience = 0"
    why = "early stopping watches the validation loss, and the test set must not choose the model"
    if blamed == "early_stop_patience":
        size = f"val_size = 0{at('val_size')}" if at("val_size") else "val_size not set"
        has_none = f"experiment {e.name!r} has none ({size})"
        return f"{said} needs a validation split, and {has_none}: {why}; {fix}"
    patience = f"early_stop_patience = {e.early_stop_patience}{at('early_stop_patience')}"
    return (
        f"{said} leaves experiment {e.name!r} no validation split for its {patience}: {why}; {fix}"
    )


def _file_prefix(loc: _Locator, sect: tuple[str, int]) -> Callable[[str], str]:
    """How an error about a key of the table at `sect` begins: `exp.toml:5:1: `."""
    return lambda key: loc.at(sect, key) + ": "


def _file_source(
    table: dict[str, Any], defaults: dict[str, Any], loc: _Locator, sect: tuple[str, int]
) -> Source:
    """Where the keys of the experiment made from `table` (at `sect`) were set in the file."""

    def source(key: str) -> tuple[int, int] | None:
        if key in table:
            return 1, (loc.find(*sect, key) or (0, 0))[0]
        if key in defaults:
            return 0, (loc.find("defaults", 0, key) or (0, 0))[0]
        return None

    return source


def _seed_rule(values: dict[str, Any], both: str) -> dict[str, Any]:
    """`seed` and `seeds` of one table (or of --set): at most one; `seeds` sets `seed` to
    its first, and `seed` empties an inherited `seeds`."""
    if "seed" in values and "seeds" in values:
        raise ConfigError(both)
    if "seeds" in values:
        values["seed"] = values["seeds"][0]
    elif "seed" in values:
        values["seeds"] = ()
    return values


def expand_runs(experiments: list[Experiment]) -> list[Experiment]:
    """The runs to train for `experiments`, one per seed: every experiment's first seed, then
    every experiment's second, ..., so that a study interrupted half way has whole seeds."""
    per = [e.runs() for e in experiments]
    out = []
    for i in range(max((len(p) for p in per), default=0)):
        out += [p[i] for p in per if i < len(p)]
    return out


def _settings_from(
    table: dict[str, Any], allowed: tuple[str, ...], loc: _Locator, sect: tuple[str, int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        pos = loc.find(*sect, key)
        prefix = f"{loc.where}:{pos[0]}:{pos[1]}" if pos else loc.where
        if key not in allowed:
            extra = ""
            if key in IDENTITY_KEYS:
                extra = f" ({key!r} belongs in an [[experiment]], not in [defaults])"
            raise ConfigError(f"{prefix}: unknown key {key!r}{suggest(key, allowed)}{extra}")
        try:
            out[key] = check_new(key, value)
        except ConfigError as e:
            raise ConfigError(f"{prefix}: {e}") from None
    if "seed" in out and "seeds" in out:
        seed, seeds = loc.find(*sect, "seed") or (1, 1), loc.find(*sect, "seeds") or (1, 1)
        raise ConfigError(
            f"{loc.where}:{seeds[0]}:{seeds[1]}: 'seeds' and 'seed' (line {seed[0]}) are both set "
            "here; keep one (seeds = [0, 1, 2] trains one run per seed)"
        )
    return _seed_rule(out, "")


def _name_part(value: Any) -> str:
    """A swept value as it reads in a generated name: 0.1, 1e-05, true, adamw."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):  # model_args = [{ width = 16 }, ...]: width-16
        return "_".join(f"{k}-{_name_part(v)}" for k, v in value.items())
    return re.sub(r"[^A-Za-z0-9_.-]", "-", str(value))


def _expand_sweep(
    table: dict[str, Any],
    defaults: Settings,
    loc: _Locator,
    sect: tuple[str, int],
    runs_before: int = 0,
) -> list[Experiment]:
    """A `[[sweep]]` table as the experiments of its grid, first setting outermost, named
    `<sweep>.<key>=<value>+<key>=<value>` and grouped under the sweep's name unless it names
    a group. Every value goes through `check_value`; a bad one is reported at its key. The
    grid is counted first: past SWEEP_MAX_RUNS runs (or FILE_MAX_RUNS with the
    `runs_before` of the file's earlier tables) it is refused, not expanded."""
    lists = {k: v for k, v in table.items() if isinstance(v, list) and k not in LIST_SETTINGS}
    fixed = {k: v for k, v in table.items() if k not in lists}
    if "reference" in fixed:
        raise ConfigError(
            f"{loc.at(sect, 'reference')}: 'reference' marks one experiment; a "
            "[[sweep]] makes several (mark an [[experiment]] instead)"
        )
    values = _settings_from(fixed, EXPERIMENT_KEYS, loc, sect)
    if "name" not in values:
        raise ConfigError(f"{loc.at(sect, None)}: [[sweep]] has no 'name'")
    base = values.pop("name")
    if not lists:
        raise ConfigError(
            f"{loc.at(sect, None)}: [[sweep]] {base!r} has no list of values to "
            "sweep (e.g. lr = [0.1, 0.01])"
        )
    _count_sweep(base, lists, values, defaults, loc.at(sect, None), runs_before)
    grid = {key: _swept(key, items, loc.at(sect, key)) for key, items in lists.items()}
    if "seed" in grid and "seeds" in values:
        raise ConfigError(f"{loc.at(sect, 'seeds')}: 'seeds' and a swept 'seed' both set; keep one")
    name_at = loc.at(sect, "name")
    return [
        _sweep_point(base, values, grid, combo, defaults, name_at)
        for combo in itertools.product(*grid.values())
    ]


def _count_sweep(
    base: str,
    lists: dict[str, list[Any]],
    values: dict[str, Any],
    defaults: Settings,
    at: str,
    runs_before: int,
) -> None:
    """Refuse sweep `base` (at `at`) when its grid times its seeds makes too many runs."""
    seeds = 1 if "seed" in lists else max(1, len(values.get("seeds", defaults.seeds)))
    runs = math.prod(len(items) for items in lists.values()) * seeds
    if runs > SWEEP_MAX_RUNS:
        grid = " x ".join(f"{len(items)} {key}" for key, items in lists.items())
        grid += f" x {seeds} seeds" if seeds > 1 else ""
        raise ConfigError(
            f"{at}: [[sweep]] {base!r} makes {runs:,} runs ({grid}); at most "
            f"{SWEEP_MAX_RUNS:,} runs a sweep (sweep fewer values)"
        )
    if runs_before + runs > FILE_MAX_RUNS:
        raise ConfigError(
            f"{at}: [[sweep]] {base!r} brings the file to {runs_before + runs:,} runs; at most "
            f"{FILE_MAX_RUNS:,} runs a file"
        )


def _swept(key: str, items: list[Any], at: str) -> list[tuple[Any, Any]]:
    """One swept setting's values, each as written and as checked; errors name `at`."""
    if key not in SETTING_KEYS:
        why = "cannot be swept" if key in IDENTITY_KEYS else "unknown key"
        raise ConfigError(f"{at}: {why} {key!r}{suggest(key, SETTING_KEYS)}")
    if not items:
        raise ConfigError(f"{at}: {key!r} = [] sweeps over nothing; give at least one value")
    checked = []
    for j, item in enumerate(items):
        try:
            checked.append(check_new(key, item))
        except ConfigError as e:
            raise ConfigError(f"{at}: value {j + 1} of {key!r}: {e}") from None
    if len(set(map(_name_part, items))) != len(items):
        raise ConfigError(f"{at}: {key!r} = {items!r} lists a value twice")
    return list(zip(items, checked, strict=True))


def _sweep_point(
    base: str,
    values: dict[str, Any],
    grid: dict[str, list[tuple[Any, Any]]],
    combo: tuple[tuple[Any, Any], ...],
    defaults: Settings,
    name_at: str,
) -> Experiment:
    """The experiment at one point (`combo`) of sweep `base`'s grid, named for its values."""
    parts = [f"{k}={_name_part(raw)}" for k, (raw, _) in zip(grid, combo, strict=True)]
    name = f"{base}.{'+'.join(parts)}"
    try:
        check_value("name", name)
    except ConfigError as e:
        raise ConfigError(
            f"{name_at}: [[sweep]] {base!r} generates the name {name!r}: {e}"
        ) from None
    own = dict(values)
    own.update({k: v for k, (_, v) in zip(grid, combo, strict=True)})
    if "seed" in grid:
        own["seeds"] = ()
    title = values.get("title", "")
    own.update(
        name=name,
        # The swept values tell the sweep's experiments apart where the group is shown.
        title=f"{title} ({', '.join(parts)})" if title else ", ".join(parts),
        group=values.get("group") or base,
        sweep=base,
        swept=tuple(grid),
    )
    return Experiment(**{**dataclasses.asdict(defaults), **own})


def parse(text: str, path: Path | str = "experiments.toml") -> ExperimentFile:
    """Parse and validate the text of an experiments file."""
    where = str(path)
    text = text.removeprefix("\ufeff")  # a byte-order mark, as some Windows editors write
    doc = _load_toml(text, where)
    loc = _Locator(text, where)
    _check_top_level(doc, loc)
    defaults = Settings(
        **_settings_from(doc.get("defaults", {}), SETTING_KEYS, loc, ("defaults", 0))
    )
    tables = {n: doc.get(n, []) for n in ("experiment", "sweep", "search")}
    searches = []
    experiments: list[Experiment] = []
    origins: list[tuple[str, int]] = []  # where each experiment comes from: (section, index)
    seen: dict[str, int] = {}  # casefolded name -> index: macOS and Windows ignore case
    runs = 0  # that the experiments so far make, seeds included
    models = _Sources(loc, doc.get("defaults", {}), Path(path))
    for sect in _section_order(tables, loc):
        kind, i = sect
        table = tables[kind][i]
        if kind == "sweep":
            made = _expand_sweep(table, defaults, loc, sect, runs)
        elif kind == "search":  # trains the trials its scheduler asks for: none up front
            searches.append(_search(table, defaults, loc, sect))
            made = []
        else:
            made = [_experiment(table, defaults, loc, sect)]
        runs += sum(max(1, len(e.seeds)) for e in made)
        if runs > FILE_MAX_RUNS:
            raise ConfigError(
                f"{loc.at(sect, None)}: {_origin(sect)} brings the file to {runs:,} "
                f"runs; at most {FILE_MAX_RUNS:,} runs a file"
            )
        source = _file_source(table, doc.get("defaults", {}), loc, sect)
        for exp in made:
            exp = models.checked(exp, table, sect)
            _check_agree(exp, source, _file_prefix(loc, sect))
            first = seen.get(exp.name.casefold())
            if first is not None:
                raise _duplicate(exp.name, experiments[first].name, origins[first], loc, sect)
            seen[exp.name.casefold()] = len(experiments)
            experiments.append(exp)
            origins.append(sect)
    _check_export_folders(experiments, origins, loc)
    _check_references(experiments, origins, loc)
    _check_search_names(searches, experiments, loc)
    return ExperimentFile(Path(path), defaults, experiments, searches, models.at)


class _Sources:
    """What each experiment reads from paths while a file is parsed: its base_dir set, a
    user model's source and an image folder checked (once each) and where the model's keys
    are, for later checks."""

    def __init__(self, loc: _Locator, defaults: dict[str, Any], path: Path) -> None:
        self.loc, self.defaults = loc, defaults
        self.base_dir = str(path.parent.resolve())
        self.at: dict[str, dict[str, str]] = {}
        self.seen: set[tuple[str, Any]] = set()
        self.folders: set[str] = set()
        self.memory_checked: set[tuple[Any, ...]] = set()

    def checked(self, exp: Experiment, table: dict[str, Any], sect: tuple[str, int]) -> Experiment:
        """`exp` with its base_dir; ConfigError at the key to blame when its model is not
        one that can be built."""
        exp = dataclasses.replace(exp, base_dir=self.base_dir)
        keys = {k: self._key_at(k, table, sect) for k in ("model", "model_args")}
        if user_model.parse_spec(exp.model) is not None:
            self.at[exp.name] = keys
        if (exp.model, exp.model_args) not in self.seen:
            try:
                check_model_source(exp)
            except user_model.UserModelError as e:
                raise ConfigError(f"{keys[e.key]}: {e}") from None
            self.seen.add((exp.model, exp.model_args))
        sizes = tuple(getattr(exp, k) for k in MEMORY_KEYS)
        try:  # the folder once, and the memory once per dataset and sizes
            if folder.is_folder(exp.dataset) and exp.dataset not in self.folders:
                check_folder(exp)
                self.folders.add(exp.dataset)
            if sizes not in self.memory_checked:
                check_memory(exp, self.base_dir)
                self.memory_checked.add(sizes)
        except ConfigError as e:
            raise ConfigError(f"{self._key_at('dataset', table, sect)}: {e}") from None
        return exp

    def _key_at(self, key: str, table: dict[str, Any], sect: tuple[str, int]) -> str:
        if key in table or key not in self.defaults:
            return self.loc.at(sect, key)
        return self.loc.at(("defaults", 0), key)


def check_folder(exp: Experiment) -> None:
    """ConfigError when `exp`'s image folder (PATH from its base_dir), as it is now, cannot
    be used: its layout, and every image's header."""
    try:
        folder.check_openable(folder.scan(exp.dataset, exp.base_dir))
    except folder.FolderError as e:
        raise ConfigError(str(e)) from None


def check_model_source(exp: Experiment) -> None:
    """UserModelError when `exp`'s model can be seen not to build without running it: its
    file or name missing, a model_args key it does not take, model_args for a built-in."""
    spec = user_model.parse_spec(exp.model)
    if spec is None:
        if exp.model_args:
            raise user_model.UserModelError(
                "model_args",
                f"'model_args' is for a model of your own; the built-in {exp.model!r} takes none",
            )
        return
    user_model.check_source(spec, exp.model_args, exp.base_dir)


Shape = tuple[tuple[int, int, int], int]  # a dataset's image shape and number of classes


def check_models(
    experiments: list[Experiment],
    file: ExperimentFile,
    shape_of: Callable[[Experiment], Shape | None],
    overrides: dict[str, Any] | None = None,
) -> None:
    """Build each distinct user model of `experiments` once on CPU and run a batch of its
    dataset's shape (`shape_of`, core.data's answer; None: unknown) through it (imports
    torch); ConfigError at its key (in the file, or the --set of `overrides` that gave it)
    when it cannot."""
    overrides = overrides or {}
    by_name = {e.name: e for e in experiments}
    candidates = [
        user_model.Candidate(
            e.name,
            e.model,
            e.model_args,
            e.base_dir,
            e.dataset,
            shape_of(e) if user_model.parse_spec(e.model) else None,
        )
        for e in experiments
    ]
    try:
        user_model.check_built(candidates)
    except user_model.UserModelError as e:
        if "model" in overrides:
            prefix = _set_prefix(by_name[e.experiment], overrides)("model")
            raise ConfigError(f"{prefix}{e}") from None
        at = file.model_at.get(e.experiment, {}).get(e.key, str(file.path))
        raise ConfigError(f"{at}: {e}") from None


def _experiment(
    table: dict[str, Any], defaults: Settings, loc: _Locator, sect: tuple[str, int]
) -> Experiment:
    """One `[[experiment]]` table as an Experiment, unset settings from [defaults]."""
    values = _settings_from(table, EXPERIMENT_KEYS, loc, sect)
    if "name" not in values:
        raise ConfigError(f"{loc.at(sect, None)}: experiment #{sect[1] + 1} has no 'name'")
    return Experiment(**{**dataclasses.asdict(defaults), **values})


def _duplicate(
    name: str, other: str, origin: tuple[str, int], loc: _Locator, sect: tuple[str, int]
) -> ConfigError:
    """The error for experiment `name` at `sect` whose name `other` (at `origin`) took first."""
    case = f" as {other!r}: names differing in case share a folder" if other != name else ""
    return ConfigError(
        f"{loc.at(sect, 'name')}: duplicate experiment name {name!r}"
        f" (first used by {_origin(origin)}{case})"
    )


def _load_toml(text: str, where: str) -> dict[str, Any]:
    """The TOML document, or ConfigError with the syntax error's line and column."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg, at = str(e), where
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            msg, at = msg[: m.start()].strip(), f"{where}:{m.group(1)}:{m.group(2)}"
        raise ConfigError(f"{at}: TOML syntax error: {msg}") from None


def _check_top_level(doc: dict[str, Any], loc: _Locator) -> None:
    """Only [defaults], [[experiment]] and [[sweep]] at the top, each of its kind of table."""
    for key, value in doc.items():
        if key not in ("defaults", "experiment", "sweep", "search"):
            pos = loc.find(key, 0, None) or (1, 1)
            raise ConfigError(
                f"{loc.where}:{pos[0]}:{pos[1]}: unknown top-level key {key!r}"
                f"{suggest(key, ('defaults', 'experiment', 'sweep', 'search'))} (allowed: "
                "[defaults], [[experiment]], [[sweep]], [[search]])"
            )
        if key == "defaults" and not isinstance(value, dict):
            raise ConfigError(f"{loc.where}: 'defaults' must be a table: [defaults]")
        if key in ("experiment", "sweep", "search") and not (
            isinstance(value, list) and all(isinstance(v, dict) for v in value)
        ):
            raise ConfigError(f"{loc.where}: {key!r} must be an array of tables: [[{key}]]")


def _section_order(tables: dict[str, list[Any]], loc: _Locator) -> list[tuple[str, int]]:
    """The experiments and sweeps as (kind, index), in the order the file has them."""
    order = [
        (n, sum(1 for m, _ in loc.sections[:k] if m == n))
        for k, (n, _) in enumerate(loc.sections)
        if n in ("experiment", "sweep", "search")
    ]
    order = [(n, i) for n, i in order if i < len(tables[n])]
    for n in tables:  # a table the locator did not see (unusual layout): at the end
        order += [(n, i) for i in range(len(tables[n])) if (n, i) not in order]
    return order


def _origin(sect: tuple[str, int]) -> str:
    kind = {"sweep": "[[sweep]]", "search": "[[search]]"}.get(sect[0], "experiment")
    return f"{kind} #{sect[1] + 1}"


def _search(
    table: dict[str, Any], defaults: Settings, loc: _Locator, sect: tuple[str, int]
) -> search_space.Search[Experiment]:
    """One `[[search]]` table (see core/search_space.py), its fixed settings resolved as an
    experiment's are, from [defaults] up; its trials train one seed each."""
    at = functools.partial(loc.at, sect)
    try:
        own, searched, fixed = search_space.split_table(table, SETTING_KEYS, at)
        if "seeds" in fixed:
            raise search_space.SearchError(
                f"{at('seeds')}: a search's trials train one seed each; 'confirm_seeds' "
                "retrains the best trial on several"
            )
        name, group = check_value("name", own["name"]), own.get("group", own["name"])
        values = _settings_from(fixed, SETTING_KEYS, loc, sect)
        base = Experiment(
            **{**dataclasses.asdict(defaults), **values, "seeds": ()},
            name=name,
            title=str(own.get("title", "")),
            group=check_value("group", group),
        )
        space = tuple(_search_param(key, spec, at) for key, spec in searched.items())
        keys = search_space.own_keys(own, base.val_size, at)
    except (search_space.SearchError, ConfigError) as e:
        text = str(e)
        raise ConfigError(text if text.startswith(loc.where) else f"{at('name')}: {text}") from None
    return search_space.Search(name, group, base.title, space=space, base=base, **keys)


def _search_param(key: str, spec: dict[str, Any], at: Callable[[str | None], str]) -> Any:
    """One searched setting's space, refused at its key when it is not searchable."""
    s = declared(key)  # a search may search any setting a sweep may sweep
    if s.takes_list:
        raise ConfigError(f"{at(key)}: {key!r} cannot be searched (its value is a list)")
    number = {"int": "int", "int | None": "int", "float": "float"}.get(s.type, "")
    try:
        return search_space.parse_param(key, spec, number, check_new)
    except search_space.SearchError as e:
        raise ConfigError(f"{at(key)}: {e}") from None


def _check_search_names(
    searches: list[search_space.Search[Experiment]], experiments: list[Experiment], loc: _Locator
) -> None:
    """A search's name is its study's folder in the run store: no experiment or other
    search may have it (compared case-insensitively)."""
    taken = {e.name.casefold(): "experiment" for e in experiments}
    for i, s in enumerate(searches):
        if s.name.casefold() in taken:
            raise ConfigError(
                f"{loc.at(('search', i), 'name')}: [[search]] {s.name!r} has the name "
                f"of an {taken[s.name.casefold()]}; a search needs a name of its own"
            )
        taken[s.name.casefold()] = "earlier [[search]]"


def _check_references(
    experiments: list[Experiment], origins: list[tuple[str, int]], loc: _Locator
) -> None:
    """At most one `reference = true` per group."""
    marked: dict[str, str] = {}
    for exp, sect in zip(experiments, origins, strict=True):
        if not exp.reference:
            continue
        group = exp.group or UNGROUPED
        if group in marked:
            raise ConfigError(
                f"{loc.at(sect, 'reference')}: group {group!r} already has its "
                f"reference ({marked[group]!r}); mark one experiment per group"
            )
        marked[group] = exp.name


def _check_export_folders(
    experiments: list[Experiment], origins: list[tuple[str, int]], loc: _Locator
) -> None:
    """Experiments export into exports/<name>/ and groups into exports/<group>/ (experiments
    without a group into exports/ungrouped/): no group may share its folder with an
    experiment, nor two groups one folder by differing only in case."""
    names = {e.name.casefold(): i for i, e in enumerate(experiments)}
    groups: dict[str, str] = {}  # casefolded -> as first written
    for i, e in enumerate(experiments):
        group = e.group or UNGROUPED
        clash = names.get(group.casefold())
        if clash is not None:
            # Point at the group key, or for the implicit "ungrouped" at the clashing name.
            at, key = (i, "group") if e.group else (clash, "name")
            other = experiments[clash].name
            if e.group:
                why = f"group {group!r} is also the name of {_origin(origins[clash])} ({other!r})"
            else:
                why = (
                    f"name {other!r} is the folder of the experiments without a group "
                    f"({_origin(origins[i])}, {e.name!r}, has none)"
                )
            raise ConfigError(
                f"{loc.at(origins[at], key)}: {why}; both would export into "
                f"exports/{group}/ (rename one)"
            )
        first = groups.setdefault(group.casefold(), group)
        if first != group:
            raise ConfigError(
                f"{loc.at(origins[i], 'group')}: group {group!r} differs from group "
                f"{first!r} only in case; they would share one exports folder on macOS and Windows"
            )


def _read_regular_file(path: Path) -> bytes:
    """The file's bytes; a FIFO, a device (/dev/zero) or a huge file is a ConfigError, not a
    read that never ends. Opened without blocking, so a FIFO is refused, not waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: not a regular file (a pipe or a device cannot be read)")
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB, not an experiments file"
        )
    return raw


def load(path: Path | str) -> ExperimentFile:
    """Read and validate an experiments file; every failure is a one-line ConfigError."""
    path = Path(path)
    try:
        raw = _read_regular_file(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (create one, or pass --config PATH)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not an experiments file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return parse(text, path)
