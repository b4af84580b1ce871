"""Grad-CAM importance at every split point from one forward and one backward pass per batch.

For a split point with activation ``A`` (``C`` channels, ``H x W`` positions; a flat tensor counts
as ``H = W = 1``) and target score ``s``::

    alpha_c = mean_ij d s / d A[c, i, j]
    M       = ReLU(reduce_c alpha_c * A[c])      reduce = mean (default, the authors' code) or sum
    cui     = mean_ij M

The traced graph is instrumented once: it returns the logits and the activations at the chosen
points, and the earliest point is detached into a leaf that requires grad, so the backward pass
stops there (nothing before the first point is differentiated; parameters are frozen).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.fx as fx

from isplit.errors import IsplitError
from isplit.graph import ModelGraph

TARGETS = ("label", "predicted")
REDUCTIONS = ("mean", "sum")


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


@dataclass
class BatchImportance:
    logits: torch.Tensor  # [N, classes]
    targets: torch.Tensor  # [N] the class whose score was differentiated
    cui: torch.Tensor  # [N, K] one value per image per point
    maps: list[torch.Tensor] | None  # K tensors [N, *spatial] when asked for


class GradCAM:
    """Grad-CAM maps / CUI values at ``points`` of a traced model, all in one pass per batch."""

    def __init__(
        self, graph: ModelGraph, points: Sequence[str], reduction: str = "mean"
    ) -> None:
        if reduction not in REDUCTIONS:
            raise IsplitError(f"--reduction must be one of {REDUCTIONS}, not {reduction!r}")
        if not points:
            raise IsplitError("no split points to analyse")
        self.reduction = reduction
        self.points = list(points)
        order = {n: i for i, n in enumerate(graph.nodes)}
        nodes = [graph.node(p) for p in self.points]
        if len(set(nodes)) != len(nodes):
            raise IsplitError("the same split point is listed twice")
        if [order[n] for n in nodes] != sorted(order[n] for n in nodes):
            raise IsplitError("split points must be given in network order")
        self.module = self._instrument(graph, nodes)

    @staticmethod
    def _instrument(graph: ModelGraph, nodes: list[fx.Node]) -> fx.GraphModule:
        new = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        taps: list[fx.Node] = []
        first = nodes[0]
        wanted = set(nodes)
        output = None
        for n in graph.nodes:
            if n.op == "output":
                output = env[n.args[0]] if isinstance(n.args[0], fx.Node) else None
                break
            env[n] = new.node_copy(n, lambda a: env[a])
            if n is first:
                env[n] = new.call_function(_leaf, (env[n],))
            if n in wanted:
                taps.append(env[n])
        if output is None:
            raise IsplitError("the model must return one logits tensor [N, classes]")
        new.output((output, tuple(taps)))
        gm = fx.GraphModule(graph.gm, new, class_name="GradCAMTaps")
        gm.graph.eliminate_dead_code()
        gm.recompile()
        return gm.eval()

    def to(self, device: torch.device | str) -> GradCAM:
        self.module.to(device)
        return self

    def __call__(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None = None,
        target: str = "label",
        keep_maps: bool = False,
    ) -> BatchImportance:
        if target not in TARGETS:
            raise IsplitError(f"--target must be one of {TARGETS}, not {target!r}")
        with torch.enable_grad():
            logits, acts = self.module(x)
            if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
                raise IsplitError("the model must return one logits tensor [N, classes]")
            if target == "label":
                if labels is None:
                    raise IsplitError("target 'label' needs labels")
                idx = labels.to(logits.device)
                if int(idx.max()) >= logits.shape[1] or int(idx.min()) < 0:
                    raise IsplitError(
                        f"a label ({int(idx.max())}) is outside the model's {logits.shape[1]} "
                        "classes: does the model fit this data set?")
            else:
                idx = logits.detach().argmax(1)
            score = logits.gather(1, idx[:, None]).sum()
            grads = torch.autograd.grad(score, acts, allow_unused=True)
        with torch.no_grad():
            cui, maps = [], []
            for a, g in zip(acts, grads):
                m = self.cam(a.detach(), torch.zeros_like(a) if g is None else g)
                cui.append(m.reshape(m.shape[0], -1).mean(1))
                if keep_maps:
                    maps.append(m)
        return BatchImportance(
            logits=logits.detach(),
            targets=idx,
            cui=torch.stack(cui, 1),
            maps=maps if keep_maps else None,
        )

    def cam(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Grad-CAM map [N, *spatial] from activation and gradient [N, C, *spatial]."""
        if a.dim() == 1:  # [N]: one channel, no positions
            a, g = a[:, None], g[:, None]
        n, c = a.shape[:2]
        alpha = g.flatten(2).mean(2) if a.dim() > 2 else g  # [N, C]
        weighted = torch.bmm(alpha[:, None, :], a.reshape(n, c, -1))  # [N, 1, positions]
        m = weighted.reshape(n, *a.shape[2:])
        if self.reduction == "mean":
            m = m / c
        return torch.relu(m)
