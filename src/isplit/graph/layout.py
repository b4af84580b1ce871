"""The layout of a split point's tensor: which axes hold its channels, which its positions, and
which positions are not part of the image grid.

A CNN's activation is N x C x H x W; ConvNeXt's and Swin's blocks work in N x H x W x C; a vision
transformer's tokens are N x L x D with a class token in front of the patches; MaxViT's window and
grid partitions are N x G x P x C; attention tensors are N x heads x L x d (heads and d are both
channel axes). Every axis of a point's tensor gets a *kind* (:class:`Axis`), inferred from the
traced graph by :mod:`isplit.graph.axes`; :class:`Layout` is what the importance code and the
outputs read. A layout that could not be inferred carries the reason, and its point is not
admissible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BATCH, CHANNEL, POSITION, UNIT, UNKNOWN = "N", "C", "P", "1", "?"


@dataclass(frozen=True)
class Axis:
    """What one axis of a tensor holds.

    ``kind``: batch ``N``, channels ``C``, positions ``P``, ``1`` (a size-1 axis nothing
    depends on, or copies of one entry: a pooled vector resized, expanded or broadcast over a
    map) or unknown ``?``. For positions, ``grid`` says how the axis covers the image
    grid, as the row-major product of parts: ``("h",)`` rows, ``("w",)`` columns, ``("h", "w")``
    rows x columns flattened into tokens, ``("h.0", "w.0")`` the window index of a partition
    (``h.0`` / ``h.1``: the outer / inner part of a split row axis); ``sizes`` are the parts'
    sizes; ``()`` an unknown order. ``lead`` / ``trail`` count the entries at its start / end
    that are not image positions (class, distillation or register tokens).
    """

    kind: str
    grid: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()
    lead: int = 0
    trail: int = 0
    merged: tuple[Axis, ...] = ()  # an unknown axis that merged the batch with these axes

    @property
    def letter(self) -> str:
        if self.kind != POSITION:
            return self.kind
        return {("h",): "H", ("w",): "W", ("h", "w"): "L"}.get(self.grid, "P")


@dataclass(frozen=True)
class Layout:
    """How a point's tensor [N, ...] is laid out.

    ``axes`` has one letter per axis (``NCHW``, ``NHWC``, ``NLC``, ``NPPC``, ``NCLC``; ``P`` is a
    partition axis, ``1`` a size-1 axis, ``?`` an axis that could not be followed);
    ``channels`` / ``positions`` are the axes that hold them (no channel axis: the tensor is one
    channel); ``extra`` = ``(axis, lead, trail)`` where a position axis starts / ends with
    tokens that are not image positions; ``grid`` the rows x columns the map's positions form
    on the image, where they form one in row-major order; ``reason`` is not empty when the
    layout is unknown, and says why.
    """

    axes: str
    channels: tuple[int, ...] = ()
    positions: tuple[int, ...] = ()
    extra: tuple[int, int, int] | None = None
    grid: tuple[int, int] | None = None
    reason: str = ""
    parts: tuple[tuple[str, int], ...] | None = None  # see image_grid

    def image_grid(self, m):
        """A map [N, positions] (image positions in the tensor's order) as [N, rows, columns]
        in image order (window partitions put back in place); unchanged without a grid."""
        if self.grid is None:
            return m
        if not self.parts or [p for p, _ in self.parts] in (["h", "w"], ["h"], ["w"]):
            return m.reshape(m.shape[0], *self.grid)
        names = [p for p, _ in self.parts]
        order = sorted(range(len(names)), key=lambda i: names[i])  # h / h.0, h.1, w / w.0, w.1
        m = m.reshape(m.shape[0], *(size for _, size in self.parts))
        return m.permute(0, *(i + 1 for i in order)).reshape(m.shape[0], *self.grid)

    @property
    def known(self) -> bool:
        return not self.reason

    def grid_positions(self, shape: Sequence[int]) -> int:
        """The number of image positions a tensor of ``shape`` has in this layout."""
        n = math.prod(shape[a] for a in self.positions)
        if self.extra is not None:
            axis, lead, trail = self.extra
            n = n // shape[axis] * (shape[axis] - lead - trail)
        return n

    def spatial(self, shape: Sequence[int]) -> bool:
        """A map over more than one image position: only such points are admissible."""
        return self.known and self.grid_positions(shape) > 1

    def describe(self) -> str:
        """``NHWC``, ``NLC (+1 token)``, or ``unknown: why``."""
        if not self.known:
            return f"unknown ({self.reason})"
        if self.extra is None:
            return self.axes
        n = self.extra[1] + self.extra[2]
        return f"{self.axes} (+{n} token{'s' if n != 1 else ''})"

    def to_json(self) -> dict:
        return {
            "axes": self.axes,
            "channels": list(self.channels),
            "positions": list(self.positions),
            "extra": list(self.extra) if self.extra else None,
            "grid": list(self.grid) if self.grid else None,
            "reason": self.reason,
            "parts": [list(p) for p in self.parts] if self.parts else None,
        }

    @classmethod
    def from_json(cls, d: dict) -> Layout:
        return cls(
            axes=d["axes"],
            channels=tuple(d["channels"]),
            positions=tuple(d["positions"]),
            extra=tuple(d["extra"]) if d.get("extra") else None,
            grid=tuple(d["grid"]) if d.get("grid") else None,
            reason=d.get("reason", ""),
            parts=tuple((p, int(n)) for p, n in d["parts"]) if d.get("parts") else None,
        )

    @classmethod
    def channels_first(cls, shape: Sequence[int]) -> Layout:
        """N x C x positions: what isplit assumed before layouts were inferred (a run folder
        written then is read with it)."""
        rank = len(shape)
        if rank <= 1:
            return cls(axes="N"[:rank])
        letters = "NC" + ("HW" if rank == 4 else "P" * (rank - 2))
        grid = (shape[2], shape[3]) if rank == 4 else None
        return cls(letters, channels=(1,), positions=tuple(range(2, rank)), grid=grid)


def layout_of(axes: Sequence[Axis], shape: Sequence[int], why: str = "") -> Layout:
    """The :class:`Layout` of a tensor of ``shape`` whose axes hold ``axes``; ``why``: where the
    axes were lost, when some are unknown."""
    letters = "".join(a.letter for a in axes)

    def unknown(reason: str) -> Layout:
        return Layout(letters, reason=reason)

    if not axes or axes[0].kind != BATCH:
        return unknown(f"the batch is not axis 0{_where(why)}")
    lost = [i for i, a in enumerate(axes) if a.kind == UNKNOWN and shape[i] > 1]
    if lost:
        return unknown(f"axis {lost[0]} (size {shape[lost[0]]}) could not be followed{_where(why)}")
    if any(a.kind == BATCH for a in axes[1:]):
        return unknown("the batch appears twice")
    channels = tuple(i for i, a in enumerate(axes) if a.kind == CHANNEL)
    positions = tuple(i for i, a in enumerate(axes) if a.kind == POSITION)
    copies = [i for i, a in enumerate(axes) if a.kind == UNIT and shape[i] > 1]
    if copies and math.prod(shape[i] for i in positions) > 1:  # no Grad-CAM map says what
        return unknown(f"axis {copies[0]} (size {shape[copies[0]]}) holds copies of one entry")
    with_extra = [i for i in positions if axes[i].lead or axes[i].trail]
    if len(with_extra) > 1:
        return unknown("tokens that are not image positions on more than one axis")
    extra = None
    if with_extra:
        i = with_extra[0]
        extra = (i, axes[i].lead, axes[i].trail)
    grid, parts = _grid(axes, shape, positions)
    return Layout(letters, channels, positions, extra, grid, parts=parts)


def _where(why: str) -> str:
    return f" after {why}" if why else ""


def _grid(axes: Sequence[Axis], shape: Sequence[int], positions: tuple[int, ...]):
    """The image grid the positions cover: ``(rows, columns)`` and the parts of it that the
    positions hold in the tensor's order (``(("h", 7), ("w", 7))`` for rows then columns;
    ``(("h.0", 8), ("w.0", 8), ("h.1", 7), ("w.1", 7))`` for windows of 7 x 7), or None."""
    parts: list[tuple[str, int]] = []
    for i in positions:
        a = axes[i]
        if len(a.grid) == 1:
            parts.append((a.grid[0], shape[i] - a.lead - a.trail))
        else:
            parts.extend(zip(a.grid, a.sizes))
    rename = coarser(p for p, _ in parts)
    parts = [(rename.get(p, p), s) for p, s in parts]
    names = sorted(p for p, _ in parts)
    if names not in (
        ["h", "w"],
        ["h", "w.0", "w.1"],
        ["h.0", "h.1", "w"],
        ["h.0", "h.1", "w.0", "w.1"],
    ):
        names = [p for p, _ in parts]
        if names in (["h"], ["w"]):  # one row or one column
            return ((parts[0][1], 1) if names == ["h"] else (1, parts[0][1])), tuple(parts)
        return None, None
    size = dict(parts)
    rows = math.prod(v for k, v in size.items() if k.startswith("h"))
    return (rows, math.prod(size.values()) // rows), tuple(parts)


def coarser(names: Iterable[str]) -> dict[str, str]:
    """``{"h.0": "h"}`` where the outer part of split rows is there without the inner part
    (merged into channels by a space-to-depth, or pooled): it holds the rows of a coarser grid;
    the same for columns."""
    names = set(names)
    return {
        f"{x}.0": x
        for x in ("h", "w")
        if f"{x}.0" in names and f"{x}.1" not in names and x not in names
    }
