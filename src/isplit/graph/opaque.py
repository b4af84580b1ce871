"""Follow the axes through an opaque call: a function torch.fx calls as one node without looking
inside (timm's not-traceable ``window_reverse``, ``deblockify``, ``reshape_pre_pool``, ...; a
user's ``torch.fx.wrap``-ped function).

Most such functions only rearrange their input (views, permutes, slices), which no shape rule
can see from outside. So the function is run on *coordinate tensors*: every element of its input
holds its own index (its batch, row, column and channel follow from the input's known axes), and
the output says where each of its elements came from. A pure rearrangement commutes with
relabelling its input's elements (checked by running it a second time on a shuffled labelling);
anything that computes fails that check and is left to the other rules. From the coordinates of
every output element, each output axis is read off as the pieces of input coordinates it steps
through, outer first: only the batch is the batch; only positions are positions (with their part
of the rows x columns grid); positions and channels together are channels (space-to-depth, where
the positions left outside are the rows / columns of a coarser grid). The input runs at twice its
batch so that the batch can be told from a size-1 axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx as fx

from isplit.graph.layout import BATCH, CHANNEL, POSITION, UNIT, UNKNOWN, Axis

Axes = tuple[Axis, ...]

#: where the functions torch.fx records as calls come from, when they are not opaque
_TRACED = {"torch", "operator", "_operator", "builtins", "math"}


def is_opaque(n: fx.Node) -> bool:
    """``n`` calls a function that torch.fx did not trace into (an autowrapped function)."""
    if n.op != "call_function":
        return False
    module = getattr(n.target, "__module__", None) or ""
    return module.split(".")[0] not in _TRACED


@dataclass(frozen=True)
class _Coordinate:
    """One coordinate of the input's elements: the batch ``n``, a grid part (``h``, ``w.1``), a
    channel, position or unknown axis of its own (``c2``, ``p3``, ``u0``)."""

    name: str
    kind: str
    size: int  # as run: the batch doubled


@dataclass(frozen=True)
class _Piece:
    """A coordinate stepping along output axis ``axis``: by ``step`` every ``inner`` entries,
    ``count`` times."""

    axis: int
    name: str
    step: int
    count: int
    inner: int


def rearranged_axes(call: Callable, axes: Axes, shape, recorded) -> list | None:
    """The axes of each tensor that ``call(x)`` returns (a list, one entry per output: its axes,
    or None for a value that is not a tensor), where ``x`` has ``axes`` and ``shape``;
    ``recorded``: the outputs recorded when the model ran (a tensor or a tuple). None when
    ``call`` is not a pure rearrangement of ``x``."""
    atoms = _atoms(axes, shape)
    if atoms is None:
        return None
    run_shape = [_run_size(a, s) for a, s in zip(axes, shape)]
    found = _sources(call, run_shape)
    outputs = recorded if isinstance(recorded, (tuple, list)) else [recorded]
    if found is None or len(found) != len(outputs):
        return None
    result = []
    for src, rec in zip(found, outputs):
        if not isinstance(rec, torch.Tensor):
            result.append(None)
            continue
        if src is None:
            return None
        read = _read(_coordinates(src, atoms), src.shape, tuple(rec.shape))
        if read is None:
            return None
        result.append(read)
    return result


def _atoms(axes: Axes, shape) -> list[_Coordinate] | None:
    """The input's coordinates in row-major order (a merged axis: those of the axes it
    merged); None where an axis holds tokens or two axes claim the same grid part."""
    atoms: list[_Coordinate] = []
    for i, (a, s) in enumerate(zip(axes, shape)):
        inner = zip(a.merged, a.sizes) if a.merged else [(a, s)]
        for k, (b, size) in enumerate(inner):
            found = _axis_atoms(b, size, f"{i}.{k}" if a.merged else f"{i}")
            if found is None:
                return None
            atoms.extend(found)
    names = [a.name for a in atoms]
    return atoms if len(set(names)) == len(names) else None


def _axis_atoms(a: Axis, size: int, label: str) -> list[_Coordinate] | None:
    if a.kind == BATCH:
        return [_Coordinate("n", BATCH, 2 * size)]
    if size == 1:
        return []
    if a.lead or a.trail:
        return None
    if a.kind == POSITION and len(a.grid) == 1:
        return [_Coordinate(a.grid[0], POSITION, size)]
    if a.kind == POSITION and a.grid:
        if math.prod(a.sizes) != size:
            return None
        return [_Coordinate(p, POSITION, s) for p, s in zip(a.grid, a.sizes)]
    prefix = {POSITION: "p", CHANNEL: "c"}.get(a.kind, "u")
    return [_Coordinate(prefix + label, a.kind if a.kind != UNIT else UNKNOWN, size)]


def _run_size(a: Axis, size: int) -> int:
    """An axis's size in the run: twice as large where it holds the batch."""
    holds_batch = a.kind == BATCH or any(b.kind == BATCH for b in a.merged)
    return 2 * size if holds_batch else size


