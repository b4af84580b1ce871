"""The built-in demo networks: slim VGG16, ResNet-50 and MobileNetV2 for 1 x 32 x 32 inputs, 10
classes.

The first two mirror the two networks of the I-SPLIT paper layer for layer (same depth, same block
pattern, same torchvision module names, so split point names read the same), with channel widths
cut so that both train on a CPU and their weights ship inside the package. The third is a family
the paper did not use: MobileNetV2's inverted residuals (1x1 expansion, 3x3 depthwise convolution,
linear 1x1 projection, a skip connection where the shape allows), at half width. Inputs are
Fashion-MNIST images zero-padded from 28 to 32 pixels (:data:`DEMO_PREPROCESS`).

Both are traceable by ``torch.fx``: their ``forward`` has no data-dependent control flow.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from isplit.data import Preprocess
from isplit.models.demo_modern import DemoConvNeXt, DemoViT

#: Input preprocessing of the demo networks: Fashion-MNIST padded 28 -> 32, its mean and std.
DEMO_PREPROCESS = Preprocess(size=32, channels=1, mean=(0.2860,), std=(0.3530,), fit="pad")
#: Where the packaged weights live: ``<WEIGHTS_DIR>/<name>.safetensors``.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

# VGG16's configuration "D": 13 convolutions in 5 stages, "M" = 2x2 max pooling.
_VGG16_WIDTHS: list[int | str] = [
    16, 16, "M", 32, 32, "M", 64, 64, 64, "M", 128, 128, 128, "M", 128, 128, 128, "M",
]  # fmt: skip


class DemoVGG16(nn.Module):
    """VGG16 with batch norm, widths 16-128, global average pooling and a small classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in _VGG16_WIDTHS:
            if width == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers += [
                nn.Conv2d(channels, int(width), kernel_size=3, padding=1),
                nn.BatchNorm2d(int(width)),
                nn.ReLU(inplace=True),
            ]
            channels = int(width)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(channels, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.3),
            nn.Linear(128, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class Bottleneck(nn.Module):
    """ResNet-50's block: 1x1 reduce, 3x3 (carries the stride), 1x1 expand, plus the shortcut."""

    expansion = 4

    def __init__(
        self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DemoResNet50(nn.Module):
    """ResNet-50 (3-4-6-3 bottlenecks) with planes 16-128: 512 features before ``fc``.

    The stem is a stride-1 3x3 convolution then 3x3 max pooling, so 32 px inputs reach ``layer4``
    at 2 x 2.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self._channels = 16
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(16, 3, stride=1)
        self.layer2 = self._make_layer(32, 4, stride=2)
        self.layer3 = self._make_layer(64, 6, stride=2)
        self.layer4 = self._make_layer(128, 3, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128 * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Each block starts as the identity (Goyal et al. 2017): trains faster from scratch.
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out_channels = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self._channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(self._channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        layers = [Bottleneck(self._channels, planes, stride, downsample)]
        self._channels = out_channels
        layers += [Bottleneck(out_channels, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (unless ``expand`` is 1), 3x3 depthwise convolution
    (carries the stride), linear 1x1 projection; input added back when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn_relu6(cin, hidden, 1)]
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


# MobileNetV2's stages (expansion t, output channels c, blocks n, first stride s) at width 0.5;
# the stem keeps stride 1 so that 32 px inputs reach the last stage at 2 x 2.
_MOBILENET_STAGES = [(1, 8, 1, 1), (6, 16, 2, 2), (6, 16, 3, 2), (6, 32, 4, 2), (6, 48, 3, 1),
                     (6, 80, 3, 2), (6, 160, 1, 1)]  # fmt: skip


class DemoMobileNetV2(nn.Module):
    """MobileNetV2 (17 inverted residual blocks) at width 0.5: stem, blocks, 1x1 conv to 640
    features, global average pooling, dropout, linear classifier (torchvision's module names)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(in_channels, 16, 3)]
        channels = 16
        for t, c, n, s in _MOBILENET_STAGES:
            for i in range(n):
                layers.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        layers.append(_conv_bn_relu6(channels, 640, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(640, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


DEMO_MODELS: dict[str, type[nn.Module]] = {
    "demo-vgg16": DemoVGG16,
    "demo-resnet50": DemoResNet50,
    "demo-mobilenet": DemoMobileNetV2,
    "demo-convnext": DemoConvNeXt,
    "demo-vit": DemoViT,
}


def packaged_weights_path(name: str) -> Path:
    """Where the packaged weights of demo network ``name`` are (the file may not exist)."""
    return WEIGHTS_DIR / f"{name}.safetensors"
