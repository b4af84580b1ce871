"""Capture a model's graph (torch.fx) and find its valid cuts, with their sizes and costs.

The model is traced once (``capture.py``) with torchvision's ``NodePathTracer`` (the tracer
behind ``get_graph_node_names`` / ``create_feature_extractor``), so split point names are
torchvision's node names (``features.4``, ``layer2.1.relu_2``). Submodules can be kept whole as
*leaf modules*, named by class name or qualified type name
(``leaf_modules=["timm.layers.Attention"]``); a leaf module is one node, so no cut falls inside
it. Those that torch.fx cannot trace into (data-dependent Python control flow) are found and kept
whole automatically (``ModelGraph.auto_leaf_modules``).

A *valid cut* is a position in the graph's topological order across which exactly one tensor that
depends on the input is alive (produced before, used after). Parameters, buffers and other values
that do not depend on the input do not count: the tail recomputes them. Small non-tensor values
that depend on the input (``bs = x.size(0)``) do not disqualify a cut either: they travel with the
tensor (the head then returns ``(tensor, *extras)`` and the tail unpacks it).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.fx as fx
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from isplit.errors import IsplitError, did_you_mean
from isplit.graph.axes import AxisInference
from isplit.graph.capture import LeafModule, capture
from isplit.graph.cut import head_and_tail
from isplit.graph.layout import Layout
from isplit.graph.ops import continues_layer, op_name, opens_layer, remove_inplace
from isplit.graph.points import SplitPoint


def _has_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    return False


class _Everywhere:
    """A stand-in for FlopCounterMode's module tracker: every count goes to "Global" alone."""

    parents = ("Global",)

    def __enter__(self) -> _Everywhere:
        return self

    def __exit__(self, *exc) -> None:
        return None


class _TotalFlops(FlopCounterMode):
    """FlopCounterMode (its formulas and decompositions) without the per-module breakdown,
    whose hooks on every module call cost more than the counting; one mode for the whole run,
    rather than one entered per node."""

    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _Everywhere()


class _Recorder(fx.Interpreter):
    """Runs the graph once, recording each node's value kind, shape and FLOPs."""

    def __init__(self, gm: fx.GraphModule, counter: FlopCounterMode):
        super().__init__(gm)
        self.counter = counter
        self.values: dict[fx.Node, object] = {}
        self.flops: dict[fx.Node, int] = {}

    def run_node(self, n: fx.Node):
        before = self.counter.get_total_flops()
        result = super().run_node(n)
        self.flops[n] = self.counter.get_total_flops() - before
        # Tensors are kept as shape-and-dtype only (meta tensors), other values as they are.
        is_tensor = isinstance(result, torch.Tensor)
        self.values[n] = torch.empty_like(result, device="meta") if is_tensor else result
        return result


