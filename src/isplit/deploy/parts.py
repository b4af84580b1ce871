"""The parts of a network cut at a split point: the head (with a bottleneck's encoder), the tail
(with its decoder), and the tail fed with the 8-bit code."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from isplit.deploy.names import (  # noqa: F401  (re-exported: where they were defined)
    BOTTLENECK_FILE,
    HEAD,
    PARTS,
    TAIL,
    TAIL_INT8,
    first_line,
    require,
)
from isplit.errors import IsplitError
from isplit.graph import ModelGraph, SplitPoint
from isplit.graph.cut import unsendable
from isplit.graph.layout import Layout
from isplit.models import LoadedModel, apply_state_dict
from isplit.validation.bottleneck import dequantize_uint8, load_bottleneck


class Dequantize(nn.Module):
    """The 8-bit code back to float32: ``(q - zero_point) * scale``, per image."""

    def forward(self, q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor):
        return dequantize_uint8(q, scale, zero_point)


class Dequantized(nn.Module):
    """The tail fed with the 8-bit code."""

    def __init__(self, tail: nn.Module) -> None:
        super().__init__()
        self.dequantize, self.tail = Dequantize(), tail

    def forward(self, q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor):
        return self.tail(self.dequantize(q, scale, zero_point))


@dataclass
class Split:
    """Head and tail of a network at a point (with the bottleneck's encoder and decoder)."""

    head: nn.Module
    tail: nn.Module
    point: SplitPoint
    transmitted_shape: tuple[int, ...]
    transmitted_layout: Layout  # the point's, or with a bottleneck its code's
    graph_sha256: str
    bottleneck: dict | None  # the bottleneck file's metadata


def split_parts(
    loaded: LoadedModel,
    point: str,
    bottleneck: str | Path | None = None,
    leaf_modules: Sequence[str] = (),
) -> Split:
    """Cut ``loaded``'s network at ``point``; with ``bottleneck`` (a file ``isplit validate``
    saved) the encoder ends the head and the decoder starts the tail. ``leaf_modules``: the
    submodules the analysis traced as one node (``Analysis.leaf_modules``), whose points exist
    only in that graph."""
    pp = loaded.preprocess
    graph = ModelGraph(loaded.model, (pp.channels, pp.size, pp.size), "all", leaf_modules)
    graph.node(point)  # a clear error for an unknown or invalid point
    extras = unsendable(graph, point)
    if extras:
        raise IsplitError(
            f"at {point} the network carries {len(extras)} value(s) besides the tensor "
            f"({', '.join(extras)}: neither the batch size nor a constant of the input size), "
            "which an exported head cannot send; export at another point "
            "(`isplit points` lists them)"
        )
    sp = graph.point(point)
    head, tail = graph.split(point)
    transmitted, layout = tuple(sp.shape[1:]), sp.layout
    md = None
    if bottleneck is not None:
        b, tail_state, md = load_bottleneck(bottleneck)
        if md.get("point") != point:
            raise IsplitError(
                f"{bottleneck} was trained at {md.get('point')}, not at {point}; pass --point "
                f"{md.get('point')} or validate at {point}"
            )
        if md.get("weights_sha256") and md["weights_sha256"] != loaded.fingerprint():
            raise IsplitError(
                f"{bottleneck} was trained for other weights of {md.get('model')} than the "
                f"{loaded.name} ({loaded.weights}) loaded here; pass the model and weights the "
                "validation used (or leave them out to take the run's)"
            )
        if tuple(b.shape) != transmitted:
            raise IsplitError(
                f"{bottleneck} fits a tensor of shape {list(b.shape)}, but {point} gives "
                f"{list(transmitted)}: it belongs to another model"
            )
        if tail_state is not None:
            apply_state_dict(tail, tail_state, str(bottleneck), "the fine-tuned tail")
        head = nn.Sequential(head, b.encoder).eval()
        tail = nn.Sequential(b.decoder, tail).eval()
        transmitted, layout = tuple(b.code_shape), b.code_layout
    for p in [*head.parameters(), *tail.parameters()]:
        p.requires_grad_(False)
    code = graph.gm.code.encode()
    return Split(head, tail, sp, transmitted, layout, hashlib.sha256(code).hexdigest(), md)


def part_modules(split: Split) -> dict[str, nn.Module]:
    """Each part of ``split`` as a module (the 8-bit tail dequantises first)."""
    return {HEAD: split.head, TAIL: split.tail, TAIL_INT8: Dequantized(split.tail).eval()}
