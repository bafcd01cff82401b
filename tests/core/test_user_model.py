"""The user's own model (`model = "mynet.py:TinyNet"`): its checks before anything runs, at
the key's file:line:col; training it; a changed file reloaded; a resume after it changed."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cnntui.core import data, engine, models, user_model
from cnntui.core.config import ConfigError, apply_overrides, check_models, load, parse_override
from cnntui.core.events import BatchLosses, Failed, Finished
from cnntui.runs.store import ResumeError, RunStore
from tests.helpers import cnntui

TINY_NET = """\
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, width=8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )

    def forward(self, x):
        return self.body(x)


def seven_columns(width=4):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(7))


def broken(width=4):
    raise RuntimeError("width must be even")
"""

TOML = """\
[defaults]
dataset = "synthetic"
train_size = 64
test_size = 32
batch_size = 16
epochs = 1
device = "cpu"

[[experiment]]
name = "mine"
model = "{model}"
{extra}
"""


def study(tmp_path: Path, model: str = "mynet.py:TinyNet", extra: str = "") -> Path:
    """An experiments file beside mynet.py (TINY_NET) with one experiment, `mine`."""
    (tmp_path / "mynet.py").write_text(TINY_NET)
    path = tmp_path / "experiments.toml"
    path.write_text(TOML.format(model=model, extra=extra))
    return path


@pytest.mark.parametrize(
    ("model", "extra", "at", "message"),
    [
        ("nothere.py:TinyNet", "", "11:1", "nothere.py does not exist"),
        (
            "mynet.py:BigNet",
            "",
            "11:1",
            "mynet.py defines no 'BigNet' at its top level (it defines: TinyNet, "
            "seven_columns, broken)",
        ),
        (
            "mynet.py:TinyNet",
            "model_args = { depth = 3 }",
            "12:1",
            "mynet.py:TinyNet takes no argument 'depth' (it takes: width)",
        ),
        (
            "mynet.py:TinyNet",
            "model_args = { num_classes = 3 }",
            "12:1",
            "'model_args' sets 'num_classes'; cnntui passes num_classes and in_channels",
        ),
        (
            "lenet",
            "model_args = { width = 3 }",
            "12:1",
            "'model_args' is for a model of your own; the built-in 'lenet' takes none",
        ),
        ("no_such_module_here:Net", "", "11:1", "module 'no_such_module_here' cannot be found"),
        ("mynet.py:Tiny-Net", "", "11:1", "unknown model 'mynet.py:Tiny-Net'"),
    ],
)
def test_a_model_that_cannot_be_built_is_refused_at_its_key_without_running_it(
    tmp_path, model, extra, at, message
):
    path = study(tmp_path, model, extra)
    (tmp_path / "mynet.py").write_text(TINY_NET + "\nraise SystemExit('ran the file')\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}:{at}: ")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            "mynet.py:broken",
            "experiment 'mine': building mynet.py:broken failed: RuntimeError: width must be even",
        ),
        (
            "mynet.py:seven_columns",
            "experiment 'mine': mynet.py:seven_columns gives (2, 7) for a batch of shape "
            "(2, 3, 32, 32) (synthetic); it must give (2, 10): one column per class",
        ),
    ],
)
def test_a_model_that_fails_to_build_or_has_the_wrong_columns_is_refused_before_training(
    tmp_path, model, message
):
    path = study(tmp_path, model)
    file = load(path)
    with pytest.raises(ConfigError) as err:
        check_models(file.experiments, file, data.experiment_shape)
    assert str(err.value) == f"{path}:11:1: {message}"


def test_model_args_come_from_set_and_sweeps_and_reach_the_model(tmp_path):
    path = study(tmp_path, extra="model_args = { width = 4 }")
    file = load(path)
    key, value = parse_override("model_args={width=16}")
    (exp,) = apply_overrides(file.experiments, {key: value})
    assert exp.model_args == (("width", 16),)
    net = models.build(exp.model, (3, 32, 32), 10, 0.0, exp.model_args, exp.base_dir)
    assert net.body[0].out_channels == 16
    with pytest.raises(ConfigError, match=r"--set 'model_args=\{depth=2\}': .*'depth'"):
        apply_overrides(file.experiments, dict([parse_override("model_args={depth=2}")]))
    sweep = '[[sweep]]\nname = "wide"\nmodel = "mynet.py:TinyNet"\n'
    sweep += "model_args = [{ width = 4 }, { width = 8 }]\n"
    path.write_text(path.read_text() + sweep)
    swept = [e for e in load(path).experiments if e.sweep == "wide"]
    assert [e.name for e in swept] == ["wide.model_args=width-4", "wide.model_args=width-8"]
    assert [e.model_args for e in swept] == [(("width", 4),), (("width", 8),)]


@pytest.mark.slow
def test_a_user_model_trains_an_epoch_and_records_its_exact_size_and_file(tmp_path):
    path = study(tmp_path, extra="model_args = { width = 6 }")
    (exp,) = load(path).experiments
    store = RunStore(tmp_path / "runs")
    events = list(engine.train(exp, threading.Event(), store.create(exp)))
    assert isinstance(events[-1], Finished), events[-1]
    net = models.build(exp.model, (3, 32, 32), 10, 0.0, exp.model_args, exp.base_dir)
    summary = store.latest("mine").summary
    assert summary.params == sum(p.numel() for p in net.parameters())
    assert summary.model == "mynet.py:TinyNet" and summary.epochs_done == 1
    assert summary.model_file == str(tmp_path / "mynet.py")
    assert summary.model_hash == user_model.file_hash(tmp_path / "mynet.py")


def test_a_changed_model_file_is_built_from_its_new_source_in_the_same_process(tmp_path):
    study(tmp_path)
    spec = user_model.parse_spec("mynet.py:TinyNet")
    assert spec is not None
    first = user_model.build(spec, (), str(tmp_path), (3, 32, 32), 10)
    (tmp_path / "mynet.py").write_text(TINY_NET.replace("width=8", "width=5"))
    second = user_model.build(spec, (), str(tmp_path), (3, 32, 32), 10)
    assert (first.body[0].out_channels, second.body[0].out_channels) == (8, 5)
    assert type(first).__module__ != type(second).__module__


def test_a_model_file_imports_its_siblings(tmp_path):
    (tmp_path / "blocks.py").write_text("from torch import nn\nWIDTH = 3\n")
    (tmp_path / "net.py").write_text(
        "from torch import nn\nimport blocks\n\n"
        "def make(num_classes):\n    return nn.Sequential(nn.Flatten(), "
        "nn.Linear(3 * 32 * 32, num_classes))\n"
    )
    spec = user_model.parse_spec("net.py:make")
    assert spec is not None
    net = user_model.build(spec, (), str(tmp_path), (3, 32, 32), 4)
    assert net[1].out_features == 4


def _sibling_study(folder: Path, width: int) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "blocks.py").write_text(f"WIDTH = {width}\n")
    (folder / "net.py").write_text(
        "from torch import nn\nimport blocks\n\n"
        "def make(num_classes):\n    return nn.Sequential(nn.Flatten(), "
        "nn.Linear(3 * 32 * 32, blocks.WIDTH), nn.Linear(blocks.WIDTH, num_classes))\n"
    )


def test_a_sibling_is_read_as_it_is_now_and_from_its_own_folder(tmp_path):
    """A long-lived process (the TUI, a warm or Ray worker) never runs a stale or another
    folder's sibling: after `blocks.py` changed, and for a second study whose model imports
    a `blocks` of its own, each build reads the file beside its model as it is now."""
    spec = user_model.parse_spec("net.py:make")
    assert spec is not None
    _sibling_study(tmp_path / "a", 3)
    first = user_model.build(spec, (), str(tmp_path / "a"), (3, 32, 32), 4)
    (tmp_path / "a" / "blocks.py").write_text("WIDTH = 5\n")  # changed, net.py not
    changed = user_model.build(spec, (), str(tmp_path / "a"), (3, 32, 32), 4)
    _sibling_study(tmp_path / "b", 7)
    other = user_model.build(spec, (), str(tmp_path / "b"), (3, 32, 32), 4)
    assert [m[1].out_features for m in (first, changed, other)] == [3, 5, 7]


@pytest.mark.slow
def test_a_resume_after_the_model_file_changed_is_refused_naming_the_file(tmp_path):
    path = study(tmp_path)
    (exp,) = apply_overrides(load(path).experiments, {"epochs": 3})
    store = RunStore(tmp_path / "runs")
    cancel = threading.Event()
    for event in engine.train(exp, cancel, store.create(exp)):
        if isinstance(event, BatchLosses):
            cancel.set()
    record = store.latest("mine", unfinished=True)
    assert record is not None
    (tmp_path / "mynet.py").write_text(TINY_NET + "\n# tuned\n")
    with pytest.raises(ResumeError) as err:
        store.resume(record, {})
    assert f"its model file {tmp_path / 'mynet.py'} changed since the run started" in str(err.value)
    assert "--resume-changed-model" in str(err.value)
    run, _ = store.resume(record, {}, model_changed_ok=True)
    assert run.summary.model_hash == user_model.file_hash(tmp_path / "mynet.py")
    run.release()


@pytest.mark.process
@pytest.mark.slow
def test_the_command_line_refuses_a_model_with_the_wrong_columns_in_one_line(tmp_path):
    study(tmp_path, "mynet.py:seven_columns")
    result = cnntui("--run", "mine", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    err = result.stderr.strip()
    assert "\n" not in err
    assert "experiments.toml:11:1: experiment 'mine': mynet.py:seven_columns gives (2, 7)" in err
    assert not (tmp_path / "runs").exists()


def test_a_failed_build_while_training_fails_the_run_in_one_line(tmp_path):
    path = study(tmp_path, "mynet.py:broken")
    (exp,) = load(path).experiments
    events = list(engine.train(exp, threading.Event(), None))
    assert isinstance(events[-1], Failed)
    assert "width must be even" in events[-1].reason
