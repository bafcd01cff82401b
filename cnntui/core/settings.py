"""Every setting an experiment may hold, each declared once, and the checks of its values.

A setting is one field of `Settings` (or, for an experiment's identity, of `Experiment`)
declared with `setting(...)`: its type (the annotation), default, one-line help, allowed
choices or range, the names people reach for from other tools (aliases), and whether a
resume may change it. Everything else is derived from these fields: `check_value`, the
`--set` keys of `--help`, the resume rule, the TUI's form and the README's settings table.

Adding a setting is one field here (and what uses it); the tests pin the README's table.
Like config, this imports neither torch nor textual.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from . import folder, registry, user_model
from .text import safe, unsafe_char

MODELS = registry.MODELS.names
DATASETS = registry.DATASETS.names
OPTIMIZERS = registry.OPTIMIZERS.names
AMP_MODES = ("off", "bf16", "fp16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
EXECUTORS = ("auto", "process", "thread")
LR_SCHEDULES = ("constant", "step", "cosine", "onecycle")
NORMALIZE_MODES = ("dataset", "half", "none")
FLIP_MODES = ("auto", "on", "off")
GPU_INDEX_MAX = 1023
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=+-]*$")
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
# "ray", "auto", "ray://HOST[:PORT]" (Ray Client) or "HOST:PORT" (a cluster's GCS address).
CLUSTER_RE = re.compile(r"^(ray|auto|ray://[A-Za-z0-9._\[\]:-]+|[A-Za-z0-9._\[\]:-]+:\d{1,5})$")
NAME_MAX = 64  # characters in a name or group: they name folders, and every file system takes 64
SEED_MAX = 2**64 - 1  # torch seeds are unsigned 64-bit
EPOCHS_MAX = 100_000  # a run records every epoch; a count past this is a typo, not a plan
# CPU threads a run may ask for, per core of this machine: torch's OpenMP pool segfaulted at
# 32768 threads and took 69 s for a 0.3 s run at 4096.
THREADS_PER_CORE = 4
PORT_MAX = 65_535
# Files cnntui writes at the exports root (and the README there): no experiment or group
# folder may take their names. Compared case-insensitively, as macOS and Windows do.
EXPORT_ROOT_FILES = ("results.csv", "results.md", "results.tex", "results_full.tex", "readme.md")
DEVICES = "auto, cpu, cuda, cuda:N, mps"
CLUSTERS = '"" for this machine, ray, auto, ray://HOST:10001, HOST:6379'
GPUS = f'GPU indices in [0, {GPU_INDEX_MAX}], e.g. [0, 2] or "0,2" (empty: every GPU)'
SEEDS = "a list of distinct seeds in [0, 2^64 - 1], e.g. [0, 1, 2] (one seed: seed = N)"
NAME_CHARS = "letters, digits, '-', '_', '.', '=' and '+'"
IMAGE_SIZE_MAX = 1024  # pixels a side: a small-CNN tool's images are far smaller


class ConfigError(ValueError):
    """A problem with experiments.toml or an override, as one printable line."""


@dataclass(frozen=True)
class Range:
    """The values a number may take: `test` passes them, `text` says so in an error."""

    test: Callable[[Any], bool]
    text: str  # "must be in [0, 1)"


def at_least(low: int, note: str = "") -> Range:
    """Numbers >= `low`; `note` is appended to what the error says."""
    return Range(lambda v: v >= low, f"must be >= {low}{note}")


def above(low: int) -> Range:
    """Numbers > `low`."""
    return Range(lambda v: v > low, f"must be > {low}")


def within(low: int, high: int, ends: str = "[]", note: str = "", high_text: str = "") -> Range:
    """Numbers between `low` and `high`, each end closed `[`/`]` or open `(`/`)`."""

    def test(v: Any) -> bool:
        above_low = v >= low if ends[0] == "[" else v > low
        return bool(above_low and (v <= high if ends[1] == "]" else v < high))

    return Range(test, f"must be in {ends[0]}{low}, {high_text or high}{ends[1]}{note}")


def setting(default: Any, help: str, **rules: Any) -> Any:
    """Declare a field of Settings or Experiment as a setting: its default, one line of help
    and the keyword fields of `Setting` that say what it may hold. Returns the dataclass field."""
    return field(default=default, metadata={"setting": {"help": help, **rules}})


# Each annotated type: the Python types its values may have (true and false are not numbers),
# and its name in words.
_TYPES: dict[str, tuple[Any, str]] = {
    "int": (int, "an integer"),
    "int | None": (int, "an integer"),
    "float": ((int, float), "a number"),
    "bool": (bool, "true or false"),
    "str": (str, "a string"),
}


@dataclass(frozen=True)
class Setting:
    """One setting as declared: what it holds, what it may hold, and what it means."""

    name: str
    type: str  # as annotated: int, float, str, bool, "int | None", "tuple[int, ...]"
    default: Any
    help: str  # one line, shown in the form's tooltip and the README's table
    choices: tuple[str, ...] = ()  # the names it may take
    beyond: str = ""  # what else it may hold besides its choices, in words (`check` decides)
    range: Range | None = None  # the numbers it may take
    allowed: str = ""  # what a text or list setting may hold, in words
    check: Callable[[str, Any], None] | None = None  # a text rule, after the type check
    parse: Callable[[Any], Any] | None = None  # reads and checks the value in place of its type
    here: Callable[[Any], None] | None = None  # this machine's limit, for a value being written
    aliases: tuple[str, ...] = ()  # names from other tools, suggested as "did you mean"
    resumable: bool = False  # a resume may change it: how a run trains, not what it learns
    speed: bool = False  # changes how fast or where a run trains, not what it learns
    takes_list: bool = False  # its value is a list: a [[sweep]] does not sweep over it
    generated: bool = False  # written by a [[sweep]], not by hand

    @property
    def type_name(self) -> str:
        """The type in words: "an integer", "a number", "a string", "true or false"."""
        return _TYPES[self.type][1] if self.type in _TYPES else self.type

    @property
    def allows(self) -> str:
        """What it may hold, in words: its choices, its range, or its declared text."""
        if self.choices:
            return ", ".join(self.choices) + (f", or {self.beyond}" if self.beyond else "")
        if self.range:
            return self.range.text.removeprefix("must be ")
        return self.allowed or ("true, false" if self.type == "bool" else "")


def _declared(cls: type) -> tuple[Setting, ...]:
    """The settings `cls` declares itself (not those it inherits), in field order."""
    own = getattr(cls, "__annotations__", {})
    return tuple(
        Setting(name=f.name, type=str(f.type), default=f.default, **f.metadata["setting"])
        for f in fields(cls)
        if f.name in own
    )


# ---------------------------------------------------------------------------------------
# The text and list rules the declarations name.


def _need(key: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key!r} = {value!r} is out of range: {allowed}")


def _check_device(key: str, value: str) -> None:
    if not DEVICE_RE.match(value):
        raise ConfigError(f"unknown device {value!r} (allowed: {DEVICES})")


def _check_cluster(key: str, value: str) -> None:
    if value and not CLUSTER_RE.match(value):
        raise ConfigError(f"unknown cluster {safe(value)!r} (allowed: {CLUSTERS})")
    port = _cluster_port(value)
    if port is not None and not 1 <= port <= PORT_MAX:
        raise ConfigError(
            f"cluster {value!r}: port {port} is out of range: ports are 1 to {PORT_MAX}"
        )


def _cluster_port(address: str) -> int | None:
    """The port a checked `cluster` address names (HOST:PORT, ray://HOST:PORT), else None."""
    host = address.removeprefix("ray://")
    if host.endswith("]") or ":" not in host:  # no port, or a bare [IPv6] address
        return None
    tail = host.rsplit(":", 1)[1]
    return int(tail) if tail.isdigit() else None


def _check_data_dir(key: str, value: str) -> None:
    _need(key, value, value != "", "must not be empty")
    _printable(key, value)


def _check_model(key: str, value: str) -> None:
    """A model beyond the built-in ones: the user's own, FILE.py:NAME or MODULE:NAME."""
    if user_model.parse_spec(value) is None:
        raise ConfigError(
            f"unknown model {safe(value)!r}{suggest(value, MODELS)} "
            f"(allowed: {declared(key).allows})"
        )


def _parse_model_args(value: Any) -> tuple[tuple[str, Any], ...]:
    """`model_args` as a table of keyword arguments, held as sorted (name, value) pairs."""
    try:
        return user_model.check_args(value)
    except user_model.UserModelError as e:
        raise ConfigError(str(e)) from None


def _check_dataset(key: str, value: str) -> None:
    """A dataset beyond the named ones: `folder:PATH`, an image folder."""
    if not folder.is_folder(value):
        raise ConfigError(
            f"unknown dataset {value!r}{suggest(value, DATASETS)} (allowed: {declared(key).allows})"
        )
    _need(key, value, value != registry.FOLDER_PREFIX, "folder:PATH names a folder")
    _printable(key, value)


def _check_name(key: str, value: str) -> None:
    ok = bool(NAME_RE.match(value)) and value not in (".", "..")
    _need(key, value, ok, f"{NAME_CHARS}, not starting with '.' or '-'")
    _folder_name(key, value)


def _check_group(key: str, value: str) -> None:
    if value:
        _need(key, value, bool(NAME_RE.match(value)), NAME_CHARS)
        _folder_name(key, value)


def _folder_name(key: str, value: str) -> None:
    """A name or group names a folder in runs/ and exports/: short, and not a file there."""
    if len(value) > NAME_MAX:
        raise ConfigError(
            f"{key!r} is {len(value)} characters long; at most {NAME_MAX} "
            f"(it names a folder): {value[:20]!r}..."
        )
    if value.casefold() in EXPORT_ROOT_FILES:
        raise ConfigError(
            f"{key!r} = {value!r} is the name of a file in the exports folder; choose another"
        )


def _printable(key: str, value: str) -> None:
    """Text that is shown in terminals holds no control characters (escape sequences)."""
    ch = unsafe_char(value)
    if ch is not None:
        raise ConfigError(
            f"{key!r} holds the control character '{safe(ch)}' (character "
            f"{value.index(ch) + 1}); control characters are not allowed"
        )


def _parse_gpus(value: Any) -> str:
    """`gpus` as a list of indices ([0, 2]) or text ("0,2"); normalised to "0,2"."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")] if value.strip() else []
        if not all(p.isdigit() and p.isascii() for p in parts):
            raise ConfigError(f"'gpus' = {value!r} is not valid: {GPUS}")
        items: list[Any] = [int(p) for p in parts]
    elif isinstance(value, list):
        items = value
    else:
        raise ConfigError(f"'gpus' must be a list of GPU indices, got {value!r}")
    _distinct_numbers("gpus", value, items, GPU_INDEX_MAX, "GPU", GPUS)
    return ",".join(str(i) for i in items)


def _parse_seeds(value: Any) -> tuple[int, ...]:
    """`seeds` as a list of distinct seeds ([0, 1, 2]); one seed alone is `seed = N`."""
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"'seeds' = {value!r} is not valid: {SEEDS}")
    _distinct_numbers("seeds", value, list(value), SEED_MAX, "seed", SEEDS)
    return tuple(value)


def _distinct_numbers(
    key: str, value: Any, items: list[Any], high: int, what: str, allowed: str
) -> None:
    """ConfigError unless `items` (read from `value`) are distinct integers in [0, high]."""
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= high:
            raise ConfigError(f"{key!r} = {value!r} is not valid: {allowed}")
    twice = next((i for i in items if items.count(i) > 1), None)
    if twice is not None:
        raise ConfigError(f"{key!r} = {value!r} names {what} {twice} twice: {allowed}")


def _parse_swept(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(k in SETTING_KEYS for k in value):
        raise ConfigError(f"'swept' must be a list of setting names, got {value!r}")
    return tuple(value)


def threads_max() -> int:
    """The most CPU threads a run may ask for on this machine (THREADS_PER_CORE per core)."""
    return THREADS_PER_CORE * (os.cpu_count() or 1)


def _threads_here(value: int) -> None:
    cores = os.cpu_count() or 1
    why = f"{THREADS_PER_CORE} per core, {cores} cores here; 0 chooses from the batch size"
    _need("threads", value, value <= threads_max(), f"must be in [0, {threads_max()}] ({why})")


def _gpu_share(v: Any) -> bool:
    return bool(0 < v <= 1 or (v > 1 and v.is_integer()))


# ---------------------------------------------------------------------------------------
# The declarations.

_ALL = " (leave it out to use all)"


@dataclass(frozen=True)
class Settings:
    """Every setting an experiment may hold; `[defaults]` and each `[[experiment]]` set these."""

    model: str = setting(
        "lenet",
        "the network: a built-in, or your own (FILE.py relative to the experiments file)",
        choices=MODELS,
        beyond="a model of your own: FILE.py:NAME or MODULE:NAME",
        check=_check_model,
        aliases=("arch", "net", "network"),
    )
    # Held as sorted (name, value) pairs, so that an experiment stays hashable.
    model_args: tuple[tuple[str, Any], ...] = setting(
        (),
        "keyword arguments for your own model (num_classes and in_channels are filled in)",
        allowed="a table, e.g. { width = 32 }",
        parse=_parse_model_args,
        aliases=("model_kwargs", "kwargs"),
    )
    dataset: str = setting(
        "cifar10",
        "the images it learns",
        choices=DATASETS,
        beyond="folder:PATH (an image folder)",
        check=_check_dataset,
        aliases=("data",),
    )
    data_dir: str = setting(
        "data",
        "where datasets are downloaded / looked for",
        allowed="a folder",
        check=_check_data_dir,
        resumable=True,
        speed=True,
    )
    batch_size: int = setting(
        4, "images per training step", range=at_least(1), aliases=("bs", "batch", "batchsize")
    )
    epochs: int = setting(
        5,
        "passes over the training set",
        range=within(1, EPOCHS_MAX),
        aliases=("epoch", "num_epochs", "n_epochs"),
        resumable=True,
    )
    optimizer: str = setting(
        "sgd", "the optimizer", choices=OPTIMIZERS, aliases=("optim", "opt", "optimiser")
    )
    lr: float = setting(
        0.001,
        "learning rate, per step",
        range=above(0),
        aliases=("learning_rate", "learningrate", "lr_rate"),
    )
    momentum: float = setting(
        0.9, "SGD momentum (ignored by adam/adamw)", range=within(0, 1, "[)"), aliases=("beta",)
    )
    weight_decay: float = setting(
        0.0, "L2 penalty through the optimizer", range=at_least(0), aliases=("wd", "l2", "decay")
    )
    dropout: float = setting(
        0.0,
        "drop probability before the last hidden layer",
        range=within(0, 1, "[)"),
        aliases=("dropout_rate", "drop", "p"),
    )
    seed: int = setting(
        0,
        "seeds weights, shuffling and dropout",
        range=within(0, SEED_MAX, high_text="2^64 - 1"),
        aliases=("random_seed",),
    )
    # A run of one of several seeds records the list and its own `seed`.
    seeds: tuple[int, ...] = setting(
        (),
        "several seeds: one run each, aggregated as mean ± std (empty: `seed` alone)",
        allowed=SEEDS,
        parse=_parse_seeds,
        takes_list=True,
    )
    train_size: int | None = setting(
        None, "use only the first N training images (unset: all)", range=at_least(1, _ALL)
    )
    test_size: int | None = setting(
        None, "use only the first N test images (unset: all)", range=at_least(1, _ALL)
    )
    device: str = setting(
        "auto",
        "where a run computes",
        allowed=DEVICES,
        check=_check_device,
        aliases=("gpu", "cuda"),
        resumable=True,
        speed=True,
    )
    target_acc: float = setting(
        0.5,
        'test accuracy (fraction) that counts as "converged"',
        range=within(0, 1, "(]", ", a fraction of the test set"),
        resumable=True,
        speed=True,
    )
    image_size: int | None = setting(
        None,
        "a folder dataset's images are resized to this square, in pixels (unset: the first's)",
        range=within(1, IMAGE_SIZE_MAX, note=" pixels (leave it out for the first image's size)"),
        aliases=("img_size", "resize"),
    )
    normalize: str = setting(
        "dataset",
        "inputs as (pixel - mean) / std: the training set's own, 0.5 / 0.5 (the PyTorch "
        "tutorial's), or none (0..1)",
        choices=NORMALIZE_MODES,
        aliases=("normalise", "normalization", "normalisation", "norm"),
    )
    augment: bool = setting(
        False, "random crop (pad 4), and a horizontal flip where `flip` says, batched on the device"
    )
    flip: str = setting(
        "auto",
        "augment's horizontal flip: auto = off for digits (mnist, kmnist, svhn), on for the rest",
        choices=FLIP_MODES,
        aliases=("hflip", "horizontal_flip", "mirror"),
    )
    amp: str = setting("off", "autocast precision (fp16 only on CUDA)", choices=AMP_MODES)
    channels_last: bool = setting(
        False, "NHWC memory format for convolutions", resumable=True, speed=True
    )
    compile: str = setting(
        "off", "torch.compile mode, or off", choices=COMPILE_MODES, resumable=True, speed=True
    )
    threads: int = setting(
        0,
        "CPU intra-op threads for this run (0 = choose from batch size; at most 4 per core)",
        range=at_least(0),
        here=_threads_here,
        resumable=True,
        speed=True,
    )
    val_size: int = setting(
        0,
        "training images held out for validation, stratified by class (0 = none)",
        range=at_least(0),
        aliases=("val_split", "validation_size"),
    )
    lr_schedule: str = setting(
        "constant",
        "the learning rate of each epoch",
        choices=LR_SCHEDULES,
        aliases=("scheduler", "schedule", "lr_scheduler"),
    )
    lr_step_epochs: int = setting(
        10,
        "step schedule: multiply lr by lr_gamma every this many epochs",
        range=at_least(1),
        aliases=("step_size",),
    )
    lr_gamma: float = setting(
        0.1, "step schedule's factor", range=within(0, 1, "(]"), aliases=("gamma",)
    )
    warmup_epochs: int = setting(
        0,
        "epochs ramping linearly from lr/10 up to lr before the schedule",
        range=at_least(0),
        aliases=("warmup",),
    )
    early_stop_patience: int = setting(
        0,
        "stop after this many epochs without a better val loss (0 = off)",
        range=at_least(0, " (0 turns early stopping off)"),
        aliases=("patience", "early_stopping"),
    )
    executor: str = setting(
        "auto",
        "where runs execute: worker processes, threads, or auto (processes for --detach)",
        choices=EXECUTORS,
        resumable=True,
        speed=True,
    )
    gpus: str = setting(
        "",
        'GPU indices runs may use, e.g. "0,2" ("" = every visible GPU)',
        allowed=GPUS,
        parse=_parse_gpus,
        resumable=True,
        speed=True,
        takes_list=True,
    )
    runs_per_gpu: int = setting(
        1, "runs of ours at once on one GPU", range=at_least(1), resumable=True, speed=True
    )
    min_free_gib: float = setting(
        0.0,
        "a GPU with less free memory than this gets no new run",
        range=at_least(0),
        resumable=True,
        speed=True,
    )
    cluster: str = setting(
        "",
        'a Ray cluster to run on ("" = this machine)',
        allowed=CLUSTERS,
        check=_check_cluster,
        resumable=True,
        speed=True,
    )
    gpu_share: float = setting(
        1.0,
        "GPUs a run asks Ray for: 0.25 packs four runs on one GPU",
        range=Range(_gpu_share, "a fraction of one GPU in (0, 1], or a whole number of GPUs"),
        resumable=True,
        speed=True,
    )
    retries: int = setting(
        1,
        "times a run whose Ray node died starts again from its last epoch",
        range=at_least(0),
        resumable=True,
        speed=True,
    )


SETTINGS = _declared(Settings)
SETTING_KEYS = tuple(s.name for s in SETTINGS)
# Settings that change how fast a run trains or where it reads from, not what it learns: a
# run that differs from today's settings only in these still counts as one of them.
SPEED_KEYS = frozenset(s.name for s in SETTINGS if s.speed)
# Settings that came after runs had recorded the fingerprint of what they learn
# (config.learned_key): at their default they stay out of it, so a stored run and a new one
# with the same settings are still seeds of one configuration. A new setting that changes
# what a run learns goes here.
ADDED_LATER = frozenset({"image_size", "model_args", "normalize", "flip"})
# What a resume may change: how the run trains, not what it trains. Everything else is fixed
# by the checkpoint, or would make the history disagree with config.toml.
RESUME_KEYS = tuple(s.name for s in SETTINGS if s.resumable)
# Settings whose value is itself a list: a [[sweep]] takes their list as the value.
LIST_SETTINGS = tuple(s.name for s in SETTINGS if s.takes_list)


@dataclass(frozen=True)
class Experiment(Settings):
    """One named experiment: its identity plus fully resolved settings."""

    name: str = setting("", "names the experiment's folders", check=_check_name)
    title: str = setting(
        "",
        "display title, any language (default: the name)",
        check=_printable,
        aliases=("label", "description"),
    )
    group: str = setting("", "experiments of a group are compared together", check=_check_group)
    reference: bool = setting(False, 'the group\'s baseline for "beyond noise?" (default: first)')
    sweep: str = setting("", "the [[sweep]] that made it", check=_check_group, generated=True)
    swept: tuple[str, ...] = setting(
        (), "the settings that sweep varies", parse=_parse_swept, generated=True
    )
    # Set on loading, never by hand; kept in a run's config.toml where a path needs it.
    base_dir: str = setting(
        "",
        "the experiments file's folder: model files and image folders are found from it",
        check=_printable,
        generated=True,
    )

    @property
    def display_title(self) -> str:
        """The title figures and tables show: `title`, or the name when it has none."""
        return self.title or self.name

    @property
    def label(self) -> str:
        """How a run is named in progress lines: `baseline`, or `baseline seed 2` for one
        of several seeds."""
        return f"{self.name} seed {self.seed}" if self.seeds else self.name

    def runs(self) -> list[Experiment]:
        """One experiment per run to train: one per seed of `seeds` (each keeping the list,
        with its own `seed`), else itself. A run's experiment expands to itself."""
        if len(self.seeds) <= 1:
            return [self]
        return [dataclasses.replace(self, seed=s, seeds=(s,)) for s in self.seeds]

    def settings(self) -> dict[str, Any]:
        """The resolved settings as a TOML-ready dict (None and empty lists dropped;
        model_args as a table; base_dir only where a path is read from it)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v != ()}
        if self.model_args:
            out["model_args"] = dict(self.model_args)
        if not self.reads_paths:
            out.pop("base_dir", None)
        return out

    @property
    def reads_paths(self) -> bool:
        """Whether a setting names a path found from `base_dir`: a model file or an image
        folder."""
        spec = user_model.parse_spec(self.model)
        return (spec is not None and spec.is_file) or folder.is_folder(self.dataset)

    def differing(self, others: list[Experiment]) -> dict[str, Any]:
        """The settings whose value is not the same across `others` (self included)."""
        return {
            k: getattr(self, k) for k in SETTING_KEYS if len({getattr(e, k) for e in others}) > 1
        }


IDENTITY = _declared(Experiment)
_ALL_SETTINGS = {s.name: s for s in SETTINGS + IDENTITY}
GENERATED_KEYS = tuple(s.name for s in IDENTITY if s.generated)  # written by a [[sweep]]
IDENTITY_KEYS = tuple(s.name for s in IDENTITY if not s.generated)
EXPERIMENT_KEYS = IDENTITY_KEYS + SETTING_KEYS
# Names people reach for from other tools, mapped to ours, for "did you mean".
ALIASES = {alias: s.name for s in _ALL_SETTINGS.values() for alias in s.aliases}


def declared(key: str) -> Setting:
    """The declaration of setting (or identity key) `key`; KeyError for an unknown key."""
    return _ALL_SETTINGS[key]


def suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    """` (did you mean 'lr'?)` for a misspelt or aliased `word`, else ""."""
    norm = word.strip().lower().replace("-", "_")
    guess = ALIASES.get(norm)
    if guess not in choices:
        close = difflib.get_close_matches(norm, list(choices), n=1, cutoff=0.6)
        guess = close[0] if close else None
    return f" (did you mean {guess!r}?)" if guess and guess != word else ""


def check_value(key: str, value: Any) -> Any:
    """Validate one setting; return its normalised value or raise ConfigError (no position)."""
    s = declared(key)
    if s.parse:
        return s.parse(value)
    value = _check_type(s, value)
    if s.choices:
        if value in s.choices:
            return value
        if not s.beyond:  # else `check` judges what lies beyond the choices
            raise ConfigError(
                f"unknown {key} {value!r}{suggest(value, s.choices)} "
                f"(allowed: {', '.join(s.choices)})"
            )
    elif s.range:
        _need(key, value, s.range.test(value), s.range.text)
    if s.check:
        s.check(key, value)
    return value


def check_new(key: str, value: Any) -> Any:
    """`check_value`, and the limits of this machine (`threads`): for a setting being written,
    not for a stored run's, which may have been made on a larger machine."""
    value = check_value(key, value)
    here = declared(key).here
    if here:
        here(value)
    return value


def _check_type(s: Setting, value: Any) -> Any:
    """The value as its setting's type (an int becomes a float where a number is wanted), or
    ConfigError saying which type the setting takes."""
    if s.type in _TYPES:
        wanted = _TYPES[s.type][0]
        if not isinstance(value, wanted) or (isinstance(value, bool) and wanted is not bool):
            raise ConfigError(f"{s.name!r} must be {s.type_name}, got {value!r}")
    if s.type == "float":
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{s.name!r} must be a finite number, got {value!r}")
    return value


def gpu_list(spec: str) -> list[int]:
    """The indices of a checked `gpus` value ([] = every visible GPU)."""
    return [int(p) for p in spec.split(",") if p]


def _shown(value: Any) -> str:
    """A default as the README's table writes it: TOML-like, "unset" for None."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{list(value) if isinstance(value, tuple) else value}`"


def markdown_table() -> str:
    """The README's table of settings: key, default, allowed values, resume, help."""
    rows = [
        "| setting | default | allowed | on resume | what it does |",
        "|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        allows = s.allows.replace("|", "\\|")
        resume = "may change" if s.resumable else "fixed"
        rows.append(f"| `{s.name}` | {_shown(s.default)} | {allows} | {resume} | {s.help} |")
    return "\n".join(rows) + "\n"
