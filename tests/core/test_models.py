"""The model registry: exact parameter counts, and every model trains on every dataset shape."""

from __future__ import annotations

import pytest
import torch

from cnntui.core.models import REGISTRY, build, count_parameters

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
    """Dropout takes fc1's activations and its output is what fc2 reads, at the set rate;
    at evaluation it passes them through unchanged."""
    torch.manual_seed(0)
    net = build("lenet", (3, 32, 32), 10, 0.7)
    calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for name in ("fc1", "dropout", "fc2"):
        layer = getattr(net, name)
        layer.register_forward_hook(lambda m, i, o, name=name: calls.append((name, i[0], o)))
    x = torch.randn(64, 3, 32, 32)
    net.train()
    net(x)
    (fc1, _, fc1_out), (drop, drop_in, drop_out), (fc2, fc2_in, _) = calls
    assert (fc1, drop, fc2) == ("fc1", "dropout", "fc2")  # in this order, once each
    assert torch.equal(drop_in, torch.relu(fc1_out))  # dropout reads fc1's activations
    assert fc2_in is drop_out  # and fc2 reads what dropout let through
    live = drop_in != 0
    dropped = (drop_out[live] == 0).float().mean().item()
    assert 0.6 < dropped < 0.8  # about 70% of fc1's activations dropped
    kept = drop_out[live & (drop_out != 0)] / drop_in[live & (drop_out != 0)]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.3))  # the rest scaled up
    calls.clear()
    net.eval()
    net(x)
    (_, drop_in, drop_out) = calls[1]
    assert torch.equal(drop_in, drop_out)  # no dropout at evaluation


def test_unknown_model_and_too_small_images() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build("vgg", (3, 32, 32), 10, 0.0)
    with pytest.raises(ValueError, match="at least 16x16"):
        build("lenet", (3, 8, 8), 10, 0.0)
