"""Valid cut points of a traced model, their sizes and costs, and head/tail modules at a cut.

The model is traced once with torchvision's ``NodePathTracer`` (the tracer behind
``get_graph_node_names`` / ``create_feature_extractor``), so split point names are torchvision's
node names (``features.4``, ``layer2.1.relu_2``).

A *valid cut* is a position in the graph's topological order across which exactly one tensor that
depends on the input is alive (produced before, used after). Parameters, buffers and other values
that do not depend on the input do not count: the tail recomputes them. Small non-tensor values
that depend on the input (``bs = x.size(0)``) do not disqualify a cut either: they travel with the
tensor (the head then returns ``(tensor, *extras)`` and the tail unpacks it).
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.fx as fx
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.feature_extraction import NodePathTracer

from isplit.errors import IsplitError, did_you_mean

# Ops that continue a layer rather than start a new one: a cut right before one of them moves
# after it ("conv -> bn -> relu is one point").
_CONTINUATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Softplus,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Identity,
)
_CONTINUATION_FUNCTIONS = {
    torch.relu,
    torch.nn.functional.relu,
    torch.nn.functional.relu6,
    torch.nn.functional.gelu,
    torch.nn.functional.silu,
    torch.nn.functional.hardswish,
    torch.nn.functional.leaky_relu,
    torch.sigmoid,
    torch.tanh,
    torch.nn.functional.dropout,
    torch.nn.functional.batch_norm,
    torch.nn.functional.layer_norm,
    torch.nn.functional.group_norm,
}
_CONTINUATION_METHODS = {"relu", "sigmoid", "tanh"}

# Padding is the first step of the layer it feeds (TensorFlow-style "same" padding, as in
# EfficientNet ports: a ``static_padding`` module before each convolution): a cut between them
# moves before the padding, so the padded tensor (larger than the layer's input) is never offered.
_PADDING_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.padding._ConstantPadNd,  # ZeroPad*d too
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
    nn.modules.padding._CircularPadNd,
)
_PADDING_FUNCTIONS = {torch.nn.functional.pad, torch._C._nn.pad, torch.constant_pad_nd}
# The layers a padding belongs to: convolutions and pooling windows.
_WINDOW_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._LPPoolNd,
)
_WINDOW_FUNCTIONS = {
    torch.conv1d,
    torch.conv2d,
    torch.conv3d,
    torch.conv_transpose1d,
    torch.conv_transpose2d,
    torch.conv_transpose3d,
    torch.nn.functional.max_pool1d,
    torch.nn.functional.max_pool2d,
    torch.nn.functional.max_pool3d,
    torch.nn.functional.avg_pool1d,
    torch.nn.functional.avg_pool2d,
    torch.nn.functional.avg_pool3d,
}


@dataclass
class SplitPoint:
    """One valid cut, named by the node whose output crosses the link."""

    name: str
    op: str  # what produces the tensor: a module class name or a function/method name
    shape: tuple[int, ...]  # at batch 1
    bytes: int  # size of the transmitted tensor at batch 1 (the CDE baseline)
    head_flops: int  # FLOPs of the head at batch 1 (torch.utils.flop_counter)
    head_params: int  # parameters the head holds
    spatial: bool  # N x C x H x W with more than one position
    admissible: bool = True

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_json(cls, d: dict) -> SplitPoint:
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def _tracer_kwargs() -> dict:
    """torchvision's defaults: torchvision.ops modules are leaves, math is auto-wrapped."""
    leaves = [
        obj
        for obj in vars(torchvision.ops).values()
        if isinstance(obj, type) and issubclass(obj, nn.Module)
    ]
    return {"autowrap_modules": (math, torchvision.ops), "leaf_modules": leaves}


def _has_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    return False


