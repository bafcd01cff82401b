"""Normalisation and augmentation per dataset, and a dataset too large for memory refused.

`normalize` = dataset (the training set's own mean and std), half (the PyTorch tutorial's
0.5 / 0.5) or none (pixels on the 0..1 scale), recorded in the run; `augment` never mirrors
digits, and `flip` lets any dataset (an image folder) choose.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnntui.core import config, data, engine
from cnntui.core.config import ConfigError
from cnntui.core.events import Failed
from cnntui.runs.store import RunStore
from tests.core.test_folder_data import make_folder
from tests.helpers import tiny_experiment, train

CPU = torch.device("cpu")


def _synthetic() -> data.TensorDataset:
    return data.make_synthetic(512, 64)


def _inputs(mode: str) -> torch.Tensor:
    ds = _synthetic()
    return engine._Prepared(ds, CPU, False, normalize=mode).inputs(ds.train_x)


def test_dataset_normalisation_centres_each_channel() -> None:
    x = _inputs("dataset")
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.05
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05


def test_half_maps_pixels_to_minus_one_to_one_as_the_tutorial_does() -> None:
    ds = _synthetic()
    x = _inputs("half")
    raw = ds.train_x.float() / 255
    assert torch.allclose(x, (raw - 0.5) / 0.5, atol=1e-6)
    assert x.min() >= -1 and x.max() <= 1
    # not centred: the synthetic images' mean pixel is about 0.5 only by chance of design
    assert torch.allclose(x.std(dim=(0, 2, 3)), 2 * raw.std(dim=(0, 2, 3)), rtol=1e-4)


def test_none_keeps_pixels_on_the_zero_to_one_scale() -> None:
    ds = _synthetic()
    x = _inputs("none")
    assert torch.allclose(x, ds.train_x.float() / 255, atol=1e-7)
    assert x.min() >= 0 and x.max() <= 1


def test_normalize_takes_three_modes_and_names_them() -> None:
    assert config.check_value("normalize", "half") == "half"
    with pytest.raises(ConfigError, match=r"allowed: dataset, half, none"):
        config.check_value("normalize", "tutorial")


@pytest.mark.parametrize(
    ("mode", "mean", "std"),
    [("half", [0.5] * 3, [0.5] * 3), ("none", [0.0] * 3, [1.0] * 3)],
)
def test_the_run_records_how_it_normalised(tmp_path: Path, mode, mean, std) -> None:
    exp = tiny_experiment(normalize=mode, epochs=1)
    run = RunStore(tmp_path / "runs").create(exp)
    events = list(train(exp, run=run))
    assert not [e for e in events if isinstance(e, Failed)]
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["normalize"] == mode
    assert summary["norm_mean"] == mean and summary["norm_std"] == std


def test_the_run_records_the_training_sets_own_mean_and_std(tmp_path: Path) -> None:
    exp = tiny_experiment(epochs=1)
    run = RunStore(tmp_path / "runs").create(exp)
    list(train(exp, run=run))
    summary = json.loads((run.path / "summary.json").read_text())
    ds = data.load("synthetic", "data", True, exp.train_size, exp.test_size)
    assert summary["normalize"] == "dataset"
    assert summary["norm_mean"] == pytest.approx(list(ds.mean))
    assert summary["norm_std"] == pytest.approx(list(ds.std))


# --- augmentation -------------------------------------------------------------------------


def test_augment_without_flip_never_mirrors() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4).repeat(64, 1, 1, 1)
    out = engine.augment_batch(x, pad=0, flip=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, x)
    mirrored = engine.augment_batch(x, pad=0, generator=torch.Generator().manual_seed(0))
    same = mirrored.eq(x).all(dim=(1, 2, 3))
    assert (same | mirrored.flip(3).eq(x).all(dim=(1, 2, 3))).all()
    assert not same.all()  # with flip, some images are mirrored


@pytest.mark.parametrize(
    ("dataset", "flip", "flips"),
    [
        ("mnist", "auto", False),
        ("kmnist", "auto", False),
        ("svhn", "auto", False),
        ("cifar10", "auto", True),
        ("fashion-mnist", "auto", True),
        ("synthetic", "auto", True),
        ("folder:imgs", "auto", True),
        ("folder:imgs", "off", False),
        ("mnist", "on", True),
    ],
)
def test_each_dataset_has_its_flip_rule(dataset, flip, flips) -> None:
    assert data.flips(dataset, flip) is flips


def _flips_seen(monkeypatch, exp) -> set[bool]:
    """The `flip` every augmented batch of a run of `exp` was made with."""
    seen: set[bool] = set()
    real = engine.augment_batch

    def spy(x, pad=4, generator=None, flip=True):
        seen.add(flip)
        return real(x, pad, generator, flip)

    monkeypatch.setattr(engine, "augment_batch", spy)
    events = list(train(exp))
    assert not [e for e in events if isinstance(e, Failed)], events
    return seen


def _digits(monkeypatch) -> None:
    """An MNIST-format set (1 x 28 x 28 digits) in place of MNIST's files."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_x": rng.integers(0, 255, (64, 1, 28, 28), dtype=np.uint8),
        "train_y": rng.integers(0, 10, 64).astype(np.int64),
        "test_x": rng.integers(0, 255, (16, 1, 28, 28), dtype=np.uint8),
        "test_y": rng.integers(0, 10, 16).astype(np.int64),
        "mean": np.array([0.5]),
        "std": np.array([0.3]),
        "classes": np.array(10),
        "class_names": np.array([], dtype=str),
    }
    monkeypatch.setattr(data, "_installed", {})
    data.install("mnist", None, arrays)


