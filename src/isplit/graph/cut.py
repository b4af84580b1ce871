"""Cutting a traced model: the head (input -> the tensor at a valid cut, with any small values
that travel with it) and the tail (that payload -> the logits), so that ``tail(head(x))`` equals
``model(x)``."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch.fx as fx

if TYPE_CHECKING:
    from isplit.graph.trace import ModelGraph


def head_and_tail(graph: ModelGraph, name: str) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Head and tail of ``graph`` at the valid cut ``name``."""
    cut = graph.node(name)
    _, extras = graph.all_cuts[name]
    i = graph.nodes.index(cut)

    head_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in graph.nodes[: i + 1]:
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
            if a in graph.dynamic:
                raise AssertionError(f"{a} crosses the cut {name} but is not transmitted")
            tenv[a] = tail_graph.node_copy(a, materialize)
        return tenv[a]

    for n in graph.nodes[i + 1 :]:
        tenv[n] = tail_graph.node_copy(n, materialize)
    return _module(graph.gm, head_graph, "Head"), _module(graph.gm, tail_graph, "Tail")


def _module(root: fx.GraphModule, graph: fx.Graph, class_name: str) -> fx.GraphModule:
    gm = fx.GraphModule(root, graph, class_name=class_name)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()
