"""A split point's tensor as the map the convolutional bottleneck compresses, and back.

The bottleneck works along the channel axis, wherever the point's layout
(:class:`~isplit.graph.layout.Layout`) puts it: the channel axes (several, e.g. heads x dim, are
one channel dimension) are moved to axis 1 and merged, and the positions follow. Where the
positions form the image grid (N x C x H x W, N x H x W x C, N x C x L of patches) the map is
N x C x H x W and the bottleneck convolves over it (3 x 3), as it always did at N x C x H x W
points, which it sees unchanged. Where they do not (a vision transformer's tokens with their
class token, window / grid partitions) the map is N x C x P x 1 and the bottleneck acts on each
position alone (1 x 1): every token, class token included, crosses the link, compressed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from isplit.errors import IsplitError
from isplit.graph.layout import Layout


@dataclass(frozen=True)
class MapForm:
    """How a tensor of ``shape`` [N, ...] becomes the bottleneck's map [N, C, H, W]: permute
    its axes to ``order`` (channels, then positions, then size-1 axes), then reshape."""

    shape: tuple[int, ...]  # per image
    order: tuple[int, ...]  # a permutation of the batched tensor's axes
    map_shape: tuple[int, int, int]  # C, H, W
    kernel: int  # 3 over an image grid, 1 over tokens or partitions
    layout: Layout  # the point's

    @property
    def identity(self) -> bool:
        """The tensor is the map already (N x C x H x W)."""
        return self.order == tuple(range(len(self.order))) and self.shape == self.map_shape

    @property
    def permuted(self) -> tuple[int, ...]:
        """The per-image shape after the permutation."""
        batched = (1, *self.shape)
        return tuple(batched[a] for a in self.order[1:])

    def code_layout(self, code_shape: Sequence[int]) -> Layout:
        """The layout of a code of ``code_shape`` (C, H, W) made from this map."""
        _, h, w = code_shape
        if self.kernel == 3:
            return Layout("NCHW", (1,), (2, 3), grid=(h, w))
        extra = self.layout.extra
        if extra is not None:  # the axis with the extra tokens is the first position axis
            others = math.prod(self.shape[a - 1] for a in self.layout.positions if a != extra[0])
            extra = (2, extra[1] * others, extra[2] * others)
        grid = self.layout.grid if len(self.layout.positions) == 1 else None
        return Layout("NCL1" if grid else "NCP1", (1,), (2,), extra=extra, grid=grid)


def map_form(shape: Sequence[int], layout: Layout | None = None) -> MapForm:
    """The :class:`MapForm` of a point's tensor of ``shape`` ([N, ...] or per image) laid out as
    ``layout`` (default: N x C x positions); an error when the layout is unknown."""
    shape = tuple(int(s) for s in shape)
    if layout is None:
        layout = Layout.channels_first((1, *shape) if len(shape) == 3 else shape)
    if len(shape) == len(layout.axes):
        shape = shape[1:]
    if len(shape) + 1 != len(layout.axes):
        raise IsplitError(f"the layout {layout.axes} does not fit a tensor of shape {list(shape)}")
    if not layout.known:
        raise IsplitError(
            f"a bottleneck cannot go at a point whose layout is unknown ({layout.reason}); "
            "choose another point (`isplit points` shows each point's layout)"
        )
    size = (1, *shape)
    positions = list(layout.positions)
    if layout.extra is not None:  # the extra tokens' axis first: they stay together
        positions.remove(layout.extra[0])
        positions.insert(0, layout.extra[0])
    rest = [a for a in range(1, len(size)) if a not in (*layout.channels, *positions)]
    order = (0, *layout.channels, *positions, *rest)
    c = math.prod(size[a] for a in layout.channels)
    p = math.prod(size[a] for a in positions)
    grid = layout.grid
    if layout.extra is None and grid is not None and grid[0] * grid[1] == p:
        return MapForm(shape, order, (c, grid[0], grid[1]), 3, layout)
    return MapForm(shape, order, (c, p, 1), 1, layout)


class ToMap(nn.Module):
    """The point's tensor [N, ...] as the map [N, C, H, W] (no parameters)."""

    def __init__(self, form: MapForm) -> None:
        super().__init__()
        self.order, self.map_shape = form.order, form.map_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.order).reshape(-1, *self.map_shape)


class FromMap(nn.Module):
    """The map [N, C, H, W] back as the point's tensor [N, ...] (no parameters)."""

    def __init__(self, form: MapForm) -> None:
        super().__init__()
        self.permuted = form.permuted
        self.inverse = tuple(form.order.index(a) for a in range(len(form.order)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *self.permuted).permute(self.inverse)
