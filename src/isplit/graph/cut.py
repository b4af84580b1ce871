"""Cutting a traced model: the head (input -> the tensor at a valid cut) and the tail (that
tensor -> the logits), so that ``tail(head(x))`` equals ``model(x)``.

Some cuts have small values alive beside the tensor, such as ``n, c, h, w = x.shape`` read at the
top of a ViT's forward and used after the patch projection. A value that is the same for batches
of 1, 2 and 3 images is a constant of the input size: the tail computes it itself. A value that
equals the batch size is the tensor's first dimension: the tail reads it from the tensor. The cut
then carries the tensor alone, as any other (export, serving, validation). Any other value
(:func:`unsendable`) travels with the tensor: the head returns ``(tensor, *values)``, which only
an in-process run can use.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch
import torch.fx as fx

if TYPE_CHECKING:
    from isplit.graph.trace import ModelGraph

_BATCH = object()  # marks a value that is the batch size


def head_and_tail(graph: ModelGraph, name: str) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Head and tail of ``graph`` at the valid cut ``name``."""
    cut = graph.node(name)
    _, extras = graph.all_cuts[name]
    i = graph.nodes.index(cut)
    rebuilt = _rebuilt_values(graph, name)
    carried = [e for e in extras if e not in rebuilt]

    head_graph, env = _prefix(graph, i)
    head_graph.output(tuple([env[cut], *(env[e] for e in carried)]) if carried else env[cut])

    tail_graph = fx.Graph()
    payload = tail_graph.placeholder("payload")
    tenv: dict[fx.Node, object] = {}
    if carried:
        tenv[cut] = tail_graph.call_function(operator.getitem, (payload, 0))
        for k, e in enumerate(carried):
            tenv[e] = tail_graph.call_function(operator.getitem, (payload, k + 1))
    else:
        tenv[cut] = payload
    for e, value in rebuilt.items():
        tenv[e] = tail_graph.call_method("size", (tenv[cut], 0)) if value is _BATCH else value

    def materialize(a: fx.Node):
        # Values from the head that the tail needs: weights and input-independent constants
        # are recomputed in the tail.
        if a not in tenv:
            if a in graph.dynamic:
                raise AssertionError(f"{a} crosses the cut {name} but is not transmitted")
            tenv[a] = tail_graph.node_copy(a, materialize)
        return tenv[a]

    for n in graph.nodes[i + 1 :]:
        tenv[n] = tail_graph.node_copy(n, materialize)
    return _module(graph.gm, head_graph, "Head"), _module(graph.gm, tail_graph, "Tail")


def unsendable(graph: ModelGraph, name: str) -> list[str]:
    """The names of the values beside the tensor at cut ``name`` that the tail cannot rebuild
    (neither constants of the input size nor the batch size); empty for most cuts."""
    _, extras = graph.all_cuts[name]
    rebuilt = _rebuilt_values(graph, name)
    return [graph.names[e] for e in extras if e not in rebuilt]


def _rebuilt_values(graph: ModelGraph, name: str) -> dict[fx.Node, object]:
    """The values beside the tensor at ``name`` that the tail can rebuild: each a constant (its
    value) or :data:`_BATCH`, found by running the head on 2 and 3 images beside the recorded run
    on 1 (once per cut: kept in ``graph.rebuilt_values``). The tensor's first dimension must be
    the batch for :data:`_BATCH` to be read there."""
    cut, extras = graph.all_cuts[name]
    if not extras:
        return {}
    if name in graph.rebuilt_values:
        return graph.rebuilt_values[name]
    probe, env = _prefix(graph, graph.nodes.index(cut))
    probe.output(tuple([env[cut], *(env[e] for e in extras)]))
    head = _module(graph.gm, probe, "Probe")
    param = next(graph.gm.parameters(), None)
    kw = {"device": param.device, "dtype": param.dtype} if param is not None else {}
    runs = [
        [graph.values[cut], *(graph.values[e] for e in extras)],
        *(head(torch.zeros((b, *graph.input_shape), **kw)) for b in (2, 3)),
    ]
    batch_first = [int(r[0].shape[0]) if r[0].dim() else -1 for r in runs] == [1, 2, 3]
    out: dict[fx.Node, object] = {}
    for k, e in enumerate(extras, start=1):
        values = [r[k] for r in runs]
        if _plain(values[0]) and values[0] == values[1] == values[2]:
            out[e] = values[0]
        elif batch_first and values == [1, 2, 3] and all(type(v) is int for v in values):
            out[e] = _BATCH
    graph.rebuilt_values[name] = out
    return out


def _prefix(graph: ModelGraph, i: int) -> tuple[fx.Graph, dict[fx.Node, fx.Node]]:
    """A new graph with a copy of ``graph``'s nodes up to index ``i`` (no output yet), and the
    map from the originals to the copies."""
    prefix = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in graph.nodes[: i + 1]:
        env[n] = prefix.node_copy(n, lambda a: env[a])
    return prefix, env


def _plain(v) -> bool:
    """A Python number, None (an optional input left at its default, such as the ``attn_mask``
    of timm's ViTs), or a tuple / torch.Size of them (a value fx can hold as a constant)."""
    if isinstance(v, (tuple, list)):
        return all(_plain(x) for x in v)
    return v is None or isinstance(v, (int, float, bool))


def _module(root: fx.GraphModule, graph: fx.Graph, class_name: str) -> fx.GraphModule:
    gm = fx.GraphModule(root, graph, class_name=class_name)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()
