"""The graph: capture a model (torch.fx), its valid cuts (split points), shapes, bytes, FLOPs,
which points are admissible and chosen, and head / tail at a point."""

from isplit.graph.capture import leaf_module_name
from isplit.graph.points import SplitPoint, no_admissible_message, restrict, select_points
from isplit.graph.trace import ModelGraph, split_model, split_points

__all__ = [
    "ModelGraph",
    "SplitPoint",
    "leaf_module_name",
    "no_admissible_message",
    "restrict",
    "select_points",
    "split_model",
    "split_points",
]
