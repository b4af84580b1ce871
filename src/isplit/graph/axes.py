"""Follow the axes of the input image through a traced graph: which axis of every tensor holds
the batch, the channels and the image positions (see :mod:`isplit.graph.layout`).

The input is N x C x H x W. Every node's axes are derived from its inputs' axes and the shapes
recorded when the graph was traced, by a rule for what the node does:

- convolutions keep channels on axis 1; batch norm, pooling, padding, interpolation and
  elementwise ops keep every axis;
- ``permute`` / ``transpose`` move axes; ``reshape`` / ``view`` / ``flatten`` / ``unflatten`` /
  ``squeeze`` split or merge them, which the recorded shapes make exact (rows x columns merged
  become a token axis; channels split become channel axes, e.g. attention heads);
- ``Linear`` and ``LayerNorm`` act on the last axis: it holds channels, unless it held
  positions (MLP-Mixer's token mixing after a transpose): mixed positions stay positions;
- ``Unfold`` makes channels times kernel offsets, and positions of the sliding blocks;
- one position made larger (a pooled vector resized, expanded or broadcast) holds copies of one
  entry (``1``), not image positions;
- ``cat`` along a position axis of tensors that do not depend on the image (a class token) or
  hold no image position (a class token split off the patches, then updated) adds tokens that
  are not image positions; indexing and slicing drop or narrow axes (the class token alone is
  all tokens, the patches without it keep their grid);
- ``matmul`` takes its rows from the left operand and its columns from the right one;
- an opaque function (one torch.fx calls without tracing into it, as timm's ``window_reverse``)
  that only rearranges its input is run on coordinate tensors (:mod:`isplit.graph.opaque`).

Tensors that do not depend on the image (weights, tokens, position embeddings) have no axes. An
op no rule covers keeps its input's axes when it returns a tensor of the same shape; otherwise its
axes are unknown, and so is the layout of every point after it until a rule (a ``Linear`` over
the channels, a residual add with a known tensor) recovers them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.utils import _pair

from isplit.graph.axis_algebra import (
    CHANNEL_AXIS,
    UNIT_AXIS,
    UNKNOWN_AXIS,
    Axes,
    agree,
    axis_index,
    broadcasts,
    concatenated,
    index_axes,
    pieces,
    reshape_axes,
)
from isplit.graph.layout import BATCH, CHANNEL, POSITION, UNIT, UNKNOWN, Axis, Layout, layout_of
from isplit.graph.opaque import is_opaque, rearranged_axes
from isplit.graph.ops import PADDING_MODULES, op_name

_RESHAPES = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as"}
_RESHAPES |= {"reshape_as", "ravel"}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "std", "var", "prod", "logsumexp", "norm"}
_REDUCTIONS |= {"nanmean", "nansum", "max", "min"}
_CONVS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d"}
_CONVS |= {"conv_transpose3d"}
_RESIZES = {"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d"}
_RESIZES |= {"adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d"}
_RESIZES |= {"adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "pad"}
_RESIZES |= {"interpolate", "upsample", "pixel_unshuffle", "pixel_shuffle", "lp_pool2d"}
_COPIES = {"expand", "expand_as", "broadcast_to", "repeat"}
_RESIZE_MODULES = (
    *PADDING_MODULES,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
    nn.Upsample,
)


def _name(gm: fx.GraphModule, n: fx.Node) -> str:
    return op_name(gm, n).lstrip("_")  # torch._C._nn.linear -> linear


class AxisInference:
    """The axes of every tensor of a traced graph (:meth:`layout` for a node's tensor).

    ``values`` are the recorded outputs (tensors as meta tensors); ``names`` the nodes' public
    names, used to say where axes were lost.
    """

    def __init__(self, gm: fx.GraphModule, values: dict, names: dict[fx.Node, str]):
        self.gm, self.values, self.names = gm, values, names
        self.axes: dict[fx.Node, object] = {}
        self.lost_at: dict[fx.Node, str] = {}
        for n in gm.graph.nodes:
            self.axes[n] = self._infer(n)
            self._note_loss(n)

    def layout(self, n: fx.Node) -> Layout:
        value, axes = self.values.get(n), self.axes.get(n)
        if not isinstance(value, torch.Tensor):
            return Layout("", reason="not a tensor")
        if not isinstance(axes, tuple) or len(axes) != value.dim():
            return Layout("?" * value.dim(), reason="the tensor does not depend on the input")
        return layout_of(axes, tuple(value.shape), self.lost_at.get(n, ""))

    # -- bookkeeping -----------------------------------------------------------------------------
    def _note_loss(self, n: fx.Node) -> None:
        """Remember where the first axis on the way to ``n`` that is still unknown was lost."""
        value, axes = self.values.get(n), self.axes.get(n)
        if not isinstance(value, torch.Tensor) or not isinstance(axes, tuple):
            return
        if not any(x.kind == UNKNOWN and s > 1 for x, s in zip(axes, value.shape)):
            return
        for a in n.all_input_nodes:
            if a in self.lost_at:
                self.lost_at[n] = self.lost_at[a]
                return
        self.lost_at[n] = f"{_name(self.gm, n)} ({self.names.get(n, n.name)})"

    def _shape(self, n) -> tuple[int, ...] | None:
        v = self.values.get(n) if isinstance(n, fx.Node) else None
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    def _value(self, a):
        """An argument's recorded value (nodes replaced by what they computed)."""
        if isinstance(a, fx.Node):
            return self.values.get(a)
        if isinstance(a, (list, tuple)):
            return type(a)(self._value(x) for x in a)
        if isinstance(a, slice):
            return slice(self._value(a.start), self._value(a.stop), self._value(a.step))
        return a

    def _dynamic(self, n: fx.Node) -> list[fx.Node]:
        """The inputs of ``n`` that are tensors depending on the image."""
        return [a for a in n.all_input_nodes if isinstance(self.axes.get(a), tuple)]

    # -- the rules -------------------------------------------------------------------------------
    def _infer(self, n: fx.Node):
        value = self.values.get(n)
        if n.op == "placeholder":
            if not isinstance(value, torch.Tensor) or value.dim() < 2:
                return None
            grid = (("h",), ("w",)) if value.dim() == 4 else ((),) * (value.dim() - 2)
            return (Axis(BATCH), CHANNEL_AXIS, *(Axis(POSITION, g) for g in grid))
        if n.op not in ("call_module", "call_function", "call_method"):
            return None
        dynamic = self._dynamic(n) + [a for a in n.all_input_nodes if self._is_tuple(a)]
        if not dynamic:
            return None
        if isinstance(value, (tuple, list)):
            return self._tuple(n, value)
        if not isinstance(value, torch.Tensor):
            return None
        out = tuple(value.shape)
        rule = self._rule(n)
        try:
            axes = rule(n, out) if rule is not None else None
        except (TypeError, ValueError, IndexError):  # arguments a rule does not understand
            axes = None
        return axes if axes is not None else self._fallback(n, out)

    def _is_tuple(self, a: fx.Node) -> bool:
        return isinstance(self.axes.get(a), list)

    def _rule(self, n: fx.Node):
        if is_opaque(n):
            return self._rearranged
        name = _name(self.gm, n)
        if n.op == "call_module":
            mod = self.gm.get_submodule(n.target)
            if isinstance(mod, nn.modules.conv._ConvNd):
                return self._conv
            if isinstance(mod, _RESIZE_MODULES):
                return self._keep_kinds
            if isinstance(mod, (nn.Linear, nn.LayerNorm)):
                return self._mixes_last
            if isinstance(mod, nn.Unfold):
                return self._unfold
            if isinstance(mod, (nn.Flatten, nn.Unflatten)):
                return self._reshape
            if name == "Permute" and hasattr(mod, "dims"):
                return lambda n, out: self._permute(n, list(mod.dims))
            return None
        if name == "getitem" or name == "getattr":
            return self._getitem if name == "getitem" else self._getattr
        if name in _RESHAPES:
            return self._reshape
        if name == "permute":
            return lambda n, out: self._permute(n, self._dims(n))
        if name in ("transpose", "swapaxes", "swapdims"):
            return self._transpose
        if name in ("cat", "concat", "concatenate"):
            return self._cat
        if name in ("matmul", "bmm"):
            return self._matmul
        if name in _REDUCTIONS:
            return self._reduce
        if name in _CONVS:
            return self._conv
        if name in _RESIZES:
            return self._keep_kinds
        if name in ("linear", "layer_norm"):
            return self._mixes_last
        if name == "unfold" and n.op == "call_function":  # F.unfold, not Tensor.unfold
            return self._unfold
        if name in _COPIES:
            return self._copies
        return None

    def _rearranged(self, n: fx.Node, out=None):
        """An opaque function of one image-dependent tensor, followed where it only rearranges
        it (run on coordinate tensors: :mod:`isplit.graph.opaque`): the axes of its tensor, or
        a list for a function that returns several values."""
        dynamic = self._dynamic(n)
        if len(dynamic) != 1 or self._shape(dynamic[0]) is None:
            return None
        src = dynamic[0]

        def call(x):
            def value(a):
                return x if a is src else self.values.get(a)

            return n.target(*fx.node.map_arg(n.args, value), **fx.node.map_arg(n.kwargs, value))

        value = self.values.get(n)
        found = rearranged_axes(call, self.axes[src], self._shape(src), value)
        if found is None or isinstance(value, (tuple, list)):
            return found
        return found[0]

    def _first(self, n: fx.Node) -> tuple[Axes, tuple[int, ...]] | None:
        """The axes and shape of the first argument, if it depends on the image."""
        a = n.args[0] if n.args else None
        if isinstance(a, fx.Node) and isinstance(self.axes.get(a), tuple):
            return self.axes[a], self._shape(a)
        return None

    def _fallback(self, n: fx.Node, out: tuple[int, ...]) -> Axes:
        """Same shape as an input: its axes (an elementwise op). An opaque module or wrapped
        function of the same rank: the input's kinds (a convolution-like block, Swin's patch
        merging). Otherwise unknown."""
        dynamic = self._dynamic(n)
        shapes = [self._shape(a) for a in dynamic]
        if out in shapes or broadcasts(shapes, out):
            return self._combine(dynamic, out)
        kept = self._keep_kinds(n, out)
        if kept is not None:
            return kept
        return tuple(UNIT_AXIS if s == 1 else UNKNOWN_AXIS for s in out)

    def _combine(self, inputs: Sequence[fx.Node], out: tuple[int, ...]) -> Axes:
        """Axes of an elementwise (broadcasting) op over ``inputs``: per axis, what the inputs
        of that size agree on."""
        rank = len(out)
        result = []
        for i, size in enumerate(out):
            options = []
            for a in inputs:
                shape, axes = self._shape(a), self.axes[a]
                j = i - (rank - len(shape))
                if j >= 0 and shape[j] == size:
                    options.append(axes[j])
            result.append(agree(options, size))
        return tuple(result)

    def _tuple(self, n: fx.Node, value) -> list:
        """Ops returning several tensors: ``split`` / ``chunk`` keep the axes (an axis cut into
        pieces keeps its kind), ``unbind`` drops one; others are elementwise or unknown."""
        found = self._rearranged(n) if is_opaque(n) else None
        if found is not None:
            return found
        name = _name(self.gm, n)
        first = self._first(n)
        out, start = [], 0  # where the piece starts on the cut axis
        for v in value:
            if not isinstance(v, torch.Tensor):
                out.append(None)
            elif first is not None and name in ("split", "chunk", "tensor_split"):
                out.append(pieces(first[0], first[1], tuple(v.shape), start))
                start += v.shape[axis_index(self._arg(n, 2, "dim", 0), v.dim())]
            elif first is not None and name == "unbind":
                dim = axis_index(self._arg(n, 1, "dim", 0), len(first[1]))
                out.append(first[0][:dim] + first[0][dim + 1 :])
            else:
                out.append(self._fallback(n, tuple(v.shape)))
        return out

    def _arg(self, n: fx.Node, i: int, key: str, default):
        if len(n.args) > i:
            return self._value(n.args[i])
        return self._value(n.kwargs.get(key, default))

    def _dims(self, n: fx.Node) -> list[int]:
        dims = n.args[1:] if len(n.args) > 1 else n.kwargs.get("dims", ())
        if len(dims) == 1 and isinstance(self._value(dims[0]), (list, tuple)):
            dims = dims[0]
        return [int(d) for d in self._value(list(dims))]

    def _permute(self, n: fx.Node, dims: list[int]) -> Axes | None:
        first = self._first(n)
        if first is None or len(dims) != len(first[0]):
            return None
        return tuple(first[0][axis_index(d, len(dims))] for d in dims)

    def _transpose(self, n: fx.Node, out) -> Axes | None:
        first = self._first(n)
        if first is None:
            return None
        rank = len(first[0])
        a = axis_index(self._arg(n, 1, "dim0", 0), rank)
        b = axis_index(self._arg(n, 2, "dim1", 1), rank)
        axes = list(first[0])
        axes[a], axes[b] = axes[b], axes[a]
        return tuple(axes)

    def _getattr(self, n: fx.Node, out) -> Axes | None:
        first = self._first(n)
        if first is None or n.args[1] not in ("mT", "T"):
            return None
        axes = first[0]
        return axes[:-2] + (axes[-1], axes[-2]) if n.args[1] == "mT" else axes[::-1]

    def _conv(self, n: fx.Node, out) -> Axes | None:
        """A convolution mixes axis 1 (see :func:`_mixed`); the others keep their kinds."""
        first, kept = self._first(n), self._keep_kinds(n, out)
        if first is None or kept is None:
            return None
        return (kept[0], _mixed(first[0][1], first[1][1], out[1]), *kept[2:])

    def _mixes_last(self, n: fx.Node, out) -> Axes | None:
        """A ``Linear`` or ``LayerNorm`` mixes the last axis (see :func:`_mixed`)."""
        first = self._first(n)
        if first is None or len(first[0]) != len(out):
            return None
        return (*first[0][:-1], _mixed(first[0][-1], first[1][-1], out[-1]))

    def _keep_kinds(self, n: fx.Node, out) -> Axes | None:
        """Same rank, sizes may change (pooling, padding, a convolution-like block): each axis
        keeps its kind; a resized position axis keeps rows / columns but loses its tokens; one
        position made larger (adaptive pooling or interpolation of a pooled vector) holds
        copies of it, not image positions."""
        first = self._first(n)
        if first is None or len(first[0]) != len(out):
            return None
        axes, shape = first
        result = []
        for x, s, o in zip(axes, shape, out):
            if s == o or x.kind in (UNIT, UNKNOWN) and o == 1:
                result.append(x if s == o else UNIT_AXIS)
            elif x.kind == CHANNEL:
                result.append(CHANNEL_AXIS)
            elif s == 1 and x.kind in (POSITION, UNIT):
                result.append(UNIT_AXIS)
            elif x.kind == POSITION and not (x.lead or x.trail):
                result.append(Axis(POSITION, x.grid if x.grid in (("h",), ("w",)) else ()))
            else:
                result.append(UNIT_AXIS if o == 1 else UNKNOWN_AXIS)
        return tuple(result)

    def _copies(self, n: fx.Node, out) -> Axes | None:
        """``expand`` / ``broadcast_to`` / ``repeat``: a size-1 axis made larger (and a new
        leading axis) holds copies of one entry, not positions; an axis repeated is unknown."""
        first = self._first(n)
        if first is None or len(out) < len(first[0]):
            return None
        axes, shape = first
        new = len(out) - len(shape)
        kept = [
            x if s == o else UNIT_AXIS if s == 1 and x.kind != BATCH else UNKNOWN_AXIS
            for x, s, o in zip(axes, shape, out[new:])
        ]
        return (*[UNIT_AXIS] * new, *kept)

    def _unfold(self, n: fx.Node, out) -> Axes | None:
        """``nn.Unfold`` / ``F.unfold``, [N, C, H, W] -> [N, C x kernel offsets, blocks]: the
        batch stays; channels times the offsets in a block are channels (TNT turns them into
        the pixels of a patch); the sliding blocks are positions, rows x columns of blocks
        where the input's positions are rows and columns."""
        first = self._first(n)
        if first is None or len(first[0]) != 4 or len(out) != 3:
            return None
        (batch, channels, rows, cols), shape = first
        if batch.kind != BATCH or channels.kind not in (CHANNEL, UNIT):
            return None
        if any(a.kind not in (POSITION, UNIT) or a.lead or a.trail for a in (rows, cols)):
            return (batch, CHANNEL_AXIS, UNKNOWN_AXIS)
        if rows.kind == cols.kind == UNIT:
            return (batch, CHANNEL_AXIS, UNIT_AXIS)
        blocks = _blocks(shape[2:], *self._unfold_options(n))
        if (rows.grid, cols.grid) == (("h",), ("w",)) and blocks[0] * blocks[1] == out[2]:
            return (batch, CHANNEL_AXIS, Axis(POSITION, ("h", "w"), blocks))
        return (batch, CHANNEL_AXIS, Axis(POSITION))

    def _unfold_options(self, n: fx.Node) -> tuple:
        """Kernel size, dilation, padding and stride of an unfold."""
        if n.op == "call_module":
            mod = self.gm.get_submodule(n.target)
            return mod.kernel_size, mod.dilation, mod.padding, mod.stride
        defaults = {"kernel_size": None, "dilation": 1, "padding": 0, "stride": 1}
        return tuple(self._arg(n, i, key, d) for i, (key, d) in enumerate(defaults.items(), 1))

    def _reshape(self, n: fx.Node, out) -> Axes | None:
        first = self._first(n)
        return None if first is None else reshape_axes(first[0], first[1], out)

    def _reduce(self, n: fx.Node, out) -> Axes | None:
        first = self._first(n)
        if first is None:
            return None
        axes, shape = first
        if len(out) == len(shape):  # keepdim
            return tuple(x if s == o else UNIT_AXIS for x, s, o in zip(axes, shape, out))
        dim = self._arg(n, 1, "dim", None)
        if dim is None:
            return None
        dims = {
            axis_index(d, len(shape)) for d in (dim if isinstance(dim, (list, tuple)) else [dim])
        }
        kept = tuple(x for i, x in enumerate(axes) if i not in dims)
        return kept if len(kept) == len(out) else None

    def _getitem(self, n: fx.Node, out) -> Axes | None:
        src, index = n.args[0], self._value(n.args[1])
        if self._is_tuple(src):
            parts = self.axes[src]
            return parts[index] if isinstance(index, int) and index < len(parts) else None
        first = self._first(n)
        return None if first is None else index_axes(first[0], first[1], index, out)

    def _cat(self, n: fx.Node, out) -> Axes | None:
        parts = n.args[0] if n.args else n.kwargs.get("tensors")
        if not isinstance(parts, (list, tuple)):
            return None
        dim = axis_index(self._arg(n, 1, "dim", 0), len(out))
        dynamic = [p for p in parts if isinstance(p, fx.Node) and self._dynamic_node(p)]
        axes = list(self._combine(dynamic, out))
        axes[dim] = self._cat_axis(parts, dim)
        return tuple(axes)

    def _dynamic_node(self, p: fx.Node) -> bool:
        return isinstance(self.axes.get(p), tuple)

    def _cat_axis(self, parts, dim: int) -> Axis:
        """The axis ``dim`` of a concatenation (:func:`concatenated`)."""
        pieces = []
        for p in parts:
            shape = self._shape(p)
            if shape is None:
                return UNKNOWN_AXIS
            pieces.append((self.axes[p][dim] if self._dynamic_node(p) else None, shape[dim]))
        return concatenated(pieces)

    def _matmul(self, n: fx.Node, out) -> Axes | None:
        left, right = n.args[0], n.args[1]
        ls, rs = self._shape(left), self._shape(right)
        if ls is None or rs is None or len(ls) < 2 or len(rs) < 2:
            return None
        la = self.axes.get(left) if self._dynamic_node(left) else None
        ra = self.axes.get(right) if self._dynamic_node(right) else None
        batch = []
        for i in range(len(out) - 2):
            options = []
            for axes, shape in ((la, ls), (ra, rs)):
                j = i - (len(out) - len(shape))
                if axes is not None and 0 <= j < len(shape) - 2 and shape[j] == out[i]:
                    options.append(axes[j])
            batch.append(agree(options, out[i]))
        rows = la[-2] if la is not None else CHANNEL_AXIS
        cols = ra[-1] if ra is not None else CHANNEL_AXIS
        return (*batch, rows, cols)


def _mixed(x: Axis, size: int, out: int) -> Axis:
    """The axis of ``out`` entries that a layer mixing the ``size`` entries of axis ``x`` makes
    (a ``Linear`` over the last axis, a convolution over axis 1). Mixed channels are channels,
    and so are unknown axes (the layer recovers them). Mixed positions stay positions
    (MLP-Mixer's and ResMLP's token mixing: a ``Linear`` over the tokens after a transpose),
    of the same grid while their number is unchanged, as a convolution keeps rows; a new
    number of positions is of no one grid, unknown where some were tokens."""
    if x.kind != POSITION:
        return CHANNEL_AXIS
    if size == out:
        return x
    return UNKNOWN_AXIS if x.lead or x.trail else Axis(POSITION)


def _blocks(size: Sequence[int], kernel, dilation, padding, stride) -> tuple[int, int]:
    """Rows and columns of the sliding blocks an unfold of a ``size`` map takes."""
    k, d, p, s = (_pair(v) for v in (kernel, dilation, padding, stride))
    return tuple((size[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i in range(2))