def _sources(call: Callable, run_shape: list[int]) -> list | None:
    """For each output of ``call``, the flat index of the input element each of its elements
    came from (None for outputs that are not tensors); None unless ``call`` is a pure
    rearrangement (it commutes with a random relabelling of the input's elements)."""
    total = math.prod(run_shape)
    ids = torch.arange(total, dtype=torch.float64)
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            first = call(ids.reshape(run_shape))
            second = call(perm.to(torch.float64).reshape(run_shape))
    except Exception:  # an opaque function may fail on coordinates in any way: not followed
        return None
    first, second = _as_list(first), _as_list(second)
    if len(first) != len(second):
        return None
    found = []
    for a, b in zip(first, second):
        if not isinstance(a, torch.Tensor):
            found.append(None)
            continue
        if not _relabelled(a, b, perm):
            return None
        found.append(a.long())
    return found


def _as_list(value) -> list:
    return list(value) if isinstance(value, (tuple, list)) else [value]


def _relabelled(a: torch.Tensor, b, perm: torch.Tensor) -> bool:
    """``a`` holds input indices and ``b`` the same elements under the relabelling ``perm``."""
    if a.dtype != torch.float64 or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return False
    if a.numel() == 0 or (a != a.round()).any() or a.min() < 0 or a.max() >= perm.numel():
        return False
    return bool((perm[a.long()].to(torch.float64) == b).all())