class ModelGraph:
    """The traced model with its valid cuts.

    ``input_shape`` is one input's shape, ``(C, H, W)`` (a leading batch dimension is dropped).
    ``granularity="layer"`` keeps the cuts a practitioner would make (after the activation that
    follows a layer); ``"all"`` keeps every valid cut. ``leaf_modules``: submodules (classes,
    class names or qualified type names) traced as one node rather than into; those whose
    forward torch.fx cannot trace are added to them (``auto_leaf_modules``).
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        granularity: str = "layer",
        leaf_modules: Sequence[LeafModule] = (),
    ):
        if granularity not in ("layer", "all"):
            raise IsplitError(f"granularity must be 'layer' or 'all', not {granularity!r}")
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) == 4:
            input_shape = input_shape[1:]
        self.input_shape = input_shape
        self.granularity = granularity
        self.leaf_modules = tuple(leaf_modules)
        with _untouched(model):
            captured = capture(model, self.leaf_modules)
            tracer, graph = captured.tracer, captured.graph
            self.gm = fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)
            self.gm.eval()
            remove_inplace(self.gm)
            self.names = {n: tracer.node_to_qualname.get(n, n.name) for n in graph.nodes}
            self.nodes = list(graph.nodes)
            self._index = {n: i for i, n in enumerate(self.nodes)}
            self._record()
        #: submodule classes kept whole because torch.fx cannot trace into them
        self.auto_leaf_modules = captured.auto_leaves
        #: per cut with values beside its tensor, those the tail rebuilds (graph.cut, on demand)
        self.rebuilt_values: dict[str, dict] = {}
        self._totals = self._head_totals()
        self._computed = self._computing_ancestry()
        self._find_cuts()

    # -- analysis ------------------------------------------------------------------------------
    def _record(self) -> None:
        param = next(self.gm.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        x = torch.zeros((1, *self.input_shape), device=device, dtype=dtype)
        try:
            with torch.no_grad(), _TotalFlops() as counter:
                rec = _Recorder(self.gm, counter)
                rec.run(x)
        except Exception as e:
            raise IsplitError(
                f"model does not run on an input of shape {tuple(x.shape)} "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                "check --image-size and the number of input channels"
            ) from None
        self.values = rec.values
        self.flops = rec.flops
        self.axes = AxisInference(self.gm, self.values, self.names)
        # Which nodes depend on the input: only those count as alive across a cut.
        self.dynamic: set[fx.Node] = set()
        for n in self.nodes:
            if n.op == "placeholder" or any(a in self.dynamic for a in n.all_input_nodes):
                self.dynamic.add(n)

    def _find_cuts(self) -> None:
        last_use = {n: max((self._index[u] for u in n.users), default=-1) for n in self.nodes}
        output_node = self.nodes[-1]
        logits = output_node.args[0]
        self.logits_node = logits if isinstance(logits, fx.Node) else None
        cuts: list[tuple[fx.Node, list[fx.Node]]] = []
        alive: list[fx.Node] = []
        for i, n in enumerate(self.nodes[:-1]):
            alive = [a for a in alive if last_use[a] > i]
            if n in self.dynamic and last_use[n] > i:
                alive.append(n)
            tensors = [a for a in alive if _has_tensor(self.values[a])]
            if len(tensors) == 1 and tensors[0] is n and isinstance(self.values[n], torch.Tensor):
                extras = [a for a in alive if a is not n]
                cuts.append((n, extras))
        self.all_cuts = {self.names[n]: (n, extras) for n, extras in cuts}
        keep = self._layer_level(cuts) if self.granularity == "layer" else [c[0] for c in cuts]
        self.points = [
            self._describe(n) for n in keep if n.op != "placeholder" and n is not self.logits_node
        ]

    def _layer_level(self, cuts) -> list[fx.Node]:
        cut_nodes = {n for n, _ in cuts}
        keep = []
        for n, _ in cuts:
            if opens_layer(self.gm, n):  # the cut moves before the padding
                continue
            users = list(n.users)
            if (
                len(users) == 1
                and users[0] in cut_nodes
                and continues_layer(self.gm, users[0])
                and not opens_layer(self.gm, users[0])
            ):
                continue
            keep.append(n)
        return keep

    def _head_totals(self) -> tuple[list[int], list[int]]:
        """FLOPs and parameters of the head ending at each node (running totals in graph
        order; a parameter that several modules share counts once)."""
        flops, params, seen = [], [], set()
        f = p = 0
        for h in self.nodes:
            f += self.flops[h]
            for t in self._held(h):
                if id(t) not in seen:
                    seen.add(id(t))
                    p += t.numel()
            flops.append(f)
            params.append(p)
        return flops, params

    def _computing_ancestry(self) -> set[fx.Node]:
        """The nodes whose value something learned or counted went into (:meth:`_computes`),
        on the way from the input or beside it."""
        computed: set[fx.Node] = set()
        for h in self.nodes:
            if self._computes(h) or any(a in computed for a in h.all_input_nodes):
                computed.add(h)
        return computed

    def _computes(self, h: fx.Node) -> bool:
        """``h`` does counted FLOPs, is a module that holds parameters, or is a parameter."""
        return self.flops[h] > 0 or bool(self._held(h))

    def _held(self, h: fx.Node) -> list[nn.Parameter]:
        """The parameters node ``h`` holds: a module's, or the one a ``get_attr`` reads."""
        if h.op == "call_module":
            return list(self.gm.get_submodule(h.target).parameters())
        if h.op == "get_attr" and isinstance(_get_attr(self.gm, h.target), nn.Parameter):
            return [_get_attr(self.gm, h.target)]
        return []

    def _describe(self, n: fx.Node) -> SplitPoint:
        i = self._index[n]
        value = self.values[n]
        shape = tuple(value.shape)
        layout = self.axes.layout(n)
        point = SplitPoint(
            name=self.names[n],
            op=op_name(self.gm, n),
            shape=shape,
            bytes=int(math.prod(shape)) * value.element_size(),
            head_flops=int(self._totals[0][i]),
            head_params=int(self._totals[1][i]),
            spatial=layout.spatial(shape),
            layout=layout,
            sends_image=n not in self._computed,
        )
        point.admissible = point.spatial and not point.sends_image
        return point

    # -- queries -------------------------------------------------------------------------------
    @property
    def total_flops(self) -> int:
        return int(sum(self.flops.values()))

    def node(self, name: str) -> fx.Node:
        """The node whose output crosses the cut ``name`` (any valid cut, not only listed ones)."""
        if name not in self.all_cuts:
            known = {self.names[n] for n in self.nodes}
            if name in known:
                raise IsplitError(
                    f"'{name}' is not a valid cut: more than one tensor crosses the network "
                    "there (for example inside a residual block); run `isplit points` to list "
                    "the valid ones"
                )
            raise IsplitError(
                f"unknown split point '{name}'{did_you_mean(name, sorted(self.all_cuts))}; run "
                "`isplit points` to list them"
            )
        return self.all_cuts[name][0]

    def layout(self, name: str) -> Layout:
        """The layout of the tensor that crosses the valid cut ``name``."""
        return self.axes.layout(self.node(name))

    def point(self, name: str) -> SplitPoint:
        """A SplitPoint for any valid cut by name."""
        for p in self.points:
            if p.name == name:
                return p
        return self._describe(self.node(name))

    def split(self, name: str) -> tuple[fx.GraphModule, fx.GraphModule]:
        """Head and tail at the valid cut ``name``: ``tail(head(x))`` equals ``model(x)``."""
        return head_and_tail(self, name)


