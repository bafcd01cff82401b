"""The models: LeNet and the report's LightweightResNet, built for any image shape.

A model is one class (or function) registered with `MODELS.register("name")` (its name
declared in cnntui/core/registry.py) that takes the input shape (channels, height, width), the
number of classes and the dropout probability. A user's own model ("mynet.py:TinyNet") is built by
cnntui/core/user_model.py.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from . import user_model
from .registry import MODELS

REGISTRY = MODELS  # the models registered so far, by name


def build(
    name: str,
    shape: tuple[int, int, int],
    classes: int,
    dropout: float,
    args: user_model.ModelArgs = (),
    base_dir: str = "",
) -> nn.Module:
    """The model registered as `name`, or the user's own that `name` points to (built with
    `args`, its file relative to `base_dir`), for images of `shape`; ValueError for an
    unknown name."""
    spec = user_model.parse_spec(name)
    if spec is not None:
        return user_model.build(spec, args, base_dir, shape, classes)
    factory: Callable[[tuple[int, int, int], int, float], nn.Module] = MODELS.get(name)
    return factory(shape, classes, dropout)


def count_parameters(model: nn.Module) -> int:
    """The number of weights the model trains."""
    return sum(p.numel() for p in model.parameters())


class Dropout(nn.Module):
    """nn.Dropout that draws its masks from `generator` when one is set.

    Runs training side by side in threads would otherwise share torch's global RNG, and each
    run's masks would depend on what its neighbours drew; the engine gives every run its own
    generator, so a run's losses are the same alone or beside others.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero each element with probability p while training and scale the rest by 1/(1-p)."""
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep.div_(1.0 - self.p)

    def extra_repr(self) -> str:
        """The drop probability, as print(model) shows it beside the layer's name."""
        return f"p={self.p}"


def use_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Make every Dropout in `model` draw from `generator` (None: torch's global RNG)."""
    for module in model.modules():
        if isinstance(module, Dropout):
            module.generator = generator


class LeNet(nn.Module):
    """The PyTorch tutorial's LeNet with Dropout between fc1 and fc2, as in the report."""

    def __init__(self, shape: tuple[int, int, int], classes: int, dropout: float) -> None:
        super().__init__()
        channels, height, width = shape
        self.conv1 = nn.Conv2d(channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        # Spatial size after two (5x5 valid conv, 2x2 pool) stages: 32 -> 5, 28 -> 4.
        h = ((height - 4) // 2 - 4) // 2
        w = ((width - 4) // 2 - 4) // 2
        if h < 1 or w < 1:
            raise ValueError(f"LeNet needs images of at least 16x16, got {height}x{width}")
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.dropout = Dropout(dropout)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images (N, C, H, W)."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = self.dropout(F.relu(self.fc1(x)))
        x = F.relu(self.fc2(x))
        logits: torch.Tensor = self.fc3(x)
        return logits


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (1x1 conv + BN when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: the two convolutions' result added to the shortcut, then ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class LightweightResNet(nn.Module):
    """The report's Task 4 network: a 32-channel stem and three residual stages, GAP head."""

    def __init__(self, shape: tuple[int, int, int], classes: int, dropout: float) -> None:
        super().__init__()
        channels = shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU()
        )
        self.layer1 = ResidualBlock(32, 32, 1)
        self.layer2 = ResidualBlock(32, 64, 2)
        self.layer3 = ResidualBlock(64, 128, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = Dropout(dropout)
        self.fc = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images (N, C, H, W)."""
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        logits: torch.Tensor = self.fc(self.dropout(torch.flatten(self.pool(x), 1)))
        return logits


MODELS.register("lenet")(LeNet)
MODELS.register("resnet")(LightweightResNet)