def _coordinates(src: torch.Tensor, atoms: list[_Coordinate]) -> dict:
    """Each coordinate of the source of every output element: ``{name: (kind, size, values)}``;
    a row (column) split in two parts (``h.0``, ``h.1``) is read as the whole row ``h``."""
    coords: dict[str, tuple[str, int, torch.Tensor]] = {}
    stride = math.prod(a.size for a in atoms)
    for a in atoms:
        stride //= a.size
        coords[a.name] = (a.kind, a.size, (src // stride) % a.size)
    for base in ("h", "w"):
        outer, inner = coords.get(base + ".0"), coords.get(base + ".1")
        if outer is not None and inner is not None and base not in coords:
            del coords[base + ".0"], coords[base + ".1"]
            values = outer[2] * inner[1] + inner[2]
            coords[base] = (POSITION, outer[1] * inner[1], values)
    return coords


def _read(coords: dict, run_shape, recorded) -> Axes | None:
    """The axes of an output whose elements have ``coords``, or None where the coordinates do
    not step through the output axes as a reshape of a permutation would."""
    pieces = [_axis_pieces(coords, run_shape, j) for j in range(len(run_shape))]
    if any(p is None for p in pieces) or not _consistent(coords, pieces, run_shape):
        return None
    kinds = {name: kind for name, (kind, _, _) in coords.items()}
    batch = [p for found in pieces for p in found if kinds[p.name] == BATCH]
    if "n" in coords and [(p.step, p.count) for p in batch] != [(1, coords["n"][1])]:
        return None  # the images reordered, subsampled or spread over several axes
    names = _part_names(pieces, kinds)
    axes = []
    for j, found in enumerate(pieces):
        if run_shape[j] != recorded[j] * (2 if any(p in batch for p in found) else 1):
            return None
        axes.append(_axis(found, kinds, names) if found else _unit(recorded[j]))
    return tuple(axes)


def _axis_pieces(coords: dict, run_shape, j: int) -> list[_Piece] | None:
    """The pieces of coordinates that step along output axis ``j``, outer first, read on the
    line through the output's first element: from the innermost, each piece is the one
    coordinate that changes there, stepping evenly while the others stay (a coordinate may
    step in several pieces: windows in a row of tokens)."""
    size = run_shape[j]
    lines = {
        name: v.movedim(j, 0).reshape(size, -1)[:, 0].tolist() for name, (_, _, v) in coords.items()
    }
    found, inner = [], 1
    while inner < size:
        moved = [name for name, line in lines.items() if line[inner] != line[0]]
        if len(moved) != 1:
            return None
        name = moved[0]
        step, count = lines[name][inner] - lines[name][0], 1
        while count * inner < size and _only(lines, name, count * inner, count * step):
            count += 1
        found.append(_Piece(j, name, step, count, inner))
        inner *= count
    return found[::-1] if inner == size else None


def _only(lines: dict, name: str, k: int, change: int) -> bool:
    """Entry ``k`` of the lines differs from entry 0 in coordinate ``name`` alone, by
    ``change``."""
    return all(
        line[k] - line[0] == (change if other == name else 0) for other, line in lines.items()
    )


def _consistent(coords: dict, pieces: list[list[_Piece]], run_shape) -> bool:
    """Every coordinate everywhere is its value at the first element plus its steps along
    each axis (what was read on one line holds on the whole output)."""
    for name, (_, _, values) in coords.items():
        expected = values.reshape(-1)[0].expand(run_shape).clone()
        for j, found in enumerate(pieces):
            for p in (p for p in found if p.name == name):
                k = torch.arange(run_shape[j])
                view = [1] * len(run_shape)
                view[j] = run_shape[j]
                expected += (p.step * ((k // p.inner) % p.count)).reshape(view)
        if not bool((expected == values).all()):
            return False
    return True


def _part_names(pieces: list[list[_Piece]], kinds: dict) -> dict[_Piece, str]:
    """The grid part each position piece is: a row (column) in one piece is ``h``, in two
    ``h.0`` / ``h.1``; the inner pieces merged into channels leave the outer ones as the rows of
    a coarser grid. Pieces of no grid part (positions reversed, split in three, inner parts
    left outside the channels) are left out."""
    names: dict[_Piece, str] = {}
    for name in {p.name for found in pieces for p in found}:
        if kinds[name] != POSITION or name[0] not in "hw":
            continue
        where = sorted((p for found in pieces for p in found if p.name == name), key=_outer)
        kept = [_is_positions(pieces[p.axis], kinds) for p in where]
        n = sum(kept)
        if kept != [True] * n + [False] * (len(kept) - n) or any(p.step < 0 for p in where):
            continue
        parts = [name] if n == 1 else [f"{name}.0", f"{name}.1"] if n == 2 else []
        names.update(zip(where, parts if n == 1 or name in ("h", "w") else []))
    return names


def _outer(p: _Piece) -> int:
    return -abs(p.step)


def _is_positions(found: list[_Piece], kinds: dict) -> bool:
    """An output axis whose pieces stay positions (no channel merged in)."""
    return all(kinds[p.name] in (POSITION, BATCH) for p in found)


def _axis(found: list[_Piece], kinds: dict, names: dict) -> Axis:
    """The output axis made of ``found`` pieces (outer first)."""
    what = {kinds[p.name] for p in found}
    if UNKNOWN in what:
        return Axis(UNKNOWN)
    if BATCH in what:
        return _with_batch(found, kinds, names)
    if CHANNEL in what:
        return Axis(CHANNEL)
    parts = [names.get(p) for p in found]
    if None in parts:
        return Axis(POSITION)
    if len(parts) == 1:
        return Axis(POSITION, (parts[0],))
    return Axis(POSITION, tuple(parts), tuple(p.count for p in found))


def _unit(size: int) -> Axis:
    """An output axis no coordinate steps along: size 1, or copies of one element."""
    return Axis(UNIT) if size == 1 else Axis(UNKNOWN)


def _with_batch(found: list[_Piece], kinds: dict, names: dict) -> Axis:
    """The batch alone, or the batch merged with the axes after it (window partitions)."""
    if len(found) == 1:
        return Axis(BATCH)
    if found[0].axis != 0 or kinds[found[0].name] != BATCH:
        return Axis(UNKNOWN)
    merged = [Axis(BATCH)] + [_axis([p], kinds, names) for p in found[1:]]
    sizes = (found[0].count // 2, *(p.count for p in found[1:]))
    return Axis(UNKNOWN, sizes=sizes, merged=tuple(merged))
