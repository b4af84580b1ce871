"""A forward with an optional input left at its default (timm's ViTs: ``forward(x,
attn_mask=None)``) is traced at that default: the graph takes the image alone (it once had a
second placeholder, None at every cut), and every cut carries the tensor alone, so export,
serving and validation can use every point (they once refused them all)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from isplit.graph.cut import unsendable
from isplit.graph.trace import ModelGraph


class OptionalMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x, mask=None):
        x = torch.relu(self.a(x))
        x = torch.relu(self.b(x))
        # used after every cut, at its default (None), as timm's attention takes its attn_mask
        x = nn.functional.group_norm(x, 2, weight=mask)
        return self.fc(x.mean((2, 3)))


def every_cut_sends_one_tensor(model: nn.Module, shape: tuple[int, ...]) -> int:
    graph = ModelGraph(model.eval(), shape, "all")
    assert [n.op for n in graph.gm.graph.nodes].count("placeholder") == 1
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x)
        for p in graph.points:
            assert unsendable(graph, p.name) == [], p.name
            head, tail = graph.split(p.name)
            sent = head(x)
            assert isinstance(sent, torch.Tensor), p.name  # the tensor alone crosses
            torch.testing.assert_close(tail(sent), want, rtol=1e-5, atol=1e-5)
    return len(graph.points)


def test_an_optional_input_at_its_default_is_not_sent():
    assert every_cut_sends_one_tensor(OptionalMask(), (3, 8, 8)) >= 3


def test_every_cut_of_a_timm_vit_sends_one_tensor():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32)
    assert every_cut_sends_one_tensor(vit, (3, 32, 32)) > 20
