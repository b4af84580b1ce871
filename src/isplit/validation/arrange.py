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

    def code_layout(self, code_shape: Sequence[int], grid: tuple[int, int] | None = None) -> Layout:
        """The layout of a code of ``code_shape`` (C, H, W) made from this map; ``grid``: the
        patch tokens' grid in the code, where the bottleneck halved it (:class:`TokenGrid`)."""
        _, h, w = code_shape
        if self.kernel == 3:
            return Layout("NCHW", (1,), (2, 3), grid=(h, w))
        extra = self.layout.extra
        if extra is not None:  # the axis with the extra tokens is the first position axis
            others = math.prod(self.shape[a - 1] for a in self.layout.positions if a != extra[0])
            extra = (2, extra[1] * others, extra[2] * others)
        grid = grid or (self.layout.grid if len(self.layout.positions) == 1 else None)
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


@dataclass(frozen=True)
class TokenGrid:
    """A token map [N, C, P, 1]: ``lead`` extra tokens, the patch tokens of a ``rows`` x
    ``cols`` image grid in row-major order, ``trail`` extra tokens."""

    lead: int
    trail: int
    rows: int
    cols: int

    def halved(self) -> TokenGrid:
        """The same tokens after a stride-2 convolution over the grid (ceil(H/2) x ceil(W/2))."""
        return TokenGrid(self.lead, self.trail, (self.rows + 1) // 2, (self.cols + 1) // 2)

    @property
    def tokens(self) -> int:
        return self.lead + self.rows * self.cols + self.trail

    def split(self, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(grid, extra)``: the patch tokens as a map [N, C, rows, cols] and the extra tokens
        as [N, C, lead + trail, 1]."""
        end = self.lead + self.rows * self.cols
        grid = m[:, :, self.lead : end, 0].unflatten(2, (self.rows, self.cols))
        return grid, torch.cat([m[:, :, : self.lead], m[:, :, end:]], 2)

    def join(self, grid: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """The token map [N, C, P, 1] with the extra tokens back in place (:meth:`split`'s
        inverse)."""
        flat = grid.flatten(2).unsqueeze(3)
        return torch.cat([extra[:, :, : self.lead], flat, extra[:, :, self.lead :]], 2)


def token_grid(form: MapForm) -> TokenGrid | None:
    """The :class:`TokenGrid` of a token map whose one position axis holds extra tokens around
    the patch tokens of the image grid, in row-major order; None for any other map."""
    layout = form.layout
    if form.kernel != 1 or layout.extra is None or layout.grid is None:
        return None
    if len(layout.positions) != 1 or (layout.parts and [p for p, _ in layout.parts] != ["h", "w"]):
        return None
    _, lead, trail = layout.extra
    grid = TokenGrid(lead, trail, *layout.grid)
    return grid if grid.tokens == form.map_shape[1] else None


def halve_refusal(form: MapForm) -> str | None:
    """Why a bottleneck cannot halve H and W at a point of this map form; None where it can."""
    tokens = token_grid(form)
    if form.kernel == 1 and tokens is None:
        return (
            f"its {form.map_shape[1]} positions (laid out {form.layout.describe()}) do not form "
            "the image grid"
        )
    rows, cols = (tokens.rows, tokens.cols) if tokens else form.map_shape[1:]
    if rows < 2 or cols < 2:
        return f"its image grid is {rows} x {cols}"
    return None
