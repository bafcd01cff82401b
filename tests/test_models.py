"""The model registry: exact parameter counts, and every model trains on every dataset shape."""

from __future__ import annotations

import pytest
import torch

from cnntui.models import REGISTRY, build, count_parameters

SHAPES = {"cifar10": (3, 32, 32), "fashion-mnist": (1, 28, 28), "synthetic": (3, 32, 32)}


def test_parameter_counts_match_the_report() -> None:
    assert count_parameters(build("lenet", (3, 32, 32), 10, 0.5)) == 62_006
    assert count_parameters(build("resnet", (3, 32, 32), 10, 0.5)) == 308_650


def test_resnet_structure_is_the_reports() -> None:
    net = build("resnet", (3, 32, 32), 10, 0.5)
    assert isinstance(net.stem[0], torch.nn.Conv2d) and net.stem[0].kernel_size == (3, 3)
    assert (net.stem[0].in_channels, net.stem[0].out_channels) == (3, 32)
    stages = [
        (b.conv1.in_channels, b.conv2.out_channels, b.conv1.stride[0])
        for b in (net.layer1, net.layer2, net.layer3)
    ]
    assert stages == [(32, 32, 1), (32, 64, 2), (64, 128, 2)]
    assert isinstance(net.layer1.shortcut, torch.nn.Identity)
    assert not isinstance(net.layer2.shortcut, torch.nn.Identity)
    assert net.dropout.p == 0.5 and net.fc.in_features == 128


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.parametrize("dataset", sorted(SHAPES))
def test_every_model_runs_forward_and_backward(name: str, dataset: str) -> None:
    shape = SHAPES[dataset]
    torch.manual_seed(0)
    model = build(name, shape, 10, 0.3)
    x = torch.randn(4, *shape)
    out = model(x)
    assert out.shape == (4, 10)
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_dropout_is_between_fc1_and_fc2_in_lenet() -> None:
    net = build("lenet", (3, 32, 32), 10, 0.7)
    assert net.dropout.p == 0.7
    net.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(net(x), net(x))  # no dropout at evaluation


def test_unknown_model_and_too_small_images() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build("vgg", (3, 32, 32), 10, 0.0)
    with pytest.raises(ValueError, match="at least 16x16"):
        build("lenet", (3, 8, 8), 10, 0.0)
