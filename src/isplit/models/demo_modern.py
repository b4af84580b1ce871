"""The two modern demo networks: a small ConvNeXt and a small vision transformer for 1 x 32 x 32
inputs, 10 classes (Fashion-MNIST padded to 32 px, :data:`isplit.models.demo.DEMO_PREPROCESS`).

Both are torchvision's own classes at a width that trains on a CPU, so that split point names
read as they do on ``convnext_tiny`` and ``vit_b_16``:

- :class:`DemoConvNeXt`: a 2 x 2 patchify stem (16 x 16 positions), four stages of two ConvNeXt
  blocks (7 x 7 depthwise convolution, LayerNorm and a 4x inverted MLP in channels-last
  N x H x W x C, layer scale, residual add), widths 16-128, a LayerNorm and a 2 x 2 / 2
  convolution between stages (16, 8, 4, 2 positions a side).
- :class:`DemoViT`: patches of 4 x 4 (an 8 x 8 grid), a class token (65 tokens of 64 channels),
  6 pre-norm encoder blocks of 4 heads and an MLP of 128, the class token's output classified.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt, LayerNorm2d
from torchvision.models.vision_transformer import VisionTransformer

_CONVNEXT_WIDTHS = (16, 32, 64, 128)
_CONVNEXT_DEPTHS = (2, 2, 2, 2)


class DemoConvNeXt(ConvNeXt):
    """ConvNeXt (torchvision's blocks and names) with a 2 x 2 stem, widths 16-128, depths 2."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        widths = list(_CONVNEXT_WIDTHS)
        config = [
            CNBlockConfig(width, nxt, depth)
            for width, nxt, depth in zip(widths, widths[1:] + [None], _CONVNEXT_DEPTHS)
        ]
        super().__init__(config, stochastic_depth_prob=0.0, layer_scale=1e-6,
                         num_classes=num_classes)  # fmt: skip
        stem = nn.Conv2d(in_channels, widths[0], kernel_size=2, stride=2)
        nn.init.trunc_normal_(stem.weight, std=0.02)
        nn.init.zeros_(stem.bias)
        self.features[0] = nn.Sequential(stem, LayerNorm2d(widths[0], eps=1e-6))


class DemoViT(VisionTransformer):
    """ViT (torchvision's encoder and names): patch 4 on 32 px, width 64, 6 blocks, 4 heads."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__(image_size=32, patch_size=4, num_layers=6, num_heads=4, hidden_dim=64,
                         mlp_dim=128, num_classes=num_classes)  # fmt: skip
        self.conv_proj = nn.Conv2d(in_channels, 64, kernel_size=4, stride=4)
        fan_in = in_channels * 4 * 4
        nn.init.trunc_normal_(self.conv_proj.weight, std=(1.0 / fan_in) ** 0.5)
        nn.init.zeros_(self.conv_proj.bias)
        # torchvision zeroes the head (made for fine-tuning); from scratch a small random head
        # lets the first steps move the encoder too.
        head = self.heads.head
        nn.init.trunc_normal_(head.weight, std=0.02)
