"""The graph: capture a model (torch.fx), its valid cuts (split points), shapes, bytes, FLOPs,
and head / tail at a point."""

from isplit.graph.trace import ModelGraph, SplitPoint, split_model, split_points

__all__ = ["ModelGraph", "SplitPoint", "split_model", "split_points"]
