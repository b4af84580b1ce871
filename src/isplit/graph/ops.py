"""What the graph's operations are, for choosing cuts: ops that continue a layer (a cut before
them moves after them), paddings and the windowed layers they open, and the rewriting of
in-place ops out of place in a traced copy."""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
from torch import nn

# Ops that continue a layer rather than start a new one: a cut right before one of them moves
# after it ("conv -> bn -> relu is one point").
CONTINUATION_MODULES: tuple[type[nn.Module], ...] = (
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
CONTINUATION_FUNCTIONS = {
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
CONTINUATION_METHODS = {"relu", "sigmoid", "tanh"}

# Padding is the first step of the layer it feeds (TensorFlow-style "same" padding, as in
# EfficientNet ports: a ``static_padding`` module before each convolution): a cut between them
# moves before the padding, so the padded tensor (larger than the layer's input) is never offered.
PADDING_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.padding._ConstantPadNd,  # ZeroPad*d too
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
    nn.modules.padding._CircularPadNd,
)
PADDING_FUNCTIONS = {torch.nn.functional.pad, torch._C._nn.pad, torch.constant_pad_nd}
# The layers a padding belongs to: convolutions and pooling windows.
WINDOW_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._LPPoolNd,
)
WINDOW_FUNCTIONS = {
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


_INPLACE_OPERATORS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}


def remove_inplace(gm: fx.GraphModule) -> None:
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


def is_op(gm: fx.GraphModule, n: fx.Node, modules: tuple[type[nn.Module], ...], functions) -> bool:
    """``n`` calls one of ``modules`` (by isinstance) or of ``functions``."""
    if n.op == "call_module":
        return isinstance(gm.get_submodule(n.target), modules)
    return n.op == "call_function" and n.target in functions


def continues_layer(gm: fx.GraphModule, n: fx.Node) -> bool:
    """``n`` continues the layer before it (a norm, an activation, a dropout)."""
    if n.op == "call_method":
        return n.target in CONTINUATION_METHODS
    return is_op(gm, n, CONTINUATION_MODULES, CONTINUATION_FUNCTIONS)


def opens_layer(gm: fx.GraphModule, n: fx.Node) -> bool:
    """``n`` pads (or passes on, ``nn.Identity`` standing in for a padding) the input of the
    convolution or pooling that alone uses it: it belongs to that layer."""
    users = list(n.users)
    if len(users) != 1 or not is_op(gm, users[0], WINDOW_MODULES, WINDOW_FUNCTIONS):
        return False
    if n.op == "call_module" and type(gm.get_submodule(n.target)) is nn.Identity:
        return True
    return is_op(gm, n, PADDING_MODULES, PADDING_FUNCTIONS)


def op_name(gm: fx.GraphModule, node: fx.Node) -> str:
    """What produces a node's value: a module class name, or a function / method name."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)