def _op_name(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def _remove_inplace(gm: fx.GraphModule) -> None:
    """Rewrite in-place ops out of place, so captured activations are never overwritten.

    Later uses of the tensor an op mutated are redirected to the op's result, which keeps the
    model's semantics. Leaf modules of the GraphModule are shared with the user's model, so
    modules with ``inplace=True`` are replaced by shallow copies rather than changed.
    """
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    mutating: list[fx.Node] = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if getattr(mod, "inplace", False) is True:
                clone = copy.copy(mod)
                clone.inplace = False
                parent, _, attr = node.target.rpartition(".")
                setattr(gm.get_submodule(parent) if parent else gm, attr, clone)
                mutating.append(node)
        elif node.op == "call_function":
            name = getattr(node.target, "__name__", "")
            if node.kwargs.get("inplace") is True:
                node.kwargs = {**node.kwargs, "inplace": False}
                mutating.append(node)
            elif node.target in _INPLACE_OPERATORS:
                node.target = _INPLACE_OPERATORS[node.target]
                mutating.append(node)
            elif name.endswith("_") and not name.startswith("_"):
                for ns in (torch, torch.nn.functional):
                    if getattr(ns, name, None) is node.target and hasattr(ns, name[:-1]):
                        node.target = getattr(ns, name[:-1])
                        mutating.append(node)
                        break
        elif node.op == "call_method":
            name = node.target
            if name.endswith("_") and not name.startswith("_") and hasattr(torch.Tensor, name[:-1]):
                node.target = name[:-1]
                mutating.append(node)
    for node in mutating:
        mutated = node.args[0] if node.args else None
        if isinstance(mutated, fx.Node):
            mutated.replace_all_uses_with(
                node, delete_user_cb=lambda user, n=node: order[user] > order[n]
            )
    gm.recompile()


_INPLACE_OPERATORS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


class _Recorder(fx.Interpreter):
    """Runs the graph once, recording each node's value kind, shape and FLOPs."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[fx.Node, object] = {}
        self.flops: dict[fx.Node, int] = {}

    def run_node(self, n: fx.Node):
        with FlopCounterMode(display=False) as counter:
            result = super().run_node(n)
        self.flops[n] = counter.get_total_flops()
        # Tensors are kept as shape-and-dtype only (meta tensors), other values as they are.
        is_tensor = isinstance(result, torch.Tensor)
        self.values[n] = torch.empty_like(result, device="meta") if is_tensor else result
        return result


class ModelGraph:
    """The traced model with its valid cuts.

    ``input_shape`` is one input's shape, ``(C, H, W)`` (a leading batch dimension is dropped).
    ``granularity="layer"`` keeps the cuts a practitioner would make (after the activation that
    follows a layer); ``"all"`` keeps every valid cut.
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int], granularity: str = "layer"):
        if granularity not in ("layer", "all"):
            raise IsplitError(f"granularity must be 'layer' or 'all', not {granularity!r}")
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) == 4:
            input_shape = input_shape[1:]
        self.input_shape = input_shape
        self.granularity = granularity
        was_training = model.training
        model.eval()
        tracer = NodePathTracer(**_tracer_kwargs())
        try:
            graph = tracer.trace(model)
        except Exception as e:  # tracing failures are the model's property, not a bug of ours
            raise IsplitError(
                f"cannot trace {type(model).__name__} with torch.fx ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); isplit needs a model whose forward "
                "has no data-dependent Python control flow (see torch.fx's limitations)"
            ) from None
        finally:
            model.train(was_training)
        self.gm = fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)
        self.gm.eval()
        _remove_inplace(self.gm)
        self.names = {n: tracer.node_to_qualname.get(n, n.name) for n in graph.nodes}
        self.nodes = list(graph.nodes)
        self._index = {n: i for i, n in enumerate(self.nodes)}
        self._record()
        self._find_cuts()

    # -- analysis ------------------------------------------------------------------------------
    def _record(self) -> None:
        param = next(self.gm.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        x = torch.zeros((1, *self.input_shape), device=device, dtype=dtype)
        rec = _Recorder(self.gm)
        try:
            with torch.no_grad():
                rec.run(x)
        except Exception as e:
            raise IsplitError(
                f"model does not run on an input of shape {tuple(x.shape)} "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                "check --image-size and the number of input channels"
            ) from None
        self.values = rec.values
        self.flops = rec.flops
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

    def _continues(self, n: fx.Node) -> bool:
        if n.op == "call_method":
            return n.target in _CONTINUATION_METHODS
        return self._is(n, _CONTINUATION_MODULES, _CONTINUATION_FUNCTIONS)

    def _is(self, n: fx.Node, modules: tuple[type[nn.Module], ...], functions: set) -> bool:
        if n.op == "call_module":
            return isinstance(self.gm.get_submodule(n.target), modules)
        return n.op == "call_function" and n.target in functions

    def _opens_layer(self, n: fx.Node) -> bool:
        """``n`` pads (or passes on, ``nn.Identity`` standing in for a padding) the input of the
        convolution or pooling that alone uses it: it belongs to that layer."""
        users = list(n.users)
        if len(users) != 1 or not self._is(users[0], _WINDOW_MODULES, _WINDOW_FUNCTIONS):
            return False
        if n.op == "call_module" and type(self.gm.get_submodule(n.target)) is nn.Identity:
            return True
        return self._is(n, _PADDING_MODULES, _PADDING_FUNCTIONS)

    def _layer_level(self, cuts) -> list[fx.Node]:
        cut_nodes = {n for n, _ in cuts}
        keep = []
        for n, _ in cuts:
            if self._opens_layer(n):  # the cut moves before the padding
                continue
            users = list(n.users)
            if (
                len(users) == 1
                and users[0] in cut_nodes
                and self._continues(users[0])
                and not self._opens_layer(users[0])
            ):
                continue
            keep.append(n)
        return keep

    def _describe(self, n: fx.Node) -> SplitPoint:
        i = self._index[n]
        value = self.values[n]
        shape = tuple(value.shape)
        head_nodes = self.nodes[: i + 1]
        params: dict[int, int] = {}
        for h in head_nodes:
            if h.op == "call_module":
                for p in self.gm.get_submodule(h.target).parameters():
                    params[id(p)] = p.numel()
            elif h.op == "get_attr":
                attr = _get_attr(self.gm, h.target)
                if isinstance(attr, nn.Parameter):
                    params[id(attr)] = attr.numel()
        return SplitPoint(
            name=self.names[n],
            op=_op_name(self.gm, n),
            shape=shape,
            bytes=int(math.prod(shape)) * value.element_size(),
            head_flops=int(sum(self.flops[h] for h in head_nodes)),
            head_params=int(sum(params.values())),
            spatial=len(shape) == 4 and shape[2] * shape[3] > 1,
            admissible=len(shape) == 4 and shape[2] * shape[3] > 1,
        )

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

    def point(self, name: str) -> SplitPoint:
        """A SplitPoint for any valid cut by name."""
        for p in self.points:
            if p.name == name:
                return p
        return self._describe(self.node(name))

    def split(self, name: str) -> tuple[fx.GraphModule, fx.GraphModule]:
        """Head and tail at the valid cut ``name``: ``tail(head(x))`` equals ``model(x)``."""
        cut = self.node(name)
        _, extras = self.all_cuts[name]
        i = self._index[cut]

        head_graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for n in self.nodes[: i + 1]:
            env[n] = head_graph.node_copy(n, lambda a: env[a])
        out = env[cut] if not extras else tuple([env[cut], *(env[e] for e in extras)])
        head_graph.output(out)

        tail_graph = fx.Graph()
        payload = tail_graph.placeholder("payload")
        tenv: dict[fx.Node, fx.Node] = {}
        if extras:
            tenv[cut] = tail_graph.call_function(operator.getitem, (payload, 0))
            for k, e in enumerate(extras):
                tenv[e] = tail_graph.call_function(operator.getitem, (payload, k + 1))
        else:
            tenv[cut] = payload

        def materialize(a: fx.Node) -> fx.Node:
            # Values from the head that the tail needs: weights and input-independent constants
            # are recomputed in the tail.
            if a not in tenv:
                if a in self.dynamic:
                    raise AssertionError(f"{a} crosses the cut {name} but is not transmitted")
                tenv[a] = tail_graph.node_copy(a, materialize)
            return tenv[a]

        for n in self.nodes[i + 1 :]:
            tenv[n] = tail_graph.node_copy(n, materialize)
        return _module(self.gm, head_graph, "Head"), _module(self.gm, tail_graph, "Tail")


def _module(root: fx.GraphModule, graph: fx.Graph, class_name: str) -> fx.GraphModule:
    gm = fx.GraphModule(root, graph, class_name=class_name)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()


def _get_attr(module: nn.Module, target: str):
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def split_points(
    model: nn.Module, input_shape: Sequence[int], granularity: str = "layer"
) -> list[SplitPoint]:
    """The split points of ``model`` for inputs of ``input_shape`` (C, H, W), in network order."""
    return ModelGraph(model, input_shape, granularity).points


def split_model(
    model: nn.Module, point: str, input_shape: Sequence[int]
) -> tuple[fx.GraphModule, fx.GraphModule]:
    """``(head, tail)`` of ``model`` cut after ``point``; ``tail(head(x))`` equals ``model(x)``."""
    return ModelGraph(model, input_shape, granularity="all").split(point)
