"""Each model, dataset and optimizer name is declared once (cnntui/core/registry.py), has exactly
one implementation, and no unknown name falls through to another's."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from cnntui.core import data, engine, models, settings  # noqa: F401  (importing them registers)
from cnntui.core.registry import DATASETS, MODELS, OPTIMIZERS, Registry
from tests.helpers import tiny_experiment


@pytest.mark.parametrize("registry", [MODELS, DATASETS, OPTIMIZERS], ids=lambda r: r.kind)
def test_every_declared_name_has_its_implementation(registry: Registry) -> None:
    assert list(registry) == list(registry.names)
    assert registry.names == getattr(settings, f"{registry.kind.upper()}S")  # what config allows


@pytest.mark.parametrize(
    ("name", "kind"),
    [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)],
)
def test_each_optimizer_name_builds_its_own_optimizer(name: str, kind: type) -> None:
    exp = tiny_experiment(optimizer=name)
    optimizer = engine.make_optimizer(exp, torch.nn.Linear(2, 2).parameters())
    assert type(optimizer) is kind


def test_an_unknown_optimizer_is_refused_not_turned_into_adamw() -> None:
    exp = dataclasses.replace(tiny_experiment(), optimizer="rmsprop")  # past config's check
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        engine.make_optimizer(exp, torch.nn.Linear(2, 2).parameters())


def test_an_unknown_dataset_is_a_data_error_naming_the_known_ones(tmp_path) -> None:
    with pytest.raises(data.DataError, match=r"unknown dataset 'imagenet'.*synthetic"):
        data.load("imagenet", tmp_path)


def test_only_declared_names_can_be_registered() -> None:
    with pytest.raises(ValueError, match="not declared"):
        MODELS.register("vgg")
    with pytest.raises(ValueError, match="registered twice"):
        MODELS.register("lenet")(lambda *a: None)


@pytest.mark.process
def test_config_checks_names_without_loading_torch() -> None:
    code = (
        "import sys, cnntui.core.config, cnntui.core.settings as s\n"
        "print('torch' in sys.modules, 'lenet' in s.MODELS)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
