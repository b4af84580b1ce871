"""A second, independent way to tell a split point's axes apart: by how its shape changes.

:mod:`isplit.graph.axes` infers every axis's kind from what each node of the traced graph does.
This module asks the shapes instead. It runs the traced graph (``ModelGraph.gm``) five times,
recording every node's output shape:

    base  (1, H, W)     batch (2, H, W)     rows (1, H', W)     cols (1, H, W')     both (1, H', W')

with H != W and H' != H, W' != W. Of each axis of a cut's tensor:

- one whose size changes with the batch alone is the batch;
- one that changes with H only holds rows, with W only columns, with both rows x columns
  (tokens, or window indices); its entries that are not image positions (class tokens) are the
  constant ``e`` in ``size = e + r(H) * c(W)``, measured from the four image sizes as
  ``e = (s_base * s_both - s_rows * s_cols) / (s_base + s_both - s_rows - s_cols)``;
- one that never changes is channels, a size-1 axis, the fixed part of a window partition (the
  p x p entries of a window, or the p x p windows of a grid partition), or the fixed output of an
  adaptive pooling.

:func:`disagreements` compares an inferred :class:`~isplit.graph.layout.Layout` with that:
the batch is axis 0 and only it; channel and ``1`` axes never change with the image; a position
axis grows with H where it holds rows (``h``, ``h.0``, ``h.1``), with W where it holds columns,
and holds as many extra tokens as ``e`` says. The shapes cannot tell a fixed position axis from
channels, so one is accepted as positions only where the shapes leave room for it, and said so:
a size-1 axis that stays size 1 (whatever the layout calls it); an axis of a window partition
(its grid parts all ``h.0``, ``h.1``, ``w.0``, ``w.1``) or whose grid the layout does not give,
while another axis of the tensor grows with the image; the output of an adaptive pooling whose
input grows with the image. The grid (rows x columns) is checked as a product: the image
positions of the whole tensor must be ``rows * cols`` at the base size, ``r' * cols`` when only
H grew and ``rows * c'`` when only W grew (so rows and columns swapped are caught, since H !=
W), and ``rows(H) * cols(W)`` at all four. :func:`check_graph` also says where an admissible
point holds no map of the image: no axis grows with it, or an adaptive pooling copies a 1 x 1
map.

Tracing fixes some shapes as constants (a position embedding of one size, a token-mixing Linear,
a view to sizes computed at construction): such a graph runs at one image size only. There the
check is the batch alone (``Measured.batch_only``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from isplit.graph import ModelGraph, SplitPoint
from isplit.graph.layout import BATCH, Layout

_ADAPTIVE = (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
_ADAPTIVE_FUNCTIONS = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_avg_pool1d"}


def input_sizes(h: int, w: int, dh: int = 0, dw: int = 0) -> dict[str, tuple[int, int, int]]:
    """(batch, H, W) of the five runs: the base size, H grown by ``dh``, W by ``dw`` (``dh`` by
    default); only the first two where ``dh`` is 0 (a model that runs at one size only)."""
    sizes = {"base": (1, h, w), "batch": (2, h, w)}
    if dh == 0:
        return sizes
    dw = dw or dh
    assert h != w and dh > 0 and dw > 0
    return sizes | {"rows": (1, h + dh, w), "cols": (1, h, w + dw), "both": (1, h + dh, w + dw)}


class _Shapes(fx.Interpreter):
    """Runs a graph, keeping the shape of every tensor a node returns."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}

    def run_node(self, n: fx.Node):
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            self.shapes[n] = tuple(result.shape)
        return result


@dataclass
class Measured:
    """Each valid cut's shape in each run; ``batch_only`` where the graph runs at one image
    size only (then only the ``base`` and ``batch`` runs exist)."""

    shapes: dict[str, dict[str, tuple[int, ...]]]  # point name -> run -> shape
    pool_inputs: dict[str, dict[str, tuple[int, ...]]]  # adaptive pool point -> run -> input
    batch_only: bool


