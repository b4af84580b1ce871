"""The naive I-SPLIT algorithm, as the authors' code ran it: one image at a time, and for every
split point the network prefix is re-run up to that point. Slow by design: it is the independent
reference for the tests and the baseline of ``benchmarks/throughput.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from isplit.graph import ModelGraph
from isplit.importance.gradcam import channels_and_positions


def naive_cui(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    points: Sequence[str],
    target: str = "label",
    reduction: str = "mean",
    graph: ModelGraph | None = None,
) -> torch.Tensor:
    """CUI [N, K] computed image by image and point by point (head re-run for every point)."""
    graph = graph or ModelGraph(model, tuple(x.shape[1:]), granularity="all")
    splits = [graph.split(p) for p in points]
    out = torch.zeros(len(x), len(points), dtype=torch.float64)
    for i in range(len(x)):
        xi = x[i : i + 1]
        for k, (head, tail) in enumerate(splits):
            with torch.no_grad():
                payload = head(xi)
            a = payload[0] if isinstance(payload, tuple) else payload
            a = a.detach().requires_grad_(True)
            logits = tail((a, *payload[1:]) if isinstance(payload, tuple) else a)
            c = int(labels[i]) if target == "label" else int(logits.argmax(1))
            (grad,) = torch.autograd.grad(logits[0, c], a)
            layout = graph.layout(points[k])
            if not layout.known:
                out[i, k] = float("nan")
                continue
            a_cp, g_cp = channels_and_positions(layout, a.detach(), grad)  # [1, C, P]
            alpha = g_cp.mean(2, keepdim=True)
            weighted = (alpha * a_cp).sum(1)
            if reduction == "mean":
                weighted = weighted / a_cp.shape[1]
            out[i, k] = torch.relu(weighted).mean().item()
    return out