@contextlib.contextmanager
def _untouched(model: nn.Module):
    """Trace and record ``model`` in eval mode, then leave it as it was: every submodule's
    ``training`` flag (the traced graph shares the model's submodules), and none of the
    ``_tensor_constant<i>`` attributes torch.fx sets on it for tensor constants (the graph
    module keeps its own references to them)."""
    modes = [(m, m.training) for m in model.modules()]
    attributes = set(vars(model))
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        for name in set(vars(model)) - attributes:
            if name.startswith("_tensor_constant"):
                delattr(model, name)


def _get_attr(module: nn.Module, target: str):
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def split_points(
    model: nn.Module,
    input_shape: Sequence[int],
    granularity: str = "layer",
    leaf_modules: Sequence[LeafModule] = (),
) -> list[SplitPoint]:
    """The split points of ``model`` for inputs of ``input_shape`` (C, H, W), in network order;
    ``leaf_modules``: submodules (classes, class names) to keep whole rather than trace into."""
    return ModelGraph(model, input_shape, granularity, leaf_modules).points


def split_model(
    model: nn.Module,
    point: str,
    input_shape: Sequence[int],
    leaf_modules: Sequence[LeafModule] = (),
) -> tuple[fx.GraphModule, fx.GraphModule]:
    """``(head, tail)`` of ``model`` cut after ``point``; ``tail(head(x))`` equals ``model(x)``."""
    return ModelGraph(model, input_shape, "all", leaf_modules).split(point)
