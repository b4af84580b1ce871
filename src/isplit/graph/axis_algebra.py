"""The algebra of axes that :mod:`isplit.graph.axes` applies op by op: reshapes that split and
merge axes, indexing and slicing, broadcasting, pieces of a split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from isplit.graph.layout import BATCH, CHANNEL, POSITION, UNIT, UNKNOWN, Axis, coarser

Axes = tuple[Axis, ...]
UNKNOWN_AXIS, UNIT_AXIS, CHANNEL_AXIS = Axis(UNKNOWN), Axis(UNIT), Axis(CHANNEL)


def axis_index(d, rank: int) -> int:
    return int(d) % rank if rank else 0


def broadcasts(shapes, out) -> bool:
    try:
        return tuple(torch.broadcast_shapes(*shapes)) == tuple(out)
    except (RuntimeError, TypeError):
        return False


def agree(options: Sequence[Axis], size: int) -> Axis:
    """One axis from the axes of several inputs at the same place: what the known ones agree
    on (tokens must agree too). A grid tag is kept where those that have one agree on it:
    positions of no one grid added to the positions of a grid take its order (MLP-Mixer's
    residual around its token mixing)."""
    if options and all(a == options[0] for a in options):
        return options[0]
    known = [a for a in options if a.kind not in (UNKNOWN, UNIT)]
    if not known:
        return UNIT_AXIS if size == 1 else UNKNOWN_AXIS
    first = known[0]
    if any(a.kind != first.kind or (a.lead, a.trail) != (first.lead, first.trail) for a in known):
        return UNKNOWN_AXIS
    tagged = {(a.grid, a.sizes): a for a in known if a.grid}
    if len(tagged) == 1:
        return next(iter(tagged.values()))
    return Axis(first.kind, lead=first.lead, trail=first.trail)


def concatenated(parts: Sequence[tuple[Axis | None, int]]) -> Axis:
    """The axis of a concatenation along it of ``parts`` (axis, size; axis None for a part that
    does not depend on the image). Along a position axis, parts that hold no image position are
    tokens that are not image positions: image-independent parts (a class token), parts that
    are all tokens (a class token split off the patches, then updated) and size-1 axes nothing
    depends on (CaiT's class token after class attention). One part of image positions among
    them keeps its grid; several make positions of no one grid."""
    image = [a for a, s in parts if a is not None and not _no_image(a, s)]
    if not image:
        tokens = any(a is not None and a.kind == POSITION for a, _ in parts)
        return Axis(POSITION, lead=sum(s for _, s in parts)) if tokens else UNKNOWN_AXIS
    kind = image[0].kind
    if any(a.kind != kind for a in image) or kind not in (CHANNEL, POSITION):
        return UNKNOWN_AXIS
    if kind == CHANNEL:
        return CHANNEL_AXIS
    if len(image) > 1:  # several image-derived token sets: positions of no one grid
        ok = len(image) == len(parts) and not any(a.lead or a.trail for a in image)
        return Axis(POSITION) if ok else UNKNOWN_AXIS
    i = next(k for k, (a, _) in enumerate(parts) if a is image[0])
    lead = image[0].lead + sum(s for _, s in parts[:i])
    trail = image[0].trail + sum(s for _, s in parts[i + 1 :])
    return Axis(POSITION, image[0].grid, image[0].sizes, lead, trail)


def _no_image(a: Axis, size: int) -> bool:
    """Axis ``a`` of ``size`` entries holds no image position: a size-1 axis nothing depends on,
    or a position axis that is all tokens (the class token split off the patches)."""
    return a.kind == UNIT or a.kind == POSITION and a.lead + a.trail == size


def pieces(axes: Axes, shape, out, start: int = 0) -> Axes:
    """The axes of one piece of a ``split`` that starts at ``start`` on the cut axis: channels
    stay channels; a position axis is narrowed as a slice would (:func:`_sliced`), so that the
    class token split off the patches is all tokens and the patches keep their grid."""
    result = []
    for x, s, o in zip(axes, shape, out):
        if s == o:
            result.append(x)
        elif x.kind == POSITION:
            result.append(_sliced(x, s, slice(start, start + o)))
        else:
            result.append(CHANNEL_AXIS if x.kind == CHANNEL else UNKNOWN_AXIS)
    return tuple(result)


def reshape_axes(axes: Axes, shape: Sequence[int], out: Sequence[int]) -> Axes:
    """The axes after reshaping ``shape`` to ``out``: axes are grouped by equal running products
    of their sizes; a group that splits one axis or merges several keeps one kind where that is
    unambiguous (rows then columns merged: a token axis; the inner parts of split rows and
    columns merged with channels: channels, a space-to-depth). The batch must stay axis 0."""
    return _coarser(_reshaped(axes, shape, tuple(out)))


def _reshaped(axes: Axes, shape: Sequence[int], out: tuple[int, ...]) -> Axes:
    if axes and axes[0].merged and out and out[0] != shape[0]:
        # an axis 0 that merged the batch with other axes, reshaped again: reshape its parts
        # (Hiera's unroll merges positions into the batch in rounds, then reshapes them back)
        return _reshaped((*axes[0].merged, *axes[1:]), (*axes[0].sizes, *shape[1:]), out)
    if axes and axes[0].kind == BATCH and (not out or out[0] != shape[0]):
        return _merge_batch(axes, shape, out)
    if axes and axes[0].merged and out and out[0] == 1:
        restored = _split_batch(axes, shape, out)
        if restored is not None:
            return restored
    result: list[Axis | None] = [None] * len(out)
    start = 0
    if axes and axes[0].kind == BATCH:
        result[0], start = axes[0], 1
    src = [i for i in range(start, len(shape)) if shape[i] != 1]
    dst = [j for j in range(start, len(out)) if out[j] != 1]
    for j in range(start, len(out)):
        if out[j] == 1:
            result[j] = UNIT_AXIS
    i = j = 0
    while i < len(src) and j < len(dst):
        gi, gj = [src[i]], [dst[j]]
        pi, pj = shape[src[i]], out[dst[j]]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj and i < len(src):
                gi.append(src[i])
                pi, i = pi * shape[src[i]], i + 1
            elif pj < pi and j < len(dst):
                gj.append(dst[j])
                pj, j = pj * out[dst[j]], j + 1
            else:
                break
        for k, x in zip(
            gj, _regroup([axes[a] for a in gi], [shape[a] for a in gi], [out[b] for b in gj])
        ):
            result[k] = x
    return tuple(UNKNOWN_AXIS if x is None else x for x in result)


def _merge_batch(axes: Axes, shape: Sequence[int], out: tuple[int, ...]) -> Axes:
    """The batch merged with the axes after it into axis 0 (``x.flatten(0, 1)`` before a
    ``BatchNorm1d``): unknown, but remembered, so that reshaping back restores them."""
    k, size = 1, shape[0]
    while out and size < out[0] and k < len(shape):
        size, k = size * shape[k], k + 1
    if not out or size != out[0]:
        return tuple(UNIT_AXIS if s == 1 else UNKNOWN_AXIS for s in out)
    head = Axis(UNKNOWN, sizes=tuple(shape[:k]), merged=tuple(axes[:k]))
    return (head, *_reshaped(axes[k:], shape[k:], out[1:]))


def _split_batch(axes: Axes, shape: Sequence[int], out: tuple[int, ...]) -> Axes | None:
    """Axis 0 that merged the batch with other axes, split back into them."""
    merged, sizes = axes[0].merged, axes[0].sizes
    if tuple(out[: len(sizes)]) != sizes:
        return None
    return (*merged, *_reshaped(axes[1:], shape[1:], out[len(sizes) :]))


def _regroup(axes: list[Axis], sizes: list[int], out: list[int]) -> list[Axis]:
    """The axes of ``out`` made from ``axes`` (one group of a reshape)."""
    kinds = {a.kind for a in axes}
    tokens = any(a.lead or a.trail for a in axes)
    if len(axes) == 1 and len(out) == 1:
        return [axes[0]]
    if kinds == {POSITION, CHANNEL} and len(out) == 1 and _inner_parts(axes):
        return [CHANNEL_AXIS]  # space-to-depth
    if len(kinds) != 1 or tokens or kinds & {BATCH, UNKNOWN}:
        return [UNKNOWN_AXIS] * len(out)
    kind = next(iter(kinds))
    if kind != POSITION:
        return [Axis(kind)] * len(out)
    parts: list[tuple[str, int]] = []  # the grid parts, in row-major order
    for a, size in zip(axes, sizes):
        if len(a.grid) == 1:
            parts.append((a.grid[0], size))
        elif a.grid:
            parts.extend(zip(a.grid, a.sizes))
        else:
            return [Axis(POSITION)] * len(out)
    if len(out) == 1:
        parts = _joined(parts)
        return [Axis(POSITION, tuple(p for p, _ in parts), tuple(s for _, s in parts))]
    if len(parts) == len(out) and [s for _, s in parts] == list(out):
        return [Axis(POSITION, (p,)) for p, _ in parts]
    if len(parts) == 1 and parts[0][0] in ("h", "w"):  # rows cut into windows and rows in them
        return [Axis(POSITION, (f"{parts[0][0]}.{k}",)) for k in range(len(out))]
    return [Axis(POSITION)] * len(out)


def _inner_parts(axes: list[Axis]) -> bool:
    """The position axes among ``axes`` are all inner parts of split rows or columns (``h.1``,
    ``w.1``): merged with the channels, they are a space-to-depth (Swin's patch merging), not a
    flattened map."""
    return all(
        len(a.grid) == 1 and a.grid[0].endswith(".1") and not (a.lead or a.trail)
        for a in axes
        if a.kind == POSITION
    )


def _coarser(axes: Axes) -> Axes:
    """The outer part of a split row (column) axis whose inner part is gone (merged into the
    channels by a space-to-depth) holds the rows (columns) of a coarser grid: ``h.0`` -> ``h``."""
    rename = coarser({p for a in axes for b in (*a.merged, a) for p in b.grid})
    return tuple(_renamed(a, rename) for a in axes) if rename else axes


def _renamed(a: Axis, rename: dict[str, str]) -> Axis:
    if a.merged:
        return replace(a, merged=tuple(_renamed(b, rename) for b in a.merged))
    if not any(p in rename for p in a.grid):
        return a
    return replace(a, grid=tuple(rename.get(p, p) for p in a.grid))


def _joined(parts: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Parts with a split row (column) axis joined again: ``h.0, h.1`` -> ``h``."""
    out: list[tuple[str, int]] = []
    for name, size in parts:
        if out and name.endswith(".1") and out[-1][0] == name[:-2] + ".0":
            out[-1] = (name[:-2], out[-1][1] * size)
        else:
            out.append((name, size))
    return out


def index_axes(axes: Axes, shape: Sequence[int], index, out: Sequence[int]) -> Axes | None:
    """The axes after ``tensor[index]``: integers drop an axis, slices narrow it (tokens cut off
    are gone), ``None`` adds a size-1 axis; tensor indices are not followed."""
    index = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, torch.Tensor) or isinstance(i, (list, bool)) for i in index):
        return None
    if Ellipsis in index:
        k = index.index(Ellipsis)
        fill = len(shape) - sum(1 for i in index if i is not None and i is not Ellipsis)
        index = index[:k] + (slice(None),) * fill + index[k + 1 :]
    index = index + (slice(None),) * (len(shape) - sum(1 for i in index if i is not None))
    result, a = [], 0
    for i in index:
        if i is None:
            result.append(UNIT_AXIS)
            continue
        if isinstance(i, slice):
            result.append(_sliced(axes[a], shape[a], i))
        elif not isinstance(i, int):
            return None
        a += 1
    return tuple(result) if len(result) == len(out) else None


def _sliced(x: Axis, size: int, s: slice) -> Axis:
    """Axis ``x`` (of ``size`` entries) narrowed by ``s``. On a position axis the tokens that
    are not image positions are counted again: a slice that keeps every image position in
    order keeps the grid (the patches after their class token), one that keeps none is all
    tokens (``lead`` = its size: the class token alone, no image position)."""
    kept = range(size)[s]
    if len(kept) == size:
        return x
    if x.kind != POSITION:
        return x if x.kind in (CHANNEL, BATCH) else UNKNOWN_AXIS
    lead = sum(1 for k in kept if k < x.lead)
    trail = sum(1 for k in kept if k >= size - x.trail)
    image = range(x.lead, size - x.trail)
    if lead + trail == len(kept):
        return Axis(POSITION, lead=lead + trail)
    if kept.step == 1 and kept.start <= image.start and kept.stop >= image.stop:
        return Axis(POSITION, x.grid, x.sizes, lead, trail)
    grid = x.grid if x.grid in (("h",), ("w",)) else ()  # strided rows stay rows
    return Axis(POSITION, grid, (), lead, trail)
