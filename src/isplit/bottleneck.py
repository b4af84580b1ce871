"""The compressing bottleneck inserted at a split point: head -> encoder | link | decoder -> tail.

The default is an undercomplete convolutional autoencoder (as in the authors' code): the encoder
divides the channel count by ``ratio`` (default 8) and can also halve the spatial size; the
decoder restores the point's exact shape. What crosses the link is the encoder's output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from isplit.errors import IsplitError

INT8_HEADER_BYTES = 8  # one float32 scale and one float32 zero point per tensor


class Encoder(nn.Module):
    def __init__(self, channels: int, code_channels: int, halve: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, code_channels, 3, stride=2 if halve else 1, padding=1)
        self.bn = nn.BatchNorm2d(code_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Decoder(nn.Module):
    def __init__(self, code_channels: int, channels: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size
        self.conv1 = nn.Conv2d(code_channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if tuple(z.shape[-2:]) != self.size:
            z = F.interpolate(z, size=self.size, mode="nearest")
        return self.conv2(F.relu(self.bn(self.conv1(z))))


class Bottleneck(nn.Module):
    """Encoder + decoder for an activation of ``shape`` (C, H, W)."""

    def __init__(self, shape: tuple[int, ...], ratio: int = 8, halve: bool = False) -> None:
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) == 4:
            shape = shape[1:]
        if len(shape) != 3:
            raise IsplitError(
                f"a bottleneck needs a spatial point (C x H x W), not one of shape {shape}"
            )
        c, h, w = shape
        if ratio < 1:
            raise IsplitError(f"--ratio must be at least 1, not {ratio}")
        if ratio > c:
            raise IsplitError(
                f"--ratio {ratio} is larger than the {c} channels at this point; use at most {c}"
            )
        self.shape = shape
        self.halve = halve and h >= 2 and w >= 2
        self.code_channels = c // ratio
        self.encoder = Encoder(c, self.code_channels, self.halve)
        self.decoder = Decoder(self.code_channels, c, (h, w))

    @property
    def code_shape(self) -> tuple[int, int, int]:
        _, h, w = self.shape
        if self.halve:
            h, w = (h + 1) // 2, (w + 1) // 2
        return (self.code_channels, h, w)

    @property
    def encoded_bytes(self) -> int:
        """Bytes on the link per image as float32."""
        return 4 * math.prod(self.code_shape)

    @property
    def encoded_bytes_int8(self) -> int:
        """Bytes on the link per image with 8-bit affine quantisation (per-tensor scale/zero)."""
        return math.prod(self.code_shape) + INT8_HEADER_BYTES

    @staticmethod
    def quantise(code: torch.Tensor) -> torch.Tensor:
        """The code after 8-bit affine quantisation and back, one scale and zero per image."""
        flat = code.flatten(1)
        lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        scale = (hi - lo).clamp_min(1e-12) / 255
        q = torch.round((flat - lo) / scale).clamp(0, 255)
        return (q * scale + lo).view_as(code)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
