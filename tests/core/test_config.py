"""experiments.toml: the shipped study, strict loading, one-line errors with positions."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnntui.core.config import (
    SETTING_KEYS,
    ConfigError,
    Settings,
    apply_overrides,
    load,
    parse,
    parse_override,
)
from cnntui.core.text import unsafe_char

ROOT = Path(__file__).resolve().parents[2]

# The report's Table 1: name -> (lr, epochs, momentum, weight_decay, dropout, title).
TABLE1 = {
    "baseline": (0.001, 5, 0.9, 0.01, 0.5, "基准配置"),
    "high-lr": (0.01, 5, 0.9, 0.01, 0.5, "高学习率"),
    "low-lr": (0.0001, 5, 0.9, 0.01, 0.5, "低学习率"),
    "more-epochs": (0.001, 10, 0.9, 0.01, 0.5, "更多 epoch"),
    "no-reg": (0.001, 5, 0.9, 0.0, 0.0, "无正则化"),
    "strong-reg": (0.001, 5, 0.9, 0.1, 0.7, "强正则化"),
    "no-momentum": (0.001, 5, 0.0, 0.01, 0.5, "无动量"),
}


def test_shipped_file_reproduces_table1() -> None:
    file = load(ROOT / "experiments.toml")
    task3 = [e for e in file.experiments if e.group == "hyperparameters"]
    assert [e.name for e in task3] == list(TABLE1)
    for e in task3:
        lr, epochs, momentum, wd, dropout, title = TABLE1[e.name]
        assert (e.lr, e.epochs, e.momentum, e.weight_decay, e.dropout) == (
            lr,
            epochs,
            momentum,
            wd,
            dropout,
        )
        assert e.title == title
        assert (e.model, e.dataset, e.optimizer, e.batch_size) == ("lenet", "cifar10", "sgd", 4)


def test_shipped_file_has_the_task4_pair() -> None:
    file = load(ROOT / "experiments.toml")
    arch = [e for e in file.experiments if e.group == "architectures"]
    assert sorted(e.model for e in arch) == ["lenet", "resnet"]
    for e in arch:
        # The report's Task 4 configuration: 10 epochs, SGD lr 0.001, momentum 0.9, L2 0.01.
        assert (e.epochs, e.optimizer, e.lr, e.momentum, e.weight_decay, e.dropout) == (
            10,
            "sgd",
            0.001,
            0.9,
            0.01,
            0.5,
        )
    assert len({e.batch_size for e in arch}) == 1


def test_select_by_name_group_and_all() -> None:
    file = load(ROOT / "experiments.toml")
    assert [e.name for e in file.select("high-lr,baseline")] == ["high-lr", "baseline"]
    assert len(file.select("architectures")) == 2
    assert len(file.select("all")) == len(file.experiments)
    with pytest.raises(ConfigError, match=r"no experiment or group named 'basline'.*did you mean"):
        file.select("basline")


def test_defaults_flow_into_experiments_and_overrides_win() -> None:
    file = parse('[defaults]\nlr = 0.5\nepochs = 3\n[[experiment]]\nname = "a"\nepochs = 7\n')
    (e,) = file.experiments
    assert (e.lr, e.epochs, e.title, e.display_title) == (0.5, 7, "", "a")


BAD = [
    # (document, expected message, line, column)
    ("[defaults]\nlr = \n", "TOML syntax error", 2, 6),
    (
        '[[experiment]]\nname = "a"\n  learning_rate = 0.1\n',
        "unknown key 'learning_rate' (did you mean 'lr'?)",
        3,
        3,
    ),
    ('[[experiment]]\nname = "a"\nepochs = "ten"\n', "'epochs' must be an integer", 3, 1),
    ('[[experiment]]\nname = "a"\nepochs = 2.5\n', "'epochs' must be an integer", 3, 1),
    ('[[experiment]]\nname = "a"\nlr = true\n', "'lr' must be a number", 3, 1),
    ('[[experiment]]\nname = "a"\nlr = 0\n', "'lr' = 0.0 is out of range: must be > 0", 3, 1),
    ('[[experiment]]\nname = "a"\nlr = -1e-3\n', "must be > 0", 3, 1),
    ('[[experiment]]\nname = "a"\nlr = nan\n', "finite", 3, 1),
    ('[[experiment]]\nname = "a"\ndropout = 1.0\n', "must be in [0, 1)", 3, 1),
    ('[[experiment]]\nname = "a"\ndropout = -0.1\n', "must be in [0, 1)", 3, 1),
    ('[[experiment]]\nname = "a"\nepochs = 0\n', "must be in [1, 100000]", 3, 1),
    ('[[experiment]]\nname = "a"\nbatch_size = 0\n', "must be >= 1", 3, 1),
    ('[[experiment]]\nname = "a"\nmomentum = 1.5\n', "must be in [0, 1)", 3, 1),
    ('[[experiment]]\nname = "a"\nweight_decay = -1\n', "must be >= 0", 3, 1),
    ('[[experiment]]\nname = "a"\ntrain_size = 0\n', "must be >= 1", 3, 1),
    (
        '[[experiment]]\nname = "a"\nmodel = "resnet18"\n',
        "unknown model 'resnet18' (did you mean 'resnet'?) (allowed: lenet, resnet, or a model of "
        "your own: FILE.py:NAME or MODULE:NAME)",
        3,
        1,
    ),
    ('[[experiment]]\nname = "a"\ndataset = "imagenet"\n', "unknown dataset 'imagenet'", 3, 1),
    ('[[experiment]]\nname = "a"\noptimizer = "rmsprop"\n', "allowed: sgd, adam, adamw", 3, 1),
    ('[[experiment]]\nname = "a"\ndevice = "gpu"\n', "unknown device 'gpu'", 3, 1),
    ('[[experiment]]\nname = "a"\n[[experiment]]\nname = "a"\n', "duplicate experiment", 4, 1),
    ('[[experiment]]\nname = "../x"\n', "'name' = '../x' is out of range", 2, 1),
    ('[[experiment]]\nname = "a/b"\n', "'name' = 'a/b' is out of range", 2, 1),
    ('[[experiment]]\nname = ""\n', "'name' = '' is out of range", 2, 1),
    ('[[experiment]]\nname = ".."\n', "'name' = '..' is out of range", 2, 1),
    ('[[experiment]]\ntitle = "x"\n', "experiment #1 has no 'name'", 1, 1),
    ('[defaults]\nname = "x"\n', "unknown key 'name'", 2, 1),
    ("[defualts]\nlr = 0.1\n", "unknown top-level key 'defualts' (did you mean 'defaults'?)", 1, 1),
    ("[[experiment]]\nname = 3\n", "'name' must be a string", 2, 1),
    # Text shown in terminals holds no control characters: the error shows which, escaped.
    (
        '[[experiment]]\nname = "a"\ntitle = "\\u001b]0;X\\u0007\\u001b[2J"\n',
        "'title' holds the control character '\\x1b' (character 1)",
        3,
        1,
    ),
    ('[[experiment]]\nname = "a"\ntitle = "ab\\u007f"\n', "character '\\x7f' (character 3)", 3, 1),
    ('[[experiment]]\nname = "a"\ntitle = "x\\u009b2J"\n', "character '\\x9b'", 3, 1),
    ('[[experiment]]\nname = "a"\ntitle = "a\\tb"\n', "character '\\x09'", 3, 1),
    ('[[experiment]]\nname = "a"\ntitle = "abc\\u202eexe.txt"\n', "character '\\u202e'", 3, 1),
    ('[[experiment]]\nname = "a"\ntitle = "\\u2028"\n', "character '\\u2028'", 3, 1),
    ('[defaults]\ndata_dir = "d\\u001b[2J"\n', "'data_dir' holds the control character", 2, 1),
    # Names and groups name folders: short, and not the exports root's files.
    (f'[[experiment]]\nname = "{"n" * 65}"\n', "'name' is 65 characters long; at most 64", 2, 1),
    (f'[[experiment]]\nname = "a"\ngroup = "{"g" * 65}"\n', "'group' is 65 characters", 3, 1),
    ('[[experiment]]\nname = "results.csv"\n', "is the name of a file in the exports", 2, 1),
    ('[[experiment]]\nname = "Results.MD"\n', "is the name of a file in the exports", 2, 1),
    ('[[experiment]]\nname = "README.md"\n', "is the name of a file in the exports", 2, 1),
    ('[[experiment]]\nname = "a"\ngroup = "results.md"\n', "'group' = 'results.md' is", 3, 1),
    (
        '[[experiment]]\nname = "a"\ngroup = "g"\n[[experiment]]\nname = "b"\n  group = "a"\n',
        "group 'a' is also the name of experiment #1 ('a'); both would export into exports/a/",
        6,
        3,
    ),
    (
        '[[experiment]]\nname = "a"\n[[experiment]]\nname = "ungrouped"\ngroup = "g"\n',
        "name 'ungrouped' is the folder of the experiments without a group",
        4,
        1,
    ),
    (
        '[[experiment]]\nname = "a"\ngroup = "G"\n[[experiment]]\nname = "b"\ngroup = "g"\n',
        "group 'g' differs from group 'G' only in case",
        6,
        1,
    ),
    (
        '[[experiment]]\nname = "Base"\n[[experiment]]\nname = "base"\n',
        "duplicate experiment name 'base' (first used by experiment #1 as 'Base'",
        4,
        1,
    ),
    # Seeds are unsigned 64-bit: refused at load, not when the run starts.
    ("[defaults]\nseed = 18446744073709551616\n", "must be in [0, 2^64 - 1]", 2, 1),
    ("[defaults]\nseed = -1\n", "must be in [0, 2^64 - 1]", 2, 1),
    # A byte-order mark is skipped: positions are those an editor shows.
    ("\ufeff[defaults]\nepochs = 0\n", "'epochs' = 0 is out of range", 2, 1),
]


@pytest.mark.parametrize(("doc", "message", "line", "col"), BAD)
def test_bad_input_is_one_line_with_position(doc: str, message: str, line: int, col: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse(doc, "exp.toml")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"exp.toml:{line}:{col}: "), text
    assert message in text


def test_what_is_allowed_near_the_limits() -> None:
    doc = (
        "\ufeff[defaults]\nseed = 18446744073709551615\n\n"
        f'[[experiment]]\nname = "{"n" * 64}"\ngroup = "g"\ntitle = "👩‍💻 基准配置 ok"\n\n'
        '[[experiment]]\nname = "h"\ngroup = "g"\n'
    )
    file = parse(doc, "exp.toml")
    assert file.defaults.seed == 2**64 - 1 and file.experiments[0].title == "👩‍💻 基准配置 ok"
    assert [e.name for e in file.experiments] == ["n" * 64, "h"]


def test_files_that_are_not_regular_or_too_big_are_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # nothing ever writes to it: reading would wait forever
    with pytest.raises(ConfigError, match=r"fifo\.toml: not a regular file"):
        load(fifo)
    with pytest.raises(ConfigError, match="/dev/zero: not a regular file"):
        load("/dev/zero")
    big = tmp_path / "big.toml"
    big.write_bytes(b"# padding\n" * 200_000)  # 2 MB of comments
    with pytest.raises(ConfigError, match=r"big\.toml: larger than 1 MiB"):
        load(big)


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes('\ufeff[defaults]\nepochs = 3\n\n[[experiment]]\nname = "a"\n'.encode())
    assert load(path).get("a").epochs == 3


def test_run_all_on_a_file_without_experiments_says_so() -> None:
    with pytest.raises(ConfigError, match=r"--run all: exp\.toml has no \[\[experiment\]\] to run"):
        parse("[defaults]\nepochs = 1\n", "exp.toml").select("all")


@pytest.mark.parametrize("spec", ["", " ", ",", " , "])
def test_an_empty_selection_is_an_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="--run: name at least one experiment"):
        parse('[[experiment]]\nname = "a"\n', "exp.toml").select(spec)


def test_missing_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        load(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[[experiment]]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(bad)


def test_overrides_parse_as_toml_or_bare_strings() -> None:
    assert parse_override("epochs=1") == ("epochs", 1)
    assert parse_override("lr=1e-3") == ("lr", 0.001)
    assert parse_override("dataset=synthetic") == ("dataset", "synthetic")
    assert parse_override("augment=true") == ("augment", True)
    assert parse_override("device=cuda:1") == ("device", "cuda:1")
    assert parse_override("lr_schedule=onecycle") == ("lr_schedule", "onecycle")
    assert parse_override("lr_gamma=1") == ("lr_gamma", 1.0)
    assert parse_override("val_size=500") == ("val_size", 500)


def test_study_settings_default_to_todays_training() -> None:
    s = Settings()
    assert (s.val_size, s.lr_schedule, s.warmup_epochs, s.early_stop_patience) == (
        0,
        "constant",
        0,
        0,
    )
    doc = '[defaults]\nlr_schedule = "step"\nlr_step_epochs = 3\nlr_gamma = 0.5\n'
    doc += '[[experiment]]\nname = "a"\nval_size = 100\nwarmup_epochs = 2\n'
    e = parse(doc).get("a")
    assert (e.lr_schedule, e.lr_step_epochs, e.lr_gamma, e.val_size, e.warmup_epochs) == (
        "step",
        3,
        0.5,
        100,
        2,
    )
    with pytest.raises(ConfigError, match=r"^experiments.toml:2:1: 'lr_gamma' = 2.0 is out"):
        parse("[defaults]\nlr_gamma = 2.0\n")


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("learning_rate=0.1", "unknown key 'learning_rate' (did you mean 'lr'?)"),
        ("epochs=ten", "'ten' is not an integer"),
        ("epochs=0", "must be in [1, 100000]"),
        ("lr", "expected KEY=VALUE"),
        ("dataset=imagenet", "unknown dataset 'imagenet'"),
        ("name=x", "unknown key 'name'"),
        ("val_size=-1", "'val_size' = -1 is out of range: must be >= 0"),
        ("val_size=0.5", "'val_size' must be an integer, got 0.5"),
        ("lr_schedule=linear", "unknown lr_schedule 'linear' (allowed: constant, step, cosine,"),
        ("lr_schedule=cosin", "(did you mean 'cosine'?)"),
        ("lr_step_epochs=0", "'lr_step_epochs' = 0 is out of range: must be >= 1"),
        ("lr_gamma=0", "'lr_gamma' = 0.0 is out of range: must be in (0, 1]"),
        ("lr_gamma=1.5", "'lr_gamma' = 1.5 is out of range: must be in (0, 1]"),
        ("warmup_epochs=-2", "'warmup_epochs' = -2 is out of range: must be >= 0"),
        ("early_stop_patience=-1", "must be >= 0 (0 turns early stopping off)"),
        ("patience=3", "unknown key 'patience' (did you mean 'early_stop_patience'?)"),
    ],
)
def test_bad_overrides(item: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_override(item)
    assert str(info.value).startswith(f"--set {item!r}: ")
    assert message in str(info.value)


# --- property: arbitrary documents only ever raise ConfigError ----------------------------

keys = st.sampled_from([*SETTING_KEYS, "name", "title", "group", "bogus", "lr "])
scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(
        st.text(string.ascii_letters, min_size=1, max_size=5), st.integers(), max_size=2
    ),
)
tables = st.dictionaries(keys, scalars, max_size=6)
documents = st.fixed_dictionaries(
    {},
    optional={
        "defaults": st.one_of(tables, scalars),
        "experiment": st.one_of(st.lists(tables, max_size=4), scalars),
        "other": scalars,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_loader_raises_only_config_error_on_any_document(doc: dict) -> None:
    text = tomli_w.dumps(doc)
    try:
        parse(text, "fuzz.toml")
    except ConfigError as e:
        assert "\n" not in str(e) and unsafe_char(str(e)) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_loader_raises_only_config_error_on_any_text(text: str) -> None:
    try:
        parse(text, "fuzz.toml")
    except ConfigError as e:
        assert "\n" not in str(e) and unsafe_char(str(e)) is None


# --- settings that parse but could never run (issue 22) ------------------------------------

CORES = os.cpu_count() or 1

UNRUNNABLE = [
    # (document, expected message, line, column)
    (
        f"[defaults]\nthreads = {4 * CORES + 1}\n",
        f"'threads' = {4 * CORES + 1} is out of range: must be in [0, {4 * CORES}] "
        f"(4 per core, {CORES} cores here; 0 chooses from the batch size)",
        2,
        1,
    ),
    ('[[experiment]]\nname = "a"\nthreads = 32768\n', "'threads' = 32768 is out of range", 3, 1),
    ("[defaults]\nepochs = 100000000000000000000\n", "must be in [1, 100000]", 2, 1),
    ('[[experiment]]\nname = "a"\ngpus = [0, 0]\n', "'gpus' = [0, 0] names GPU 0 twice", 3, 1),
    ('[defaults]\ngpus = "1,2,1"\n', "'gpus' = '1,2,1' names GPU 1 twice", 2, 1),
    ('[defaults]\ncluster = "head:0"\n', "port 0 is out of range: ports are 1 to 65535", 2, 1),
    ('[defaults]\ncluster = "head:99999"\n', "port 99999 is out of range", 2, 1),
    ('[defaults]\ncluster = "ray://head:0"\n', "port 0 is out of range", 2, 1),
    ('[defaults]\ncluster = "[::1]:70000"\n', "port 70000 is out of range", 2, 1),
    # Cross-setting rules apply to the merged settings, at the key that breaks them.
    (
        '[defaults]\ntrain_size = 200\n[[experiment]]\nname = "a"\nval_size = 200\n',
        "'val_size' = 200 leaves experiment 'a' no images to train on: it must be less than "
        "its 200 training images (train_size = 200 at line 2)",
        5,
        1,
    ),
    (
        '[defaults]\nval_size = 500\n[[experiment]]\nname = "a"\n  train_size = 300\n',
        "'train_size' = 300 leaves experiment 'a' no images to train on",
        5,
        3,
    ),
    (
        '[[experiment]]\nname = "a"\ndataset = "fashion-mnist"\nval_size = 60000\n',
        "must be less than its 60000 training images (train_size not set: the whole dataset)",
        4,
        1,
    ),
    (
        '[defaults]\nepochs = 3\n[[experiment]]\nname = "a"\nwarmup_epochs = 4\n',
        "'warmup_epochs' = 4 is more than the epochs of experiment 'a' (3 at line 2)",
        5,
        1,
    ),
    (
        '[defaults]\nwarmup_epochs = 3\n[[experiment]]\nname = "a"\nepochs = 2\n',
        "'epochs' = 2 is less than the warmup_epochs of experiment 'a' (3 at line 2)",
        5,
        1,
    ),
    (
        '[defaults]\nepochs = 2\n\n[[sweep]]\nname = "s"\nwarmup_epochs = [1, 2, 3]\n',
        "'warmup_epochs' = 3 is more than the epochs of experiment 's.warmup_epochs=3' (2 at",
        6,
        1,
    ),
    # Early stopping needs a validation loss to watch: the test set must not choose the model.
    (
        '[[experiment]]\nname = "a"\nepochs = 5\n  early_stop_patience = 2\n',
        "'early_stop_patience' = 2 needs a validation split, and experiment 'a' has none "
        "(val_size not set): early stopping watches the validation loss",
        4,
        3,
    ),
    (
        '[defaults]\nearly_stop_patience = 2\n[[experiment]]\nname = "a"\nval_size = 0\n',
        "'val_size' = 0 leaves experiment 'a' no validation split for its early_stop_patience "
        "= 2 at line 2",
        5,
        1,
    ),
    # A sweep's grid is counted before it is expanded.
    (
        '[[experiment]]\nname = "a"\n\n[[sweep]]\nname = "big"\n'
        f"lr = [{', '.join(f'0.{i:02d}' for i in range(1, 100))}]\n"
        f"weight_decay = [{', '.join(f'0.0{i:02d}' for i in range(1, 12))}]\n",
        "[[sweep]] 'big' makes 1,089 runs (99 lr x 11 weight_decay); at most 1,000 runs a sweep",
        4,
        1,
    ),
    (
        '[defaults]\nseeds = [0, 1, 2]\n[[sweep]]\nname = "s"\n'
        f"lr = [{', '.join(f'0.{i}' for i in range(1, 10))}]\n"
        f"dropout = [{', '.join(f'0.{i}' for i in range(0, 9))}]\n"
        f"momentum = [{', '.join(f'0.{i}' for i in range(0, 5))}]\n",
        "makes 1,215 runs (9 lr x 9 dropout x 5 momentum x 3 seeds); at most 1,000",
        3,
        1,
    ),
]


@pytest.mark.parametrize(("doc", "message", "line", "col"), UNRUNNABLE)
def test_settings_that_cannot_run_are_refused_at_their_line(
    doc: str, message: str, line: int, col: int
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(doc, "exp.toml")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"exp.toml:{line}:{col}: "), text
    assert message in text, text


def test_a_huge_sweep_is_refused_without_expanding_it() -> None:
    values = ", ".join(str(i) for i in range(1, 1001))
    doc = f'[[sweep]]\nname = "huge"\nbatch_size = [{values}]\nepochs = [{values}]\n'
    with pytest.raises(ConfigError, match=r"^exp.toml:1:1: .* makes 1,000,000 runs") as info:
        parse(doc, "exp.toml")
    assert "1000 batch_size x 1000 epochs" in str(info.value)


def test_a_file_of_many_sweeps_is_bounded_as_a_whole() -> None:
    sweep = '[[sweep]]\nname = "s{}"\nlr = [{}]\n'
    values = ", ".join(f"0.{i:04d}" for i in range(1, 1001))
    doc = "".join(sweep.format(i, values) for i in range(11))
    with pytest.raises(ConfigError) as info:
        parse(doc, "exp.toml")
    assert str(info.value).startswith("exp.toml:31:1: [[sweep]] 's10' brings the file to 11,000")
    assert "at most 10,000 runs a file" in str(info.value)


def test_what_is_allowed_at_the_new_limits() -> None:
    doc = (
        f"[defaults]\nthreads = {4 * CORES}\nepochs = 100000\ngpus = [0, 2]\n"
        'cluster = "head:65535"\ntrain_size = 200\nval_size = 199\nwarmup_epochs = 100000\n'
        '[[experiment]]\nname = "a"\n[[sweep]]\nname = "s"\nepochs = [1, 2]\nwarmup_epochs = 1\n'
        "val_size = [0, 100]\n"
        f"lr = [{', '.join(f'0.{i:03d}' for i in range(1, 251))}]\n"
    )
    file = parse(doc, "exp.toml")
    a = file.get("a")
    assert (a.threads, a.epochs, a.gpus, a.cluster, a.val_size) == (
        4 * CORES,
        100000,
        "0,2",
        "head:65535",
        199,
    )
    assert len(file.experiments) == 1 + 1000
    assert parse('[defaults]\ncluster = "ray://[::1]"\n').defaults.cluster == "ray://[::1]"


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("threads=32768", f"'threads' = 32768 is out of range: must be in [0, {4 * CORES}]"),
        ("epochs=100000000000000000000", "'epochs' = 100000000000000000000 is out of range"),
        ("gpus=0,0", "'gpus' = '0,0' names GPU 0 twice"),
        ("gpus=[3, 3]", "'gpus' = [3, 3] names GPU 3 twice"),
        ("cluster=head:99999", "port 99999 is out of range: ports are 1 to 65535"),
        ("cluster=ray://head:0", "port 0 is out of range"),
    ],
)
def test_overrides_that_cannot_run_are_one_line(item: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_override(item)
    assert str(info.value).startswith(f"--set {item!r}: "), info.value
    assert message in str(info.value)


def test_overrides_are_checked_with_the_settings_they_join() -> None:
    file = parse(
        '[defaults]\ntrain_size = 200\nepochs = 4\n[[experiment]]\nname = "a"\nval_size = 100\n'
        '[[experiment]]\nname = "b"\nwarmup_epochs = 2\n'
    )
    with pytest.raises(ConfigError) as info:
        apply_overrides(file.experiments, {"train_size": 100})
    assert str(info.value) == (
        "--set 'train_size=100': 'train_size' = 100 leaves experiment 'a' no images to train on: "
        "val_size (100) must be less than its 100 training images"
    )
    with pytest.raises(ConfigError, match=r"^--set 'val_size=500': 'val_size' = 500 leaves"):
        apply_overrides(file.experiments, {"val_size": 500})
    with pytest.raises(ConfigError) as info:
        apply_overrides(file.experiments, {"epochs": 1})
    assert str(info.value) == (
        "--set 'epochs=1': 'epochs' = 1 is less than the warmup_epochs of experiment 'b' (2); "
        "warm-up takes the first warmup_epochs of the run's epochs"
    )
    # A combination the override makes valid is accepted, and so is one it does not touch.
    (a, b) = apply_overrides(file.experiments, {"train_size": 1000, "val_size": 500})
    assert (a.train_size, a.val_size, b.val_size) == (1000, 500, 500)
    assert apply_overrides(file.experiments, {"lr": 0.5})[0].lr == 0.5
