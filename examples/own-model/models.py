"""A small VGG-style network with batch norm: the kind of model a course or a paper has.

cnntui builds it from `model = "models.py:SmallVGG"` and fills in `in_channels` and
`num_classes` from the dataset; `width` comes from `model_args`.
"""

from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convolutions with batch norm and ReLU, then a 2x2 max pool."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallVGG(nn.Module):
    """Three VGG blocks (width, 2 width, 4 width channels), global average pool, one linear."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(in_channels, width),
            conv_block(width, 2 * width),
            conv_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        """Class scores (logits) for a batch of images."""
        return self.classifier(self.features(x).flatten(1))
