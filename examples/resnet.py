"""ResNet-style models in plain PyTorch (no torchvision), for benchmarks and examples.

``resnet18()`` has the layer shapes of torchvision's ResNet-18 (He et al., 2016: a 7x7/2 stem,
four stages of two BasicBlocks with 64/128/256/512 channels, 1x1/2 downsampling shortcuts, a
1000-way classifier). ``resnet_tiny()`` is the same architecture at a fraction of the width, for
tests. Load them by path, e.g. ``autotune bench --vs-torch --model examples/resnet.py:resnet18``.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + shortcut)


class ResNet(nn.Module):
    """Stem, four stages of BasicBlocks, global average pooling, linear classifier."""

    def __init__(self, widths: tuple[int, int, int, int], blocks: int = 2, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        c_in = widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            stages.append(
                nn.Sequential(
                    *(
                        BasicBlock(c_in if i == 0 else width, width, stride if i == 0 else 1)
                        for i in range(blocks)
                    )
                )
            )
            c_in = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> ResNet:
    """ResNet-18's shapes: 20 convolutions (11 distinct at 224x224) and a 512x1000 classifier."""
    return ResNet((64, 128, 256, 512), num_classes=num_classes)


def resnet_tiny(num_classes: int = 10) -> ResNet:
    """The same architecture at 1/8 of the width: quick to tune, for tests and the README."""
    return ResNet((8, 16, 32, 64), num_classes=num_classes)