def _adaptive_pool(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_module":
        return isinstance(gm.get_submodule(n.target), _ADAPTIVE)
    return n.op == "call_function" and getattr(n.target, "__name__", "") in _ADAPTIVE_FUNCTIONS


def _run(gm: fx.GraphModule, size: tuple[int, int, int], channels: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(size[0], channels, size[1], size[2])
    interpreter = _Shapes(gm)
    with torch.no_grad():
        interpreter.run(x)
    return interpreter.shapes


def measure(graph: ModelGraph, sizes: dict[str, tuple[int, int, int]]) -> Measured:
    """Every valid cut's shape at ``sizes`` (see :func:`input_sizes`; ``base`` must be the size
    the graph was traced at)."""
    channels = graph.input_shape[0]
    assert tuple(graph.input_shape[1:]) == sizes["base"][1:]
    runs = {r: _run(graph.gm, sizes[r], channels) for r in ("base", "batch")}
    batch_only = "rows" not in sizes
    try:
        for r in ("rows", "cols", "both") if not batch_only else ():
            runs[r] = _run(graph.gm, sizes[r], channels)
    except Exception:  # a size traced as a constant: the graph runs at one image size only
        batch_only = True
        runs = {r: runs[r] for r in ("base", "batch")}
    cuts = {name: n for name, (n, _) in graph.all_cuts.items() if n.op != "placeholder"}
    shapes = {name: {r: s[n] for r, s in runs.items()} for name, n in cuts.items()}
    pools = {name: n for name, n in cuts.items() if _adaptive_pool(graph.gm, n)}
    pool_inputs = {name: {r: s[n.args[0]] for r, s in runs.items()} for name, n in pools.items()}
    return Measured(shapes, pool_inputs, batch_only)


# -- what the shapes say about one axis ------------------------------------------------------------
def _changes(shapes: dict[str, tuple[int, ...]], axis: int, run: str) -> bool:
    return shapes[run][axis] != shapes["base"][axis]


def grows_with_image(shapes: dict[str, tuple[int, ...]], axis: int) -> bool:
    """Whether ``axis`` changes with the image size (False where only the batch was varied)."""
    return any(_changes(shapes, axis, r) for r in ("rows", "cols", "both") if r in shapes)


def extra_tokens(sizes: Sequence[int]) -> float | None:
    """``e`` in ``size = e + r(H) * c(W)`` from the sizes at base, rows, cols, both; None where
    r or c does not change (the four sizes do not determine it)."""
    base, rows, cols, both = sizes
    denominator = base + both - rows - cols
    if denominator == 0:
        return None
    return (base * both - rows * cols) / denominator


def pooled_vector(shapes: dict[str, tuple[int, ...]]) -> bool:
    """No axis grows with the image: the tensor does not hold a map of the image."""
    return not any(grows_with_image(shapes, a) for a in range(len(shapes["base"])))


# -- the comparison --------------------------------------------------------------------------------
def grids_of(layout: Layout, shape: Sequence[int]) -> dict[int, tuple[str, ...]]:
    """The grid parts (``h``, ``w.0``, ...) each position axis of ``layout`` holds, read from
    ``layout.parts`` (one part per axis where the axis's image positions are one part's size;
    enough for hand-written layouts; :func:`check_graph` reads the inferred axes instead)."""
    grids, parts = {}, list(layout.parts or ())
    for axis in layout.positions:
        target, product, names = shape[axis] - _extra(layout, axis), 1, []
        while parts and (not names or product != target):
            name, size = parts.pop(0)
            names.append(name)
            product *= size
        grids[axis] = tuple(names)
    return grids


def _extra(layout: Layout, axis: int) -> int:
    if layout.extra is None or layout.extra[0] != axis:
        return 0
    return layout.extra[1] + layout.extra[2]


def _image_positions(layout: Layout, shape: Sequence[int]) -> int:
    return math.prod(shape[p] - _extra(layout, p) for p in layout.positions)


def disagreements(
    layout: Layout,
    shapes: dict[str, tuple[int, ...]],
    grids: dict[int, tuple[str, ...]] | None = None,
    pool_input: dict[str, tuple[int, ...]] | None = None,
) -> list[str]:
    """Where ``layout`` (inferred at the base size) disagrees with what ``shapes`` (one valid
    cut's shape in each run, see :class:`Measured`) say; empty when they agree. ``grids``: the
    grid parts of each position axis (:func:`grids_of` by default); ``pool_input``: the shapes of
    an adaptive pooling's input where the tensor is that pooling's output."""
    base = shapes["base"]
    if len(layout.axes) != len(base):
        return [f"layout has {len(layout.axes)} axes, the tensor {len(base)}"]
    problems = _batch_problems(layout, shapes)
    if "rows" not in shapes:
        return problems
    grids = grids_of(layout, base) if grids is None else grids
    pooled_map = pool_input is not None and not pooled_vector(pool_input)
    for axis in range(1, len(base)):
        if axis in layout.positions:
            problems += _position_problems(layout, shapes, axis, grids.get(axis, ()), pooled_map)
        else:
            problems += _other_problems(layout, shapes, axis)
    return problems + _grid_problems(layout, shapes)


def _where(layout: Layout, shapes: dict, axis: int) -> str:
    return f"axis {axis} ({layout.axes[axis]}, size {shapes['base'][axis]})"


def _batch_problems(layout: Layout, shapes: dict) -> list[str]:
    base, batch = shapes["base"], shapes["batch"]
    measured = [a for a in range(len(base)) if base[a] != batch[a]]
    if measured != [0] or batch[0] != 2 * base[0]:
        return [f"the batch is axis {measured} ({base} at batch 1, {batch} at batch 2)"]
    if layout.axes[0] != BATCH or BATCH in layout.axes[1:]:
        return [f"the batch is axis 0, the layout says {layout.axes}"]
    return []


def _other_problems(layout: Layout, shapes: dict, axis: int) -> list[str]:
    """A channel axis, or a ``1`` axis (size 1, or copies of one value), never changes with the
    image."""
    grows_h, grows_w = _changes(shapes, axis, "rows"), _changes(shapes, axis, "cols")
    if grows_h or grows_w:
        where = _where(layout, shapes, axis)
        return [f"{where} grows with the image (with H: {grows_h}, with W: {grows_w})"]
    return []


def _position_problems(
    layout: Layout, shapes: dict, axis: int, grid: tuple[str, ...], pooled_map: bool
) -> list[str]:
    """A position axis grows with H where it holds rows, with W where it holds columns, and
    holds as many tokens that are not image positions as the sizes say."""
    grows_h, grows_w = _changes(shapes, axis, "rows"), _changes(shapes, axis, "cols")
    where = _where(layout, shapes, axis)
    if not (grows_h or grows_w):
        partition = all("." in p for p in grid)  # () too: the layout does not say
        if shapes["base"][axis] == 1 or pooled_map or (partition and not pooled_vector(shapes)):
            return []
        return [f"{where} is a position axis ({grid}) that does not grow with the image"]
    problems = []
    for dim, grows in (("h", grows_h), ("w", grows_w)):
        holds = any(p.startswith(dim) for p in grid)
        if grid and ((grows and not holds) or (dim in grid and not grows)):
            problems.append(f"{where} holds {grid}, grows with {dim.upper()}: {grows}")
    if grows_h and grows_w:
        e = extra_tokens([shapes[r][axis] for r in ("base", "rows", "cols", "both")])
        if e != _extra(layout, axis):
            problems.append(
                f"{where} has {e} entries that are not image positions, the layout "
                f"{_extra(layout, axis)}"
            )
    return problems


def _grid_problems(layout: Layout, shapes: dict) -> list[str]:
    """The image positions of the whole tensor are rows x cols at the base size, rows' x cols
    when only H grew, rows x cols' when only W grew (so rows and columns swapped are caught)."""
    if layout.grid is None:
        return []
    rows, cols = layout.grid
    n = {r: _image_positions(layout, s) for r, s in shapes.items()}
    if n["base"] != rows * cols or n["rows"] % cols or n["cols"] % rows:
        return [f"the grid is {rows} x {cols}; image positions at each size: {n}"]
    if n["base"] * n["both"] != n["rows"] * n["cols"]:
        return [f"image positions {n} are not rows(H) x columns(W)"]
    return []


def _broadcast(point: SplitPoint, shapes: dict, pool_input: dict | None) -> str:
    """Why an admissible point is a pooled vector in disguise ("" where it is not)."""
    if not point.admissible or "rows" not in shapes:
        return ""
    if pool_input is not None:
        if math.prod(pool_input["base"][2:]) == 1:
            return "admissible, but copies of one vector (adaptive pooling of a 1 x 1 map)"
        return ""
    if pooled_vector(shapes):
        return "admissible, but no axis grows with the image"
    return ""


def check_graph(graph: ModelGraph, measured: Measured) -> dict[str, list[str]]:
    """Every valid cut whose known layout disagrees with its shapes, or that is admissible while
    it holds no map of the image: {point: what disagrees}."""
    found = {}
    for name, shapes in measured.shapes.items():
        point, node = graph.point(name), graph.node(name)
        pool_input = measured.pool_inputs.get(name)
        problems = []
        if point.layout.known:
            axes = graph.axes.axes[node]
            grids = {i: axes[i].grid for i in point.layout.positions}
            problems = disagreements(point.layout, shapes, grids, pool_input)
        problems += [why for why in [_broadcast(point, shapes, pool_input)] if why]
        if problems:
            found[name] = problems
    return found