def test_an_augmented_mnist_batch_is_never_mirrored(monkeypatch) -> None:
    _digits(monkeypatch)
    exp = tiny_experiment(dataset="mnist", augment=True, epochs=1, train_size=64, test_size=16)
    assert _flips_seen(monkeypatch, exp) == {False}


def test_a_folder_dataset_chooses_whether_to_flip(monkeypatch, tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    exp = tiny_experiment(
        dataset=f"folder:{root}", augment=True, epochs=1, train_size=None, test_size=None
    )
    assert _flips_seen(monkeypatch, exp) == {True}
    assert _flips_seen(monkeypatch, dataclasses.replace(exp, flip="off")) == {False}


# --- memory -------------------------------------------------------------------------------

TOML = """\
[[experiment]]
name = "big"
dataset = "{dataset}"
data_dir = "nowhere"
{extra}
"""


def test_a_dataset_larger_than_memory_is_refused_at_its_key(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(config, "available_memory", lambda: 100 * 2**20)  # 100 MiB
    path = tmp_path / "experiments.toml"
    path.write_text(TOML.format(dataset="cifar10", extra="train_size = 1000"))
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3:1: 'dataset' = 'cifar10' needs 176 MiB")
    assert "(60,000 images of 3 x 32 x 32)" in message and "100 MiB is available" in message
    assert "decoded whole" in message and "\n" not in message
    assert not (tmp_path / "nowhere").exists()  # nothing downloaded


def test_a_folder_too_large_is_refused_until_image_size_fits(monkeypatch, tmp_path) -> None:
    make_folder(tmp_path / "imgs")  # 48 images of 1 x 28 x 28: 37,632 bytes
    monkeypatch.setattr(config, "available_memory", lambda: 20_000)
    path = tmp_path / "experiments.toml"
    path.write_text(TOML.format(dataset="folder:imgs", extra=""))
    with pytest.raises(ConfigError, match=r"48 images of 1 x 28 x 28\).*lower image_size"):
        config.load(path)
    path.write_text(TOML.format(dataset="folder:imgs", extra="image_size = 16"))
    assert config.load(path).experiments[0].image_size == 16  # 12,288 bytes fit


def test_the_command_line_refuses_it_before_loading(monkeypatch, tiny_toml: Path, capsys) -> None:
    from cnntui import cli

    monkeypatch.setattr(config, "available_memory", lambda: 100 * 2**20)
    monkeypatch.chdir(tiny_toml.parent)
    assert cli.main(["--run", "alpha", "--set", "train_size=50000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnntui: --set 'train_size=50000': 'dataset' = 'synthetic' needs 147 MiB")
    assert err.endswith("lower train_size / test_size\n") and err.count("\n") == 1, err
    assert not (tiny_toml.parent / "runs").exists()  # nothing trained
